"""The comparison report builds from metrics files alone, writes its plots, and fails whole."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.analysis.colours import family_colours
from lmlab.analysis.comparison import COLUMNS, PLOTS, write_report
from lmlab.analysis.config import ReportConfig
from lmlab.core.errors import LmlabError
from lmlab.jobs.evaluate import resolved_device
from tests.helpers.evaluations import write_evaluation
from tests.helpers.project import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_family(
    root: Path, family: str, acc: float, scratch_acc: float, loss0: float, collapsed: bool = False
) -> None:
    """What `lmlab evaluate` writes for a family (`write_evaluation`), and its pretraining curve."""
    rows = ["step,train/tokens,train/flops,train/wall_seconds,val/loss,val/ppl,val/bpb,train/lr"]
    rows += [f"{s},{s * 1024},{s * 1024 * 3e6},{s / 10},{loss0 - s / 100},1,1,0.001" for s in (100, 200, 300)]
    curves = {"pretrain": "\n".join(rows) + "\n"}
    write_evaluation(
        root / f"metrics/{family}.json", root / "eval" / family, family, acc, scratch_acc, collapsed, curves=curves
    )


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
    write_family(tmp_path, "transformer", acc=0.62, scratch_acc=0.70, loss0=6.5)
    (tmp_path / "params.yaml").write_text("families: [gru, transformer]\n")
    path = write_report(config(tmp_path))
    text = path.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| gru") or line.startswith("| transformer")]
    assert len(rows) == 2
    assert rows[0].split(" | ")[1] == "1,400,000" and "0.740 [" in rows[0] and "0.700 [" in rows[0]
    assert re.search(r"gru: pretrained beats from scratch by 4\.0 \[\d\.\d, \d\.\d\] accuracy points", text)
    assert re.search(r"transformer: pretrained trails from scratch by 8\.0 \[\d\.\d, \d+\.\d\] accuracy points", text)
    assert "| majority class | — |" in text and "0.600 [" in text
    assert "The year began" in text and "a transformer sample" in text
    assert "## Setting" in text and "commit 0123456789ab" in text and "300 steps, 307,200 tokens per family" in text
    assert (
        "training FLOPs (forward + backward, counted from each architecture): gru 9.22e+11, transformer 1.38e+12"
        in text
    )
    for name in PLOTS:
        png = tmp_path / "reports" / name
        assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5_000, name
        assert f"]({name})" in text


def test_several_seeds_give_t_intervals_over_the_seeds_and_a_verdict_from_their_spread(tmp_path: Path) -> None:
    """The pipeline's seed<k>/ folders: each figure is the seeds' mean with a t-interval over them; a gain every
    seed shows is a verdict, one the seeds disagree on is not, whatever each seed's bootstrap said."""
    gains = {"gru": (0.74, 0.75, 0.73), "transformer": (0.74, 0.66, 0.71)}  # against 0.70 from scratch
    for i, seed in enumerate((1, 2, 3)):
        for family, accs in gains.items():
            seeded = tmp_path / "metrics" / f"seed{seed}"
            rows = ["step,train/tokens,val/loss", *(f"{s},{s * 1024},{7.0 + seed - s / 100}" for s in (100, 200))]
            write_evaluation(
                seeded / f"{family}.json",
                tmp_path / f"eval/seed{seed}/{family}",
                family,
                accs[i],
                0.70,
                seed=seed,
                curves={"pretrain": "\n".join(rows) + "\n"},
            )
    (tmp_path / "params.yaml").write_text("families: [gru, transformer]\nseeds: [1, 2, 3]\n")
    text = write_report(config(tmp_path)).read_text()
    # gains 4, 5, 3 points: mean 4.0, t(2) 4.303 x sd 1.0 / sqrt(3) = 2.48 either side
    assert "gru: pretrained beats from scratch by 4.0 [1.5, 6.5] accuracy points" in text, text
    assert "transformer: no significant difference between pretrained and from scratch (0.3 [" in text
    gru = next(line for line in text.splitlines() if line.startswith("| gru"))
    assert "0.740 [0.715, 0.765]" in gru and "0.700 [0.700, 0.700]" in gru  # accuracy over the seeds
    assert "3 seeds: the mean and a t-interval over the seeds" in text and "pretraining 1, 2, 3" in text
    combined = (tmp_path / "reports/curves/pretrain.csv").read_text().splitlines()
    assert combined[1] == "gru,100,102400,8" and len(combined) == 5  # the seeds' mean: 7 + (1 + 2 + 3) / 3 - 1

    shutil.rmtree(tmp_path / "eval/seed2/transformer")
    with pytest.raises(LmlabError, match=r"eval/seed2/transformer/setting.json.*dvc repro evaluate@transformer-2"):
        write_report(config(tmp_path))
    (tmp_path / "params.yaml").write_text("families: [gru]\nseeds: [1, 1]\n")
    with pytest.raises(LmlabError, match=r"seeds=\[1, 1\] names a seed twice"):
        write_report(config(tmp_path))


