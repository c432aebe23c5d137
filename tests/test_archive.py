"""Safe extraction: hostile members are refused by name, nothing lands outside the target,
globs pick members; and a url source pointing at an archive is extracted."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmlab.core.errors import LmlabError
from lmlab.data.archive import extract, is_archive
from lmlab.data.config import DatasetConfig, PathsConfig, SourceConfig
from lmlab.data.download import download
from lmlab.data.fetch import HttpOptions
from tests.helpers.servers import FileServer

FAST = HttpOptions(retries=2, timeout=5, backoff=0.01)
GOOD = {
    "corpus/a.txt": b"first document\n",
    "corpus/b.txt": b"second document\n",
    "corpus/notes.csv": b"x,y\n1,2\n",
    "other/c.txt": b"not wanted\n",
    "README.md": b"# readme\n",
}


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name exactly as given
    return path


def make_tar(
    path: Path, files: dict[str, bytes], links: dict[str, str] | None = None, hardlinks: dict[str, str] | None = None
) -> Path:
    mode = "w:gz" if path.name.endswith(".gz") else "w"
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
        for name, target in (hardlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def make_archive(path: Path, files: dict[str, bytes]) -> Path:
    return make_zip(path, files) if path.suffix == ".zip" else make_tar(path, files)


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


ARCHIVE_NAMES = ["evil.zip", "evil.tar", "evil.tar.gz"]


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(folder holding the archive and the target, target folder)"""
    outer = tmp_path / "outer"
    outer.mkdir()
    return outer, outer / "target" / "inner"


@pytest.mark.parametrize("archive_name", ARCHIVE_NAMES)
@pytest.mark.parametrize("evil", ["../evil.txt", "../../evil.txt", "corpus/../../evil.txt"])
def test_member_escaping_with_dotdot_is_refused(layout: tuple[Path, Path], archive_name: str, evil: str) -> None:
    outer, target = layout
    archive = make_archive(outer / archive_name, {"corpus/a.txt": b"fine\n", evil: b"pwned\n"})
    before = files_under(outer)
    with pytest.raises(LmlabError) as err:
        extract(archive, target, [])
    assert repr(evil) in str(err.value) and "refusing" in str(err.value)
    assert files_under(outer) == before  # nothing written anywhere, not even the harmless member
    assert not (outer / "evil.txt").exists() and not (outer / "target" / "evil.txt").exists()


@pytest.mark.parametrize("archive_name", ARCHIVE_NAMES)
def test_member_with_absolute_path_is_refused(tmp_path: Path, layout: tuple[Path, Path], archive_name: str) -> None:
    outer, target = layout
    absolute = (tmp_path / "abs-evil.txt").as_posix()
    archive = make_archive(outer / archive_name, {"corpus/a.txt": b"fine\n", absolute: b"pwned\n"})
    with pytest.raises(LmlabError) as err:
        extract(archive, target, [])
    assert absolute in str(err.value)
    assert not (tmp_path / "abs-evil.txt").exists()
    assert files_under(target) == set()


@pytest.mark.parametrize("archive_name", ["evil.tar", "evil.tar.gz"])
@pytest.mark.parametrize("link_target", ["../../outside", "/etc", "corpus/../../../outside", "{tmp}/outside"])
def test_tar_symlink_pointing_outside_is_refused(
    tmp_path: Path, layout: tuple[Path, Path], archive_name: str, link_target: str
) -> None:
    outer, target = layout
    (tmp_path / "outside").mkdir()
    link_target = link_target.format(tmp=tmp_path.as_posix())
    # the classic attack: a link out, then a file written through it
    archive = make_tar(
        outer / archive_name,
        {"corpus/a.txt": b"fine\n", "corpus/link/evil.txt": b"pwned\n"},
        links={"corpus/link": link_target},
    )
    with pytest.raises(LmlabError) as err:
        extract(archive, target, ["corpus/*"])
    assert "'corpus/link' (a link to" in str(err.value)
    assert list((tmp_path / "outside").iterdir()) == []
    assert files_under(target) == set()
    assert not target.joinpath("corpus", "link").is_symlink()


def test_tar_hardlink_to_a_file_outside_is_refused(tmp_path: Path, layout: tuple[Path, Path]) -> None:
    outer, target = layout
    archive = make_tar(outer / "evil.tar", {"corpus/a.txt": b"fine\n"}, hardlinks={"corpus/passwd": "../../etc/passwd"})
    with pytest.raises(LmlabError, match=r"'corpus/passwd' \(a link to"):
        extract(archive, target, [])
    assert files_under(target) == set()


