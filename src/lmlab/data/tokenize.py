"""The tokenize stage: one sentencepiece tokenizer, trained on the corpus train
split only, encodes every split of the corpus and of the labeled set.

Output (``data/tokenized/<corpus>-<tokenizer>/``):

- ``tokenizer.model`` (lossless: no normalization, newlines kept as pieces);
  ``{train,val,test}.bin``: flat token streams (uint16 when
  the vocabulary fits, else uint32) with the end-of-document id after each document;
- ``task/{train,val,test}.bin`` plus ``.offsets.npy`` (document starts, n+1) and
  ``.labels.npy`` for the labeled set;
- ``meta.json``: vocab size, dtype, special ids, and tokens, documents and UTF-8
  bytes per split (bytes make bits-per-byte comparable across tokenizers).

Encoding runs in worker processes over batches of documents with a bounded
number in flight (a long document a part at a time), so memory does not grow
with the corpus. The workers end with the stage, even when it is killed.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from lmlab.core.atomic import naming_full_disk, read_json, staged_dir
from lmlab.core.children import end_with_parent
from lmlab.core.errors import LmlabError
from lmlab.data.config import SPLITS, DatasetConfig, PathsConfig, TokenizerConfig
from lmlab.data.corpus import SPECIAL_IDS, token_dtype, write_meta
from lmlab.data.encode import encode_batch

log = logging.getLogger(__name__)

UNK_ID, BOS_ID, EOD_ID, PAD_ID = (SPECIAL_IDS[name] for name in ("unk", "bos", "eod", "pad"))
LINE_BREAKS = ["\n", "\r"]
TOO_LARGE = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")
SPACES = re.compile(rb" *")
PROGRESS_SECONDS = 30.0  # a long split logs how far it got this often


def worker_count(requested: int) -> int:
    return requested if requested > 0 else len(os.sched_getaffinity(0))


def split_long_line(line: str, max_bytes: int) -> Iterator[str]:
    """Cut a line into pieces of at most ``max_bytes`` UTF-8 bytes, at whitespace where possible.

    sentencepiece skips longer sentences without a word; cutting keeps their text in training.
    The line is encoded once and cut in bytes, so the work grows linearly with its length
    (re-encoding the rest for each piece made a 50 MB line take minutes).
    """
    data = line.encode("utf-8")
    start = 0
    while len(data) - start > max_bytes:
        stop = start + max_bytes
        while data[stop] & 0xC0 == 0x80:  # inside a character: end the piece before it
            stop -= 1
        cut = data.rfind(b" ", start + 1, stop)
        if cut < 0:
            cut = stop if stop > start else _next_character(data, start)  # one character wider than max_bytes
        yield data[start:cut].decode("utf-8")
        start = SPACES.match(data, cut).end()  # type: ignore[union-attr]  # " *" matches anywhere
    if start < len(data):
        yield data[start:].decode("utf-8")


def _next_character(data: bytes, at: int) -> int:
    """Where the UTF-8 character starting at ``at`` ends."""
    end = at + 1
    while end < len(data) and data[end] & 0xC0 == 0x80:
        end += 1
    return end


def training_sentences(jsonl: Path, max_bytes: int) -> Iterator[str]:
    """Non-empty lines of the train documents, long ones cut to fit."""
    with open(jsonl, encoding="utf-8") as f:
        for record in f:
            for line in json.loads(record)["text"].split("\n"):  # not splitlines(): keep \r, \f, \u2028... in training
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
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOD_ID,
            pad_id=PAD_ID,
            hard_vocab_limit=cfg.type != "char",
            # lossless: decode(encode(text)) == text, so bits per byte counts every byte
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            user_defined_symbols=LINE_BREAKS,  # training sentences are lines: these never appear in them
            # no invisible space before each text: encoding then splits at spaces and newlines,
            # which the word cache below relies on (GPT-2 style: "The" and " The" differ)
            add_dummy_prefix=False,
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
            + (", or set tokenizer.byte_fallback=false" if cfg.byte_fallback else "")
            + ")."
        )
    if cfg.type == "char" and cfg.byte_fallback:
        return LmlabError(
            "a char tokenizer with byte_fallback needs tokenizer.vocab_size of at least "
            f"{256 + len(SPECIAL_IDS) + len(LINE_BREAKS)} plus the corpus's characters (got {cfg.vocab_size}); "
            f"raise it or set tokenizer.byte_fallback=false. ({message})"
        )
    return LmlabError(f"sentencepiece failed on {corpus} with tokenizer={asdict(cfg)}: {message}")


def _batches(jsonl: Path, size: int) -> Iterator[list[bytes]]:
    """Groups of jsonl lines of about ``size`` bytes (at least one document each); bytes, so that
    progress can count them against the file's size (the workers' json.loads decodes them)."""
    batch: list[bytes] = []
    held = 0
    with open(jsonl, "rb") as f:
        for line in f:
            batch.append(line)
            held += len(line)
            if held >= size:
                yield batch
                batch, held = [], 0
    if batch:
        yield batch


@dataclass(frozen=True)
class Encoding:
    """What every batch of one tokenize run is encoded with."""

    model: bytes
    word_cache: bool  # BPE: encode through the word cache
    dtype: np.dtype
    batch_bytes: int
    in_flight: int  # batches submitted ahead of the writer: bounds memory


def encode_split(
    pool: ProcessPoolExecutor, enc: Encoding, jsonl: Path, out_stem: Path, *, labeled: bool
) -> dict[str, int]:
    """Encode one split to ``<out_stem>.bin`` (plus offsets and labels when ``labeled``).

    A split that takes longer than ``PROGRESS_SECONDS`` logs how far it got every ``PROGRESS_SECONDS``,
    and when it is done; shorter ones stay quiet (the stage's summary covers them).
    """
    counts = {"documents": 0, "tokens": 0, "bytes": 0}
    lengths: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    pending: deque[tuple[Future, int]] = deque()  # and the jsonl bytes of each batch
    size = jsonl.stat().st_size
    read = 0  # jsonl bytes encoded and written
    started = reported = time.monotonic()

    def drain_one(f: Any) -> None:
        nonlocal read, reported
        future, batch_bytes = pending.popleft()
        tokens, doc_lengths, doc_labels, nbytes = future.result()
        f.write(memoryview(tokens))  # not tokens.tofile: its OSError loses the errno (a full disk is then unnamed)
        counts["documents"] += len(doc_lengths)
        counts["tokens"] += len(tokens)
        counts["bytes"] += nbytes
        if labeled:
            lengths.append(doc_lengths)
            labels.append(doc_labels)
        read += batch_bytes
        if time.monotonic() - reported >= PROGRESS_SECONDS:
            reported = time.monotonic()
            log.info(
                "encoding %s: %.0f%% after %.0fs (%s documents, %.1f MB of text)",
                jsonl,
                100 * read / max(size, 1),
                reported - started,
                f"{counts['documents']:,}",
                counts["bytes"] / 1e6,
            )

    bin_path = out_stem.with_suffix(".bin")
    with naming_full_disk(bin_path), open(bin_path, "wb") as f:
        for batch in _batches(jsonl, enc.batch_bytes):
            future = pool.submit(encode_batch, enc.model, enc.word_cache, batch, enc.dtype.str, not labeled)
            pending.append((future, sum(map(len, batch))))
            if len(pending) >= enc.in_flight:
                drain_one(f)
        while pending:
            drain_one(f)
    if reported > started:
        log.info("encoded %s in %.0fs", jsonl, time.monotonic() - started)
    if labeled:
        if not labels or labels[0] is None:
            raise LmlabError(f"{jsonl} has no 'label' field: is it a labeled set's split?")
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
        np.save(out_stem.with_suffix(".offsets.npy"), offsets)
        np.save(out_stem.with_suffix(".labels.npy"), np.concatenate(labels))
    return counts


def encoder_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes, started now so that their start overlaps tokenizer training.

    Spawned, not forked: workers start small instead of sharing the trainer's heap. They end
    with this process even when it is killed (``end_with_parent``). On Linux that is a death
    signal, which the kernel sends when the *thread* that started a worker ends: Python starts
    spawned workers in ``submit``, on the submitting thread (all of them here, in practice), so
    the thread that calls this must hold the pool for all its use, as ``tokenize``'s ``with`` does.
    """
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=end_with_parent,
        initargs=(os.getpid(),),
    )
    for _ in range(workers):
        pool.submit(_ready)
    return pool


