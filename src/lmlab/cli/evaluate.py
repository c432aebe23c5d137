"""``lmlab evaluate``: test one family and write its metrics file."""

from collections.abc import Callable

from lmlab.jobs.config import EvaluateConfig

SUMMARY = "test one family: perplexity, bits per byte, accuracy, F1, speed, memory -> metrics/<family>.json"
SCHEMA = EvaluateConfig


def job() -> Callable[[EvaluateConfig], None]:
    """The job's code (torch, Lightning), imported only to run one (not for --help, --cfg or TAB)."""
    from lmlab.jobs.evaluate import evaluate

    return evaluate
