"""``lmlab report``: build the comparison report (or, with study=synth, the synthetic tasks') and say where it is."""

from lmlab.config import ReportConfig
from lmlab.report import report
from lmlab.synth_report import synth_report


def run(cfg: ReportConfig) -> None:
    print(f"report: {synth_report(cfg) if cfg.study == 'synth' else report(cfg)}")
