"""`lmlab.jobs.long_context`: loss by position, loss past the training window, and generation cost against length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmlab.core.errors import LmlabError
from lmlab.jobs.long_context import (
    beyond_training,
    by_position,
    generation_profile,
    log2_buckets,
    stretched,
    window_losses,
)
from lmlab.models import FAMILIES, build_model, family_config


def tiny(family: str, **keys: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(family_config({"family": family, "width": 16, "layers": 1, **keys}), 50).eval()


def test_buckets_cover_every_position_once() -> None:
    assert log2_buckets(16) == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16)]
    assert log2_buckets(12) == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 12)]


def test_a_rotary_transformer_reads_past_its_context_with_the_same_weights() -> None:
    model = tiny("transformer", context=8, heads=2)
    tokens = torch.randint(0, 50, (2, 8))
    longer = stretched(model, 32)
    assert longer is not model and longer.cfg.context == 32
    with torch.no_grad():
        assert torch.allclose(longer(tokens)[0], model(tokens)[0], atol=1e-5)  # the first 8 positions agree
        longer(torch.randint(0, 50, (1, 32)))  # and it reads 32
    assert stretched(tiny("transformer", context=8, heads=2, positions="learned"), 32) is None
    lstm = tiny("lstm")
    assert stretched(lstm, 10_000) is lstm


def test_windows_start_from_a_fresh_state_and_positions_line_up() -> None:
    """Each window's nats equal reading it alone; position t of every window is column t."""
    model = tiny("gru")
    tokens = np.random.default_rng(0).integers(0, 50, 200)
    nats = window_losses(model, tokens, 16, max_windows=5, batch=2, device="cpu")
    assert nats.shape == (5, 16)
    with torch.no_grad():
        third = torch.from_numpy(tokens[32:49].astype(np.int64))
        logits, _ = model(third[None, :-1])
        alone = F.cross_entropy(logits[0], third[1:], reduction="none").double().numpy()
    assert np.allclose(nats[2], alone, atol=1e-5)
    rows = by_position(nats)
    assert [(r["position_from"], r["position_to"]) for r in rows] == log2_buckets(16)
    assert rows[0]["loss"] == pytest.approx(nats[:, 0].mean())
    spans = beyond_training(nats, 4)
    assert [r["factor"] for r in spans] == [1, 2, 4]
    assert spans[0]["loss"] == pytest.approx(nats[:, :4].mean()) and spans[0]["low"] <= spans[0]["loss"]
    assert spans[2]["loss"] == pytest.approx(nats[:, 4:16].mean())  # past the training window only
    assert (spans[1]["position_from"], spans[1]["position_to"]) == (4, 8)
    assert by_position(np.zeros((0, 16))) == [] and beyond_training(np.zeros((0, 16)), 4) == []


def test_the_kv_cache_grows_with_length_and_a_recurrent_state_does_not() -> None:
    """Bytes, not time: the figure generation memory is about (times are measured by bench/ and evaluate)."""
    lengths = [32, 64, 128]
    transformer = generation_profile(tiny("transformer", context=16, heads=2), lengths)
    assert [r["length"] for r in transformer] == lengths
    kv = [r["state_bytes"] for r in transformer]
    assert kv == [n * 2 * 16 * 4 for n in lengths]  # keys and values, 16 wide, float32, one layer
    chunked = generation_profile(tiny("transformer", context=16, heads=2), lengths, chunk=5)  # a prompt in pieces
    assert [r["state_bytes"] for r in chunked] == kv
    for family in sorted(set(FAMILIES) - {"transformer"}):  # every recurrent family of the table
        sizes = {r["state_bytes"] for r in generation_profile(tiny(family), lengths)}
        assert len(sizes) == 1, (family, sizes)
    learned = generation_profile(tiny("transformer", context=64, heads=2, positions="learned"), lengths)
    assert [r["length"] for r in learned] == [32, 64]  # its table ends at 64
    for lengths in ([16, 64], [32, 48], []):  # each timed span is the 32 tokens before its length, apart
        with pytest.raises(LmlabError, match="generation_lengths"):
            generation_profile(tiny("lstm"), lengths)
