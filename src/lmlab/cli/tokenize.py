"""``lmlab tokenize``: train sentencepiece on the corpus, encode corpus and labeled set."""

from lmlab.data.config import TokenizeConfig
from lmlab.data.tokenize import tokenize


def run(cfg: TokenizeConfig) -> None:
    tokenize(cfg.data, cfg.task_data, cfg.tokenizer, cfg.paths)
