"""Mamba-2 (Dao and Gu 2024, "Transformers are SSMs"): a selective state-space layer in its SSD form.

Per head h (head size P, state size N), with a scalar decay per token:

    h_t = exp(dt_t A) h_(t-1) + dt_t x_t B_t^T      (h: P x N)        y_t = h_t C_t + D x_t

x, B, C come from a short causal convolution of the input projection, dt = softplus(. + dt_bias), A < 0 per
head; y is normed, gated by SiLU(z) and projected back. The SSD algorithm computes a window in chunks of
`chunk_size` tokens (state-spaces/mamba's `ssd_minimal.py` reads the same way): within a chunk y is a masked,
decayed attention C B^T x (matrix multiplies); each chunk's final state passes to the next by the decay.
One token is the recurrence above. The layer's state is (the convolution's last inputs ``[B, kernel-1, C]``,
h ``[B, heads, P, N]``). Blocks are mixers alone (no MLP), as in Mamba's language models.

`fused_kernels`: on CUDA with mamba-ssm installed, windows use its Triton SSD kernel (the same algorithm).

`negative_eigenvalues` (Grazzi et al., ICLR 2025, "Unlocking State-Tracking in Linear RNNs Through Negative
Eigenvalues"): the decay ranges over (-1, 1) instead of (0, 1), as 2 exp(dt A) - 1, which lets the layer
flip its state's sign and so track parity. The scan keeps each decay as its log magnitude and a count of
negative factors, whose parity is the sign of a product of decays. Off by default (the paper's Mamba-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.core.errors import LmlabError
from lmlab.core.rules import at_least
from lmlab.models.base import ModelConfig, weight_flops
from lmlab.models.blocks import BlockConfig, BlockLM, DecayGate, GatedRMSNorm, ShortConv


@dataclass
class Mamba2Config(BlockConfig):
    family: str = "mamba2"
    layers: int = at_least(1, 3)
    mlp_ratio: int = at_least(0, 0)  # Mamba's blocks are the mixer alone
    expand: int = at_least(1, 2)  # inner size = expand x width
    state_size: int = at_least(1, 128)  # N
    heads: int = at_least(1, 4)  # head size P = inner size / heads (64 at the shipped width, as in the paper)
    groups: int = at_least(1, 1)  # heads of a group share B and C
    conv_kernel: int = at_least(1, 4)
    chunk_size: int = at_least(1, 64)  # SSD chunk (the paper's GPU kernel uses 256)
    fused_kernels: bool = False  # mamba-ssm's Triton kernel for windows, on CUDA
    negative_eigenvalues: bool = False  # decays in (-1, 1): 2 exp(dt A) - 1 (Grazzi et al. 2025)

    TUNABLE: ClassVar[tuple[str, ...]] = (*ModelConfig.TUNABLE, "chunk_size", "fused_kernels")


def segsum(x: torch.Tensor, above: float = -torch.inf) -> torch.Tensor:
    """``[..., T] -> [..., T, T]``: entry (i, j) = x_(j+1) + ... + x_i for i >= j, `above` above the diagonal.

    Summed from masked copies rather than as a difference of cumulative sums, which loses precision."""
    length = x.size(-1)
    ones = torch.ones(length, length, dtype=torch.bool, device=x.device)
    sums = x.unsqueeze(-1).expand(*x.shape, length).masked_fill(~ones.tril(-1), 0).cumsum(dim=-2)
    return sums.masked_fill(~ones.tril(), above)


def decayed(log_decay: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
    """A product of decays from its log magnitude and its count of negative factors (None: all positive)."""
    return log_decay.exp() if negatives is None else log_decay.exp() * (1 - 2 * torch.remainder(negatives, 2))


def ssd(
    x: torch.Tensor,
    log_a: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk: int,
    h0: torch.Tensor | None,
    negative: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD scan. ``x [b, T, heads, P]`` (already times dt), ``log_a [b, T, heads]`` (dt A; with `negative`,
    the log of the decay's magnitude), ``B, C [b, T, groups, N]`` shared by a group's heads, ``h0 [b, heads, P,
    N]`` (None: zeros), ``negative [b, T, heads]`` (1 where the decay is negative; None: none is) -> ``y [b, T,
    heads, P]`` (without D x) and the state after the last token. A group's C B^T is computed once, for all of
    its heads."""
    b, length, heads, _ = x.shape
    groups = B.size(2)
    chunk = min(chunk, length)  # a shorter window is one chunk, unpadded
    pad = (-length) % chunk  # padding: no input (x = 0) and no decay (log a = 0) leave the state as it is
    if pad:
        x, B, C = (F.pad(v, (0, 0, 0, 0, 0, pad)) for v in (x, B, C))
        log_a = F.pad(log_a, (0, 0, 0, pad))
        negative = F.pad(negative, (0, 0, 0, pad)) if negative is not None else None
    chunks = (length + pad) // chunk

    def per_chunk(v: torch.Tensor, per_group: int) -> torch.Tensor:  # -> [b, groups, per_group, chunks, chunk, d]
        return v.view(b, chunks, chunk, groups, per_group, -1).permute(0, 3, 4, 1, 2, 5)

    x, B, C = per_chunk(x, heads // groups), per_chunk(B, 1), per_chunk(C, 1)
    A = per_chunk(log_a, heads // groups).squeeze(-1)  # [b, groups, per_group, chunks, chunk]
    A_cum = A.cumsum(dim=-1)
    # negative decays: their count over each span, whose parity is the span's sign (None: every decay positive)
    Z = per_chunk(negative, heads // groups).squeeze(-1) if negative is not None else None
    Z_cum = Z.cumsum(dim=-1) if Z is not None else None

    # 1. within each chunk: decayed, causally masked attention C B^T x
    y = ((C @ B.transpose(-1, -2)) * decayed(segsum(A), None if Z is None else segsum(Z, above=0))) @ x
    # 2. each chunk's own final state, its inputs decayed to the chunk's end
    to_end = decayed(A_cum[..., -1:] - A_cum, None if Z_cum is None else Z_cum[..., -1:] - Z_cum)
    states = (x * to_end.unsqueeze(-1)).transpose(-1, -2) @ B  # [..., chunks, P, N]
    if h0 is None and chunks == 1:  # from the zero state in one chunk, nothing enters: steps 3 and 4 add nothing
        last = states[..., 0, :, :]
    else:
        # 3. the state entering each chunk: h0 and the earlier chunks' states, decayed chunk by chunk
        if h0 is None:
            h0 = x.new_zeros(b, heads, *states.shape[-2:])
        states = torch.cat([h0.view(b, groups, heads // groups, 1, *h0.shape[2:]), states], dim=3)
        chunk_signs = None if Z_cum is None else segsum(F.pad(Z_cum[..., -1], (1, 0)), above=0)
        decay = decayed(segsum(F.pad(A_cum[..., -1], (1, 0))), chunk_signs)  # [..., chunks + 1, chunks + 1]
        states = torch.einsum("...zc,...cpn->...zpn", decay, states)
        entering, last = states[..., :-1, :, :], states[..., -1, :, :]
        # 4. what the entering state adds to each position, decayed from the chunk's start
        y = y + (C @ entering.transpose(-1, -2)) * decayed(A_cum, Z_cum).unsqueeze(-1)
    y = y.permute(0, 3, 4, 1, 2, 5).reshape(b, chunks * chunk, heads, -1)[:, :length]
    return y, last.reshape(b, heads, *last.shape[-2:])


def step(
    x: torch.Tensor,
    log_a: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h: torch.Tensor | None,
    negative: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the recurrence: ``x [b, heads, P]`` (times dt), ``log_a [b, heads]``, ``B, C [b, groups, N]``,
    ``h [b, heads, P, N]`` (None: zeros), ``negative [b, heads]`` (as `ssd`'s) -> ``y [b, 1, heads, P]`` and the
    new h."""
    B, C = (v.repeat_interleave(x.size(1) // B.size(1), dim=1) for v in (B, C))  # per head: small copies
    h_new = x.unsqueeze(-1) * B.unsqueeze(-2)
    if h is not None:
        h_new = h_new + h * decayed(log_a, negative)[:, :, None, None]
    return (h_new @ C.unsqueeze(-1)).squeeze(-1).unsqueeze(1), h_new


class Mamba2Mixer(nn.Module):
    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        inner = cfg.expand * cfg.width
        if inner % cfg.heads or cfg.heads % cfg.groups:
            raise LmlabError(
                f"model.expand x model.width = {inner} must split into model.heads={cfg.heads} heads, "
                f"a multiple of model.groups={cfg.groups}"
            )
        self.inner, self.heads, self.head_dim = inner, cfg.heads, inner // cfg.heads
        self.groups, self.state_size, self.chunk = cfg.groups, cfg.state_size, cfg.chunk_size
        self.fused, self.negative_eigenvalues = cfg.fused_kernels, cfg.negative_eigenvalues
        if self.fused and self.negative_eigenvalues:
            raise LmlabError(
                "model.negative_eigenvalues=true has no mamba-ssm kernel (its decays are exp(dt A), never negative):"
                " set model.fused_kernels=false"
            )
        conv_channels = inner + 2 * cfg.groups * cfg.state_size
        self.in_proj = nn.Linear(cfg.width, inner + conv_channels + self.heads, bias=False)  # z, (x B C), dt
        self.conv = ShortConv(conv_channels, cfg.conv_kernel, bias=True)
        self.decay = DecayGate(self.heads)
        self.D = nn.Parameter(torch.ones(self.heads))
        self.norm = GatedRMSNorm(inner // cfg.groups, norm_before_gate=False)
        self.out_proj = nn.Linear(inner, cfg.width, bias=False)

    def init_state(
        self, batch_size: int, device: torch.device | str, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ssm = torch.zeros(batch_size, self.heads, self.head_dim, self.state_size, device=device, dtype=dtype)
        return self.conv.init_state(batch_size, device, dtype), ssm

    def flops_per_token(self, context: int) -> float:
        """The projections and the convolution kernel (`weight_flops`), and the matmuls of `ssd` over a window of
        `context` tokens from a carried state (training's case; a first window, from zeros, skips steps 3 and 4).
        The window runs as chunks of c tokens (a shorter window is one chunk), padded to whole chunks; padding is
        computed, so it counts. Per chunk: C B^T (c x c x N per group) and its product with x (c x c x P per
        head), the chunk's final state (P x c x N per head) and the entering state's outputs (c x N x P per
        head); per window, the states' chunk-to-chunk decay ((chunks + 1)^2 x P x N per head, dense as `ssd`
        computes it). Decays, exponentials and the gated norm are elementwise."""
        chunk = min(self.chunk, context)
        chunks = -(-context // chunk)
        P, N = self.head_dim, self.state_size
        per_chunk = self.groups * chunk * chunk * N + self.heads * P * chunk * (chunk + 2 * N)
        scan = 2 * (chunks * per_chunk + self.heads * (chunks + 1) ** 2 * P * N)
        return weight_flops(self) + scan / context

    def forward(
        self, u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        conv_state, h = (None, None) if state is None else state
        b, length, _ = u.shape
        z, xBC, a = self.in_proj(u).split([self.inner, self.conv.conv.in_channels, self.heads], dim=-1)
        xBC, conv_state = self.conv(xBC, conv_state)
        x, B, C = xBC.split([self.inner, self.groups * self.state_size, self.groups * self.state_size], dim=-1)
        x = x.view(b, length, self.heads, self.head_dim)
        B, C = (v.view(b, length, self.groups, self.state_size) for v in (B, C))
        log_a, dt = self.decay(a)
        negative = None
        if self.negative_eigenvalues:  # a = 2 exp(dt A) - 1 in (-1, 1), as its log magnitude and sign
            signed = 2 * log_a.exp() - 1
            negative = (signed < 0).to(log_a.dtype)
            log_a = signed.abs().clamp_min(1e-6).log()
        if self.fused and length > 1:
            y, h = fused_ssd(x, dt, -self.decay.A_log.exp(), B, C, self.chunk, h)
        elif length == 1:  # the recurrence: generation, one token at a time
            sign = negative[:, 0] if negative is not None else None
            y, h = step(x[:, 0] * dt[:, 0, :, None], log_a[:, 0], B[:, 0], C[:, 0], h, sign)
        else:
            y, h = ssd(x * dt.unsqueeze(-1), log_a, B, C, self.chunk, h, negative)
        y = y + x * self.D.unsqueeze(-1)
        y = self.norm(y.reshape(b, length, self.groups, -1), z.view(b, length, self.groups, -1))
        return self.out_proj(y.reshape(b, length, self.inner)), (conv_state, h)


def fused_ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk: int,
    h0: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """mamba-ssm's Triton SSD kernel: the `ssd` scan (dt applied inside), B and C per group."""
    if not x.is_cuda:
        raise LmlabError(
            "model.fused_kernels=true runs mamba-ssm's CUDA kernel: use a GPU (trainer=gpu) or set it false"
        )
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except ImportError as err:
        raise LmlabError(
            f"model.fused_kernels=true needs mamba-ssm ({err}): `pip install mamba-ssm`, or set it false"
        ) from None
    return mamba_chunk_scan_combined(x, dt, A, B, C, chunk, initial_states=h0, return_final_states=True)


class Mamba2LM(BlockLM):
    def make_mixer(self, cfg: Mamba2Config) -> nn.Module:
        return Mamba2Mixer(cfg)
