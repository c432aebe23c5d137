"""``lmlab report``: build the comparison report (or, with study=synth or study=transfer, that study's) and say
where it is."""

from lmlab.config import ReportConfig
from lmlab.report import report
from lmlab.synth_report import synth_report
from lmlab.transfer_report import transfer_report

STUDIES = {"comparison": report, "synth": synth_report, "transfer": transfer_report}


def run(cfg: ReportConfig) -> None:
    print(f"report: {STUDIES[cfg.study](cfg)}")
