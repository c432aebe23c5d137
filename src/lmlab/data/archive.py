"""Safe extraction of zip and tar archives (and wheels, which are zips).

Members that would land outside the target folder (absolute paths, ``..``,
links pointing out) are refused with an error naming the member, never skipped
silently; tar extraction also goes through Python's ``data`` filter.
"""

from __future__ import annotations

import fnmatch
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from lmlab.core.errors import LmlabError

ARCHIVE_SUFFIXES = (".zip", ".whl", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def selected(name: str, members: list[str]) -> bool:
    """True when ``name`` matches one of the glob patterns (all match when there are none)."""
    return not members or any(fnmatch.fnmatchcase(name, pattern) for pattern in members)


def _check_member(archive: Path, name: str, dest: Path, link: str | None = None) -> None:
    """Refuse ``name`` unless it stays inside ``dest``; for a link, ``name`` is where it points
    and ``link`` the member itself, which the error names."""
    pure = PurePosixPath(name.replace("\\", "/"))
    target = (dest / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or not target.is_relative_to(dest.resolve()):
        what = f"{link!r} (a link to {name!r})" if link is not None else repr(name)
        raise LmlabError(
            f"refusing archive member {what} of {archive}: it would "
            f"{'point' if link is not None else 'be written'} outside {dest}. "
            "Only members with relative paths inside the archive's folder are accepted."
        )


def extract(archive: Path, dest: Path, members: list[str]) -> list[str]:
    """Extract the members matching ``members`` (globs) into ``dest``; return their names."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        names = _extract_zip(archive, dest, members)
    elif tarfile.is_tarfile(archive):
        names = _extract_tar(archive, dest, members)
    else:
        raise LmlabError(f"{archive} is neither a zip nor a tar archive")
    if not names:
        raise LmlabError(f"no member of {archive} matches {list(members)}; check the source's 'members' globs")
    return names


def _extract_zip(archive: Path, dest: Path, members: list[str]) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir() and selected(i.filename, members)]
        for info in zf.infolist():
            _check_member(archive, info.filename, dest)
        for info in infos:
            target = dest / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return [i.filename for i in infos]


def _extract_tar(archive: Path, dest: Path, members: list[str]) -> list[str]:
    with tarfile.open(archive) as tf:
        all_members = tf.getmembers()
        for member in all_members:
            _check_member(archive, member.name, dest)
            if member.issym() or member.islnk():
                link_base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
                _check_member(archive, str(link_base / member.linkname), dest, link=member.name)
        chosen = [m for m in all_members if m.isfile() and selected(m.name, members)]
        try:
            tf.extractall(dest, members=chosen, filter="data")
        except tarfile.FilterError as err:
            raise LmlabError(f"refusing archive member of {archive}: {err}") from err
    return [m.name for m in chosen]
