"""The four source kinds and the download stage, against real local servers and a real pip.

pypi: a wheel built here, served from a PEP 503 simple index on 127.0.0.1, fetched by pip.
hf: a local server answering ``{HF_ENDPOINT}/datasets/{repo}/resolve/{revision}/{path}``.
url: the same file server. local: files on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmlab.core.errors import LmlabError
from lmlab.data import sources
from lmlab.data.config import DatasetConfig, HubFile, PathsConfig, SourceConfig
from lmlab.data.download import SOURCE_JSON, download
from lmlab.data.fetch import HttpOptions
from tests.helpers.servers import FileServer
from tests.helpers.wheels import build_wheel, publish, use_index

FAST = HttpOptions(retries=2, timeout=10, backoff=0.01)
PACKAGE = "lmlab-testcorpus"
VERSION = "1.0.3"
WHEEL_FILES = {
    "lmlab_testcorpus/__init__.py": b"",
    "lmlab_testcorpus/data/speeches/1790.txt": b"Fellow-Citizens of the Senate and House of Representatives\n",
    "lmlab_testcorpus/data/speeches/1791.txt": b"Fellow-Citizens of the Senate and House of Representatives:\n",
    "lmlab_testcorpus/data/index.csv": b"year,file\n1790,1790.txt\n",
}
REPO = "lmlab-tests/tiny-wiki"
REVISION = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_SeCrEt_t0ken_4_tests"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def record_of(out: Path) -> dict:
    return json.loads((out / SOURCE_JSON).read_text())


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as s:
        yield s


@pytest.fixture
def paths(tmp_path: Path) -> PathsConfig:
    return PathsConfig(data_dir=str(tmp_path / "data"))


def assert_no_output(paths: PathsConfig, name: str) -> None:
    """A failed download leaves no raw folder, no staging leftovers and no partial file."""
    raw = Path(paths.data_dir) / "raw"
    assert not paths.raw(name).exists()
    assert not raw.exists() or list(raw.iterdir()) == []
    downloads = paths.downloads()
    assert not downloads.exists() or list(downloads.iterdir()) == []


# -- pypi ----------------------------------------------------------------------------------


@pytest.fixture
def wheel_index(server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test wheel, published on a local simple index that pip is pointed at."""
    wheel = build_wheel(tmp_path / "wheels", PACKAGE, VERSION, WHEEL_FILES)
    publish(server, wheel)
    use_index(monkeypatch, server)
    return wheel


def pypi_dataset(
    sha256: str | None, version: str = VERSION, members: tuple[str, ...] = ("*/speeches/*.txt",)
) -> DatasetConfig:
    return DatasetConfig(
        name="speeches",
        source=SourceConfig(kind="pypi", package=PACKAGE, version=version, sha256=sha256, members=list(members)),
    )


def test_pypi_wheel_is_fetched_by_pip_verified_and_extracted(
    server: FileServer, wheel_index: Path, paths: PathsConfig
) -> None:
    digest = sha(wheel_index.read_bytes())
    out = download(pypi_dataset(digest), paths, FAST)
    speeches = {name for name in WHEEL_FILES if "/speeches/" in name}
    assert files_under(out) == speeches | {SOURCE_JSON}
    for name in speeches:
        assert (out / name).read_bytes() == WHEEL_FILES[name]
    record = record_of(out)
    assert record["dataset"] == "speeches" and record["kind"] == "pypi"
    assert record["package"] == PACKAGE and record["version"] == VERSION
    assert record["sha256"] == digest and record["wheel"] == wheel_index.name
    assert record["bytes"] == wheel_index.stat().st_size
    assert sorted(record["members"]) == sorted(speeches)
    # pip really went through the local index
    assert server.statuses("/simple/lmlab-testcorpus/") == [200]
    assert server.statuses(f"/files/{wheel_index.name}") == [200]
    assert files_under(Path(paths.data_dir) / "raw") == {f"speeches/{n}" for n in speeches | {SOURCE_JSON}}