def _ready() -> None:
    """Nothing to do: a worker imports this module (numpy, sentencepiece) to run it."""


def tokenize(
    corpus: DatasetConfig, task: DatasetConfig | None, cfg: TokenizerConfig, paths: PathsConfig
) -> dict[str, Any]:
    """Train the tokenizer and encode the corpus (and labeled set).

    Returns ``meta.json``'s content plus ``seconds`` spent training and encoding.
    """
    corpus_splits = _require_splits(paths.splits(corpus.name), "data", corpus.name)
    task_splits = _require_splits(paths.splits(task.name), "task_data", task.name) if task else None
    workers = worker_count(cfg.num_threads)
    out = paths.tokenized(corpus.name, cfg)
    with encoder_pool(workers) as pool, staged_dir(out) as staging:
        train_jsonl = corpus_splits / "train.jsonl"
        log.info("training a %s tokenizer on %s (%.1f MB)", cfg.type, train_jsonl, train_jsonl.stat().st_size / 1e6)
        started = time.perf_counter()
        model = train_tokenizer(train_jsonl, cfg)
        vocab_size = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
        if cfg.type == "char" and not cfg.byte_fallback and vocab_size >= cfg.vocab_size:
            log.warning(
                "char tokenizer is full (vocab_size=%d): the corpus's rarest characters become <unk>. "
                "Raise tokenizer.vocab_size or set tokenizer.byte_fallback=true for a lossless encoding.",
                cfg.vocab_size,
            )
        trained = time.perf_counter()
        log.info("trained %s tokenizer (vocab %d) in %.1fs", cfg.type, vocab_size, trained - started)
        enc = Encoding(model, cfg.type == "bpe", token_dtype(vocab_size), cfg.batch_bytes, 2 * workers)
        splits = {
            split: encode_split(pool, enc, corpus_splits / f"{split}.jsonl", staging / split, labeled=False)
            for split in SPLITS
        }
        task_meta = None
        if task and task_splits:
            (staging / "task").mkdir()
            task_meta = {
                "name": task.name,
                "classes": read_json(
                    task_splits / "meta.json",
                    f"rebuild it with `lmlab split task_data={task.name} only=task_data` (or `dvc repro split`)",
                ).get("classes"),  # None for a set without labels: encoding it says so
                "splits": {
                    split: encode_split(
                        pool, enc, task_splits / f"{split}.jsonl", staging / "task" / split, labeled=True
                    )
                    for split in SPLITS
                },
            }
        (staging / "tokenizer.model").write_bytes(model)
        extra = {"task": task_meta} if task_meta else {}
        meta = write_meta(staging, vocab_size, splits, corpus=corpus.name, tokenizer=asdict(cfg), **extra)
    # timings stay out of meta.json so that equal inputs give byte-equal outputs
    meta["seconds"] = {"train": trained - started, "encode": time.perf_counter() - trained}
    _report(out, meta)
    return meta


def _require_splits(folder: Path, key: str, name: str) -> Path:
    missing = [s for s in SPLITS if not (folder / f"{s}.jsonl").exists()]
    if missing or not (folder / "meta.json").exists():
        raise LmlabError(f"{folder} lacks {missing or ['meta.json']}: run `lmlab split {key}={name}` first")
    return folder


def _report(out: Path, meta: dict[str, Any]) -> None:
    sections = [("", meta["splits"])] + ([("task/", meta["task"]["splits"])] if "task" in meta else [])
    encoded = sum(c["bytes"] for _, splits in sections for c in splits.values())
    seconds = meta["seconds"]
    print(
        f"{out}: vocab {meta['vocab_size']} ({meta['dtype']}); trained in {seconds['train']:.1f}s, "
        f"encoded {encoded / 1e6:.1f} MB in {seconds['encode']:.1f}s ({encoded / 1e6 / seconds['encode']:.1f} MB/s)"
    )
    for prefix, splits in sections:
        for split, c in splits.items():
            print(
                f"  {prefix + split:10s} {c['documents']:>9,d} docs {c['tokens']:>12,d} tokens "
                f"{c['bytes']:>13,d} bytes ({c['bytes'] / max(c['tokens'], 1):.2f} bytes/token)"
            )
