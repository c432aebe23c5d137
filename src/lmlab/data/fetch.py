"""HTTP downloads that survive flaky networks and never keep an unverified byte.

A download streams into ``<downloads>/<key>.part``; after a cut it resumes with a
Range request (also across runs), server errors are retried with exponential
backoff, and the file is renamed into place only once its sha256 matches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from lmlab.core.atomic import naming_full_disk, sha256_file
from lmlab.core.errors import LmlabError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class HttpOptions:
    retries: int = 5
    timeout: float = 60.0
    backoff: float = 1.0


def check_sha256(path: Path, expected: str | None, what: str, *, delete: bool = True) -> str:
    """Return the file's sha256; on a mismatch say both digests (and delete the file when ``delete``)."""
    actual = sha256_file(path)
    if expected is not None and actual != expected.lower():
        if delete:
            path.unlink(missing_ok=True)
        raise LmlabError(
            f"sha256 mismatch for {what}:\n  expected {expected.lower()}\n  actual   {actual}\n"
            + ("The file was deleted. " if delete else "")
            + "If the source really changed, update the sha256 in its config."
        )
    return actual


def _part_path(url: str, downloads: Path) -> Path:
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "download"
    return downloads / f"{key}-{name}.part"


def http_download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    downloads: Path,
    options: HttpOptions = HttpOptions(),
    headers: dict[str, str] | None = None,
) -> str:
    """Fetch ``url`` to ``dest`` and return its sha256 (verified when ``sha256`` is given).

    ``headers`` may carry credentials; they are sent, never logged.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    part = _part_path(url, downloads)
    failures = 0  # consecutive attempts that brought no new bytes
    with naming_full_disk(part), requests.Session() as session:
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                if _fetch_into(session, url, part, options.timeout, headers or {}):
                    break
                reason = "connection closed before the whole file arrived"
            except _Retryable as err:
                reason = str(err)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
                reason = f"{type(err).__name__}: {err}"
            progressed = part.exists() and part.stat().st_size > before
            failures = 1 if progressed else failures + 1
            if failures > options.retries:
                raise LmlabError(
                    f"download of {url} failed after {options.retries} retries: {reason}. "
                    f"The partial file {part} is kept; run again to resume."
                )
            wait = options.backoff * 2 ** (failures - 1)
            log.warning("download of %s: %s; retry %d/%d in %.1fs", url, reason, failures, options.retries, wait)
            time.sleep(wait)
    actual = check_sha256(part, sha256, url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)
    return actual


class _Retryable(Exception):
    pass


def _fetch_into(session: requests.Session, url: str, part: Path, timeout: float, headers: dict[str, str]) -> bool:
    """One request; append to ``part`` from where it stops. True when the file is complete."""
    offset = part.stat().st_size if part.exists() else 0
    # the file's own bytes: with gzip on the wire, Content-Length and Range count compressed bytes
    request_headers = {"Accept-Encoding": "identity", **headers}
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    with session.get(url, stream=True, timeout=timeout, headers=request_headers) as response:
        if response.status_code == 416 and offset:
            # Range not satisfiable: the part is already whole (or longer than the file: start over)
            total = _total_from_content_range(response.headers.get("Content-Range"))
            if total == offset:
                return True
            part.unlink()
            raise _Retryable(f"partial file larger than the remote file ({offset} > {total}); restarting")
        if response.status_code in RETRYABLE_STATUS:
            raise _Retryable(f"HTTP {response.status_code} {response.reason}")
        if response.status_code not in (200, 206):
            raise LmlabError(f"download of {url} failed: HTTP {response.status_code} {response.reason}")
        if response.status_code == 200:
            offset = 0  # the server ignored Range: start over
            total = _int_or_none(response.headers.get("Content-Length"))
        else:
            total = _total_from_content_range(response.headers.get("Content-Range"))
        mode = "ab" if offset else "wb"
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=part.name.split("-", 1)[1][:40],
                disable=None,
                leave=False,
            ) as bar,
        ):
            for block in _blocks(response):
                f.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    return total is None or size == total


def _blocks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives. ``iter_content`` buffers up to a whole chunk and drops that
    buffer when the connection breaks, so a cut would lose everything since the last full
    chunk (a file under 1 MiB would never resume); ``read1`` hands over what has arrived."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 < 2.3
        yield from response.iter_content(64 * 1024)
        return
    while block := read1(CHUNK, decode_content=True):
        yield block


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _total_from_content_range(value: str | None) -> int | None:
    # "bytes 100-199/200" or "bytes */200"
    if not value or "/" not in value:
        return None
    return _int_or_none(value.rsplit("/", 1)[1])
