"""A pretraining checkpoint as a source of a model used outside its run: the model (`training.checkpoints`, strict
and `weights_only`), the tokenizer of the corpus folder the checkpoint names, and the record an export writes
(config.json's content: `lmlab.hub.folder.record`), with the budget the run's val curve kept for its step."""

from __future__ import annotations

import csv
from pathlib import Path

import sentencepiece as spm

from lmlab.core import metrics as M
from lmlab.core.errors import LmlabError
from lmlab.data.corpus import TOKENIZER_FILE
from lmlab.hub.folder import record
from lmlab.hub.loaded import Loaded
from lmlab.training.checkpoints import load_language_model

BEST = Path("checkpoints") / "best.ckpt"  # a run folder's lowest val/loss: what a run folder stands for
VAL_CURVE = "val_curve.csv"  # beside checkpoints/ in a run folder (`lmlab.training.runs`)


def checkpoint_file(path: Path) -> Path:
    """A pretraining run folder's best checkpoint; any other path as given (a checkpoint file)."""
    if not path.is_dir():
        return path
    if not (path / BEST.parent).is_dir():
        raise LmlabError(f"{path} is a folder without {BEST.parent}/: give a pretraining run folder or checkpoint")
    return path / BEST


def from_checkpoint(path: Path, device: str = "cpu") -> Loaded:
    """The model of a pretraining checkpoint, with its corpus's tokenizer (which must still have the model's
    vocabulary: a corpus tokenized again since would decode other text)."""
    loaded = load_language_model(path, device)
    folder = loaded.corpus.get("folder")
    if not folder or not (Path(folder) / TOKENIZER_FILE).is_file():
        raise LmlabError(
            f"{path} names its tokenized corpus {folder!r}, which has no {TOKENIZER_FILE} here; "
            "run the tokenize stage for that corpus first"
        )
    tokenizer = spm.SentencePieceProcessor(model_file=str(Path(folder) / TOKENIZER_FILE))
    if tokenizer.get_piece_size() != loaded.model.vocab_size:
        raise LmlabError(
            f"{folder}/{TOKENIZER_FILE} has {tokenizer.get_piece_size()} pieces but {path} was trained with "
            f"{loaded.model.vocab_size}: the corpus was re-tokenized since; retrain or use the matching tokenizer"
        )
    config = record(loaded.model, loaded.corpus, budget(path, loaded.step))
    return Loaded(loaded.model.eval(), tokenizer, config)


def budget(checkpoint: Path, step: int) -> dict[str, int | float]:
    """What training had spent when the checkpoint was saved: its step, and the tokens and FLOPs the run's val
    curve recorded at that step (`M.PRETRAIN_CURVE`); only the step for a checkpoint away from its run folder."""
    spent: dict[str, int | float] = {"steps": step}
    curve = checkpoint.parent.parent / VAL_CURVE
    if checkpoint.parent.name != BEST.parent.name or not curve.is_file():
        return spent
    with curve.open(newline="") as f:
        try:
            for row in csv.DictReader(f):
                if row.get(M.STEP) and float(row[M.STEP]) == step:
                    if row.get(M.TRAIN_TOKENS):
                        spent["tokens"] = int(float(row[M.TRAIN_TOKENS]))
                    if row.get(M.TRAIN_FLOPS):
                        spent["flops"] = float(row[M.TRAIN_FLOPS])
        except ValueError as err:
            raise LmlabError(f"{curve} holds a value that is not a number ({err}): the run wrote it damaged") from None
    return spent
