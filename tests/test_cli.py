"""The `lmlab` CLI: verbs, Hydra composition, and errors a user sees."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lmlab.cli import sigterm_unwinds
from lmlab.cli.schemas import register_configs, typed
from lmlab.cli.verbs import TOOLS, VERBS
from lmlab.core.errors import Stopped
from lmlab.data import readers, sources
from tests.helpers.project import ROOT, env, lmlab
from tests.helpers.tiny_lm import tiny_overrides, write_corpus

CONF = ROOT / "conf"


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_usage_lists_every_verb() -> None:
    result = lmlab("--help")
    assert result.returncode == 0
    for verb in VERBS:
        assert verb in result.stdout


PLUGIN = '''"""``lmlab hello``: a verb another package adds."""

from collections.abc import Callable
from dataclasses import dataclass

SUMMARY = "say hello to whom=<name>"


@dataclass
class HelloConfig:
    whom: str = "world"


SCHEMA = HelloConfig


def job() -> Callable[[HelloConfig], None]:
    def run(cfg: HelloConfig) -> None:
        print(f"hello, {cfg.whom}")

    return run
'''


def test_another_package_adds_a_verb_through_its_entry_point(tmp_path: Path) -> None:
    """A verb is found by its entry point (group lmlab.verbs), so adding one edits no module that the pipeline's
    stages import: no study goes stale for it. Here a package on PYTHONPATH, with its own dist-info, adds one."""
    site = tmp_path / "site"
    (site / "hello_verb").mkdir(parents=True)
    (site / "hello_verb" / "__init__.py").write_text(PLUGIN)
    info = site / "hello_verb-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-verb\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lmlab.verbs]\nhello = hello_verb\n")
    project = tmp_path / "project"
    (project / "conf").mkdir(parents=True)
    (project / "conf" / "hello.yaml").write_text(
        "defaults:\n  - hello_schema\n  - _self_\nhydra:\n  output_subdir: null\n  run:\n    dir: .\n"
    )
    environment = {**env(), "PYTHONPATH": str(site)}
    listed = subprocess.run(
        [sys.executable, "-m", "lmlab", "--help"], cwd=project, env=environment, capture_output=True, text=True
    )
    assert "hello      say hello to whom=<name>" in listed.stdout and "pretrain" in listed.stdout, listed.stderr
    ran = subprocess.run(
        [sys.executable, "-m", "lmlab", "hello", "whom=lmlab"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0 and "hello, lmlab" in ran.stdout, ran.stderr[-2000:]
    wrong = subprocess.run(
        [sys.executable, "-m", "lmlab", "hello", "whom_=x"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0 and "whom_" in wrong.stderr


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


def test_a_verb_lists_only_the_groups_it_reads_and_refuses_another() -> None:
    """`lmlab evaluate --help` lists its own groups; `task_data=sst2` (read by the data verbs and finetune) is an
    error in lmlab's words, not Hydra's "No match in the defaults list"."""
    shown = lmlab("evaluate", "--help")
    assert shown.returncode == 0 and "  data: " in shown.stdout and "  logger: " in shown.stdout
    assert "task_data" not in shown.stdout and "  model: " not in shown.stdout
    refused = lmlab("evaluate", "task_data=sst2")
    assert refused.returncode == 2 and "No match" not in refused.stderr, refused.stderr
    assert "lmlab evaluate does not read the task_data group" in refused.stderr
    assert "the verbs that do: download, finetune, split, tokenize" in refused.stderr


def test_library_error_is_a_message_not_a_traceback() -> None:
    result = lmlab("split", "only=corpus")
    assert result.returncode == 2
    assert "lmlab split: error: only='corpus' is not a dataset key" in result.stderr
    assert "Traceback" not in result.stderr


def test_outside_the_project_says_where_to_run(tmp_path: Path) -> None:
    result = lmlab("download", cwd=tmp_path)
    assert result.returncode == 2
    assert "project root" in result.stderr


HEAVY = {"torch", "lightning", "wandb"}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["pretrain", "--help"],
        ["pretrain", "--cfg", "job"],
        ["finetune", "--info", "defaults"],
        ["pretrain", "-sc", "query=bash"],
    ],
    ids=" ".join,
)
def test_help_config_and_completion_start_without_torch(args: list[str]) -> None:
    """What a person reads before any job runs must not wait seconds for torch, Lightning or W&B to load."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lmlab", *args],
        cwd=ROOT,
        env={**env(), "COMP_LINE": "lmlab pretrain model="},  # read by -sc query only
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & HEAVY, f"lmlab {' '.join(args)} imported {sorted(imported & HEAVY)}"


