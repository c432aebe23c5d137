"""What `lmlab.load` gives: a module of its own (no torch), so that the modules building one import no
`lmlab.hub`, which imports them back to load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sentencepiece

    from lmlab.models import LanguageModel


@dataclass
class Loaded:
    """A trained model ready to use: in eval mode on the device asked for, with the tokenizer it was trained
    with and its record (the export's config.json: family, model keys, vocab_size, corpus, training)."""

    model: LanguageModel
    tokenizer: sentencepiece.SentencePieceProcessor
    config: dict[str, Any]
