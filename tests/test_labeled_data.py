"""Classifier batches (lmlab.data.labeled): every document once per epoch, batches of about one length."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.data.labeled import LabeledSplit, OrderedDocuments, ShuffledDocuments

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
