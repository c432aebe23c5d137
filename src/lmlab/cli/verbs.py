"""The verbs and tools `lmlab` runs, found by their entry points (groups `lmlab.verbs` and `lmlab.tools`).

Entry points, not a table in code: a verb added (by lmlab or by another package) touches no module that the
other verbs import, so no study's DVC stages go stale for it. Each module states its SUMMARY; a verb also its
SCHEMA and `job()`, a tool its `main(argv)`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

VERB_GROUP, TOOL_GROUP = "lmlab.verbs", "lmlab.tools"  # pyproject.toml's, or a plugin's


def installed(group: str) -> dict[str, str]:
    """The verbs (Hydra apps) or tools installed, name -> module, by name."""
    return {point.name: point.value for point in entry_points(group=group)}


VERBS = installed(VERB_GROUP)
TOOLS = installed(TOOL_GROUP)


def summary(name: str) -> str:
    """A verb's or tool's one line for `lmlab --help` (its module's SUMMARY; the modules import no torch)."""
    return importlib.import_module({**VERBS, **TOOLS}[name]).SUMMARY


def usage() -> str:
    return (
        "usage: lmlab <verb> [key=value ...] [--help] [--cfg job]\n       lmlab <tool> [options] [--help]\n\nverbs:\n"
        + "\n".join(f"  {verb:10s} {summary(verb)}" for verb in VERBS)
        + "\n\ntools:\n"
        + "\n".join(f"  {tool:10s} {summary(tool)}" for tool in TOOLS)
        + "\n\nRun from the project root (the folder holding conf/). `lmlab <verb> --help` lists its config groups."
        + '\nTAB completion in bash: eval "$(lmlab pretrain -sc install=bash)"'
    )
