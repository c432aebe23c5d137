"""Adding a model family takes a model file, a config file and the family table (docs/adding-a-family.md).

In a temporary copy of the project a throwaway family (a diagonal linear recurrence whose state is a dict)
is added exactly that way, and the family contract (test_family_contract.py) runs on it: it passes, and a
copy whose state is not batch first fails it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.project import copy_files

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


def add_toy_family(root: Path, layout: dict[str, str]) -> list[Path]:
    """The three edits docs/adding-a-family.md lists; returns the files written or changed."""
    source = TOY_MODEL
    for placeholder, text in layout.items():
        source = source.replace(placeholder, text)
    model = root / "src/lmlab/models/toy.py"
    model.write_text(source)
    config = root / "conf/model/toy.yaml"
    config.write_text(TOY_CONFIG)
    table = root / "src/lmlab/models/__init__.py"
    text = table.read_text()
    anchor = "from lmlab.models.transformer import TransformerConfig, TransformerLM\n"
    line = '    "transformer": Family(TransformerConfig, TransformerLM),\n'
    assert anchor in text and line in text
    text = text.replace(anchor, anchor + "from lmlab.models.toy import ToyConfig, ToyLM\n")
    table.write_text(text.replace(line, line + '    "toy": Family(ToyConfig, ToyLM),\n'))
    return [model, config, table]


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
def test_a_family_added_by_the_documented_three_files_passes_the_contract(tmp_path: Path) -> None:
    root = project_copy(tmp_path / "good")
    changed = add_toy_family(root, BATCH_FIRST)
    assert len(changed) == 3  # the number docs/adding-a-family.md gives
    result = contract(root, "-k", "toy or ddp_gather")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    per_family = contract(root, "--collect-only", "-k", "transformer").stdout.count("[")  # the tests a family gets
    passed = int(result.stdout.strip().splitlines()[-1].split()[0])
    assert per_family >= 25 and passed == per_family + 1, result.stdout[-2000:]  # all of them, and the DDP gather


def test_the_contract_fails_a_family_whose_state_is_not_batch_first(tmp_path: Path) -> None:
    root = project_copy(tmp_path / "bad")
    add_toy_family(root, LAYER_FIRST)
    result = contract(root, "-k", "toy and batch_first")
    assert result.returncode == 1 and "every state tensor is batch first" in result.stdout, result.stdout[-3000:]
