"""An export folder on the Hugging Face Hub, through huggingface_hub: pushed to a model repo, fetched by repo id.

huggingface_hub reads the Hub's address (HF_ENDPOINT: a mirror, a private Hub, the tests' local stand-in), the
token (HF_TOKEN, or the one `hf auth login` stored) and the cache (HF_HOME) itself; lmlab never reads, prints or
writes a token. A fetch takes only the files loading reads, so a repo holding anything else (a pickle) brings
none of it onto the disk.
"""

from __future__ import annotations

from pathlib import Path

from lmlab.core.errors import LmlabError
from lmlab.data.corpus import TOKENIZER_FILE
from lmlab.hub.folder import CONFIG_FILE, FILES, WEIGHTS_FILE, require

LOADED_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)  # what `lmlab.hub.folder.read` reads


def is_repo_id(text: str) -> bool:
    """Whether `text` is a valid Hub repo id (`name` or `owner/name`), by huggingface_hub's own rule."""
    require("huggingface_hub")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def check_repo_id(repo_id: str) -> None:
    """A repo id that is no valid one: an error before an export's work."""
    if not is_repo_id(repo_id):
        raise LmlabError(
            f"{repo_id!r} is not a Hugging Face Hub repo id: give owner/name (letters, digits, '-', '_', '.')"
        )


def endpoint() -> str:
    """The Hub huggingface_hub talks to: HF_ENDPOINT, or huggingface.co."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def reason(err: Exception) -> str:
    """An error's first line: huggingface_hub's HTTP errors go on with request ids and server detail."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def push(folder: Path, repo_id: str, private: bool = False) -> str:
    """Create the model repo `repo_id` (an existing one is kept; `private` applies to a new one) and commit the
    export folder's files to its default branch; returns the repo's URL."""
    require("huggingface_hub")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HTTPError  # httpx's base of the Hub's HTTP errors and of connection errors

    from lmlab.hub.neox import TOKENIZER_FILES

    check_repo_id(repo_id)
    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=url.repo_id,
            folder_path=folder,
            allow_patterns=[*FILES, *TOKENIZER_FILES],  # an lmlab export's, or a transformers export's
            commit_message=f"lmlab export: {folder.name}",
        )
    except (HTTPError, OSError, ValueError) as err:
        raise LmlabError(
            f"pushing {folder} to {repo_id} on {api.endpoint} failed ({reason(err)}); a token with write access "
            "comes from HF_TOKEN or `hf auth login`"
        ) from None
    return str(url)


def fetch(repo_id: str, revision: str | None = None) -> Path:
    """The local copy (huggingface_hub's cache) of the export folder in the model repo `repo_id` at `revision`
    (a branch, tag or commit; None: the default branch)."""
    require("huggingface_hub")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HTTPError, RepositoryNotFoundError, RevisionNotFoundError

    where = f"{repo_id}" + (f" at revision {revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, repo_type="model", revision=revision, allow_patterns=list(LOADED_FILES)))
    except RepositoryNotFoundError:
        raise LmlabError(
            f"no folder or checkpoint {repo_id} here, and the Hub at {endpoint()} has no model repo {repo_id} "
            "(or it is private and the token, HF_TOKEN or `hf auth login`'s, does not grant it)"
        ) from None
    except RevisionNotFoundError:
        raise LmlabError(f"the model repo {repo_id} on {endpoint()} has no revision {revision!r}") from None
    except (HTTPError, OSError, ValueError) as err:
        raise LmlabError(f"fetching {where} from {endpoint()} failed ({reason(err)})") from None
