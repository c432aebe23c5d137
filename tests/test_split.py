"""The split stage on real files: raw/<name>/ -> splits/<name>/{train,val,test}.jsonl + meta.json."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmlab.core.errors import LmlabError
from lmlab.data.config import SPLITS, DatasetConfig, PathsConfig, SplitConfig
from lmlab.data.split import split_dataset
from tests.helpers.corpora import (
    dataset,
    make_docs,
    own_splits_corpus,
    paths_for,
    read_meta,
    read_split,
    reviews_dataset,
    write_csv,
    write_jsonl,
)


def texts(paths: PathsConfig, name: str, split: str) -> list[str]:
    return [r["text"] for r in read_split(paths, name, split)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_nothing_left(paths: PathsConfig, name: str) -> None:
    """No output folder for ``name`` and no hidden staging/old sibling."""
    parent = paths.splits(name).parent
    left = sorted(p.name for p in parent.iterdir()) if parent.exists() else []
    assert [n for n in left if name in n] == []


def jsonl_corpus(paths: PathsConfig, name: str, docs: list[str], **split: float | int) -> DatasetConfig:
    write_jsonl(paths.raw(name) / "docs.jsonl", ({"text": d, "id": i} for i, d in enumerate(docs)))
    return dataset(name, split=SplitConfig(**split), format="jsonl", files={"all": "*.jsonl"})


# --- determinism, coverage, fractions -----------------------------------------------------


def test_same_seed_gives_identical_files_and_another_seed_another_assignment(tmp_path):
    docs = make_docs(300, seed=1, tag="doc")
    first, second, other = (paths_for(tmp_path / d) for d in ("a", "b", "c"))
    for paths, seed in ((first, 5), (second, 5), (other, 6)):
        split_dataset(jsonl_corpus(paths, "corp", docs, seed=seed), paths)

    assert snapshot(first.splits("corp")) == snapshot(second.splits("corp"))
    assert set(snapshot(first.splits("corp"))) == {"train.jsonl", "val.jsonl", "test.jsonl", "meta.json"}
    # rerunning in place rewrites the same bytes
    before = snapshot(first.splits("corp"))
    split_dataset(jsonl_corpus(first, "corp", docs, seed=5), first)
    assert snapshot(first.splits("corp")) == before

    for split in ("val", "test"):
        assert set(texts(first, "corp", split)) != set(texts(other, "corp", split))
        assert len(texts(first, "corp", split)) == len(texts(other, "corp", split))


def test_every_document_lands_in_exactly_one_split_with_the_asked_fractions(tmp_path, capsys):
    paths = paths_for(tmp_path)
    docs = make_docs(1000, seed=2, tag="doc")  # tagged: all distinct
    assert len(set(docs)) == 1000
    meta = split_dataset(jsonl_corpus(paths, "corp", docs, val_fraction=0.1, test_fraction=0.2, seed=3), paths)

    got = {s: texts(paths, "corp", s) for s in SPLITS}
    assert Counter(t for s in SPLITS for t in got[s]) == Counter(docs)  # union is the input, no duplicates
    assert {s: len(got[s]) for s in SPLITS} == {"train": 700, "val": 100, "test": 200}
    for s in SPLITS:
        assert meta["splits"][s] == {"documents": len(got[s]), "bytes": sum(len(t.encode()) for t in got[s])}
    assert read_meta(paths, "corp") == meta
    assert meta["own_splits"] == [] and meta["seed"] == 3 and meta["dataset"] == "corp"
    assert meta["invalid_utf8_replaced"] == 0 and meta["dropped_rows"] == {}
    assert meta["groups"] is None and meta["classes"] is None
    # carved documents are a shuffle, not a block of the input
    val_positions = sorted(docs.index(t) for t in got["val"])
    assert val_positions != list(range(val_positions[0], val_positions[0] + 100))
    out = capsys.readouterr().out
    assert "corp val" in out and "100 documents" in out


def test_small_fractions_still_give_every_split_a_document(tmp_path):
    paths = paths_for(tmp_path)
    docs = make_docs(10, seed=4, tag="d")
    split_dataset(jsonl_corpus(paths, "tiny", docs, val_fraction=0.01, test_fraction=0.01), paths)
    assert [len(texts(paths, "tiny", s)) for s in SPLITS] == [8, 1, 1]


# --- a dataset's own splits ----------------------------------------------------------------


def test_own_splits_are_kept_as_they_are(tmp_path):
    paths = paths_for(tmp_path)
    own = {
        "train": make_docs(20, seed=1, tag="tr"),
        "val": make_docs(5, seed=2, tag="va"),
        "test": make_docs(7, seed=3, tag="te") + ["caf\u00e9 \u2028 line\r\nsep \t tab"],
    }
    meta = split_dataset(own_splits_corpus(paths, "own", own), paths)
    for split, docs in own.items():
        assert texts(paths, "own", split) == docs  # same documents, same order, same characters
    assert meta["own_splits"] == ["train", "val", "test"]
    assert {s: c["documents"] for s, c in meta["splits"].items()} == {"train": 20, "val": 5, "test": 8}


def test_a_missing_val_is_carved_from_train_only_and_test_is_untouched(tmp_path):
    paths = paths_for(tmp_path)
    train, test = make_docs(200, seed=1, tag="tr"), make_docs(9, seed=2, tag="te")
    ds = own_splits_corpus(paths, "nov", {"train": train, "test": test})
    ds.split = SplitConfig(val_fraction=0.1, test_fraction=0.3, seed=11)
    meta = split_dataset(ds, paths)

    assert texts(paths, "nov", "test") == test
    got_train, got_val = texts(paths, "nov", "train"), texts(paths, "nov", "val")
    assert len(got_val) == 20  # val_fraction of train; test_fraction does not apply
    assert Counter(got_train + got_val) == Counter(train)
    assert [t for t in got_train] == [t for t in train if t not in set(got_val)]  # train keeps its order
    assert meta["own_splits"] == ["train", "test"]


def test_only_train_given_carves_both_val_and_test_from_it(tmp_path):
    paths = paths_for(tmp_path)
    train = make_docs(100, seed=5, tag="tr")
    ds = own_splits_corpus(paths, "onlytrain", {"train": train})
    ds.split = SplitConfig(val_fraction=0.1, test_fraction=0.05)
    split_dataset(ds, paths)
    got = {s: texts(paths, "onlytrain", s) for s in SPLITS}
    assert [len(got[s]) for s in SPLITS] == [85, 10, 5]
    assert Counter(got["train"] + got["val"] + got["test"]) == Counter(train)


# --- labeled sets: groups, label map -------------------------------------------------------


def test_group_field_keeps_each_group_in_one_split(tmp_path):
    paths = paths_for(tmp_path)
    ds, rows = reviews_dataset(paths, "reviews", n_movies=40)
    meta = split_dataset(ds, paths)

    kept = [r for r in rows if r[1] != "3"]
    records = {s: read_split(paths, "reviews", s) for s in SPLITS}
    movies = {s: {r["group"] for r in records[s]} for s in SPLITS}
    assert movies["train"].isdisjoint(movies["val"])
    assert movies["train"].isdisjoint(movies["test"])
    assert movies["val"].isdisjoint(movies["test"])
    assert set().union(*movies.values()) == {m for _, _, m in kept}
    assert meta["groups"] == {"field": "movie", "distinct": len({m for _, _, m in kept})}

    by_text = {text: (rating, movie) for text, rating, movie in rows}
    all_records = [r for s in SPLITS for r in records[s]]
    assert sorted(r["text"] for r in all_records) == sorted(t for t, _, _ in kept)
    for r in all_records:
        assert r["group"] == by_text[r["text"]][1]
    # whole groups overshoot a split's share by less than one group (at most 6 reviews)
    target = round(0.15 * len(kept))
    for s in ("val", "test"):
        assert target <= len(records[s]) < target + 6


def test_without_group_field_a_group_can_straddle_splits(tmp_path):
    """The contrast that makes the test above meaningful: the same data, carved per review."""
    paths = paths_for(tmp_path)
    ds, _ = reviews_dataset(paths, "loose", n_movies=40, group_field=None)
    split_dataset(ds, paths)
    records = {s: read_split(paths, "loose", s) for s in SPLITS}
    assert all("group" not in r for s in SPLITS for r in records[s])
    movie = {s: {r["text"].split(": ")[0].split(" of ")[1] for r in records[s]} for s in SPLITS}
    assert movie["train"] & (movie["val"] | movie["test"])


def test_label_map_maps_values_to_class_ids_in_map_order_and_drops_the_rest(tmp_path, capsys):
    paths = paths_for(tmp_path)
    ds, rows = reviews_dataset(paths, "rated", n_movies=40)
    meta = split_dataset(ds, paths)

    assert meta["classes"] == ["bad", "good"]
    assert meta["dropped_rows"] == {"3": sum(r[1] == "3" for r in rows)}
    assert meta["dropped_rows"]["3"] > 0
    expected = {"1": 0, "2": 0, "4": 1, "5": 1}
    rating = {text: r for text, r, _ in rows}
    for s in SPLITS:
        records = read_split(paths, "rated", s)
        for r in records:
            assert r["label"] == expected[rating[r["text"]]]
        counts = Counter(meta["classes"][r["label"]] for r in records)
        assert {k: v for k, v in meta["splits"][s].items() if k.startswith("label:")} == {
            f"label:{c}": n for c, n in counts.items()
        }
    assert read_meta(paths, "rated")["dropped_rows"] == meta["dropped_rows"]
    assert f"dropped rows by label value: {{'3': {meta['dropped_rows']['3']}}}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "label_map, ids",
    [
        ({"neg": "negative", "pos": "positive"}, {"neg": 0, "pos": 1}),
        ({"pos": "positive", "neg": "negative"}, {"neg": 1, "pos": 0}),
    ],
)
def test_class_ids_follow_label_map_order_and_unmapped_or_empty_rows_are_counted(tmp_path, label_map, ids):
    paths = paths_for(tmp_path)
    labels = ["neg", "pos", "neutral", "pos", "neg", "", "neutral", "pos", "neg", "pos", "neg", "pos"]
    rows = [(f"text number {i}", lab) for i, lab in enumerate(labels)] + [("   ", "pos")]
    write_csv(paths.raw("pn") / "data.csv", ("sentence", "label"), rows)
    ds = dataset(
        "pn",
        format="csv",
        files={"all": "*.csv"},
        text_field="sentence",
        label_field="label",
        label_map=label_map,
        split=SplitConfig(val_fraction=0.2, test_fraction=0.2),
    )
    meta = split_dataset(ds, paths)

    assert meta["classes"] == list(label_map.values())
    assert meta["dropped_rows"] == {"neutral": 2, "": 1, "<empty text>": 1}
    records = [r for s in SPLITS for r in read_split(paths, "pn", s)]
    assert len(records) == 9
    for r in records:
        assert r["label"] == ids[labels[int(r["text"].rsplit(" ", 1)[1])]]


def test_tab_separated_csv_with_quoted_multiline_fields(tmp_path):
    paths = paths_for(tmp_path)
    raw = paths.raw("tsv") / "data.tsv"
    raw.parent.mkdir(parents=True)
    lines = ["text\tlabel"] + [f'"row {i}\nsecond line, with comma"\t{i % 2}' for i in range(6)]
    raw.write_text("\n".join(lines) + "\n")
    ds = dataset(
        "tsv",
        format="csv",
        files={"all": "*.tsv"},
        delimiter="\t",
        label_field="label",
        label_map={"0": "even", "1": "odd"},
        split=SplitConfig(val_fraction=0.2, test_fraction=0.2),
    )
    split_dataset(ds, paths)
    records = sorted((r for s in SPLITS for r in read_split(paths, "tsv", s)), key=lambda r: r["text"])
    assert records == [{"text": f"row {i}\nsecond line, with comma", "label": i % 2} for i in range(6)]


def test_a_csv_with_a_byte_order_mark_and_documents_over_128_kib(tmp_path):
    """As saved by Excel: a UTF-8 signature before the header; and fields past csv's default size limit."""
    paths = paths_for(tmp_path)
    long_text = "word " * 40_000  # 200 kB in one field
    raw = paths.raw("excel") / "data.csv"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"\xef\xbb\xbftext,label\n" + "".join(f"{long_text}{i},{i % 2}\n" for i in range(5)).encode())
    ds = dataset(
        "excel",
        format="csv",
        files={"all": "*.csv"},
        label_field="label",
        label_map={"0": "a", "1": "b"},
        split=SplitConfig(val_fraction=0.2, test_fraction=0.2),
    )
    meta = split_dataset(ds, paths)
    records = sorted((r for s in SPLITS for r in read_split(paths, "excel", s)), key=lambda r: r["text"])
    assert records == [{"text": f"{long_text}{i}", "label": i % 2} for i in range(5)]
    assert meta["invalid_utf8_replaced"] == 0


