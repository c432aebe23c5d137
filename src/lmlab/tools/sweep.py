"""W&B sweep files offline: checking them, their state on disk, W&B's sweep engine, and the ranking.

The same YAML runs online under ``wandb sweep`` + ``wandb agent``, where the W&B server proposes each
trial's parameters; here W&B's open-source sweep engine (the ``sweeps`` package that ``wandb[sweeps]``
installs) proposes them with ``sweeps.next_run`` and decides early termination with ``sweeps.stop_runs``.
A trial is the YAML's ``command`` with the parameters substituted as the agent does it;
``lmlab.tools.sweep_trials`` runs trials as processes.

Layout of an offline sweep, ``outputs/sweeps/<sweep id>/``:

    sweep.json   the sweep file's config and every trial: parameters, state, metrics (written atomically)
    <run id>/    a trial's run folder (its Hydra output folder, its W&B run id): val_curve.csv, metrics.json,
                 checkpoints/, wandb/, trial.log
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from lmlab.cli.schemas import register_configs, typed
from lmlab.core import metrics as M
from lmlab.core.atomic import read_json, write_json
from lmlab.core.errors import LmlabError

with warnings.catch_warnings():  # sweeps 0.3 configures its pydantic model the pydantic-1 way; pydantic 2 warns
    warnings.filterwarnings("ignore", message="Valid config keys have changed in V2")
    warnings.filterwarnings("ignore", message="Support for class-based `config` is deprecated")
    import sweeps
    from sweeps import RunState, SweepRun

VERBS = ("pretrain", "finetune", "synth")  # the `lmlab` verbs a trial can run: each trains one configuration
# Agent macros that pass the parameters to a Hydra app: `key=value`, or `++key=value` (set even if absent).
ARG_MACROS = {"args_no_hyphens": "", "args_override_hydra": "++"}
PLAIN_MACROS = ("env", "interpreter", "program")
ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")  # as the agent: ${envvar:NAME} anywhere in an element
# Our trial states, and what W&B's engine calls them (an early-stopped run is one the sweep killed).
ENGINE_STATES = {
    "running": RunState.running,
    "finished": RunState.finished,
    "failed": RunState.failed,
    "stopped": RunState.killed,
}


@dataclass
class Trial:
    """One proposed configuration: its process's W&B run id and run folder name, and what it reported."""

    index: int
    run_id: str
    params: dict[str, Any]
    state: str = "running"  # running | finished | failed | stopped (early termination)
    exit_code: int | None = None
    pid: int | None = None  # of its latest process, while running
    summary: dict[str, float] = field(default_factory=dict)  # metrics.json (final figures)
    curve: list[dict[str, float]] = field(default_factory=list)  # val_curve.csv: one row per validation


@dataclass
class Sweep:
    """A sweep file, checked, and its trials so far."""

    file: Path
    config: dict[str, Any]
    verb: str
    folder: Path
    trials: list[Trial] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def metric(self) -> str:
        return self.config["metric"]["name"]

    @property
    def goal(self) -> str:
        return self.config["metric"].get("goal", "minimize")

    def save(self) -> None:
        state = {"file": str(self.file), "config": self.config, "trials": [asdict(t) for t in self.trials]}
        write_json(self.folder / "sweep.json", state)


# ----- the sweep file -----
def load_config(path: Path) -> dict[str, Any]:
    """The sweep file, checked against W&B's own schema for sweep configs."""
    if not path.is_file():
        shipped = sorted(p.name for p in Path("sweeps").glob("*.yaml"))
        raise LmlabError(f"no sweep file {path}" + (f"; sweeps/ holds {', '.join(shipped)}" if shipped else ""))
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LmlabError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise LmlabError(f"{path}: a sweep file is a mapping with method, metric, parameters and command")
    violations = sweeps.schema_violations_from_proposed_config(config)
    if violations:
        raise LmlabError(f"{path} is not a valid W&B sweep config:\n  " + "\n  ".join(violations))
    return config


