"""Decoder-only Transformer: pre-norm blocks, causal `scaled_dot_product_attention`, GELU MLP.

The state is a KV cache: per layer the keys and values of every position
seen so far, ``[B, heads, T, head_dim]`` each, so that generating a token
costs one position. Training runs without one (each window starts over).

Positions are rotary (applied to queries and keys, so the model has no
position table and no hard length limit from one) or a learned table of
`context` rows. Initialization follows GPT-2: normal(0, 0.02) everywhere, the
projections that write into the residual stream scaled by 1/sqrt(2 * layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.core.errors import LmlabError
from lmlab.core.rules import at_least, fraction, one_of
from lmlab.models.base import MLP, LanguageModel, ModelConfig, State, weight_flops


@dataclass
class TransformerConfig(ModelConfig):
    family: str = "transformer"
    layers: int = at_least(1, 2)
    width: int = at_least(1, 128)  # residual width; embed_dim must be null or equal to it
    dropout: float = fraction(0.1)  # attention weights and residual branches
    heads: int = at_least(1, 4)
    context: int = at_least(1, 256)  # window length in training, and the longest input it accepts
    positions: str = one_of(("rotary", "learned"), "rotary")
    mlp_ratio: int = at_least(1, 4)
    bias: bool = False  # in linear layers and layer norms


# Per layer: (keys, values), each [B, heads, T, head_dim].
KVCache = tuple[tuple[torch.Tensor, torch.Tensor], ...]


def rotary_tables(context: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[context, head_dim / 2]`` for rotating feature pairs by position."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, T, D]``'s (first half, second half) feature pairs by each position's angle."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=cfg.bias)
        self.out = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.residual_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Attend over the cached positions and the new ones; return the output and the extended cache."""
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        past = cache[0].size(2) if cache is not None else 0
        if cache is not None:
            k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
            cache = (k, v)
        mask = None  # past == 0: plain causal; one new token: it may see every cached position
        if past and length > 1:  # new tokens see the cache and the new tokens before them
            mask = torch.ones(length, past + length, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=past == 0
        )
        return self.residual_dropout(self.out(y.transpose(1, 2).reshape(batch, length, width))), cache


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.mlp = MLP(cfg.width, cfg.mlp_ratio, cfg.bias, cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        attended, cache = self.attn(self.norm1(x), rotary, cache)
        x = x + attended
        return x + self.mlp(self.norm2(x)), cache


class TransformerLM(LanguageModel):
    def __init__(self, cfg: TransformerConfig, vocab_size: int) -> None:
        if cfg.embed_dim not in (None, cfg.width):
            raise LmlabError(f"model.embed_dim={cfg.embed_dim} must be null or equal model.width for a transformer")
        if cfg.width % cfg.heads:
            raise LmlabError(f"model.width={cfg.width} must split evenly into model.heads={cfg.heads} heads")
        if cfg.positions == "rotary" and (cfg.width // cfg.heads) % 2:
            raise LmlabError(
                f"model.width={cfg.width} / model.heads={cfg.heads} gives heads of odd size "
                f"{cfg.width // cfg.heads}; rotary positions rotate feature pairs, so the head size must be even"
            )
        super().__init__(cfg, vocab_size)
        self.position = nn.Embedding(cfg.context, cfg.width) if cfg.positions == "learned" else None
        if cfg.positions == "rotary":
            cos, sin = rotary_tables(cfg.context, cfg.width // cfg.heads)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("out.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * cfg.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def max_positions(self) -> int:
        return self.cfg.context

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embeddings (token and learned positions), then each block; the final norm joins the top block."""
        embeddings = [self.embedding.weight, *(self.position.parameters() if self.position is not None else [])]
        blocks = [list(block.parameters()) for block in self.blocks]
        blocks[-1] += list(self.norm.parameters())
        return [embeddings, *blocks]

    def flops_per_token(self, context: int) -> float:
        """Kaplan et al. (2020)'s C_forward = 2N + 2 n_layer n_ctx d_attn, the output layer and the causal
        average spelt out.

        2N: 2 per weight of the blocks' projections and MLPs (`weight_flops`), and the output layer, which
        Kaplan's non-embedding N leaves out but every token pays; token and learned position tables are lookups.
        Attention: per layer a query scores each key it sees (q.k) and sums its value, 2 x width FLOPs each;
        the query at position t of a causal window sees t keys, (context + 1) / 2 on average, and a causal
        kernel computes only those (it skips the masked half): 2 x layers x width x (context + 1). Softmax,
        norms and GELU are elementwise."""
        return weight_flops(self.blocks, self.head) + 2 * self.cfg.layers * self.cfg.width * (context + 1)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> KVCache:
        """An empty KV cache: generation extends it one position per token."""
        head_dim = self.cfg.width // self.cfg.heads
        dtype = self.embedding.weight.dtype
        empty = torch.zeros(batch_size, self.cfg.heads, 0, head_dim, device=device, dtype=dtype)
        return tuple((empty, empty) for _ in self.blocks)

    def encode(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        """Without a state (training) every window starts at position 0 and no cache is kept; with a
        `KVCache` the tokens continue the cached positions, and the extended cache is returned."""
        length = tokens.size(1)
        past = state[0][0].size(2) if state is not None else 0
        if past + length > self.cfg.context:
            raise LmlabError(
                f"input of {past + length} tokens (with {past} cached) is longer than model.context={self.cfg.context}"
            )
        x = self.embedding(tokens)
        rotary = None
        if self.position is not None:
            x = x + self.position(torch.arange(past, past + length, device=tokens.device))
        else:
            rotary = (self.rotary_cos[past : past + length], self.rotary_sin[past : past + length])
        x = self.embed_dropout(x)
        caches = []
        for layer, block in enumerate(self.blocks):
            x, cache = block(x, rotary, state[layer] if state is not None else None)
            caches.append(cache)
        return self.norm(x), (tuple(caches) if state is not None else None)
