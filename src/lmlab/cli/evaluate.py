"""``lmlab evaluate``: test one family and write its metrics file."""

from lmlab.config import EvaluateConfig
from lmlab.evaluate import evaluate


def run(cfg: EvaluateConfig) -> None:
    evaluate(cfg)
