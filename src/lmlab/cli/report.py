"""``lmlab report``: build the comparison report (or, with study=synth or study=transfer, that study's) and say
where it is. Only the study's module is imported, so each study's DVC stage depends on its own code."""

import importlib
from collections.abc import Callable

from lmlab.analysis.config import ReportConfig

SUMMARY = "compare the families: reports/comparison.md and its plots, from the evaluate metrics"
SCHEMA = ReportConfig


def job() -> Callable[[ReportConfig], None]:
    def run(cfg: ReportConfig) -> None:
        print(f"report: {importlib.import_module(f'lmlab.analysis.{cfg.study}').write_report(cfg)}")

    return run
