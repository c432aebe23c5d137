"""Gated DeltaNet (Yang, Kautz and Hatamizadeh 2024): linear attention whose state is edited by the delta rule
and decayed by a gate, per head (key size K, value size V):

    S_t = a_t S_(t-1) (I - b_t k_t k_t^T) + b_t v_t k_t^T       o_t = S_t q_t / sqrt(K)

q, k (L2-normalised) and v come from short causal convolutions of their projections; b = sigmoid(.) is the
writing strength, a = exp(-exp(A_log) softplus(. + dt_bias)) the decay (Mamba-2's gate). The output is
RMS-normed per head, gated by SiLU of a projection of the input, and projected back. Each layer is a mixer and
an MLP, as in flash-linear-attention's models.

A window runs chunkwise (fla's `naive.py` chunk reference reads the same way): within a chunk of
`chunk_size` tokens the delta rule's product of Householder-like factors becomes one triangular solve (the
WY representation: pseudo-values U and keys W with S_chunk = decayed S + K^T (U - W S)), outputs are a
masked, decayed attention plus the entering state's contribution, and the state passes chunk to chunk. One
token is the recurrence above. The layer's state is (the convolution's last inputs, S ``[B, heads, K, V]``).

`fused_kernels`: on CUDA with flash-linear-attention installed, windows use its Triton chunk kernel.

`negative_eigenvalues` (Grazzi et al., ICLR 2025): b = 2 sigmoid(.) in (0, 2), so I - b k k^T has the
eigenvalue 1 - b in (-1, 1) along k: the state can be reflected, which lets the layer track parity. The
chunkwise form is the same algebra for any b. Off by default (the paper's Gated DeltaNet).
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
class GatedDeltaNetConfig(BlockConfig):
    family: str = "gated_deltanet"
    heads: int = at_least(1, 2)
    head_dim: int = at_least(1, 32)  # K, the key size per head (fla's 1.3B model: 6 x 256 = 0.75 x width)
    expand_v: int = at_least(1, 2)  # V = expand_v x K
    conv_kernel: int = at_least(1, 4)
    chunk_size: int = at_least(1, 64)
    fused_kernels: bool = False  # flash-linear-attention's Triton kernel for windows, on CUDA
    negative_eigenvalues: bool = False  # writing strength in (0, 2): 2 sigmoid(.) (Grazzi et al. 2025)

    TUNABLE: ClassVar[tuple[str, ...]] = (*ModelConfig.TUNABLE, "chunk_size", "fused_kernels")


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_a: torch.Tensor,
    beta: torch.Tensor,
    chunk: int,
    S: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated delta rule over a window (S None: zeros). ``q, k [b, T, h, K]`` (q scaled), ``v [b, T, h, V]``,
    ``log_a, beta [b, T, h]``, ``S [b, h, K, V]`` -> outputs ``[b, T, h, V]`` and the state after the last."""
    b, length, heads, _ = q.shape
    chunk = min(chunk, length)  # a shorter window is one chunk, unpadded
    pad = (-length) % chunk  # padding: k = 0 and b = 0 write nothing, log a = 0 decays nothing
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
        log_a, beta = (F.pad(x, (0, 0, 0, pad)) for x in (log_a, beta))
    chunks = (length + pad) // chunk

    def per_chunk(x: torch.Tensor) -> torch.Tensor:  # [b, T, h, d] -> [b, h, chunks, chunk, d]
        return x.view(b, chunks, chunk, heads, -1).permute(0, 3, 1, 2, 4)

    q, k, v, beta = per_chunk(q), per_chunk(k), per_chunk(v), per_chunk(beta.unsqueeze(-1))
    G = log_a.view(b, chunks, chunk, heads).permute(0, 3, 1, 2).cumsum(dim=-1)  # [b, h, chunks, chunk]
    ones = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device)
    # exp(G_i - G_j) for i >= j (the decay from token j to token i), 0 above the diagonal
    decay = (G.unsqueeze(-1) - G.unsqueeze(-2)).masked_fill(~ones.tril(), -torch.inf).exp()
    k_beta = k * beta
    # WY representation: (I + A) with A_ij = b_i k_i.k_j decay_ij below the diagonal, solved once per chunk
    A = ((k_beta @ k.transpose(-1, -2)) * decay).masked_fill(~ones.tril(-1), 0)
    eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
    T = torch.linalg.solve_triangular(A + eye, eye.expand_as(A), upper=False, unitriangular=True)
    U = T @ (v * beta)  # pseudo-values
    W = T @ (k_beta * G.exp().unsqueeze(-1))  # what the entering state subtracts from them
    attn = (q @ k.transpose(-1, -2)) * decay
    to_end = (G[..., -1:] - G).exp().unsqueeze(-1)  # decay from each token to its chunk's end
    out = []
    for c in range(chunks):
        written = (k[:, :, c] * to_end[:, :, c]).transpose(-1, -2)
        if S is None:  # the zero state: nothing to read, subtract or decay
            new_v = U[:, :, c]
            out.append(attn[:, :, c] @ new_v)
            S = written @ new_v
            continue
        new_v = U[:, :, c] - W[:, :, c] @ S
        out.append((q[:, :, c] * G[:, :, c].exp().unsqueeze(-1)) @ S + attn[:, :, c] @ new_v)
        S = S * G[:, :, c, -1, None, None].exp() + written @ new_v
    o = torch.stack(out, dim=2).permute(0, 2, 3, 1, 4).reshape(b, chunks * chunk, heads, -1)
    return o[:, :length], S


