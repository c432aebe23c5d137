"""Builders for tiny synthetic corpora and labeled sets, written as if downloaded.

Everything is deterministic (seeded ``random.Random``) and small enough that a
sentencepiece model trains in milliseconds.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lmlab.data.config import DatasetConfig, PathsConfig, ReaderConfig, SplitConfig

# Train text uses only these letters; val/test-only material can use the others (q, x, z, ...).
TRAIN_WORDS = (
    "the a of and to in is it that was he for on are as with his they at be this "
    "from or had by hot word but what some we can out other were all there when up "
    "use your how said an each she which do their time if will way about many then "
    "them write would like so these her long make thing see him two has look more day"
).split()


def paths_for(tmp_path: Path) -> PathsConfig:
    return PathsConfig(data_dir=str(tmp_path / "data"))


def dataset(name: str, *, split: SplitConfig | None = None, **reader: Any) -> DatasetConfig:
    """A DatasetConfig with a ReaderConfig built from keyword arguments (files: all ``**/*.txt`` unless given)."""
    reader.setdefault("files", {"all": "**/*.txt"})
    return DatasetConfig(name=name, reader=ReaderConfig(**reader), split=split or SplitConfig())


def make_docs(n: int, seed: int = 0, words: Sequence[str] = TRAIN_WORDS, tag: str = "") -> list[str]:
    """``n`` distinct multi-line documents with the whitespace a real corpus has:
    blank lines, runs of spaces, tabs, leading and trailing spaces, with and without a final newline."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        lines = []
        for j in range(rng.randint(1, 4)):
            line = " ".join(rng.choice(words) for _ in range(rng.randint(2, 10)))
            kind = (i + j) % 6
            if kind == 1:
                line = line.replace(" ", "   ", 1)  # a run of spaces
            elif kind == 2:
                line = line.replace(" ", "\t", 1)  # a tab
            elif kind == 3:
                line = "  " + line + " "  # leading and trailing spaces
            elif kind == 4:
                line = line + "\n"  # gives a blank line
            lines.append(line)
        text = "\n".join(lines) + ("\n" if i % 2 else "")
        docs.append(f"{tag}{i} {text}" if tag else text)
    return docs


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def own_splits_corpus(paths: PathsConfig, name: str, splits: dict[str, list[str]], **reader: Any) -> DatasetConfig:
    """A jsonl dataset with its own splits: ``raw/<name>/<split>.jsonl`` for each key of ``splits``."""
    raw = paths.raw(name)
    for split, docs in splits.items():
        write_jsonl(raw / f"{split}.jsonl", ({"text": d} for d in docs))
    return dataset(name, format="jsonl", files={s: f"{s}.jsonl" for s in splits}, **reader)


def reviews(n_movies: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(text, rating, movie) rows: 1 to 6 reviews per movie, ratings "1".."5"."""
    rng = random.Random(seed)
    rows = []
    for m in range(n_movies):
        for r in range(rng.randint(1, 6)):
            rating = str(rng.randint(1, 5))
            words = " ".join(rng.choice(TRAIN_WORDS) for _ in range(rng.randint(3, 12)))
            rows.append((f"review {r} of movie {m}: {words}", rating, f"movie{m}"))
    rng.shuffle(rows)  # reviews of one movie are not adjacent in the file
    return rows


def reviews_dataset(
    paths: PathsConfig, name: str, n_movies: int = 40, seed: int = 0, **overrides: Any
) -> tuple[DatasetConfig, list[tuple[str, str, str]]]:
    """A labeled csv (``raw/<name>/reviews.csv``) grouped by movie; rating 3 is not in the label map."""
    rows = reviews(n_movies, seed)
    write_csv(paths.raw(name) / "reviews.csv", ("review", "rating", "movie"), rows)
    reader = dict(
        format="csv",
        files={"all": "*.csv"},
        text_field="review",
        label_field="rating",
        group_field="movie",
        label_map={"1": "bad", "2": "bad", "4": "good", "5": "good"},
    )
    reader.update(overrides)
    return dataset(name, split=SplitConfig(val_fraction=0.15, test_fraction=0.15, seed=7), **reader), rows


def read_split(paths: PathsConfig, name: str, split: str) -> list[dict[str, Any]]:
    text = (paths.splits(name) / f"{split}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line]


def read_meta(paths: PathsConfig, name: str) -> dict[str, Any]:
    return json.loads((paths.splits(name) / "meta.json").read_text())


POSITIVE = "great fine love best happy bright warm win".split()
NEGATIVE = "awful poor hate worst sad dull cold lose".split()


def sentiment_docs(n: int, seed: int) -> list[dict[str, str]]:
    """Labeled documents a classifier can separate: each has neutral words plus two words of its class."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(TRAIN_WORDS) for _ in range(rng.randint(3, 10))]
        for _ in range(2):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        docs.append({"text": " ".join(words), "label": label})
    return docs


def sentiment_dataset(paths: PathsConfig, name: str, sizes: dict[str, int]) -> DatasetConfig:
    """A labeled jsonl set with its own splits (``raw/<name>/<split>.jsonl``), classes negative and positive."""
    for seed, (split, n) in enumerate(sizes.items()):
        write_jsonl(paths.raw(name) / f"{split}.jsonl", sentiment_docs(n, seed))
    return dataset(
        name,
        format="jsonl",
        files={s: f"{s}.jsonl" for s in sizes},
        label_field="label",
        label_map={"neg": "negative", "pos": "positive"},
    )
