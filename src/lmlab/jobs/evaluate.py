"""`lmlab evaluate`: one family's test figures, measured the same way for every family.

- Language model (the pretraining run's best checkpoint): test loss, ``test/ppl``
  and ``test/bpb`` over the corpus test split, state carried through the
  split for recurrent families, context-sized windows for transformers.
- Classifier (the fine-tuning run's best checkpoint, and the from-scratch
  baseline's): ``test/acc``, ``test/f1`` (macro), per-class precision and
  recall, the confusion matrix, and ``scratch/test/*`` for the baseline.
- Length (`lmlab.jobs.long_context`): loss by position in test windows read from a
  fresh state, loss past the training window (2x, 4x), and generation ms/token
  and state bytes against length.
- Speed: inference tokens/s (forward passes over test windows), generation
  latency per token (one sequence, state or KV cache), and peak memory of
  that inference (CUDA: the allocator's peak; CPU: parameters plus the peak
  of live tensors allocated by the forward, from the profiler's per-operator
  memory records).
- From the pretraining run: ``model/params``, ``train/tokens_per_sec``,
  ``train/wall_seconds``, and its val curve, copied next to the fine-tuning
  curves as CSV files DVC can plot.

Callable without the CLI: `evaluate(cfg)` returns the metrics it writes.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import OmegaConf

from lmlab.analysis.examples import Examples
from lmlab.core import metrics as M
from lmlab.core.atomic import NUMBER, published_together, read_json, sha256_file, write_atomic, write_json
from lmlab.core.errors import LmlabError
from lmlab.data.config import SPLITS
from lmlab.data.corpus import Corpus
from lmlab.data.labeled import LabeledSet
from lmlab.jobs.config import EvaluateConfig
from lmlab.jobs.long_context import (
    FACTORS,
    beyond_training,
    by_position,
    check_lengths,
    generation_profile,
    stretched,
    window_losses,
    write_rows,
)
from lmlab.jobs.measures import classify, document_start, inference_speed, lm_loss, sample_and_latency
from lmlab.models import LanguageModel
from lmlab.training.checkpoints import load_classifier, load_language_model
from lmlab.training.logger import finish_logger, make_logger, run_name
from lmlab.training.runs import RunFolder, open_corpus
from lmlab.training.trainer import config_dict, on_gpu

log = logging.getLogger(__name__)

RUN_RECORD = "the run writes it when it starts: run it again (`dvc repro` resumes it)"


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    check_lengths(cfg.generation_lengths)  # before minutes of measuring
    cfg.device = resolved_device(cfg.device, Path(cfg.pretrain_run))
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    corpus = open_corpus(cfg.paths, cfg.data.name, cfg.tokenizer)
    pretrain_run, finetune_run = Path(cfg.pretrain_run), Path(cfg.finetune_run)
    lm = load_language_model(pretrain_run / "checkpoints" / "best.ckpt", cfg.device)
    check_vocabulary(lm.model.vocab_size, corpus, pretrain_run)
    runs = {M.TEST: finetune_run} | ({M.SCRATCH_TEST: Path(cfg.scratch_run)} if cfg.scratch_run else {})
    check_runs_belong(cfg.family, pretrain_run, lm.model.cfg.family, runs)
    trained = read_metrics(pretrain_run)
    window = lm.model.window(cfg.window)

    metrics: dict[str, Any] = {
        M.PARAMS: lm.model.num_params,
        M.EMBEDDING_PARAMS: lm.model.num_embedding_params,
        M.NON_EMBEDDING_PARAMS: lm.model.num_params - lm.model.num_embedding_params,
        **{key: trained[key] for key in (M.TRAIN_TOKENS_PER_SEC, M.TRAIN_WALL_SECONDS, M.TRAIN_TOKENS)},
        **M.lm_figures("val", trained[M.BEST_VAL_LOSS], corpus.tokens_per_byte("val")),
    }
    started = time.perf_counter()
    log.info(
        "evaluating %s: test loss over %s tokens, inference speed, loss by position and past the training window, "
        "generation against length, then the classifiers on the test documents",
        cfg.family,
        f"{min(corpus.splits['test'].tokens, cfg.max_tokens or corpus.splits['test'].tokens):,}",
    )
    block_nats, block_tokens = lm_loss(lm.model, corpus, "test", cfg.batch_size, window, cfg.max_tokens, cfg.device)
    metrics |= M.lm_figures("test", block_nats.sum() / max(block_tokens.sum(), 1), corpus.tokens_per_byte("test"))
    metrics |= inference_speed(lm.model, corpus, cfg.batch_size, window, cfg.speed_tokens, cfg.device)
    trained_window = lm.model.window(identity(pretrain_run)["batches"]["bptt"])
    lengths = length_figures(lm.model, corpus, trained_window, cfg)
    metrics |= {M.length_loss(row["factor"]): row["loss"] for row in lengths[M.LENGTH_FILE]}
    sp = spm.SentencePieceProcessor(model_file=str(corpus.tokenizer_file))
    prompt = cfg.prompt or document_start(corpus, sp, cfg.prompt_tokens)
    sample, latency = sample_and_latency(lm.model, sp, prompt, cfg)
    metrics[M.INFER_MS_PER_TOKEN] = latency

    labeled = LabeledSet.open(corpus)
    splits = {name: labeled.split(name) for name in SPLITS}
    test = splits["test"]
    majority = int(np.bincount(splits["train"].labels, minlength=len(labeled.classes)).argmax())
    examples = Examples(block_nats, block_tokens, test.labels.astype(np.int64), majority)
    metrics[M.MAJORITY_TEST_ACC] = float(examples.majority_correct().mean())
    for prefix, run in runs.items():
        clf = load_classifier(run / "checkpoints" / "best.ckpt", cfg.device)
        if clf.classes != labeled.classes:
            raise LmlabError(
                f"{run}/checkpoints/best.ckpt classifies {clf.classes}, but the labeled set in {corpus.folder} has "
                f"classes {labeled.classes}: fine-tune again on this labeled set"
            )
        figures, examples.predictions[prefix] = classify(
            clf.model, test, labeled.classes, prefix, clf.max_tokens, cfg.device
        )
        metrics |= figures
    log.info("evaluated %s in %.1fs: %s", cfg.family, time.perf_counter() - started, headline(metrics))

    documents = {name: len(split) for name, split in splits.items()}
    # one evaluation's files, whole as a set: a report refuses files of two evaluations (a kill between them)
    with published_together(manifest_file(cfg)) as written:
        written |= write_curves(Path(cfg.curves_dir), pretrain_run, runs)
        for name, rows in lengths.items():
            write_rows(written.setdefault(M.curve_role(name), Path(cfg.curves_dir) / f"{name}.csv"), rows)
        write_atomic(written.setdefault("sample", Path(cfg.sample_file)), (sample + "\n").encode())
        examples.save(written.setdefault("examples", Path(cfg.examples_file)))
        record = setting(cfg, corpus, labeled, documents, trained, runs, examples, prompt)
        write_json(written.setdefault("setting", Path(cfg.setting_file)), record)
        write_json(written.setdefault("metrics", Path(cfg.out)), metrics)  # before W&B: no network loses nothing
    log_evaluation(cfg, metrics, {"pretrain": pretrain_run, **{FINETUNE_JOBS[p]: run for p, run in runs.items()}})
    return metrics


def check_runs_belong(family: str, pretrain_run: Path, trained: str, runs: dict[str, Path]) -> None:
    """The runs evaluated as one family's are that family's, and each fine-tuning run started from this
    pretraining run's checkpoint (the sha256 its identity holds): else the figures of two runs would be written
    as one family's. Checked before minutes of measuring."""
    if trained != family:
        raise LmlabError(
            f"pretrain_run={pretrain_run} trained a {trained} model, not family={family}: give family={trained}, "
            f"or {family}'s run folders"
        )
    checkpoint = pretrain_run / "checkpoints" / "best.ckpt"
    digest = None
    for run in runs.values():
        record = identity(run)
        if record.get("model", {}).get("family") not in (None, family):
            raise LmlabError(f"{run} fine-tuned a {record['model']['family']} backbone, not family={family}")
        if record.get("pretrained") is not None:
            digest = digest or sha256_file(checkpoint)
            if record["pretrained"] != digest:
                raise LmlabError(
                    f"{run} was fine-tuned from other weights than {checkpoint} (the pretraining run was retrained "
                    f"or replaced since, or the runs are of different studies): fine-tune again from it "
                    f"(`dvc repro` does) or give the matching pretrain_run"
                )


