"""``lmlab evaluate``: test one family and write its metrics file."""

from lmlab.jobs.config import EvaluateConfig
from lmlab.jobs.evaluate import evaluate


def run(cfg: EvaluateConfig) -> None:
    evaluate(cfg)
