"""`lmlab pretrain` through Hydra: config composition, DDP on two CPU processes, and the errors a user sees.

Subprocesses run in a throwaway copy of the project (`copy_project`) with the tiny corpus of
`tests.helpers.tiny_lm` under its data/. Hydra composition is checked in-process (fast); the CLI runs
where the CLI is the point: the DDP launcher, exit codes and messages.
"""

from __future__ import annotations

import csv
import json
import os
import pty
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lmlab.cli.schemas import register_configs, typed
from lmlab.data.lm import StreamWindows
from lmlab.jobs.config import PretrainConfig
from lmlab.models import FAMILIES, build_model
from lmlab.training.config import LOGGERS
from lmlab.training.optim import cooldown_start, lr_factor
from tests.helpers.ddp_probe import JOB, launch
from tests.helpers.project import ROOT, copy_project, env
from tests.helpers.tiny_lm import tiny_overrides, write_corpus

CONF = ROOT / "conf"
Results = dict[str, subprocess.CompletedProcess[str]]
TINY = tiny_overrides(max_steps=10)


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(overrides: list[str]) -> PretrainConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = typed(compose(config_name="pretrain", overrides=overrides))
    assert isinstance(cfg, PretrainConfig)
    return cfg


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("project"))
    write_corpus(project / "data")
    return project


# ----- 10. composition -----
@pytest.mark.parametrize("model", choices("model"))
def test_every_model_trainer_logger_composes(model: str) -> None:
    assert set(choices("model")) == set(FAMILIES)
    assert set(choices("logger")) == set(LOGGERS)
    for trainer in choices("trainer"):
        trainer_yaml = OmegaConf.to_container(OmegaConf.load(CONF / "trainer" / f"{trainer}.yaml"))
        trainer_yaml.pop("defaults", None)  # what the file states beyond the one it builds on
        for logger in choices("logger"):
            cfg = composed([f"model={model}", f"trainer={trainer}", f"logger={logger}"])
            assert cfg.model.family == model
            assert cfg.logger.kind == logger
            assert {k: v for k, v in asdict(cfg.trainer).items() if k in trainer_yaml} == trainer_yaml
    build_model(cfg.model, 100)  # the shipped sizes build


def test_experiment_shakespeare_char_is_nanogpts_cpu_recipe() -> None:
    cfg = composed(["experiment=shakespeare_char"])
    assert cfg.name == "shakespeare_char"
    assert (cfg.data.name, cfg.tokenizer.type) == ("tinyshakespeare", "char")
    m = cfg.model
    assert (m.family, m.layers, m.heads, m.width, m.context) == ("transformer", 4, 4, 128, 64)
    assert (m.embed_dropout, m.dropout, m.output_dropout) == (0.0, 0.0, 0.0)
    assert m.positions == "learned" and m.tie_weights and not m.bias
    assert cfg.batches.batch_size == 12 and cfg.batches.windows == "sampled"
    o = cfg.optim
    assert (o.name, o.lr, o.betas, o.weight_decay, o.schedule) == ("adamw", 1e-3, [0.9, 0.99], 0.1, "cosine")
    assert (o.warmup_steps, o.min_lr, o.decay_steps) == (100, 1e-4, 2000)
    assert (cfg.trainer.max_steps, cfg.trainer.val_every, cfg.trainer.gradient_clip_val) == (2000, 250, 1.0)
    # warmup to 1e-3 at step 100, cosine down to 1e-4 at step 2000
    assert o.lr * lr_factor(100, o, cfg.trainer.max_steps) == pytest.approx(1e-3)
    assert o.lr * lr_factor(2000, o, cfg.trainer.max_steps) == pytest.approx(1e-4)
    assert o.lr * lr_factor(0, o, cfg.trainer.max_steps) < 2e-5


