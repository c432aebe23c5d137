"""The classification figures, one definition for the fine-tuning run's validation and `lmlab evaluate`'s test:
accuracy, macro F1, per-class precision and recall, and the confusion matrix (torchmetrics, synchronised across
ranks), flattened into the metric vocabulary's names."""

from __future__ import annotations

from typing import Any

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def classification_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "precision": MulticlassPrecision(num_classes, average=None),
            "recall": MulticlassRecall(num_classes, average=None),
            "confusion": MulticlassConfusionMatrix(num_classes),
        }
    )


def summarize(metrics: MetricCollection, prefix: str, classes: list[str]) -> dict[str, Any]:
    """The computed collection as flat numbers (DVC metrics files show nothing else): ``<prefix>acc``,
    ``<prefix>f1``, ``<prefix>precision/<class>``, ``<prefix>recall/<class>`` and
    ``<prefix>confusion/<true class>/<predicted class>`` (document counts)."""
    values = metrics.compute()
    out: dict[str, Any] = {f"{prefix}acc": float(values["acc"]), f"{prefix}f1": float(values["f1"])}
    for kind in ("precision", "recall"):
        out |= {f"{prefix}{kind}/{name}": float(v) for name, v in zip(classes, values[kind], strict=True)}
    for true, row in zip(classes, values["confusion"].tolist(), strict=True):
        out |= {f"{prefix}confusion/{true}/{predicted}": int(n) for predicted, n in zip(classes, row, strict=True)}
    return out
