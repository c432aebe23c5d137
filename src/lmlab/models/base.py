"""The interface every family implements, so tasks, benchmarks and reports never ask which one they hold.

logits, state = model(tokens, state)        # tokens [B, T] -> logits [B, T, V]
hidden, state = model.encode(tokens, state)  # features [B, T, D] for heads
state = model.init_state(batch_size, device) # None for stateless models
model.stateful                               # True: tasks carry state across windows (TBPTT)
model.layer_groups()                         # parameters per layer, input to output (fine-tuning)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmlab.config import ModelConfig

# A recurrent state: one tensor (rnn, gru), a pair (lstm), or None (stateless).
State = Any


class LanguageModel(nn.Module):
    """Token embedding -> family backbone (`encode`) -> dropout -> output layer (tied to the embedding)."""

    stateful: bool = False

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embed_dim = cfg.embed_dim or cfg.width
        self.embedding = nn.Embedding(vocab_size, self.embed_dim)
        self.embed_dropout = nn.Dropout(cfg.embed_dropout)
        self.output_dropout = nn.Dropout(cfg.output_dropout)
        self.head = nn.Linear(self.embed_dim, vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.embedding.weight

    def encode(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        """Backbone features ``[B, T, embed_dim]`` for every position, and the state after the last."""
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        return None

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from input to output, one list per layer (embeddings first): the units that
        fine-tuning gives discriminative learning rates and unfreezes one at a time."""
        raise NotImplementedError

    def generation_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        """The state generation starts from: the recurrent state, or a transformer's empty KV cache."""
        return self.init_state(batch_size, device)

    @property
    def max_positions(self) -> int | None:
        """The longest input the model accepts (a transformer's context), or None for no limit."""
        return None

    def forward(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        hidden, state = self.encode(tokens, state)
        return self.head(self.output_dropout(hidden)), state

    @property
    def num_params(self) -> int:
        """Trainable parameters, a tied matrix counted once: the figure equal-size comparisons use."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def num_embedding_params(self) -> int:
        tied = self.head.weight is self.embedding.weight
        return sum(p.numel() for p in self.embedding.parameters()) + (0 if tied else self.head.weight.numel())

    @staticmethod
    def detach_state(state: State) -> State:
        """Cut the graph at a TBPTT window boundary, keeping the values."""
        if state is None:
            return None
        if isinstance(state, torch.Tensor):
            return state.detach()
        return tuple(s.detach() for s in state)