def test_wsd_is_constant_until_its_cooldown_then_falls_to_min_lr_at_any_budget() -> None:
    o = composed(["optim.schedule=wsd", "optim.warmup_steps=10", "optim.cooldown=0.2"]).optim
    for budget in (100, 1000):
        factors = [lr_factor(step, o, budget) for step in range(budget + 1)]
        begin = cooldown_start(o, budget)
        assert begin == budget - budget // 5
        assert factors[10 : begin + 1] == [1.0] * (begin - 9)  # the stable phase: the same for every budget
        assert all(a > b for a, b in zip(factors[begin:], factors[begin + 1 :], strict=False))
        assert o.lr * factors[-1] == pytest.approx(o.min_lr)
    # 1-sqrt: half the fall is in the first quarter of the cooldown
    assert lr_factor(850, o, 1000) == pytest.approx(0.5 * (1 + o.min_lr / o.lr))


@pytest.mark.parametrize("family", ["lstm", "gru", "rnn"])
def test_experiment_wlm_is_the_word_language_model_recipe(family: str) -> None:
    cfg = composed([f"experiment=wlm_{family}"])
    assert cfg.name == f"wlm_{family}"
    assert cfg.data.name == "wikitext2"
    m = cfg.model
    assert (m.family, m.layers, m.width, m.embed_dim, m.tie_weights) == (family, 2, 200, None, True)
    assert (m.embed_dropout, m.dropout, m.output_dropout) == (0.2, 0.2, 0.2)
    assert (cfg.batches.bptt, cfg.batches.batch_size, cfg.batches.restart) == (35, 20, 0)  # state through the epoch
    o = cfg.optim
    assert (o.name, o.lr, o.schedule, o.plateau_factor, o.plateau_patience) == ("sgd", 20.0, "plateau", 0.25, 0)
    assert (o.momentum, o.weight_decay) == (0.0, 0.0)
    assert cfg.trainer.gradient_clip_val == 0.25


@pytest.mark.parametrize("group", ["trainer", "tokenizer", "optim", "logger", "finetune"])
def test_variants_state_only_what_differs(group: str) -> None:
    """A config built on another of its group (LHT style) repeats none of that one's values."""
    for path in sorted((CONF / group).glob("*.yaml")):
        own = OmegaConf.to_container(OmegaConf.load(path))
        for base in [b for b in own.pop("defaults", []) if b != "_self_"]:
            inherited = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{base}.yaml"))
            inherited.pop("defaults", None)
            repeated = [key for key, value in own.items() if inherited.get(key, object()) == value]
            assert not repeated, f"{path.name} repeats {repeated} of {base}.yaml"


def test_command_line_overrides_beat_the_experiment() -> None:
    cfg = composed(["experiment=wlm_lstm", "model.width=650", "trainer=ddp_cpu"])
    assert cfg.model.width == 650 and cfg.model.family == "lstm"
    assert (cfg.trainer.strategy, cfg.trainer.devices) == ("ddp", 2)
    assert cfg.trainer.gradient_clip_val == 0.25  # the experiment's trainer settings still apply on top


# ----- 11 (and the CLI half of 10): one batch of short CLI runs, started together -----
@pytest.fixture(scope="module")
def cli_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def cli(project: Path, cli_tmp: Path) -> Results:
    """Start every short `lmlab pretrain` invocation at once (each pays for importing torch), then collect them."""
    tmp = cli_tmp
    runs = {
        "misspelt": ["model.widht=3"],
        "foreign_key": ["model=gru", "+model.heads=2", "logger=none", f"hydra.run.dir={tmp / 'foreign_key'}"],
        "unknown_model": ["model=nosuch"],
        "no_corpus": [f"paths.data_dir={tmp / 'empty'}", "logger=none", f"hydra.run.dir={tmp / 'no_corpus'}"],
        "bad_family": ["model.family=lstmm", *TINY, "logger=none", f"hydra.run.dir={tmp / 'bad_family'}"],
        "cfg_job": ["experiment=shakespeare_char", "trainer.max_steps=7", "--cfg", "job"],
        "fdr": ["model=transformer", "debug=fdr", f"hydra.run.dir={tmp / 'fdr'}"],
        "max_epochs": ["trainer.max_epochs=3"],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "lmlab", "pretrain", *args],
            cwd=project,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in runs.items()
    }
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def test_progress_is_a_bar_of_steps_on_a_terminal(project: Path, cli_tmp: Path) -> None:
    """On a terminal: a bar of optimizer steps against max_steps with loss and tokens/s, not Lightning's
    `Epoch 0/-2`; the per-validation lines are for pipes (`test_ddp_cpu_...` sees them)."""
    main, child = pty.openpty()
    args = ["model=gru", *TINY, "logger=none", f"hydra.run.dir={cli_tmp / 'terminal'}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmlab", "pretrain", *args],
        cwd=project,
        env={**env(), "COLUMNS": "200"},
        stdout=child,
        stderr=child,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=300) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "pretrain gru" in screen and "10/10" in screen and "steps" in screen, screen[-2000:]
    assert "tokens/s" in screen and "Epoch" not in screen and "v_num" not in screen
    assert "step 10/10:" not in screen  # no log line per validation: the bar says it


