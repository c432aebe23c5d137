"""A trained model outside lmlab's own run folders: `lmlab export`'s self-contained folder (safetensors weights,
config.json, the sentencepiece tokenizer, a model card), shared through the Hugging Face Hub, and loaded back
by `load` from such a folder, a Hub repo id or a pretraining checkpoint.

    loaded.py      Loaded: what `load` gives (a model, its tokenizer, its record)
    folder.py      the export folder's format: written, and read back checked against the model it builds
    card.py        the model card (README.md): the model, its data and budget, the run's test figures
    checkpoint.py  a pretraining checkpoint (or its run folder) as a source: its model, tokenizer and record
    remote.py      push and fetch through huggingface_hub (HF_ENDPOINT, HF_TOKEN)
    export.py      `lmlab export`: a checkpoint into a folder, whole or not at all
    sources.py     what `load` does with each kind of source

`import lmlab` stays free of torch (`lmlab.load` imports this package on first use); this package imports
its loading code at module level, so the DVC stages that load a model depend on it.
"""

from __future__ import annotations

from pathlib import Path

from lmlab.hub.loaded import Loaded
from lmlab.hub.sources import load_source

__all__ = ["Loaded", "load"]


def load(source: str | Path, device: str = "cpu", revision: str | None = None) -> Loaded:
    """The model in `source`: a folder `lmlab export` wrote, a Hugging Face Hub repo id of one (`revision`: a
    branch, tag or commit; the Hub's default branch otherwise), a pretraining checkpoint, or a pretraining run
    folder (its checkpoints/best.ckpt). Anything else is an LmlabError saying what was looked for."""
    return load_source(source, device, revision)