def resolved_device(device: str, pretrain_run: Path) -> str:
    """`auto`: the GPU where the pretraining run trained on one (and one is here), else the CPU, so that the
    pipeline's inference figures come from the machine its training figures do."""
    if device != "auto":
        return device
    trained_on_gpu = on_gpu(hydra_trainer(pretrain_run).get("accelerator") or "cpu")
    return "cuda" if trained_on_gpu and torch.cuda.is_available() else "cpu"


def length_figures(
    model: LanguageModel, corpus: Corpus, window: int, cfg: EvaluateConfig
) -> dict[str, list[dict[str, float]]]:
    """Loss by position and past the training window (test windows of FACTORS[-1] x `window`, each from a
    fresh state), and generation cost against length: the rows of each curve file."""
    longest = FACTORS[-1] * window
    reader = stretched(model, longest)
    if reader is not None:
        nats = window_losses(reader, corpus.tokens("test"), longest, cfg.position_windows, cfg.batch_size, cfg.device)
    else:  # learned positions: the part of the window the table covers
        nats = window_losses(model, corpus.tokens("test"), window, cfg.position_windows, cfg.batch_size, cfg.device)
    return {
        M.POSITION_FILE: by_position(nats),
        M.LENGTH_FILE: beyond_training(nats, window),
        M.GENERATION_FILE: generation_profile(model, sorted(cfg.generation_lengths), cfg.device),
    }


