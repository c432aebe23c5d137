"""Real HTTP servers on 127.0.0.1: a file server for download tests, with scripted misbehaviour, and a
stand-in for the Hugging Face Hub (`HubServer`, at the end) for pushing and fetching models.

``FileServer`` serves bytes at exact paths (query strings are ignored for the
lookup), answers ``Range: bytes=N-`` / ``bytes=N-M`` with 206 + Content-Range
(416 past the end), and records every request's method, path, headers and the
status it was answered with. It can be told to

* answer the next N requests with an error status (``fail_next``),
* cut the connection on the next response after K body bytes while announcing
  the full Content-Length (``cut_next``),
* ignore Range headers and always send the whole file with 200 (``ignore_range``),
* compress on the fly like many CDNs: whole file, gzip, 200, Range ignored, whenever
  the request's Accept-Encoding allows gzip (``gzip_when_accepted``).

Use it as a context manager::

    with FileServer() as server:
        server.add("/data.bin", b"...")
        url = server.url("/data.bin")
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import yaml

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class Request:
    """One request as the server saw it; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    status: int

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class _Resource:
    body: bytes
    content_type: str


class _LocalServer:
    """A threaded HTTP server on 127.0.0.1 (a free port), its handler class (`HANDLER`) reading `owner`."""

    HANDLER: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (self.HANDLER,), {"owner": self}))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FileServer(_LocalServer):
    """A threaded HTTP/1.1 server bound to 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        self._resources: dict[str, _Resource] = {}
        self._lock = threading.Lock()
        self._failures: list[tuple[int, str | None]] = []  # (status, path or None for any)
        self._cuts: list[tuple[int, str | None]] = []  # (bytes to send, path or None for any)
        self.ignore_range = False
        self.gzip_when_accepted = False
        self.requests: list[Request] = []
        super().__init__()

    # -- content ---------------------------------------------------------------------------

    def add(self, path: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        """Serve ``body`` at ``path``; return its full URL."""
        if not path.startswith("/"):
            path = "/" + path
        with self._lock:
            self._resources[path] = _Resource(body, content_type)
        return self.url(path)

    def remove(self, path: str) -> None:
        with self._lock:
            self._resources.pop(path, None)

    # -- misbehaviour ----------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 503, path: str | None = None) -> None:
        """Answer the next ``count`` requests (for ``path``, or any) with ``status``."""
        with self._lock:
            self._failures.extend([(status, path)] * count)

    def cut_next(self, after_bytes: int, path: str | None = None) -> None:
        """On the next successful response (for ``path``, or any), send the full
        Content-Length but only ``after_bytes`` body bytes, then close the socket."""
        with self._lock:
            self._cuts.append((after_bytes, path))

    # -- inspection ------------------------------------------------------------------------

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if urlsplit(r.path).path == path]

    def statuses(self, path: str) -> list[int]:
        return [r.status for r in self.requests_for(path)]

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    # -- used by the handler ---------------------------------------------------------------

    def _take(self, queue: list[tuple[int, str | None]], path: str) -> int | None:
        with self._lock:
            for i, (value, only) in enumerate(queue):
                if only is None or only == path:
                    del queue[i]
                    return value
        return None

    def _lookup(self, path: str) -> _Resource | None:
        with self._lock:
            return self._resources.get(path)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


class _Handler(BaseHTTPRequestHandler):
    owner: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = urlsplit(self.path).path
        headers = {k.lower(): v for k, v in self.headers.items()}
        status_code = self.owner._take(self.owner._failures, path)
        if status_code is not None:
            self._record(headers, status_code)
            self._plain(status_code, b"scripted failure\n", body)
            return
        resource = self.owner._lookup(path)
        if resource is None:
            self._record(headers, 404)
            self._plain(404, b"not found\n", body)
            return
        data = resource.body
        total = len(data)
        status = 200
        extra: dict[str, str] = {}
        range_header = headers.get("range")
        gzipped = self.owner.gzip_when_accepted and "gzip" in headers.get("accept-encoding", "")
        if gzipped:
            data = gzip.compress(data, mtime=0)
            extra["Content-Encoding"] = "gzip"
        elif range_header and not self.owner.ignore_range:
            match = _RANGE.match(range_header.strip())
            if match:
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else total - 1
                if start >= total:
                    self._record(headers, 416)
                    self._plain(416, b"", body, {"Content-Range": f"bytes */{total}"})
                    return
                end = min(end, total - 1)
                data = data[start : end + 1]
                status = 206
                extra["Content-Range"] = f"bytes {start}-{end}/{total}"
        cut = self.owner._take(self.owner._cuts, path) if body else None
        self._record(headers, status)
        self.send_response(status)
        self.send_header("Content-Type", resource.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "none" if self.owner.ignore_range or gzipped else "bytes")
        for name, value in extra.items():
            self.send_header(name, value)
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if not body:
            return
        if cut is None:
            self.wfile.write(data)
            return
        self.wfile.write(data[:cut])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _record(self, headers: dict[str, str], status: int) -> None:
        self.owner._record(Request(self.command, self.path, headers, status))

    def _plain(self, status: int, payload: bytes, body: bool, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)


# ----- a stand-in for the Hugging Face Hub -----

_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<op>revision|tree|preupload|commit)/(?P<rev>[^/]+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def git_blob_id(content: bytes) -> str:
    """The id git (and the Hub, as a file's ETag) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class HubRepo:
    private: bool
    commits: list[tuple[str, dict[str, bytes]]]  # (commit id, the files at that commit), oldest first

    def at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """The commit a revision names: the default branch `main`, or a commit id."""
        if revision == "main":
            return self.commits[-1]
        return next((commit for commit in self.commits if commit[0] == revision), None)


class HubServer(_LocalServer):
    """The part of the Hugging Face Hub's HTTP API that huggingface_hub calls for `create_repo`, `upload_folder`
    (every file "regular": committed base64 in the commit itself, no LFS or Xet storage) and `snapshot_download`
    (repo info at a revision, the file tree, each file's HEAD metadata and body), on 127.0.0.1. One user,
    ``user``, whose token is ``token``: writing needs it, as reading a private repo does (the Hub answers
    those without it as repos that do not exist). Every request is recorded with its headers.

    Use it as a context manager; ``HF_ENDPOINT=server.base_url`` points huggingface_hub at it (read when
    huggingface_hub is imported: a child process's environment)."""

    def __init__(self, token: str, user: str = "lmlab-tests") -> None:
        self.token, self.user = token, user
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        super().__init__()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The files at the head of the repo's default branch."""
        return self.repos[repo_id].commits[-1][1]

    # -- the API -----------------------------------------------------------------------------

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for one request."""
        authorized = headers.get("authorization") == f"Bearer {self.token}"
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        if method == "POST" and path == "/api/repos/create":
            return self._create(json.loads(body), authorized)
        match = _API.match(path) or _RESOLVE.match(path)
        repo = self.repos.get(match["repo"]) if match else None
        if match is None or repo is None or (repo.private and not authorized):
            return _json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        revision = unquote(match["rev"] or "main")
        if method == "POST" and match.groupdict().get("op") in ("preupload", "commit"):
            if not authorized:
                return _json(401, {"error": "Invalid credentials in Authorization header"})
            if match["op"] == "preupload":
                files = json.loads(body)["files"]
                return _json(
                    200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                )
            return self._commit(match["repo"], repo, revision, body)
        commit = repo.at(revision)
        if commit is None:
            return _json(404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"})
        oid, files = commit
        if "path" in match.groupdict():  # resolve: HEAD for the metadata, GET for the content
            name = unquote(match["path"])
            if name not in files:
                return _json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": oid})
            content = files[name]
            return (
                200,
                {"X-Repo-Commit": oid, "ETag": f'"{git_blob_id(content)}"', "Content-Type": "application/octet-stream"},
                content,
            )
        if match["op"] == "tree":
            tree = [
                {"type": "file", "path": name, "size": len(c), "oid": git_blob_id(c)}
                for name, c in sorted(files.items())
            ]
            return _json(200, tree)
        info = {
            "id": match["repo"],
            "sha": oid,
            "private": repo.private,
            "siblings": [{"rfilename": name} for name in sorted(files)],
        }
        return _json(200, info)

    def _validate_yaml(self, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """The model card's metadata: the YAML between its first two `---` lines must parse to a mapping."""
        parts = payload["content"].split("---\n")
        try:
            metadata = yaml.safe_load(parts[1]) if payload["content"].startswith("---\n") and len(parts) > 2 else {}
        except yaml.YAMLError as err:
            return _json(400, {"errors": [{"message": str(err)}]})
        if not isinstance(metadata, dict):
            return _json(400, {"errors": [{"message": "the metadata is not a mapping"}]})
        return _json(200, {"errors": [], "warnings": []})

    def _create(self, payload: dict[str, Any], authorized: bool) -> tuple[int, dict[str, str], bytes]:
        if not authorized:
            return _json(401, {"error": "Invalid credentials in Authorization header"})
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        url = f"{self.base_url}/{repo_id}"
        with self._lock:
            if repo_id in self.repos:
                return _json(409, {"error": "You already created this model repo", "url": url})
            initial = hashlib.sha1(repo_id.encode()).hexdigest()
            self.repos[repo_id] = HubRepo(payload.get("visibility") == "private", [(initial, {})])
        return _json(200, {"url": url, "name": repo_id})

    def _commit(self, repo_id: str, repo: HubRepo, revision: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if revision != "main":
            return _json(400, {"error": "this stand-in commits to main only"})
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        with self._lock:
            parent, files = repo.commits[-1]
            files = dict(files)
            for line in lines:
                if line["key"] == "file":
                    files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                elif line["key"] == "deletedFile":
                    files.pop(line["value"]["path"], None)
                elif line["key"] != "header":  # lfsFile: never asked for (every upload mode is "regular")
                    return _json(400, {"error": f"unexpected commit line {line['key']!r}"})
            oid = hashlib.sha1(
                (parent + json.dumps(sorted((k, git_blob_id(v)) for k, v in files.items()))).encode()
            ).hexdigest()
            repo.commits.append((oid, files))
        return _json(200, {"commitUrl": f"{self.base_url}/{repo_id}/commit/{oid}", "commitOid": oid, "success": True})

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode()


class _HubHandler(BaseHTTPRequestHandler):
    owner: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def do_POST(self) -> None:
        self._handle(send_body=True)

    def _handle(self, send_body: bool) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = self.rfile.read(int(headers.get("content-length", 0)))
        status, extra, payload = self.owner.answer(self.command, urlsplit(self.path).path, headers, body)
        self.owner._record(Request(self.command, self.path, headers, status))
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if send_body:
            self.wfile.write(payload)


FileServer.HANDLER = _Handler  # the handlers come after the servers they serve
HubServer.HANDLER = _HubHandler
