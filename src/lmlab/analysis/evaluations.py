"""The main study's evaluations read back: which families and seeds (the study's params file), each family's
metrics, curves, sample and per-example figures at each seed, and a family over its seeds (t-intervals over
the seeds' estimates). A missing or damaged file names the stage that makes it. The transfer report reads its
evaluations the same way."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lmlab.analysis import lengths, stats
from lmlab.analysis.config import ReportConfig
from lmlab.analysis.examples import Examples
from lmlab.analysis.figures import Figures, figures, over_seeds
from lmlab.core import metrics as M
from lmlab.core.atomic import NUMBER, check_keys, check_published, read_json
from lmlab.core.errors import LmlabError

# What `lmlab evaluate` always writes: numbers, or the file is damaged (a report adds the figures it shows).
REQUIRED = {M.TEST_ACC: NUMBER, M.TEST_F1: NUMBER}
SETTING = {"corpus": dict, "labeled": dict, "tokenizer": str, "pretraining": dict, "evaluation": dict, "commit": str}

STUDY_PARAMS = {"transfer": "transfer/params.yaml"}  # a study's own pipeline choices; the rest: params.yaml


def params_path(cfg: ReportConfig) -> Path:
    return Path(cfg.params_file or STUDY_PARAMS.get(cfg.study, "params.yaml"))


def pipeline_params(cfg: ReportConfig) -> dict[str, Any] | None:
    """The values of the study's params file (`params_path`), or None where there is no such file."""
    params = params_path(cfg)
    return dict(OmegaConf.to_container(OmegaConf.load(params)) or {}) if params.is_file() else None


def family_names(cfg: ReportConfig) -> list[str]:
    if cfg.families is not None:
        names = list(cfg.families)
    elif (params := pipeline_params(cfg)) is None:
        raise LmlabError(f"families=null reads them from {params_path(cfg)}, which does not exist; give families=[...]")
    else:
        names = list(params.get("families") or [])
    if not names:
        raise LmlabError("no families to report: give families=[gru,transformer,...] (or list them in params.yaml)")
    return names


def seed_folders(cfg: ReportConfig) -> list[str]:
    """Each seed's folder in metrics_dir and samples_dir (the pipeline's `seed<k>`), or the two folders
    themselves ("") where there are no seeds: one `lmlab evaluate` by hand."""
    # the pipeline's; without a params file, the evaluations of `lmlab evaluate` by hand
    seeds = list(cfg.seeds) if cfg.seeds is not None else list((pipeline_params(cfg) or {}).get("seeds") or [])
    if len(set(seeds)) != len(seeds):
        raise LmlabError(f"seeds={list(seeds)} names a seed twice: give each once")
    return [f"seed{seed}" for seed in seeds] or [""]


