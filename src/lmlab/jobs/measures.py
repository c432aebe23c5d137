"""The test measurements `lmlab evaluate` makes of one family, each the same for every family: the language
model's loss by block (what its interval resamples), inference speed and peak memory, a seeded sample and
generation latency from a real prompt, and a classifier's figures and predictions on the test documents."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from lmlab.analysis.classification import classification_metrics, summarize
from lmlab.core import metrics as M
from lmlab.data.corpus import Corpus
from lmlab.data.labeled import LabeledSplit, OrderedDocuments
from lmlab.data.lm import EvalWindows
from lmlab.jobs.config import EvaluateConfig
from lmlab.jobs.generate import encode_prompt, generate
from lmlab.models import LanguageModel, carried


def document_start(corpus: Corpus, sp: spm.SentencePieceProcessor, tokens: int) -> str:
    """The first `tokens` tokens of the test split's first document: the samples' prompt. Every family
    continues the same real text; an empty prompt would favour a model that has learned how documents begin."""
    stream = corpus.tokens("test")
    end = np.flatnonzero(stream[: tokens + 1] == corpus.eod_id)
    ids = stream[: min(tokens, int(end[0]) if len(end) else tokens)]
    return readable(sp.decode([int(i) for i in ids]))


def readable(text: str) -> str:
    """Text without U+FFFD: a cut multi-byte character (byte-fallback pieces) decodes to it."""
    return text.replace("\ufffd", "")


@torch.inference_mode()
def lm_loss(
    model: LanguageModel, corpus: Corpus, split: str, batch: int, window: int, max_tokens: int | None, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """Summed nats and predicted tokens per block of the split (or of its first `max_tokens`): a block is one
    row of one window, state carried from block to block for recurrent families. Their sums give the loss;
    the blocks are what its interval resamples (`lmlab.analysis.stats.mean_loss`)."""
    model.eval()
    nats, tokens = [], []
    state = None
    for inputs, targets, reset in EvalWindows(
        corpus.tokens(split), batch, window, model.stateful, max_tokens=max_tokens
    ):
        logits, state = model(inputs.to(device), carried(model, state, reset))
        per_token = F.cross_entropy(logits.flatten(0, 1).float(), targets.to(device).flatten(), reduction="none")
        nats.append(per_token.view(targets.shape).double().sum(1).cpu())
        tokens.append(torch.full((len(targets),), targets.shape[1], dtype=torch.int64))
    return torch.cat(nats).numpy(), torch.cat(tokens).numpy()


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
    with (
        without_stderr(),
        torch.inference_mode(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        model(inputs)
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return float(peak + sum(p.numel() * p.element_size() for p in model.parameters()))


@contextmanager
def without_stderr() -> Iterator[None]:
    """The process's stderr (fd 2) sent to /dev/null for the block: the profiler's C++ side prints
    "USDT: ... profiler_start/stop" lines there that no setting turns off and no user can act on."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def sample_and_latency(
    model: LanguageModel, sp: spm.SentencePieceProcessor, prompt: str, cfg: EvaluateConfig
) -> tuple[str, float]:
    """A seeded continuation of `prompt` (`generate_tokens`, not stopping at a document end) and milliseconds
    per token."""
    ids = encode_prompt(sp, prompt)
    list(generate(model, ids, 4, temperature=0.8, top_p=0.95, seed=cfg.seed))  # warm-up
    started = time.perf_counter()
    new = list(generate(model, ids, cfg.generate_tokens, temperature=0.8, top_p=0.95, seed=cfg.seed))
    latency = (time.perf_counter() - started) * 1000 / max(len(new), 1)
    return readable(sp.decode([i for i in new if i != sp.eos_id()])), latency


@torch.inference_mode()
def classify(
    model: torch.nn.Module, split: LabeledSplit, classes: list[str], prefix: str, max_tokens: int, device: str
) -> tuple[dict[str, Any], np.ndarray]:
    """The classifier's test figures, and its predicted class for each document (in the split's order)."""
    model.eval()
    metrics = classification_metrics(len(classes)).to(device)
    order = OrderedDocuments(split, 256, max_tokens)
    predicted = np.empty(len(split), dtype=np.int64)
    done = 0
    for tokens, lengths, labels in order:
        logits = model(tokens.to(device), lengths.to(device))
        metrics.update(logits, labels.to(device))
        predicted[order.indices[done : done + len(labels)]] = logits.argmax(-1).cpu().numpy()
        done += len(labels)
    return summarize(metrics, prefix, classes), predicted
