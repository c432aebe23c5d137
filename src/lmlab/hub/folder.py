"""The export folder's format, written and read here only:

    config.json        format_version, the family and every key of its config, vocab_size, the corpus and
                       tokenizer names, the training budget (steps, tokens, FLOPs), the lmlab version
    model.safetensors  the weights (no pickle): each tensor of the model's state dict once (a tied output layer
                       is the embedding's, stored under the embedding's name)
    tokenizer.model    the sentencepiece model the corpus was tokenized with
    README.md          the model card (`lmlab.hub.card`)

Reading checks before any weight is loaded: config.json's keys (an unknown one, from another version of lmlab,
is refused by name), the model keys against the family's schema (`family_config`), every tensor's name, shape
and type in the safetensors header against the model config.json builds, and the tokenizer's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

from lmlab.core.atomic import NUMBER, check_keys, read_json, write_json
from lmlab.core.errors import LmlabError
from lmlab.data.corpus import TOKENIZER_FILE
from lmlab.hub.loaded import Loaded
from lmlab.models import LanguageModel, build_model, family_config

FORMAT_VERSION = 1  # raised when a reader of an older version would misread a folder of the new one
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, CARD_FILE)  # what a folder holds, and what a fetch takes

REQUIRED = {"format_version": int, "family": str, "model": dict, "vocab_size": int}
OPTIONAL = {"lmlab_version": str, "corpus": dict, "training": dict}
CORPUS_KEYS = {"name": str, "tokenizer": str}
TRAINING_KEYS = {"steps": int, "tokens": int, "flops": NUMBER}  # each absent where the run did not record it
REWRITE = "export it again (`lmlab export <run folder or checkpoint> <folder>`)"

# safetensors' names of the types lmlab's models hold
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


def require(package: str) -> None:
    """A package of lmlab's `hub` extra (safetensors, huggingface_hub), imported where it is used: `make run`
    and generating from a checkpoint go without it; a missing one is an error saying how to install it."""
    if find_spec(package) is None:
        raise LmlabError(f"{package} is not installed: it comes with lmlab's hub extra (pip install -e '.[hub]')")


def lmlab_version() -> str:
    try:
        return version("lmlab")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def record(model: LanguageModel, corpus: dict[str, str], training: dict[str, int | float]) -> dict[str, Any]:
    """config.json's content for `model`, trained on `corpus` (its name and tokenizer's) for `training`."""
    return {
        "format_version": FORMAT_VERSION,
        "lmlab_version": lmlab_version(),
        "family": model.cfg.family,
        "model": asdict(model.cfg),
        "vocab_size": model.vocab_size,
        "corpus": {key: corpus[key] for key in CORPUS_KEYS if key in corpus},
        "training": training,
    }


def stored_tensors(model: LanguageModel) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of the model's state dict a file holds, and the names of tied parameters -> the stored name
    they share (a tied output layer: `head.weight` is `embedding.weight`, registered first). safetensors refuses
    shared tensors, and one copy is what the model has. By parameter identity: the same on the meta device."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            aliases[name] = first[id(parameter)]
        else:
            first[id(parameter)] = name
    return {name: t for name, t in model.state_dict().items() if name not in aliases}, aliases


def write(folder: Path, model: LanguageModel, tokenizer: spm.SentencePieceProcessor, config: dict[str, Any]) -> None:
    """The weights, tokenizer and config.json of `model` into `folder` (a staging folder: `lmlab.hub.export`)."""
    require("safetensors")
    from safetensors.torch import save

    tensors, _ = stored_tensors(model)
    contents = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    # `save`, not `save_file`: a file made like the folder's others, readable by whom the folder is shared with
    (folder / WEIGHTS_FILE).write_bytes(save(contents, metadata={"format": "pt"}))  # "pt": how Hugging Face reads it
    (folder / TOKENIZER_FILE).write_bytes(tokenizer.serialized_model_proto())
    write_json(folder / CONFIG_FILE, config)


def read(folder: Path, device: str = "cpu") -> Loaded:
    """The model (eval mode, on `device`), tokenizer and config of an export folder, each checked."""
    config = read_config(folder / CONFIG_FILE)
    cfg = model_config(config, folder / CONFIG_FILE)
    with torch.device("meta"):  # the tensors config.json implies, without memory: checked before any is taken
        shaped = build_model(cfg, config["vocab_size"])
    check_weights(folder / WEIGHTS_FILE, shaped)
    tokenizer = read_tokenizer(folder / TOKENIZER_FILE, config["vocab_size"], folder / CONFIG_FILE)
    model = build_model(cfg, config["vocab_size"])
    load_weights(model, folder / WEIGHTS_FILE)
    return Loaded(model.to(device).eval(), tokenizer, config)


def read_config(path: Path) -> dict[str, Any]:
    """config.json, its keys and their types checked; keys another version of lmlab wrote are refused by name."""
    if not path.is_file():
        raise LmlabError(f"{path.parent} is not an lmlab export: it has no {path.name}")
    if "model_type" in (raw := read_json(path, REWRITE)):  # transformers' config (`lmlab export --format transformers`)
        raise LmlabError(
            f"{path.parent} is a transformers model ({raw['model_type']}), not an lmlab export: load it with "
            "transformers' AutoModelForCausalLM.from_pretrained, or export the run again in the lmlab format"
        )
    config = read_json(path, REWRITE, REQUIRED, OPTIONAL)
    written = config["format_version"]
    unknown = sorted(set(config) - set(REQUIRED) - set(OPTIONAL))
    if unknown or written > FORMAT_VERSION:
        raise LmlabError(
            f"{path} has format_version {written}"
            + (f" and keys this lmlab does not know ({', '.join(unknown)})" if unknown else "")
            + f": this lmlab ({lmlab_version()}) reads format_version {FORMAT_VERSION}; load it with the lmlab "
            f"that wrote it (lmlab_version {config.get('lmlab_version', 'unknown')!r}) or a newer one"
        )
    check_keys(config.get("corpus", {}), path, REWRITE, optional=CORPUS_KEYS, within="corpus.")
    check_keys(config.get("training", {}), path, REWRITE, optional=TRAINING_KEYS, within="training.")
    return config


def model_config(config: dict[str, Any], path: Path) -> Any:
    """The family's config from config.json's `model`; a key the family does not have (a folder of another
    version of lmlab) is an error naming the file and every such key."""
    if config["model"].get("family") != config["family"]:
        raise LmlabError(
            f"{path}: family is {config['family']!r} but model.family is {config['model'].get('family')!r}: {REWRITE}"
        )
    try:
        return family_config(config["model"])
    except LmlabError as err:
        raise LmlabError(
            f"{path}: {err} (written by lmlab {config.get('lmlab_version', 'unknown')}, this is {lmlab_version()})"
        ) from None


def check_weights(path: Path, model: LanguageModel) -> None:
    """The safetensors file `path` holds exactly the tensors `model` has, each of its shape and type: read from
    the file's header, so a file of another model is an error before any of it is read, not a partial load."""
    expected, _ = stored_tensors(model)
    if not path.is_file():
        raise LmlabError(f"no {path.name} in {path.parent}: the folder is incomplete; {REWRITE}")
    family = model.cfg.family
    with opened(path) as f:
        names = set(f.keys())
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        if missing or extra:
            differences = [f"missing {', '.join(missing)}"] if missing else []
            differences += [f"not the model's: {', '.join(extra)}"] if extra else []
            raise LmlabError(
                f"{path} does not hold the tensors of the {family} model {CONFIG_FILE} describes: "
                + "; ".join(differences)
            )
        for name, tensor in expected.items():
            header = f.get_slice(name)
            shape, dtype = list(header.get_shape()), header.get_dtype()
            if shape != list(tensor.shape) or dtype != DTYPES.get(tensor.dtype):
                raise LmlabError(
                    f"{path}: tensor {name!r} is {dtype} of shape {shape}, but the {family} model {CONFIG_FILE} "
                    f"describes needs {DTYPES.get(tensor.dtype, tensor.dtype)} of shape {list(tensor.shape)}: the "
                    f"weights and {CONFIG_FILE} are of different models; {REWRITE}"
                )