def test_a_job_says_what_it_does_in_a_few_lines(tmp_path: Path) -> None:
    """A pretraining job with W&B (offline) prints its start line (device, steps), the W&B run's folder and its
    result: no W&B banner or summary tables, no Lightning device lines, each line once (Lightning is imported
    before Hydra sets up the job's logging, else its messages would print twice)."""
    write_corpus(tmp_path / "data")
    run = [*tiny_overrides(max_steps=2, val_every=2), f"paths.data_dir={tmp_path / 'data'}"]
    result = lmlab("pretrain", "model=gru", *run, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert not [line for line in lines if line.startswith("wandb:") or "GPU available" in line], lines
    for said in ("pretraining gru (", "cpu x1, precision 32-true", "W&B run ", "pretrained gru: 2 steps"):
        assert sum(said in line for line in lines) == 1, (said, lines)
    assert len(lines) <= 4, lines


# A line typed at the prompt, the COMP_WORDS bash makes of it ('=' is one of its word breaks), and what TAB
# offers (among others). After `model=` readline replaces only what follows the '=': the bare families.
TABS = [
    ("lmlab ", ["lmlab", ""], {*VERBS, *TOOLS}),
    ("lmlab pretrain mod", ["lmlab", "pretrain", "mod"], {"model="}),
    ("lmlab pretrain model=", ["lmlab", "pretrain", "model", "="], set(choices("model"))),
    ("lmlab pretrain trainer.", ["lmlab", "pretrain", "trainer."], {"trainer.max_steps=", "trainer.val_every="}),
    (
        "lmlab pretrain model=gru trainer.max_s",
        ["lmlab", "pretrain", "model", "=", "gru", "trainer.max_s"],
        {"trainer.max_steps="},
    ),
]


def test_bash_completion_completes_verbs_groups_options_and_keys() -> None:
    """`eval "$(lmlab pretrain -sc install=bash)"`, then TAB: bash calls the registered function with the line."""
    install = lmlab("pretrain", "-sc", "install=bash")
    assert install.returncode == 0, install.stderr
    lines = [install.stdout, "function=$(complete -p lmlab | grep -o -- '-F [^ ]*'); function=${function#-F }"]
    for line, words, _ in TABS:
        lines += [
            f"COMP_LINE={shlex.quote(line)} COMP_POINT={len(line)} COMP_CWORD={len(words) - 1}",
            f"COMP_WORDS=({' '.join(map(shlex.quote, words))}) COMPREPLY=()",
            '"$function"; echo "${COMPREPLY[*]}"',
        ]
    lines.append(lmlab("pretrain", "-sc", "uninstall=bash").stdout + "complete -p lmlab || echo uninstalled")
    result = subprocess.run(["bash", "-c", "\n".join(lines)], cwd=ROOT, env=env(), capture_output=True, text=True)
    *offered, uninstalled = result.stdout.splitlines()
    assert len(offered) == len(TABS), result.stdout + result.stderr
    for (line, _, expected), reply in zip(TABS, offered, strict=True):
        assert expected <= set(reply.split()), f"{line}<TAB> offered {reply!r}"
    assert uninstalled == "uninstalled"


def test_completion_for_another_shell_says_bash() -> None:
    result = lmlab("pretrain", "-sc", "install=fish")
    assert result.returncode != 0
    assert "bash only" in result.stderr


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
        for name in choices("tokenizer"):  # default.yaml: every key, which the type files build on
            cfg = typed(compose(config_name="tokenize", overrides=[f"tokenizer={name}"]))
            assert cfg.tokenizer.type == ("bpe" if name == "default" else name)


# ----- SIGTERM (`wandb agent`, `lmlab sweep`, a scheduler) unwinds a job instead of ending it on the spot -----
def test_sigterm_outside_a_fit_unwinds_the_job_once() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    unwound = []
    with pytest.raises(Stopped), sigterm_unwinds():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted at once
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # a second one while closing down is ignored
            time.sleep(0.05)
            unwound.append(True)
    assert unwound == [True], "the finally block ran to its end"
    assert signal.getsignal(signal.SIGTERM) is previous


class SigtermAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_a_fit_is_left_to_lightning(tmp_path: Path) -> None:
    """Lightning's handler calls ours after its own: the fit ends at the step, as Lightning ends it."""
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    trainer = L.Trainer(
        max_steps=50, callbacks=[SigtermAt(3)], default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    with pytest.raises(SIGTERMException), sigterm_unwinds():
        trainer.fit(BoringModel())
    assert trainer.global_step == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_jobs_hold_the_allocator_steady() -> None:
    """Every job fixes glibc's thresholds (docs/benchmarks.md: 28% of a CPU training step went to page faults)."""
    from lmlab.core.malloc import steady_malloc

    assert steady_malloc()
    assert "steady_malloc()" in (ROOT / "src" / "lmlab" / "cli" / "__init__.py").read_text()
