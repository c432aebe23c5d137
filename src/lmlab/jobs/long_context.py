"""Where the families differ with length: loss by position, loss past the training length, generation cost.

- Loss by position (Kaplan et al. 2020, Fig. 7): test text cut into windows of `FACTORS[-1]` times the
  training window, each read from a fresh state; the mean loss at every position, in log2 buckets. A model
  that uses what it has read keeps improving across the window; an LSTM's curve flattens after ~100 tokens.
- Loss at 1x the training window (its positions 0 .. W-1), and at 2x and 4x: the positions past the training
  window up to k x W (W .. kW-1), what no training window reached, as the synthetic tasks' kx accuracies;
  each with a bootstrap interval over windows. Recurrent families run on; a Transformer with rotary positions is rebuilt
  with a longer context (same weights: its position tables are computed, not learned) and degrades; one with
  learned positions has no rows there, and gets no figure.
- Generation against length: one sequence, its state read up to `TAIL` tokens before each length as a
  prompt is, then the ms per token generating those `TAIL` one at a time, and the bytes of the state there
  (a KV cache grows, a recurrent state does not). `bench/generation.py` runs the same measurement on
  untrained models up to longer lengths.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmlab.analysis import stats
from lmlab.core.atomic import write_atomic
from lmlab.core.errors import LmlabError
from lmlab.data.lm import window_batch
from lmlab.models import LanguageModel, build_model, state_bytes

log = logging.getLogger(__name__)

FACTORS = (1, 2, 4)  # multiples of the training window the loss is measured at
TAIL = 32  # tokens timed before each generation length
PREFILL = 1024  # tokens a forward pass reads before the timed ones (a Transformer's attention is its square)


def stretched(model: LanguageModel, length: int) -> LanguageModel | None:
    """The model able to read `length` tokens from a fresh start: itself, the same weights with a longer
    computed position table (rotary), or None when its positions are a learned table that ends sooner."""
    limit = model.max_positions
    if limit is None or limit >= length:
        return model
    if getattr(model.cfg, "positions", None) != "rotary":
        return None
    device = next(model.parameters()).device
    longer = build_model(replace(model.cfg, context=length), model.vocab_size)
    longer.load_state_dict(model.state_dict())
    return longer.to(device).eval()


def log2_buckets(length: int) -> list[tuple[int, int]]:
    """Positions [0, 1), [1, 2), [2, 4), [4, 8), ... up to `length`: even detail on a log axis."""
    edges = [0, *(2**k for k in range(length.bit_length()) if 2**k < length), length]
    return list(zip(edges[:-1], edges[1:], strict=True))


@torch.inference_mode()
def window_losses(
    model: LanguageModel, tokens: np.ndarray, length: int, max_windows: int, batch: int, device: str
) -> np.ndarray:
    """Nats at every position ``[windows, length]`` of consecutive non-overlapping windows of the text, each
    read from a fresh state (at most `max_windows`)."""
    model.eval()
    windows = min(max_windows, (len(tokens) - 1) // length)
    if windows == 0:
        log.warning("the test split (%d tokens) holds no window of %d tokens: no loss by position", len(tokens), length)
    rows = []
    for first in range(0, windows, batch):
        starts = np.arange(first, min(first + batch, windows)) * length
        inputs, targets, _ = window_batch(tokens, starts, length)
        logits, _ = model(inputs.to(device))
        nats = F.cross_entropy(logits.flatten(0, 1).float(), targets.to(device).flatten(), reduction="none")
        rows.append(nats.view(targets.shape).double().cpu())
    return torch.cat(rows).numpy() if rows else np.zeros((0, length))


def by_position(nats: np.ndarray) -> list[dict[str, float]]:
    """Mean loss per log2 bucket of positions: rows of (from, to, loss) for the curve file (none without
    windows)."""
    if len(nats) == 0:
        return []
    return [
        {"position_from": a, "position_to": b, "loss": float(nats[:, a:b].mean())}
        for a, b in log2_buckets(nats.shape[1])
    ]


def beyond_training(nats: np.ndarray, window: int) -> list[dict[str, float]]:
    """For every k in FACTORS that fits: the loss at the training window's positions (k = 1) or at the positions
    past it up to k x `window` (W .. kW-1), with its interval (a bootstrap over windows)."""
    rows = []
    for factor in FACTORS:
        begin, end = (0, window) if factor == 1 else (window, factor * window)
        if end > nats.shape[1] or len(nats) == 0:
            continue
        interval = stats.mean_loss(nats[:, begin:end].sum(1), np.full(len(nats), end - begin))
        rows.append(
            {
                "factor": factor,
                "position_from": begin,
                "position_to": end,
                "loss": interval.estimate,
                "low": interval.low,
                "high": interval.high,
            }
        )
    return rows


def check_lengths(lengths: list[int]) -> None:
    """Generation lengths each time the `TAIL` tokens before them: at least that long, and that far apart."""
    ordered = sorted(lengths)
    if not ordered or ordered[0] < TAIL or any(b - a < TAIL for a, b in zip(ordered, ordered[1:], strict=False)):
        raise LmlabError(
            f"generation_lengths={lengths}: give one or more lengths of at least {TAIL} tokens, each at least "
            f"{TAIL} apart (the {TAIL} tokens before a length are timed), e.g. [64, 256, 1024, 4096]"
        )


@torch.inference_mode()
def generation_profile(
    model: LanguageModel, lengths: list[int], device: str = "cpu", chunk: int = PREFILL
) -> list[dict[str, float]]:
    """At each length n, the ms per token of generating the `TAIL` tokens before it one at a time (greedily) and
    the state's bytes at n. The tokens before each timed span are read as a prompt is, in forward passes of
    `chunk` tokens: a step's cost depends on what the state holds, not on how it got there, and stepping
    through thousands of tokens only to reach a length took most of `lmlab evaluate`'s time. Lengths a learned
    position table does not reach are left out."""
    check_lengths(lengths)
    model.eval()
    longer = stretched(model, max(lengths))
    if longer is None:
        lengths = [n for n in lengths if n <= (model.max_positions or n)]
    else:
        model = longer
    state = model.init_state(1, device)
    token = torch.zeros(1, 1, dtype=torch.long, device=device)
    rows, position = [], 0
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for length in sorted(lengths):
        while position < length - TAIL:  # `check_lengths`: the timed spans do not overlap
            read = min(chunk, length - TAIL - position)
            logits, state = model(token.expand(1, read), state)
            token, position = logits[:, -1].argmax(-1, keepdim=True), position + read
        sync()
        started = time.perf_counter()
        for _ in range(TAIL):
            logits, state = model(token, state)
            token = logits[:, -1].argmax(-1, keepdim=True)
        sync()
        ms = (time.perf_counter() - started) * 1000 / TAIL
        position = length
        rows.append({"length": length, "ms_per_token": ms, "state_bytes": state_bytes(state)})
    return rows


def write_rows(path: Path, rows: list[dict[str, float]]) -> None:
    """A curve file, whole or not at all; an empty list writes an empty file (a figure the model cannot give)."""
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(path, text.getvalue().encode())
