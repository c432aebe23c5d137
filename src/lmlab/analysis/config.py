"""`lmlab report`'s schema: which study, and where its figures are read from and written to."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.rules import one_of, output_dir, path_names

STUDIES = ("comparison", "synth", "transfer", "scaling")  # each one module of lmlab.analysis, with its write_report


@dataclass
class ReportConfig:
    families: list[str] | None = path_names(None)  # None: the `families` list of params_file (the pipeline's);
    # study=scaling: every family in scaling_dir
    # each seed's evaluations are in seed<k>/ of metrics_dir and samples_dir; None: the `seeds` list of
    # params_file; [] (or a params_file without seeds): directly in them, as one `lmlab evaluate` by hand
    seeds: list[int] | None = None
    params_file: str | None = None  # None: the study's (transfer/params.yaml for study=transfer, else params.yaml)
    metrics_dir: str = "metrics"  # <family>.json and curves/<family>/*.csv from `lmlab evaluate`
    samples_dir: str = "data/eval"
    out_dir: str = output_dir("reports")
    # comparison: the main study (comparison.md); synth: the synthetic tasks (<out_dir>/synth/synth.md);
    # transfer: fine-tuned accuracy against pretraining budget (<out_dir>/transfer/transfer.md); scaling: scaling
    # laws per family (<out_dir>/scaling/scaling.md)
    study: str = one_of(STUDIES, "comparison")
    synth_dir: str = "synth/metrics"  # mqar/<family>-<width>.json and parity/<family>.json from `lmlab synth`
    transfer_dir: str = "transfer/metrics"  # seed<k>/<family>-<steps>.json from `lmlab evaluate`
    transfer_eval_dir: str = "data/transfer/eval"  # seed<k>/<family>-<steps>/{examples.npz,setting.json}
    scaling_dir: str = "scaling/metrics"  # one <family>-<width>-<budget>.json per run (lmlab.analysis.scaling)
