"""What `lmlab.load` (`lmlab.hub.load`) does with each kind of source: an export folder or a pretraining run
folder or checkpoint on this disk, else a Hub repo id (fetched into huggingface_hub's cache, then read as a
folder). A path that exists is always the path, never a repo id of the same name."""

from __future__ import annotations

from pathlib import Path

from lmlab.core.errors import LmlabError
from lmlab.hub import folder
from lmlab.hub.checkpoint import checkpoint_file, from_checkpoint
from lmlab.hub.loaded import Loaded
from lmlab.hub.remote import fetch, is_repo_id


def load_source(source: str | Path, device: str = "cpu", revision: str | None = None) -> Loaded:
    """`lmlab.hub.load`'s work: the model of `source`, on `device`."""
    path = Path(source)
    local = path.exists() or path.suffix == ".ckpt" or not is_repo_id(str(source))
    if local and revision is not None:
        raise LmlabError(f"revision={revision!r} is for a Hub repo id, but {source} is a path on this machine")
    if not local:
        return folder.read(fetch(str(source), revision), device)
    if (path / folder.CONFIG_FILE).is_file():
        return folder.read(path, device)
    if not path.exists() and path.suffix != ".ckpt":
        raise LmlabError(f"no export folder, run folder or checkpoint at {path}")
    return from_checkpoint(checkpoint_file(path), device)
