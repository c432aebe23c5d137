"""Turn raw files into documents, streaming, whatever their format.

Corpora become ``Document(text)``; labeled sets also carry a class id and an
optional group key. Bytes that are not valid UTF-8 are replaced with U+FFFD
and counted, never dropped silently.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import json
import lzma
import re
import reprlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lmlab.core.errors import LmlabError
from lmlab.data.config import READER_FORMATS, SPLITS, ReaderConfig

OPENERS = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}
FILE_KEYS = (*SPLITS, "all")


@dataclass
class Document:
    text: str
    label: int | None = None
    group: str | None = None


@dataclass
class ReadStats:
    """What reading dropped or repaired, reported by the split stage."""

    invalid_utf8: int = 0  # invalid UTF-8 sequences, each replaced by one U+FFFD
    dropped_rows: dict[str, int] = field(default_factory=dict)  # raw label value -> rows dropped

    def drop(self, value: str) -> None:
        self.dropped_rows[value] = self.dropped_rows.get(value, 0) + 1


def validate(reader: ReaderConfig, key: str) -> None:
    if reader.format not in READER_FORMATS:
        raise LmlabError(f"{key}.format={reader.format!r} is not supported; use one of {', '.join(READER_FORMATS)}")
    unknown = set(reader.files) - set(FILE_KEYS)
    if unknown or not reader.files:
        raise LmlabError(
            f"{key}.files keys {sorted(unknown) or '(none)'} are not split names; use {', '.join(FILE_KEYS)}"
        )
    if "all" in reader.files and len(reader.files) > 1:
        raise LmlabError(f"{key}.files: 'all' (no own splits) cannot be combined with named splits")
    if "all" not in reader.files and "train" not in reader.files:
        raise LmlabError(f"{key}.files names splits {sorted(reader.files)} but no 'train' to carve the others from")
    if reader.label_field and not reader.label_map:
        raise LmlabError(
            f"{key}.label_map is required with label_field={reader.label_field!r}: map raw values to class names"
        )
    if reader.doc_start is not None:
        try:
            re.compile(reader.doc_start)
        except re.error as err:
            raise LmlabError(f"{key}.doc_start={reader.doc_start!r} is not a valid regex: {err}") from err


def files_for(reader: ReaderConfig, raw_dir: Path, split: str) -> list[Path]:
    pattern = reader.files[split]
    files = sorted(p for p in raw_dir.glob(pattern) if p.is_file() and p.name != "source.json")
    if not files:
        raise LmlabError(
            f"no file in {raw_dir} matches {pattern!r} (reader.files.{split}); was the download stage run?"
        )
    return files


def read_documents(reader: ReaderConfig, files: Iterable[Path], stats: ReadStats) -> Iterator[Document]:
    """Documents of ``files`` in order, never holding more than one file's text (text) or one row."""
    for path in files:
        if reader.format == "text":
            yield from _split_lines(reader, _decoded_lines(path, stats))
        elif reader.join_rows:
            yield from _split_lines(
                reader, (_text(reader, row, where) or "" for where, row in _rows(reader, path, stats))
            )
        else:
            for where, row in _rows(reader, path, stats):
                doc = _row_document(reader, row, where, stats)
                if doc is not None:
                    yield doc


def _split_lines(reader: ReaderConfig, lines: Iterable[str]) -> Iterator[Document]:
    """Group lines into documents: a line matching ``doc_start`` opens a new one."""
    start = re.compile(reader.doc_start) if reader.doc_start else None
    buffer: list[str] = []
    for line in lines:
        if start is not None and buffer and start.match(line.rstrip("\r\n")):
            yield from _non_blank("".join(buffer))
            buffer = []
        buffer.append(line)
    yield from _non_blank("".join(buffer))


def _non_blank(text: str) -> Iterator[Document]:
    if text.strip():
        yield Document(text)


def _column(row: dict[str, Any], where: str, key: str, name: str) -> Any:
    if name not in row:
        raise LmlabError(f"{where} has no column {name!r} (reader.{key}); columns: {sorted(row)}")
    return row[name]


def _text(reader: ReaderConfig, row: dict[str, Any], where: str) -> str | None:
    """The row's text, or None for a null: a number or a list is refused, not stored as its Python repr."""
    text = _column(row, where, "text_field", reader.text_field)
    if text is not None and not isinstance(text, str):
        raise LmlabError(
            f"{where}: text_field {reader.text_field!r} holds {reprlib.repr(text)} ({type(text).__name__}); it must "
            "be a string (or null, which drops the row): point reader.text_field at the text column"
        )
    return text


def _row_document(reader: ReaderConfig, row: dict[str, Any], where: str, stats: ReadStats) -> Document | None:
    text = _text(reader, row, where)
    if text is None or not text.strip():
        stats.drop("<empty text>")
        return None
    label = None
    if reader.label_field and reader.label_map:
        value = _column(row, where, "label_field", reader.label_field)
        if value is not None and not isinstance(value, str | int):
            raise LmlabError(
                f"{where}: label_field {reader.label_field!r} holds {reprlib.repr(value)} ({type(value).__name__}); "
                "a label must be a string or an integer, looked up as text in reader.label_map (null drops the row)"
            )
        raw = str(value)
        if raw not in reader.label_map:
            stats.drop(raw)
            return None
        label = reader.classes.index(reader.label_map[raw])
    group = str(_column(row, where, "group_field", reader.group_field)) if reader.group_field else None
    return Document(text, label, group)


def _open_binary(path: Path) -> IO[bytes]:
    opener = OPENERS.get(path.suffix.lower(), open)
    return opener(path, "rb")  # type: ignore[operator]


def _decoded_lines(path: Path, stats: ReadStats) -> Iterator[str]:
    """Lines with their endings; invalid UTF-8 replaced and counted (a split on b'\\n' never cuts a character)."""
    with _open_binary(path) as f:
        for number, raw in enumerate(f):
            if number == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]  # a signature, not text (csv headers saved by Excel have it)
            if number == 0 and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                raise LmlabError(
                    f"{path} is UTF-16 text (its byte-order mark says so); lmlab reads UTF-8: convert it, e.g. "
                    f"`iconv -f UTF-16 -t UTF-8 {path.name}`, or point the source at a UTF-8 file"
                )
            if b"\0" in raw:
                raise LmlabError(
                    f"{path}:{number + 1} holds NUL bytes: binary data, or UTF-16 text without its byte-order "
                    "mark, not the UTF-8 text lmlab reads. Check the source's members (a wrong file) or convert it"
                )
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", errors="replace")
                stats.invalid_utf8 += line.count("\ufffd") - raw.count("\ufffd".encode())
                yield line


def _rows(reader: ReaderConfig, path: Path, stats: ReadStats) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) pairs: where is ``<file>:<line>`` (jsonl, csv) or ``<file> row <n>`` (parquet), for errors."""
    if reader.format == "jsonl":
        for number, line in enumerate(_decoded_lines(path, stats), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise LmlabError(f"{path}:{number} is not valid JSON: {err}") from err
                if not isinstance(row, dict):
                    raise LmlabError(f"{path}:{number} holds {reprlib.repr(row)}: each line must be a JSON object")
                yield f"{path}:{number}", row
    elif reader.format == "csv":
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # the default 128 KiB fails on long documents
        rows = csv.DictReader(_decoded_lines(path, stats), delimiter=reader.delimiter)
        for row in rows:
            yield f"{path}:{rows.line_num}", row
    elif reader.format == "parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises several types for a bad file
            raise LmlabError(f"{path} is not a readable parquet file: {err}") from err
        number = 0
        for batch in parquet.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield f"{path} row {number}", row
