"""The interface every family implements, so tasks, benchmarks and reports never ask which one they hold.

logits, state = model(tokens, state)         # tokens [B, T] -> logits [B, T, V]
hidden, state = model.encode(tokens, state)  # features [B, T, D] for heads
state = model.init_state(batch_size, device) # where step-by-step use starts (zeros, an empty KV cache)
model.stateful                               # True: training carries the state across windows (TBPTT)
model.window(bptt)                           # the window length training and evaluation feed
model.layer_groups()                         # parameters per layer, input to output (fine-tuning)
model.flops_per_token(context)               # forward FLOPs per token over windows of `context` tokens

A family is a config dataclass (a subclass of `ModelConfig` holding its own
keys) and a `LanguageModel` subclass; `lmlab.models.FAMILIES` lists them.

A state is the family's own structure of tensors, every tensor batch first:
one tensor, a tuple, a dict, or nestings of them (an LSTM's ``(h, c)``, a
transformer's per-layer keys and values). Training, checkpoints, DDP,
evaluation and generation handle it through `map_state` without knowing its shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightning_utilities.core.apply_func import apply_to_collection
from torch import nn

from lmlab.core.rules import at_least, fraction

# A structure of batch-first tensors (tensor, tuple, list or dict of them, nested), or None before the first window.
State = Any


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    """`fn` applied to every tensor of a state, the structure kept."""
    return apply_to_collection(state, torch.Tensor, fn)


def detach_state(state: State) -> State:
    """Cut the graph at a TBPTT window boundary, keeping the values."""
    return map_state(torch.Tensor.detach, state)


def state_bytes(state: State) -> int:
    """The bytes a state holds: what a model carries from token to token (a KV cache grows with the length
    read, a recurrent state does not). Generation's memory benchmark and the synthetic tasks' state size."""
    sizes: list[int] = []
    map_state(lambda t: sizes.append(t.numel() * t.element_size()) or t, state)
    return sum(sizes)


def weight_flops(*modules: nn.Module | None) -> int:
    """Forward FLOPs per token of the weights in `modules` that multiply every token once (linear layers,
    recurrent matrices, convolution kernels): 2 per weight, a multiply and an add (Kaplan et al. 2020's 2N).
    Vectors (biases, norm gains, per-head decays) are elementwise work, left out like every elementwise op;
    None stands for a layer a family may not have (an absent projection)."""
    return 2 * sum(p.numel() for m in modules if m is not None for p in m.parameters() if p.dim() > 1)


def carried(model: LanguageModel, state: State, reset: bool) -> State:
    """The state a window starts from: the previous window's for a stateful model (unless the data starts
    its streams over), None (a fresh start) otherwise. Training, validation, evaluation and benchmarks all
    step through windows by this rule."""
    return state if model.stateful and not reset else None


@dataclass
class ModelConfig:
    """The keys every family has; a family's config subclasses this with its own keys.

    `TUNABLE` names the keys that may differ between pretraining and fine-tuning (they do not shape
    the weights); every other key must match the pretrained checkpoint.
    """

    family: str = ""
    layers: int = at_least(1, 2)
    width: int = at_least(1, 256)  # hidden size (recurrent) or residual width (transformer)
    embed_dim: int | None = at_least(1, None)  # None: width; a different size adds a projection before the tied head
    tie_weights: bool = True  # output layer shares the input embedding
    embed_dropout: float = fraction(0.1)  # on token embeddings
    dropout: float = fraction(0.1)  # inside the backbone (the family says where)
    output_dropout: float = fraction(0.1)  # on the features that enter the output layer

    TUNABLE: ClassVar[tuple[str, ...]] = ("embed_dropout", "dropout", "output_dropout")


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
        """Backbone features ``[B, T, embed_dim]`` for every position, and the state after the last.

        ``state=None`` starts from `init_state`; a stateless family then returns None and does not
        build a cache it would not use."""
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        """The state before the first token: what generation and a TBPTT reset start from."""
        raise NotImplementedError

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from input to output, one list per layer (embeddings first): the units that
        fine-tuning gives discriminative learning rates and unfreezes one at a time."""
        raise NotImplementedError

    def flops_per_token(self, context: int) -> float:
        """Forward-pass FLOPs per token (a multiply-add counts 2) when the model reads windows of `context`
        tokens, as training does (`window`; a stateful model from a carried state): the matmuls of the
        backbone and of the output layer (`weight_flops`), and the family's context-dependent matmuls
        (attention, a chunked scan). Embedding lookups and elementwise work are not counted. Pretraining's
        `train/flops` (`lmlab.tasks.language_model`) is built on it."""
        raise NotImplementedError

    @property
    def max_positions(self) -> int | None:
        """The longest input the model accepts (a transformer's context), or None for no limit."""
        return None

    def window(self, bptt: int) -> int:
        """Tokens per forward pass in training and evaluation: `bptt` for a stateful model (its state
        carries on), the context for a stateless one (each window starts over)."""
        if self.stateful or self.max_positions is None:
            return bptt
        return self.max_positions

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


class MLP(nn.Module):
    """The GELU MLP of a block (the Transformer's and the parallel-trainable families'), dropout on its output."""

    def __init__(self, width: int, ratio: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(width, ratio * width, bias=bias)
        self.out = nn.Linear(ratio * width, width, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.out(F.gelu(self.up(x))))
