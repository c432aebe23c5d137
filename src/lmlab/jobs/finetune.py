"""`lmlab finetune`: a text classifier on the labeled set, from a pretraining checkpoint or from scratch.

Callable without the CLI (tests do): `finetune(cfg, run_dir)` returns the final metrics.
The run folder has the layout of a pretraining run (see `lmlab.training.runs`), with
checkpoints chosen by ``finetune/val/f1`` (macro F1: on a skewed val split, accuracy rewards a classifier
that predicts the majority class; docs/finetuning.md); an LM adaptation, when asked for,
runs first in its own run folder ``<run>/adapt``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping

from lmlab.core import metrics as M
from lmlab.core.atomic import sha256_file
from lmlab.core.errors import LmlabError
from lmlab.data.corpus import Corpus, write_corpus
from lmlab.data.labeled import LabeledSet, LabeledSplit
from lmlab.data.lm import PretrainData
from lmlab.jobs.config import FinetuneConfig
from lmlab.models import LanguageModel, ModelConfig, build_model, family_config
from lmlab.models.classifier import Classifier
from lmlab.tasks.classification import FinetuneData, FinetuneTask, model_record
from lmlab.tasks.language_model import PretrainTask
from lmlab.training import optim
from lmlab.training.checkpoints import model_config, prefixed, read_checkpoint
from lmlab.training.identity import code_version
from lmlab.training.job import Fit, TrainingJob, fit_or_stop, train
from lmlab.training.logger import run_name
from lmlab.training.runs import RunFolder, Start, open_corpus
from lmlab.training.trainer import config_dict, device_line, make_trainer

log = logging.getLogger(__name__)


def finetune(cfg: FinetuneConfig, run_dir: Path) -> dict[str, Any]:
    return train(Finetuning, cfg, run_dir)


class Finetuning(TrainingJob):
    kind, log = "finetune", log
    cfg: FinetuneConfig

    def prepare(self) -> Fit:
        cfg, task_cfg = self.cfg, self.cfg.finetune
        cfg.model = family_config(cfg.model)
        optim.check(cfg.optim)
        corpus = open_corpus(cfg.paths, cfg.data.name, cfg.tokenizer)
        self.labeled = labeled = LabeledSet.open(corpus)
        if labeled.name != cfg.task_data.name:
            raise LmlabError(
                f"{corpus.folder} holds the labeled set {labeled.name!r}, not task_data={cfg.task_data.name!r}: "
                f"tokenize it with `lmlab tokenize data={cfg.data.name} task_data={cfg.task_data.name}` or pick "
                f"task_data={labeled.name}"
            )
        train, val = labeled.split("train"), labeled.split("val")
        if (present := np.unique(train.labels).size) < 2:
            raise LmlabError(
                f"the labeled set {labeled.name!r} in {corpus.folder} holds {present} class in its train split: a "
                "classifier needs two at least (`lmlab split` refuses such a set: split and tokenize it again)"
            )
        weights = class_weights(task_cfg.class_weights, labeled.classes, train)
        L.seed_everything(task_cfg.seed, workers=True, verbose=False)
        self.backbone = backbone = build_model(cfg.model, corpus.vocab_size)
        self.pretrained = pretrained = None if task_cfg.from_scratch else Path(task_cfg.checkpoint)
        if pretrained is not None:
            load_pretrained(backbone, pretrained, cfg, corpus)
        model = Classifier(
            backbone, len(labeled.classes), task_cfg.pooling, task_cfg.head_hidden, task_cfg.head_dropout
        )
        max_tokens = min(task_cfg.max_tokens, backbone.max_positions or task_cfg.max_tokens)
        corpus_info = {"name": cfg.data.name, "tokenizer": cfg.tokenizer.name, "folder": str(corpus.folder)}
        self.task = FinetuneTask(
            model,
            labeled.classes,
            task_cfg,
            cfg.optim,
            cfg.trainer.max_steps,
            cfg.trainer.val_every,
            weights,
            model_record(model, task_cfg, corpus_info, max_tokens),
        )
        scratch = " from scratch" if task_cfg.from_scratch else ""
        return Fit(
            task=self.task,
            data=FinetuneData(train, val, task_cfg, max_tokens),
            identity=identity(cfg, corpus, pretrained),
            tags=[cfg.model.family, cfg.task_data.name, cfg.tokenizer.name, "scratch" if scratch else "pretrained"],
            run_name=run_name(cfg.logger, "finetune", cfg.model.family, task_cfg.from_scratch, cfg.seed),
            label=f"finetune {cfg.model.family}{scratch}",
            curve=M.FINETUNE_CURVE,
            callbacks=[StaysStopped(M.FINETUNE_VAL_F1, mode="max", patience=task_cfg.patience)]
            if task_cfg.patience
            else [],
            hyperparams={M.PARAMS: backbone.num_params},
            monitor=M.FINETUNE_VAL_F1,
            mode="max",
        )

    def started(self, trainer: L.Trainer) -> dict[str, Any]:
        """The LM adaptation (in its own folder, `<run>/adapt`), then the classifier's seed."""
        cfg, task_cfg = self.cfg, self.cfg.finetune
        self.adapted: dict[str, float] = {}
        if task_cfg.adapt_steps > 0 and self.pretrained is not None:
            train, val = self.labeled.split("train"), self.labeled.split("val")
            self.adapted = adapt(self.backbone, train, val, cfg, self.run_folder.path / "adapt")
        if task_cfg.freeze_backbone:
            self.backbone.requires_grad_(False)
        # the classifier's dropout draws start from the seed, whether the adaptation above trained or was restored
        L.seed_everything(task_cfg.seed + 1, workers=True, verbose=False)
        return self.adapted

    def announce(self, trainer: L.Trainer, start: Start) -> str:
        cfg = self.cfg
        source = "from scratch" if self.pretrained is None else f"from {self.pretrained}"
        return (
            f"fine-tuning a {cfg.model.family} classifier ({self.backbone.num_params:,} backbone parameters, {source}) "
            f"on {self.labeled.name} for {cfg.trainer.max_steps} steps, {device_line(trainer)}, run folder "
            f"{self.run_folder.path}" + (f", resuming from {start.checkpoint}" if start.checkpoint else "")
        )

    def closing(self, logger: Any) -> None:
        log_confusion(logger, self.task)

    def metrics(self, trainer: L.Trainer) -> dict[str, Any]:
        task = self.task
        best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
        return {
            **{k: v for k, v in task.last_val.items() if k != M.STEP},
            M.BEST_FINETUNE_VAL_F1: float(best) if best is not None else task.last_val.get(M.FINETUNE_VAL_F1),
            M.PARAMS: self.backbone.num_params,
            M.FINETUNE_STEPS: trainer.global_step,
            M.FINETUNE_FROM_SCRATCH: self.cfg.finetune.from_scratch,
            **self.adapted,
        }

    def summary(self, metrics: dict[str, Any], written: Path) -> str:
        best = metrics[M.BEST_FINETUNE_VAL_F1] if metrics[M.BEST_FINETUNE_VAL_F1] is not None else float("nan")
        return (
            f"fine-tuned {self.cfg.model.family}{' from scratch' if self.cfg.finetune.from_scratch else ''}: "
            f"{metrics[M.FINETUNE_STEPS]} steps; val acc {metrics.get(M.FINETUNE_VAL_ACC, float('nan')):.3f}, val F1 "
            f"{metrics.get(M.FINETUNE_VAL_F1, float('nan')):.3f} (best {best:.3f}, kept) -> {written}"
        )


