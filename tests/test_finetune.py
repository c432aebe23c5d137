"""Fine-tuning: the classifier learns, pretrained weights arrive unchanged, ULMFiT options do what they say,
and bad checkpoints or label sets are clear errors; then `evaluate` writes the agreed metric keys."""

from __future__ import annotations

import csv
import errno
import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lmlab.analysis.evaluations import read_evaluation
from lmlab.analysis.examples import Examples
from lmlab.core import metrics as M
from lmlab.core.errors import LmlabError
from lmlab.data.config import TokenizerConfig
from lmlab.data.corpus import SPECIAL_IDS, Corpus
from lmlab.data.labeled import LabeledSet
from lmlab.data.split import split_dataset
from lmlab.data.tokenize import tokenize
from lmlab.jobs.config import EvaluateConfig
from lmlab.jobs.evaluate import evaluate
from lmlab.jobs.finetune import class_weights, finetune, load_pretrained
from lmlab.jobs.pretrain import pretrain
from lmlab.models import FAMILIES, build_model
from lmlab.models.classifier import Classifier, pool
from lmlab.tasks.classification import FinetuneTask
from lmlab.training.checkpoints import load_classifier, load_language_model
from lmlab.training.config import LoggerConfig
from lmlab.training.finite import NonFiniteLoss
from tests.helpers.corpora import make_docs, own_splits_corpus, paths_for, sentiment_dataset
from tests.helpers.host_reads import counted
from tests.helpers.project import ROOT, copy_project, env, wandb_dirs
from tests.helpers.tiny_lm import tiny_config, tiny_finetune_config, write_corpus
from tests.helpers.wandb_offline import wandb_records
from tests.test_pretrain import Crash, assert_same, crash_at

