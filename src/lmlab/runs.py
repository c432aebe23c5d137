"""A training run's folder: checkpoints, the W&B run id, and whether a new start may resume the old one.

Layout (the Hydra output folder of the run, e.g. ``runs/pretrain/lstm`` under DVC):

    run.json               W&B run id and the config fingerprint the checkpoints belong to
    checkpoints/last.ckpt  written at every validation; `resume=auto` continues from it
    checkpoints/best.ckpt  lowest val/loss so far
    val_curve.csv          one row per validation (step, tokens, seconds, val/loss, val/ppl, val/bpb, lr)
    metrics.json           final figures
    wandb/                 the W&B run (offline files unless online was asked for)
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.config import PathsConfig, TokenizerConfig
from lmlab.data.atomic import write_json
from lmlab.data.corpus import Corpus
from lmlab.errors import LmlabError

log = logging.getLogger(__name__)


def code_modules(module: str) -> list[Path]:
    """The package's source files `module` imports at module level, directly or through others: the code a
    run of it depends on. Imports inside functions are left out: they are how a module avoids loading what
    only some of its callers need (the CLI's config check imports the model families only for a model)."""
    package = Path(__file__).parent
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not name.startswith("lmlab"):
            continue
        parts = name.split(".")[1:]
        path = package.joinpath(*parts).with_suffix(".py")
        if not path.is_file():
            path = package.joinpath(*parts, "__init__.py")
        if not path.is_file():
            continue  # a name imported from a module, not a module
        seen[name] = path
        todo += [".".join(name.split(".")[:k]) for k in range(1, len(name.split(".")))]  # the parent packages
        for node in module_level(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                todo += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return sorted(seen.values())


def module_level(tree: ast.AST) -> list[ast.AST]:
    """The nodes of a module outside function bodies."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo += list(ast.iter_child_nodes(node))
    return nodes


def code_version(module: str) -> str:
    """A digest of the code `module` runs (`code_modules`): a run trained by other code is not resumed, and
    an edit elsewhere in the package (which makes DVC rerun the stage) resumes the finished run at once."""
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for path in code_modules(module):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def open_corpus(paths: PathsConfig, data: str, tokenizer: TokenizerConfig) -> Corpus:
    """The tokenized corpus a training verb reads; a missing one is an error giving the commands that make it."""
    return Corpus.open(
        paths.tokenized(data, tokenizer),
        how_to_make=f"make it with `dvc repro tokenize` (for the choices in params.yaml) or by hand:\n"
        f"  lmlab download data={data} only=data\n  lmlab split data={data} only=data\n"
        f"  lmlab tokenize data={data} tokenizer={tokenizer.type} tokenizer.vocab_size={tokenizer.vocab_size} "
        "'~task_data'",
    )


def fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


@dataclass
class RunFolder:
    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def record(self) -> Path:
        return self.path / "run.json"

    def read_record(self) -> dict[str, Any]:
        return json.loads(self.record.read_text()) if self.record.is_file() else {}

    def start(
        self, resume: str, identity: dict[str, Any], new_id: str, is_rank_zero: bool, given_id: str | None = None
    ) -> tuple[Path | None, str]:
        """Decide where training starts: (checkpoint to resume from or None, W&B run id).

        `identity` holds what makes checkpoints interchangeable (model, data, tokenizer,
        task, optimizer, seed). `resume=auto` continues only a run with the same
        identity; a changed one starts over (as DVC needs when a param changes), and
        its old checkpoints are removed. A path resumes from that checkpoint as given.
        `given_id` (a sweep agent's run id) names the run even on a resume: W&B enforces it in a sweep.
        """
        record = self.read_record()
        if resume == "never" or (resume == "auto" and not self.last_checkpoint.is_file()):
            checkpoint = None
        elif resume == "auto":
            if record.get("fingerprint") == fingerprint(identity):
                checkpoint = self.last_checkpoint
            else:
                changed = changed_keys(record.get("identity", {}), identity) or ["(unknown: no run.json)"]
                log.warning(
                    "config changed since %s was written (%s): starting a new run",
                    self.last_checkpoint,
                    ", ".join(changed),
                )
                checkpoint = None
        else:
            checkpoint = Path(resume)
            if not checkpoint.is_file():
                raise LmlabError(f"resume={resume!r}: no such checkpoint; use auto, never or a .ckpt path")
        if checkpoint is None and is_rank_zero:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
            (self.path / "val_curve.csv").unlink(missing_ok=True)
        recorded = record.get("wandb_id") if checkpoint is not None else None
        if given_id and recorded and given_id != recorded:
            log.warning("resuming %s as W&B run %s (given), not %s (recorded)", checkpoint, given_id, recorded)
        run_id = given_id or recorded or new_id
        if is_rank_zero:
            write_json(self.record, {"wandb_id": run_id, "fingerprint": fingerprint(identity), "identity": identity})
        return checkpoint, run_id