class StaysStopped(EarlyStopping):
    """EarlyStopping whose stop holds on a resume: Lightning restores its count of validations without
    improvement but looks at it only at the next validation, so rerunning a run it had stopped trained on
    from the stopping step instead of keeping the finished run."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.wait_count >= self.patience:
            trainer.should_stop = True


def identity(cfg: FinetuneConfig, corpus: Corpus, pretrained: Path | None) -> dict[str, Any]:
    """What a fine-tuning checkpoint belongs to: the config, the data (`Corpus.digest`), and the exact
    pretrained weights it started from (their sha256, not the checkpoint's path: a moved run folder resumes)."""
    full = config_dict(cfg)
    full["finetune"].pop("checkpoint", None)
    return {
        "data": cfg.data.name,
        "task_data": cfg.task_data.name,
        "tokenizer": cfg.tokenizer.name,
        "corpus": corpus.digest(),
        **{key: full[key] for key in ("model", "finetune", "optim")},
        "schedule": optim.schedule_identity(cfg.optim, cfg.trainer),
        "pretrained": sha256_file(pretrained) if pretrained is not None else None,
        "code": code_version("lmlab.jobs.finetune"),
    }


def class_weights(spec: Any, classes: list[str], train: LabeledSplit) -> torch.Tensor | None:
    """None, "balanced" (n / (k * count) per class, as scikit-learn), or one given weight per class."""
    if spec is None:
        return None
    if spec == "balanced":
        counts = np.bincount(train.labels, minlength=len(classes)).astype(np.float64)
        return torch.tensor(len(train) / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32)
    if isinstance(spec, list | tuple) and len(spec) == len(classes) and all(isinstance(w, int | float) for w in spec):
        return torch.tensor([float(w) for w in spec], dtype=torch.float32)
    raise LmlabError(
        f"finetune.class_weights={spec!r}: use null, balanced, or a list of {len(classes)} numbers (classes {classes})"
    )


def load_pretrained(backbone: LanguageModel, path: Path, cfg: FinetuneConfig, corpus: Corpus) -> None:
    """Copy a pretraining checkpoint's weights into `backbone`, after checking it fits, then verify them equal."""
    saved = read_checkpoint(path, "pretrain")
    extra = saved["lmlab"]
    if "classes" in extra:
        raise LmlabError(f"finetune.checkpoint={path} is a fine-tuning checkpoint; give a pretraining one")
    trained_on = extra.get("corpus", {})
    if extra["vocab_size"] != corpus.vocab_size or trained_on.get("tokenizer") not in (None, cfg.tokenizer.name):
        raise LmlabError(
            f"{path} was pretrained with tokenizer {trained_on.get('tokenizer')!r} (vocabulary {extra['vocab_size']}) "
            f"on {trained_on.get('name')!r}, but this run uses {cfg.tokenizer.name} (vocabulary {corpus.vocab_size}) "
            f"of {corpus.folder}: fine-tune with the checkpoint's tokenizer, or pretrain again with this one"
        )
    differ = architecture_differences(model_config(saved), cfg.model)
    if differ:
        raise LmlabError(
            f"{path} holds a different architecture than model={cfg.model.family}: "
            + ", ".join(f"model.{key} is {mine} here, {theirs} in the checkpoint" for key, mine, theirs in differ)
            + " (pass the checkpoint's values as overrides)"
        )
    weights = prefixed(saved["state_dict"], "model.")
    backbone.load_state_dict(weights, strict=True)
    unequal = [name for name, value in backbone.state_dict().items() if not torch.equal(value, weights[name])]
    if unequal:
        raise LmlabError(f"weights {unequal} differ from {path} after loading")


def architecture_differences(saved: ModelConfig, wanted: ModelConfig) -> list[tuple[str, Any, Any]]:
    """The keys that differ and may not: (key, wanted, saved). Only the family's `TUNABLE` keys (dropouts)
    may change between pretraining and fine-tuning; a different family differs in `family` first."""
    if saved.family != wanted.family:
        return [("family", wanted.family, saved.family)]
    keys = [f.name for f in fields(saved) if f.name not in saved.TUNABLE]
    return [(k, getattr(wanted, k), getattr(saved, k)) for k in keys if getattr(wanted, k) != getattr(saved, k)]


def adapt(backbone: LanguageModel, train: LabeledSplit, val: LabeledSplit, cfg: FinetuneConfig, folder: Path) -> dict:
    """ULMFiT's middle step: continue language-model training on the labeled set's own text, so the backbone
    knows the target domain before a classifier is put on it. Resumes like pretraining does."""
    steps, lr = cfg.finetune.adapt_steps, cfg.finetune.adapt_lr
    lm = write_lm_corpus(folder / "corpus", {"train": train, "val": val}, backbone.vocab_size)
    lm_optim = replace(cfg.optim, lr=lr, warmup_steps=steps // 10, min_lr=lr / 10, schedule="cosine", decay_steps=None)
    batches = cfg.batches
    window = backbone.window(batches.bptt)
    shortest = min(stats.tokens for stats in lm.splits.values())
    if shortest < batches.batch_size * (window + 1):
        raise LmlabError(
            f"LM adaptation needs {batches.batch_size} x {window + 1} tokens per split, but the labeled set's "
            f"shortest split has {shortest}: lower batches.batch_size or batches.bptt "
            "(or set finetune.adapt_steps=0)"
        )
    identity = {
        "backbone": sha256_state(backbone),
        "optim": asdict(lm_optim),
        "batches": asdict(batches),
        "steps": steps,
    }
    run = RunFolder(folder)
    start = run.plan("auto", identity, "adapt", keep_replaced=False)  # a step of its fine-tuning run, not a run
    task = PretrainTask(backbone, window, lm_optim, steps, steps, lm.tokens_per_byte("val"))
    trainer = make_trainer(
        replace(cfg.trainer, max_steps=steps, val_every=steps),
        folder,
        None,
        [],
        label=f"adapt {cfg.model.family}",
        hidden=(M.VAL_BPB,),  # `write_lm_corpus` keeps no byte counts
    )
    run.begin(start, trainer.is_global_zero)
    log.info(
        "LM adaptation first: %d steps of language modelling on the labeled set's training text, run folder %s%s",
        steps,
        folder,
        ", already done" if start.checkpoint else "",
    )
    data = PretrainData(lm, batches, backbone.stateful, window, cfg.trainer.accumulate)  # as its trainer accumulates
    fit_or_stop(trainer, task, data, start.checkpoint, run)
    loss = float(trainer.callback_metrics.get(M.VAL_LOSS, task.last_val.get(M.VAL_LOSS, 0.0)))
    log.info("LM adaptation done: val loss on the labeled set's text %.4f", loss)
    return {M.ADAPT_VAL_LOSS: loss}


def sha256_state(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode() + value.cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def write_lm_corpus(folder: Path, splits: dict[str, LabeledSplit], vocab_size: int) -> Corpus:
    """The labeled documents as LM token streams in the corpus format, so pretraining code reads them.
    Bytes are not stored per document: bits per byte of the adaptation are not reported (a byte per token
    stands in)."""
    streams = {name: split.lm_stream() for name, split in splits.items()}
    return write_corpus(folder, streams, vocab_size, {name: len(s) for name, s in streams.items()})


def log_confusion(logger: Any, task: FinetuneTask) -> None:
    """The last validation's confusion matrix as a W&B table (rows: true class, columns: predicted)."""
    prefix = f"{M.FINETUNE_VAL}confusion/"
    counts = {k: v for k, v in task.last_val.items() if k.startswith(prefix)}
    if not counts or not hasattr(logger, "log_table"):
        return
    rows = [[t, *(counts[f"{prefix}{t}/{p}"] for p in task.classes)] for t in task.classes]
    logger.log_table(f"{M.FINETUNE_VAL}confusion", columns=["true \\ predicted", *task.classes], data=rows)
