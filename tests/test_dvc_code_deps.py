"""Every DVC stage depends on the code it runs, so that an edit there reruns the stages whose results it changes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from lmlab.cli.verbs import VERBS
from lmlab.training import identity
from lmlab.training.identity import code_modules, code_text, code_version
from tests.helpers.project import ROOT

# the main study, synthetic tasks, transfer, scaling laws
DVC_FILES = ("dvc.yaml", "synth/dvc.yaml", "transfer/dvc.yaml", "scaling/dvc.yaml")
TRAINING = ("pretrain", "finetune", "synth", "evaluate", "harness")  # the stages that run a family's model
MODELS = "src/lmlab/models"


def stages() -> dict[str, dict]:
    """Every stage of every pipeline, named as `dvc repro` takes it."""
    found = {}
    for file in DVC_FILES:
        for name, stage in yaml.safe_load((ROOT / file).read_text())["stages"].items():
            found[name if file == "dvc.yaml" else f"{file}:{name}"] = stage
    return found


def commands_of(stage: dict) -> list[str]:
    body = stage.get("do", stage)
    return body["cmd"] if isinstance(body["cmd"], list) else [body["cmd"]]


def verbs_of(stage: dict) -> list[str]:
    """The verbs and tools the stage's commands run (a scaling stage: pretrain, then `lmlab scaling point`)."""
    return sorted({verb(command) for command in commands_of(stage)})


def verb(command: str) -> str:
    return re.match(r"\s*lmlab (\w+)", command).group(1)


def verb_of(stage: dict) -> str:
    """The stage's verb: a training verb where it runs one."""
    verbs = verbs_of(stage)
    return next((verb for verb in verbs if verb in TRAINING), verbs[0])