def test_a_byte_order_mark_is_not_text(tmp_path):
    paths = paths_for(tmp_path)
    raw = paths.raw("sig")
    raw.mkdir(parents=True)
    (raw / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + b"".join(b'{"text": "doc %d"}\n' % i for i in range(3)))
    (raw / "b.txt").write_bytes(b"\xef\xbb\xbfplain \xef\xbb\xbf inside stays\n")
    small = SplitConfig(val_fraction=0.2, test_fraction=0.2)
    split_dataset(dataset("sig", format="jsonl", files={"all": "*.jsonl"}, split=small), paths)
    assert sorted(t for s in SPLITS for t in texts(paths, "sig", s)) == ["doc 0", "doc 1", "doc 2"]
    (raw / "c.txt").write_text("second\n")
    (raw / "d.txt").write_text("third\n")
    split_dataset(dataset("sig", split=small), paths)
    assert sorted(t for s in SPLITS for t in texts(paths, "sig", s)) == [
        "plain \ufeff inside stays\n",
        "second\n",
        "third\n",
    ]


# --- encodings and formats -----------------------------------------------------------------


def test_invalid_utf8_is_replaced_counted_and_reported(tmp_path, capsys):
    paths = paths_for(tmp_path)
    raw = paths.raw("bytes")
    raw.mkdir(parents=True)
    # 4 invalid sequences (\xe9, \xff, \xfe, truncated \xe2\x82); the literal U+FFFD is valid and not counted
    (raw / "a.txt").write_bytes(b"caf\xe9 \xef\xbf\xbd ok \xff\xfe euro \xe2\x82 x\nsecond line\n")
    for name in "bcde":
        (raw / f"{name}.txt").write_bytes(f"plain document {name}\n".encode())
    meta = split_dataset(dataset("bytes", split=SplitConfig(val_fraction=0.2, test_fraction=0.2)), paths)

    assert meta["invalid_utf8_replaced"] == 4
    assert read_meta(paths, "bytes")["invalid_utf8_replaced"] == 4
    docs = [t for s in SPLITS for t in texts(paths, "bytes", s)]
    assert sorted(docs) == sorted(
        ["caf\ufffd \ufffd ok \ufffd\ufffd euro \ufffd x\nsecond line\n"] + [f"plain document {n}\n" for n in "bcde"]
    )
    assert "bytes: replaced 4 invalid UTF-8 sequences with U+FFFD" in capsys.readouterr().out


