"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): recurrences whose gates read only the input,
so a whole window is computed at once by a parallel scan, and a token at a time by the plain recurrence.

    minGRU:  z = sigmoid(W_z x),                 h_t = (1 - z_t) * h_(t-1) + z_t * g(W_h x_t)
    minLSTM: f, i = sigmoid(W_f x), sigmoid(W_i x), normalised f' = f / (f + i), i' = i / (f + i),
                                                 h_t = f'_t * h_(t-1) + i'_t * g(W_h x_t)

g(v) = v + 1/2 for v >= 0, sigmoid(v) otherwise, keeps every h positive, so the scan runs in log space
(Heinsen 2023): log h_t = a_t + logcumsumexp(log b - a), a = cumsum(log coefficient): a cumsum and a
logcumsumexp, stable in float32. Each layer is a pre-norm residual block, as in the paper's language models:
x + W_o minRNN(norm(x)), then x + MLP(norm(x)). The state is every layer's h, ``[B, layers, hidden]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.errors import LmlabError
from lmlab.models.base import LanguageModel, ModelConfig, State


@dataclass
class MinGRUConfig(ModelConfig):
    family: str = "mingru"
    layers: int = 2
    width: int = 128  # residual width; embed_dim must be null or equal to it
    dropout: float = 0.1  # on the residual branches
    expand: float = 1.375  # hidden size of the recurrence = expand x width
    mlp_ratio: int = 4


@dataclass
class MinLSTMConfig(MinGRUConfig):
    family: str = "minlstm"
    expand: float = 1.0


def log_g(v: torch.Tensor) -> torch.Tensor:
    """log g(v), for g(v) = v + 1/2 (v >= 0), sigmoid(v) (v < 0): the log of a positive candidate state."""
    return torch.where(v >= 0, (F.relu(v) + 0.5).log(), -F.softplus(-v))


def g(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_scan(log_coeffs: torch.Tensor, log_values: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Every h_t of h_t = coeff_t * h_(t-1) + value_t from h0 (``[B, H]``), given the logs ``[B, T, H]``."""
    log_coeffs = F.pad(log_coeffs, (0, 0, 1, 0))  # position 0 holds h0, with nothing before it
    log_values = torch.cat([h0.clamp_min(0).log().unsqueeze(1), log_values], dim=1)  # a zero h0 is log 0 = -inf
    a_star = log_coeffs.cumsum(dim=1)
    log_h = a_star + (log_values - a_star).logcumsumexp(dim=1)
    return log_h[:, 1:].exp()


class MinRNN(nn.Module):
    """One minGRU or minLSTM layer over ``[B, T, width]``: parallel scan over a window, the recurrence for a token."""

    def __init__(self, width: int, hidden: int, lstm: bool) -> None:
        super().__init__()
        self.lstm = lstm
        self.inputs = nn.Linear(width, hidden * (3 if lstm else 2), bias=False)  # candidate, then the gate(s)
        self.out = nn.Linear(hidden, width, bias=False)

    def log_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log coefficient (of h_(t-1)), log input weight, and the candidate's pre-activation."""
        candidate, *gates = self.inputs(x).chunk(3 if self.lstm else 2, dim=-1)
        if self.lstm:  # log f' and log i', f' + i' = 1
            diff = F.softplus(-gates[0]) - F.softplus(-gates[1])
            return -F.softplus(diff), -F.softplus(-diff), candidate
        return -F.softplus(gates[0]), -F.softplus(-gates[0]), candidate  # log (1 - z), log z

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_coeff, log_weight, candidate = self.log_gates(x)
        if x.size(1) == 1:  # the recurrence itself: generation, one token at a time
            hs = (log_coeff.exp() * h.unsqueeze(1)) + log_weight.exp() * g(candidate)
        else:
            hs = log_scan(log_coeff, log_weight + log_g(candidate), h)
        return self.out(hs), hs[:, -1]


class Block(nn.Module):
    def __init__(self, cfg: MinGRUConfig, hidden: int, lstm: bool) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.width)
        self.rnn = MinRNN(cfg.width, hidden, lstm)
        self.norm2 = nn.RMSNorm(cfg.width)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.width, cfg.mlp_ratio * cfg.width, bias=False),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.width, cfg.width, bias=False),
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.rnn(self.norm1(x), h)
        x = x + self.dropout(y)
        return x + self.dropout(self.mlp(self.norm2(x))), h


class MinRNNLM(LanguageModel):
    stateful = True
    lstm = False

    def __init__(self, cfg: MinGRUConfig, vocab_size: int) -> None:
        if cfg.embed_dim not in (None, cfg.width):
            raise LmlabError(f"model.embed_dim={cfg.embed_dim} must be null or equal model.width for {cfg.family}")
        hidden = int(cfg.expand * cfg.width)
        if hidden < 1:
            raise LmlabError(f"model.expand={cfg.expand} x model.width={cfg.width} leaves no hidden units")
        super().__init__(cfg, vocab_size)
        self.hidden = hidden
        self.blocks = nn.ModuleList(Block(cfg, self.hidden, self.lstm) for _ in range(cfg.layers))
        self.norm = nn.RMSNorm(cfg.width)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        dtype = self.embedding.weight.dtype
        return torch.zeros(batch_size, self.cfg.layers, self.hidden, device=device, dtype=dtype)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embedding, then each block; the final norm joins the top block."""
        blocks = [list(block.parameters()) for block in self.blocks]
        blocks[-1] += list(self.norm.parameters())
        return [list(self.embedding.parameters()), *blocks]

    def encode(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_state(tokens.size(0), tokens.device)
        x = self.embed_dropout(self.embedding(tokens))
        last = []
        for layer, block in enumerate(self.blocks):
            x, h = block(x, state[:, layer])
            last.append(h)
        return self.norm(x), torch.stack(last, dim=1)


class MinGRULM(MinRNNLM):
    """minGRU: the base's recurrence (``lstm = False``)."""


class MinLSTMLM(MinRNNLM):
    lstm = True
