"""The comparison report builds from metrics files alone, writes its plots, and fails whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmlab.config import ReportConfig
from lmlab.errors import LmlabError
from lmlab.report import PLOTS, family_colours, report
from tests.helpers.project import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_family(root: Path, family: str, acc: float, scratch_acc: float, loss0: float) -> None:
    metrics = {
        "model/params": 1_400_000,
        "train/wall_seconds": 31.5,
        "train/tokens_per_sec": 12_000.0,
        "infer/tokens_per_sec": 40_000.0,
        "infer/ms_per_generated_token": 1.5,
        "val/ppl": 300.0,
        "test/ppl": 320.0,
        "test/bpb": 1.8,
        "test/acc": acc,
        "test/f1": acc - 0.05,
        "scratch/test/acc": scratch_acc,
        "scratch/test/f1": scratch_acc - 0.05,
    }
    (root / "metrics/curves" / family).mkdir(parents=True)
    (root / f"metrics/{family}.json").write_text(json.dumps(metrics))
    rows = ["step,train/tokens,train/wall_seconds,val/loss,val/ppl,val/bpb,train/lr"]
    rows += [f"{s},{s * 1024},{s / 10},{loss0 - s / 100},1,1,0.001" for s in (100, 200, 300)]
    (root / "metrics/curves" / family / "pretrain.csv").write_text("\n".join(rows) + "\n")
    (root / "eval" / family).mkdir(parents=True)
    (root / "eval" / family / "sample.txt").write_text(f"a {family} sample\n")


def config(root: Path, families: list[str] | None = None) -> ReportConfig:
    return ReportConfig(
        families=families,
        params_file=str(root / "params.yaml"),
        metrics_dir=str(root / "metrics"),
        samples_dir=str(root / "eval"),
        out_dir=str(root / "reports"),
    )


def test_report_has_a_row_per_family_the_verdicts_samples_and_plots(tmp_path: Path) -> None:
    write_family(tmp_path, "gru", acc=0.74, scratch_acc=0.70, loss0=7.0)
    write_family(tmp_path, "transformer", acc=0.66, scratch_acc=0.69, loss0=6.5)
    (tmp_path / "params.yaml").write_text("families: [gru, transformer]\n")
    path = report(config(tmp_path))
    text = path.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| gru") or line.startswith("| transformer")]
    assert len(rows) == 2
    assert rows[0].split(" | ")[1] == "1,400,000" and "0.740" in rows[0] and "0.700" in rows[0]
    assert "gru: pretrained beats from scratch by 4.0 accuracy points (0.740 vs 0.700" in text
    assert "transformer: pretrained trails from scratch by 3.0 accuracy points" in text
    assert "a transformer sample" in text
    for name in PLOTS:
        png = tmp_path / "reports" / name
        assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5_000, name
        assert f"]({name})" in text


def test_families_given_override_params_and_a_missing_one_names_its_stage(tmp_path: Path) -> None:
    write_family(tmp_path, "gru", acc=0.74, scratch_acc=0.70, loss0=7.0)
    (tmp_path / "params.yaml").write_text("families: [gru, lstm]\n")
    with pytest.raises(LmlabError, match=r"metrics/lstm.json: run `dvc repro evaluate@lstm`"):
        report(config(tmp_path))
    assert not (tmp_path / "reports").exists()  # nothing half-written
    assert report(config(tmp_path, ["gru"])).is_file()


def test_a_failed_rebuild_keeps_the_previous_report(tmp_path: Path) -> None:
    write_family(tmp_path, "gru", acc=0.74, scratch_acc=0.70, loss0=7.0)
    first = report(config(tmp_path, ["gru"])).read_text()
    (tmp_path / "metrics/gru.json").write_text("{not json")
    with pytest.raises(LmlabError, match=r"gru.json is not valid JSON .*evaluate@gru"):
        report(config(tmp_path, ["gru"]))
    assert (tmp_path / "reports/comparison.md").read_text() == first


def test_a_family_has_one_colour_in_every_plot() -> None:
    """The report's curves and DVC's plots both colour families by Tableau's 10 in alphabetical order."""
    colours = family_colours(["transformer", "gru", "mamba2", "lstm"])
    assert colours == {"gru": "C0", "lstm": "C1", "mamba2": "C2", "transformer": "C3"}
    assert family_colours(["mamba2", "gru", "transformer", "lstm"]) == colours, "the order given does not matter"
    template = json.loads((ROOT / ".dvc" / "plots" / "families.json").read_text())
    colour = template["encoding"]["color"]
    assert (colour["field"], colour["sort"], colour["scale"]["scheme"]) == ("family", "ascending", "category10")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[0.74, 0.70]", r"holds a JSON list, not an object"),
        ('{"test/acc": "high", "test/f1": 0.7}', r"'test/acc' is 'high', not a number"),
        ('{"test/acc": 0.74}', r"has no key 'test/f1'"),
        ('{"test/acc": 0.7, "test/f1": 0.7, "scratch/test/acc": 0.6}', r"has no key 'scratch/test/f1'"),
        ('{"test/acc": 0.7, "test/f1": 0.7, "model/params": [1]}', r"'model/params' is \[1\], not a number"),
    ],
    ids=["list", "string", "no-f1", "half-baseline", "params"],
)
def test_metrics_of_the_wrong_shape_name_the_file_and_leave_the_report_and_no_staging(
    tmp_path: Path, content: str, problem: str
) -> None:
    write_family(tmp_path, "gru", acc=0.74, scratch_acc=0.70, loss0=7.0)
    first = report(config(tmp_path, ["gru"])).read_text()
    (tmp_path / "metrics/gru.json").write_text(content)
    with pytest.raises(LmlabError, match=problem) as caught:
        report(config(tmp_path, ["gru"]))
    assert str(tmp_path / "metrics/gru.json") in str(caught.value) and "dvc repro evaluate@gru" in str(caught.value)
    assert (tmp_path / "reports/comparison.md").read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "metrics", "reports"]


def test_a_failure_while_writing_leaves_no_staging_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_family(tmp_path, "gru", acc=0.74, scratch_acc=0.70, loss0=7.0)
    first = report(config(tmp_path, ["gru"])).read_text()

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lmlab.report.throughput_plot", full_disk)
    with pytest.raises(OSError, match="No space left"):
        report(config(tmp_path, ["gru"]))
    assert (tmp_path / "reports/comparison.md").read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "metrics", "reports"]
