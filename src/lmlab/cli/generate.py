"""``lmlab generate``: stream text sampled from a pretraining checkpoint to stdout."""

import sys
from pathlib import Path

from lmlab.config import GenerateConfig
from lmlab.generate import stream_text


def run(cfg: GenerateConfig) -> None:
    for piece in stream_text(cfg, Path(cfg.checkpoint)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