def test_pypi_wrong_sha256_shows_both_digests_and_leaves_no_output(wheel_index: Path, paths: PathsConfig) -> None:
    wrong = sha(b"not the wheel")
    with pytest.raises(LmlabError) as err:
        download(pypi_dataset(wrong), paths, FAST)
    message = str(err.value)
    assert "sha256 mismatch" in message and wheel_index.name in message
    assert f"expected {wrong}" in message and f"actual   {sha(wheel_index.read_bytes())}" in message
    assert_no_output(paths, "speeches")


def test_pypi_missing_version_is_a_clear_error(server: FileServer, wheel_index: Path, paths: PathsConfig) -> None:
    with pytest.raises(LmlabError) as err:
        download(pypi_dataset(sha(wheel_index.read_bytes()), version="9.9.9"), paths, FAST)
    message = str(err.value)
    assert f"pip could not download the wheel {PACKAGE}==9.9.9" in message
    assert "No matching distribution" in message or "from versions" in message
    assert_no_output(paths, "speeches")
    assert server.statuses("/simple/lmlab-testcorpus/")  # pip asked the local index


def test_pypi_members_matching_nothing_leave_no_output(wheel_index: Path, paths: PathsConfig) -> None:
    with pytest.raises(LmlabError, match="no member"):
        download(pypi_dataset(sha(wheel_index.read_bytes()), members=("nope/*.txt",)), paths, FAST)
    assert_no_output(paths, "speeches")


# -- validate ------------------------------------------------------------------------------


def test_validate_pypi_without_sha256_names_the_key(paths: PathsConfig) -> None:
    dataset = pypi_dataset(None)
    with pytest.raises(LmlabError) as err:
        sources.validate(dataset.source, "data.source")
    assert "data.source.sha256" in str(err.value)
    with pytest.raises(LmlabError, match=r"task_data\.source\.sha256"):  # the stage checks before any work
        download(dataset, paths, FAST, key="task_data")
    assert not Path(paths.data_dir).exists()


@pytest.mark.parametrize(
    "source, key",
    [
        (SourceConfig(kind="pypi", package=PACKAGE, version=VERSION, sha256="ab" * 32), "data.source.members"),
        (SourceConfig(kind="pypi", version=VERSION, sha256="ab" * 32, members=["*"]), "data.source.package"),
        (SourceConfig(kind="url"), "data.source.url"),
        (SourceConfig(kind="hf", repo_id=REPO, files=[HubFile(path="x.parquet")]), "data.source.revision"),
        (SourceConfig(kind="hf", repo_id=REPO, revision=REVISION), "data.source.files"),
        (SourceConfig(kind="local"), "data.source.path"),
        (SourceConfig(kind="ftp", url="ftp://x"), "data.source.kind"),
    ],
)
def test_validate_names_the_missing_key(source: SourceConfig, key: str) -> None:
    with pytest.raises(LmlabError, match=key.replace(".", r"\.")):
        sources.validate(source, "data.source")


def test_validate_accepts_complete_sources() -> None:
    sources.validate(pypi_dataset("ab" * 32).source, "data.source")
    sources.validate(SourceConfig(kind="url", url="http://127.0.0.1/x.txt"), "data.source")
    sources.validate(SourceConfig(kind="local", path="/x"), "data.source")


# -- url and trust on first use --------------------------------------------------------------


def url_dataset(url: str, sha256: str | None = None) -> DatasetConfig:
    return DatasetConfig(name="shakespeare", source=SourceConfig(kind="url", url=url, sha256=sha256))


TEXT = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 200


def test_url_source_plain_file(server: FileServer, paths: PathsConfig) -> None:
    url = server.add("/karpathy/input.txt", TEXT, "text/plain")
    out = download(url_dataset(url, sha(TEXT)), paths, FAST)
    assert files_under(out) == {"input.txt", SOURCE_JSON}
    assert (out / "input.txt").read_bytes() == TEXT
    record = record_of(out)
    assert record == {
        "dataset": "shakespeare",
        "kind": "url",
        "url": url,
        "sha256": sha(TEXT),
        "bytes": len(TEXT),
        "pinned": True,
        "members": ["input.txt"],
    }


