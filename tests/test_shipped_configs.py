"""Each default has one home: a verb's schema (its dataclass) holds the values, and the verb's conf/<verb>.yaml
states only what the schema cannot (interpolations between keys) and its choices of config groups."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from lmlab.cli import verb_groups
from lmlab.cli.schemas import schema
from lmlab.cli.verbs import VERBS
from tests.helpers.project import ROOT


def disagreements(shipped: dict[str, Any], defaults: dict[str, Any], groups: set[str], prefix: str = "") -> list[str]:
    """Keys of a shipped file that restate the schema's default, or give a plain value the schema should hold."""
    found = []
    for key, value in shipped.items():
        if key in ("defaults", "hydra") or key in groups:
            continue  # a group's file may be overridden here: that is what the verb chose
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            found += disagreements(value, default, set(), f"{prefix}{key}.")
        elif value == default:
            found.append(f"{prefix}{key}={value!r} restates the schema's default")
        elif not (isinstance(value, str) and "${" in value):
            found.append(f"{prefix}{key}={value!r}: the schema's default is {default!r}; change it there")
    return found


@pytest.mark.parametrize("verb", list(VERBS))
def test_a_verb_file_states_no_default_of_its_schema(verb: str) -> None:
    shipped = yaml.safe_load((ROOT / "conf" / f"{verb}.yaml").read_text())
    defaults = OmegaConf.to_container(OmegaConf.structured(schema(verb)), resolve=False)
    wrong = disagreements(shipped, defaults, set(verb_groups(ROOT / "conf", verb)))
    assert not wrong, f"conf/{verb}.yaml: " + "; ".join(wrong)


def test_the_check_finds_a_restated_and_a_moved_default() -> None:
    defaults = {"resume": "auto", "budget": {"match": "params"}, "out": "???"}
    shipped = {"resume": "auto", "budget": {"match": "flops"}, "out": "${x}/y", "trainer": {"max_steps": 3}}
    assert disagreements(shipped, defaults, {"trainer"}) == [
        "resume='auto' restates the schema's default",
        "budget.match='flops': the schema's default is 'params'; change it there",
    ]
