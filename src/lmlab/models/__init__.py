"""Language models behind one interface; `build_model` picks the family's class."""

from lmlab.config import ModelConfig
from lmlab.errors import LmlabError
from lmlab.models.base import LanguageModel, State
from lmlab.models.recurrent import RecurrentLM
from lmlab.models.transformer import TransformerLM

__all__ = ["LanguageModel", "State", "build_model"]


def build_model(cfg: ModelConfig, vocab_size: int) -> LanguageModel:
    if cfg.family in RecurrentLM.FAMILIES:
        return RecurrentLM(cfg, vocab_size)
    if cfg.family == "transformer":
        return TransformerLM(cfg, vocab_size)
    families = (*RecurrentLM.FAMILIES, "transformer")
    raise LmlabError(f"model.family={cfg.family!r} is not a model family; use one of {', '.join(families)}")
