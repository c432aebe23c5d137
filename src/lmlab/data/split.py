"""The split stage: documents to ``data/splits/<name>/{train,val,test}.jsonl``.

Deterministic and seeded; a dataset's own splits are kept, and a split it
lacks is carved from its train split at the document level. With a group
field, whole groups move together, so no group is in two splits. Two passes
over the input keep memory to the group keys, not the text.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmlab.core.atomic import staged_dir
from lmlab.core.errors import LmlabError
from lmlab.data.config import SPLITS, DatasetConfig, PathsConfig
from lmlab.data.readers import Document, ReadStats, files_for, read_documents, validate

log = logging.getLogger(__name__)


def carve_plan(groups: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each distinct group to a split so that each split gets about its fraction of documents.

    Groups are shuffled with ``seed`` (from a sorted order, so input order does
    not matter) and dealt to the carved splits until each has its share; the rest
    stay in train. A split with a positive fraction gets at least one document.
    """
    sizes = Counter(groups)
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    total = len(groups)
    plan: dict[str, str] = {}
    position = 0
    for split, fraction in fractions.items():
        target = max(1, round(fraction * total)) if fraction > 0 else 0
        taken = 0
        while taken < target and position < len(order):
            plan[order[position]] = split
            taken += sizes[order[position]]
            position += 1
    for group in order[position:]:
        plan[group] = "train"
    return plan


def split_dataset(dataset: DatasetConfig, paths: PathsConfig, key: str = "data") -> dict[str, Any]:
    """Write the three jsonl splits and ``meta.json``; return the meta (counts per split)."""
    reader = dataset.reader
    validate(reader, f"{key}.reader")
    _check_fractions(dataset, key)
    raw = paths.raw(dataset.name)
    if not raw.is_dir():
        raise LmlabError(f"{raw} does not exist: run `lmlab download` for {key}={dataset.name} first")
    stats = ReadStats()
    sources = ["all"] if "all" in reader.files else [s for s in SPLITS if s in reader.files]
    missing = [s for s in SPLITS if s not in reader.files and "all" not in reader.files]
    carve_from = "all" if "all" in reader.files else "train"
    fractions = {"val": dataset.split.val_fraction, "test": dataset.split.test_fraction}
    if carve_from == "train":
        fractions = {s: f for s, f in fractions.items() if s in missing}
    plan: dict[str, str] = {}
    if fractions:
        keys = [_group_key(doc, i) for i, doc in enumerate(_docs(reader, raw, carve_from, ReadStats()))]
        if not keys:
            raise LmlabError(f"{key}={dataset.name}: no documents in {raw} ({carve_from}); the corpus is empty")
        plan = carve_plan(keys, fractions, dataset.split.seed)

    meta: dict[str, Any] = {
        "dataset": dataset.name,
        "seed": dataset.split.seed,
        "own_splits": [s for s in SPLITS if s in reader.files],
        "splits": {},
    }
    out = paths.splits(dataset.name)
    with staged_dir(out) as staging:
        handles = {s: open(staging / f"{s}.jsonl", "w", encoding="utf-8") for s in SPLITS}
        counts = {s: Counter() for s in SPLITS}
        try:
            for source in sources:
                for i, doc in enumerate(_docs(reader, raw, source, stats)):
                    split = plan.get(_group_key(doc, i), "train") if source == carve_from and plan else source
                    handles[split].write(json.dumps(_record(doc), ensure_ascii=False) + "\n")
                    counts[split]["documents"] += 1
                    counts[split]["bytes"] += len(doc.text.encode("utf-8"))
                    if doc.label is not None:
                        counts[split][f"label:{reader.classes[doc.label]}"] += 1
        finally:
            for handle in handles.values():
                handle.close()
        for split in SPLITS:
            if counts[split]["documents"] == 0:
                raise LmlabError(
                    f"{key}={dataset.name}: the {split} split is empty. Check {key}.reader.files "
                    f"({dict(reader.files)}) and {key}.split fractions, or add documents."
                )
            meta["splits"][split] = dict(counts[split])
        if reader.label_field:
            _check_classes(key, dataset.name, reader.classes, counts)
        meta["groups"] = {"field": reader.group_field, "distinct": len(set(plan))} if reader.group_field else None
        meta["classes"] = reader.classes or None
        meta["invalid_utf8_replaced"] = stats.invalid_utf8
        meta["dropped_rows"] = stats.dropped_rows
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    _report(dataset.name, meta)
    return meta


def _docs(reader: Any, raw: Path, split: str, stats: ReadStats) -> Iterator[Document]:
    return read_documents(reader, files_for(reader, raw, split), stats)


def _group_key(doc: Document, index: int) -> str:
    return f"g:{doc.group}" if doc.group is not None else f"d:{index}"


def _record(doc: Document) -> dict[str, Any]:
    record: dict[str, Any] = {"text": doc.text}
    if doc.label is not None:
        record["label"] = doc.label
    if doc.group is not None:
        record["group"] = doc.group
    return record


def _check_classes(key: str, name: str, classes: list[str], counts: dict[str, Counter]) -> None:
    """A classifier learns nothing from one class (it scores 1.000 on a val split of that class): train needs
    two at least. A class missing from val or test is said, not refused (a small set may lack a rare one)."""
    seen = {split: [c for c in classes if counts[split][f"label:{c}"]] for split in SPLITS}
    if len(seen["train"]) < 2:
        raise LmlabError(
            f"{key}={name}: the train split holds {len(seen['train'])} class(es) {seen['train']} of {classes}: a "
            f"classification task needs two at least. Check {key}.reader.label_map and {key}.reader.label_field"
        )
    for split in ("val", "test"):
        if missing := [c for c in seen["train"] if c not in seen[split]]:
            print(f"{name}: the {split} split has no document of class {', '.join(missing)}")


def _check_fractions(dataset: DatasetConfig, key: str) -> None:
    val, test = dataset.split.val_fraction, dataset.split.test_fraction
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise LmlabError(
            f"{key}.split.val_fraction={val} and test_fraction={test}: each must be in (0, 1) and their sum below 1"
        )


def _report(name: str, meta: dict[str, Any]) -> None:
    for split, counts in meta["splits"].items():
        extra = " ".join(f"{k}={v}" for k, v in counts.items() if k.startswith("label:"))
        print(f"{name} {split:5s} {counts['documents']:>9,d} documents {counts['bytes']:>13,d} bytes {extra}".rstrip())
    if meta["invalid_utf8_replaced"]:
        print(f"{name}: replaced {meta['invalid_utf8_replaced']:,d} invalid UTF-8 sequences with U+FFFD")
    if meta["dropped_rows"]:
        print(f"{name}: dropped rows by label value: {meta['dropped_rows']}")
