"""bench/gpu_check.py's dry run: the one command for a GPU slot must still run when a GPU is lent, so its code
runs here on the CPU at tiny sizes (about 35 s on one core), and its record must hold every section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.project import ROOT, env

SECTIONS = ("throughput", "kernels", "recurrence", "cli")


FAMILIES_RUN = ("transformer", "mamba2")  # --families: attention and a scan, the suite's time kept down


def test_the_dry_run_measures_every_section_and_writes_the_tables(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check"
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out), "--families", ",".join(FAMILIES_RUN)],
        cwd=ROOT,
        env=env() | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "gpu_check.json").read_text())
    meta, sections = record["meta"], record["sections"]
    assert meta["dry_run"] is True and meta["torch"] and meta["lightning"] and meta["date"] and meta["device"]
    assert list(sections) == list(SECTIONS)
    assert record["failures"] == []
    for name in SECTIONS:
        assert sections[name]["wall_s"] > 0 and sections[name]["rows"], name
        assert all(row["status"] in ("ok", "skipped") for row in sections[name]["rows"]), name

    measured = [r for r in sections["throughput"]["rows"] if r["status"] == "ok"]
    assert {r["family"] for r in measured if r["scale"] == "tiny"} == set(FAMILIES_RUN)
    assert any(r["scale"] == "small" for r in measured)
    assert all(r["lightning_tokens_per_s"] > 0 and r["raw_tokens_per_s"] > 0 and r["losses_match"] for r in measured)
    compiled = [r for r in sections["throughput"]["rows"] if r["compile"]]
    assert compiled and all(r["status"] == "skipped" and r["reason"] for r in compiled)

    # without CUDA the fused kernels are skipped rows that say why; the pure scans are still timed
    kernels = sections["kernels"]["rows"]
    assert {r["package"] for r in kernels} == {"mamba-ssm", "flash-linear-attention"}
    assert all(r["status"] == "skipped" and ("CUDA" in r["reason"] or "import" in r["reason"]) for r in kernels)
    assert all(r["pure_tokens_per_sec"] > 0 for r in kernels)

    recurrence = sections["recurrence"]["rows"]
    assert {(r["family"], r["T"]) for r in recurrence} == {("mamba2", t) for t in (32, 64)}
    for r in recurrence:
        assert r["parallel_tokens_per_sec"] > 0 and r["step_tokens_per_sec"] > 0
        assert r["max_abs_diff"] < 1e-4  # the family contract's agreement of the two forms
        assert r["scan_fp32_max_rel_error"] < 1e-4 and r["scan_bf16-autocast_max_rel_error"] < 5e-2

    cli = sections["cli"]["rows"]
    assert [r["family"] for r in cli] == ["transformer"]
    for r in cli:
        assert r["exit_code"] == 0 and r["steps"] == 2 and r["tokens_per_sec"] > 0
        assert (out / "runs" / r["family"] / "metrics.json").is_file()

    tables = (out / "gpu_check.md").read_text()
    for heading in ("Training throughput", "Fused kernels", "Parallel form against the step form", "`lmlab pretrain`"):
        assert f"### {heading}" in tables
    assert tables.count("| mamba2 |") >= 3  # a row in the throughput, kernels and recurrence tables
    assert "0 failed" in proc.stdout
