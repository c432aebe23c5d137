"""Synthetic tasks: the examples `lmlab.data.synthetic` makes, the batches that feed them, and `lmlab synth`
through the CLI, DDP and its own DVC pipeline (`synth/dvc.yaml`) at tiny sizes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from lmlab.core import metrics as M
from lmlab.core.errors import LmlabError
from lmlab.data.synthetic import IGNORE, counting, mqar, power_law_positions
from lmlab.jobs.synth import synth as run_synth
from lmlab.tasks.config import SynthTaskConfig
from lmlab.tasks.synthetic import VAL, ExampleBatches, answer_counts, make_examples, scored
from lmlab.training.checkpoints import load_language_model
from tests.helpers.host_reads import counted
from tests.helpers.project import copy_files, copy_project, dvc, env
from tests.helpers.tiny_lm import composed

# LSTM on parity at 16 tokens, small sets: the literature's check (docs/diagnostics.md), in seconds
PARITY = [
    "task=parity",
    "model=lstm",
    "task.seq_len=16",
    "task.train_examples=4000",
    "task.val_examples=200",
    "task.lengths=[1,2]",
    "trainer.max_steps=300",
    "trainer.val_every=150",
    "trainer.log_every=50",
    "optim.lr=3e-3",
    "optim.warmup_steps=10",
    "logger=none",
]


def synth(project: Path, *overrides: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmlab", "synth", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


# ----- the examples -----
def test_mqar_asks_every_key_once_later_for_its_value() -> None:
    vocab, length, pairs = 64, 40, 5
    data = mqar(300, vocab, length, pairs, seed=7)
    inputs, targets = data.inputs.numpy(), data.targets.numpy()
    for row, answers in zip(inputs, targets, strict=True):
        keys, values = row[0 : 2 * pairs : 2], row[1 : 2 * pairs : 2]
        assert len(set(keys)) == pairs and all(1 <= k < vocab // 2 for k in keys)
        assert len(set(values)) == pairs and all(vocab // 2 <= v < vocab for v in values)
        asked = np.flatnonzero(answers != IGNORE)
        assert len(asked) == pairs and asked.min() >= 2 * pairs and np.all((asked - 2 * pairs) % 2 == 0)
        pairs_of = dict(zip(keys.tolist(), values.tolist(), strict=True))
        assert sorted(row[asked].tolist()) == sorted(keys.tolist())  # each key asked once
        assert all(answers[p] == pairs_of[row[p]] for p in asked)
    again = mqar(300, vocab, length, pairs, seed=7)
    assert torch.equal(again.inputs, data.inputs) and torch.equal(again.targets, data.targets)
    assert not torch.equal(mqar(300, vocab, length, pairs, seed=8).inputs, data.inputs)
    quiet = mqar(50, vocab, length, pairs, seed=7, noise=False)
    between = quiet.inputs[:, 2 * pairs :][quiet.targets[:, 2 * pairs :] == IGNORE]
    assert torch.all(between == 0)


def test_query_gaps_follow_the_power_law() -> None:
    rng = np.random.default_rng(0)
    skewed = power_law_positions(rng, 2000, 4, 100, power_a=0.01)
    uniform = power_law_positions(rng, 2000, 4, 100, power_a=1.0)
    assert all(len(set(row)) == 4 for row in skewed)  # without replacement
    assert skewed.mean() < 0.5 * uniform.mean()  # small gaps dominate (Zoology's power_a=0.01)
    assert abs(uniform.mean() - 49.5) < 3


def test_counting_targets_are_the_running_count_modulo() -> None:
    for modulus in (2, 3):
        data = counting(100, 30, modulus, seed=1)
        bits = data.inputs.numpy()
        assert set(np.unique(bits)) <= {0, 1}
        assert np.array_equal(data.targets.numpy(), np.cumsum(bits, axis=1) % modulus)


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda: mqar(4, 64, 31, 2, seed=0), "task.seq_len=31"),
        (lambda: mqar(4, 64, 16, 5, seed=0), "task.pairs=5"),
        (lambda: mqar(4, 8, 64, 8, seed=0), "task.vocab_size=8"),
        (lambda: counting(4, 16, 1, seed=0), "task.modulus=1"),
    ],
)
def test_a_task_that_cannot_be_made_names_its_key(make, names: str) -> None:
    with pytest.raises(LmlabError, match=names.replace("[", r"\[")):
        make()


# ----- the batches -----
def test_batches_resume_where_they_stopped_and_ranks_split_each_global_batch() -> None:
    task = SynthTaskConfig(kind="counting", seq_len=8, train_examples=50)
    examples = make_examples(task, 50, 8, (0,))
    straight = list(islice(ExampleBatches(examples, 4, 1, 0, 1, 0), 30))  # 2.4 passes over the set
    resumed = list(islice(ExampleBatches(examples, 4, 1, 0, 1, 20), 10))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(straight[20:], resumed, strict=True))
    wide = list(islice(ExampleBatches(examples, 4, 1, 0, 1, 0), 6))
    ranks = [list(islice(ExampleBatches(examples, 2, 1, r, 2, 0), 6)) for r in (0, 1)]
    for b, batch in enumerate(wide):
        assert torch.equal(torch.cat([ranks[0][b][0], ranks[1][b][0]]), batch[0])
        assert batch[2] is True  # every example starts from a fresh state
    seen = torch.cat([b[0] for b in straight[: 50 // 4]])
    assert len({tuple(x.tolist()) for x in seen}) > 40  # a permutation, not repeats of a few examples


# ----- lmlab synth -----
def accuracy_of(run_dir: Path, task: SynthTaskConfig, factor: int) -> float:
    """The accuracy of the run's last checkpoint over the whole validation set, computed here."""
    model = load_language_model(run_dir / "checkpoints/last.ckpt").model
    examples = make_examples(task, task.val_examples, factor * task.seq_len, (VAL, factor))
    correct, answers = answer_counts(model, examples, task.seq_len if factor > 1 else 0, 64)
    return correct.sum() / answers.sum()