def check(config: dict[str, Any], path: Path, conf: Path) -> str:
    """Everything a trial needs, before any runs: a metric the verb reports, flat parameters, and a command
    that runs an `lmlab` verb and composes with every parameter value. Returns the verb."""
    metric = config.get("metric") or {}
    if not metric.get("name"):
        raise LmlabError(f"{path} has no metric: add e.g. `metric: {{name: val/bpb, goal: minimize}}`")
    params = config.get("parameters") or {}
    for name, spec in params.items():
        if "parameters" in spec:
            raise LmlabError(f"{path}: parameter {name!r} is nested; name the config key with dots (optim.lr)")
    command = [expand(item) for item in config.get("command") or []]
    macros = [item[2:-1] for item in command if item.startswith("${") and item.endswith("}")]
    unknown = [m for m in macros if m not in (*ARG_MACROS, *PLAIN_MACROS)]
    args = [m for m in macros if m in ARG_MACROS]
    if unknown or len(args) != 1:
        raise LmlabError(
            f"{path}: the command must pass the parameters as Hydra overrides, with one ${{args_no_hyphens}} "
            f"(or ${{args_override_hydra}}), and may use ${{env}}, ${{interpreter}}, ${{program}}; "
            f"got command: {command or '(none: the agent default passes --key=value)'}"
        )
    if "program" in macros and "program" not in config:
        raise LmlabError(f"{path}: the command uses ${{program}} but the file sets no program")
    verb = next((item for item in command if item in VERBS), None)
    if verb is None:
        raise LmlabError(f"{path}: the command runs no lmlab verb ({', '.join(VERBS)}): {command}")
    if verb == "pretrain" and metric["name"] not in M.PRETRAIN_SUMMARY:
        raise LmlabError(
            f"{path}: metric {metric['name']!r} is not one lmlab pretrain reports; use one of "
            f"{', '.join(M.PRETRAIN_SUMMARY)}"
        )
    if verb == "synth" and metric["name"] not in (M.VAL_LOSS, M.VAL_ACC) and not metric["name"].startswith("val/acc_"):
        raise LmlabError(
            f"{path}: metric {metric['name']!r} is not one lmlab synth reports; use {M.VAL_ACC}, {M.VAL_LOSS} "
            "or the accuracy beyond the training length (val/acc_2x for task.lengths holding 2)"
        )
    fixed = [item for item in command[command.index(verb) + 1 :] if not item.startswith("${")]
    composes(verb, fixed, {name: probes(name, spec) for name, spec in params.items()}, conf, path)
    return verb


def probes(name: str, spec: dict[str, Any]) -> list[Any]:
    """Values to try a parameter with: every listed value, else both ends of its distribution."""
    param = sweeps.params.HyperParameter(name, spec)
    if param.type in (param.CATEGORICAL, param.CATEGORICAL_PROB):
        return list(param.config["values"])
    if param.type == param.CONSTANT:
        return [param.config["value"]]
    return [plain(param.ppf(0.001)), plain(param.ppf(0.999))]


def composes(verb: str, fixed: list[str], values: dict[str, list[Any]], conf: Path, path: Path) -> None:
    """Compose `conf/<verb>.yaml` with the command's overrides and every parameter value, as trials would.

    Case i sets every parameter to its i-th value (cycling), so each value is tried in few composes; a
    failing case is narrowed down to the parameter that fails alone.
    """
    if not (conf / f"{verb}.yaml").is_file():
        raise LmlabError(f"no {conf / verb}.yaml: run lmlab sweep from the project root (the folder holding conf/)")
    width = max((len(options) for options in values.values()), default=0)
    cases = [{}] + [{name: options[i % len(options)] for name, options in values.items()} for i in range(width)]
    register_configs()
    with initialize_config_dir(config_dir=str(conf.resolve()), version_base="1.3"):

        def error(params: dict[str, Any]) -> Exception | None:
            try:
                typed(compose(config_name=verb, overrides=[*fixed, *overrides(params)]))
            except (HydraException, OmegaConfBaseException, ValueError, LmlabError) as err:
                return err
            return None

        for params in cases:
            if (err := error(params)) is None:
                continue
            alone = next(({k: v} for k, v in params.items() if error({k: v}) is not None), params)
            what = f"parameter {' '.join(overrides(alone))}" if params else "the command's own overrides"
            raise LmlabError(
                f"{path}: {what} {'does' if len(alone) == 1 else 'do'} not compose with {conf / verb}.yaml: "
                f"{reason(error(alone) or err)}. Sweep only keys that exist in the config, with values of their "
                f"type (`lmlab {verb} --cfg job` lists them)"
            ) from err