def git_commit() -> str:
    """The checkout's commit, with "+changes" when its code or configs differ from it (outputs the pipeline
    rewrites, such as dvc.lock and metrics, do not count), or "unknown" outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "conf", "dvc.yaml"],
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.strip()[:12] + (" +changes" if dirty.stdout.strip() else "")


def setting(
    cfg: EvaluateConfig,
    corpus: Corpus,
    labeled: LabeledSet,
    documents: dict[str, int],
    trained: dict[str, Any],
    runs: dict[str, Path],
    examples: Examples,
    prompt: str,
) -> dict[str, Any]:
    """What the figures were measured on, for the report's Setting section (`setting_file`)."""
    pretrain_run = Path(cfg.pretrain_run)
    return {
        "corpus": {
            "name": cfg.data.name,
            "tokens": {split: corpus.splits[split].tokens for split in SPLITS},
            "bytes": {split: corpus.splits[split].bytes for split in SPLITS},
        },
        "labeled": {
            "name": labeled.name,
            "classes": labeled.classes,
            "documents": documents,
        },
        "tokenizer": cfg.tokenizer.name,
        "pretraining": {
            "steps": trained.get(M.TRAIN_STEPS),
            "tokens": trained[M.TRAIN_TOKENS],
            "flops": trained.get(M.TRAIN_FLOPS),  # absent from runs trained before lmlab counted FLOPs
            "seed": identity(pretrain_run).get("batches", {}).get("seed"),
            **hydra_trainer(pretrain_run),
        },
        "fine-tuning seeds": {prefix: identity(run).get("finetune", {}).get("seed") for prefix, run in runs.items()},
        "evaluation": {
            "device": cfg.device,
            "test tokens": int(examples.block_tokens.sum()),
            "test documents": len(examples.labels),
            "prompt": prompt,
        },
        "commit": git_commit(),
    }


def identity(run: Path) -> dict[str, Any]:
    """The config a run's checkpoints belong to, as its run.json records it (`lmlab.training.runs`)."""
    return read_json(run / "run.json", RUN_RECORD, {"identity": dict})["identity"]


