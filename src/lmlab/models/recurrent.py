"""Recurrent language models on torch's fused kernels (cuDNN on GPU, oneDNN on CPU): Elman RNN, LSTM, GRU.

The three differ only in the torch module and the state it carries (``h``, or
``(h, c)`` for the LSTM), so one class holds them. Initialization follows the
classic word-level recipes: uniform embeddings in ±0.1, torch's default
uniform ±1/sqrt(width) for the recurrent weights, and an LSTM forget-gate bias of 1
(Jozefowicz et al., 2015) so early training does not forget by default.
"""

from __future__ import annotations

import torch
from torch import nn

from lmlab.config import ModelConfig
from lmlab.models.base import LanguageModel, State


class RecurrentLM(LanguageModel):
    FAMILIES = ("rnn", "lstm", "gru")
    stateful = True

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__(cfg, vocab_size)
        kind = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cfg.family]
        extra = {"nonlinearity": "tanh"} if cfg.family == "rnn" else {}
        self.rnn = kind(
            self.embed_dim,
            cfg.width,
            num_layers=cfg.layers,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
            batch_first=True,
            **extra,
        )
        # the tied output layer reads embed_dim features; a wider (or narrower) state is projected to it
        self.proj = nn.Linear(cfg.width, self.embed_dim, bias=False) if cfg.width != self.embed_dim else None
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if not cfg.tie_weights:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)
        if cfg.family == "lstm":
            for name, bias in self.rnn.named_parameters():
                if name.startswith("bias_hh"):  # gates are ordered input, forget, cell, output
                    bias.data[cfg.width : 2 * cfg.width].fill_(1.0)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        weight = self.rnn.weight_hh_l0
        h = torch.zeros(self.cfg.layers, batch_size, self.cfg.width, device=device, dtype=weight.dtype)
        return (h, torch.zeros_like(h)) if self.cfg.family == "lstm" else h

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embedding, then each recurrent layer (torch names them ``*_l<k>``); the projection joins the top layer."""
        layers = [
            [p for name, p in self.rnn.named_parameters() if name.endswith(f"_l{k}")] for k in range(self.cfg.layers)
        ]
        if self.proj is not None:
            layers[-1] += list(self.proj.parameters())
        return [list(self.embedding.parameters()), *layers]

    def encode(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_state(tokens.size(0), tokens.device)
        hidden, state = self.rnn(self.embed_dropout(self.embedding(tokens)), state)
        if self.proj is not None:
            hidden = self.proj(hidden)
        return hidden, state
