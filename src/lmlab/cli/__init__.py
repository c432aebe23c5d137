"""``lmlab <verb> [hydra overrides]``: one Hydra app per verb, configs from ``./conf``.

The CLI is thin: each verb module turns its validated config into calls of
library functions that tests call directly. Pipeline verbs (``VERBS``) are Hydra
apps, so they work in DVC stages, multiruns and sweep agents alike. Tools that
act on many runs rather than configure one (``TOOLS``: sweep, compare) take
plain options; their module's ``main(argv) -> int`` parses them.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra._internal.utils import get_args_parser  # the parser hydra.main uses
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from lmlab.cli.schemas import register_configs, typed
from lmlab.cli.verbs import TOOLS, VERBS, summary, usage
from lmlab.core.children import stop_with_parent
from lmlab.core.errors import DiskFull, LmlabError, Stopped
from lmlab.core.malloc import steady_malloc
from lmlab.core.rules import dotted, unwritable

# What Lightning's DDP launcher sets in the launching process before it starts ranks 1..n-1.
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra overrides that make a sweep: a multirun job's other ranks run that one job, not the sweep.
SWEEP_KEYS = ("hydra.mode", "hydra.sweep", "hydra/sweeper", "hydra.launcher", "hydra/launcher", "hydra.run.dir")
DVC_STAGE = "DVC_STAGE"  # what `dvc repro` sets in a stage command's environment (dvc.env.DVC_STAGE)
# Hydra's flag for shell completion (`-sc install=bash`, and `-sc query=bash` at each TAB).
COMPLETION_FLAGS = {"-sc", "--shell-completion"}
HELP_FLAGS = {"-h", "--help"}  # lmlab's help of a verb (`verb_help`); Hydra's own: --hydra-help
# A write the file system refused: read-only, no permission, a file where a folder should be, over quota
UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EDQUOT}


def main() -> None:
    args = sys.argv[1:]
    if not VERBS:
        print("lmlab: no verbs are registered: install lmlab (pip install -e . in the project root)", file=sys.stderr)
        sys.exit(2)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    verb = args[0]
    if verb in TOOLS:
        sys.exit(importlib.import_module(TOOLS[verb]).main(args[1:]))
    if verb not in VERBS:
        print(
            f"lmlab: unknown verb {verb!r}; choose one of: {', '.join([*VERBS, *TOOLS])}\n\n{usage()}", file=sys.stderr
        )
        sys.exit(2)
    if COMPLETION_FLAGS & set(args):
        from lmlab.cli import completion  # TAB's code, not a job's: kept out of the stages' code deps

        if (script := completion.script(args[1:], names=[*VERBS, *TOOLS], verbs=list(VERBS))) is not None:
            print(script)
            return
        if "COMP_LINE" in os.environ:
            os.environ["COMP_LINE"] = completion.verb_line(os.environ["COMP_LINE"])
    conf = Path.cwd() / "conf"
    if not (conf / f"{verb}.yaml").is_file():
        print(
            f"lmlab: no {conf / (verb + '.yaml')}: run lmlab from the project root (the folder holding conf/)",
            file=sys.stderr,
        )
        sys.exit(2)
    if HELP_FLAGS & set(args[1:]):
        print(verb_help(conf, verb))
        return
    if (unread := unread_group(conf, verb, args[1:])) is not None:
        print(f"lmlab {verb}: error: {unread}", file=sys.stderr)
        sys.exit(2)
    register_configs(verb)
    from lmlab.training.config import trainer_key_hint  # the training schemas: not a data stage's code

    for override in args[1:]:
        if (hint := trainer_key_hint(override)) is not None:
            print(f"lmlab {verb}: error: {hint}", file=sys.stderr)
            sys.exit(2)

    prompt = None
    module = importlib.import_module(VERBS[verb])
    if hasattr(module, "positional_prompt"):  # generate: a prompt may stand beside the overrides
        try:
            overrides, prompt = module.positional_prompt(args[1:])
        except LmlabError as err:
            print(f"lmlab {verb}: error: {err}", file=sys.stderr)
            sys.exit(2)
        args = [verb, *overrides]
    argv = list(sys.argv)
    sys.argv = [f"lmlab {verb}", *args[1:], *rank_overrides(verb, args[1:], os.environ)]
    # The verb's code imports torch and Lightning (seconds): only a job needs it, not --help, --cfg, --info or
    # TAB. It is imported before Hydra sets up the job's logging: Lightning, imported into a configured root
    # logger, would print each of its messages twice (on its own stderr handler and on the job's).
    run = module.job() if runs_job(sys.argv[1:]) else None

    def task(cfg: DictConfig) -> Any:
        """One job; returns what the verb returns (a multirun sweeper such as Optuna's optimises it)."""
        assert run is not None, "Hydra runs a job only where runs_job() said it would"
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        sys.argv = job_argv(argv) if multirun else argv  # Lightning's DDP launcher re-runs it for the other ranks
        launcher_env = {key: os.environ.get(key) for key in LAUNCHER_ENV}
        steady_malloc()
        if DVC_STAGE in os.environ:  # a stage of `dvc repro`: stop when DVC does
            stop_with_parent(os.getppid())
        if (job_id := launcher_job_id()) is not None and "tags" in cfg:
            with read_write(cfg):
                cfg.tags = [*cfg.tags, f"job:{job_id}"]  # W&B's tags and config: the run of a SLURM job
        try:
            with sigterm_unwinds(), ranks_run_lmlab():
                return run(typed(cfg)) if prompt is None else run(typed(cfg), prompt)
        except LmlabError as err:
            where = holding_key(err.path, cfg) if isinstance(err, DiskFull) else None
            print(
                f"lmlab {verb}: error: {err}" + (f" It is under {where}, which moves it." if where else ""),
                file=sys.stderr,
            )
            sys.exit(2)
        except OSError as err:
            if err.errno not in UNWRITABLE or not err.filename:
                raise
            print(f"lmlab {verb}: error: {unwritable_message(err, cfg)}", file=sys.stderr)
            sys.exit(2)
        except Stopped as stop:
            print(f"lmlab {verb}: stopped by SIGTERM" + (f"; {stop}" if str(stop) else ""), file=sys.stderr)
            sys.exit(128 + signal.SIGTERM)
        except KeyboardInterrupt:
            print(f"lmlab {verb}: interrupted", file=sys.stderr)
            sys.exit(128 + signal.SIGINT)
        finally:
            if multirun:
                end_launched_ranks(launcher_env)

    hydra.main(version_base="1.3", config_path=str(conf), config_name=verb)(task)()


def verb_groups(conf: Path, verb: str) -> dict[str, Any]:
    """The config groups conf/<verb>.yaml composes (`optional scale_model@model` is scale_model), each with its
    default option (None: none unless chosen)."""
    groups = {}
    for entry in yaml.safe_load((conf / f"{verb}.yaml").read_text()).get("defaults", []):
        for key, option in entry.items() if isinstance(entry, dict) else ():
            group = key.removeprefix("optional ").split("@")[0]
            if not key.startswith("override ") and group != "hydra" and (conf / group).is_dir():
                groups[group] = option
    return groups


def verb_help(conf: Path, verb: str) -> str:
    """`lmlab <verb> --help`: what the verb does and the config groups it reads, with their options."""
    lines = [
        f"lmlab {verb}: {summary(verb)}",
        "",
        f"usage: lmlab {verb} [group=option ...] [key=value ...] [--cfg job] [-m]",
        "",
        "Config groups it reads (conf/<group>/<option>.yaml; choose one with group=option):",
    ]
    for group, option in verb_groups(conf, verb).items():
        options = sorted(path.stem for path in (conf / group).glob("*.yaml"))
        if "${" in str(option):
            lines.append(f"  {group}: the file {option} for the choices above ({len(options)} files)")
        else:
            lines.append(f"  {group}: {', '.join(options)} (default: {'none' if option is None else option})")
    lines += [
        "",
        f"Every key and its value: `lmlab {verb} --cfg job`; set one with key=value (nested: trainer.max_steps=500).",
        "Hydra's own options: --hydra-help.",
    ]
    return "\n".join(lines)


def unread_group(conf: Path, verb: str, args: list[str]) -> str | None:
    """A `group=option` override of a config group the verb does not compose, said in lmlab's words (Hydra's is
    "Could not override 'task_data'. No match in the defaults list"): which verbs read it."""
    groups = verb_groups(conf, verb)
    for arg in args:
        key = arg.split("=", 1)[0].lstrip("+~")
        if "=" in arg and "." not in key and "/" not in key and key not in groups and (conf / key).is_dir():
            readers = [other for other in VERBS if key in verb_groups(conf, other)]
            return (
                f"{arg}: lmlab {verb} does not read the {key} group (conf/{key}/); "
                + (f"the verbs that do: {', '.join(readers)}" if readers else "no verb reads it")
                + f". `lmlab {verb} --help` lists the groups it reads"
            )
    return None


class JobFolderCheck(Callback):
    """Hydra makes the job's folder and writes its config and log file there before lmlab's code runs (and
    before `check_writable` can): a folder it cannot write was Hydra's traceback ("Unable to configure handler
    'file'"), here an error naming the folder and the key that moves it (conf/hydra/default.yaml's callback)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_job_folder(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_job_folder(config, "hydra.sweep.dir")


def unwritable_message(err: OSError, cfg: DictConfig) -> str:
    """A write the disk refused mid-job (a folder made read-only, a file in a folder's place), in lmlab's words:
    the file, why, and the config key whose path holds it (the longest that does), which moves it."""
    where = holding_key(Path(err.filename), cfg)
    return f"cannot write {err.filename} ({err.strerror}){f'; it is under {where}, which moves it' if where else ''}."


def holding_key(path: Path, cfg: DictConfig) -> str | None:
    """The config key (or hydra.run.dir) whose path holds `path` most closely: the setting that moves it."""
    path = Path(os.path.abspath(path))
    values = dotted(OmegaConf.to_container(cfg, resolve=True))
    if HydraConfig.initialized():
        values["hydra.run.dir"] = HydraConfig.get().runtime.output_dir
    holding = [
        (len(Path(os.path.abspath(v)).parts), key)
        for key, v in values.items()
        if isinstance(v, str) and v and path.is_relative_to(os.path.abspath(v))
    ]
    return max(holding)[1] if holding else None


def check_job_folder(config: DictConfig, key: str) -> None:
    """The folder Hydra writes the job's config in (none where `hydra.output_subdir` is null: a verb without a
    run folder, such as evaluate, whose outputs `check_writable` checks)."""
    subdir = OmegaConf.select(config, "hydra.output_subdir")
    if not subdir:
        return
    folder = Path(str(OmegaConf.select(config, key)))
    folders = [folder, *([folder / subdir] if (folder / subdir).exists() else [])]
    for problem in filter(None, map(unwritable, folders)):
        verb = OmegaConf.select(config, "hydra.job.name")
        print(f"lmlab {verb}: error: {key}={folder}: {problem}; give {key} a folder lmlab may write", file=sys.stderr)
        sys.exit(2)


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (`wandb agent`, `lmlab sweep`, a scheduler) ends the job as Ctrl-C does: `finally` blocks run.

    Python's default would end the process on the spot; one that came while the job closed down would leave
    W&B's offline run file empty (W&B writes it when the run finishes). During a fit Lightning's handler calls
    this one after its own; Lightning then stops at the next step, so this one stands aside. Once raised, later
    SIGTERMs are ignored, so the unwinding (W&B's finish) is not cut short again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers
        return

    def on_sigterm(signum: int, frame: object) -> None:
        if signal.getsignal(signal.SIGTERM) is not on_sigterm:
            return  # called by Lightning's handler: the fit stops itself
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Stopped

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def runs_job(args: list[str]) -> bool:
    """Whether Hydra, given these arguments, runs the task rather than printing help, the config, info or
    completions. Hydra's own parser reads them, so its abbreviations (`--cf job`) count too."""
    parsed = get_args_parser().parse_args(args)
    return not (parsed.help or parsed.hydra_help or parsed.cfg or parsed.info or parsed.shell_completion)


def targets(only: str | None) -> list[str]:
    """The dataset keys a data verb acts on: ``only=data``, ``only=task_data`` or both."""
    choices = ("data", "task_data")
    if only is None:
        return list(choices)
    if only not in choices:
        raise LmlabError(
            f"only={only!r} is not a dataset key; use one of {', '.join(choices)} (or leave it null for both)"
        )
    return [only]


def rank_overrides(verb: str, args: list[str], env: Mapping[str, str]) -> list[str]:
    """Ranks started by torchrun or srun each run the whole command: give them one run folder, written by rank 0.

    Without this, every rank would make its own timestamped Hydra folder and write
    its own copy of the config. Under `-m` every rank runs the sweep itself, in lockstep, so
    the sweep folder is shared the same way (the sweeper must then choose the same jobs on
    every rank: the basic sweeper does, Optuna's does with a seeded sampler).
    Overrides the user (or Lightning's launcher) gave win.
    """
    world = int(env.get("WORLD_SIZE") or (env.get("SLURM_NTASKS") if "SLURM_PROCID" in env else None) or 1)
    if world <= 1:
        return []
    rank = int(env.get("RANK") or env.get("SLURM_PROCID") or env.get("LOCAL_RANK") or 0)
    job = env.get("TORCHELASTIC_RUN_ID") or env.get("SLURM_JOB_ID") or "distributed"
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in args}
    wanted = {"hydra.run.dir": f"outputs/{verb}/{job}", "hydra.sweep.dir": f"outputs/{verb}/multirun/{job}"}
    if rank > 0:
        wanted |= {"hydra.output_subdir": "null", "hydra.job.name": f"{verb}_rank{rank}"}
    return [f"{key}={value}" for key, value in wanted.items() if key not in given]


