"""The download stage: a dataset's source lands in ``data/raw/<name>/`` whole or not at all."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lmlab.core.atomic import read_json, staged_dir
from lmlab.data import sources
from lmlab.data.config import DatasetConfig, PathsConfig
from lmlab.data.fetch import HttpOptions

log = logging.getLogger(__name__)

SOURCE_JSON = "source.json"


def recorded_pins(record: dict[str, Any]) -> dict[str, str]:
    """Address -> sha256 from an earlier ``source.json`` (trust on first use for unpinned files)."""
    pins = {}
    if record.get("url") and record.get("sha256"):
        pins[record["url"]] = record["sha256"]
    for file in record.get("files", []):
        pins[file["address"]] = file["sha256"]
    return pins


def download(dataset: DatasetConfig, paths: PathsConfig, http: HttpOptions, key: str = "data") -> Path:
    """Fetch ``dataset`` into its raw folder, replacing an older copy only once the new one is complete."""
    sources.validate(dataset.source, f"{key}.source")
    out = paths.raw(dataset.name)
    previous = out / SOURCE_JSON
    # the sha256 pins the last download recorded: a damaged record is an error, never a silent loss of the pins
    rebuild = "repair it, or remove it to download afresh (its recorded sha256 pins are then lost)"
    pins = recorded_pins(read_json(previous, rebuild, optional={"files": list})) if previous.exists() else {}
    with staged_dir(out) as staging:
        record = sources.fetch(dataset.source, staging, pins=pins, downloads=paths.downloads(), http=http)
        record = {"dataset": dataset.name, **record}
        (staging / SOURCE_JSON).write_text(json.dumps(record, indent=2) + "\n")
    log.info("downloaded %s into %s", dataset.name, out)
    return out
