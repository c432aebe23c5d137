"""Classifier batches (lmlab.data.labeled): every document once per epoch, batches of about one length."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lmlab.core.errors import LmlabError
from lmlab.data.config import SPLITS
from lmlab.data.corpus import Corpus, write_corpus
from lmlab.data.labeled import LabeledSet, LabeledSplit, OrderedDocuments, ShuffledDocuments

EOD, PAD = 1, 0


def split(documents: int = 2000, seed: int = 0) -> LabeledSplit:
    """Documents of skewed lengths (3..120 tokens), each token its document's index, so batches name them."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(3.3, 0.6, documents).astype(int), 3, 120)
    tokens = np.repeat(np.arange(documents) + 2, lengths)  # ids 2.. (0, 1 are pad and EOD)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return LabeledSplit(tokens, offsets, rng.integers(0, 2, documents), EOD, PAD)


def documents_of(batch: tuple) -> list[int]:
    return [int(row[1]) - 2 for row in batch[0]]  # the token after the leading EOD names the document


def epoch(data: ShuffledDocuments, number: int) -> list[list[int]]:
    it = iter(ShuffledDocuments(data.data, data.batch_size, data.max_tokens, data.seed, data.rank, data.world,
                                start=number * data.per_epoch))  # fmt: skip
    return [documents_of(next(it)) for _ in range(data.per_epoch)]


@pytest.mark.parametrize("world", [1, 2])
def test_every_document_at_most_once_per_epoch_across_ranks(world: int) -> None:
    data = split()
    ranks = [ShuffledDocuments(data, 32, 96, seed=7, rank=r, world=world) for r in range(world)]
    per_epoch = ranks[0].per_epoch
    assert per_epoch == len(data) // (32 * world)
    for number in (0, 1):
        seen = [doc for rank in ranks for batch in epoch(rank, number) for doc in batch]
        assert len(seen) == len(set(seen)) == per_epoch * 32 * world
    assert epoch(ranks[0], 0) != epoch(ranks[0], 1), "a new order each epoch"
    assert epoch(ranks[0], 1) == epoch(ShuffledDocuments(data, 32, 96, seed=7, rank=0, world=world), 1)


def test_batches_hold_documents_of_about_one_length_in_random_order() -> None:
    """Padding to the longest document of a batch costs little once batches are grouped by length, and the
    order of lengths over an epoch is still random (not short to long)."""
    data = split()
    docs = ShuffledDocuments(data, 32, 96, seed=3, rank=0, world=1)
    lengths = np.minimum(np.diff(data.offsets), 94) + 2
    batches = epoch(docs, 0)
    padded = np.mean([lengths[b].max() for b in batches])
    text = np.mean([lengths[b].mean() for b in batches])
    assert padded / text < 1.15, f"{padded:.1f} padded tokens a row for {text:.1f} of text"
    means = [lengths[b].mean() for b in batches]
    assert abs(np.corrcoef(np.arange(len(means)), means)[0, 1]) < 0.3, "batch lengths follow no trend"
    tokens, row_lengths, labels = next(iter(docs))
    assert tokens.shape == (32, int(row_lengths.max())) and labels.shape == (32,)


@pytest.mark.parametrize("world", [1, 2])
def test_evaluation_reads_every_document_once_in_batches_of_one_length(world: int) -> None:
    data = split(documents=1001)
    ranks = [OrderedDocuments(data, 64, 96, rank=r, world=world) for r in range(world)]
    batches = [documents_of(batch) for rank in ranks for batch in rank]
    seen = [doc for batch in batches for doc in batch]
    assert sorted(seen) == list(range(1001))
    assert sum(len(rank) for rank in ranks) == len(batches)
    lengths = np.minimum(np.diff(data.offsets), 94) + 2
    padded = sum(len(b) * lengths[b].max() for b in batches) / len(seen)  # tokens a row, padding included
    assert padded / lengths.mean() < 1.25, f"{padded:.1f} padded tokens a row for {lengths.mean():.1f} of text"


# ----- the labeled set on disk -----


def labeled_corpus(folder: Path) -> Corpus:
    """A corpus with a labeled set in the tokenize stage's format: ``task/<split>.bin``, ``.offsets.npy``,
    ``.labels.npy``, and their counts in meta.json's ``task``."""
    rng = np.random.default_rng(0)
    (folder / "task").mkdir(parents=True)
    counts = {}
    for split in SPLITS:
        lengths = rng.integers(3, 20, 12)
        tokens = rng.integers(4, 32, int(lengths.sum())).astype(np.uint16)
        tokens.tofile(folder / "task" / f"{split}.bin")
        np.save(folder / "task" / f"{split}.offsets.npy", np.concatenate([[0], np.cumsum(lengths)]))
        np.save(folder / "task" / f"{split}.labels.npy", rng.integers(0, 2, 12))
        counts[split] = {"documents": 12, "tokens": len(tokens), "bytes": 3 * len(tokens)}
    streams = {split: np.full(100, 4, np.uint16) for split in SPLITS}
    task = {"name": "reviews", "classes": ["negative", "positive"], "splits": counts}
    return write_corpus(folder, streams, 32, dict.fromkeys(SPLITS, 300), task=task)


def cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda task: cut(task / "train.bin", 100), r"task/train\.bin holds 50 tokens, but .*meta\.json says \d"),
        (lambda task: cut(task / "train.offsets.npy", 140), r"task/train\.offsets\.npy is not a readable"),
        (
            lambda task: np.save(task / "train.labels.npy", np.zeros(11, np.int64)),
            r"task/train\.labels\.npy holds 11 labels \(int64\), but .*meta\.json says 12 documents",
        ),
        (
            lambda task: np.save(task / "train.offsets.npy", np.arange(13)),
            r"task/train\.offsets\.npy does not cut the \d+ tokens of .*task/train\.bin into 12 documents",
        ),
    ],
    ids=["bin", "offsets-cut", "labels", "offsets-other"],
)
def test_damaged_labeled_files_are_refused_naming_the_file_and_the_tokenize_stage(
    tmp_path: Path, damage: Callable[[Path], None], problem: str
) -> None:
    corpus = labeled_corpus(tmp_path / "corpus")
    labeled = LabeledSet.open(corpus)
    assert len(labeled.split("train")) == 12
    damage(corpus.folder / "task")
    with pytest.raises(LmlabError, match=problem) as caught:
        labeled.split("train")
    assert "dvc repro tokenize" in str(caught.value)
    assert len(labeled.split("val")) == 12  # the other splits are intact


@pytest.mark.parametrize(
    ("task", "problem"),
    [
        ({"name": "reviews", "classes": "negative positive"}, r"'task\.classes' is 'negative positive', not a list"),
        ({"classes": ["negative", "positive"], "splits": {}}, r"has no key 'task\.name'"),
    ],
    ids=["classes-text", "no-name"],
)
def test_a_damaged_task_entry_in_meta_json_names_it(tmp_path: Path, task: dict, problem: str) -> None:
    folder = labeled_corpus(tmp_path / "corpus").folder
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(meta | {"task": task}))
    with pytest.raises(LmlabError, match=problem) as caught:
        LabeledSet.open(Corpus.open(folder))
    assert str(folder / "meta.json") in str(caught.value) and "dvc repro tokenize" in str(caught.value)
