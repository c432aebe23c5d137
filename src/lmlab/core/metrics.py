"""The metric vocabulary: every name the logger, metrics files, curves, sweeps, `compare` and the report use,
and the formulas behind the language-model figures. One home, so a name is never spelt two ways.

    <split>/loss = nats per predicted token
    <split>/ppl  = exp(<split>/loss)
    <split>/bpb  = <split>/loss / ln 2 * tokens per UTF-8 byte of the split

Bits per byte make models with different tokenizers comparable.
"""

from __future__ import annotations

import math

# ----- language model -----
TRAIN_LOSS = "train/loss"
TRAIN_LR = "train/lr"
TRAIN_STEPS = "train/steps"
TRAIN_TOKENS = "train/tokens"
TRAIN_FLOPS = "train/flops"  # tokens x 3 x the model's forward FLOPs per token (LanguageModel.flops_per_token)
TRAIN_TOKENS_PER_SEC = "train/tokens_per_sec"
TRAIN_WALL_SECONDS = "train/wall_seconds"
VAL_LOSS, VAL_PPL, VAL_BPB = "val/loss", "val/ppl", "val/bpb"
BEST_VAL_LOSS = "best/val/loss"
TEST_LOSS, TEST_PPL, TEST_BPB = "test/loss", "test/ppl", "test/bpb"
PARAMS = "model/params"
EMBEDDING_PARAMS = "model/embedding_params"
NON_EMBEDDING_PARAMS = "model/non_embedding_params"  # the backbone: what the families differ in


def length_loss(factor: int) -> str:
    """Test loss in windows read from a fresh state: over the training window's positions (1), or over the
    positions past it up to `factor` times its length (`lmlab.jobs.long_context`)."""
    return f"test/loss_{factor}x"


# ----- classifier -----
FINETUNE_TRAIN_LOSS = "finetune/train/loss"
FINETUNE_TRAIN_LR = "finetune/train/lr"
FINETUNE_VAL = "finetune/val/"  # prefix of acc, f1, loss, precision/<class>, recall/<class>, confusion/<t>/<p>
FINETUNE_VAL_LOSS = "finetune/val/loss"
FINETUNE_VAL_ACC = "finetune/val/acc"
FINETUNE_VAL_F1 = "finetune/val/f1"
BEST_FINETUNE_VAL_F1 = "best/finetune/val/f1"  # the kept checkpoint's: fine-tuning keeps the best macro F1
FINETUNE_STEPS = "finetune/steps"
FINETUNE_FROM_SCRATCH = "finetune/from_scratch"
ADAPT_VAL_LOSS = "adapt/val/loss"
TEST = "test/"  # prefix of the fine-tuned classifier's test figures
SCRATCH_TEST = "scratch/test/"  # ... and of the from-scratch baseline's
TEST_ACC, TEST_F1 = "test/acc", "test/f1"
MAJORITY_TEST_ACC = "majority/test/acc"  # the baseline predicting the train split's most frequent class
SCRATCH_TEST_ACC, SCRATCH_TEST_F1 = "scratch/test/acc", "scratch/test/f1"

# ----- synthetic tasks (`lmlab synth`): loss and accuracy at the answer positions only -----
VAL_ACC = "val/acc"  # at the training length
STATE_BYTES = "model/state_bytes"  # what the model carries per sequence after the training length (KV cache too)
# Solved: val/acc at or above this (a run's stopping rule, `lmlab synth`'s `solved`, and the report's verdict: there,
# the whole interval); the step of the first of the validations in a row that stopped a run (None: not solved)
SOLVED = 0.99
STEPS_TO_SOLVE = "train/steps_to_solve"


def val_acc_at(factor: int) -> str:
    """Accuracy at the answers beyond the training length, in sequences `factor` times as long (1: all of them,
    `VAL_ACC`)."""
    return VAL_ACC if factor == 1 else f"val/acc_{factor}x"


def factor_of(name: str) -> int | None:
    """The k of a `val_acc_at(k)` name past 1x, or None for any other name."""
    middle = name.removeprefix("val/acc_").removesuffix("x")
    return int(middle) if name.startswith("val/acc_") and name.endswith("x") and middle.isdigit() else None


def synth_curve(factors: list[int]) -> tuple[str, ...]:
    """The val_curve.csv columns of a synthetic-task run evaluated at these multiples of its length."""
    return (STEP, TRAIN_TOKENS, TRAIN_FLOPS, TRAIN_WALL_SECONDS, VAL_LOSS, *map(val_acc_at, factors), TRAIN_LR)