def job_argv(argv: list[str]) -> list[str]:
    """The command line of this multirun job alone, for Lightning's DDP launcher to re-run as ranks 1..n-1.

    Re-running the typed command would start the whole sweep again in every rank, in a folder of its
    own. Instead the ranks get this job's overrides (as the sweeper chose them, e.g. Optuna's trial
    values), the user's other Hydra overrides, and `hydra.mode=RUN` (a config such as
    hparams_search/pretrain_optuna sets MULTIRUN). Lightning appends `hydra.run.dir=<hydra.run.dir>`,
    which is pointed at this job's folder so that every rank of the job shares it.
    """
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    kept = [arg for arg in hydra_cfg.overrides.hydra if not arg.lstrip("+~").startswith(SWEEP_KEYS)]
    return [*argv[:2], *hydra_cfg.overrides.task, *kept, "hydra.mode=RUN"]


def launcher_job_id() -> str | None:
    """The job id of a scheduler that runs this job through Hydra's submitit launcher (hydra/launcher=slurm:
    SLURM's, `<array id>_<index>` in an array; local: the job's process id), which submitit writes in
    `hydra.job.id`; None for a job of lmlab's own process (a plain run or Hydra's basic launcher)."""
    hydra_cfg = HydraConfig.get()
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default=""))
    return str(hydra_cfg.job.id) if "submitit" in target and OmegaConf.select(hydra_cfg, "job.id") else None


