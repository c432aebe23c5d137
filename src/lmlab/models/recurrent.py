"""Recurrent language models on torch's fused kernels (cuDNN on GPU, oneDNN on CPU): Elman RNN, LSTM, GRU.

The three differ only in the torch module and the state it carries (``h``, or
``(h, c)`` for the LSTM), so one base class holds the work and each family is
a few lines. Initialization follows the classic word-level recipes: uniform
embeddings in ±0.1, torch's default uniform ±1/sqrt(width) for the recurrent
weights, and an LSTM forget-gate bias of 1 (Jozefowicz et al., 2015) so early
training does not forget by default.

States are batch first (``[B, layers, width]``); torch's modules want the
layer first, so `encode` transposes at the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmlab.core.errors import LmlabError
from lmlab.models.base import LanguageModel, ModelConfig, State, map_state, weight_flops


@dataclass
class RNNConfig(ModelConfig):
    family: str = "rnn"
    nonlinearity: str = "tanh"  # tanh | relu


@dataclass
class LSTMConfig(ModelConfig):
    family: str = "lstm"
    forget_bias: float = 1.0  # the forget gate's initial hidden bias (Jozefowicz et al., 2015)


@dataclass
class GRUConfig(ModelConfig):
    family: str = "gru"


def swap_batch(t: torch.Tensor) -> torch.Tensor:
    """``[B, layers, H]`` <-> ``[layers, B, H]``: ours batch first, torch's layer first."""
    return t.transpose(0, 1)


class FusedRecurrentLM(LanguageModel):
    """Embedding -> a stack of torch's fused recurrent layers (`make_rnn`) -> projection to the embedding width."""

    stateful = True
    state_parts = 1  # tensors per state: h, or (h, c)

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__(cfg, vocab_size)
        self.rnn = self.make_rnn(
            input_size=self.embed_dim,
            hidden_size=cfg.width,
            num_layers=cfg.layers,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,  # between layers only
            batch_first=True,
        )
        # the tied output layer reads embed_dim features; a wider (or narrower) state is projected to it
        self.proj = nn.Linear(cfg.width, self.embed_dim, bias=False) if cfg.width != self.embed_dim else None
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if not cfg.tie_weights:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)

    def make_rnn(self, **args: object) -> nn.RNNBase:
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        weight = self.rnn.weight_hh_l0
        h = torch.zeros(batch_size, self.cfg.layers, self.cfg.width, device=device, dtype=weight.dtype)
        return h if self.state_parts == 1 else tuple(torch.zeros_like(h) for _ in range(self.state_parts))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embedding, then each recurrent layer (torch names them ``*_l<k>``); the projection joins the top layer."""
        layers = [
            [p for name, p in self.rnn.named_parameters() if name.endswith(f"_l{k}")] for k in range(self.cfg.layers)
        ]
        if self.proj is not None:
            layers[-1] += list(self.proj.parameters())
        return [list(self.embedding.parameters()), *layers]

    def flops_per_token(self, context: int) -> float:
        """Every gate's input and recurrent matrix (``weight_ih``, ``weight_hh``: 1, 4 or 3 gates for RNN, LSTM,
        GRU), the projection and the output layer, each once per token: the recurrence does the same work
        at every position, so `context` does not enter. Gate nonlinearities and products are elementwise."""
        return weight_flops(self.rnn, self.proj, self.head)

    def encode(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_state(tokens.size(0), tokens.device)
        hidden, layer_first = self.rnn(self.embed_dropout(self.embedding(tokens)), map_state(swap_batch, state))
        if self.proj is not None:
            hidden = self.proj(hidden)
        return hidden, map_state(swap_batch, layer_first)


class RNNLM(FusedRecurrentLM):
    def make_rnn(self, **args: object) -> nn.RNNBase:
        if self.cfg.nonlinearity not in ("tanh", "relu"):
            raise LmlabError(f"model.nonlinearity={self.cfg.nonlinearity!r}: use tanh or relu")
        return nn.RNN(**args, nonlinearity=self.cfg.nonlinearity)


class LSTMLM(FusedRecurrentLM):
    state_parts = 2  # (h, c)

    def make_rnn(self, **args: object) -> nn.RNNBase:
        rnn = nn.LSTM(**args)
        width = self.cfg.width
        for name, bias in rnn.named_parameters():
            if name.startswith("bias_hh"):  # gates are ordered input, forget, cell, output
                bias.data[width : 2 * width].fill_(self.cfg.forget_bias)
        return rnn


class GRULM(FusedRecurrentLM):
    def make_rnn(self, **args: object) -> nn.RNNBase:
        return nn.GRU(**args)