def test_doc_start_cuts_a_play_into_speeches(tmp_path):
    paths = paths_for(tmp_path)
    speeches = [
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
        "All:\nSpeak, speak.\n\n",
        "First Citizen:\nYou are all resolved rather to die than to famish?\nNote: not a speaker line.\n\n",
        "All:\nResolved. resolved.\n\n",
        "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\n",
        "All:\nWe know't, we know't.\n\n",
        "Second Citizen:\nOne word, good citizens.\n",
    ]
    raw = paths.raw("play")
    raw.mkdir(parents=True)
    (raw / "part1.txt").write_text("\n" + "".join(speeches[:4]))  # a leading blank line is not a document
    (raw / "part2.txt").write_text("".join(speeches[4:]))
    ds = dataset("play", doc_start=r"^[A-Z][A-Za-z ]*:$", split=SplitConfig(val_fraction=0.1, test_fraction=0.1))
    meta = split_dataset(ds, paths)

    got = {s: texts(paths, "play", s) for s in SPLITS}
    assert Counter(t for s in SPLITS for t in got[s]) == Counter(speeches)
    assert {s: len(got[s]) for s in SPLITS} == {"train": 5, "val": 1, "test": 1}
    assert sum(c["documents"] for c in meta["splits"].values()) == 7


def test_without_doc_start_each_text_file_is_one_document(tmp_path):
    paths = paths_for(tmp_path)
    raw = paths.raw("files")
    for i in range(6):
        (raw / "sub" / f"{i}.txt").parent.mkdir(parents=True, exist_ok=True)
        (raw / "sub" / f"{i}.txt").write_text(f"file {i}\n\nstill file {i}\n")
    (raw / "source.json").write_text("{}")  # the download stage's record is never a document
    split_dataset(dataset("files", split=SplitConfig(val_fraction=0.2, test_fraction=0.2)), paths)
    docs = [t for s in SPLITS for t in texts(paths, "files", s)]
    assert sorted(docs) == [f"file {i}\n\nstill file {i}\n" for i in range(6)]