def test_every_compared_figure_carries_its_interval(tmp_path: Path) -> None:
    write_family(tmp_path, "gru", acc=0.74, scratch_acc=0.70, loss0=7.0)
    write_report(config(tmp_path, ["gru"]))
    row = next(line for line in (tmp_path / "reports/comparison.md").read_text().splitlines() if line[:5] == "| gru")
    cells = dict(zip(["family", *(c[0] for c in COLUMNS)], row.strip("| ").split(" | "), strict=True))
    for column in ("test ppl", "test bpb", "acc", "scratch acc"):
        estimate, low, high = map(float, re.fullmatch(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", cells[column]).groups())
        assert low < estimate < high, (column, cells[column])
    nats = np.random.default_rng(3).gamma(50, 0.12, size=200) * 256
    assert float(cells["test ppl"].split()[0]) == pytest.approx(np.exp(nats.sum() / (200 * 256)), abs=0.05)


def test_a_difference_within_noise_is_no_verdict(tmp_path: Path) -> None:
    """One point on 1,000 documents: the paired interval holds zero, so the report says so instead of a winner."""
    write_family(tmp_path, "gru", acc=0.71, scratch_acc=0.70, loss0=7.0)
    text = write_report(config(tmp_path, ["gru"])).read_text()
    assert "gru: no significant difference between pretrained and from scratch (1.0 [" in text
    verdict = next(line for line in text.splitlines() if line.startswith("- gru:"))
    assert "beats" not in verdict and "trails" not in verdict


def test_a_collapsed_classifier_is_flagged_not_compared(tmp_path: Path) -> None:
    """Predicting one class for every document scores the majority baseline; the report flags it."""
    write_family(tmp_path, "lstm", acc=0.0, scratch_acc=0.75, loss0=7.0, collapsed=True)
    text = write_report(config(tmp_path, ["lstm"])).read_text()
    assert "0.600 [" in text and "(collapsed)" in text
    verdict = next(line for line in text.splitlines() if line.startswith("- lstm:"))
    assert "no verdict" in verdict and "predicts 'pos' for 100% of test documents" in verdict
    assert "trails" not in verdict


def test_families_given_override_params_and_a_missing_one_names_its_stage(tmp_path: Path) -> None:
    write_family(tmp_path, "gru", acc=0.74, scratch_acc=0.70, loss0=7.0)
    (tmp_path / "params.yaml").write_text("families: [gru, lstm]\n")
    with pytest.raises(
        LmlabError, match=r"metrics/lstm.json: run `lmlab evaluate family=lstm metrics_dir=.*/metrics eval_dir=.*/eval`"
    ):
        write_report(config(tmp_path))
    assert not (tmp_path / "reports").exists()  # nothing half-written
    assert write_report(config(tmp_path, ["gru"])).is_file()


def test_a_failed_rebuild_keeps_the_previous_report(tmp_path: Path) -> None:
    write_family(tmp_path, "gru", acc=0.74, scratch_acc=0.70, loss0=7.0)
    first = write_report(config(tmp_path, ["gru"])).read_text()
    (tmp_path / "metrics/gru.json").write_text("{not json")
    with pytest.raises(LmlabError, match=r"gru.json is not valid JSON .*lmlab evaluate family=gru"):
        write_report(config(tmp_path, ["gru"]))
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
    first = write_report(config(tmp_path, ["gru"])).read_text()
    (tmp_path / "metrics/gru.json").write_text(content)
    with pytest.raises(LmlabError, match=problem) as caught:
        write_report(config(tmp_path, ["gru"]))
    assert str(tmp_path / "metrics/gru.json") in str(caught.value) and "run `lmlab evaluate family=gru" in str(
        caught.value
    )
    assert (tmp_path / "reports/comparison.md").read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "metrics", "reports"]


def test_a_failure_while_writing_leaves_no_staging_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_family(tmp_path, "gru", acc=0.74, scratch_acc=0.70, loss0=7.0)
    first = write_report(config(tmp_path, ["gru"])).read_text()

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lmlab.analysis.comparison.throughput_plot", full_disk)
    with pytest.raises(LmlabError, match=r"no space left .* writing .*reports: .* set out_dir"):
        write_report(config(tmp_path, ["gru"]))
    assert (tmp_path / "reports/comparison.md").read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "metrics", "reports"]


def test_evaluate_auto_takes_the_device_the_pretraining_run_trained_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """device=auto: inference figures from the machine the training figures came from, not any GPU present."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for accelerator, device in (("gpu", "cuda"), ("cpu", "cpu"), ("auto", "cuda")):
        run = tmp_path / accelerator
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra/config.yaml").write_text(f"trainer:\n  accelerator: {accelerator}\n")
        assert resolved_device("auto", run) == device, accelerator
        assert resolved_device("cuda:1", run) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolved_device("auto", tmp_path / "gpu") == "cpu"  # trained on a GPU, evaluated where there is none


def test_a_markdown_table_escapes_a_bar_in_a_cell_and_aligns_numbers_right() -> None:
    from lmlab.analysis.tables import table

    lines = table(["run", "loss"], [["a|b", "1.5"], ["c", "2.0"]], right=["loss"])
    assert lines == ["| run | loss |", "|---|---:|", "| a\\|b | 1.5 |", "| c | 2.0 |"]