PIPELINE = yaml.safe_load((ROOT / "conf" / "dvc" / "pipeline.yaml").read_text())
TOKENIZER = TokenizerConfig(type="bpe", vocab_size=320, byte_fallback=True, num_threads=1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus and a separable labeled set through the real split and tokenize stages, and tiny pretrained
    GRU and transformer checkpoints (``<root>/pretrain/<family>``)."""
    root = tmp_path_factory.mktemp("finetune")
    paths = paths_for(root)
    corpus = own_splits_corpus(
        paths, "sotu", {"train": make_docs(120, seed=1), "val": make_docs(10, seed=2), "test": make_docs(10, seed=3)}
    )
    reviews = sentiment_dataset(paths, "reviews", {"train": 400, "val": 80, "test": 80})
    split_dataset(corpus, paths)
    split_dataset(reviews, paths)
    tokenize(corpus, reviews, TOKENIZER, paths)
    for family in ("gru", "transformer"):
        cfg = tiny_config(Path(paths.data_dir), family, max_steps=20, val_every=10)
        pretrain(replace(cfg, tokenizer=TOKENIZER), root / "pretrain" / family)
    return root


def config(lab: Path, family: str = "gru", **finetune: object):  # noqa: ANN201 - a FinetuneConfig
    checkpoint = finetune.pop("checkpoint", lab / "pretrain" / family / "checkpoints/best.ckpt")
    cfg = tiny_finetune_config(lab / "data", family, checkpoint, **finetune)
    return replace(cfg, tokenizer=TOKENIZER)


def val_rows(run: Path) -> list[dict[str, float]]:
    with (run / "val_curve.csv").open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def corpus(lab: Path) -> Corpus:
    return Corpus.open(lab / "data" / "tokenized" / f"sotu-{TOKENIZER.name}")


def test_finetuning_beats_chance_and_records_the_agreed_metrics(lab: Path, tmp_path: Path) -> None:
    metrics = finetune(config(lab), tmp_path / "run")
    counts = np.bincount(LabeledSet.open(corpus(lab)).split("val").labels)
    chance = counts.max() / counts.sum()
    assert metrics["best/finetune/val/f1"] >= 0.8 and metrics["finetune/val/acc"] >= chance + 0.1, metrics
    for key in ("finetune/val/loss", "finetune/val/precision/positive", "finetune/val/recall/negative"):
        assert key in metrics
    assert sum(v for k, v in metrics.items() if k.startswith("finetune/val/confusion/")) == counts.sum()
    assert metrics["finetune/val/confusion/positive/positive"] > metrics["finetune/val/confusion/positive/negative"]
    assert (tmp_path / "run/checkpoints/best.ckpt").is_file()
    curve = (tmp_path / "run/val_curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,finetune/val/loss,finetune/val/acc") and len(curve) == 1 + 3
    loaded = load_classifier(tmp_path / "run/checkpoints/best.ckpt")
    assert loaded.classes == ["negative", "positive"] and loaded.max_tokens == 32
    # the kept checkpoint is the validation with the highest macro F1 (the first of any tie), not accuracy's
    rows = val_rows(tmp_path / "run")
    best = max(rows, key=lambda row: (row["finetune/val/f1"], -row["step"]))
    assert loaded.step == best["step"] and metrics["best/finetune/val/f1"] == pytest.approx(best["finetune/val/f1"])


def test_pretrained_weights_arrive_unchanged_and_a_frozen_backbone_stays_so(lab: Path, tmp_path: Path) -> None:
    cfg = config(lab, freeze_backbone=True)
    checkpoint = Path(cfg.finetune.checkpoint)
    pretrained = load_language_model(checkpoint).model.state_dict()
    fresh = build_model(cfg.model, corpus(lab).vocab_size)
    assert not all(torch.equal(v, pretrained[k]) for k, v in fresh.state_dict().items())
    load_pretrained(fresh, checkpoint, cfg, corpus(lab))
    assert all(torch.equal(v, pretrained[k]) for k, v in fresh.state_dict().items())

    finetune(replace(cfg, trainer=replace(cfg.trainer, max_steps=10, val_every=10)), tmp_path / "run")
    trained = load_classifier(tmp_path / "run/checkpoints/last.ckpt").model
    assert all(torch.equal(v, pretrained[k]) for k, v in trained.backbone.state_dict().items())


def test_from_scratch_trains_the_same_architecture_from_random_weights(lab: Path, tmp_path: Path) -> None:
    cfg = config(lab, from_scratch=True, checkpoint="no/such.ckpt")  # the baseline never reads a checkpoint
    metrics = finetune(replace(cfg, trainer=replace(cfg.trainer, max_steps=10, val_every=10)), tmp_path / "run")
    assert metrics["finetune/from_scratch"] is True
    assert metrics["model/params"] == load_language_model(lab / "pretrain/gru/checkpoints/best.ckpt").model.num_params
    record = json.loads((tmp_path / "run/run.json").read_text())
    assert record["identity"]["pretrained"] is None


def test_discriminative_learning_rates_and_gradual_unfreezing(lab: Path) -> None:
    cfg = config(lab, lr_decay=2.0, unfreeze_every=10)
    backbone = build_model(cfg.model, corpus(lab).vocab_size)
    model = Classifier(backbone, 2, "concat", 0, 0.0)
    groups = model.layer_groups()  # embedding, 2 recurrent layers, head
    assert len(groups) == 4
    task = FinetuneTask(model, ["a", "b"], cfg.finetune, replace(cfg.optim, warmup_steps=0), 100, 10, None, {})
    optimizer = task.configure_optimizers()["lr_scheduler"]["scheduler"]
    owner = {id(p): g for g, params in enumerate(groups) for p in params}

    def lrs(scheduler: torch.optim.lr_scheduler.LambdaLR) -> dict[int, float]:
        return {owner[id(group["params"][0])]: group["lr"] for group in scheduler.optimizer.param_groups}

    assert lrs(optimizer) == {0: 0.0, 1: 0.0, 2: 0.0, 3: pytest.approx(cfg.optim.lr)}
    for _ in range(10):
        optimizer.optimizer.step()
        optimizer.step()
    at10 = lrs(optimizer)
    assert at10[0] == at10[1] == 0.0 and at10[2] > 0 and at10[2] == pytest.approx(at10[3] / 2.0)
    for _ in range(20):
        optimizer.optimizer.step()
        optimizer.step()
    at30 = lrs(optimizer)
    assert [at30[g] for g in range(4)] == pytest.approx([at30[3] / 8, at30[3] / 4, at30[3] / 2, at30[3]])


def test_fine_tuning_builds_the_configured_optimizer(lab: Path) -> None:
    """One builder for every task: optim=sgd trains with SGD (layer groups and their lr scales kept)."""
    cfg = config(lab, lr_decay=2.0)
    model = Classifier(build_model(cfg.model, corpus(lab).vocab_size), 2, "concat", 0, 0.0)
    sgd = replace(cfg.optim, name="sgd", momentum=0.9, schedule="constant", warmup_steps=0)
    optimizer = FinetuneTask(model, ["a", "b"], cfg.finetune, sgd, 100, 10, None, {}).configure_optimizers()
    assert isinstance(optimizer["optimizer"], torch.optim.SGD)
    lrs = sorted({group["lr"] for group in optimizer["optimizer"].param_groups})
    assert lrs == pytest.approx([sgd.lr / 8, sgd.lr / 4, sgd.lr / 2, sgd.lr])


def test_a_schedule_the_task_cannot_honour_is_an_error(lab: Path) -> None:
    cfg = config(lab, unfreeze_every=10)
    model = Classifier(build_model(cfg.model, corpus(lab).vocab_size), 2, "concat", 0, 0.0)
    plateau = replace(cfg.optim, schedule="plateau")
    with pytest.raises(LmlabError, match=r"optim.schedule=plateau cannot hold layer groups frozen.*unfreeze_every"):
        FinetuneTask(model, ["a", "b"], cfg.finetune, plateau, 100, 10, None, {}).configure_optimizers()
    with pytest.raises(LmlabError, match="optim.name='adam': must be one of adamw, sgd"):
        finetune(replace(config(lab), optim=replace(cfg.optim, name="adam")), lab / "never")
    assert not (lab / "never").exists()  # refused before the run folder was touched


def test_a_plateau_schedule_lowers_the_rate_on_the_fine_tuning_loss(lab: Path, tmp_path: Path) -> None:
    cfg = config(lab)
    cfg.optim = replace(cfg.optim, schedule="plateau", warmup_steps=0, plateau_patience=0, plateau_factor=0.5)
    finetune(cfg, tmp_path / "run")
    saved = torch.load(tmp_path / "run/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    plateau = saved["lr_schedulers"][0]
    assert "num_bad_epochs" in plateau and plateau["mode"] == "min"  # ReduceLROnPlateau, monitoring
    losses = [row["finetune/val/loss"] for row in val_rows(tmp_path / "run")]
    assert min(abs(plateau["best"] - loss) for loss in losses) < 1e-6  # it watched the fine-tuning loss


def test_pooling_reads_only_real_tokens() -> None:
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [-5.0], [4.0]]])
    lengths = torch.tensor([2, 3])
    assert pool(hidden, lengths, "last").flatten().tolist() == [3.0, 4.0]
    assert pool(hidden, lengths, "mean").flatten().tolist() == [2.0, pytest.approx(1 / 3)]
    assert pool(hidden, lengths, "max").flatten().tolist() == [3.0, 4.0]
    assert pool(hidden, lengths, "concat").shape == (2, 3)


def test_documents_are_framed_by_eod_and_right_padded(lab: Path) -> None:
    split = LabeledSet.open(corpus(lab)).split("train")
    tokens, lengths, labels = split.batch(np.array([0, 1]), max_tokens=8)
    for row, index in enumerate([0, 1]):
        doc = split.document(index)[:6].tolist()
        assert tokens[row, : lengths[row]].tolist() == [SPECIAL_IDS["eod"], *doc, SPECIAL_IDS["eod"]]
        assert (tokens[row, lengths[row] :] == SPECIAL_IDS["pad"]).all()
    assert labels.tolist() == split.labels[[0, 1]].tolist()


def test_class_weights(lab: Path) -> None:
    train = LabeledSet.open(corpus(lab)).split("train")
    counts = torch.bincount(torch.from_numpy(train.labels), minlength=2).float()
    balanced = class_weights("balanced", ["n", "p"], train)
    assert torch.allclose(balanced * counts, torch.full((2,), len(train) / 2))
    assert class_weights([1, 3.5], ["n", "p"], train).tolist() == [1.0, 3.5]
    assert class_weights(None, ["n", "p"], train) is None
    with pytest.raises(LmlabError, match=r"finetune.class_weights=\[1\].*balanced.*2 numbers"):
        class_weights([1], ["n", "p"], train)


def test_lm_adaptation_trains_the_backbone_on_the_labeled_text_first(
    lab: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(lab, adapt_steps=6, freeze_backbone=True)
    with caplog.at_level("INFO"):
        metrics = finetune(replace(cfg, trainer=replace(cfg.trainer, max_steps=4, val_every=4)), tmp_path / "run")
    assert metrics["adapt/val/loss"] > 0
    # its progress line is its own phase's, without a bpb (the adaptation corpus keeps no byte counts)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("adapt gru step 6/6")]
    assert "val loss" in line and "bpb" not in line
    assert (tmp_path / "run/adapt/checkpoints/last.ckpt").is_file()
    pretrained = load_language_model(Path(cfg.finetune.checkpoint)).model.state_dict()
    adapted = load_classifier(tmp_path / "run/checkpoints/last.ckpt").model.backbone.state_dict()
    assert not all(torch.equal(v, pretrained[k]) for k, v in adapted.items())


def test_a_checkpoint_of_another_vocabulary_is_a_clear_error(lab: Path, tmp_path: Path) -> None:
    other = tiny_config(tmp_path / "other-data", "gru", max_steps=2, val_every=2)
    write_corpus(tmp_path / "other-data", vocab_size=32)
    pretrain(other, tmp_path / "other")
    cfg = config(lab)
    cfg.finetune.checkpoint = str(tmp_path / "other/checkpoints/last.ckpt")
    with pytest.raises(LmlabError, match=r"\(vocabulary 32\).*\(vocabulary 320\)"):
        finetune(cfg, tmp_path / "run")


def test_an_architecture_mismatch_names_the_keys(lab: Path, tmp_path: Path) -> None:
    cfg = config(lab)
    cfg.model.width = 48
    with pytest.raises(LmlabError, match=r"model.width is 48 here, 32 in the checkpoint"):
        finetune(cfg, tmp_path / "run")


@pytest.mark.parametrize(
    ("run", "command"),
    [
        ("data/runs/seed7/pretrain/gru", "`dvc repro pretrain@gru-7`"),
        ("data/runs/transfer/seed7/pretrain/gru-300", "`dvc repro transfer/dvc.yaml:pretrain@gru-300-7`"),
        ("outputs/pretrain/gru", "`lmlab pretrain`"),
        ("elsewhere/seed7/pretrain/gru", "`lmlab pretrain`"),  # a seed folder outside a pipeline's runs
    ],
)
def test_a_missing_checkpoint_names_the_stage_to_run(lab: Path, tmp_path: Path, run: str, command: str) -> None:
    cfg = config(lab, checkpoint=str(tmp_path / run / "checkpoints/best.ckpt"))
    with pytest.raises(LmlabError, match=re.escape(f"train it first ({command})")):
        finetune(cfg, tmp_path / "run")


@pytest.mark.parametrize(
    ("run", "command"),
    [
        ("data/runs/seed3/finetune/gru-scratch", "`dvc repro finetune@gru-3`"),
        ("data/runs/transfer/seed3/finetune/gru-scratch", "`dvc repro transfer/dvc.yaml:scratch@gru-3`"),
        ("data/runs/transfer/seed3/finetune/gru-30", "`dvc repro transfer/dvc.yaml:finetune@gru-30-3`"),
    ],
)
def test_a_missing_classifier_names_the_stage_to_run(tmp_path: Path, run: str, command: str) -> None:
    with pytest.raises(LmlabError, match=re.escape(f"train it first ({command})")):
        load_classifier(tmp_path / run / "checkpoints/best.ckpt")


def test_a_labeled_set_other_than_the_tokenized_one_is_a_clear_error(lab: Path, tmp_path: Path) -> None:
    cfg = config(lab)
    cfg.task_data.name = "imdb"
    with pytest.raises(LmlabError, match=r"holds the labeled set 'reviews', not task_data='imdb'"):
        finetune(cfg, tmp_path / "run")


# ----- evaluate -----


@pytest.fixture(scope="module")
def finetuned(lab: Path) -> Path:
    for name, scratch in (("gru", False), ("gru-scratch", True)):
        cfg = config(lab, from_scratch=scratch)
        finetune(replace(cfg, trainer=replace(cfg.trainer, max_steps=40, val_every=20)), lab / "finetune" / name)
    return lab


def evaluate_config(lab: Path, tmp_path: Path, family: str = "gru") -> EvaluateConfig:
    return EvaluateConfig(
        data=config(lab).data,
        tokenizer=TOKENIZER,
        paths=paths_for(lab),
        family=family,
        pretrain_run=str(lab / "pretrain" / family),
        finetune_run=str(lab / "finetune" / family),
        scratch_run=str(lab / "finetune" / f"{family}-scratch"),
        batch_size=2,
        window=16,
        speed_tokens=256,
        generate_tokens=8,
        threads=1,
        out=str(tmp_path / f"metrics/{family}.json"),
        curves_dir=str(tmp_path / f"metrics/curves/{family}"),
        sample_file=str(tmp_path / f"eval/{family}/sample.txt"),
        examples_file=str(tmp_path / f"eval/{family}/examples.npz"),
        setting_file=str(tmp_path / f"eval/{family}/setting.json"),
        wandb_dir=str(tmp_path / f"eval/{family}"),
    )


AGREED = (
    "test/ppl",
    "test/bpb",
    "test/acc",
    "test/f1",
    "scratch/test/acc",
    "scratch/test/f1",
    "model/params",
    "model/non_embedding_params",
    "train/tokens_per_sec",
    "train/wall_seconds",
)


def test_evaluate_writes_the_agreed_keys_curves_and_a_sample(
    finetuned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = evaluate_config(finetuned, tmp_path)
    cfg.logger, cfg.name = LoggerConfig(kind="wandb"), "tiny-experiment"
    metrics = evaluate(cfg)
    # the test figures reach W&B as an evaluate run, linked to the runs it evaluated
    (log,) = (tmp_path / "eval" / "gru" / "wandb").glob("offline-run-*/run-*.wandb")
    summary, records = wandb_records(log)
    run = next(r["run"] for r in records if r["type"] == "run")
    seed = json.loads((Path(cfg.pretrain_run) / "run.json").read_text())["identity"]["batches"]["seed"]
    expected = (f"evaluate-gru-s{seed}", "evaluate", "tiny-experiment")  # the seed of the runs it evaluated
    assert (run["display_name"], run["job_type"], run["run_group"]) == expected
    assert summary["summary"]["test/ppl"] == pytest.approx(metrics["test/ppl"])
    assert summary["summary"]["scratch/test/acc"] == pytest.approx(metrics["scratch/test/acc"])
    for job, folder in [
        ("pretrain", "pretrain/gru"),
        ("finetune", "finetune/gru"),
        ("finetune-scratch", "finetune/gru-scratch"),
    ]:
        recorded = json.loads((finetuned / folder / "run.json").read_text())["wandb_id"]
        assert summary["config"]["runs"][job] == recorded
    assert json.loads(Path(cfg.out).read_text()) == pytest.approx(metrics)
    for key in AGREED:
        assert isinstance(metrics[key], int | float), key
    assert metrics["test/acc"] > 0.7 and 1 < metrics["test/ppl"] < TOKENIZER.vocab_size
    assert metrics["test/bpb"] > 0 and metrics["infer/tokens_per_sec"] > 0 and metrics["infer/peak_memory_mb"] > 0
    assert metrics["model/params"] == json.loads((finetuned / "pretrain/gru/metrics.json").read_text())["model/params"]
    assert metrics["model/non_embedding_params"] == metrics["model/params"] - metrics["model/embedding_params"] > 0
    curves = Path(cfg.curves_dir)
    assert sorted(p.name for p in curves.iterdir()) == sorted(
        f"{name}.csv" for name in ("finetune", "pretrain", "scratch", "position", "length", "generation")
    )
    # the length figures (lmlab.jobs.long_context): the gru reads on past its training window
    with (curves / "length.csv").open() as f:
        assert [int(row["factor"]) for row in csv.DictReader(f)] == [1, 2, 4]
    assert metrics["test/loss_4x"] > 0
    with (curves / "generation.csv").open() as f:
        assert len({row["state_bytes"] for row in csv.DictReader(f)}) == 1  # a recurrent state: constant
    assert Path(cfg.sample_file).read_text().strip()


def test_evaluate_keeps_what_the_report_s_intervals_resample(finetuned: Path, tmp_path: Path) -> None:
    """Per block of test text its loss, per test document each classifier's prediction: their means are the
    figures in the metrics file (the intervals around them resample these), and the prompt is real test text."""
    cfg = evaluate_config(finetuned, tmp_path)
    metrics = evaluate(cfg)
    examples = Examples.load(Path(cfg.examples_file), "rebuild")
    loss = examples.block_nats.sum() / examples.block_tokens.sum()
    assert loss == pytest.approx(metrics["test/loss"], rel=1e-9)
    assert examples.correct("test/").mean() == pytest.approx(metrics["test/acc"])
    assert examples.correct("scratch/test/").mean() == pytest.approx(metrics["scratch/test/acc"])
    labeled = LabeledSet.open(corpus(finetuned))
    assert np.array_equal(examples.labels, labeled.split("test").labels)
    train_labels = labeled.split("train").labels
    assert examples.majority_class == np.bincount(train_labels).argmax()
    assert metrics["majority/test/acc"] == pytest.approx(np.mean(examples.labels == examples.majority_class))
    setting = json.loads(Path(cfg.setting_file).read_text())
    assert setting["labeled"]["documents"]["test"] == len(examples.labels)
    assert setting["evaluation"]["test tokens"] == examples.block_tokens.sum()
    assert setting["pretraining"]["steps"] == 20 and setting["fine-tuning seeds"]["test/"] == cfg_seed(finetuned)
    trained = json.loads((finetuned / "pretrain/gru/metrics.json").read_text())
    assert setting["pretraining"]["flops"] == trained["train/flops"] > 0  # the report's Setting prints it
    prompt = setting["evaluation"]["prompt"]
    assert prompt and prompt.split()[0] in (finetuned / "data/splits/sotu/test.jsonl").read_text()
    assert "\ufffd" not in Path(cfg.sample_file).read_text()


def test_an_evaluation_cut_short_is_refused_as_a_set_until_evaluate_runs_again(
    finetuned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file is atomic, the set too: an evaluate stopped between its files (here a full disk at the
    per-example record, after the curves and the sample) leaves files of two evaluations, which the report's
    reader refuses; so does one file swapped from another evaluation, or a curve of an earlier one."""
    cfg = evaluate_config(finetuned, tmp_path)
    evaluated, curves = Path(cfg.setting_file).parent, Path(cfg.curves_dir)

    def read() -> dict:
        return read_evaluation(Path(cfg.out), evaluated, "rerun evaluate", curves=curves)

    evaluate(cfg)
    assert read()["sample"] and read()[M.PRETRAIN_CURVE_FILE]
    first_sample = Path(cfg.sample_file).read_bytes()
    with monkeypatch.context() as patched:
        write_bytes = Path.write_bytes
        patched.setattr(Path, "write_bytes", lambda path, data: full_disk(path) or write_bytes(path, data))
        with pytest.raises(LmlabError, match="no space left on the device"):
            evaluate(replace(cfg, seed=cfg.seed + 1))  # another sample: the set on disk is now of two evaluations
    assert Path(cfg.sample_file).read_bytes() != first_sample
    with pytest.raises(LmlabError, match=r"no .*eval/gru/manifest.json.*may be of two runs: rerun evaluate"):
        read()
    evaluate(cfg)
    assert read()["sample"]
    Path(cfg.sample_file).write_text("a sample of another evaluation\n")
    with pytest.raises(LmlabError, match=r"eval/gru/sample.txt was changed or replaced since the run .* records"):
        read()
    evaluate(replace(cfg, scratch_run=None))  # no baseline this time: the earlier one's curve goes
    assert not (curves / "scratch.csv").exists() and not read()[M.FINETUNE_CURVE_FILES[M.SCRATCH_TEST]]
    (curves / "scratch.csv").write_text("step\n1\n")
    with pytest.raises(LmlabError, match=r"scratch.csv is not of the run .* \(it wrote no 'curves/scratch'\)"):
        read()


def full_disk(path: Path) -> None:
    """The disk fills at the per-example record (written beside itself, then renamed over)."""
    if "examples.npz" in path.name:
        raise OSError(errno.ENOSPC, "No space left on device")


def cfg_seed(lab: Path) -> int:
    return json.loads((lab / "finetune" / "gru" / "run.json").read_text())["identity"]["finetune"]["seed"]


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - set(PIPELINE["families"])))
def test_the_families_outside_the_pipeline_go_through_every_verb(lab: Path, tmp_path: Path, family: str) -> None:
    """test_pipeline_dvc.py takes the pipeline's families through every stage; these take the rest:
    pretrain, fine-tune (pretrained, with LM adaptation, and from scratch), evaluate (which generates)."""
    cfg = tiny_config(lab / "data", family, max_steps=20, val_every=10)
    pretrain(replace(cfg, tokenizer=TOKENIZER), lab / "pretrain" / family)
    for name, scratch in ((family, False), (f"{family}-scratch", True)):
        tuned = config(lab, family, from_scratch=scratch, adapt_steps=0 if scratch else 10)
        # 100 steps: at this size minLSTM's classifier starts slower than the GRU's (40 steps: at chance)
        finetune(replace(tuned, trainer=replace(tuned.trainer, max_steps=100, val_every=50)), lab / "finetune" / name)
    metrics = evaluate(evaluate_config(lab, tmp_path, family))
    assert metrics["test/acc"] > 0.7 and metrics["scratch/test/acc"] > 0.7
    assert 1 < metrics["test/ppl"] < TOKENIZER.vocab_size
    assert Path(evaluate_config(lab, tmp_path, family).sample_file).read_text().strip()