def expand(item: Any) -> str:
    """A command element with ${envvar:NAME} replaced as the agent does (left as NAME when unset)."""
    return ENVVAR.sub(lambda m: os.environ.get(m.group(1), m.group(1)), str(item))


def reason(err: BaseException) -> str:
    """The first line of an error and of each of its causes: Hydra's message names the key, OmegaConf's the type."""
    lines = []
    while err is not None:
        lines.append(str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__)
        err = err.__cause__
    return ": ".join(lines)


def overrides(params: dict[str, Any], prefix: str = "") -> list[str]:
    """The parameters as `wandb agent` writes them for ${args_no_hyphens}: f"{key}={value}"."""
    return [f"{prefix}{key}={value}" for key, value in params.items()]


def plain(value: Any) -> Any:
    """numpy scalars (what the engine proposes) as Python values, for JSON and for `str()`."""
    return value.item() if hasattr(value, "item") else value


def sweep_id(path: Path, config: dict[str, Any]) -> str:
    """<file stem>-<digest of the config>: the same file continues its sweep, an edited one starts another."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{path.stem}-{digest}"


def open_sweep(path: Path, out: Path, conf: Path) -> Sweep:
    """The sweep of this file under `out`, with the trials an earlier `lmlab sweep` recorded."""
    config = load_config(path)
    verb = check(config, path, conf)
    sweep = Sweep(path, config, verb, out / sweep_id(path, config))
    state = sweep.folder / "sweep.json"
    if state.is_file():
        rebuild = f"`lmlab sweep` writes it; move {sweep.folder} aside to start the sweep over"
        trials = read_json(state, rebuild, {"trials": list})["trials"]
        try:
            sweep.trials = [Trial(**t) for t in trials]
        except TypeError as err:  # a trial that is not an object, or lacks or adds fields
            raise LmlabError(f"{state}: a trial does not read back ({err}): {rebuild}") from err
    return sweep


def trial_command(sweep: Sweep, trial: Trial, run_dir: Path) -> list[str]:
    """The file's command for this trial, with the macros filled in as `wandb agent` fills them (but the
    interpreter is this one), and the trial's run folder as Hydra's output folder."""
    command: list[str] = []
    for item in sweep.config["command"]:
        item = expand(item)
        name = item[2:-1] if item.startswith("${") and item.endswith("}") else None
        if name == "env":
            command += ["/usr/bin/env"] if os.name == "posix" else []
        elif name == "interpreter":
            command.append(sys.executable)
        elif name == "program":
            command.append(str(sweep.config["program"]))
        elif name in ARG_MACROS:
            command += overrides(trial.params, ARG_MACROS[name])
        else:
            command.append(item)
    quoted = str(run_dir).replace("\\", "\\\\").replace('"', '\\"')
    return [*command, f'hydra.run.dir="{quoted}"']


# ----- W&B's engine -----
def engine_run(sweep: Sweep, trial: Trial) -> SweepRun:
    """The trial as W&B's engine sees a run: state, config, per-validation history and summary."""
    history = [row for row in trial.curve if sweep.metric in row]
    summary = trial.summary or (trial.curve[-1] if trial.curve else {})
    return SweepRun(
        name=trial.run_id,
        state=ENGINE_STATES[trial.state],
        config={key: {"value": value} for key, value in trial.params.items()},
        history=history,
        summary_metrics=summary,
    )


def propose(sweep: Sweep) -> dict[str, Any] | None:
    """The next parameters from W&B's engine given every trial so far; None once a grid is done."""
    with warnings.catch_warnings():  # the Gaussian process's fitting chatter
        warnings.simplefilter("ignore")
        run = sweeps.next_run(sweep.config, [engine_run(sweep, t) for t in sweep.trials])
    return None if run is None else {key: plain(spec["value"]) for key, spec in run.config.items()}


