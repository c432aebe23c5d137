"""``lmlab harness``: lm-evaluation-harness tasks on one trained model, in lmlab's metric names."""

from collections.abc import Callable
from importlib.util import find_spec

from lmlab.core.errors import LmlabError
from lmlab.jobs.harness_config import HarnessConfig

SUMMARY = "lm-evaluation-harness tasks on one model (tasks=[...]) -> metrics/harness/<family>/<task>.json"
SCHEMA = HarnessConfig


def job() -> Callable[[HarnessConfig], None]:
    """The job's code (torch, the harness), imported only to run one (not for --help, --cfg or TAB). The harness
    is an optional dependency: without it, the job is the error saying how to install it."""
    if find_spec("lm_eval") is None:

        def missing(cfg: HarnessConfig) -> None:
            raise LmlabError("lmlab harness needs EleutherAI's lm-evaluation-harness: pip install -e '.[harness]'")

        return missing
    from lmlab.jobs.harness import harness

    return harness
