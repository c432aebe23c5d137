"""The model families: one table, name -> (config dataclass, model class).

Everything that asks which families exist reads `FAMILIES`: config
validation, checkpoints, the CLI's errors, the family-contract tests. Adding a
family is a model file, its `conf/model/<name>.yaml`, and one line here
(docs/adding-a-family.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmlab.core.errors import LmlabError
from lmlab.core.rules import check_values
from lmlab.models.base import LanguageModel, ModelConfig, State, carried, detach_state, map_state, state_bytes
from lmlab.models.gated_deltanet import GatedDeltaNetConfig, GatedDeltaNetLM
from lmlab.models.mamba2 import Mamba2Config, Mamba2LM
from lmlab.models.minrnn import MinGRUConfig, MinGRULM, MinLSTMConfig, MinLSTMLM
from lmlab.models.recurrent import GRULM, LSTMLM, RNNLM, GRUConfig, LSTMConfig, RNNConfig
from lmlab.models.transformer import TransformerConfig, TransformerLM

__all__ = [
    "FAMILIES",
    "Family",
    "LanguageModel",
    "ModelConfig",
    "State",
    "build_model",
    "carried",
    "detach_state",
    "family_config",
    "map_state",
    "state_bytes",
]


@dataclass(frozen=True)
class Family:
    config: type[ModelConfig]
    model: type[LanguageModel]


FAMILIES: dict[str, Family] = {
    "rnn": Family(RNNConfig, RNNLM),
    "lstm": Family(LSTMConfig, LSTMLM),
    "gru": Family(GRUConfig, GRULM),
    "transformer": Family(TransformerConfig, TransformerLM),
    "mingru": Family(MinGRUConfig, MinGRULM),
    "minlstm": Family(MinLSTMConfig, MinLSTMLM),
    "mamba2": Family(Mamba2Config, Mamba2LM),
    "gated_deltanet": Family(GatedDeltaNetConfig, GatedDeltaNetLM),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise LmlabError(f"model.family={name!r} is not a model family; use one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_config(values: ModelConfig | dict[str, Any]) -> ModelConfig:
    """The family's config from plain values (a composed `model` node, a checkpoint's record), checked:
    a key the family does not have is an error naming the family's keys; a value of the wrong type or outside
    its rule (`check_values`) one naming the key."""
    if isinstance(values, ModelConfig):
        check_values(values, "model.")
        return values
    values = dict(values)
    schema = family(str(values.get("family"))).config
    keys = [f.name for f in fields(schema)]
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise LmlabError(
            f"model.{unknown[0]} is not a key of model family {values['family']!r}"
            + (f" (nor are {', '.join('model.' + k for k in unknown[1:])})" if len(unknown) > 1 else "")
            + f"; its keys are {', '.join(keys)}"
        )
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except OmegaConfBaseException as err:
        reason = str(err.msg).splitlines()[0]
        raise LmlabError(f"model.{err.key}={err.value!r} does not fit {schema.__name__}: {reason}") from None
    check_values(cfg, "model.")
    return cfg


def build_model(cfg: ModelConfig | dict[str, Any], vocab_size: int) -> LanguageModel:
    cfg = family_config(cfg)
    return family(cfg.family).model(cfg, vocab_size)
