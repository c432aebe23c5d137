"""Classification batches from the tokenized labeled set (``data/tokenized/<corpus>-<tokenizer>/task/``).

Each split is ``<split>.bin`` (the documents' tokens, back to back),
``<split>.offsets.npy`` (n+1 document starts) and ``<split>.labels.npy``
(class ids into meta.json's ``task.classes``). A document enters a model as

    [EOD] + its first `max_tokens - 2` tokens + [EOD]

the way pretraining saw documents (each follows an end-of-document id), with
a closing EOD whose state has read the whole text: the "last" pooling reads it.
Batches are right-padded with the pad id; every model here is causal, so
padding after a document never changes the features of its tokens.

Training batches are, like the LM batches, a pure function of their index
(seed, epoch permutation, rank), so a resumed run continues with the batch an
uninterrupted one would have taken.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset

from lmlab.core.atomic import check_keys
from lmlab.core.errors import LmlabError
from lmlab.data.corpus import Corpus, check_stream

REBUILD = (
    "tokenize it again with the corpus (`dvc repro tokenize`, or `lmlab tokenize data=<corpus> "
    "task_data=<labeled set>`)"
)

# tokens [B, T], lengths [B], labels [B]
DocBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class LabeledSplit:
    """One split of the labeled set: documents as token slices, and their labels."""

    tokens: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    eod_id: int  # the corpus's special ids (its meta.json)
    pad_id: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per document (before the EOD marks and any cut)."""
        return np.diff(self.offsets)

    def document(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]

    def batch(self, indices: np.ndarray, max_tokens: int) -> DocBatch:
        docs = [self.document(i)[: max_tokens - 2] for i in indices]
        lengths = torch.tensor([len(d) + 2 for d in docs])
        out = torch.full((len(docs), int(lengths.max())), self.pad_id, dtype=torch.long)
        for row, doc in enumerate(docs):
            marked = np.concatenate([[self.eod_id], doc, [self.eod_id]]).astype(np.int64)
            out[row, : len(doc) + 2] = torch.from_numpy(marked)
        return out, lengths, torch.from_numpy(self.labels[indices].astype(np.int64))

    def lm_stream(self) -> np.ndarray:
        """The documents as one LM token stream, each followed by EOD (as the corpus streams are)."""
        return np.insert(self.tokens, self.offsets[1:], self.eod_id).astype(self.tokens.dtype)


@dataclass(frozen=True)
class LabeledSet:
    """The labeled set tokenized alongside a corpus: its class names and splits."""

    folder: Path
    name: str
    classes: list[str]
    corpus: Corpus

    @classmethod
    def open(cls, corpus: Corpus) -> LabeledSet:
        task = corpus.meta.get("task")
        folder = corpus.folder / "task"
        if task is None or not folder.is_dir():
            raise LmlabError(
                f"{corpus.folder} holds no labeled set (meta.json has no 'task'): tokenize it with the corpus, "
                "`dvc repro tokenize` or `lmlab tokenize data=<corpus> task_data=<labeled set>`"
            )
        meta_path = corpus.folder / "meta.json"
        check_keys(corpus.meta, meta_path, REBUILD, {"task": dict})
        check_keys(task, meta_path, REBUILD, {"name": str, "classes": list, "splits": dict}, within="task.")
        return cls(folder, task["name"], list(task["classes"]), corpus)

    def split(self, name: str) -> LabeledSplit:
        """The split, checked against the counts in meta.json: a file cut short or left from another tokenize
        run would otherwise pair documents with the wrong labels, or train on part of them, silently."""
        stem = self.folder / name
        meta_path = self.corpus.folder / "meta.json"
        splits = self.corpus.meta["task"]["splits"]
        check_keys(splits, meta_path, REBUILD, {name: dict}, within="task.splits.")
        check_keys(splits[name], meta_path, REBUILD, {"documents": int, "tokens": int}, within=f"task.splits.{name}.")
        documents, tokens = splits[name]["documents"], splits[name]["tokens"]
        check_stream(stem.with_suffix(".bin"), tokens, np.dtype(self.corpus.dtype), meta_path, REBUILD)
        offsets, labels = load_array(stem.with_suffix(".offsets.npy")), load_array(stem.with_suffix(".labels.npy"))
        if labels.shape != (documents,) or labels.dtype.kind not in "iu":
            raise LmlabError(
                f"{stem}.labels.npy holds {labels.size:,} labels ({labels.dtype}), but {meta_path} says {documents:,} "
                f"documents: {REBUILD}"
            )
        if (
            offsets.shape != (documents + 1,)
            or offsets.dtype.kind not in "iu"
            or offsets[0] != 0
            or offsets[-1] != tokens
            or (np.diff(offsets) < 0).any()
        ):
            raise LmlabError(
                f"{stem}.offsets.npy does not cut the {tokens:,} tokens of {stem}.bin into {documents:,} documents, "
                f"as {meta_path} says: {REBUILD}"
            )
        data = LabeledSplit(
            np.fromfile(stem.with_suffix(".bin"), dtype=self.corpus.dtype),  # a few MB at most: read whole
            offsets,
            labels,
            self.corpus.eod_id,
            self.corpus.pad_id,
        )
        bad = (data.labels < 0) | (data.labels >= len(self.classes))
        if bad.any():
            raise LmlabError(
                f"{stem}.labels.npy has label {int(data.labels[bad][0])}, outside the {len(self.classes)} classes "
                f"{self.classes} of {meta_path}: {REBUILD}"
            )
        return data


