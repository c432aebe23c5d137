"""`lmlab evaluate`: one family's test figures, measured the same way for every family.

- Language model (the pretraining run's best checkpoint): test loss, ``test/ppl``
  and ``test/bpb`` over the corpus test split, state carried through the
  split for recurrent families, context-sized windows for transformers.
- Classifier (the fine-tuning run's best checkpoint, and the from-scratch
  baseline's): ``test/acc``, ``test/f1`` (macro), per-class precision and
  recall, the confusion matrix, and ``scratch/test/*`` for the baseline.
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
import time
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from lmlab import metrics as M
from lmlab.checkpoints import load_classifier, load_language_model
from lmlab.config import EvaluateConfig
from lmlab.data.atomic import NUMBER, read_json, write_atomic, write_json
from lmlab.data.corpus import Corpus
from lmlab.data.labeled import LabeledSet, OrderedDocuments
from lmlab.data.lm import EvalWindows
from lmlab.errors import LmlabError
from lmlab.generate import encode_prompt, generate
from lmlab.models import LanguageModel, carried
from lmlab.runs import open_corpus
from lmlab.tasks.finetune import classification_metrics, summarize

log = logging.getLogger(__name__)


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    corpus = open_corpus(cfg.paths, cfg.data.name, cfg.tokenizer)
    pretrain_run, finetune_run = Path(cfg.pretrain_run), Path(cfg.finetune_run)
    lm = load_language_model(pretrain_run / "checkpoints" / "best.ckpt", cfg.device)
    check_vocabulary(lm.model.vocab_size, corpus, pretrain_run)
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
    loss = lm_loss(lm.model, corpus, "test", cfg.batch_size, window, cfg.max_tokens, cfg.device)
    metrics |= M.lm_figures("test", loss, corpus.tokens_per_byte("test"))
    metrics |= inference_speed(lm.model, corpus, cfg.batch_size, window, cfg.speed_tokens, cfg.device)
    sample, latency = sample_and_latency(lm.model, corpus.tokenizer_file, cfg)
    metrics[M.INFER_MS_PER_TOKEN] = latency

    labeled = LabeledSet.open(corpus)
    test = labeled.split("test")
    runs = {M.TEST: finetune_run} | ({M.SCRATCH_TEST: Path(cfg.scratch_run)} if cfg.scratch_run else {})
    for prefix, run in runs.items():
        clf = load_classifier(run / "checkpoints" / "best.ckpt", cfg.device)
        if clf.classes != labeled.classes:
            raise LmlabError(
                f"{run}/checkpoints/best.ckpt classifies {clf.classes}, but the labeled set in {corpus.folder} has "
                f"classes {labeled.classes}: fine-tune again on this labeled set"
            )
        metrics |= classify(clf.model, test, labeled.classes, prefix, clf.max_tokens, cfg.device)
    log.info("evaluated %s in %.1fs: %s", cfg.family, time.perf_counter() - started, headline(metrics))

    write_curves(Path(cfg.curves_dir), pretrain_run, runs)
    write_atomic(Path(cfg.sample_file), (sample + "\n").encode())
    write_json(Path(cfg.out), metrics)
    return metrics


def headline(metrics: dict[str, Any]) -> str:
    keys = (M.TEST_PPL, M.TEST_BPB, M.TEST_ACC, M.SCRATCH_TEST_ACC, M.INFER_TOKENS_PER_SEC)
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)


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


@torch.inference_mode()
def lm_loss(
    model: LanguageModel, corpus: Corpus, split: str, batch: int, window: int, max_tokens: int | None, device: str
) -> float:
    """Mean nats per token over the split (or its first `max_tokens`), state carried for recurrent families."""
    model.eval()
    nats = tokens = 0.0
    state = None
    for inputs, targets, reset in EvalWindows(
        corpus.tokens(split), batch, window, model.stateful, max_tokens=max_tokens
    ):
        logits, state = model(inputs.to(device), carried(model, state, reset))
        nats += float(F.cross_entropy(logits.flatten(0, 1).float(), targets.to(device).flatten(), reduction="sum"))
        tokens += targets.numel()
    return nats / max(tokens, 1)


@torch.inference_mode()
def inference_speed(
    model: LanguageModel, corpus: Corpus, batch: int, window: int, budget: int, device: str
) -> dict[str, float]:
    """Tokens per second of forward passes over test windows, after one warm-up batch; and peak memory."""
    model.eval()
    batches = list(EvalWindows(corpus.tokens("test"), batch, window, model.stateful, max_tokens=budget, name="test"))
    model(batches[0][0].to(device))  # warm-up: first-call allocations and kernel selection
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    started, state, count = time.perf_counter(), None, 0
    for inputs, _, reset in batches:
        _, state = model(inputs.to(device), carried(model, state, reset))
        count += inputs.numel()
    sync()
    speed = count / (time.perf_counter() - started)
    return {M.INFER_TOKENS_PER_SEC: speed, M.INFER_PEAK_MEMORY_MB: peak_memory(model, batches[0][0], device) / 2**20}


def peak_memory(model: LanguageModel, inputs: torch.Tensor, device: str) -> float:
    """Bytes at the peak of one forward pass over `inputs`, parameters included."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            model(inputs.to(device))
        return float(torch.cuda.max_memory_allocated())
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(inputs)
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return float(peak + sum(p.numel() * p.element_size() for p in model.parameters()))


def sample_and_latency(model: LanguageModel, tokenizer: Path, cfg: EvaluateConfig) -> tuple[str, float]:
    """A seeded sample of `generate_tokens` (not stopping at a document end) and milliseconds per token."""
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    prompt = encode_prompt(sp, cfg.prompt)
    list(generate(model, prompt, 4, temperature=0.8, top_p=0.95, seed=cfg.seed))  # warm-up
    started = time.perf_counter()
    ids = list(generate(model, prompt, cfg.generate_tokens, temperature=0.8, top_p=0.95, seed=cfg.seed))
    latency = (time.perf_counter() - started) * 1000 / max(len(ids), 1)
    return cfg.prompt + sp.decode([i for i in ids if i != sp.eos_id()]), latency


@torch.inference_mode()
def classify(model: torch.nn.Module, split: Any, classes: list[str], prefix: str, max_tokens: int, device: str) -> dict:
    model.eval()
    metrics = classification_metrics(len(classes)).to(device)
    for tokens, lengths, labels in OrderedDocuments(split, 256, max_tokens):
        metrics.update(model(tokens.to(device), lengths.to(device)), labels.to(device))
    return summarize(metrics, prefix, classes)


def write_curves(folder: Path, pretrain_run: Path, finetune_runs: dict[str, Path]) -> None:
    """The runs' val curves as `M.CURVE_FILES` (the report combines them for DVC's plots)."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = [
        (pretrain_run, M.PRETRAIN_CURVE_FILE),
        *((run, M.FINETUNE_CURVE_FILES[p]) for p, run in finetune_runs.items()),
    ]
    for source, name in runs:
        curve = source / "val_curve.csv"
        if not curve.is_file():
            raise LmlabError(f"no {curve}: the run did not validate; run it again")
        write_atomic(folder / f"{name}.csv", curve.read_bytes())
