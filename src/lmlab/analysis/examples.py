"""What `lmlab evaluate` keeps per test example, so that `lmlab report` can put an interval on every figure
(`lmlab.analysis.stats`): ``<eval_dir>/<family>/examples.npz`` beside the sample (the pipeline's eval_dir:
``data/eval/seed<k>``).

- ``block_nats``, ``block_tokens``: summed loss and predicted tokens of each block of test text (one row of one
  evaluation window): the units the loss's block bootstrap resamples.
- ``labels``: each test document's class; ``pred/<prefix>``: the class a classifier predicted for it, per
  classifier (``test/``: fine-tuned from the pretrained model; ``scratch/test/``: the baseline).
- ``majority_class``: the train split's most frequent class, the baseline that predicts it for every document.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmlab.core.atomic import write_atomic
from lmlab.core.errors import LmlabError

COLLAPSED = 0.95  # a classifier predicting one class for at least this share of test documents has collapsed


@dataclass
class Examples:
    block_nats: np.ndarray
    block_tokens: np.ndarray
    labels: np.ndarray
    majority_class: int
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # classifier prefix -> class per document

    def correct(self, prefix: str) -> np.ndarray:
        """1.0 where the classifier `prefix` got the document right, else 0.0."""
        return (self.predictions[prefix] == self.labels).astype(np.float64)

    def majority_correct(self) -> np.ndarray:
        return (self.labels == self.majority_class).astype(np.float64)

    def top_share(self, prefix: str) -> tuple[int, float]:
        """The class the classifier predicts most, and the share of test documents it predicts it for."""
        counts = np.bincount(self.predictions[prefix])
        return int(counts.argmax()), float(counts.max() / max(len(self.labels), 1))

    def collapsed(self, prefix: str) -> bool:
        return self.top_share(prefix)[1] >= COLLAPSED

    def save(self, path: Path) -> None:
        arrays = {
            "block_nats": self.block_nats,
            "block_tokens": self.block_tokens,
            "labels": self.labels,
            "majority_class": np.array(self.majority_class),
            **{f"pred/{prefix}": pred for prefix, pred in self.predictions.items()},
        }
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomic(path, buffer.getbuffer())

    @classmethod
    def load(cls, path: Path, rebuild: str) -> Examples:
        """The record at `path`; a missing or damaged one is an error naming it and `rebuild`."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {key: saved[key] for key in saved.files}
            examples = cls(
                arrays.pop("block_nats"),
                arrays.pop("block_tokens"),
                arrays.pop("labels"),
                int(arrays.pop("majority_class")),
                {key.removeprefix("pred/"): value for key, value in arrays.items() if key.startswith("pred/")},
            )
        except FileNotFoundError:
            raise LmlabError(f"no {path}: {rebuild}") from None
        except (OSError, ValueError, KeyError, TypeError) as err:  # not an npz, cut short, a key missing
            reason = f"{type(err).__name__}: {err}"
            raise LmlabError(f"{path} is not a readable evaluation record ({reason}): {rebuild}") from err
        if len(examples.block_nats) != len(examples.block_tokens) or any(
            len(pred) != len(examples.labels) for pred in examples.predictions.values()
        ):
            raise LmlabError(f"{path} holds arrays of mismatched lengths: {rebuild}")
        return examples
