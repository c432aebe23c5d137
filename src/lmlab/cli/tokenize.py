"""``lmlab tokenize``: train sentencepiece on the corpus, encode corpus and labeled set."""

from collections.abc import Callable

from lmlab.data.config import TokenizeConfig

SUMMARY = "train sentencepiece on the corpus train split and encode every split"
SCHEMA = TokenizeConfig


def job() -> Callable[[TokenizeConfig], None]:
    """The job's code, imported only to run one (not for --help, --cfg or TAB)."""
    from lmlab.data.tokenize import tokenize

    def run(cfg: TokenizeConfig) -> None:
        tokenize(cfg.data, cfg.task_data, cfg.tokenizer, cfg.paths)

    return run