@contextmanager
def ranks_run_lmlab() -> Iterator[None]:
    """Lightning's DDP launcher starts ranks 1..n-1 as `python -m <the main module>` with this job's command line
    (`job_argv`). In a job that another program runs, such as submitit's (`python -m submitit.core._submit
    <folder>`, hydra/launcher=local or slurm), that module is not lmlab: the ranks would run submitit with lmlab's
    arguments. For the job's length the main module reads as `lmlab`'s, so the ranks run `python -m lmlab`."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if main is None or spec is None or spec.name.split(".")[0] == "lmlab":
        yield  # the lmlab script (Lightning re-runs sys.argv[0]) or `python -m lmlab`
        return
    main.__spec__ = importlib.util.find_spec("lmlab")
    try:
        yield
    finally:
        main.__spec__ = spec


def end_launched_ranks(before: Mapping[str, str | None]) -> None:
    """Undo what Lightning's DDP launcher left in this process, so the next multirun job launches its own ranks.

    Left in place, the next job's Trainer would take `LOCAL_RANK` for an outside launcher's (start no
    ranks) and reuse the finished job's process group. Groups from torchrun or srun (`LOCAL_RANK` set
    before the job) are theirs, and stay.
    """
    if before["LOCAL_RANK"] is not None or "LOCAL_RANK" not in os.environ:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
