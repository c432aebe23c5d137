"""Every DVC stage depends on the code it runs, so that an edit there reruns the stages whose results it changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lmlab import runs
from lmlab.runs import code_modules
from tests.helpers.project import ROOT

DVC_FILES = ("dvc.yaml", "synth/dvc.yaml", "transfer/dvc.yaml")  # the main study, synthetic tasks, transfer


def stages() -> dict[str, dict]:
    """Every stage of every pipeline, named as `dvc repro` takes it."""
    found = {}
    for file in DVC_FILES:
        for name, stage in yaml.safe_load((ROOT / file).read_text())["stages"].items():
            found[name if file == "dvc.yaml" else f"{file}:{name}"] = stage
    return found


def verb_of(stage: dict) -> str:
    body = stage.get("do", stage)
    commands = body["cmd"] if isinstance(body["cmd"], list) else [body["cmd"]]
    verbs = {re.match(r"\s*lmlab (\w+)", command).group(1) for command in commands}
    assert len(verbs) == 1, verbs
    return verbs.pop()


def covered(path: Path, deps: list[str]) -> bool:
    """A dep names the file, or a folder above it."""
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name", list(stages()))
def test_stage_depends_on_every_module_its_verb_imports(name: str) -> None:
    stage = stages()[name]
    deps = [dep for dep in stage.get("do", stage).get("deps", []) if isinstance(dep, str)]
    needed = code_modules(f"lmlab.cli.{verb_of(stage)}")
    missing = [path.relative_to(ROOT).as_posix() for path in needed if not covered(path, deps)]
    assert not missing, f"dvc.yaml stage {name} runs code it does not depend on: {missing}"


def test_code_modules_follow_imports_through_packages() -> None:
    names = {path.relative_to(ROOT / "src").as_posix() for path in code_modules("lmlab.cli.pretrain")}
    assert {"lmlab/models/__init__.py", "lmlab/models/recurrent.py", "lmlab/tasks/optim.py"} <= names
    assert "lmlab/report.py" not in names and "lmlab/data/fetch.py" not in names
    download = {path.name for path in code_modules("lmlab.cli.download")}
    assert {"fetch.py", "archive.py", "atomic.py", "sources.py"} <= download and "recurrent.py" not in download


def test_code_version_leaves_out_the_config_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    package = ROOT / "src" / "lmlab"
    monkeypatch.setattr(runs, "code_modules", lambda module: [package / "config.py", package / "runs.py"])
    with_schema = runs.code_version("lmlab.pretrain")
    monkeypatch.setattr(runs, "code_modules", lambda module: [package / "runs.py"])
    assert runs.code_version("lmlab.pretrain") == with_schema
    monkeypatch.setattr(runs, "code_modules", lambda module: [package / "stats.py", package / "runs.py"])
    assert runs.code_version("lmlab.pretrain") != with_schema
