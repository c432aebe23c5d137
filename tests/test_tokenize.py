"""The tokenize stage with real sentencepiece: splits/<name>/ -> tokenized/<corpus>-<tokenizer>/."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sentencepiece as spm

from lmlab.core.errors import LmlabError
from lmlab.data.config import SPLITS, DatasetConfig, PathsConfig, TokenizerConfig
from lmlab.data.split import split_dataset
from lmlab.data.tokenize import EOD_ID, split_long_line, token_dtype, tokenize, training_sentences
from tests.helpers.corpora import make_docs, own_splits_corpus, paths_for, read_split, reviews_dataset

# val/test-only material: letters that no train word has, and Cyrillic
FOREIGN = "jqvxzЖук"


def corpus(
    paths: PathsConfig, name: str = "corp", *, exotic: bool = False, splits: dict[str, list[str]] | None = None
) -> DatasetConfig:
    """A split corpus (own splits, so each split's text is known). ``exotic`` puts characters
    in val and test that train never has, a word repeated often in val among them."""
    if splits is None:
        splits = {"train": make_docs(80, seed=1), "val": make_docs(10, seed=2), "test": make_docs(10, seed=3)}
        if exotic:
            splits["val"].append("xqz jvx zzqj " * 30 + "\n")
            splits["test"].append("the Жук and\txqz  jvx\n\n")
    ds = own_splits_corpus(paths, name, splits)
    split_dataset(ds, paths)
    return ds


def tok(type: str = "bpe", vocab_size: int = 200, **kw: Any) -> TokenizerConfig:
    kw.setdefault("byte_fallback", False)
    kw.setdefault("num_threads", 1)
    return TokenizerConfig(type=type, vocab_size=vocab_size, **kw)


def load(
    paths: PathsConfig, name: str, cfg: TokenizerConfig
) -> tuple[Path, dict[str, Any], spm.SentencePieceProcessor]:
    out = paths.tokenized(name, cfg)
    meta = json.loads((out / "meta.json").read_text())
    return out, meta, spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))


def stream(out: Path, stem: str, meta: dict[str, Any]) -> np.ndarray:
    return np.memmap(out / f"{stem}.bin", dtype=meta["dtype"], mode="r")


def documents_of(tokens: np.ndarray) -> list[list[int]]:
    """Cut a corpus stream at the end-of-document ids (each document is followed by one)."""
    ends = np.flatnonzero(tokens == EOD_ID)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokens[s:e].tolist() for s, e in zip(starts, ends, strict=True)]


def vocabulary(sp: spm.SentencePieceProcessor) -> list[tuple[str, float]]:
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]


def text_pieces(sp: spm.SentencePieceProcessor) -> list[str]:
    """Pieces that are text: not control, unknown or byte pieces."""
    return [
        sp.id_to_piece(i)
        for i in range(sp.get_piece_size())
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))
    ]


def no_output_left(paths: PathsConfig, name: str, cfg: TokenizerConfig) -> bool:
    out = paths.tokenized(name, cfg)
    return not out.parent.exists() or not [p for p in out.parent.iterdir() if out.name in p.name]


# --- training --------------------------------------------------------------------------------


def test_the_tokenizer_learns_from_the_train_split_only(tmp_path):
    paths = paths_for(tmp_path)
    corpus(paths, exotic=True)
    cfg = tok("bpe", 400, byte_fallback=True)
    meta = tokenize(DatasetConfig(name="corp"), None, cfg, paths)
    out, _, sp = load(paths, "corp", cfg)

    pieces = text_pieces(sp)
    assert any("the" in p for p in pieces)  # train words are there...
    assert not [p for p in pieces if set(p) & set(FOREIGN)]  # ...val's frequent word and test's letters are not
    assert sp.piece_to_id("Ж") == sp.unk_id()
    # a test-only character is spelled in UTF-8 byte pieces, and decodes back
    zhe = sp.encode("Ж")
    assert [sp.id_to_piece(i) for i in zhe] == ["<0xD0>", "<0x96>"]
    test_tokens = stream(out, "test", meta)
    exotic = documents_of(test_tokens)[-1]
    assert zhe[0] in exotic and zhe[1] in exotic
    assert sp.decode(exotic) == "the Жук and\txqz  jvx\n\n"
    assert sp.unk_id() not in np.asarray(test_tokens)


def test_val_only_words_would_be_learned_if_they_were_in_train(tmp_path):
    """The contrast that makes the test above meaningful: the same text in train yields pieces."""
    paths = paths_for(tmp_path)
    train = make_docs(80, seed=1) + ["xqz jvx zzqj " * 30 + "\n"]
    corpus(paths, splits={"train": train, "val": make_docs(3, seed=2), "test": make_docs(3, seed=3)})
    cfg = tok("bpe", 400, byte_fallback=True)
    tokenize(DatasetConfig(name="corp"), None, cfg, paths)
    _, _, sp = load(paths, "corp", cfg)
    assert [p for p in text_pieces(sp) if set(p) & set("jqxz")]


# --- every type, lossless, the stream format ----------------------------------------------------

TYPES = [
    ("bpe", 200, False),
    ("unigram", 120, False),
    ("char", 100, False),
    ("bpe", 400, True),
    ("unigram", 350, True),
    ("char", 300, True),
]


@pytest.mark.parametrize("type_, vocab, byte_fallback", TYPES)
def test_each_type_encodes_every_split_losslessly_in_the_stream_format(tmp_path, type_, vocab, byte_fallback):
    paths = paths_for(tmp_path)
    corpus(paths, exotic=byte_fallback)  # without byte fallback, val and test only use train characters
    cfg = tok(type_, vocab, byte_fallback=byte_fallback, num_threads=2)
    meta = tokenize(DatasetConfig(name="corp"), None, cfg, paths)
    out, written, sp = load(paths, "corp", cfg)

    assert written == {k: v for k, v in meta.items() if k != "seconds"}  # timings stay out of meta.json
    assert meta["corpus"] == "corp" and meta["tokenizer"]["type"] == type_
    assert meta["vocab_size"] == sp.get_piece_size()
    if type_ != "char":
        assert meta["vocab_size"] == vocab
    assert meta["special_ids"] == {"unk": 0, "bos": 1, "eod": 2, "pad": 3}
    assert sp.eos_id() == EOD_ID and sp.piece_to_id("\n") > 3
    assert meta["dtype"] == "uint16"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.bin", "tokenizer.model", "train.bin", "val.bin"]

    for split in SPLITS:
        docs = [r["text"] for r in read_split(paths, "corp", split)]
        tokens = stream(out, split, meta)
        counts = meta["splits"][split]
        assert tokens.dtype == np.uint16
        assert (out / f"{split}.bin").stat().st_size == counts["tokens"] * tokens.itemsize
        assert counts["tokens"] == len(tokens)
        assert counts["documents"] == len(docs) == int((tokens == EOD_ID).sum())
        assert tokens[-1] == EOD_ID
        assert counts["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
        encoded = documents_of(tokens)
        for doc, ids in zip(docs, encoded, strict=True):
            assert ids == sp.encode(doc)  # the workers' encoding is sentencepiece's own
            assert sp.decode(ids) == doc  # lossless: newlines, runs of spaces, tabs, edges
        assert sp.unk_id() not in tokens


def test_whitespace_edge_cases_round_trip(tmp_path):
    paths = paths_for(tmp_path)
    edge = [
        "  two leading spaces",
        "trailing  \t",
        "\n\nstarts with newlines",
        "ends with newlines\n\n\n",
        "a\tb\t\tc",
        "many     spaces    inside",
        " ",
        "\n",
        "x\fy\u2028z",
        "in\r\nwindows\r\nlines\r\n",
    ]
    splits = {"train": make_docs(60, seed=1) + edge, "val": edge[:5], "test": edge[5:]}
    corpus(paths, splits=splits)
    for type_, vocab, byte_fallback in (
        ("bpe", 150, False),
        ("unigram", 100, False),
        ("char", 100, False),
        ("bpe", 400, True),
    ):
        # full coverage: characters seen once in train (\f, \u2028) are pieces too
        cfg = tok(type_, vocab, byte_fallback=byte_fallback, character_coverage=1.0)
        meta = tokenize(DatasetConfig(name="corp"), None, cfg, paths)
        out, _, sp = load(paths, "corp", cfg)
        for split in SPLITS:
            docs = [r["text"] for r in read_split(paths, "corp", split)]
            decoded = [sp.decode(ids) for ids in documents_of(stream(out, split, meta))]
            mismatched = [(d, e) for d, e in zip(docs, decoded, strict=True) if d != e]
            # "\r" never reaches training (sentencepiece strips it from line ends); it is a piece of its own
            assert mismatched == [], (type_, split, mismatched)


def test_token_dtype_follows_the_vocabulary_size():
    assert token_dtype(100) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535
    assert token_dtype(65537) == np.uint32


def test_a_vocabulary_over_65536_pieces_is_stored_as_uint32(tmp_path):
    paths = paths_for(tmp_path)
    chars = [chr(c) for c in [*range(0x4E00, 0x9FA6), *range(0xAC00, 0xD7A4), *range(0x20000, 0x20000 + 40000)]]
    lines = ["".join(chars[i : i + 500]) for i in range(0, len(chars), 500)]
    corpus(paths, splits={"train": lines, "val": lines[:2], "test": lines[-2:]})
    cfg = tok("char", 80_000, character_coverage=1.0, num_threads=2)
    meta = tokenize(DatasetConfig(name="corp"), None, cfg, paths)
    out, _, sp = load(paths, "corp", cfg)

    assert meta["vocab_size"] == len(chars) + 6  # 4 specials, "\n" and "\r"
    assert meta["dtype"] == "uint32"
    tokens = stream(out, "train", meta)
    assert tokens.dtype == np.uint32
    assert (out / "train.bin").stat().st_size == 4 * meta["splits"]["train"]["tokens"] == 4 * (len(chars) + len(lines))
    assert tokens.max() > 65535
    assert [sp.decode(ids) for ids in documents_of(tokens)] == lines


# --- the labeled set -------------------------------------------------------------------------


def test_the_labeled_set_gets_offsets_and_labels(tmp_path):
    paths = paths_for(tmp_path)
    corpus(paths)
    task, _ = reviews_dataset(paths, "reviews", n_movies=30)
    split_dataset(task, paths)
    cfg = tok("bpe", 400, byte_fallback=True, num_threads=2, batch_bytes=500)
    meta = tokenize(DatasetConfig(name="corp"), task, cfg, paths)
    out, _, sp = load(paths, "corp", cfg)

    assert meta["task"]["name"] == "reviews" and meta["task"]["classes"] == ["bad", "good"]
    for split in SPLITS:
        records = read_split(paths, "reviews", split)
        tokens = stream(out / "task", split, meta)
        offsets = np.load(out / "task" / f"{split}.offsets.npy")
        labels = np.load(out / "task" / f"{split}.labels.npy")
        assert offsets.dtype == np.int64 and labels.dtype == np.int64
        assert len(offsets) == len(records) + 1
        assert offsets[0] == 0 and offsets[-1] == len(tokens)
        assert labels.tolist() == [r["label"] for r in records]
        assert EOD_ID not in tokens  # no separators in the labeled set
        for k, record in enumerate(records):
            ids = tokens[offsets[k] : offsets[k + 1]].tolist()
            assert ids == sp.encode(record["text"])
            assert sp.decode(ids) == record["text"]
        counts = meta["task"]["splits"][split]
        assert counts == {
            "documents": len(records),
            "tokens": len(tokens),
            "bytes": sum(len(r["text"].encode()) for r in records),
        }


# --- wrong vocabulary sizes --------------------------------------------------------------------


@pytest.mark.parametrize("type_, byte_fallback", [("bpe", False), ("unigram", False), ("bpe", True)])
def test_a_vocabulary_larger_than_the_corpus_supports_names_the_largest_workable_size(tmp_path, type_, byte_fallback):
    paths = paths_for(tmp_path)
    corpus(paths)
    too_big = tok(type_, 5000, byte_fallback=byte_fallback)
    with pytest.raises(LmlabError, match="tokenizer.vocab_size=5000 is larger") as err:
        tokenize(DatasetConfig(name="corp"), None, too_big, paths)
    assert no_output_left(paths, "corp", too_big)
    largest = int(re.search(r"largest workable size is (\d+)", str(err.value)).group(1))
    assert (256 if byte_fallback else 28) < largest < 5000

    fits = tok(type_, largest, byte_fallback=byte_fallback)
    assert tokenize(DatasetConfig(name="corp"), None, fits, paths)["vocab_size"] == largest
    with pytest.raises(LmlabError, match=f"largest workable size is {largest}"):
        tokenize(DatasetConfig(name="corp"), None, tok(type_, largest + 1, byte_fallback=byte_fallback), paths)


def test_a_vocabulary_too_small_for_byte_fallback_is_a_clear_error(tmp_path):
    paths = paths_for(tmp_path)
    corpus(paths)
    with pytest.raises(
        LmlabError,
        match=r"tokenizer.vocab_size=100 is too small .*use at least (\d+).*"
        r"tokenizer.byte_fallback=false",
    ) as err:
        tokenize(DatasetConfig(name="corp"), None, tok("bpe", 100, byte_fallback=True), paths)
    needed = int(re.search(r"use at least (\d+)", str(err.value)).group(1))
    assert needed == 256 + 29  # bytes, the corpus's characters, 4 special pieces, "\n" and "\r"
    assert (
        tokenize(DatasetConfig(name="corp"), None, tok("bpe", needed, byte_fallback=True), paths)["vocab_size"]
        == needed
    )

    with pytest.raises(
        LmlabError, match=r"char tokenizer with byte_fallback needs tokenizer.vocab_size of at least 262"
    ):
        tokenize(DatasetConfig(name="corp"), None, tok("char", 100, byte_fallback=True), paths)
    assert no_output_left(paths, "corp", tok("char", 100))


# --- long lines --------------------------------------------------------------------------------


def assert_cut_losslessly(line: str, pieces: list[str], max_bytes: int) -> None:
    """Pieces fit, follow one another in ``line``, and only spaces between them (or at the end) are gone."""
    pos = 0
    for k, piece in enumerate(pieces):
        assert 0 < len(piece.encode("utf-8")) <= max_bytes
        if k:
            pos += len(line[pos:]) - len(line[pos:].lstrip(" "))
        assert line.startswith(piece, pos), (piece, line[pos : pos + 40])
        pos += len(piece)
        if k < len(pieces) - 1 and " " in piece[1:]:
            assert line[pos] == " "  # cut at whitespace whenever the piece has any
    assert line[pos:].strip(" ") == ""


@pytest.mark.parametrize(
    "line, max_bytes",
    [
        ("short line", 100),
        ("the quick brown fox jumps over the lazy dog " * 20, 64),
        ("naïve café déjà vu 日本語 テキスト 😀 emoji " * 30, 32),
        ("tight" + " x" * 50, 5),
        ("averyveryverylongwordwithoutanyspaceatall" * 10 + " tail", 16),
        ("日本語のテキストには空白がない" * 20, 10),  # 3-byte characters never cut in half
        ("   leading spaces and   runs   of   them  ", 8),
    ],
)
def test_split_long_line_cuts_at_whitespace_into_pieces_that_fit(line, max_bytes):
    pieces = list(split_long_line(line, max_bytes))
    assert_cut_losslessly(line, pieces, max_bytes)
    if len(line.encode()) <= max_bytes:
        assert pieces == [line]


def test_split_long_line_keeps_words_whole_when_they_fit():
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split() * 10
    pieces = list(split_long_line(" ".join(words), 30))
    assert [w for p in pieces for w in p.split(" ")] == words
    assert all(len(p) <= 30 for p in pieces)
    assert " ".join(pieces) == " ".join(words)


def test_a_corpus_of_one_very_long_line_still_trains(tmp_path):
    paths = paths_for(tmp_path)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    rng = np.random.default_rng(0)
    line = " ".join(words[i] for i in rng.integers(0, len(words), 4000))  # ~23 kB, no newline
    corpus(paths, splits={"train": [line], "val": [line[:300]], "test": [line[-300:]]})
    train_jsonl = paths.splits("corp") / "train.jsonl"
    sentences = list(training_sentences(train_jsonl, 256))
    assert len(line) > 20_000 and "\n" not in line
    assert len(sentences) >= len(line) / 256 and max(len(s.encode()) for s in sentences) <= 256
    assert " ".join(sentences) == line

    cfg = tok("bpe", 60, max_sentence_length=256)
    meta = tokenize(DatasetConfig(name="corp"), None, cfg, paths)
    out, _, sp = load(paths, "corp", cfg)
    assert meta["vocab_size"] == 60
    assert "▁alpha" in text_pieces(sp) or "alpha" in text_pieces(sp)
    (ids,) = documents_of(stream(out, "train", meta))
    assert sp.decode(ids) == line  # the whole line is encoded, not cut
    assert len(ids) < len(line) / 3


# --- determinism across workers and batches -----------------------------------------------------


@pytest.mark.parametrize("type_, vocab", [("bpe", 200), ("unigram", 120)])
def test_output_is_the_same_for_any_worker_count_and_batch_size(tmp_path, type_, vocab):
    paths = paths_for(tmp_path)
    corpus(paths)
    task, _ = reviews_dataset(paths, "reviews", n_movies=20)
    split_dataset(task, paths)
    results = []
    for threads, batch in ((1, 1_000_000), (2, 1), (2, 700), (1, 1)):
        cfg = tok(type_, vocab, num_threads=threads, batch_bytes=batch)
        meta = tokenize(DatasetConfig(name="corp"), task, cfg, paths)
        out, _, sp = load(paths, "corp", cfg)
        files = {
            str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.suffix in (".bin", ".npy")
        }
        results.append((files, meta["splits"], meta["task"], vocabulary(sp)))
    files, splits, task_meta, vocab = results[0]
    assert len(files) == 3 + 9
    for other in results[1:]:
        assert other[:3] == (files, splits, task_meta)
        # same pieces; unigram's multithreaded EM may differ in a score's last float bits
        assert [p for p, _ in other[3]] == [p for p, _ in vocab]
        np.testing.assert_allclose([s for _, s in other[3]], [s for _, s in vocab], rtol=1e-6)


# --- failures ------------------------------------------------------------------------------


def test_missing_splits_tell_to_run_split(tmp_path):
    paths = paths_for(tmp_path)
    with pytest.raises(LmlabError, match=r"run `lmlab split data=corp` first"):
        tokenize(DatasetConfig(name="corp"), None, tok(), paths)
    corpus(paths)
    with pytest.raises(LmlabError, match=r"run `lmlab split task_data=reviews` first"):
        tokenize(DatasetConfig(name="corp"), DatasetConfig(name="reviews"), tok(), paths)
    (paths.splits("corp") / "meta.json").unlink()  # an unfinished split folder is no split
    with pytest.raises(LmlabError, match=r"meta.json.*lmlab split data=corp"):
        tokenize(DatasetConfig(name="corp"), None, tok(), paths)
    assert not paths.tokenized("corp", tok()).parent.exists()


def test_a_run_failing_while_encoding_leaves_no_output_and_keeps_an_earlier_one(tmp_path):
    paths = paths_for(tmp_path)
    corpus(paths)
    corpus(paths, "plain")  # unlabeled, so encoding it as the labeled set fails midway
    cfg = tok()
    with pytest.raises(LmlabError, match="no 'label' field"):
        tokenize(DatasetConfig(name="corp"), DatasetConfig(name="plain"), cfg, paths)
    assert no_output_left(paths, "corp", cfg)

    tokenize(DatasetConfig(name="corp"), None, cfg, paths)
    out = paths.tokenized("corp", cfg)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(LmlabError, match="no 'label' field"):
        tokenize(DatasetConfig(name="corp"), DatasetConfig(name="plain"), cfg, paths)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == [out.name]


# --- the BPE word cache ------------------------------------------------------------------------

ADVERSARIAL = [
    "",
    " ",
    "  ",
    "\n",
    "\r\n",
    " \n ",
    "word",
    " word",
    "word ",
    "two  spaces",
    "tab\there",
    "a\tb \tc",
    "line one\nline two\r\nline three\n\n",
    "digits 12345 mixed abc123def 3.14159",
    "unseen ✓ characters: 日本語, emoji 🙂, accents é è ü",
    "punctuation!?.,;:'\"()[]{}",
    "a" * 5000,
    ("long " * 2000).strip(),
    "\u2028\f\x0b odd breaks",
    "trailing newline\n",
]


@pytest.mark.parametrize("byte_fallback", [False, True])
def test_the_word_cache_encodes_exactly_as_sentencepiece(tmp_path, byte_fallback):
    from lmlab.data.encode import encode_texts

    paths = paths_for(tmp_path)
    corpus(paths)
    cfg = tok("bpe", 400 if byte_fallback else 150, byte_fallback=byte_fallback)
    tokenize(DatasetConfig(name="corp"), None, cfg, paths)
    model = (paths.tokenized("corp", cfg) / "tokenizer.model").read_bytes()
    sp = spm.SentencePieceProcessor(model_proto=model)
    texts = ADVERSARIAL + [r["text"] for r in read_split(paths, "corp", "test")]
    for eod in (False, True):
        tokens, lengths = encode_texts(model, texts, True, eod)
        expected = [sp.encode(t) + ([EOD_ID] if eod else []) for t in texts]
        assert lengths.tolist() == [len(ids) for ids in expected]
        assert tokens.tolist() == [i for ids in expected for i in ids]
        uncached, _ = encode_texts(model, texts, False, eod)
        assert np.array_equal(tokens, uncached)