def test_evaluate_refuses_a_classifier_of_other_classes(finetuned: Path, tmp_path: Path) -> None:
    meta_path = finetuned / "data/tokenized" / f"sotu-{TOKENIZER.name}" / "meta.json"
    original = meta_path.read_text()
    meta = json.loads(original)
    meta["task"]["classes"] = ["bad", "good"]
    meta_path.write_text(json.dumps(meta))
    try:
        with pytest.raises(LmlabError, match=r"classifies \['negative', 'positive'\].*\['bad', 'good'\]"):
            evaluate(evaluate_config(finetuned, tmp_path))
    finally:
        meta_path.write_text(original)
    assert not (tmp_path / "metrics/gru.json").exists()


def test_evaluate_refuses_runs_of_another_family_or_of_other_pretrained_weights(
    finetuned: Path, tmp_path: Path
) -> None:
    """family=gru with a transformer's pretraining run, or a classifier fine-tuned from other weights, is an
    error before anything is measured or written (it wrote the transformer's figures into gru.json)."""
    cfg = evaluate_config(finetuned, tmp_path)
    with pytest.raises(LmlabError, match=r"trained a transformer model, not family=gru"):
        evaluate(replace(cfg, pretrain_run=str(finetuned / "pretrain" / "transformer")))
    other = tmp_path / "pretrain-gru"
    shutil.copytree(finetuned / "pretrain" / "gru", other)
    best = other / "checkpoints" / "best.ckpt"
    saved = torch.load(best, weights_only=True)
    saved["global_step"] += 1  # other weights as far as their digest goes
    torch.save(saved, best)
    with pytest.raises(LmlabError, match=r"fine-tuned from other weights than .*pretrain-gru"):
        evaluate(replace(cfg, pretrain_run=str(other)))
    assert not (tmp_path / "metrics/gru.json").exists()


