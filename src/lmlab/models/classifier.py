"""A text classifier on any language-model backbone: features -> masked pooling -> head.

Pooling reads the backbone's features over each document's real tokens only
(padding is masked): ``last`` (the final position, which has read the whole
text), ``mean``, ``max``, or ``concat`` = [last, max, mean] as in ULMFiT
(Howard & Ruder, 2018).
"""

from __future__ import annotations

import torch
from torch import nn

from lmlab.core.errors import LmlabError
from lmlab.models.base import LanguageModel


def pool(hidden: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """Features ``[B, T, D]`` of right-padded documents of `lengths` -> one vector per document."""
    mask = (torch.arange(hidden.size(1), device=hidden.device)[None, :] < lengths[:, None])[..., None]
    last = hidden[torch.arange(hidden.size(0), device=hidden.device), lengths - 1]
    if how == "last":
        return last
    mean = (hidden * mask).sum(1) / lengths[:, None].to(hidden.dtype)
    if how == "mean":
        return mean
    top = hidden.masked_fill(~mask, float("-inf")).amax(1)
    if how == "max":
        return top
    if how == "concat":
        return torch.cat([last, top, mean], dim=-1)
    raise LmlabError(f"finetune.pooling={how!r}: not a pooling (the schema lists them: lmlab.tasks.config.POOLINGS)")


class Classifier(nn.Module):
    def __init__(
        self, backbone: LanguageModel, num_classes: int, pooling: str, head_hidden: int, head_dropout: float
    ) -> None:
        super().__init__()
        pool(torch.zeros(1, 1, 1), torch.ones(1, dtype=torch.long), pooling)  # an unknown pooling fails here
        self.backbone, self.pooling = backbone, pooling
        if backbone.head.weight is not backbone.embedding.weight:
            backbone.head.requires_grad_(False)  # an untied LM output layer has no part in classifying
        features = backbone.embed_dim * (3 if pooling == "concat" else 1)
        layers: list[nn.Module] = [nn.LayerNorm(features), nn.Dropout(head_dropout)]
        if head_hidden > 0:
            layers += [nn.Linear(features, head_hidden), nn.GELU(), nn.Dropout(head_dropout)]
        self.head = nn.Sequential(*layers, nn.Linear(head_hidden or features, num_classes))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.backbone.encode(tokens)
        return self.head(pool(hidden, lengths, self.pooling))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The backbone's groups (input to output), then the head: the head has no output-layer
        weights of the language model, which the classifier leaves unused."""
        return [*self.backbone.layer_groups(), list(self.head.parameters())]
