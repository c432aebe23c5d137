"""A real HTTP file server on 127.0.0.1 for download tests, with scripted misbehaviour.

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

import gzip
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

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


class FileServer:
    """A threaded HTTP/1.1 server bound to 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        self._resources: dict[str, _Resource] = {}
        self._lock = threading.Lock()
        self._failures: list[tuple[int, str | None]] = []  # (status, path or None for any)
        self._cuts: list[tuple[int, str | None]] = []  # (bytes to send, path or None for any)
        self.ignore_range = False
        self.gzip_when_accepted = False
        self.requests: list[Request] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

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

    def start(self) -> FileServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