def test_lm_adaptation_on_too_little_text_names_its_keys(lab: Path, tmp_path: Path) -> None:
    cfg = config(lab, adapt_steps=2)
    cfg.batches.batch_size = 1000
    with pytest.raises(LmlabError, match=r"lower batches.batch_size or batches.bptt"):
        finetune(cfg, tmp_path / "run")


@pytest.mark.parametrize("phase", ["fine-tuning", "adaptation"])
def test_a_loss_gone_nan_stops_fine_tuning_without_saving_nan(lab: Path, tmp_path: Path, phase: str) -> None:
    """lr 1e6 without clipping: the run stops at the first non-finite loss with an error, writes no metrics and
    no checkpoint holding NaN (it used to run on, exit 0 and write NaN weights and a bare NaN to metrics.json)."""
    if phase == "fine-tuning":
        cfg = config(lab)
        cfg.optim = replace(cfg.optim, lr=1e6, min_lr=1e6, warmup_steps=0, schedule="constant")
        name = "finetune/train/loss|finetune/val/loss"
    else:
        cfg = config(lab, adapt_steps=20, adapt_lr=1e6)
        name = "train/loss|val/loss"
    cfg.trainer = replace(cfg.trainer, gradient_clip_val=None, max_steps=40, val_every=2)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=f"({name}) became (nan|inf)") as err:
        finetune(cfg, run)
    assert not (run / "metrics.json").exists()
    for ckpt in run.rglob("*.ckpt"):
        weights = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), ckpt
        assert str(ckpt) in str(err.value) or "last.ckpt" not in ckpt.name


