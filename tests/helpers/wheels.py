"""Build a small, valid wheel and publish it on a local PEP 503 simple index.

The index is served by a ``FileServer`` over real HTTP on 127.0.0.1; point pip
at it with ``use_index`` so this machine's own pip configuration (extra indexes,
find-links, caches) does not take part::

    wheel = build_wheel(tmp_path, "lmlab-testcorpus", "1.0", {"corpus/a.txt": b"..."})
    publish(server, wheel)
    use_index(monkeypatch, server)
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
import zipfile
from pathlib import Path

import pytest

from tests.helpers.servers import FileServer


def normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """Write ``<dist>-<version>-py3-none-any.whl`` holding ``files`` plus a proper dist-info."""
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: lmlab test corpus\n"
    ).encode()
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: lmlab-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in contents.items()]
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return wheel


def publish(server: FileServer, *wheels: Path) -> str:
    """Serve ``wheels`` under ``/files/`` and list them on ``/simple/<project>/``; return the index URL."""
    projects: dict[str, list[str]] = {}
    for wheel in wheels:
        data = wheel.read_bytes()
        server.add(f"/files/{wheel.name}", data, "application/octet-stream")
        digest = hashlib.sha256(data).hexdigest()
        project = normalize(wheel.name.split("-", 1)[0])
        projects.setdefault(project, []).append(
            f'<a href="/files/{html.escape(wheel.name)}#sha256={digest}">{html.escape(wheel.name)}</a><br/>'
        )
    for project, links in projects.items():
        page = (
            f"<!DOCTYPE html>\n<html><body>\n<h1>Links for {project}</h1>\n" + "\n".join(links) + "\n</body></html>\n"
        )
        server.add(f"/simple/{project}/", page.encode(), "text/html")
    root = "".join(f'<a href="/simple/{p}/">{p}</a><br/>\n' for p in sorted(projects))
    server.add("/simple/", f"<!DOCTYPE html>\n<html><body>\n{root}</body></html>\n".encode(), "text/html")
    return server.url("/simple/")


def use_index(monkeypatch: pytest.MonkeyPatch, server: FileServer) -> None:
    """Make pip (run in a subprocess, inheriting the environment) use only ``server``'s index."""
    monkeypatch.setenv("PIP_INDEX_URL", server.url("/simple/"))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # ignore /etc/pip.conf and the user's pip.conf
    monkeypatch.setenv("PIP_NO_INPUT", "1")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "15")
    monkeypatch.setenv("PIP_RETRIES", "0")
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