class GatedDeltaNetMixer(nn.Module):
    def __init__(self, cfg: GatedDeltaNetConfig) -> None:
        super().__init__()
        self.heads, self.key_dim, self.value_dim = cfg.heads, cfg.head_dim, cfg.expand_v * cfg.head_dim
        self.chunk, self.fused = cfg.chunk_size, cfg.fused_kernels
        self.beta_scale = 2.0 if cfg.negative_eigenvalues else 1.0
        keys, values = cfg.heads * self.key_dim, cfg.heads * self.value_dim
        self.sizes = [keys, keys, values]
        self.qkv = nn.Linear(cfg.width, sum(self.sizes), bias=False)
        self.conv = ShortConv(sum(self.sizes), cfg.conv_kernel, bias=False)
        self.ab = nn.Linear(cfg.width, 2 * cfg.heads, bias=False)  # decay and writing strength, per head
        self.decay = DecayGate(cfg.heads, init_A=(0, 16))
        self.gate = nn.Linear(cfg.width, values, bias=False)
        self.norm = GatedRMSNorm(self.value_dim, norm_before_gate=True)
        self.out = nn.Linear(values, cfg.width, bias=False)

    def init_state(
        self, batch_size: int, device: torch.device | str, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        S = torch.zeros(batch_size, self.heads, self.key_dim, self.value_dim, device=device, dtype=dtype)
        return self.conv.init_state(batch_size, device, dtype), S

    def flops_per_token(self, context: int) -> float:
        """The projections and the convolution kernel (`weight_flops`), and the matmuls of `chunk_delta_rule`
        over a window of `context` tokens from a carried state (training's case), as chunks of c tokens (a
        shorter window is one chunk) padded to whole chunks; padding is computed, so it counts. Per chunk and
        head (key size K, value size V): k_beta k^T and q k^T (c x c x K each), the triangular solve for T
        (c^3 / 2 multiply-adds: LAPACK's m^2 n FLOPs, a level-3 BLAS routine as a matmul is), T's
        products with v and k (c x c x V, c x c x K), and the state read and written (W S and q S: c x K x V
        each, k^T new_v: K x c x V) beside attn new_v (c x c x V). L2 norms, gates, decays and the gated norm
        are elementwise."""
        chunk = min(self.chunk, context)
        chunks = -(-context // chunk)
        K, V = self.key_dim, self.value_dim
        multiply_adds = 3 * chunk * chunk * K + 2 * chunk * chunk * V + 3 * chunk * K * V + chunk**3 / 2
        return weight_flops(self) + 2 * chunks * self.heads * multiply_adds / context

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        conv_state, S = (None, None) if state is None else state
        b, length, _ = x.shape
        qkv, conv_state = self.conv(self.qkv(x), conv_state)
        q, k, v = (y.view(b, length, self.heads, -1) for y in qkv.split(self.sizes, dim=-1))
        q, k = F.normalize(q, dim=-1) * self.key_dim**-0.5, F.normalize(k, dim=-1)
        a, beta = self.ab(x).chunk(2, dim=-1)
        log_a, _ = self.decay(a)
        beta = self.beta_scale * beta.sigmoid()
        if self.fused and length > 1:
            o, S = fused_delta_rule(q, k, v, log_a, beta, S)
        elif length == 1:  # the recurrence: generation, one token at a time
            q, k, v, log_a, beta = q[:, 0], k[:, 0], v[:, 0], log_a[:, 0], beta[:, 0]
            if S is None:
                S = q.new_zeros(b, self.heads, self.key_dim, self.value_dim)
            S = S * log_a.exp()[..., None, None]
            new_v = (v - (k.unsqueeze(-2) @ S).squeeze(-2)) * beta.unsqueeze(-1)
            S = S + k.unsqueeze(-1) * new_v.unsqueeze(-2)
            o = (q.unsqueeze(-2) @ S).transpose(1, 2)
        else:
            o, S = chunk_delta_rule(q, k, v, log_a, beta, self.chunk, S)
        o = self.norm(o, self.gate(x).view(b, length, self.heads, -1))
        return self.out(o.reshape(b, length, -1)), (conv_state, S)


def fused_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_a: torch.Tensor, beta: torch.Tensor, S: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """flash-linear-attention's Triton chunk kernel for the gated delta rule (q already scaled)."""
    if not q.is_cuda:
        raise LmlabError(
            "model.fused_kernels=true runs flash-linear-attention's CUDA kernel: "
            "use a GPU (trainer=gpu) or set it false"
        )
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except ImportError as err:
        raise LmlabError(
            f"model.fused_kernels=true needs flash-linear-attention ({err}): "
            "`pip install flash-linear-attention`, or set it false"
        ) from None
    return chunk_gated_delta_rule(q, k, v, log_a, beta, scale=1.0, initial_state=S, output_final_state=True)


class GatedDeltaNetLM(BlockLM):
    def make_mixer(self, cfg: GatedDeltaNetConfig) -> nn.Module:
        return GatedDeltaNetMixer(cfg)