def test_a_bad_value_leaves_a_finished_fine_tuning_run_as_it_was(lab: Path, tmp_path: Path) -> None:
    cfg = config(lab)
    cfg.trainer = replace(cfg.trainer, max_steps=4, val_every=4)
    run = tmp_path / "run"
    finetune(cfg, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for section, key, bad in [("finetune", "batch_size", 0), ("finetune", "head_dropout", 1.5)]:
        broken = replace(cfg, **{section: replace(getattr(cfg, section), **{key: bad})})
        with pytest.raises(LmlabError, match=rf"{section}.{key}={bad}: must be"):
            finetune(broken, run)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_ddp_cpu_finetuning_counts_every_validation_document_once(lab: Path, tmp_path: Path) -> None:
    """Two processes: each rank validates its own documents; the synced metrics cover the split exactly once."""
    project = copy_project(tmp_path / "project")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmlab",
            "finetune",
            "model=gru",
            "model.layers=2",
            "model.width=32",
            "model.embed_dim=null",
            "task_data.name=reviews",
            f"tokenizer.vocab_size={TOKENIZER.vocab_size}",
            f"paths.data_dir={lab / 'data'}",
            f"finetune.checkpoint={lab / 'pretrain/gru/checkpoints/best.ckpt'}",
            "finetune.batch_size=8",
            "finetune.max_tokens=32",
            "finetune.adapt_steps=0",
            "trainer=ddp_cpu",
            "trainer.max_steps=6",
            "trainer.val_every=3",
            "trainer.threads=1",
            "logger=none",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    counts = np.bincount(LabeledSet.open(corpus(lab)).split("val").labels)
    assert sum(v for k, v in metrics.items() if k.startswith("finetune/val/confusion/")) == counts.sum()
    assert metrics["finetune/steps"] == 6
    assert not (project / "outputs").exists()  # rank 1 wrote into the same run folder


def test_finetuning_logs_to_wandb_as_job_type_finetune(
    lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for var, folder in wandb_dirs(tmp_path).items():
        monkeypatch.setenv(var, folder)
    cfg = config(lab)
    cfg = replace(cfg, logger=LoggerConfig(kind="wandb"), trainer=replace(cfg.trainer, max_steps=10, val_every=5))
    metrics = finetune(cfg, tmp_path / "run")
    (path,) = (tmp_path / "run/wandb").glob("offline-run-*/run-*.wandb")
    summary, records = wandb_records(path)
    assert summary["exit_code"] == 0
    assert summary["summary"]["finetune/val/acc"] == pytest.approx(metrics["finetune/val/acc"], rel=1e-6)
    assert "finetune/val/precision/positive" in summary["summary"] and "finetune/train/loss" in summary["summary"]
    assert "finetune/val/confusion" in summary["summary"]  # the table
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["job_type"] == "finetune" and {"gru", "reviews", "pretrained"} <= set(run["tags"])


def test_a_run_whose_pretrained_checkpoint_moved_resumes(
    lab: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The identity holds the pretrained weights' sha256, not the checkpoint's path: the same weights in a
    moved run folder (a new pipeline layout) resume the finished fine-tuning instead of retraining it."""
    cfg = config(lab)
    cfg = replace(cfg, trainer=replace(cfg.trainer, max_steps=6, val_every=6))
    first = finetune(cfg, tmp_path / "run")
    shutil.copytree(lab / "pretrain" / "gru", tmp_path / "moved" / "gru")
    moved = replace(cfg, finetune=replace(cfg.finetune, checkpoint=str(tmp_path / "moved/gru/checkpoints/best.ckpt")))
    with caplog.at_level(logging.INFO):
        again = finetune(moved, tmp_path / "run")
    assert "config changed" not in caplog.text and "resuming from" in caplog.text, caplog.text
    assert again["finetune/val/loss"] == first["finetune/val/loss"]


def test_a_restored_adaptation_gives_the_classifier_a_freshly_adapted_one_would(lab: Path, tmp_path: Path) -> None:
    """DVC reruns fine-tuning after a recipe change with the adaptation already done: same result as from nothing."""
    cfg = config(lab, adapt_steps=6)
    cfg = replace(cfg, trainer=replace(cfg.trainer, max_steps=6, val_every=6))
    fresh = finetune(cfg, tmp_path / "fresh")
    shutil.copytree(tmp_path / "fresh" / "adapt", tmp_path / "restored" / "adapt")
    restored = finetune(cfg, tmp_path / "restored")
    assert restored["finetune/val/loss"] == fresh["finetune/val/loss"]


def test_a_run_crashed_mid_classifier_resumes_to_exactly_the_uninterrupted_run(
    lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the LM adaptation, a crash at step 13 (last.ckpt at 10), then resume=auto: the same curve, metrics,
    weights and optimizer state. The dropout draws continue from the checkpoint's RNG state; reseeded at the
    resume, they gave a deterministic but other run (val loss 0.7137 against 0.6917 at step 20)."""
    cfg = config(lab, adapt_steps=4)
    cfg = replace(cfg, trainer=replace(cfg.trainer, max_steps=20, val_every=5))
    assert cfg.model.dropout > 0 and cfg.finetune.head_dropout > 0
    uninterrupted = finetune(cfg, tmp_path / "uninterrupted")
    with monkeypatch.context() as m:
        crash_at(m, 13)
        with pytest.raises(Crash):
            finetune(cfg, tmp_path / "crashed")
    assert [row["step"] for row in val_rows(tmp_path / "crashed")] == [5, 10]
    assert finetune(cfg, tmp_path / "crashed") == uninterrupted
    assert val_rows(tmp_path / "crashed") == val_rows(tmp_path / "uninterrupted")
    a, b = (
        torch.load(tmp_path / run / "checkpoints/last.ckpt", weights_only=True) for run in ("uninterrupted", "crashed")
    )
    assert a["global_step"] == b["global_step"] == 20
    assert_same(a["state_dict"], b["state_dict"], "state_dict")
    assert_same(a["optimizer_states"], b["optimizer_states"], "optimizer_states")


def test_rerunning_an_early_stopped_run_keeps_it(lab: Path, tmp_path: Path) -> None:
    """patience=1 stops the run at step 10 (its F1 below step 5's); the same command again keeps that run. Lightning
    restores EarlyStopping's count but looks at it only at the next validation: the rerun trained on to step 15."""
    cfg = config(lab, patience=1)
    cfg = replace(cfg, trainer=replace(cfg.trainer, max_steps=20, val_every=5))
    first = finetune(cfg, tmp_path / "run")
    assert first["finetune/steps"] == 10
    assert finetune(cfg, tmp_path / "run") == first
    assert [row["step"] for row in val_rows(tmp_path / "run")] == [5, 10]


def test_fine_tuning_and_adaptation_steps_read_nothing_on_the_host(
    lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The classifier's steps and the LM adaptation's make no host read between logging intervals
    (`tests.helpers.host_reads`)."""
    cfg = config(lab, adapt_steps=6)
    cfg.trainer = replace(cfg.trainer, max_steps=8, val_every=4, log_every=100)
    with counted(monkeypatch) as reads:
        finetune(cfg, tmp_path / "run")
    assert reads.steps == 5 + 7 and not reads.found, dict(reads.found)
