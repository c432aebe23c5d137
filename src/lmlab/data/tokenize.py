"""The tokenize stage: one sentencepiece tokenizer, trained on the corpus train
split only, encodes every split of the corpus and of the labeled set.

Output (``data/tokenized/<corpus>-<tokenizer>/``):

- ``tokenizer.model`` (lossless: no normalization, newlines kept as a piece);
  ``{train,val,test}.bin``: flat token streams (uint16 when
  the vocabulary fits, else uint32) with the end-of-document id after each document;
- ``task/{train,val,test}.bin`` plus ``.offsets.npy`` (document starts, n+1) and
  ``.labels.npy`` for the labeled set;
- ``meta.json``: vocab size, dtype, special ids, and tokens, documents and UTF-8
  bytes per split (bytes make bits-per-byte comparable across tokenizers).

Encoding runs in worker processes over batches of documents with a bounded
number in flight, so memory does not grow with the corpus.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from lmlab.config import SPLITS, DatasetConfig, PathsConfig, TokenizerConfig
from lmlab.data.atomic import staged_dir
from lmlab.errors import LmlabError

log = logging.getLogger(__name__)

UNK_ID, BOS_ID, EOD_ID, PAD_ID = 0, 1, 2, 3
TOO_LARGE = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def worker_count(requested: int) -> int:
    return requested if requested > 0 else len(os.sched_getaffinity(0))


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def split_long_line(line: str, max_bytes: int) -> Iterator[str]:
    """Cut a line into pieces of at most ``max_bytes`` UTF-8 bytes, at whitespace where possible.

    sentencepiece skips longer sentences without a word; cutting keeps their text in training.
    """
    while len(line.encode("utf-8")) > max_bytes:
        head = line.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
        cut = head.rfind(" ")
        if cut <= 0:
            cut = len(head)
        yield line[:cut]
        line = line[cut:].lstrip(" ")
    if line:
        yield line


def training_sentences(jsonl: Path, max_bytes: int) -> Iterator[str]:
    """Non-empty lines of the train documents, long ones cut to fit."""
    with open(jsonl, encoding="utf-8") as f:
        for record in f:
            for line in json.loads(record)["text"].splitlines():
                if line.strip():
                    yield from split_long_line(line, max_bytes)


def train_tokenizer(train_jsonl: Path, cfg: TokenizerConfig) -> bytes:
    """Train sentencepiece on ``train_jsonl``; return the serialized model."""
    spm.set_random_generator_seed(cfg.seed)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=training_sentences(train_jsonl, cfg.max_sentence_length),
            model_writer=model,
            model_type=cfg.type,
            vocab_size=cfg.vocab_size,
            byte_fallback=cfg.byte_fallback,
            character_coverage=cfg.character_coverage,
            input_sentence_size=cfg.input_sentence_size,
            shuffle_input_sentence=True,
            max_sentence_length=cfg.max_sentence_length,
            num_threads=worker_count(cfg.num_threads),
            unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOD_ID, pad_id=PAD_ID,
            hard_vocab_limit=cfg.type != "char",
            # lossless: decode(encode(text)) == text, so bits per byte counts every byte
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            user_defined_symbols=["\n"],
            minloglevel=2,
        )
    except RuntimeError as err:
        raise _explain(err, cfg, train_jsonl) from err
    return model.getvalue()


def _explain(err: RuntimeError, cfg: TokenizerConfig, corpus: Path) -> LmlabError:
    message = str(err)
    if match := TOO_LARGE.search(message):
        return LmlabError(
            f"tokenizer.vocab_size={cfg.vocab_size} is larger than the corpus {corpus} supports for "
            f"a {cfg.type} tokenizer; the largest workable size is {match.group(2)}."
        )
    if match := TOO_SMALL.search(message):
        return LmlabError(
            f"tokenizer.vocab_size={cfg.vocab_size} is too small for the {match.group(2)} characters and special "
            f"pieces that {corpus} needs; use at least {match.group(2)} (or lower tokenizer.character_coverage"
            + (", or set tokenizer.byte_fallback=false" if cfg.byte_fallback else "") + ")."
        )
    if cfg.type == "char" and cfg.byte_fallback:
        return LmlabError(
            f"a char tokenizer with byte_fallback needs tokenizer.vocab_size of at least 260 plus the corpus's "
            f"characters (got {cfg.vocab_size}); raise it or set tokenizer.byte_fallback=false. ({message})"
        )
    return LmlabError(f"sentencepiece failed on {corpus} with tokenizer={asdict(cfg)}: {message}")


# --- encoding, in worker processes ---------------------------------------------------------

_processor: spm.SentencePieceProcessor | None = None


def _init_worker(model: bytes) -> None:
    global _processor
    _processor = spm.SentencePieceProcessor(model_proto=model)


def _encode_batch(lines: list[str], dtype: str, eod: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """jsonl lines -> (tokens, per-document lengths, labels, UTF-8 bytes)."""
    assert _processor is not None
    records = [json.loads(line) for line in lines]
    texts = [r["text"] for r in records]
    pieces = _processor.encode(texts, num_threads=1)  # one process per core already
    if eod:
        for ids in pieces:
            ids.append(EOD_ID)
    lengths = np.fromiter((len(ids) for ids in pieces), dtype=np.int64, count=len(pieces))
    tokens = np.fromiter((t for ids in pieces for t in ids), dtype=dtype, count=int(lengths.sum()))
    labels = np.array([r["label"] for r in records], dtype=np.int64) if "label" in records[0] else None
    return tokens, lengths, labels, sum(len(t.encode("utf-8")) for t in texts)


def _batches(jsonl: Path, size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    with open(jsonl, encoding="utf-8") as f:
        for line in f:
            batch.append(line)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def encode_split(pool: ProcessPoolExecutor, jsonl: Path, out_stem: Path, dtype: np.dtype, *, labeled: bool,
                 batch_documents: int, in_flight: int) -> dict[str, int]:
    """Encode one split to ``<out_stem>.bin`` (plus offsets and labels when ``labeled``)."""
    counts = {"documents": 0, "tokens": 0, "bytes": 0}
    lengths: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    pending: deque[Future] = deque()

    def drain_one(f: Any) -> None:
        tokens, doc_lengths, doc_labels, nbytes = pending.popleft().result()
        tokens.tofile(f)
        counts["documents"] += len(doc_lengths)
        counts["tokens"] += len(tokens)
        counts["bytes"] += nbytes
        if labeled:
            lengths.append(doc_lengths)
            labels.append(doc_labels)

    with open(out_stem.with_suffix(".bin"), "wb") as f:
        for batch in _batches(jsonl, batch_documents):
            pending.append(pool.submit(_encode_batch, batch, dtype.str, not labeled))
            if len(pending) >= in_flight:
                drain_one(f)
        while pending:
            drain_one(f)
    if labeled:
        if not labels or labels[0] is None:
            raise LmlabError(f"{jsonl} has no 'label' field: is it a labeled set's split?")
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
        np.save(out_stem.with_suffix(".offsets.npy"), offsets)
        np.save(out_stem.with_suffix(".labels.npy"), np.concatenate(labels))
    return counts


def tokenize(corpus: DatasetConfig, task: DatasetConfig | None, cfg: TokenizerConfig, paths: PathsConfig) -> dict[str, Any]:
    """Train the tokenizer and encode the corpus (and labeled set); return ``meta.json``'s content."""
    corpus_splits = _require_splits(paths.splits(corpus.name), "data", corpus.name)
    task_splits = _require_splits(paths.splits(task.name), "task_data", task.name) if task else None
    started = time.perf_counter()
    model = train_tokenizer(corpus_splits / "train.jsonl", cfg)
    vocab_size = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    dtype = token_dtype(vocab_size)
    log.info("trained %s tokenizer (vocab %d) in %.1fs", cfg.type, vocab_size, time.perf_counter() - started)
    workers = worker_count(cfg.num_threads)
    meta: dict[str, Any] = {
        "corpus": corpus.name, "tokenizer": asdict(cfg), "vocab_size": vocab_size, "dtype": dtype.name,
        "special_ids": {"unk": UNK_ID, "bos": BOS_ID, "eod": EOD_ID, "pad": PAD_ID}, "splits": {},
    }
    out = paths.tokenized(corpus.name, cfg)
    with staged_dir(out) as staging, ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(model,)) as pool:
        (staging / "tokenizer.model").write_bytes(model)
        encode = dict(dtype=dtype, batch_documents=cfg.batch_documents, in_flight=2 * workers)
        for split in SPLITS:
            meta["splits"][split] = encode_split(pool, corpus_splits / f"{split}.jsonl", staging / split,
                                                 labeled=False, **encode)
        if task and task_splits:
            (staging / "task").mkdir()
            task_meta = json.loads((task_splits / "meta.json").read_text())
            meta["task"] = {"name": task.name, "classes": task_meta["classes"], "splits": {
                split: encode_split(pool, task_splits / f"{split}.jsonl", staging / "task" / split,
                                    labeled=True, **encode)
                for split in SPLITS
            }}
        meta["seconds"] = round(time.perf_counter() - started, 2)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    _report(out, meta)
    return meta


def _require_splits(folder: Path, key: str, name: str) -> Path:
    missing = [s for s in SPLITS if not (folder / f"{s}.jsonl").exists()]
    if missing or not (folder / "meta.json").exists():
        raise LmlabError(f"{folder} lacks {missing or ['meta.json']}: run `lmlab split {key}={name}` first")
    return folder


def _report(out: Path, meta: dict[str, Any]) -> None:
    print(f"{out}: vocab {meta['vocab_size']} ({meta['dtype']})")
    sections = [("", meta["splits"])] + ([("task/", meta["task"]["splits"])] if "task" in meta else [])
    for prefix, splits in sections:
        for split, c in splits.items():
            print(f"  {prefix + split:10s} {c['documents']:>9,d} docs {c['tokens']:>12,d} tokens "
                  f"{c['bytes']:>13,d} bytes ({c['bytes'] / max(c['tokens'], 1):.2f} bytes/token)")
