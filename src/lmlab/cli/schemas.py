"""Every verb's schema by name, put in Hydra's ConfigStore, and a composed config turned into its dataclass.

A verb imports only its own schema's module, so a data stage's code is the data layer's, not the training
schemas'."""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import OmegaConf

from lmlab.cli.verbs import VERBS
from lmlab.core.rules import check_values, check_writable


def schema(verb: str) -> type:
    """The dataclass conf/<verb>.yaml names in its defaults (`<verb>_schema`): its verb module's SCHEMA."""
    return importlib.import_module(VERBS[verb]).SCHEMA


def register_configs(verb: str | None = None) -> None:
    """Put the schemas (or only `verb`'s) in the ConfigStore. The CLI stores one: Hydra copies the whole
    store for every config group `--help` lists, and the other verbs' schemas doubled its time."""
    from hydra.core.config_store import ConfigStore  # here: encode workers import this module too

    cs = ConfigStore.instance()
    for name in VERBS:
        if verb in (None, name):
            cs.store(name=f"{name}_schema", node=schema(name))


def typed(node: Any) -> Any:
    """A composed verb config as its dataclass, its `model` node as the family's own config, checked against
    it (`lmlab.models.family_config`: a key of another family is an error naming the family's keys)."""
    cfg = OmegaConf.to_object(node)
    if isinstance(getattr(cfg, "model", None), dict):
        from lmlab.models import family_config  # imports torch: only once a job runs, never for --help

        cfg.model = family_config(cfg.model)
    check_values(cfg)
    check_writable(cfg)
    return cfg
