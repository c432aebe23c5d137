"""What the parallel-trainable recurrent families share (minGRU, Mamba-2, Gated DeltaNet), as in
flash-linear-attention's models: a residual stack whose token mixer is the family's own layer.

    x = embedding(tokens)
    per layer:  x = x + mixer(norm(x));  x = x + MLP(norm(x))   (no MLP where mlp_ratio is 0: Mamba's blocks)
    features = norm(x)

A mixer holds its own state: ``init_state(batch, device, dtype)`` and ``forward(x, state) -> (y, state)``,
the whole window at once (the parallel form) or, for ``x`` of one token, one step of the recurrence. A
``None`` state is the initial (zero) state, known without looking: a fresh start (every fine-tuning
document) spends nothing on reading it. The model's state is the tuple of its layers' states. A mixer also
counts its forward FLOPs per token, ``flops_per_token(context)`` (its weights and any matmuls of its scan),
for the model's `LanguageModel.flops_per_token`. The short causal convolution and the gated output norm that
Mamba-2 and Gated DeltaNet both use live here too, as do their decay gates' initialisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.core.errors import LmlabError
from lmlab.core.rules import at_least, fraction
from lmlab.models.base import MLP, LanguageModel, ModelConfig, State, weight_flops


@dataclass
class BlockConfig(ModelConfig):
    """The keys of a residual stack; the family adds its mixer's."""

    width: int = at_least(1, 128)  # residual width; embed_dim must be null or equal to it
    dropout: float = fraction(0.1)  # on the residual branches
    mlp_ratio: int = at_least(0, 4)  # MLP hidden size / width; 0: mixer-only blocks


class Block(nn.Module):
    def __init__(self, cfg: BlockConfig, mixer: nn.Module) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.width)
        self.mixer = mixer
        self.norm2 = nn.RMSNorm(cfg.width) if cfg.mlp_ratio else None
        # the Transformer's MLP, so that families differ in their mixer alone
        self.mlp = MLP(cfg.width, cfg.mlp_ratio, bias=False, dropout=cfg.dropout) if cfg.mlp_ratio else None
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y, state = self.mixer(self.norm1(x), state)
        x = x + self.dropout(y)
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x, state


class BlockLM(LanguageModel):
    """A residual stack of `make_mixer` layers; stateful: training carries every mixer's state (TBPTT)."""

    stateful = True

    def __init__(self, cfg: BlockConfig, vocab_size: int) -> None:
        if cfg.embed_dim not in (None, cfg.width):
            raise LmlabError(f"model.embed_dim={cfg.embed_dim} must be null or equal model.width for {cfg.family}")
        super().__init__(cfg, vocab_size)
        self.blocks = nn.ModuleList(Block(cfg, self.make_mixer(cfg)) for _ in range(cfg.layers))
        self.norm = nn.RMSNorm(cfg.width)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def make_mixer(self, cfg: BlockConfig) -> nn.Module:
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        dtype = self.embedding.weight.dtype
        return tuple(block.mixer.init_state(batch_size, device, dtype) for block in self.blocks)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embedding, then each block; the final norm joins the top block."""
        blocks = [list(block.parameters()) for block in self.blocks]
        blocks[-1] += list(self.norm.parameters())
        return [list(self.embedding.parameters()), *blocks]

    def flops_per_token(self, context: int) -> float:
        """Per block the mixer's count (its own `flops_per_token`: weights and scan) and the MLP's weights, then
        the output layer; norms and residual adds are elementwise."""
        blocks = sum(block.mixer.flops_per_token(context) + weight_flops(block.mlp) for block in self.blocks)
        return blocks + weight_flops(self.head)

    def encode(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        x = self.embed_dropout(self.embedding(tokens))
        last = []
        for block, layer_state in zip(self.blocks, state or (None,) * len(self.blocks), strict=True):
            x, layer_state = block(x, layer_state)
            last.append(layer_state)
        return self.norm(x), tuple(last)


class ShortConv(nn.Module):
    """Depthwise causal convolution over time (kernel 4 in Mamba-2 and Gated DeltaNet), then SiLU.

    Its state is the last ``kernel - 1`` inputs ``[B, kernel - 1, channels]``: a window continues where the
    previous one stopped, and one token is one dot product with the kernel."""

    def __init__(self, channels: int, kernel: int, bias: bool) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(channels, channels, kernel, groups=channels, bias=bias)

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch_size, self.kernel - 1, self.conv.in_channels, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, T, C]`` after the inputs in ``state`` (None: zeros): outputs ``[B, T, C]`` and the new state."""
        window = F.pad(x, (0, 0, self.kernel - 1, 0)) if state is None else torch.cat([state, x], dim=1)
        if x.size(1) == 1:  # one step: the kernel over the last `kernel` inputs
            y = torch.einsum("bkc,ck->bc", window, self.conv.weight.squeeze(1)).unsqueeze(1)
            if self.conv.bias is not None:
                y = y + self.conv.bias
        else:
            y = self.conv(window.transpose(1, 2)).transpose(1, 2)
        return F.silu(y), window[:, -(self.kernel - 1) :]


class GatedRMSNorm(nn.Module):
    """The output gated by SiLU of a projection of the block's input, RMS-normed over the last dimension:
    the gate applied before the norm (Mamba-2's RMSNormGated) or after it (Gated DeltaNet's, per head)."""

    def __init__(self, size: int, norm_before_gate: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(size, eps=eps)
        self.norm_before_gate = norm_before_gate

    def forward(self, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        if self.norm_before_gate:
            return self.norm(y) * F.silu(gate)
        return self.norm(y * F.silu(gate))


class DecayGate(nn.Module):
    """Per-head log decay per token, ``-exp(A_log) * softplus(a + dt_bias)`` (Mamba-2's dt x A, which Gated
    DeltaNet takes over): A uniform in `init_A` ([1, 16] in Mamba-2, [0, 16] in Gated DeltaNet), dt
    log-uniform in [0.001, 0.1] at initialisation, as in both papers' code. Returns the log decay and dt."""

    def __init__(
        self,
        heads: int,
        init_A: tuple[float, float] = (1, 16),
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.A_log = nn.Parameter(torch.empty(heads).uniform_(*init_A).log())
        dt = torch.exp(torch.rand(heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp_min(dt_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt

    def forward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``a [B, T, heads]`` -> (log decay, dt), both ``[B, T, heads]``."""
        dt = F.softplus(a + self.dt_bias)
        return -self.A_log.exp() * dt, dt