def hydra_trainer(run: Path) -> dict[str, Any]:
    """The run's device and precision, from the config Hydra saved beside it (runs made by the CLI)."""
    saved = run / ".hydra" / "config.yaml"
    if not saved.is_file():
        return {}
    trainer = OmegaConf.load(saved).get("trainer", {})
    return {key: trainer.get(key) for key in ("accelerator", "devices", "precision")}


def headline(metrics: dict[str, Any]) -> str:
    keys = (M.TEST_PPL, M.TEST_BPB, M.TEST_ACC, M.SCRATCH_TEST_ACC, M.INFER_TOKENS_PER_SEC)
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)


FINETUNE_JOBS = {M.TEST: "finetune", M.SCRATCH_TEST: "finetune-scratch"}


def log_evaluation(cfg: EvaluateConfig, metrics: dict[str, Any], runs: dict[str, Path]) -> None:
    """The test figures as a W&B run (job type evaluate, named evaluate-<family>-s<seed>, in the experiment's group),
    so the W&B UI compares what the report compares; its config names the W&B runs it evaluated. A run of its
    own: resuming the training runs would write into their folders, which are other stages' outputs."""
    ids = {job: RunFolder(folder).read_record().get("wandb_id", "") for job, folder in runs.items()}
    config = {"evaluate": config_dict(cfg), "runs": ids, "model": {"family": cfg.family}}  # compare's family key
    tags = [cfg.family, cfg.data.name, cfg.tokenizer.name]
    seed = identity(runs["pretrain"]).get("batches", {}).get("seed")  # the seed of the runs it evaluated
    name = run_name(cfg.logger, "evaluate", cfg.family, seed=seed)
    folder, run_id = Path(cfg.wandb_dir), secrets.token_hex(4)
    logger = make_logger(cfg.logger, folder, run_id, cfg.name, "evaluate", tags, config, name)
    if logger is None:
        return
    if isinstance(logger, WandbLogger):
        logger.experiment.summary.update(metrics)  # W&B's run table and panels compare summaries
    else:
        logger.log_metrics(metrics)
        logger.save()
    finish_logger(logger, failed=False)


def check_vocabulary(vocab_size: int, corpus: Corpus, run: Path) -> None:
    if vocab_size != corpus.vocab_size:
        raise LmlabError(
            f"{run} was trained with a vocabulary of {vocab_size}, but {corpus.folder} has {corpus.vocab_size}: "
            "the corpus was tokenized differently since; evaluate with the matching data= and tokenizer="
        )


def read_metrics(run: Path) -> dict[str, Any]:
    """The pretraining run's figures that the evaluation copies; the run writes them when it finishes."""
    return read_json(
        run / "metrics.json",
        "the run writes it when it finishes: run it again (`dvc repro` resumes it)",
        dict.fromkeys((M.TRAIN_TOKENS_PER_SEC, M.TRAIN_WALL_SECONDS, M.TRAIN_TOKENS, M.BEST_VAL_LOSS), NUMBER),
    )


def write_curves(folder: Path, pretrain_run: Path, finetune_runs: dict[str, Path]) -> dict[str, Path]:
    """The runs' val curves as `M.CURVE_FILES` (the report combines them for DVC's plots), by role; a curve of
    a run not evaluated this time (an earlier evaluation's baseline) is removed."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = {
        M.PRETRAIN_CURVE_FILE: pretrain_run,
        **{M.FINETUNE_CURVE_FILES[p]: run for p, run in finetune_runs.items()},
    }
    written = {}
    for name in M.CURVE_FILES:
        path = folder / f"{name}.csv"
        if name not in runs:
            path.unlink(missing_ok=True)
            continue
        curve = runs[name] / "val_curve.csv"
        if not curve.is_file():
            raise LmlabError(f"no {curve}: the run did not validate; run it again")
        write_atomic(path, curve.read_bytes())
        written[M.curve_role(name)] = path
    return written


def manifest_file(cfg: EvaluateConfig) -> Path:
    """The evaluation's manifest, beside its Setting (where the report looks for it)."""
    return Path(cfg.setting_file).with_name(M.EVALUATION_MANIFEST)
