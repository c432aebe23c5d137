"""lmlab: compare recurrent and Transformer language models under one pipeline."""

from typing import Any

__version__ = "0.1.0"


def load(source: Any, **options: Any) -> Any:
    """A trained model, ready to use: a folder `lmlab export` wrote, a Hugging Face Hub repo id of one, or a
    pretraining checkpoint (`lmlab.hub.load` says which options it takes). Imported here on first use, so
    `import lmlab` stays free of torch."""
    from lmlab.hub import load as hub_load

    return hub_load(source, **options)
