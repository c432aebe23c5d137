"""The encoding of texts into token ids, in the tokenize stage's worker processes.

BPE pieces never cross a space or newline boundary (sentencepiece's
split_by_whitespace, and a newline is a piece of its own), so a text's encoding is the
concatenation of its words' encodings. For BPE each worker encodes a word once and
then looks it up: about four times faster than sentencepiece's BPE encoder on
running text. Unigram (whose Viterbi may break ties differently per word) and char
encoders are fast already: their text goes to sentencepiece whole.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from array import array
from collections.abc import Iterator

import numpy as np
import sentencepiece as spm

from lmlab.data.corpus import SPECIAL_IDS

EOD_ID = SPECIAL_IDS["eod"]

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


def encode_batch(
    model: bytes, word_cache: bool, lines: list[bytes], dtype: str, eod: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """jsonl lines -> (tokens, per-document lengths, labels, UTF-8 bytes)."""
    records = [json.loads(line) for line in lines]
    texts = [r["text"] for r in records]
    tokens, lengths = encode_texts(model, texts, word_cache, eod)
    labels = np.array([r["label"] for r in records], dtype=np.int64) if "label" in records[0] else None
    return tokens.astype(dtype), lengths, labels, sum(len(t.encode("utf-8")) for t in texts)
