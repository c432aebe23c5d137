"""Scaling-law fits (`lmlab.analysis.power_laws`, `crossovers`), the `lmlab scaling` tool on run folders, and
`lmlab report study=scaling` on a metrics folder: all on runs drawn from known power laws with noise."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmlab.analysis import scaling
from lmlab.analysis.config import ReportConfig
from lmlab.analysis.configurations import BY_RUNS, BY_SEEDS, Point
from lmlab.analysis.crossovers import crossover
from lmlab.analysis.power_laws import POWER_LAW, PowerLaw, fit_family, interval, local_exponent
from lmlab.analysis.scaling import law_cells, write_report
from lmlab.cli.scaling import main as scaling_main
from lmlab.core import metrics as M
from lmlab.core.errors import LmlabError
from lmlab.tools.scaling_runs import read_runs, wandb_run
from lmlab.tools.wandb_runs import Filters, Run
from tests.helpers.project import lmlab

TRUE = PowerLaw(190.0, 0.15, 2.0)  # L(C): 5.0 at 1e12 FLOPs, 3.1 at 1e15
K, E = 1e-3, 0.5  # N_opt(C) = K C^E, so L(N) at the optimum has b_N = TRUE.b / E
RESAMPLES = 300
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# one run per configuration: the bootstrap draws the runs themselves, and a frontier of 6 runs out of 12 loses too
# many of them in a draw (an undetermined fit); 8 sizes at 3 budgets give one that holds
ONE_SEED = {"sizes": 8, "budgets": (1.0, 2.0, 4.0), "seeds": 1, "off": 0.15}


def steps_down(flops: np.ndarray | float) -> np.ndarray:
    """No power law: the loss falls by 1 nat a decade of compute, then stops dead at 3."""
    return np.maximum(3.0, 5.0 - np.log10(np.asarray(flops) / 1e12))


def runs(
    family: str,
    law: Callable[[float], np.ndarray] = TRUE,
    sizes: int = 6,
    budgets: tuple[float, ...] = (1.0, 3.0),
    seeds: int = 3,
    seed: int = 0,
    off: float = 0.3,
    noise: float = 0.005,
) -> list[dict]:
    """A grid of runs: size i trained at compute C_i (its compute-optimal budget, 4x apart: on `law`) and at
    multiples of it, where the size is off its optimum and its loss higher by a factor 1 + off ln(f)^2."""
    rng = np.random.default_rng(seed)
    made = []
    for i in range(sizes):
        optimum = 1e12 * 4.0**i
        params = int(K * optimum**E)
        for f in budgets:
            for s in range(seeds):
                flops = optimum * f
                loss = float(law(flops) * (1 + off * np.log(f) ** 2) * np.exp(rng.normal(0, noise)))
                made.append(
                    {
                        "family": family,
                        "width": 64 * 2**i,
                        "budget": f,
                        "seed": s,
                        "params": params,
                        M.TRAIN_FLOPS: flops,
                        M.TRAIN_TOKENS: flops / (6 * params),
                        M.VAL_LOSS: loss,
                    }
                )
    return made


def points(made: list[dict]) -> list[Point]:
    return [
        Point(r["family"], str(r["width"]), r["params"], r[M.TRAIN_FLOPS], r[M.TRAIN_TOKENS], r[M.VAL_LOSS], name(r))
        for r in made
    ]


def name(run: dict) -> str:
    return f"{run['family']}-{run['width']}-{run['budget']:g}-s{run['seed']}"


def crossing_at(compute: float, b: float, c: float) -> PowerLaw:
    """A law with exponent b and offset c that meets TRUE at `compute`."""
    return PowerLaw((float(TRUE(compute)) - c) * compute**b, b, c)


def within(interval, value: float) -> bool:
    slack = 1e-9 * abs(value)  # an interval of one value (every resample alike) holds it up to rounding
    return interval.low - slack <= value <= interval.high + slack


def test_the_fit_recovers_a_known_power_law_within_its_bootstrap_intervals() -> None:
    fit = fit_family(points(runs("transformer", seed=3)), RESAMPLES)
    law = fit.compute
    assert law.ok, law.verdict
    assert [c.flops for c in fit.frontier] == [1e12 * 4.0**i for i in range(6)]  # the compute-optimal runs
    for key, true in zip("abc", (TRUE.a, TRUE.b, TRUE.c), strict=True):
        assert within(law.intervals[key], true), (key, law.intervals[key])
    assert law.intervals["b"].high - law.intervals["b"].low < 0.05
    assert BY_SEEDS in law.intervals["b"].how and law.rmse < 0.01 and fit.noise is not None
    assert within(fit.optimal.intervals["e"], E) and fit.optimal.ok
    assert within(fit.size.intervals["b"], TRUE.b / E) and within(fit.size.intervals["c"], TRUE.c)
    # the plots' band: the resamples' 95% pointwise interval, around the fit and holding the true law
    xs = np.geomspace(*law.span, 7)
    low, high = law.band(xs)
    assert np.all(low < law.law(xs)) and np.all(law.law(xs) < high)
    assert np.all((low < TRUE(xs)) & (TRUE(xs) < high)) and np.all(high / low < 1.03)
    # the same law from one run per configuration: the runs themselves are drawn, the intervals wider
    single = fit_family(points(runs("transformer", **ONE_SEED)), RESAMPLES)
    assert single.compute.ok and BY_RUNS in single.compute.intervals["b"].how and single.noise is None
    assert within(single.compute.intervals["b"], TRUE.b)


def test_too_few_configurations_or_sizes_are_refused_saying_how_many_are_needed() -> None:
    with pytest.raises(LmlabError, match="2 sizes; .* and 3 sizes"):
        fit_family(points(runs("lstm", sizes=2, budgets=(1.0, 2.0, 4.0))), RESAMPLES)
    with pytest.raises(LmlabError, match="4 configurations .* at least 5 configurations"):
        fit_family(points(runs("lstm", sizes=4, budgets=(1.0,))), RESAMPLES)


@pytest.mark.parametrize(
    ("law", "seeds", "expected"),
    [
        (PowerLaw(1e-9, 0.0, 3.0), 1, "no fit: 2 points on the frontier, 5 needed: the loss stops falling"),  # flat
        (PowerLaw(1e-3, -0.2, 2.0), 1, "no fit: 1 points on the frontier"),  # rising
        (steps_down, 3, "no power law: residuals (RMSE 0.02"),  # the seeds' noise tells the bend from the law
    ],
)
def test_points_that_do_not_follow_a_power_law_get_a_verdict_and_no_exponent(
    law: Callable[[float], np.ndarray], seeds: int, expected: str
) -> None:
    made = runs("rnn", law, budgets=(1.0, 2.0, 4.0), seeds=seeds, seed=1, off=0.0, noise=0.01)
    fit = fit_family(points(made), RESAMPLES)
    assert not fit.compute.ok and fit.compute.verdict.startswith(expected), fit.compute.verdict
    cells = law_cells(fit.compute, "abc")
    assert cells[:4] == ["-"] * 4 and cells[-1] == fit.compute.verdict  # no exponent printed
    assert crossover(fit, fit_family(points(runs("transformer")), RESAMPLES)).statement().startswith("not computed")


def test_crossovers_inside_outside_and_never() -> None:
    reference = fit_family(points(runs("transformer", seed=3)), RESAMPLES)
    inside = crossover(fit_family(points(runs("gru", crossing_at(3e13, 0.25, 1.6), seed=5)), RESAMPLES), reference)
    (crossing,) = inside.crossings
    assert crossing.measured and within(crossing.compute, crossing.compute.estimate)
    assert within(crossing.compute, 3e13) and crossing.lower_above == "gru" and crossing.share > 0.95
    assert "within the compute both fits saw" in inside.statement()

    outside = crossover(fit_family(points(runs("gru", crossing_at(1e17, 0.25, 1.9), seed=5)), RESAMPLES), reference)
    (crossing,) = outside.crossings
    assert not crossing.measured and within(crossing.compute, 1e17)
    assert "an extrapolation: the fits saw gru 1e+12-1e+15, transformer 1e+12-1e+15" in outside.statement()

    above = PowerLaw(1.5 * TRUE.a, TRUE.b, TRUE.c + 1.0)  # over a nat worse everywhere
    never = crossover(fit_family(points(runs("gru", above, seed=5)), RESAMPLES), reference)
    assert never.crossings == [] and never.lower == "transformer"
    assert never.statement().startswith("no crossing within 1e+09-1e+18 FLOPs")


def test_a_compute_optimal_size_fit_whose_resamples_never_move_is_no_measurement() -> None:
    """Where the seeds never change which size wins a budget, every resample gives the same N_opt fit: an interval
    of one value. Sizes off the law (here two at 1.5x) scatter about it, and such a fit is undetermined, with no
    figures; sizes exactly on it (the recovery test's) are a law the interval cannot be wider than."""
    made = runs("mamba2", seed=3)
    for run in made:
        if run["width"] in (128, 512):
            run["params"] = int(run["params"] * 1.5)
    law = fit_family(points(made), RESAMPLES).optimal
    assert law.verdict.startswith("undetermined: every resample puts the same sizes on the frontier"), law.verdict
    assert not law.ok and law_cells(law, "ke")[:2] == ["-", "-"]


def test_each_family_s_local_exponent_where_all_were_measured_against_the_reference_s() -> None:
    """Kaplan et al.'s alpha (a law without an offset) is a law's local exponent -d ln L / d ln C: recovered within
    its interval at the top of the compute every frontier holds, and each family called steeper, shallower or not
    resolved against the reference from paired draws (the families' resamples drawn independently)."""
    reference = fit_family(points(runs("transformer", seed=3)), RESAMPLES)
    law = crossing_at(3e13, 0.25, 1.6)  # local exponent 0.091 at 1e15 against the reference's 0.052
    steeper = fit_family(points(runs("gru", law, seed=5)), RESAMPLES)
    alike = fit_family(points(runs("lstm", seed=7)), RESAMPLES)  # the reference's law: not resolved
    shorter = fit_family(points(runs("mamba2", sizes=5, seed=9)), RESAMPLES)  # a frontier to 1e12 x 4^4
    at = 1e12 * 4.0**5
    for fit, true in ((reference, TRUE), (steeper, law)):
        values, slopes = fit.compute.local(at)
        alpha = local_exponent(np.array([[true.a, true.b, true.c]]), at)[0]
        assert within(interval(slopes[1:], slopes[0], ""), alpha) and slopes[0] < true.b
        assert within(interval(values[1:], values[0], ""), float(true(at)))
    assert abs(np.corrcoef(steeper.compute.local(at)[1][1:], reference.compute.local(at)[1][1:])[0, 1]) < 0.2

    def rows(fits: list) -> dict[str, str]:
        lines = scaling.improvement(fits, "transformer")
        compute = lines[: next(i for i, line in enumerate(lines) if line.startswith("L(N) at "))]
        return {line.split(" | ")[0].removeprefix("| "): line for line in compute if line.startswith("| ")}

    lines = "\n".join(scaling.improvement([steeper, reference, alike], "transformer"))
    assert f"L(C) at {at:.3g} FLOPs:" in lines and "L(N) at " in lines
    got = rows([steeper, reference, alike])
    assert got["gru"].endswith(": steeper |") and got["lstm"].endswith(": not resolved |")
    assert got["transformer"].endswith("| - |")
    assert f"L(C) at {1e12 * 4.0**4:.3g} FLOPs:" in "\n".join(scaling.improvement([reference, shorter], "transformer"))
    assert got["gru"] != rows([steeper, reference, shorter])["gru"]  # taken at the shorter range's top
    assert rows([steeper, shorter])["gru"].endswith("| - |")  # no reference law: no comparison
    assert "The transformer has no L(C) law here" in "\n".join(scaling.improvement([steeper, shorter], "transformer"))
    apart = [  # two frontiers over compute ranges that do not meet
        replace(reference, compute=replace(reference.compute, span=(1e12, 1e13))),
        replace(steeper, compute=replace(steeper.compute, span=(1e14, 1e15))),
    ]
    assert "L(C): no range common to every law." in scaling.improvement(apart, "transformer")


def write_run_folder(folder: Path, run: dict, schedule: str = "wsd", hydra: bool = True) -> None:
    """A pretraining run folder as `lmlab pretrain` leaves it: metrics.json, the config, val_curve.csv."""
    folder.mkdir(parents=True)
    embedding = 8000 * run["width"]
    metrics = {
        M.VAL_LOSS: run[M.VAL_LOSS],
        M.BEST_VAL_LOSS: run[M.VAL_LOSS],
        M.PARAMS: run["params"] + embedding,
        M.EMBEDDING_PARAMS: embedding,
        M.TRAIN_FLOPS: int(run[M.TRAIN_FLOPS]),
        M.TRAIN_TOKENS: int(run[M.TRAIN_TOKENS]),
        M.TRAIN_STEPS: 100,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    model = {"family": run["family"], "width": run["width"], "layers": 2}
    if hydra:
        (folder / ".hydra").mkdir()
        config = {"model": model, "optim": {"schedule": schedule}, "seed": run["seed"]}
        (folder / ".hydra/config.yaml").write_text(yaml.safe_dump(config))
    else:  # a run kept aside as <name>.<time>: its record only
        (folder / "run.json").write_text(json.dumps({"fingerprint": "0", "identity": {"model": model}}))
    with (folder / "val_curve.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(M.PRETRAIN_CURVE)
        for k in (1, 2, 3, 4):
            flops, tokens = run[M.TRAIN_FLOPS] * k / 4, run[M.TRAIN_TOKENS] * k / 4
            loss = run[M.VAL_LOSS] * (1 + 0.1 * (4 - k))
            writer.writerow([25 * k, tokens, flops, k, loss, np.exp(loss), loss / 2, 1e-3])


def test_the_tool_fits_run_folders_and_leaves_out_what_is_no_pretraining_run(tmp_path: Path) -> None:
    assert any(e.name == "scaling" and e.value == "lmlab.cli.scaling" for e in entry_points(group="lmlab.tools"))
    root = tmp_path / "runs"
    made = runs("transformer", **ONE_SEED) + runs("mamba2", crossing_at(3e13, 0.25, 1.6), **ONE_SEED, seed=2)
    for i, run in enumerate(made):
        write_run_folder(root / run["family"] / name(run), run, hydra=i != 0)
    finetune = root / "transformer" / "finetune"
    (finetune / ".hydra").mkdir(parents=True)
    (finetune / ".hydra/config.yaml").write_text(yaml.safe_dump({"model": {"family": "transformer", "width": 64}}))
    (finetune / "metrics.json").write_text(json.dumps({M.TEST_ACC: 0.5}))
    out = tmp_path / "fits"
    assert scaling_main(["fit", str(root), "--out", str(out), "--resamples", "200"]) == 0
    report = (out / "scaling.md").read_text()
    assert "| mamba2 | 24 | 8 |" in report and "| transformer | 24 | 8 |" in report
    assert f"| {POWER_LAW} |" in report and "- mamba2: cross at" in report
    assert "Left out: 1 run whose metrics.json lacks val/loss, train/flops or train/tokens (fine-tuning" in report
    assert f"did not finish): {finetune}." in report
    for png in ("scaling_compute.png", "scaling_frontiers.png", "scaling_params.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)

    # --curves: the validations before each run's end are fitted too, flagged as such
    measured = read_runs([root / "mamba2"], None, Filters(), "model.family", "model.width", curves=True)
    assert len(measured.points) == 4 * 24 and any("Chinchilla's caveat" in note for note in measured.notes)
    assert fit_family(measured.points, 100).curves


def test_the_tool_refuses_what_it_cannot_fit_with_a_clear_message(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert scaling_main(["fit", str(tmp_path / "empty")]) == 2
    assert "no W&B runs" in capsys.readouterr().err
    root = tmp_path / "runs"
    for run in runs("gru", sizes=2, seeds=1):
        write_run_folder(root / name(run), run)
    assert scaling_main(["fit", str(root), "--out", str(tmp_path / "out"), "--resamples", "100"]) == 0
    assert "gru: 4 configurations of 2 sizes; a scaling fit needs" in (tmp_path / "out/scaling.md").read_text()
    for run in runs("gru", sizes=1, seeds=1, seed=1):
        write_run_folder(root / "odd" / name(run), {**run, "family": None})
    assert scaling_main(["fit", str(root)]) == 2
    assert "its config has no model.family; name the key that holds it with --family-key" in capsys.readouterr().err


def test_wandb_runs_without_embedding_counts_fit_the_compute_frontier_only() -> None:
    def record(run: dict) -> Run:
        config = {"model.family": run["family"], "model.width": run["width"], M.PARAMS: run["params"]}
        summary = {key: run[key] for key in (M.VAL_LOSS, M.TRAIN_FLOPS, M.TRAIN_TOKENS)}
        return Run(name(run), name(run), "", "pretrain", [], "finished", config, summary, [], "", name(run))

    made = [wandb_run(record(run), "model.family", "model.width", False) for run in runs("lstm", **ONE_SEED)]
    fit = fit_family([p for got in made if got for p in got[0]], RESAMPLES)
    assert fit.compute.verdict == POWER_LAW
    assert fit.size.verdict.startswith("not fitted: 24 configurations without model/embedding_params")


def write_metrics(folder: Path, run: dict) -> None:
    embedding = 8000 * run["width"]
    keys = ("family", "width", "budget", "seed", M.TRAIN_FLOPS, M.TRAIN_TOKENS, M.VAL_LOSS)
    figures = {**{k: run[k] for k in keys}, M.PARAMS: run["params"] + embedding, M.EMBEDDING_PARAMS: embedding}
    figures["position"] = [
        {"position_from": p, "position_to": 2 * p, "loss": run[M.VAL_LOSS] + 1 / p} for p in (1, 2, 4)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name(run)}.json").write_text(json.dumps(figures))


def test_report_study_scaling_writes_the_tables_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics, reports = tmp_path / "scaling/metrics", tmp_path / "reports"
    result = lmlab("report", "study=scaling", f"scaling_dir={metrics}", f"out_dir={reports}")
    assert result.returncode == 2 and f"no scaling metrics (*.json) in {metrics}" in result.stderr  # the verb's study
    lstm = crossing_at(1e17, 0.25, 1.9)
    for run in runs("transformer", **ONE_SEED) + runs("lstm", lstm, **ONE_SEED) + runs("rnn")[:3]:
        write_metrics(metrics, run)
    monkeypatch.setattr(scaling, "RESAMPLES", 200)  # the study's 1000 take seconds more
    config = ReportConfig(study="scaling", scaling_dir=str(metrics), out_dir=str(reports))
    out = write_report(config).parent
    report = (out / "scaling.md").read_text()
    assert "| rnn |  |  |  |  | - | - | - | - | rnn: 1 configuration of 1 size" in report
    assert "- lstm: cross at" in report and "an extrapolation" in report
    assert "## How fast each family improves, where all were measured" in report and "| lstm | " in report
    assert (
        "- transformer: 24 runs; widths 64, 128, 256, 512, 1024, 2048, 4096, 8192; budgets 1, 2, 4; seeds 0" in report
    )
    for png in ("scaling_compute.png", "scaling_frontiers.png", "scaling_params.png", "scaling_position.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)

    (metrics / "transformer-64-1-s0.json").write_text(json.dumps({"family": "transformer"}))
    with pytest.raises(LmlabError, match="transformer-64-1-s0.json has no key 'width': run `dvc repro scaling"):
        write_report(config)
    assert (out / "scaling.md").read_text() == report  # the previous report stays


def test_the_compute_optimal_size_is_not_measured_where_the_frontier_sits_at_the_grid_s_edge() -> None:
    """Sizes trained to fixed token budgets all short of their optimum (Chinchilla's law, 8 to 0.25 tokens a
    parameter against its 20): past its first points the frontier is each size at the longest budget, where a
    smaller size trained longer might win, so a size there bounds the optimum rather than measures it."""
    rng = np.random.default_rng(0)
    made = []
    for i in range(6):
        n = 1e5 * 2**i
        for d in (2e5, 4e5, 8e5):
            loss = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
            for s in range(2):
                noisy = float(loss * np.exp(rng.normal(0, 0.002)))
                made.append(Point("lstm", str(16 * 2**i), int(n), 6 * n * d, d, noisy, f"lstm-{i}-{d:g}-s{s}"))
    fit = fit_family(made, RESAMPLES)
    assert all(cell.tokens == 8e5 for cell in fit.frontier[2:])  # the longest budget, size after size
    assert not fit.optimal.ok and "at the grid's edge" in fit.optimal.verdict, fit.optimal.verdict
    assert not fit.optimal.intervals  # without the rule: "power law", e 0.77 [0.77, 0.77] (C ~ N at a fixed D)


def bends(flops: np.ndarray | float) -> np.ndarray:
    """TRUE with a gentle wave of 0.6%: no power law to the seeds' noise, yet one that describes the range."""
    log_c = np.log10(np.asarray(flops) / 1e12)
    return TRUE(flops) * np.exp(0.006 * np.sin(2 * np.pi * log_c / 3))


def test_a_law_bent_beyond_the_seeds_noise_but_within_one_percent_is_the_range_s_slope_never_extrapolated() -> None:
    fit = fit_family(points(runs("lstm", bends, seeds=3, seed=2, noise=0.001)), RESAMPLES)
    law = fit.compute
    assert law.bent and law.ok and not law.extrapolates, law.verdict
    assert 0.002 < law.rmse < 0.01 and within(law.intervals["b"], TRUE.b)
    assert BY_RUNS in law.intervals["b"].how and law.intervals["b"].high > law.intervals["b"].low  # the bend sets it
    assert law_cells(law, "abc")[1] != "-"  # its exponent is shown, the verdict saying what it is
    reference = fit_family(points(runs("transformer", seed=3)), RESAMPLES)
    cross = crossover(fit, reference)
    spans = (law.span, reference.compute.span)
    assert cross.bent == ("lstm",) and cross.window == (max(s[0] for s in spans), min(s[1] for s in spans))
    assert all(c.measured for c in cross.crossings)  # only the compute both fits saw
    assert cross.crossings or "so it is not extrapolated" in cross.statement()


def test_a_bent_law_whose_draws_across_configurations_fail_is_undetermined_with_no_figures() -> None:
    law = fit_family(points(runs("lstm", bends, seeds=3, seed=2, noise=0.001)), RESAMPLES).compute
    assert law.bent
    failed = law.drawn_across(np.full((RESAMPLES, 3), np.nan), BY_RUNS)
    assert not failed.ok and failed.verdict.startswith("undetermined") and law_cells(failed, "abc")[1] == "-"