def test_tar_symlink_inside_the_target_is_allowed_but_not_extracted(layout: tuple[Path, Path]) -> None:
    outer, target = layout
    archive = make_tar(outer / "ok.tar", {"corpus/a.txt": b"fine\n"}, links={"corpus/alias.txt": "a.txt"})
    assert extract(archive, target, []) == ["corpus/a.txt"]
    assert files_under(target) == {"corpus/a.txt"}
    assert not (target / "corpus" / "alias.txt").exists()


@pytest.mark.parametrize("archive_name", ["good.zip", "good.tar", "good.tar.gz", "good.tgz"])
def test_only_members_matching_the_globs_are_extracted(layout: tuple[Path, Path], archive_name: str) -> None:
    outer, target = layout
    archive = make_archive(outer / archive_name, GOOD)
    assert is_archive(archive)
    names = extract(archive, target, ["corpus/*.txt", "README.md"])
    assert sorted(names) == ["README.md", "corpus/a.txt", "corpus/b.txt"]
    assert files_under(target) == {"README.md", "corpus/a.txt", "corpus/b.txt"}
    for name in names:
        assert (target / name).read_bytes() == GOOD[name]


def test_no_globs_extracts_every_file(layout: tuple[Path, Path]) -> None:
    outer, target = layout
    archive = make_zip(outer / "good.zip", GOOD)
    assert sorted(extract(archive, target, [])) == sorted(GOOD)
    assert files_under(target) == set(GOOD)


def test_globs_matching_nothing_is_an_error_naming_the_globs(layout: tuple[Path, Path]) -> None:
    outer, target = layout
    archive = make_zip(outer / "good.zip", GOOD)
    with pytest.raises(LmlabError, match=r"no member .* matches \['data/\*\.parquet'\]"):
        extract(archive, target, ["data/*.parquet"])


def test_a_file_that_is_no_archive_is_an_error(layout: tuple[Path, Path]) -> None:
    outer, target = layout
    fake = outer / "fake.zip"
    fake.write_bytes(b"this is plain text, not a zip file\n" * 10)
    with pytest.raises(LmlabError, match="neither a zip nor a tar"):
        extract(fake, target, [])


# -- through the url source and the download stage -------------------------------------------


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as s:
        yield s


def url_dataset(url: str, sha256: str | None, members: list[str]) -> DatasetConfig:
    return DatasetConfig(name="zipped", source=SourceConfig(kind="url", url=url, sha256=sha256, members=members))


@pytest.mark.parametrize("archive_name", ["corpus.zip", "corpus.tar.gz"])
def test_url_source_with_an_archive_url_is_extracted(server: FileServer, tmp_path: Path, archive_name: str) -> None:
    archive = make_archive(tmp_path / archive_name, GOOD)
    data = archive.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    url = server.add(f"/dl/{archive_name}", data)
    paths = PathsConfig(data_dir=str(tmp_path / "data"))
    out = download(url_dataset(url, sha, ["corpus/*.txt"]), paths, FAST)
    assert out == paths.raw("zipped")
    assert files_under(out) == {"corpus/a.txt", "corpus/b.txt", "source.json"}  # the archive itself is not kept
    assert (out / "corpus" / "a.txt").read_bytes() == GOOD["corpus/a.txt"]
    record = json.loads((out / "source.json").read_text())
    assert record["kind"] == "url" and record["url"] == url and record["sha256"] == sha
    assert record["bytes"] == len(data) and sorted(record["members"]) == ["corpus/a.txt", "corpus/b.txt"]
    assert sorted(p.name for p in (tmp_path / "data" / "raw").iterdir()) == ["zipped"]  # no temp folders left


def test_url_source_with_a_hostile_archive_leaves_no_output(server: FileServer, tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "evil.zip", {"corpus/a.txt": b"fine\n", "../../evil.txt": b"pwned\n"})
    data = archive.read_bytes()
    url = server.add("/evil.zip", data)
    paths = PathsConfig(data_dir=str(tmp_path / "data"))
    with pytest.raises(LmlabError, match=r"'\.\./\.\./evil\.txt'"):
        download(url_dataset(url, hashlib.sha256(data).hexdigest(), []), paths, FAST)
    assert not paths.raw("zipped").exists()
    assert list((tmp_path / "data" / "raw").iterdir()) == []
    assert not (tmp_path / "data" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