def test_parquet_rows_joined_into_articles_at_headings(tmp_path):
    """WikiText as on the Hub: one row per line, articles start at a top-level ' = Title = ' heading."""
    paths = paths_for(tmp_path)
    articles = []
    for i, title in enumerate(["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta"]):
        articles.append(
            [
                f" = {title} Article = \n",
                "",
                f" {title} is topic number {i} . \n",
                f" = = {title} history = = \n",
                "",
                f" More about {title} , with @-@ tokens . \n",
                "",
            ]
        )
    raw = paths.raw("wiki")
    raw.mkdir(parents=True)
    for part, chunk in enumerate((articles[:3], articles[3:])):
        rows = ([""] if part == 0 else []) + [line for article in chunk for line in article]
        pq.write_table(pa.table({"text": rows}), raw / f"train-{part:05d}.parquet", row_group_size=4)
    ds = dataset(
        "wiki",
        format="parquet",
        files={"all": "*.parquet"},
        join_rows=True,
        doc_start=r"^ = [^=].* = $",
        split=SplitConfig(val_fraction=0.1, test_fraction=0.1),
    )
    split_dataset(ds, paths)

    got = {s: texts(paths, "wiki", s) for s in SPLITS}
    assert Counter(t for s in SPLITS for t in got[s]) == Counter("".join(a) for a in articles)
    assert {s: len(got[s]) for s in SPLITS} == {"train": 4, "val": 1, "test": 1}


