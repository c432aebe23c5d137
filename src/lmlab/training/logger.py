"""The run's logger: W&B (offline unless asked, the mode as W&B decides), CSV or none; the run's name, tags
and provenance; finishing it whatever happens."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from lmlab.core.errors import LmlabError
from lmlab.training.config import LoggerConfig

log = logging.getLogger(__name__)


def wandb_mode(cfg: LoggerConfig) -> str:
    """Whether W&B logs online: `logger.mode`, else W&B's own settings, else offline when there is no W&B
    account to sync to.

    W&B's settings, in its order: $WANDB_MODE; under `wandb agent` (WANDB_SWEEP_ID set) online, since the
    sweep's server needs the run's metrics; the mode `wandb offline` or `wandb disabled` wrote to W&B's settings
    files (`wandb online` clears it); then online for a user logged in (`wandb login` or $WANDB_API_KEY), as W&B
    itself does. Without an account nothing leaves the machine: offline.
    """
    mode = cfg.mode or os.environ.get("WANDB_MODE")
    if mode == "":  # W&B itself refuses it when it reads its settings, with a validation traceback
        raise LmlabError("WANDB_MODE is set but empty: unset it (`unset WANDB_MODE`) or give online or offline")
    if mode is None and os.environ.get("WANDB_SWEEP_ID"):
        mode = "online"
    if mode is None:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        mode = settings.read_system_settings().all().get("mode")
        if mode is None:
            logged_in = os.environ.get("WANDB_API_KEY") or wbauth.read_netrc_auth(host=settings.base_url)
            mode = "online" if logged_in else "offline"
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)  # W&B's older names
    if mode not in ("online", "offline", "disabled"):
        raise LmlabError(f"logger.mode={mode!r} (or WANDB_MODE): use online, offline or disabled")
    return mode


def run_name(cfg: LoggerConfig, job: str, family: str, scratch: bool = False, seed: int | None = None) -> str:
    """The W&B run's name: `logger.name`, else $WANDB_NAME, else `<job>-<family>[-scratch][-s<seed>]`, the run
    id appended for a sweep trial (WANDB_RUN_ID set by `lmlab sweep` or `wandb agent`), so trials differ."""
    if cfg.name:
        return cfg.name
    if os.environ.get("WANDB_NAME"):
        return os.environ["WANDB_NAME"]
    parts = [job, family, *(["scratch"] if scratch else []), *([f"s{seed}"] if seed is not None else [])]
    if os.environ.get("WANDB_RUN_ID"):
        parts.append(os.environ["WANDB_RUN_ID"])
    return "-".join(parts)


def provenance() -> dict[str, str]:
    """Where a run's code came from, for its W&B config: the git commit (and whether the tree had edits) and
    the DVC experiment, when there are ones. W&B's own git capture is off: it also saves a diff of the tree."""
    found: dict[str, str] = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            found["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True)
            found["git_dirty"] = str(bool(dirty.stdout.strip())).lower()
    except (OSError, subprocess.TimeoutExpired):  # no git on the machine
        pass
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run` for the stages it runs
        found["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    return found


def env_tags() -> list[str]:
    """$WANDB_TAGS (comma-separated), which W&B drops when tags are passed explicitly: `lmlab sweep` tags trials so."""
    return [tag.strip() for tag in os.environ.get("WANDB_TAGS", "").split(",") if tag.strip()]


def make_logger(
    cfg: LoggerConfig,
    run_dir: Path,
    run_id: str,
    group: str,
    job_type: str,
    tags: list[str],
    config: dict,
    name: str | None = None,
) -> Logger | None:
    """The run's logger; for W&B, the run `run_id` named `name` (None: the run folder's name) in `group`."""
    if cfg.kind == "none":
        return None
    if cfg.kind == "csv":
        # one version folder per start: Lightning's CSV writer empties an existing one (a resume would lose rows)
        return CSVLogger(run_dir / "csv", name=run_id)
    import wandb

    logger = WandbLogger(
        project=cfg.project,
        entity=cfg.entity,
        save_dir=str(run_dir),
        id=run_id,
        name=name or run_dir.name,
        group=group,
        job_type=job_type,
        tags=list(dict.fromkeys([*tags, *cfg.tags, *env_tags()])),
        config={**config, "provenance": provenance()},
        mode=wandb_mode(cfg),
        # silent: W&B's ~30 lines per run (banner, history and summary tables) go; `finish_logger` says where
        # the run is in one line
        settings=wandb.Settings(save_code=False, disable_git=True, silent=True),
    )
    # Lightning always passes `anonymous` (None unless asked), which W&B 0.2x warns about on every run
    logger._wandb_init.pop("anonymous", None)
    return logger


def finish_logger(logger: Logger | None, failed: bool) -> None:
    """End the W&B run of this job (rank zero), so the next job of a multirun gets its own."""
    if isinstance(logger, WandbLogger):
        import wandb

        run = wandb.run
        if run is not None:
            folder = Path(run.dir).parent
            where = run.url if not run.offline else f"{folder} (upload it with `wandb sync {folder}`)"
            wandb.finish(exit_code=1 if failed else 0)
            log.info("W&B run %s: %s", run.id, where)