def load_weights(model: LanguageModel, path: Path) -> None:
    """Fill `model` from the safetensors file `path` (`check_weights` found it fits), a tied parameter once."""
    expected, aliases = stored_tensors(model)
    with opened(path) as f:
        weights = {name: f.get_tensor(name) for name in expected}
    model.load_state_dict({**weights, **{alias: weights[name] for alias, name in aliases.items()}}, strict=True)


@contextmanager
def opened(path: Path) -> Iterator[Any]:
    """safetensors' reader of `path`; a file that is no safetensors file is an error naming it."""
    require("safetensors")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            yield f
    except SafetensorError as err:
        raise LmlabError(f"{path} is not a readable safetensors file ({err}): {REWRITE}") from None


def read_tokenizer(path: Path, vocab_size: int, described_by: Path) -> spm.SentencePieceProcessor:
    """The sentencepiece model at `path`, which must have the `vocab_size` pieces `described_by` states."""
    if not path.is_file():
        raise LmlabError(f"no {path.name} in {path.parent}: the folder is incomplete; {REWRITE}")
    try:
        tokenizer = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as err:
        raise LmlabError(f"{path} is not a sentencepiece model ({err}): {REWRITE}") from None
    if tokenizer.get_piece_size() != vocab_size:
        raise LmlabError(
            f"{path} has {tokenizer.get_piece_size()} pieces but {described_by} says vocab_size {vocab_size}: "
            f"the tokenizer is not the model's; {REWRITE}"
        )
    return tokenizer
