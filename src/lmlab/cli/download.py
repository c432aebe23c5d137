"""``lmlab download``: fetch datasets into ``data/raw/<name>/``."""

from lmlab.cli import targets
from lmlab.data.config import DownloadConfig
from lmlab.data.download import download
from lmlab.data.fetch import HttpOptions


def run(cfg: DownloadConfig) -> None:
    http = HttpOptions(retries=cfg.retries, timeout=cfg.timeout, backoff=cfg.backoff)
    for key in targets(cfg.only):
        download(getattr(cfg, key), cfg.paths, http, key)
