"""The `lmlab` CLI: verbs, Hydra composition, and errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lmlab.cli import VERBS
from lmlab.config import register_configs, typed
from lmlab.data import readers, sources
from tests.helpers.project import ROOT, lmlab

CONF = ROOT / "conf"


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_usage_lists_every_verb() -> None:
    result = lmlab("--help")
    assert result.returncode == 0
    for verb in VERBS:
        assert verb in result.stdout


def test_unknown_verb_exits_nonzero_with_choices() -> None:
    result = lmlab("pretrian")
    assert result.returncode == 2
    assert "unknown verb 'pretrian'" in result.stderr and "download" in result.stderr


def test_unknown_dataset_lists_the_choices() -> None:
    result = lmlab("download", "data=nosuch")
    assert result.returncode != 0
    assert "Could not find 'data/nosuch'" in result.stderr
    for name in choices("data"):
        assert name in result.stderr


def test_misspelt_key_is_named() -> None:
    result = lmlab("tokenize", "tokenizer.vocab_sise=100")
    assert result.returncode != 0
    assert "vocab_sise" in result.stderr and "TokenizerConfig" in result.stderr


def test_wrong_type_is_named() -> None:
    result = lmlab("tokenize", "tokenizer.vocab_size=lots")
    assert result.returncode != 0
    assert "tokenizer.vocab_size" in result.stderr


def test_cfg_job_prints_the_composed_config() -> None:
    result = lmlab("tokenize", "tokenizer=unigram", "tokenizer.vocab_size=1234", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.tokenizer.type == "unigram" and cfg.tokenizer.vocab_size == 1234
    assert cfg.data.name == "sotu" and cfg.task_data.name == "rt_sentiment"


def test_verb_help_names_config_groups() -> None:
    result = lmlab("download", "--help")
    assert result.returncode == 0
    assert "data: " in result.stdout and "task_data: " in result.stdout


def test_library_error_is_a_message_not_a_traceback() -> None:
    result = lmlab("split", "only=corpus")
    assert result.returncode == 2
    assert "lmlab split: error: only='corpus' is not a dataset key" in result.stderr
    assert "Traceback" not in result.stderr


def test_outside_the_project_says_where_to_run(tmp_path: Path) -> None:
    result = lmlab("download", cwd=tmp_path)
    assert result.returncode == 2
    assert "project root" in result.stderr


def verbs_with(group: str) -> list[str]:
    """The verbs whose primary config has `group` in its defaults list."""
    return [verb for verb in sorted(VERBS) if f"- {group}:" in (CONF / f"{verb}.yaml").read_text()]


@pytest.mark.parametrize(
    ("verb", "group"), [(verb, group) for group in ("data", "task_data") for verb in verbs_with(group)]
)
def test_every_shipped_dataset_config_loads_and_validates(verb: str, group: str) -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in choices(group):
            cfg = typed(compose(config_name=verb, overrides=[f"{group}={name}"]))
            dataset = getattr(cfg, group)
            assert dataset.name == name, f"conf/{group}/{name}.yaml names itself {dataset.name!r}"
            sources.validate(dataset.source, f"{group}.source")
            readers.validate(dataset.reader, f"{group}.reader")
            if group == "task_data":
                assert len(dataset.reader.classes) >= 2


def test_every_shipped_tokenizer_config_loads() -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in choices("tokenizer"):
            cfg = typed(compose(config_name="tokenize", overrides=[f"tokenizer={name}"]))
            assert cfg.tokenizer.type == name
