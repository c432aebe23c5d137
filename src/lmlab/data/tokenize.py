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
import itertools
import json
import logging
import multiprocessing
import operator
import os
import re
import time
from array import array
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


# --- encoding, in worker processes ---------------------------------------------------------
# BPE pieces never cross a space or newline boundary (sentencepiece's
# split_by_whitespace, and "\n" is a piece of its own), so a text's encoding is the
# concatenation of its words' encodings. For BPE each worker encodes a word once and
# then looks it up: about four times faster than sentencepiece's BPE encoder on
# running text. Unigram (whose Viterbi may break ties differently per word) and char
# encoders are fast already: their text goes to sentencepiece whole.

WORD = re.compile(r" [^ \n]*|[^ \n]+|\n")
ID_BYTES = array("i").itemsize  # cached ids are int32 bytes
CACHE_LIMIT = 1 << 21  # distinct words kept per worker before the cache starts over
PART_CHARS = 1 << 20  # longer texts go through the word cache a part at a time

_model = b""
_processor = spm.SentencePieceProcessor()
EOD_KEY = ("end of document",)  # a cache key no text word can equal
_cache: dict[str | tuple[str], bytes] = {}


def _reset_cache() -> None:
    _cache.clear()
    _cache[EOD_KEY] = array("i", [EOD_ID]).tobytes()


def _load(model: bytes) -> spm.SentencePieceProcessor:
    """The worker's processor for ``model`` (loaded once; the model travels with each batch,
    so the pool can start before the tokenizer is trained)."""
    global _model, _processor
    if model != _model:
        _model, _processor = model, spm.SentencePieceProcessor(model_proto=model)
        _reset_cache()
    return _processor


def encode_texts(model: bytes, texts: list[str], word_cache: bool, eod: bool) -> tuple[np.ndarray, np.ndarray]:
    """All texts' token ids in one int32 array, each text followed by the end-of-document id
    when ``eod``, and the number of ids per text. Equal to sentencepiece's own ``encode``."""
    processor = _load(model)
    if not word_cache:
        pieces = processor.encode(texts, num_threads=1)  # one process per core already
        if eod:
            pieces = [[*ids, EOD_ID] for ids in pieces]
        lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
        return np.fromiter(itertools.chain.from_iterable(pieces), np.int32, int(lengths.sum())), lengths
    if max(map(len, texts), default=0) <= PART_CHARS:
        return _encode_words(processor, texts, eod)
    # a long document: its words' lists would take ~25 times its size; a part at a time they take a batch's
    encoded = [_encode_long(processor, text, eod) for text in texts]
    return np.concatenate(encoded), np.fromiter(map(len, encoded), np.int64, len(encoded))


def _encode_words(processor: spm.SentencePieceProcessor, texts: list[str], eod: bool) -> tuple[np.ndarray, np.ndarray]:
    """``encode_texts`` through the word cache, all words of all texts at once (fast for many short texts)."""
    words = [WORD.findall(text) for text in texts]
    if eod:
        for ws in words:
            ws.append(EOD_KEY)
    per_word = _cached_ids(processor, list(itertools.chain.from_iterable(words)))
    # ids in the first k words, read at each text's word boundaries
    ids_before = np.concatenate([[0], np.cumsum(np.fromiter(map(len, per_word), np.int64, len(per_word)))]) // ID_BYTES
    words_before = np.concatenate([[0], np.cumsum(np.fromiter(map(len, words), np.int64, len(words)))])
    return np.frombuffer(b"".join(per_word), dtype=np.int32), np.diff(ids_before[words_before])


def _encode_long(processor: spm.SentencePieceProcessor, text: str, eod: bool) -> np.ndarray:
    """One text's ids through the word cache, a part of about ``PART_CHARS`` characters at a time."""
    ids = [_encode_words(processor, [part], False)[0] for part in _parts(text)]
    return np.concatenate([*ids, np.array([EOD_ID] if eod else [], np.int32)])


def _parts(text: str) -> Iterator[str]:
    """``text`` in parts of at most ``PART_CHARS`` characters (or one word, when longer), each cut before a
    space or newline: every word starts there, so the parts' words are the text's words."""
    start = 0
    while len(text) - start > PART_CHARS:
        end = start + PART_CHARS
        cut = max(text.rfind(" ", start + 1, end), text.rfind("\n", start + 1, end))
        if cut < 0:  # one word longer than a part: it stays whole
            cut = min((i for i in (text.find(" ", end), text.find("\n", end)) if i >= 0), default=len(text))
        yield text[start:cut]
        start = cut
    if start < len(text):
        yield text[start:]


def _cached_ids(processor: spm.SentencePieceProcessor, words: list[str | tuple[str]]) -> list[bytes]:
    """Each word's ids as int32 bytes, encoding only the words the cache lacks.

    Bytes, so that joining them is one copy; the loops run in C (map, join).
    """
    found = list(map(_cache.get, words))
    if None in found:
        missing = list(dict.fromkeys(itertools.compress(words, map(operator.not_, found))))
        if len(_cache) + len(missing) > CACHE_LIMIT:
            _reset_cache()
            missing = list(set(words) - {EOD_KEY})
        encoded = processor.encode(missing, num_threads=1)
        _cache.update(zip(missing, (array("i", ids).tobytes() for ids in encoded), strict=True))
        found = list(map(_cache.__getitem__, words))
    return found


def _encode_batch(
    model: bytes, word_cache: bool, lines: list[bytes], dtype: str, eod: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """jsonl lines -> (tokens, per-document lengths, labels, UTF-8 bytes)."""
    records = [json.loads(line) for line in lines]
    texts = [r["text"] for r in records]
    tokens, lengths = encode_texts(model, texts, word_cache, eod)
    labels = np.array([r["label"] for r in records], dtype=np.int64) if "label" in records[0] else None
    return tokens.astype(dtype), lengths, labels, sum(len(t.encode("utf-8")) for t in texts)


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
            future = pool.submit(_encode_batch, enc.model, enc.word_cache, batch, enc.dtype.str, not labeled)
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