def imported(tree: ast.AST) -> list[str]:
    """The module names an AST imports, anywhere in it."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def tool_modules(command: str) -> list[Path]:
    """The code a tool's command runs: its module's, the function named by the command's second word where the
    module has one (`lmlab scaling point` runs `point`), and the `lmlab.tools` modules these reach, with what
    all of them import inside functions too (a tool imports what a command needs where it runs it)."""
    tool, *words = command.split()[1:]
    tree = ast.parse((ROOT / "src" / "lmlab" / "cli" / f"{tool}.py").read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    if words and words[0] in functions:  # `main` parses the arguments (`parser`), then runs that command
        ran = [functions[name] for name in ("main", "parser", words[0]) if name in functions]
    else:
        ran = [tree]
    names, todo, read = [f"lmlab.cli.{tool}", *(name for node in ran for name in imported(node))], [], set()
    todo = [name for name in names if name.startswith("lmlab.tools.")]
    while todo:
        name = todo.pop()
        path = ROOT / "src" / (name.replace(".", "/") + ".py")
        if path.is_file() and name not in read:
            read.add(name)
            found = imported(ast.parse(path.read_text()))
            names += found
            todo += [n for n in found if n.startswith("lmlab.tools.")]
    return sorted({path for name in names for path in code_modules(name)})


def verb_modules(verb: str) -> list[Path]:
    """The verb module's code and its job's: `job()` imports the job's code only when a job runs (so that --help
    loads no torch), and a stage runs one."""
    tree = ast.parse((ROOT / "src" / "lmlab" / "cli" / f"{verb}.py").read_text())
    job = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "job")
    names = [f"lmlab.cli.{verb}", *imported(job)]
    return sorted({path for name in names for path in code_modules(name)})


def modules_run(stage: dict) -> list[Path]:
    """The verbs' and tools' modules, and for `lmlab report` those of the study it writes (imported by name)."""
    modules = [
        path
        for command in commands_of(stage)
        for path in (verb_modules(verb(command)) if verb(command) in VERBS else tool_modules(command))
    ]
    if verb_of(stage) == "report":
        studies = {m.group(1) if (m := re.search(r"study=(\w+)", c)) else "comparison" for c in commands_of(stage)}
        modules += [path for study in studies for path in code_modules(f"lmlab.analysis.{study}")]
    return modules


def covered(path: Path, deps: list[str]) -> bool:
    """A dep names the file, or a folder above it."""
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name", list(stages()))
def test_stage_depends_on_every_module_its_verb_imports(name: str) -> None:
    stage = stages()[name]
    deps = [dep for dep in stage.get("do", stage).get("deps", []) if isinstance(dep, str)]
    missing = [path.relative_to(ROOT).as_posix() for path in modules_run(stage) if not covered(path, deps)]
    assert not missing, f"dvc.yaml stage {name} runs code it does not depend on: {missing}"


@pytest.mark.parametrize("name", list(stages()))
def test_stage_depends_on_no_module_it_does_not_run(name: str) -> None:
    """A stage lists its modules one by one: a file it does not import is a rerun for nothing (an edit to the
    training schemas rerunning the download, one study's report rerunning another's, a new verb or the
    analysis of a study retraining the transfer study's 99 runs)."""
    stage = stages()[name]
    deps = {dep for dep in stage.get("do", stage).get("deps", []) if isinstance(dep, str) and dep.startswith("src/")}
    if verb_of(stage) in TRAINING:
        deps -= {MODELS}  # the family table's package, whole: a new family is code every training stage runs
    files = {f.relative_to(ROOT).as_posix() for dep in deps if (ROOT / dep).is_dir() for f in (ROOT / dep).glob("*.py")}
    files |= {dep for dep in deps if not (ROOT / dep).is_dir()}
    run = {path.relative_to(ROOT).as_posix() for path in modules_run(stage)}
    assert not files - run, f"{name} depends on code it does not run: {sorted(files - run)}"


def test_a_new_family_file_is_a_dep_of_every_training_stage() -> None:
    """A family added to the table (models/<name>.py) reruns them without an edit of the DVC files."""
    for name, stage in stages().items():
        if verb_of(stage) in TRAINING:
            assert MODELS in stage.get("do", stage)["deps"], name


def test_code_modules_follow_imports_through_packages() -> None:
    names = {path.relative_to(ROOT / "src").as_posix() for path in verb_modules("pretrain")}
    assert {"lmlab/models/__init__.py", "lmlab/models/recurrent.py", "lmlab/training/optim.py"} <= names
    assert "lmlab/analysis/comparison.py" not in names and "lmlab/data/fetch.py" not in names
    download = {path.relative_to(ROOT / "src").as_posix() for path in verb_modules("download")}
    assert {"lmlab/data/fetch.py", "lmlab/data/archive.py", "lmlab/core/atomic.py"} <= download
    assert not {"lmlab/models/recurrent.py", "lmlab/training/config.py", "lmlab/jobs/config.py"} & download


def test_code_version_leaves_out_the_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    package = ROOT / "src" / "lmlab"
    monkeypatch.setattr(
        identity, "code_modules", lambda module: [package / "training/config.py", package / "training/runs.py"]
    )
    with_schema = code_version("lmlab.jobs.pretrain")
    monkeypatch.setattr(identity, "code_modules", lambda module: [package / "training/runs.py"])
    assert code_version("lmlab.jobs.pretrain") == with_schema
    monkeypatch.setattr(
        identity, "code_modules", lambda module: [package / "analysis/stats.py", package / "training/runs.py"]
    )
    assert code_version("lmlab.jobs.pretrain") != with_schema


MODULE = """\"\"\"A module.\"\"\"

from __future__ import annotations

import math

from lmlab.core.errors import LmlabError
from lmlab.core.rules import at_least


def f(x: float) -> float:
    if x < 0:
        raise LmlabError("negative")
    return math.sqrt(x)
"""


def test_code_identity_survives_a_pure_move(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same code in other files, its lmlab imports from other modules (re-sorted, regrouped), is the same
    identity; a change to what it computes, or to a third-party import, is not."""
    moved = MODULE.replace(
        "from lmlab.core.errors import LmlabError\nfrom lmlab.core.rules import at_least\n",
        "from lmlab.config import at_least\n\nfrom lmlab.errors import LmlabError\n",
    )
    assert code_text(moved) == code_text(MODULE)
    (tmp_path / "old").mkdir()
    (tmp_path / "new" / "deep").mkdir(parents=True)
    (tmp_path / "old" / "a.py").write_text(MODULE)
    (tmp_path / "new" / "deep" / "b.py").write_text(moved)
    monkeypatch.setattr(identity, "code_modules", lambda module: [tmp_path / "old" / "a.py"])
    before = code_version("lmlab.jobs.pretrain")
    monkeypatch.setattr(identity, "code_modules", lambda module: [tmp_path / "new" / "deep" / "b.py"])
    assert code_version("lmlab.jobs.pretrain") == before
    for edited in (
        MODULE.replace("math.sqrt(x)", "math.sqrt(x) + 1"),
        MODULE.replace("import math", "import cmath as math"),
    ):
        (tmp_path / "new" / "deep" / "b.py").write_text(edited)
        assert code_version("lmlab.jobs.pretrain") != before