def test_cli_cfg_job_prints_the_experiment(cli: Results) -> None:
    result = cli["cfg_job"]
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.name == "shakespeare_char" and cfg.model.family == "transformer"
    assert cfg.trainer.max_steps == 7  # the command line beats the experiment


def test_debug_fdr_is_one_step_and_one_validation_batch_of_the_full_model(cli: Results, cli_tmp: Path) -> None:
    result = cli["fdr"]
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((cli_tmp / "fdr" / "metrics.json").read_text())
    assert metrics["train/steps"] == 1 and metrics["model/params"] > 100_000  # the pipeline's transformer, not tiny
    assert not (cli_tmp / "fdr" / "wandb").exists()


def test_an_lht_habit_without_a_meaning_here_says_what_to_use(cli: Results) -> None:
    result = cli["max_epochs"]
    assert result.returncode != 0
    assert "trainer.max_epochs" in result.stderr and "trainer.max_steps" in result.stderr, result.stderr[-2000:]


def test_misspelt_key_fails_naming_it(cli: Results) -> None:
    result = cli["misspelt"]
    assert result.returncode != 0
    assert "widht" in result.stderr and "model" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_key_of_another_family_is_an_error_naming_the_family_keys(cli: Results) -> None:
    result = cli["foreign_key"]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "model.heads is not a key of model family 'gru'; its keys are family, layers, width" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_model_lists_the_families(cli: Results) -> None:
    result = cli["unknown_model"]
    assert result.returncode != 0
    assert "model/nosuch" in result.stderr
    for family in FAMILIES:
        assert family in result.stderr


def test_unknown_family_value_is_an_error_listing_the_families(cli: Results) -> None:
    result = cli["bad_family"]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "lmlab pretrain: error: model.family='lstmm'" in result.stderr
    assert all(family in result.stderr.split("error:")[1] for family in FAMILIES)
    assert "Traceback" not in result.stderr


def test_missing_corpus_names_the_tokenize_stage(cli: Results, cli_tmp: Path) -> None:
    result = cli["no_corpus"]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "lmlab pretrain: error:" in result.stderr
    message = result.stderr.split("lmlab pretrain: error:")[1]
    assert "tokenize" in message and "sotu-bpe8000" in message
    assert "Traceback" not in result.stderr
    run_dir = cli_tmp / "no_corpus"
    assert not (run_dir / "run.json").exists() and not (run_dir / "checkpoints").exists()


