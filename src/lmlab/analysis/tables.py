"""Markdown tables, one way for every report and tool: a header, its rule, the rows."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Container[str] = ()) -> list[str]:
    """A markdown table's lines; the columns named in `right` align right (numbers); a `|` in a cell is escaped, so
    that text from a run (a name, a config value) cannot split a row."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    rule = "|" + "|".join("---:" if name in right else "---" for name in header) + "|"
    return [line(header), rule, *(line(row) for row in rows)]
