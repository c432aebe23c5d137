"""Writes stay inside their roots: a name from a config that becomes a path (a dataset's name, a family, the
report's families) is refused when it is absolute, holds a separator or is `..`, before anything is written."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lmlab.cli.schemas import register_configs, typed
from lmlab.cli.verbs import VERBS
from lmlab.core.errors import LmlabError
from lmlab.core.rules import plain_name
from lmlab.data.config import PathsConfig, TokenizerConfig
from tests.helpers.project import ROOT, lmlab

HOSTILE = ["../runs", "/tmp/elsewhere", "a/b", "..", ".", "", "a\\b"]
# every key whose value names a folder or file under a root, per verb (dotted; a list key: each item)
NAMED = {
    "download": ["data.name", "task_data.name"],
    "split": ["data.name", "task_data.name"],
    "tokenize": ["data.name", "task_data.name"],
    "pretrain": ["data.name"],
    "finetune": ["data.name", "task_data.name"],
    "evaluate": ["data.name", "family"],
    "generate": ["family"],
    "report": ["families"],
}


def test_plain_names_pass_and_hostile_ones_do_not() -> None:
    assert all(plain_name(n) for n in ("sotu", "rt_sentiment", "wikitext-2", "a.b"))
    assert not any(plain_name(n) for n in HOSTILE)


def test_every_path_of_the_data_layout_refuses_a_name_that_leaves_its_root(tmp_path: Path) -> None:
    """Walks PathsConfig: each method that joins a name under paths.data_dir."""
    paths = PathsConfig(data_dir=str(tmp_path))
    methods = [m for name, m in inspect.getmembers(paths, inspect.ismethod) if not name.startswith("_")]
    joined = [m for m in methods if list(inspect.signature(m).parameters)[:1] in (["dataset"], ["corpus"])]
    assert len(joined) == 3, joined  # raw, splits, tokenized
    for method in joined:
        extra = [TokenizerConfig()] if "tokenizer" in inspect.signature(method).parameters else []
        assert tmp_path in method("sotu", *extra).parents
        for bad in HOSTILE:
            with pytest.raises(LmlabError, match="outside"):
                method(bad, *extra)


@pytest.mark.parametrize("verb", list(VERBS))
def test_each_verb_refuses_a_name_that_would_leave_its_folder(verb: str) -> None:
    """Each key of NAMED, given through Hydra as a user would, is refused by the check every verb makes first."""
    register_configs(verb)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for key in NAMED.get(verb, []):
            value = ["gru", "../x"] if key == "families" else "../x"
            cfg = compose(config_name=verb, overrides=[f"{key}={value}".replace("'", "")])
            with pytest.raises(LmlabError, match=rf"{key}=.*plain name"):
                typed(cfg)


def test_a_download_named_out_of_its_folder_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    """The case the probe found: data.name=../runs under paths.data_dir replaced the runs with corpus files."""
    runs = tmp_path / "data" / "runs"
    runs.mkdir(parents=True)
    (runs / "best.ckpt").write_text("a checkpoint")
    result = lmlab("download", "only=data", "data.name=../runs", f"paths.data_dir={tmp_path / 'data'}")
    assert result.returncode == 2 and "data.name='../runs': must be a plain name" in result.stderr, result.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "data",
        "data/runs",
        "data/runs/best.ckpt",
    ]
    assert (runs / "best.ckpt").read_text() == "a checkpoint"
