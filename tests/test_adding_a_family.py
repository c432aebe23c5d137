"""Adding a model family takes the files docs/adding-a-family.md lists: a model file, a config file, the family
table, and its sizes at the two larger scales.

In a temporary copy of the project a throwaway family (a diagonal linear recurrence whose state is a dict)
is added exactly that way, the files it took are counted against the doc's table, and every contract test
that reads the family (test_family_contract.py: its own, the scale sizes, the DDP gather) runs on it: they
pass; a copy whose state is not batch first, and which lacks the scale sizes, fails both.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmlab.cli.schemas import register_configs
from tests.helpers.project import ROOT, copy_files
from tests.test_family_contract import DEFAULT_VOCAB, scaled_params

TOY_MODEL = '''"""Toy: per layer a diagonal linear recurrence h_t = a h_(t-1) + (1 - a) W x_t, a = sigmoid(decay)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.base import LanguageModel, ModelConfig, State, weight_flops


@dataclass
class ToyConfig(ModelConfig):
    family: str = "toy"
    decay_init: float = 2.0  # sigmoid(2) = 0.88: a slow decay to start with


class ToyLM(LanguageModel):
    stateful = True

    def __init__(self, cfg: ToyConfig, vocab_size: int) -> None:
        super().__init__(cfg, vocab_size)
        sizes = [self.embed_dim] + [cfg.width] * cfg.layers
        self.inputs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.decays = nn.ParameterList(nn.Parameter(torch.full((cfg.width,), cfg.decay_init)) for _ in sizes[1:])
        self.out = nn.Linear(cfg.width, self.embed_dim, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        return {"h": torch.zeros(LAYOUT(batch_size, self.cfg.layers), self.cfg.width, device=device)}

    def layer_groups(self) -> list[list[nn.Parameter]]:
        groups = [[*self.inputs[k].parameters(), self.decays[k]] for k in range(self.cfg.layers)]
        groups[-1] += list(self.out.parameters())
        return [list(self.embedding.parameters()), *groups]

    def flops_per_token(self, context: int) -> float:
        """Input layers, output projection and output layer, once per token; the recurrence is elementwise."""
        return weight_flops(self.inputs, self.out, self.head)

    def encode(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_state(tokens.size(0), tokens.device)
        x = self.embed_dropout(self.embedding(tokens))
        last = []
        for k, (linear, decay) in enumerate(zip(self.inputs, self.decays)):
            a = torch.sigmoid(decay)
            u = (1 - a) * linear(x)
            h = state["h"][PICK(k)]
            hs = []
            for t in range(tokens.size(1)):
                h = a * h + u[:, t]
                hs.append(h)
            last.append(h)
            x = F.gelu(torch.stack(hs, dim=1))
            if k < self.cfg.layers - 1:
                x = self.dropout(x)
        return self.out(x), {"h": torch.stack(last, dim=STACK)}
'''
BATCH_FIRST = {"LAYOUT(batch_size, self.cfg.layers)": "batch_size, self.cfg.layers", "PICK(k)": ":, k", "STACK": "1"}
LAYER_FIRST = {"LAYOUT(batch_size, self.cfg.layers)": "self.cfg.layers, batch_size", "PICK(k)": "k", "STACK": "0"}
# 1,024,000 (the tied 8000 x 128 embedding) + 258 x 1535 + 1535 decays: about the other families' 1.42M
TOY_CONFIG = """# A throwaway family for tests/test_adding_a_family.py.
family: toy
layers: 1
width: 1535
embed_dim: 128
tie_weights: true
embed_dropout: 0.1
dropout: 0.1
output_dropout: 0.1
decay_init: 2.0
"""


def add_toy_family(root: Path, layout: dict[str, str], sizes: bool = True) -> None:
    """The edits docs/adding-a-family.md lists (`sizes`: with the two scale files)."""
    (root / "src/lmlab/models/toy.py").write_text(filled(TOY_MODEL, layout))
    (root / "conf/model/toy.yaml").write_text(TOY_CONFIG)
    table = root / "src/lmlab/models/__init__.py"
    text = table.read_text()
    anchor = "from lmlab.models.transformer import TransformerConfig, TransformerLM\n"
    line = '    "transformer": Family(TransformerConfig, TransformerLM),\n'
    assert anchor in text and line in text
    text = text.replace(anchor, anchor + "from lmlab.models.toy import ToyConfig, ToyLM\n")
    table.write_text(text.replace(line, line + '    "toy": Family(ToyConfig, ToyLM),\n'))
    if sizes:
        register_configs()
        for scale, embed_dim in (("small", 384), ("base", 768)):
            width = toy_width(scaled_params(scale, "transformer"), embed_dim)
            size = (
                f"# The Transformer's parameter count at {scale}.\nlayers: 1\nwidth: {width}\nembed_dim: {embed_dim}\n"
            )
            (root / f"conf/scale_model/{scale}_toy.yaml").write_text(size)


def toy_width(target: int, embed_dim: int) -> int:
    """The toy's one-layer width with `target` parameters: its count is linear in the width."""
    namespace: dict = {}
    exec(compile(filled(TOY_MODEL, BATCH_FIRST), "toy.py", "exec"), namespace)  # noqa: S102 - the test's own source
    config, model = namespace["ToyConfig"], namespace["ToyLM"]

    def count(width: int) -> int:
        with torch.device("meta"):
            return model(config(layers=1, width=width, embed_dim=embed_dim), DEFAULT_VOCAB).num_params

    per_width = count(2) - count(1)
    return round((target - count(1)) / per_width) + 1


def filled(source: str, placeholders: dict[str, str]) -> str:
    for placeholder, text in placeholders.items():
        source = source.replace(placeholder, text)
    return source


def snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def documented_files() -> list[str]:
    """The files docs/adding-a-family.md's table says a family takes."""
    doc = (ROOT / "docs/adding-a-family.md").read_text()
    return re.findall(r"^\| `([^`]+)` \((?:new|edited)\) \|", doc, re.M)


def project_copy(dest: Path) -> Path:
    """The package, its configs and its tests: what the contract runs on."""
    return copy_files(dest, ("src/lmlab", "conf", "tests", "pyproject.toml"))


def contract(root: Path, *select: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}  # the copy's lmlab, not the installed one
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_family_contract.py", *select],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.timeout(900)
def test_a_family_added_by_the_documented_files_passes_the_contract(tmp_path: Path) -> None:
    root = project_copy(tmp_path / "good")
    before = snapshot(root)
    add_toy_family(root, BATCH_FIRST)
    after = snapshot(root)
    changed = sorted(path for path in after if before.get(path) != after[path])
    documented = [path.replace("<name>", "toy") for path in documented_files()]
    assert changed == sorted(documented) and len(changed) == 5, (changed, documented)
    result = contract(root, "-k", "toy or scale or ddp_gather")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    per_family = contract(root, "--collect-only", "-k", "transformer").stdout.count("[")  # the tests a family gets
    scales = contract(root, "--collect-only", "-k", "scale").stdout.count("[")
    passed = int(result.stdout.strip().splitlines()[-1].split()[0])
    assert per_family >= 25 and scales >= 2, result.stdout[-2000:]
    assert passed == per_family + scales + 1, result.stdout[-2000:]  # all of them, the scales and the DDP gather


def test_the_contract_fails_a_family_whose_state_is_not_batch_first_or_that_has_no_scale_sizes(
    tmp_path: Path,
) -> None:
    root = project_copy(tmp_path / "bad")
    add_toy_family(root, LAYER_FIRST, sizes=False)
    result = contract(root, "-k", "toy and batch_first or scale")
    assert result.returncode == 1 and "every state tensor is batch first" in result.stdout, result.stdout[-3000:]
    assert re.search(r"FAILED \S+test_each_scale_gives_every_family_about_one_size\[small\]", result.stdout)
    assert "'toy'" in result.stdout, result.stdout[-3000:]
