"""One colour per model family, the same in every plot lmlab draws and in `dvc plots show`."""

from __future__ import annotations


def family_colours(names: list[str]) -> dict[str, str]:
    """One colour per family, the same in every plot: Tableau's 10 (matplotlib's tab10, Vega's category10,
    which .dvc/plots/families.json names) in the families' alphabetical order, as DVC's plots assign them."""
    palette = [f"C{i}" for i in range(10)]
    return {name: palette[i % len(palette)] for i, name in enumerate(sorted(names))}
