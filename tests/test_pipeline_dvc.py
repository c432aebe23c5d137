"""`dvc repro` of the pipeline on a tiny local dataset and tiny models, in a temporary copy of the project."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmlab.analysis.comparison import PLOTS
from tests.helpers.pipeline import edit_yaml, shrink_training, write_tiny_datasets
from tests.helpers.project import ROOT, copy_project, dvc, env

PIPELINE = yaml.safe_load((ROOT / "conf" / "dvc" / "pipeline.yaml").read_text())
(SEED,) = PIPELINE["seeds"]  # what `make run` runs: one seed
# Two of make run's families, one recurrent and the Transformer: the stages are a matrix over families, and each
# family's own code is tested in-process (tests/test_family_contract.py); the four others cost 2 minutes here.
FAMILIES = ["gru", "transformer"]
assert set(FAMILIES) <= set(PIPELINE["families"])
DATA_STAGES = ["download_corpus", "download_task", "split_corpus", "split_task", "tokenize"]
PRETRAIN_STAGES = [f"pretrain@{family}-{SEED}" for family in FAMILIES]
LATER_STAGES = [f"{stage}@{family}-{SEED}" for stage in ("finetune", "evaluate") for family in FAMILIES] + ["report"]
RUNS, METRICS = f"data/runs/seed{SEED}", f"metrics/seed{SEED}"  # each seed's runs and figures


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = copy_project(tmp_path / "project")
    write_tiny_datasets(root, tmp_path)
    shrink_training(root)
    write_params(root, vocab_size=120)
    return root


EXP_VIEW = ["--drop", ".*", "--keep", r"Experiment$|tokenizer\.vocab_size|.*\.(bpb|acc)$"]  # README's command


def write_params(root: Path, vocab_size: int) -> None:
    params = {
        **yaml.safe_load((ROOT / "params.yaml").read_text()),  # budget and the rest as make run's
        "data": "tiny",
        "task_data": "tiny_reviews",
        "tokenizer": {"type": "bpe", "vocab_size": vocab_size},
        "families": list(FAMILIES),
        "seeds": [SEED],
        "scale": "tiny",
        "trainer": "cpu",
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def repro(root: Path, *targets: str) -> list[str]:
    """The stages `dvc repro` ran; its console holds what each stage does, none of W&B's banners and summary
    tables or Lightning's device lines, and announces fine-tuning's LM adaptation as a phase of its own."""
    result = dvc("repro", *targets, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    console = (result.stdout + result.stderr).splitlines()
    noise = [line for line in console if line.startswith("wandb:") or "GPU available" in line or "USDT" in line]
    assert not noise, noise[:10]
    ran = re.findall(r"Running stage '([\w@-]+)'", result.stdout)
    for family in (stage.removeprefix("pretrain@").rsplit("-", 1)[0] for stage in ran if stage.startswith("pretrain@")):
        assert any(re.search(rf"pretrain {family} step \d+/\d+: .*val loss", line) for line in console), family
    if any(stage.startswith("finetune@") for stage in ran):
        assert any("LM adaptation first:" in line for line in console), console[-40:]
    return ran


def make_run(root: Path) -> list[str]:
    """What `make run` does, `lmlab fanout dvc.yaml -j 2`; the stages it ran. Each stage's log (its console under
    `dvc repro`) holds what `repro` checks: no W&B or Lightning noise, progress lines, the LM adaptation phase."""
    result = subprocess.run(
        [sys.executable, "-m", "lmlab", "fanout", "dvc.yaml", "-j", "2"],
        cwd=root,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    ran = re.findall(r"^done +([\w@-]+) in", result.stderr, re.M)
    logs = {stage: (root / ".dvc/tmp/fanout" / f"{stage}.log").read_text() for stage in ran}
    for stage, log in logs.items():
        noise = [
            line for line in log.splitlines() if line.startswith("wandb:") or "GPU available" in line or "USDT" in line
        ]
        assert not noise, (stage, noise[:10])
        family = stage.split("@")[-1].rsplit("-", 1)[0]
        if stage.startswith("pretrain@"):
            assert re.search(rf"pretrain {family} step \d+/\d+: .*val loss", log), log[-2000:]
        if stage.startswith("finetune@"):
            assert "LM adaptation first:" in log, log[-2000:]
    return ran


def test_make_run_builds_every_stage_then_repro_reruns_only_what_changed(project: Path) -> None:
    """The main job, `make run`, on a tiny configuration: from the download to the comparison report, recorded
    as `dvc repro` would have; then edits of the code, a family's config, a split param and the tokenizer rerun
    only the stages they feed."""
    assert sorted(make_run(project)) == sorted(DATA_STAGES + PRETRAIN_STAGES + LATER_STAGES)

    out = project / "data/tokenized/tiny-bpe120"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["vocab_size"] == 120 and meta["dtype"] == "uint16"
    split_meta = json.loads((project / "data/splits/tiny/meta.json").read_text())
    assert sum(s["documents"] for s in split_meta["splits"].values()) == 40
    for split in ("train", "val", "test"):
        tokens = np.memmap(out / f"{split}.bin", dtype=meta["dtype"], mode="r")
        assert len(tokens) == meta["splits"][split]["tokens"] > 0
        assert int((tokens == meta["special_ids"]["eod"]).sum()) == split_meta["splits"][split]["documents"]
        labels = np.load(out / "task" / f"{split}.labels.npy")
        assert len(labels) == meta["task"]["splits"][split]["documents"] > 0
    assert (project / "data/raw/tiny/source.json").exists()
    for family in FAMILIES:
        metrics = json.loads((project / f"{METRICS}/pretrain/{family}.json").read_text())
        assert metrics["train/steps"] == 4 and metrics["val/loss"] > 0
        assert metrics["train/tokens"] == 4 * 4 * (8 if family != "transformer" else 64)  # debug=tiny: batches 4 x 8
        run = project / f"{RUNS}/pretrain/{family}"
        assert (run / "checkpoints/last.ckpt").is_file() and (run / ".hydra/config.yaml").is_file()
        assert list(run.glob("wandb/offline-run-*/run-*.wandb"))  # the default logger: W&B, offline
    for verb in ("pretrain", "finetune", "evaluate", "report"):  # each stage writes into its own folders
        assert not (project / "outputs" / verb).exists()
    for family in FAMILIES:
        metrics = json.loads((project / f"{METRICS}/{family}.json").read_text())
        for key in ("test/ppl", "test/bpb", "test/acc", "test/f1", "scratch/test/acc", "scratch/test/f1"):
            assert isinstance(metrics[key], float), (family, key)
        assert (
            metrics["model/params"]
            == json.loads((project / f"{METRICS}/pretrain/{family}.json").read_text())["model/params"]
        )
        assert (project / f"{RUNS}/finetune/{family}-scratch/checkpoints/best.ckpt").is_file()
    report = (project / "reports/comparison.md").read_text()
    assert all(f"| {family} |" in report for family in FAMILIES)
    assert sorted(p.name for p in (project / "reports").glob("*.png")) == sorted(PLOTS)
    plots = dvc("plots", "show", "--json", cwd=project)
    assert plots.returncode == 0, plots.stderr
    shown = json.loads(plots.stdout)["data"]
    assert len(shown) == 5  # the top-level plots; each draws one line per family, none named in dvc.yaml
    for title, (plot,) in shown.items():
        assert {row["family"] for row in plot["content"]["data"]["values"]} == set(FAMILIES), title

    assert repro(project) == []  # nothing changed since fanout recorded every stage: a no-op

    # the README's view of the experiments: each family's test bpb and accuracy, a row per experiment, in 200
    # columns with nothing collapsed (plain `dvc exp show` has a column for every key of every config file)
    identity = ["-c", "user.name=lmlab tests", "-c", "user.email=tests@lmlab.invalid"]
    subprocess.run(["git", *identity, "commit", "--allow-empty", "-qm", "base"], cwd=project, check=True)
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "exp", "show", "--no-pager", *EXP_VIEW],
        cwd=project,
        env={**env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout and max(map(len, shown.stdout.splitlines())) <= 200, shown.stdout
    assert all(f"{family}.bpb" in shown.stdout and f"{family}.acc" in shown.stdout for family in FAMILIES)
    assert " ".join(EXP_VIEW) in (ROOT / "README.md").read_text().replace("'", "")

    # `wandb sync` marks each uploaded run with a file beside its log, inside the stage outputs: .dvcignore
    # keeps the pipeline up to date
    for log in project.glob(f"{RUNS}/*/*/wandb/offline-run-*/run-*.wandb"):
        log.with_name(log.name + ".synced").write_text("")
    status = dvc("status", "--json", cwd=project)
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout + status.stderr

    # an edit to a model file makes every stage that runs models out of date, and nothing else
    model_file = project / "src/lmlab/models/base.py"
    original = model_file.read_text()
    model_file.write_text(original + "\n# edited\n")
    status = dvc("status", "--json", cwd=project)
    assert status.returncode == 0, status.stderr
    assert sorted(json.loads(status.stdout)) == sorted(PRETRAIN_STAGES + LATER_STAGES[:-1])
    model_file.write_text(original)

    # one family's config: only its stage; the pipeline replaces the old run (keep_replaced=false: DVC's cache
    # holds it) instead of moving it aside as a run by hand does
    edit_yaml(project / "conf/model/gru.yaml", output_dropout=0.2)
    gru = f"pretrain@gru-{SEED}"
    assert repro(project, *PRETRAIN_STAGES) == [gru]
    config = yaml.safe_load((project / f"{RUNS}/pretrain/gru/.hydra/config.yaml").read_text())
    assert config["model"]["output_dropout"] == 0.2 and config["trainer"]["max_steps"] == 4
    assert not list(project.glob(f"{RUNS}/pretrain/gru.*"))

    # a split param: the split, the tokens and the pretraining runs on them (one of them, to save the time)
    config = project / "conf/data/tiny.yaml"
    config.write_text(config.read_text().replace("seed: 7", "seed: 8"))
    assert sorted(repro(project, gru)) == sorted(["split_corpus", "tokenize", gru])
    assert sorted(json.loads(dvc("status", "--json", *PRETRAIN_STAGES, cwd=project).stdout)) == sorted(
        set(PRETRAIN_STAGES) - {gru}
    )

    write_params(project, vocab_size=140)
    assert sorted(repro(project, gru)) == sorted(["tokenize", gru])
    assert json.loads((project / "data/tokenized/tiny-bpe140/meta.json").read_text())["vocab_size"] == 140
    assert json.loads((project / f"{METRICS}/pretrain/gru.json").read_text())["model/embedding_params"] == 140 * 32

    # a DVC remote (docs: README, "Sharing data and checkpoints"): push, lose the local copies, pull them back
    remote = project.parent / "remote"
    for args in (("remote", "add", "-d", "shared", str(remote)), ("push",)):
        result = dvc(*args, cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr
    last = project / f"{RUNS}/pretrain/gru/checkpoints/last.ckpt"
    before = last.read_bytes()
    shutil.rmtree(project / ".dvc/cache")
    shutil.rmtree(project / "data/runs")
    shutil.rmtree(project / "data/tokenized")
    pulled = dvc("pull", cwd=project)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert last.read_bytes() == before
    status = dvc("status", "--with-deps", "--json", gru, cwd=project)  # the stage last reproduced
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout + status.stderr