# ----- lm-evaluation-harness (`lmlab harness`): a task's figures under the harness's own metric names -----
HARNESS = "harness/"  # harness/<task>/<metric> (acc, acc_norm, perplexity, ...), with the harness's stderr as
# its 95% interval (+-1.96 stderr) in the summary's `intervals`


def harness_metric(task: str, metric: str) -> str:
    return f"{HARNESS}{task}/{metric}"


# ----- inference -----
INFER_TOKENS_PER_SEC = "infer/tokens_per_sec"
INFER_MS_PER_TOKEN = "infer/ms_per_generated_token"
INFER_PEAK_MEMORY_MB = "infer/peak_memory_mb"

# One row per validation in a run folder's val_curve.csv (and the copies in metrics/seed<k>/curves/).
STEP = "step"
PRETRAIN_CURVE = (STEP, TRAIN_TOKENS, TRAIN_FLOPS, TRAIN_WALL_SECONDS, VAL_LOSS, VAL_PPL, VAL_BPB, TRAIN_LR)
FINETUNE_CURVE = (STEP, FINETUNE_VAL_LOSS, FINETUNE_VAL_ACC, FINETUNE_VAL_F1, TRAIN_LR)

# The curve files `lmlab evaluate` copies per family (metrics/seed<k>/curves/<family>/<name>.csv): pretraining's, and
# the fine-tuned classifier's and its from-scratch baseline's, by the prefix of their test figures.
PRETRAIN_CURVE_FILE = "pretrain"
FINETUNE_CURVE_FILES = {TEST: "finetune", SCRATCH_TEST: "scratch"}
CURVE_FILES = (PRETRAIN_CURVE_FILE, *FINETUNE_CURVE_FILES.values())
# ... and the length measurements it makes itself (`lmlab.jobs.long_context`): loss by position (position_from,
# position_to, loss), at and past the training window (factor, position_from, position_to, loss, low, high),
# generation (length, ms_per_token, state_bytes)
POSITION_FILE, LENGTH_FILE, GENERATION_FILE = "position", "length", "generation"
# One evaluation's files are published as a set (`lmlab.core.atomic.published_together`): a manifest beside its
# Setting names each by its role ("metrics", "setting", "sample", "examples", and `curve_role` of each curve file).
EVALUATION_MANIFEST = "manifest.json"


def curve_role(name: str) -> str:
    return f"curves/{name}"


# What `lmlab pretrain` reports: metrics.json keys and val_curve.csv columns (what a sweep may optimise).
PRETRAIN_SUMMARY = (
    VAL_LOSS,
    VAL_PPL,
    VAL_BPB,
    BEST_VAL_LOSS,
    PARAMS,
    EMBEDDING_PARAMS,
    TRAIN_STEPS,
    TRAIN_TOKENS,
    TRAIN_FLOPS,
    TRAIN_TOKENS_PER_SEC,
    TRAIN_WALL_SECONDS,
    TRAIN_LR,
)

# The figures runs are compared by (`lmlab compare`), in the order its CSV lists them.
COMPARED = (
    VAL_BPB,
    VAL_LOSS,
    VAL_PPL,
    TRAIN_LOSS,
    TEST_BPB,
    TEST_PPL,
    FINETUNE_VAL_ACC,
    FINETUNE_VAL_F1,
    TEST_ACC,
    TEST_F1,
    SCRATCH_TEST_ACC,
    SCRATCH_TEST_F1,
    PARAMS,
    TRAIN_TOKENS_PER_SEC,
    TRAIN_WALL_SECONDS,
)
HIGHER_IS_BETTER = ("acc", "f1", "tokens_per_sec")  # name endings; every other metric is better lower


def higher_is_better(name: str) -> bool:
    return name.endswith(HIGHER_IS_BETTER)


def perplexity(loss: float) -> float:
    """exp(loss), capped so that a diverged model reports a huge number instead of overflowing."""
    return math.exp(min(loss, 80.0))


def bits_per_byte(loss: float, tokens_per_byte: float) -> float:
    return loss / math.log(2) * tokens_per_byte


def lm_figures(split: str, loss: float, tokens_per_byte: float) -> dict[str, float]:
    """``<split>/loss``, ``<split>/ppl`` and ``<split>/bpb`` from nats per token."""
    return {
        f"{split}/loss": loss,
        f"{split}/ppl": perplexity(loss),
        f"{split}/bpb": bits_per_byte(loss, tokens_per_byte),
    }
