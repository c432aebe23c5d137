"""http_download against a real local HTTP server: verification, retries, resume, odd servers."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmlab.core.errors import LmlabError
from lmlab.data.fetch import HttpOptions, http_download
from tests.helpers.servers import FileServer

FAST = HttpOptions(retries=3, timeout=5, backoff=0.01)
DATA = os.urandom(200_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as s:
        yield s


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(destination file, downloads folder)"""
    return tmp_path / "out" / "file.bin", tmp_path / "downloads"


def parts(downloads: Path) -> list[Path]:
    return sorted(downloads.glob("*.part")) if downloads.exists() else []


def interrupted_run(server: FileServer, url: str, dest: Path, downloads: Path, keep: int) -> Path:
    """An earlier run that got ``keep`` bytes and then lost the connection for good."""
    server.cut_next(keep)
    with pytest.raises(LmlabError, match="run again to resume"):
        http_download(url, dest, sha256=SHA, downloads=downloads, options=HttpOptions(retries=0, timeout=5))
    [part] = parts(downloads)
    assert part.read_bytes() == DATA[:keep]
    assert not dest.exists()
    return part


def test_good_download_is_verified_and_moved_into_place(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.add("/data/file.bin", DATA)
    assert http_download(url, dest, sha256=SHA.upper(), downloads=downloads, options=FAST) == SHA
    assert dest.read_bytes() == DATA
    assert parts(downloads) == []
    assert server.statuses("/data/file.bin") == [200]
    assert server.requests[0].header("range") is None


def test_unpinned_download_returns_the_actual_digest(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    assert http_download(url, dest, sha256=None, downloads=downloads, options=FAST) == SHA
    assert dest.read_bytes() == DATA


def test_wrong_sha256_shows_both_digests_and_keeps_nothing(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(LmlabError) as err:
        http_download(url, dest, sha256=wrong, downloads=downloads, options=FAST)
    message = str(err.value)
    assert "sha256 mismatch" in message and url in message
    assert f"expected {wrong}" in message
    assert f"actual   {SHA}" in message
    assert not dest.exists()
    assert not dest.parent.exists()
    assert parts(downloads) == []


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_until_success(
    server: FileServer, dirs: tuple[Path, Path], status: int, caplog: pytest.LogCaptureFixture
) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    server.fail_next(2, status)
    assert http_download(url, dest, sha256=SHA, downloads=downloads, options=FAST) == SHA
    assert dest.read_bytes() == DATA
    assert server.statuses("/file.bin") == [status, status, 200]
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and f"HTTP {status}" in retries[0]


@pytest.mark.parametrize(
    "size, keep",
    [(200_000, 12_345), (2 * (1 << 20) + 1_000, (1 << 20) + 500_000)],  # smaller and larger than one 1 MiB chunk
    ids=["small", "multi-chunk"],
)
def test_connection_cut_mid_file_is_resumed_with_range(
    server: FileServer, tmp_path: Path, size: int, keep: int
) -> None:
    data = os.urandom(size)
    url = server.add("/big.bin", data)
    server.cut_next(keep)
    dest = tmp_path / "big.bin"
    sha = hashlib.sha256(data).hexdigest()
    assert http_download(url, dest, sha256=sha, downloads=tmp_path / "dl", options=FAST) == sha
    assert dest.read_bytes() == data
    first, second = server.requests_for("/big.bin")
    assert first.header("range") is None and first.status == 200
    assert second.header("range") == f"bytes={keep}-"
    assert second.status == 206
    assert parts(tmp_path / "dl") == []


def test_repeated_cuts_that_make_progress_still_finish(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    for _ in range(6):  # more cuts than retries: each one brings new bytes, so none counts as a failure
        server.cut_next(20_000)
    assert http_download(url, dest, sha256=SHA, downloads=downloads, options=FAST) == SHA
    assert dest.read_bytes() == DATA
    ranges = [r.header("range") for r in server.requests_for("/file.bin")]
    assert ranges == [None] + [f"bytes={20_000 * i}-" for i in range(1, 7)]


def test_not_found_fails_at_once_without_retries(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.url("/missing.bin")
    with pytest.raises(LmlabError) as err:
        http_download(url, dest, sha256=SHA, downloads=downloads, options=HttpOptions(retries=5, backoff=5))
    assert "404" in str(err.value) and url in str(err.value)
    assert server.statuses("/missing.bin") == [404]
    assert not dest.exists()
    assert parts(downloads) == []


def test_partial_file_of_an_earlier_run_is_resumed(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    interrupted_run(server, url, dest, downloads, keep=77_777)
    assert http_download(url, dest, sha256=SHA, downloads=downloads, options=FAST) == SHA
    assert dest.read_bytes() == DATA
    last = server.requests_for("/file.bin")[-1]
    assert last.header("range") == "bytes=77777-" and last.status == 206
    assert parts(downloads) == []


def test_server_ignoring_range_still_gives_the_right_file(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    interrupted_run(server, url, dest, downloads, keep=50_000)
    server.ignore_range = True
    assert http_download(url, dest, sha256=SHA, downloads=downloads, options=FAST) == SHA
    assert dest.read_bytes() == DATA  # not the kept 50 000 bytes followed by the whole file
    last = server.requests_for("/file.bin")[-1]
    assert last.header("range") == "bytes=50000-" and last.status == 200


def test_cut_from_a_server_ignoring_range_restarts_and_finishes(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    server.ignore_range = True
    server.cut_next(30_000)
    assert http_download(url, dest, sha256=SHA, downloads=downloads, options=FAST) == SHA
    assert dest.read_bytes() == DATA
    assert server.statuses("/file.bin") == [200, 200]


def test_partial_file_already_whole_is_not_downloaded_again(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    part = interrupted_run(server, url, dest, downloads, keep=10_000)
    with open(part, "ab") as f:  # the earlier run got every byte but stopped before moving the file
        f.write(DATA[10_000:])
    assert http_download(url, dest, sha256=SHA, downloads=downloads, options=FAST) == SHA
    assert dest.read_bytes() == DATA
    last = server.requests_for("/file.bin")[-1]
    assert last.header("range") == f"bytes={len(DATA)}-" and last.status == 416


def test_partial_file_longer_than_a_changed_remote_file_starts_over(
    server: FileServer, dirs: tuple[Path, Path]
) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    interrupted_run(server, url, dest, downloads, keep=100_000)
    shorter = DATA[:40_000]
    server.add("/file.bin", shorter)
    sha = hashlib.sha256(shorter).hexdigest()
    assert http_download(url, dest, sha256=sha, downloads=downloads, options=FAST) == sha
    assert dest.read_bytes() == shorter
    assert server.statuses("/file.bin")[-2:] == [416, 200]


def test_stale_partial_of_changed_remote_file_fails_verification_and_is_dropped(
    server: FileServer, dirs: tuple[Path, Path]
) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    interrupted_run(server, url, dest, downloads, keep=60_000)
    changed = os.urandom(len(DATA))  # same size, other bytes: the resumed file is a mix of both
    server.add("/file.bin", changed)
    with pytest.raises(LmlabError, match="sha256 mismatch"):
        http_download(url, dest, sha256=SHA, downloads=downloads, options=FAST)
    assert not dest.exists() and parts(downloads) == []
    # the next run starts clean and gets the (re-pinned) new file
    sha = hashlib.sha256(changed).hexdigest()
    assert http_download(url, dest, sha256=sha, downloads=downloads, options=FAST) == sha
    assert server.requests_for("/file.bin")[-1].header("range") is None


def test_retries_exhausted_gives_a_clear_error_with_the_url(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    server.fail_next(100, 503)
    with pytest.raises(LmlabError) as err:
        http_download(url, dest, sha256=SHA, downloads=downloads, options=HttpOptions(retries=2, backoff=0.01))
    message = str(err.value)
    assert url in message and "after 2 retries" in message and "503" in message
    assert server.statuses("/file.bin") == [503, 503, 503]  # the first try and 2 retries
    assert not dest.exists()


def test_unreachable_host_gives_a_clear_error_with_the_url(dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/file.bin"
    with pytest.raises(LmlabError) as err:
        http_download(
            url, dest, sha256=SHA, downloads=downloads, options=HttpOptions(retries=1, timeout=2, backoff=0.01)
        )
    assert url in str(err.value) and "ConnectionError" in str(err.value)


def test_headers_are_sent_with_every_request(server: FileServer, dirs: tuple[Path, Path]) -> None:
    dest, downloads = dirs
    url = server.add("/file.bin", DATA)
    server.fail_next(1, 503)
    server.cut_next(1_000)
    http_download(url, dest, sha256=SHA, downloads=downloads, options=FAST, headers={"Authorization": "Bearer t0k"})
    seen = server.requests_for("/file.bin")
    assert len(seen) == 3
    assert all(r.header("authorization") == "Bearer t0k" for r in seen)


def test_compressing_server_without_range_support(server: FileServer, dirs: tuple[Path, Path]) -> None:
    """Like raw.githubusercontent.com: gzip on the wire when the client accepts it. The file
    kept must be the file's own bytes, fetched once."""
    dest, downloads = dirs
    text = b"To be, or not to be, that is the question.\n" * 5_000
    sha = hashlib.sha256(text).hexdigest()
    url = server.add("/input.txt", text, "text/plain")
    server.gzip_when_accepted = True
    server.ignore_range = True
    assert http_download(url, dest, sha256=sha, downloads=downloads, options=FAST) == sha
    assert dest.read_bytes() == text
    assert server.statuses("/input.txt") == [200]