def load(cfg: ReportConfig, shown: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each family's metrics, curves and sample, over its seeds (`combined`); a missing or damaged file names
    the stage that makes it."""
    seeds = seed_folders(cfg)
    return {family: combined([load_run(cfg, family, seed, shown) for seed in seeds]) for family in family_names(cfg)}


def load_run(cfg: ReportConfig, family: str, seed: str, shown: dict[str, Any]) -> dict[str, Any]:
    """One family's evaluation at one seed (its folder `seed`, "" for none)."""
    metrics_dir, evaluated = Path(cfg.metrics_dir) / seed, Path(cfg.samples_dir) / seed / family
    by_hand = f"lmlab evaluate family={family} metrics_dir={metrics_dir} eval_dir={evaluated.parent}"
    if seed:
        by_hand += f" paths.runs_dir=data/runs/{seed}"
        rebuild = f"run `dvc repro evaluate@{family}-{seed.removeprefix('seed')}` (or `{by_hand}`)"
    else:
        rebuild = f"run `{by_hand}`"
    return read_evaluation(metrics_dir / f"{family}.json", evaluated, rebuild, shown, metrics_dir / "curves" / family)


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A family over its seeds: the figures with t-intervals over the seeds (`comparison.over_seeds`), the
    other metrics and every curve their mean over the seeds (the length table's intervals again a t-interval
    over the seeds' losses), the first seed's sample; `settings` keeps each seed's Setting."""
    first = runs[0]
    if len(runs) == 1:
        return {**first, "settings": [first["setting"]]}
    numbers = [
        key for key, v in first["metrics"].items() if all(isinstance(r["metrics"].get(key), int | float) for r in runs)
    ]
    curves = {kind: mean_curve([r[kind] for r in runs]) for kind in (*M.CURVE_FILES, *lengths.CURVES)}
    for row, *seeds in zip(curves[M.LENGTH_FILE], *(r[M.LENGTH_FILE] for r in runs if r[M.LENGTH_FILE]), strict=False):
        spread = stats.over_seeds([seed["loss"] for seed in seeds])
        row.update(low=spread.low, high=spread.high)
    return {
        **first,
        **curves,
        "metrics": {**first["metrics"], **{key: sum(r["metrics"][key] for r in runs) / len(runs) for key in numbers}},
        "figures": figures_over_seeds(runs),
        "settings": [r["setting"] for r in runs],
    }


def figures_over_seeds(runs: list[dict[str, Any]]) -> Figures:
    """The evaluations' figures over their seeds (`comparison.over_seeds`): ppl and bpb are the loss's interval
    mapped with the test split's tokens per byte (the same text in every seed)."""
    tokens_per_byte = runs[0]["tokens_per_byte"]
    return over_seeds([r["figures"] for r in runs], lambda loss, key: M.lm_figures("test", loss, tokens_per_byte)[key])


def mean_curve(curves: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Row by row (the seeds' runs log at the same steps and lengths), each column's mean over the seeds
    that have it; as many rows as the shortest curve a seed has (a seed without the curve file is left out)."""
    rows = []
    for seeds in zip(*(curve for curve in curves if curve), strict=False):
        keys = dict.fromkeys(key for row in seeds for key in row)
        rows.append(
            {key: sum(row[key] for row in seeds if key in row) / sum(key in row for row in seeds) for key in keys}
        )
    return rows


def read_evaluation(
    path: Path, evaluated: Path, rebuild: str, shown: dict[str, Any] | None = None, curves: Path | None = None
) -> dict[str, Any]:
    """What one `lmlab evaluate` wrote: its metrics file `path`, and from the folder `evaluated` the Setting,
    the sample and the per-example record, made into the figures with their intervals (`figures.figures`), and
    the curve files in `curves` where given; all of one evaluation, as its manifest records (not a kill's mix
    of two). `shown`: the metrics the report shows, checked to be numbers where present."""
    sample = evaluated / "sample.txt"
    files = {"metrics": path, "sample": sample, "setting": evaluated / "setting.json"}
    files |= {"examples": evaluated / "examples.npz"}
    kinds = (*M.CURVE_FILES, *lengths.CURVES) if curves is not None else ()
    files |= {M.curve_role(kind): curves / f"{kind}.csv" for kind in kinds}
    metrics = read_json(path, rebuild, REQUIRED, shown or {})
    if M.SCRATCH_TEST_ACC in metrics:  # the baseline's figures come as a pair, as its verdict reads them
        check_keys(metrics, path, rebuild, {M.SCRATCH_TEST_F1: NUMBER})
    setting = read_json(files["setting"], rebuild, SETTING)
    examples = Examples.load(files["examples"], rebuild)
    check_published(evaluated / M.EVALUATION_MANIFEST, files, rebuild)  # each file whole, then the set one
    test = (setting["corpus"].get("tokens", {}).get("test"), setting["corpus"].get("bytes", {}).get("test"))
    if not all(isinstance(n, int) and n > 0 for n in test):
        raise LmlabError(f"{evaluated / 'setting.json'} lacks the test split's tokens and bytes: {rebuild}")
    return {
        "metrics": metrics,
        "sample": sample.read_text().strip() if sample.is_file() else "",
        "setting": setting,
        "figures": figures(examples, test[0] / test[1], setting["labeled"].get("classes", [])),
        "tokens_per_byte": test[0] / test[1],
        **{kind: read_curve(files[M.curve_role(kind)]) for kind in kinds},
    }


def read_curve(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
