"""``lmlab report``: build the comparison report and say where it is."""

from lmlab.config import ReportConfig
from lmlab.report import report


def run(cfg: ReportConfig) -> None:
    print(f"report: {report(cfg)}")
