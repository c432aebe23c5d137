"""``lmlab download``: fetch datasets into ``data/raw/<name>/``."""

from collections.abc import Callable

from lmlab.data.config import DownloadConfig

SUMMARY = "fetch the corpus and labeled set into data/raw (verified by sha256)"
SCHEMA = DownloadConfig


def job() -> Callable[[DownloadConfig], None]:
    """The job's code, imported only to run one (not for --help, --cfg or TAB)."""
    from lmlab.cli import targets
    from lmlab.data.download import download
    from lmlab.data.fetch import HttpOptions

    def run(cfg: DownloadConfig) -> None:
        http = HttpOptions(retries=cfg.retries, timeout=cfg.timeout, backoff=cfg.backoff)
        for key in targets(cfg.only):
            download(getattr(cfg, key), cfg.paths, http, key)

    return run
