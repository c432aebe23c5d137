"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): recurrences whose gates read only the input,
so a whole window is computed at once by a parallel scan, and a token at a time by the plain recurrence.

    minGRU:  z = sigmoid(W_z x),                 h_t = (1 - z_t) * h_(t-1) + z_t * g(W_h x_t)
    minLSTM: f, i = sigmoid(W_f x), sigmoid(W_i x), normalised f' = f / (f + i), i' = i / (f + i),
                                                 h_t = f'_t * h_(t-1) + i'_t * g(W_h x_t)

g(v) = v + 1/2 for v >= 0, sigmoid(v) otherwise, keeps every h positive, so the scan runs in log space
(Heinsen 2023): log h_t = a_t + logcumsumexp(log b - a), a = cumsum(log coefficient): a cumsum and a
logcumsumexp, stable in float32. Each layer is a pre-norm residual block (`blocks.py`), as in the paper's language
models: x + W_o minRNN(norm(x)), then x + MLP(norm(x)). A layer's state is its h, ``[B, hidden]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.core.errors import LmlabError
from lmlab.core.rules import above
from lmlab.models.base import weight_flops
from lmlab.models.blocks import BlockConfig, BlockLM


@dataclass
class MinGRUConfig(BlockConfig):
    family: str = "mingru"
    expand: float = above(0.0, 1.375)  # hidden size of the recurrence = expand x width


@dataclass
class MinLSTMConfig(MinGRUConfig):
    family: str = "minlstm"
    expand: float = above(0.0, 1.0)


def log_g(v: torch.Tensor) -> torch.Tensor:
    """log g(v), for g(v) = v + 1/2 (v >= 0), sigmoid(v) (v < 0): the log of a positive candidate state."""
    return torch.where(v >= 0, (F.relu(v) + 0.5).log(), -F.softplus(-v))


def g(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_scan(log_coeffs: torch.Tensor, log_values: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """Every h_t of h_t = coeff_t * h_(t-1) + value_t from h0 (``[B, H]``, None: zeros), given the logs
    ``[B, T, H]``."""
    if h0 is not None:  # position 0 holds h0, with nothing before it
        log_coeffs = F.pad(log_coeffs, (0, 0, 1, 0))
        log_values = torch.cat([h0.clamp_min(0).log().unsqueeze(1), log_values], dim=1)  # h0 = 0: log 0 = -inf
    a_star = log_coeffs.cumsum(dim=1)
    log_h = a_star + (log_values - a_star).logcumsumexp(dim=1)
    return log_h[:, 0 if h0 is None else 1 :].exp()


class MinRNN(nn.Module):
    """One minGRU or minLSTM layer over ``[B, T, width]``: parallel scan over a window, the recurrence for a token."""

    def __init__(self, width: int, hidden: int, lstm: bool) -> None:
        super().__init__()
        self.lstm = lstm
        self.inputs = nn.Linear(width, hidden * (3 if lstm else 2), bias=False)  # candidate, then the gate(s)
        self.out = nn.Linear(hidden, width, bias=False)

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch_size, self.out.in_features, device=device, dtype=dtype)

    def flops_per_token(self, context: int) -> float:
        """The input projection (candidate and gates) and the output projection, once per token. The parallel
        scan is a cumsum and a logcumsumexp, elementwise in the hidden units: no matmul, and no term in
        `context`."""
        return weight_flops(self)

    def log_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log coefficient (of h_(t-1)), log input weight, and the candidate's pre-activation."""
        candidate, *gates = self.inputs(x).chunk(3 if self.lstm else 2, dim=-1)
        if self.lstm:  # log f' and log i', f' + i' = 1
            diff = F.softplus(-gates[0]) - F.softplus(-gates[1])
            return -F.softplus(diff), -F.softplus(-diff), candidate
        return -F.softplus(gates[0]), -F.softplus(-gates[0]), candidate  # log (1 - z), log z

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        log_coeff, log_weight, candidate = self.log_gates(x)
        if x.size(1) == 1:  # the recurrence itself: generation, one token at a time
            hs = log_weight.exp() * g(candidate)
            if h is not None:
                hs = hs + log_coeff.exp() * h.unsqueeze(1)
        else:
            hs = log_scan(log_coeff, log_weight + log_g(candidate), h)
        return self.out(hs), hs[:, -1]


class MinRNNLM(BlockLM):
    lstm = False

    def make_mixer(self, cfg: MinGRUConfig) -> nn.Module:
        hidden = int(cfg.expand * cfg.width)
        if hidden < 1:
            raise LmlabError(f"model.expand={cfg.expand} x model.width={cfg.width} leaves no hidden units")
        return MinRNN(cfg.width, hidden, self.lstm)


class MinGRULM(MinRNNLM):
    """minGRU: the base's recurrence (``lstm = False``)."""


class MinLSTMLM(MinRNNLM):
    lstm = True