def test_url_wrong_sha256_through_the_stage_keeps_nothing(server: FileServer, paths: PathsConfig) -> None:
    url = server.add("/input.txt", TEXT)
    wrong = sha(b"other")
    with pytest.raises(LmlabError) as err:
        download(url_dataset(url, wrong), paths, FAST)
    assert f"expected {wrong}" in str(err.value) and f"actual   {sha(TEXT)}" in str(err.value)
    assert_no_output(paths, "shakespeare")


def test_url_wrong_sha256_keeps_the_previous_download(server: FileServer, paths: PathsConfig) -> None:
    url = server.add("/input.txt", TEXT)
    out = download(url_dataset(url, sha(TEXT)), paths, FAST)
    before = {name: (out / name).read_bytes() for name in files_under(out)}
    with pytest.raises(LmlabError, match="sha256 mismatch"):
        download(url_dataset(url, sha(b"other")), paths, FAST)
    assert {name: (out / name).read_bytes() for name in files_under(out)} == before


def test_unpinned_url_is_trusted_on_first_use_then_verified(
    server: FileServer, paths: PathsConfig, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.add("/input.txt", TEXT)
    with caplog.at_level(logging.WARNING, logger="lmlab"):
        out = download(url_dataset(url), paths, FAST)
    loud = [r for r in caplog.records if "UNPINNED DOWNLOAD" in r.getMessage()]
    assert len(loud) == 1 and loud[0].levelno == logging.WARNING
    assert url in loud[0].getMessage() and sha(TEXT) in loud[0].getMessage()
    record = record_of(out)
    assert record["sha256"] == sha(TEXT) and record["pinned"] is False

    # same bytes again: verified against the recorded sha256, no new TOFU warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmlab"):
        download(url_dataset(url), paths, FAST)
    assert not any("UNPINNED DOWNLOAD" in r.getMessage() for r in caplog.records)
    assert any("recorded by the first download" in r.getMessage() for r in caplog.records)

    # the server now serves other bytes: refused, and the earlier copy stays as it was
    before = {name: (out / name).read_bytes() for name in files_under(out)}
    changed = TEXT.replace(b"Citizen", b"Villager")
    server.add("/input.txt", changed)
    with pytest.raises(LmlabError) as err:
        download(url_dataset(url), paths, FAST)
    assert f"expected {sha(TEXT)}" in str(err.value) and f"actual   {sha(changed)}" in str(err.value)
    assert {name: (out / name).read_bytes() for name in files_under(out)} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["shakespeare"]
    assert not paths.downloads().exists() or list(paths.downloads().iterdir()) == []


# -- hf --------------------------------------------------------------------------------------


def parquet_bytes(rows: list[str]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": rows}), buffer)
    return buffer.getvalue()


TRAIN = parquet_bytes([" = Valkyria Chronicles = ", "", " Senjō no Valkyria 3 is a tactical role @-@ playing game "])
TEST = parquet_bytes([" = Robert Boulter = ", " Robert Boulter is an English film actor "])
HUB_FILES = {
    "wikitext-2-raw-v1/train-00000-of-00001.parquet": TRAIN,
    "wikitext-2-raw-v1/test-00000-of-00001.parquet": TEST,
}


@pytest.fixture
def hub(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> FileServer:
    """The file server playing the Hub: HF_ENDPOINT points at it."""
    for path, data in HUB_FILES.items():
        server.add(f"/datasets/{REPO}/resolve/{REVISION}/{path}", data)
    monkeypatch.setenv("HF_ENDPOINT", server.base_url + "/")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return server


def hf_dataset(pinned: bool = True, revision: str = REVISION) -> DatasetConfig:
    files = [HubFile(path=path, sha256=sha(data) if pinned else None) for path, data in HUB_FILES.items()]
    return DatasetConfig(name="wikitext", source=SourceConfig(kind="hf", repo_id=REPO, revision=revision, files=files))


def test_hf_files_land_at_their_paths_and_the_token_is_sent_but_never_recorded(
    hub: FileServer, paths: PathsConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG, logger="lmlab"):
        out = download(hf_dataset(), paths, FAST)
    assert files_under(out) == set(HUB_FILES) | {SOURCE_JSON}
    for path, data in HUB_FILES.items():
        assert (out / path).read_bytes() == data
    assert pq.read_table(out / "wikitext-2-raw-v1/test-00000-of-00001.parquet").column("text").to_pylist() == [
        " = Robert Boulter = ",
        " Robert Boulter is an English film actor ",
    ]
    seen = [r for r in hub.requests if r.path.startswith(f"/datasets/{REPO}/resolve/{REVISION}/")]
    assert len(seen) == 2
    assert all(r.header("authorization") == f"Bearer {TOKEN}" for r in seen)
    record = record_of(out)
    assert record["repo_id"] == REPO and record["revision"] == REVISION
    assert [f["path"] for f in record["files"]] == list(HUB_FILES)
    assert [f["sha256"] for f in record["files"]] == [sha(d) for d in HUB_FILES.values()]
    assert all(f["address"] == f"hf://{REPO}@{REVISION}/{f['path']}" and f["pinned"] for f in record["files"])
    # the token is in no file written and no log line
    for file in Path(paths.data_dir).rglob("*"):
        if file.is_file():
            assert TOKEN.encode() not in file.read_bytes(), file
    assert TOKEN not in caplog.text


def test_hf_without_token_sends_no_authorization(hub: FileServer, paths: PathsConfig) -> None:
    download(hf_dataset(), paths, FAST)
    assert len(hub.requests) == 2 and all(r.header("authorization") is None for r in hub.requests)


def test_hf_wrong_sha256_leaves_no_output(hub: FileServer, paths: PathsConfig) -> None:
    dataset = hf_dataset()
    dataset.source.files[1].sha256 = sha(b"something else")
    with pytest.raises(LmlabError) as err:
        download(dataset, paths, FAST)
    assert "test-00000-of-00001.parquet" in str(err.value) and f"actual   {sha(TEST)}" in str(err.value)
    assert_no_output(paths, "wikitext")


def test_hf_unpinned_files_are_trusted_on_first_use(
    hub: FileServer, paths: PathsConfig, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lmlab"):
        out = download(hf_dataset(pinned=False), paths, FAST)
    assert sum("UNPINNED DOWNLOAD" in r.getMessage() for r in caplog.records) == 2
    assert [f["pinned"] for f in record_of(out)["files"]] == [False, False]
    hub.add(f"/datasets/{REPO}/resolve/{REVISION}/wikitext-2-raw-v1/test-00000-of-00001.parquet", parquet_bytes(["x"]))
    with pytest.raises(LmlabError, match=f"expected {sha(TEST)}"):
        download(hf_dataset(pinned=False), paths, FAST)
    assert (out / "wikitext-2-raw-v1/test-00000-of-00001.parquet").read_bytes() == TEST


def test_hf_branch_revision_warns(hub: FileServer, paths: PathsConfig, caplog: pytest.LogCaptureFixture) -> None:
    for path, data in HUB_FILES.items():
        hub.add(f"/datasets/{REPO}/resolve/refs%2Fconvert%2Fparquet/{path}", data)
    with caplog.at_level(logging.WARNING, logger="lmlab"):
        download(hf_dataset(revision="refs/convert/parquet"), paths, FAST)
    assert any("not a 40-character commit" in r.getMessage() for r in caplog.records)


def test_hf_missing_file_is_a_clear_error(hub: FileServer, paths: PathsConfig) -> None:
    dataset = hf_dataset()
    dataset.source.files.append(HubFile(path="wikitext-2-raw-v1/nope.parquet"))
    with pytest.raises(LmlabError, match=r"nope\.parquet failed: HTTP 404"):
        download(dataset, paths, FAST)
    assert_no_output(paths, "wikitext")


# -- local -----------------------------------------------------------------------------------


def local_dataset(path: Path, sha256: str | None = None, members: list[str] | None = None) -> DatasetConfig:
    return DatasetConfig(
        name="mine", source=SourceConfig(kind="local", path=str(path), sha256=sha256, members=members or [])
    )


@pytest.mark.parametrize("pinned", [True, False], ids=["with-sha256", "without-sha256"])
def test_local_file(tmp_path: Path, paths: PathsConfig, pinned: bool) -> None:
    file = tmp_path / "corpus.txt"
    file.write_bytes(TEXT)
    out = download(local_dataset(file, sha(TEXT) if pinned else None), paths, FAST)
    assert files_under(out) == {"corpus.txt", SOURCE_JSON}
    assert (out / "corpus.txt").read_bytes() == TEXT
    record = record_of(out)
    assert record["kind"] == "local" and record["path"] == str(file.resolve())
    assert record["sha256"] == sha(TEXT) and record["bytes"] == len(TEXT)


def test_local_file_with_wrong_sha256_fails_and_keeps_the_users_file(tmp_path: Path, paths: PathsConfig) -> None:
    file = tmp_path / "corpus.txt"
    file.write_bytes(TEXT)
    wrong = sha(b"other")
    with pytest.raises(LmlabError) as err:
        download(local_dataset(file, wrong), paths, FAST)
    assert f"expected {wrong}" in str(err.value) and f"actual   {sha(TEXT)}" in str(err.value)
    assert file.read_bytes() == TEXT  # a source on the user's disk is never deleted
    assert_no_output(paths, "mine")


def test_local_folder_with_member_globs(tmp_path: Path, paths: PathsConfig) -> None:
    root = tmp_path / "mine"
    for name, data in {"a.txt": b"a\n", "sub/b.txt": b"b\n", "sub/c.md": b"c\n", "notes.csv": b"x\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    out = download(local_dataset(root, members=["*.txt"]), paths, FAST)
    assert files_under(out) == {"a.txt", "sub/b.txt", SOURCE_JSON}
    assert (out / "sub/b.txt").read_bytes() == b"b\n"
    assert record_of(out) == {
        "dataset": "mine",
        "kind": "local",
        "path": str(root.resolve()),
        "members": ["a.txt", "sub/b.txt"],
    }


def test_local_folder_with_sha256_is_refused(tmp_path: Path, paths: PathsConfig) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("a\n")
    with pytest.raises(LmlabError, match="is a folder; a sha256 applies only to a single file"):
        download(local_dataset(tmp_path / "mine", sha(b"a\n")), paths, FAST)
    assert_no_output(paths, "mine")


def test_local_folder_without_matching_files_is_an_error(tmp_path: Path, paths: PathsConfig) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("a\n")
    with pytest.raises(LmlabError, match=r"no file under .* matches \['\*\.jsonl'\]"):
        download(local_dataset(tmp_path / "mine", members=["*.jsonl"]), paths, FAST)
    assert_no_output(paths, "mine")


def test_local_missing_path_is_a_clear_error(tmp_path: Path, paths: PathsConfig) -> None:
    missing = tmp_path / "nowhere" / "corpus.txt"
    with pytest.raises(LmlabError, match=f"local source path {missing} does not exist"):
        download(local_dataset(missing), paths, FAST)
    assert_no_output(paths, "mine")


def test_local_archive_is_extracted(tmp_path: Path, paths: PathsConfig) -> None:
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("docs/a.txt", "a\n")
        zf.writestr("docs/b.bin", b"\0")
    out = download(local_dataset(archive, sha(archive.read_bytes()), ["docs/*.txt"]), paths, FAST)
    assert files_under(out) == {"docs/a.txt", SOURCE_JSON}
    assert record_of(out)["members"] == ["docs/a.txt"]


def test_a_new_download_replaces_the_old_copy_whole(tmp_path: Path, paths: PathsConfig) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    (root / "b.txt").write_text("b\n")
    out = download(local_dataset(root), paths, FAST)
    (root / "b.txt").unlink()
    download(local_dataset(root), paths, FAST)
    assert files_under(out) == {"a.txt", SOURCE_JSON}  # no file of the old copy survives
