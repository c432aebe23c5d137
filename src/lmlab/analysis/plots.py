"""One way to draw a figure and save it: every plot of every report (and `lmlab compare`'s) goes through `plot`.

matplotlib's object API, not pyplot: files only, no display backend or global state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

DPI = 120


@contextmanager
def plot(
    target: Path | IO[bytes], size: tuple[float, float] = (7, 4.5), panels: int = 1, shared: bool = False
) -> Iterator[Any]:
    """The axes to draw on (one, or a row of `panels`, `shared`: on the same scales, to compare them by eye);
    when the block ends the figure is laid out and saved to `target` as PNG (a path, or a binary file such as a
    BytesIO)."""
    fig = Figure(figsize=size)
    yield fig.subplots(1, panels, sharex=shared, sharey=shared) if panels > 1 else fig.subplots()
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=DPI)


def log_loss_axis(ax: Any) -> None:
    """A loss on a log y axis with plain tick labels: a loss spans less than a decade, where matplotlib would label
    only minor ticks, as 6 x 10^0."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