def test_jsonl_reads_text_field_skips_blank_lines_and_counts_empty_texts(tmp_path):
    paths = paths_for(tmp_path)
    raw = paths.raw("js")
    raw.mkdir(parents=True)
    lines = [json.dumps({"content": f"entry {i}\nwith a newline", "other": i}) for i in range(8)]
    lines[3:3] = ["", json.dumps({"content": "   "}), json.dumps({"content": None})]
    (raw / "a.jsonl").write_text("\n".join(lines) + "\n")
    with gzip.open(raw / "b.jsonl.gz", "wb") as f:  # compressed members are read too
        f.write(b'{"content": "zipped caf\xe9"}\n{"content": "zipped two"}\n')
    ds = dataset(
        "js",
        format="jsonl",
        files={"all": "*.jsonl*"},
        text_field="content",
        split=SplitConfig(val_fraction=0.1, test_fraction=0.1),
    )
    meta = split_dataset(ds, paths)

    docs = [t for s in SPLITS for t in texts(paths, "js", s)]
    assert sorted(docs) == sorted([f"entry {i}\nwith a newline" for i in range(8)] + ["zipped caf\ufffd", "zipped two"])
    assert meta["dropped_rows"] == {"<empty text>": 2}
    assert meta["invalid_utf8_replaced"] == 1


# --- failures ------------------------------------------------------------------------------


def test_an_empty_corpus_is_an_error(tmp_path):
    paths = paths_for(tmp_path)
    raw = paths.raw("blank")
    raw.mkdir(parents=True)
    (raw / "a.txt").write_text("   \n\n\t\n")
    (raw / "b.txt").write_text("\n")
    with pytest.raises(LmlabError, match="empty"):
        split_dataset(dataset("blank"), paths)
    assert_nothing_left(paths, "blank")


def test_an_empty_own_split_is_an_error_naming_it_and_leaves_nothing(tmp_path):
    paths = paths_for(tmp_path)
    raw = paths.raw("holes")
    for split, text in (("train", "one\n"), ("val", "  \n\n"), ("test", "three\n")):
        (raw / split).mkdir(parents=True)
        (raw / split / "x.txt").write_text(text)
    ds = dataset("holes", files={s: f"{s}/*.txt" for s in SPLITS})
    with pytest.raises(LmlabError, match="the val split is empty"):
        split_dataset(ds, paths)
    assert_nothing_left(paths, "holes")
    assert paths.splits("holes").parent.exists()  # it got as far as staging