def test_the_lstm_solves_parity_at_and_beyond_its_training_length(project: Path, tmp_path: Path) -> None:
    """The literature's check at tiny size, through the CLI; the figures are the model's (recomputed from its
    checkpoint), the run resumes at its end, and a bad length list changes nothing on disk."""
    run_dir = tmp_path / "parity-lstm"
    result = synth(project, *PARITY, run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics[M.VAL_ACC] >= 0.99 and metrics[M.val_acc_at(2)] >= 0.99, metrics
    low, high = metrics["intervals"][M.VAL_ACC]
    assert low <= metrics[M.VAL_ACC] <= high <= 1.0
    assert metrics[M.STATE_BYTES] == 2 * 2 * 64 * 4  # (h, c) of two 64-wide layers in float32
    assert metrics["lengths"] == [1, 2] and metrics[M.TRAIN_STEPS] == 300
    task = SynthTaskConfig(kind="counting", seq_len=16, val_examples=200)
    assert accuracy_of(run_dir, task, 2) == pytest.approx(metrics[M.val_acc_at(2)])
    with (run_dir / "val_curve.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r[M.STEP]) for r in rows] == [150, 300] and M.val_acc_at(2) in rows[0]
    assert "synth counting lstm step 300/300" in result.stdout and "2x" in result.stdout

    again = synth(project, *PARITY, run_dir=run_dir)
    assert again.returncode == 0 and "resuming from" in again.stdout, again.stdout[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text())[M.VAL_ACC] == metrics[M.VAL_ACC]

    bad = synth(project, *PARITY, "task.lengths=[2,4]", run_dir=tmp_path / "bad")
    assert bad.returncode == 2 and "task.lengths=[2, 4]" in bad.stderr, bad.stderr[-2000:]
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_ddp_validates_every_example_once_across_ranks(project: Path, tmp_path: Path) -> None:
    """trainer=ddp_cpu: each rank validates its share; the reduced accuracy is the whole set's."""
    run_dir = tmp_path / "ddp"
    overrides = [*PARITY[:6], "trainer.max_steps=20", "trainer.val_every=20", "trainer=ddp_cpu", "logger=none"]
    result = synth(project, *overrides, "task.val_examples=201", run_dir=run_dir)  # odd: ranks hold 101 and 100
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    task = SynthTaskConfig(kind="counting", seq_len=16, val_examples=201)
    for factor in (1, 2):
        assert accuracy_of(run_dir, task, factor) == pytest.approx(metrics[M.val_acc_at(factor)])


def test_a_transformer_is_measured_past_its_training_length() -> None:
    """Its context is raised to the longest validation length: rotary positions run on, learned ones have rows
    there that no training example reached."""
    from lmlab.jobs.config import SynthConfig
    from lmlab.jobs.synth import fitted_model_config

    cfg = SynthConfig(task=SynthTaskConfig(kind="counting", seq_len=16, lengths=[1, 2, 4]))
    cfg.model = {"family": "transformer", "context": 16, "width": 32, "heads": 2}
    assert fitted_model_config(cfg).context == 64
    cfg.model = {"family": "lstm", "width": 32}
    assert not hasattr(fitted_model_config(cfg), "context")


def test_the_synth_pipeline_reproduces_and_reports(tmp_path: Path) -> None:
    """`dvc repro synth/dvc.yaml` at tiny size: every stage runs, the report has a row per run and both plots,
    and a second repro does nothing. The main pipeline (`dvc repro`) is not touched."""
    root = copy_project(tmp_path / "project")
    copy_files(root, ("synth/dvc.yaml", "synth/params.yaml"))
    params = yaml.safe_load((root / "synth/params.yaml").read_text())
    params["families"], params["recall_families"] = ["lstm", "transformer"], ["transformer"]
    params["mqar"] |= {"steps": 4, "val_every": 2, "lrs": [0.001]}
    params["mqar"]["short"] |= {"seq_len": 16, "widths": [16]}
    params["mqar"]["wide"] |= {"seq_len": 16, "widths": [48], "steps": 4, "lrs": [0.001]}
    params["mqar"]["long"] |= {"seq_len": 24, "pairs": 6, "widths": [16], "steps": 4}
    params["parity"] |= {"width": 16, "steps": 4, "val_every": 2, "lrs": [0.003]}
    params["parity"]["negative_eigenvalues"] = ["gated_deltanet"]
    (root / "synth/params.yaml").write_text(yaml.safe_dump(params))
    for task in ("mqar", "parity"):
        path = root / f"conf/task/{task}.yaml"
        spec = yaml.safe_load(path.read_text()) | {"train_examples": 64, "val_examples": 16, "seq_len": 16}
        path.write_text(yaml.safe_dump(spec))
    synth_conf = yaml.safe_load((root / "conf/synth.yaml").read_text())
    synth_conf["trainer"] |= {"val_every": 2, "log_every": 2}
    synth_conf["defaults"] = [d if d != {"logger": "wandb"} else {"logger": "csv"} for d in synth_conf["defaults"]]
    (root / "conf/synth.yaml").write_text(yaml.safe_dump(synth_conf, sort_keys=False))

    result = dvc("repro", "synth/dvc.yaml", cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (root / "reports/synth/synth.md").read_text()
    for family in ("lstm", "transformer"):
        assert f"| {family} | 16 | 16 | 4 |" in report
        metrics = json.loads((root / f"synth/metrics/parity/{family}-lr0.003.json").read_text())
        assert metrics["lengths"] == [1, 2, 4] and metrics["lr"] == 0.003
        assert sum(line.startswith(f"| {family} | 2 | 16 |") for line in report.splitlines()) == 1
    assert "| transformer | 48 | 16 | 4 |" in report and "| transformer | 16 | 24 | 6 |" in report
    assert "| lstm | 48 |" not in report and "| lstm | 16 | 24 |" not in report  # the recall families only
    negative = "| gated_deltanet (negative eigenvalues) | 2 | 16 |"
    assert sum(line.startswith(negative) for line in report.splitlines()) == 1
    assert sorted(p.name for p in (root / "reports/synth").glob("*.png")) == [
        "mqar_accuracy_vs_state.png",
        "mqar_steps_vs_state.png",
        "parity_accuracy_vs_length.png",
    ]
    assert "Running stage" not in dvc("repro", "synth/dvc.yaml", cwd=root).stdout
    assert not (root / "data/runs/pretrain").exists()


def test_scoring_counts_the_answers_from_the_given_position_on() -> None:
    """The beyond-the-training-length mask, against logits whose predictions are known."""
    targets = torch.full((2, 12), IGNORE)
    targets[:, [2, 6, 9]] = torch.tensor([[3, 4, 5], [6, 7, 1]])  # 6: the first position past
    predicted = targets.clamp(min=0).clone()
    predicted[0, 2] = 0  # wrong inside the training length (6), right past it
    predicted[1, 9] = 0  # right inside, wrong past it

    def model(inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return F.one_hot(predicted, 8).float() * 10, None

    _, correct, answers = scored(model, torch.zeros(2, 12, dtype=torch.long), targets)
    assert correct.tolist() == [2, 2] and answers.tolist() == [3, 3]
    _, correct, answers = scored(model, torch.zeros(2, 12, dtype=torch.long), targets, after=6)
    assert correct.tolist() == [2, 1] and answers.tolist() == [2, 2]
    assert (targets[:, 9] != IGNORE).all()  # the caller's targets are left as they were


def test_the_report_verdicts_follow_the_interval_and_the_guess_levels(tmp_path: Path) -> None:
    """Recall within 0.05 of 1/pairs (a context value at random) is no recall, however far above 1/vocab it lies
    and even where its interval excludes 1/pairs (0.26 [0.255, 0.27] with 4 pairs); 0.40 is partial recall;
    parity is at chance when its interval holds 1/2. A run that met the stopping rule is solved, even where its
    last interval dips below the threshold. Runs that differ only in learning rate show as one row: the best at
    the training length, the other rates beside it."""
    from lmlab.analysis.config import ReportConfig
    from lmlab.analysis.synth import write_report

    def run(task: str, family: str, acc: float, low: float, high: float, **extra: object) -> None:
        folder = tmp_path / "metrics" / task
        folder.mkdir(parents=True, exist_ok=True)
        metrics = {"task": task, "family": family, "width": 64, "seq_len": 64, M.STATE_BYTES: 1024, **extra}
        metrics |= {M.VAL_ACC: acc, "intervals": {M.VAL_ACC: [low, high]}}
        name = f"{family}-64-lr{extra.get('lr')}" if task == "mqar" else f"{family}-lr{extra.get('lr')}"
        (folder / f"{name}.json").write_text(json.dumps(metrics))

    def flat(acc: float) -> dict[str, object]:  # a curve that flattened by the budget's last quarter
        return {"curve": [[1000, acc - 0.01], [2000, acc], [3000, acc]], M.TRAIN_STEPS: 3000}

    solved = {M.STEPS_TO_SOLVE: 2400, M.TRAIN_STEPS: 2700, "curve": [[2400, 0.995], [2700, 0.996]]}
    run("mqar", "transformer", 0.993, 0.9898, 0.996, pairs=4, lr=0.001, **solved)
    run("mqar", "transformer", 0.231, 0.22, 0.24, pairs=4, lr=0.003, **flat(0.231))
    run("mqar", "mamba2", 0.26, 0.255, 0.27, pairs=4, **flat(0.26))
    run("mqar", "minlstm", 0.40, 0.38, 0.42, pairs=4, **flat(0.40))
    rising = {"curve": [[1000, 0.3], [2000, 0.42], [3000, 0.6]], M.TRAIN_STEPS: 3000}  # +0.18 in the last quarter
    run("mqar", "gated_deltanet", 0.6, 0.57, 0.63, pairs=4, **rising)
    run("mqar", "gru", 0.25, 0.24, 0.26, pairs=4, **flat(0.25))
    run("mqar", "rnn", 0.009, 0.006, 0.012, pairs=4)  # made before lmlab recorded its curve
    run("parity", "lstm", 1.0, 1.0, 1.0, lengths=[1], **{M.STEPS_TO_SOLVE: 600, "curve": [[600, 1.0], [900, 1.0]]})
    run("parity", "gru", 0.991, 0.986, 0.995, lengths=[1], **{M.STEPS_TO_SOLVE: 900, "curve": [[900, 0.992]]})
    run("parity", "transformer", 0.51, 0.49, 0.53, lengths=[1], lr=0.003, **flat(0.51))
    run("parity", "transformer", 0.505, 0.49, 0.52, lengths=[1], lr=0.01, **flat(0.505))
    report = write_report(ReportConfig(synth_dir=str(tmp_path / "metrics"), out_dir=str(tmp_path / "out")))
    table = [line.split(" | ") for line in report.read_text().splitlines() if line.startswith("| ")]
    rows = {cells[0] + cells[1]: " | ".join(cells) for cells in table}
    assert rows["| transformer64"].endswith(
        "| 0.001, 2,700 steps; 0.003: 0.231 | 0.993 [0.990, 0.996] | 2,400 | solved |"
    )
    assert rows["| mamba264"].endswith("| > 3,000 | no recall |")
    assert rows["| minlstm64"].endswith("| > 3,000 | partly |")
    assert rows["| gated_deltanet64"].endswith("| > 3,000 | not converged at 3,000 steps |")
    assert rows["| gru64"].endswith("| no recall |") and rows["| rnn64"].endswith(
        "| no recall (convergence not recorded) |"
    )
    assert rows["| gru2"].endswith("| 900 | 0.991 [0.986, 0.995] solved |")  # the stopping rule met at 1x
    assert rows["| lstm2"].endswith("| 600 | 1.000 [1.000, 1.000] solved |") and rows["| transformer2"].endswith(
        "at chance |"
    )
    assert "| 0.003, 3,000 steps; 0.01: 0.505 | > 3,000 | 0.510 [0.490, 0.530] at chance |" in rows["| transformer2"]
    assert "at two validations in a row" in report.read_text()  # the stopping rule, stated
    assert sum(line.startswith("| transformer |") for line in report.read_text().splitlines()) == 2  # a row each

    # a second file of one setting at one rate (a renamed copy): which of them is the run is not the report's guess
    copy = tmp_path / "metrics/parity/transformer-old.json"
    copy.write_text((tmp_path / "metrics/parity/transformer-lr0.01.json").read_text())
    with pytest.raises(LmlabError, match=r"transformer-lr0.01.json and .*transformer-old.json are runs of one setting"):
        write_report(ReportConfig(synth_dir=str(tmp_path / "metrics"), out_dir=str(tmp_path / "out")))


def test_a_synthetic_training_step_reads_nothing_on_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As pretraining's steps (`tests.helpers.host_reads`): the synthetic task validates per length on the
    host, but its training steps read nothing."""
    overrides = ["task=parity", "model=gru", "model.width=16", "task.train_examples=256", "task.val_examples=16"]
    overrides += ["task.seq_len=16", "trainer.max_steps=6", "trainer.val_every=3", "trainer.log_every=100"]
    cfg = composed("synth", [*overrides, "logger=none"])
    with counted(monkeypatch) as reads:
        run_synth(cfg, tmp_path / "run")
    assert reads.steps == 5 and not reads.found, dict(reads.found)


def test_a_run_stops_once_solved_records_the_steps_it_took_and_stays_stopped(tmp_path: Path) -> None:
    """Train to a criterion: val/acc at or above `solved` at two validations in a row stops the run; the steps
    it took are the first of them; the same command again resumes nothing (a solved run stays solved). Here
    `solved=0.01`, which any accuracy meets, so the rule is what is tested, not the model."""
    overrides = ["task=parity", "model=gru", "model.width=16", "task.train_examples=256", "task.val_examples=16"]
    overrides += ["task.seq_len=16", "trainer.max_steps=40", "trainer.val_every=4", "logger=none", "solved=0.01"]
    cfg = composed("synth", overrides)
    metrics = run_synth(cfg, tmp_path / "run")
    assert (metrics[M.TRAIN_STEPS], metrics[M.STEPS_TO_SOLVE], metrics["max_steps"]) == (8, 4, 40)
    assert [step for step, _ in metrics["curve"]] == [4, 8] and metrics["solved"] == 0.01
    again = run_synth(composed("synth", overrides), tmp_path / "run")
    assert (again[M.TRAIN_STEPS], again["curve"]) == (8, metrics["curve"])
    budget = run_synth(composed("synth", [*overrides[:-1], "solved=null", "trainer.max_steps=12"]), tmp_path / "b")
    assert budget[M.TRAIN_STEPS] == 12 and M.STEPS_TO_SOLVE not in budget and len(budget["curve"]) == 3