# ----- 9. DDP -----
def test_ddp_cpu_trains_both_ranks_into_one_run_folder(project: Path) -> None:
    """trainer=ddp_cpu: Lightning re-launches the command for rank 1; Hydra must not give it a folder of its own."""
    before = {p.name for p in project.iterdir()}
    result = subprocess.run(
        [sys.executable, "-m", "lmlab", "pretrain", "model=gru", "trainer=ddp_cpu", *TINY, "logger=none"],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # piped: one progress line per validation, from rank zero only (Hydra logs to stdout)
    lines = [line.split("pretrain gru ")[1] for line in result.stdout.splitlines() if "pretrain gru step" in line]
    assert [line[:10] for line in lines] == ["step 5/10:", "step 10/10"], result.stdout[-3000:]
    assert "val loss" in lines[0] and "tokens/s" in lines[0] and "left" in lines[0]
    assert {p.name for p in project.iterdir()} - before <= {"outputs"}, "files outside outputs/"
    made = [p for p in (project / "outputs").rglob("*") if p.is_dir() and p.parent.name == "gru"]
    assert len(made) == 1, f"one run folder expected, got {made}"
    assert sorted(p.relative_to(project) for p in (project / "outputs").iterdir()) == [Path("outputs/pretrain")]
    assert [p.name for p in (project / "outputs" / "pretrain").iterdir()] == ["gru"]
    run_dir = made[0]
    assert len(list(run_dir.rglob(".hydra"))) == 1

    metrics = json.loads((run_dir / "metrics.json").read_text())
    world, batch, bptt = 2, 4, 8
    assert metrics["train/steps"] == 10
    assert metrics["train/tokens"] == 10 * world * batch * bptt
    with (run_dir / "val_curve.csv").open(newline="") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [5, 10]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 10 and last["lmlab"]["world_size"] == world
    state = last["lmlab"]["tbptt_state"]  # the GRU's h of every rank's streams: [world, batch, layers, width]
    assert isinstance(state, torch.Tensor) and tuple(state.shape) == (world, batch, 2, 32)
    assert not torch.equal(state[0], state[1]), "both ranks carried the same streams"


def test_torchrun_style_ranks_share_one_folder_identical_weights_and_disjoint_streams(tmp_path: Path) -> None:
    """Two ranks started from outside (torchrun's variables): one run folder, equal weights, own streams each."""
    project = copy_project(tmp_path / "project")
    corpus = write_corpus(project / "data")
    out = tmp_path / "out"
    out.mkdir()
    launch(
        project,
        ["model=lstm", "trainer=ddp_cpu", *TINY, "trainer.max_steps=6", "trainer.val_every=3", "logger=none"],
        out,
    )

    assert [p.name for p in (project / "outputs" / "pretrain").iterdir()] == [JOB], "one run folder for both ranks"
    run_dir = project / "outputs" / "pretrain" / JOB
    assert len(list(run_dir.rglob(".hydra"))) == 1
    world, batch, bptt = 2, 4, 8
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/steps"] == 6 and metrics["train/tokens"] == 6 * world * batch * bptt

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [world, world]
    assert [r["tokens_seen"] for r in ranks] == [metrics["train/tokens"]] * 2
    batches = [rank["batches"] for rank in ranks]
    assert [b["step"] for b in batches[0]] == [b["step"] for b in batches[1]] == list(range(6))
    for zero, one in zip(*batches, strict=True):
        assert zero["weights"] == one["weights"], f"ranks diverged before step {zero['step']}"
        assert zero["inputs"] != one["inputs"]
    assert batches[0][0]["weights"] != batches[0][-1]["weights"], "the weights never changed"

    # rank r trains on streams r*B .. r*B+B-1 of the train split, window after window, in order
    tokens = np.fromfile(corpus / "train.bin", dtype=np.uint16)
    stream_len = len(tokens) // (world * batch)
    for rank, seen in enumerate(batches):
        first = [tokens[(rank * batch + i) * stream_len :][:bptt].tolist() for i in range(batch)]
        assert seen[0]["inputs"] == first, f"rank {rank} does not start on its own streams"
        for k, b in enumerate(seen):
            expected = StreamWindows(tokens, batch, bptt, rank, world).batch(k)[0].tolist()
            assert b["inputs"] == expected, f"rank {rank} micro-batch {k}"


def test_continue_from_names_a_missing_checkpoint_and_refuses_what_it_cannot_decide(project: Path) -> None:
    """`continue_from` (the scaling study's next budget): a missing checkpoint is named as continue_from's, and
    the settings where it would be ambiguous (another resume, several ranks) are refused; nothing is written."""
    for extra, said in (
        ([], "continue_from='nowhere.ckpt': no such checkpoint"),
        (["resume=never"], "continue_from='nowhere.ckpt' applies with resume=auto"),
        (["trainer=ddp_cpu"], "each rank would decide alone"),
    ):
        run_dir = project / "outputs" / "continue_from"
        result = subprocess.run(
            [sys.executable, "-m", "lmlab", "pretrain", "model=gru", *TINY, "logger=none", "continue_from=nowhere.ckpt"]
            + [f"hydra.run.dir={run_dir}", *extra],
            cwd=project,
            env=env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 2 and said in result.stderr, result.stderr[-3000:]
        assert not (run_dir / "run.json").exists() and not (run_dir / "checkpoints").exists()