def test_a_glob_matching_nothing_is_an_error_naming_the_pattern(tmp_path):
    paths = paths_for(tmp_path)
    raw = paths.raw("globs")
    raw.mkdir(parents=True)
    (raw / "a.txt").write_text("text\n")
    with pytest.raises(LmlabError, match=r"'\*\.parquet'.*reader\.files\.all"):
        split_dataset(dataset("globs", format="parquet", files={"all": "*.parquet"}), paths)
    assert_nothing_left(paths, "globs")

    # a later split's pattern fails while writing: still nothing left behind
    ds = dataset("globs", files={"train": "*.txt", "val": "*.txt", "test": "test/*.txt"})
    with pytest.raises(LmlabError, match=r"'test/\*\.txt'.*reader\.files\.test"):
        split_dataset(ds, paths)
    assert_nothing_left(paths, "globs")


def test_a_missing_raw_folder_tells_to_download(tmp_path):
    with pytest.raises(LmlabError, match="lmlab download"):
        split_dataset(dataset("nothing"), paths_for(tmp_path))


def test_a_failed_rerun_keeps_the_earlier_output(tmp_path):
    paths = paths_for(tmp_path)
    own = {"train": make_docs(10, tag="tr"), "val": make_docs(3, tag="va"), "test": make_docs(3, tag="te")}
    ds = own_splits_corpus(paths, "keep", own)
    split_dataset(ds, paths)
    before = snapshot(paths.splits("keep"))

    write_jsonl(paths.raw("keep") / "test.jsonl", [{"text": " \n "}])  # the test split becomes empty
    with pytest.raises(LmlabError, match="the test split is empty"):
        split_dataset(ds, paths)
    assert snapshot(paths.splits("keep")) == before
    assert sorted(p.name for p in paths.splits("keep").parent.iterdir()) == ["keep"]


@pytest.mark.parametrize("text", [123, ["x"], {"body": "x"}, True, 1.5])
def test_a_text_that_is_not_a_string_is_refused_with_its_file_and_line(tmp_path, text):
    """`"text": 123` used to become the document "123", and `["x"]` the document "['x']"."""
    paths = paths_for(tmp_path)
    write_jsonl(paths.raw("odd") / "docs.jsonl", [{"text": "fine"}, {"text": None}, {"text": text}])
    ds = dataset("odd", format="jsonl", files={"all": "*.jsonl"})
    with pytest.raises(LmlabError, match=r"docs\.jsonl:3: text_field 'text' holds .*; it must be a string") as caught:
        split_dataset(ds, paths)
    assert repr(text) in str(caught.value)
    assert_nothing_left(paths, "odd")


def test_joined_rows_must_be_strings_too(tmp_path):
    paths = paths_for(tmp_path)
    raw = paths.raw("wiki")
    raw.mkdir(parents=True)
    pq.write_table(pa.table({"text": [" = A = \n", "line\n"], "n": [1, 2]}), raw / "train.parquet")
    ds = dataset("wiki", format="parquet", files={"all": "*.parquet"}, text_field="n", join_rows=True)
    with pytest.raises(LmlabError, match=r"train\.parquet row 1: text_field 'n' holds 1 \(int\); it must be a string"):
        split_dataset(ds, paths)


@pytest.mark.parametrize("label", [["pos"], {"v": "pos"}, 1.0])
def test_a_label_that_is_not_a_string_or_integer_is_refused_with_its_file_and_line(tmp_path, label):
    paths = paths_for(tmp_path)
    rows = [{"text": f"doc {i}", "label": "pos" if i % 2 else 1} for i in range(20)]
    rows[7]["label"] = label
    write_jsonl(paths.raw("lab") / "docs.jsonl", rows)
    ds = dataset(
        "lab", format="jsonl", files={"all": "*.jsonl"}, label_field="label", label_map={"pos": "positive", "1": "one"}
    )
    with pytest.raises(LmlabError, match=r"docs\.jsonl:8: label_field 'label' holds .*a string or an integer"):
        split_dataset(ds, paths)


def test_integer_and_string_labels_and_null_ones_keep_working(tmp_path):
    """Parquet sets (sst2, imdb) have integer labels, csv ones strings; a null label drops its row, counted."""
    paths = paths_for(tmp_path)
    rows = [{"text": f"doc {i}", "label": [0, 1, "1", None][i % 4]} for i in range(40)]
    write_jsonl(paths.raw("lab") / "docs.jsonl", rows)
    ds = dataset(
        "lab", format="jsonl", files={"all": "*.jsonl"}, label_field="label", label_map={"0": "neg", "1": "pos"}
    )
    meta = split_dataset(ds, paths)
    assert meta["dropped_rows"] == {"None": 10}
    assert sum(meta["splits"][s].get("label:pos", 0) for s in SPLITS) == 20