def load_array(path: Path) -> np.ndarray:
    """A ``.npy`` file the tokenize stage wrote; one cut short or damaged is an error naming it."""
    try:
        return np.load(path)
    except (OSError, ValueError, EOFError) as err:  # numpy's errors for missing, cut and pickled files
        raise LmlabError(f"{path} is not a readable numpy array ({err}): {REBUILD}") from err


class ShuffledDocuments(IterableDataset):
    """Training batches: every epoch a seeded permutation of the documents, cut into global batches of
    ``batch_size * world`` of which rank ``r`` takes its slice; the last partial batch is dropped.

    Batches are padded to their longest document, so a batch of random documents is mostly padding (on
    rt_sentiment: 70 tokens a row for 36 of text). As Hugging Face's ``group_by_length`` does, each run of
    `BUCKET` global batches of the permutation is sorted by length before it is cut, and the epoch's
    batches are then shuffled: each batch holds documents of about one length, every document still comes
    once per epoch in a random batch, and the cost of a step follows its text.
    """

    BUCKET = 50

    def __init__(
        self, data: LabeledSplit, batch_size: int, max_tokens: int, seed: int, rank: int, world: int, start: int = 0
    ) -> None:
        self.data, self.batch_size, self.max_tokens = data, batch_size, max_tokens
        self.seed, self.rank, self.world, self.start = seed, rank, world, start
        self.per_epoch = len(data) // (batch_size * world)
        if self.per_epoch == 0:
            raise LmlabError(
                f"the labeled train split has {len(data)} documents, fewer than one batch of "
                f"{batch_size} x {world} ranks: lower finetune.batch_size"
            )
        self.lengths = np.minimum(data.lengths, max_tokens - 2)

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """``[per_epoch, batch_size * world]``: the epoch's global batches, in the order they are trained."""
        rng = np.random.default_rng([self.seed, epoch])
        size = self.batch_size * self.world
        order = rng.permutation(len(self.data))[: self.per_epoch * size]
        bucket = self.BUCKET * size
        for begin in range(0, len(order), bucket):
            part = order[begin : begin + bucket]
            order[begin : begin + bucket] = part[np.argsort(self.lengths[part], kind="stable")]
        return order.reshape(self.per_epoch, size)[rng.permutation(self.per_epoch)]

    def __iter__(self) -> Iterator[DocBatch]:
        batches: tuple[int, np.ndarray] | None = None
        for index in count(self.start):
            epoch, step = divmod(index, self.per_epoch)
            if batches is None or batches[0] != epoch:
                batches = (epoch, self.epoch_batches(epoch))
            chunk = batches[1][step]
            yield self.data.batch(
                chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size], self.max_tokens
            )


class OrderedDocuments(IterableDataset):
    """Evaluation batches: every document once, on one rank, in order of length (shortest first), so that a
    batch pads little; rank ``r`` takes every ``world``-th of that order, so ranks get alike batches."""

    def __init__(self, data: LabeledSplit, batch_size: int, max_tokens: int, rank: int = 0, world: int = 1) -> None:
        self.data, self.batch_size, self.max_tokens = data, batch_size, max_tokens
        self.indices = np.argsort(data.lengths, kind="stable")[rank::world]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[DocBatch]:
        for begin in range(0, len(self.indices), self.batch_size):
            yield self.data.batch(self.indices[begin : begin + self.batch_size], self.max_tokens)
