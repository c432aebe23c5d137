"""The tokenized corpus format, written and opened here only (``data/tokenized/<corpus>-<tokenizer>/``):

    tokenizer.model     sentencepiece (the tokenize stage writes it; generation and evaluation read it)
    {split}.bin         a flat token stream per split, the end-of-document id after every document
                        (uint16 when the vocabulary fits, else uint32)
    meta.json           vocab_size, dtype, special_ids, and per split its tokens, documents and UTF-8
                        bytes (bytes make bits per byte comparable across tokenizers); `task` when a
                        labeled set was tokenized with it (see `lmlab.data.labeled`)

The tokenize stage streams its splits into the ``.bin`` files and calls
`write_meta`; code holding whole streams (LM adaptation, tests, benchmarks)
calls `write_corpus`. Readers take the special ids from ``meta.json``;
`Corpus.open` checks it and every stream's length against it, so that a
damaged corpus is an error rather than a shorter one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.core.atomic import check_keys, read_json, write_atomic
from lmlab.core.errors import LmlabError

# The ids the tokenize stage reserves (sentencepiece's unk, bos, eos and pad); meta.json records them.
SPECIAL_IDS = {"unk": 0, "bos": 1, "eod": 2, "pad": 3}
DTYPES = ("uint16", "uint32")  # what `token_dtype` gives
REBUILD = (
    "run the tokenize stage (`dvc repro tokenize`, or `lmlab download`, `lmlab split` and `lmlab tokenize` with the "
    "same data= and tokenizer= choices)"
)


TOKENIZER_FILE = "tokenizer.model"  # in the corpus folder, beside meta.json


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def check_stream(path: Path, tokens: int, dtype: np.dtype, meta_path: Path, rebuild: str) -> None:
    """`path` holds exactly the `tokens` that `meta_path` counts: a file cut short (a full disk, a copy stopped
    midway) or left from another tokenize run would otherwise be trained on as it is, silently."""
    if not path.is_file():
        raise LmlabError(f"no {path.name} in {path.parent}, though {meta_path} lists it: {rebuild}")
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise LmlabError(f"{path} holds {size:,} bytes, not whole {dtype.name} tokens (damaged): {rebuild}")
    if size // dtype.itemsize != tokens:
        raise LmlabError(
            f"{path} holds {size // dtype.itemsize:,} tokens, but {meta_path} says {tokens:,} (cut short, or from "
            f"another tokenize run): {rebuild}"
        )


@dataclass(frozen=True)
class SplitStats:
    tokens: int
    bytes: int


@dataclass(frozen=True)
class Corpus:
    """A tokenized corpus folder: its token streams and what `meta.json` says about them."""

    folder: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, folder: Path, how_to_make: str | None = None) -> Corpus:
        """The corpus in `folder`, checked against its `meta.json`; a missing or damaged one is an error saying
        how to make it (`how_to_make`, if given)."""
        rebuild = how_to_make or REBUILD
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise LmlabError(f"no tokenized corpus at {folder} ({meta_path.name} missing): {rebuild}")
        meta = read_json(meta_path, rebuild, {"vocab_size": int, "dtype": str, "splits": dict}, {"special_ids": dict})
        if meta["dtype"] not in DTYPES:
            raise LmlabError(f"{meta_path}: 'dtype' is {meta['dtype']!r}, not one of {', '.join(DTYPES)}: {rebuild}")
        if "special_ids" in meta:
            check_keys(meta["special_ids"], meta_path, rebuild, dict.fromkeys(SPECIAL_IDS, int), within="special_ids.")
        check_keys(meta["splits"], meta_path, rebuild, dict.fromkeys(meta["splits"], dict), within="splits.")
        for split, stats in meta["splits"].items():
            check_keys(stats, meta_path, rebuild, {"tokens": int, "bytes": int}, within=f"splits.{split}.")
            check_stream(folder / f"{split}.bin", stats["tokens"], np.dtype(meta["dtype"]), meta_path, rebuild)
        check_tokenizer(folder / TOKENIZER_FILE, meta["vocab_size"], meta_path, rebuild)
        return cls(folder, meta)

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]

    @property
    def splits(self) -> dict[str, SplitStats]:
        return {name: SplitStats(s["tokens"], s["bytes"]) for name, s in self.meta["splits"].items()}

    def special_id(self, name: str) -> int:
        return self.meta.get("special_ids", SPECIAL_IDS)[name]

    @property
    def eod_id(self) -> int:
        return self.special_id("eod")

    @property
    def pad_id(self) -> int:
        return self.special_id("pad")

    @property
    def tokenizer_file(self) -> Path:
        return self.folder / TOKENIZER_FILE

    def tokens(self, split: str) -> np.ndarray:
        return np.memmap(self.folder / f"{split}.bin", dtype=self.dtype, mode="r")

    def digest(self, task: bool = True) -> str:
        """What a training run's identity records of its data (`lmlab.training.runs.RunFolder.plan`): `meta.json` (every
        split's token, document and byte counts, the labeled set's), the tokenizer (trained on the train split)
        and the labels. A re-split or re-tokenized corpus of the same name changes it, so the run retrains
        instead of resuming weights trained on other data; reading these small files keeps a start fast where
        hashing every token file of a large corpus would not."""
        digest = hashlib.sha256()
        meta = {k: v for k, v in self.meta.items() if task or k != "task"}  # `task`: pretraining reads no labels
        digest.update(json.dumps(meta, sort_keys=True).encode())
        for path in [self.tokenizer_file, *(sorted(self.folder.glob("task/*.labels.npy")) if task else [])]:
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:16]

    def tokens_per_byte(self, split: str) -> float:
        stats = self.splits[split]
        return stats.tokens / stats.bytes


def write_meta(folder: Path, vocab_size: int, splits: dict[str, dict[str, int]], **extra: Any) -> dict[str, Any]:
    """``meta.json`` for the streams in `folder` (returned too): `splits` maps a split to its tokens, documents
    and bytes; `extra` adds keys (the tokenize stage: corpus, tokenizer config, labeled set)."""
    meta = {
        **extra,
        "vocab_size": vocab_size,
        "dtype": token_dtype(vocab_size).name,
        "special_ids": SPECIAL_IDS,
        "splits": splits,
    }
    write_atomic(folder / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
    return meta


def write_corpus(
    folder: Path, streams: dict[str, np.ndarray], vocab_size: int, utf8_bytes: dict[str, int], **extra: Any
) -> Corpus:
    """A corpus from whole token streams (each document already followed by the EOD id).

    Every file is replaced whole, never written in place: DDP ranks may write the same bytes while
    another rank already reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    eod = SPECIAL_IDS["eod"]
    splits = {}
    for name, stream in streams.items():
        write_atomic(folder / f"{name}.bin", np.asarray(stream).astype(dtype).tobytes())
        splits[name] = {"documents": int((stream == eod).sum()), "tokens": len(stream), "bytes": utf8_bytes[name]}
    write_meta(folder, vocab_size, splits, **extra)
    return Corpus.open(folder)


def check_tokenizer(path: Path, vocab_size: int, meta_path: Path, rebuild: str) -> None:
    """The corpus's tokenizer loads and has `vocab_size` pieces, when the corpus has one (an LM adaptation's
    corpus, made from token ids, has none): a damaged tokenizer.model failed only in evaluate or generate,
    and a vocabulary that disagrees with meta.json mid-run with an IndexError."""
    if not path.is_file():
        return
    import sentencepiece as spm

    try:
        pieces = spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
    except (OSError, RuntimeError) as err:
        raise LmlabError(f"{path} is not a sentencepiece model ({err}): {rebuild}") from None
    if pieces != vocab_size:
        raise LmlabError(f"{path} has {pieces} pieces but {meta_path} says vocab_size {vocab_size}: {rebuild}")