def to_stop(sweep: Sweep) -> dict[str, str]:
    """Running trials the file's `early_terminate` (hyperband) stops now: run id -> the engine's reason."""
    if "early_terminate" not in sweep.config:
        return {}
    stopped = sweeps.stop_runs(sweep.config, [engine_run(sweep, t) for t in sweep.trials])
    # the engine's per-run info shares one list of lines (a shallow copy): pick this run's own
    lines = {run.name: (run.early_terminate_info or {}).get("lines", []) for run in stopped}
    return {
        name: next((x for x in found if x.startswith(f"Run: {name} ")), "hyperband") for name, found in lines.items()
    }


def value(sweep: Sweep, trial: Trial) -> float | None:
    """The trial's best metric (over its validations and final figures): what W&B's bayes search learns from."""
    try:
        best = engine_run(sweep, trial).metric_extremum(sweep.metric, "minimum" if sweep.goal == "minimize" else "max")
    except ValueError:
        return None
    return float(best)


# ----- a trial's run folder -----
def read_results(run_dir: Path) -> tuple[dict[str, float], list[dict[str, float]]]:
    """metrics.json (written when the trial ends) and val_curve.csv, whose last line may be mid-write."""
    summary_file = run_dir / "metrics.json"
    rebuild = "the trial writes it when it ends: remove it and run `lmlab sweep` again, which resumes the trial"
    summary = read_json(summary_file, rebuild) if summary_file.is_file() else {}
    curve_file = run_dir / "val_curve.csv"
    text = curve_file.read_text() if curve_file.is_file() else ""
    lines = text.splitlines()[: None if text.endswith("\n") else -1]
    curve = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(lines)]
    return {k: v for k, v in summary.items() if isinstance(v, int | float)}, curve


def check_metric(sweep: Sweep, trial: Trial, run_dir: Path) -> None:
    """A finished trial must report the sweep's metric, or the search has nothing to go on."""
    if value(sweep, trial) is None:
        reported = sorted({*trial.summary, *(k for row in trial.curve for k in row)} - {"step"})
        raise LmlabError(
            f"{sweep.file}: metric {sweep.metric!r} is not in {run_dir}/metrics.json or val_curve.csv of trial "
            f"{trial.index}; it reports: {', '.join(reported) or 'nothing'}"
        )


# ----- the ranking -----
def ranking(sweep: Sweep) -> list[tuple[float | None, Trial]]:
    """Trials best first by the metric; those without it (failed early) last, in order."""
    scored = [(value(sweep, t), t) for t in sweep.trials]
    sign = 1 if sweep.goal == "minimize" else -1
    return sorted(scored, key=lambda s: (s[0] is None, sign * s[0] if s[0] is not None else 0))


def print_ranking(sweep: Sweep, console: Console) -> None:
    """One row per trial, best first, with a column per parameter."""
    names = list(sweep.config["parameters"])
    table = Table(title=f"sweep {sweep.id} ({sweep.config['method']}): {sweep.metric}, {sweep.goal}")
    for column in ("rank", "trial", "run id", "state", *names, f"{sweep.metric} (best)", "steps"):
        table.add_column(column, no_wrap=True)
    for rank, (best, trial) in enumerate(ranking(sweep), start=1):
        steps = trial.summary.get(M.TRAIN_STEPS) or (trial.curve[-1]["step"] if trial.curve else None)
        table.add_row(
            str(rank),
            f"{trial.index:03d}",
            trial.run_id,
            trial.state,
            *(fmt(trial.params.get(name)) for name in names),
            fmt(best),
            fmt(steps),
        )
    console.print(table)
    console.print(f"run folders and W&B runs (tag sweep:{sweep.id}): {sweep.folder}/<run id>")


def fmt(x: Any) -> str:
    """A table cell: 4 significant digits for floats, whole numbers without decimals."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.0f}" if x.is_integer() and abs(x) >= 1 else f"{x:.4g}"
    return str(x)
