"""`lmlab export`: a pretraining checkpoint into a self-contained folder, whole or not at all."""

from __future__ import annotations

from pathlib import Path

from lmlab.core.atomic import staged_dir
from lmlab.core.errors import LmlabError
from lmlab.hub import folder, neox
from lmlab.hub.card import Evaluation, evaluated_figures, model_card, pipeline_evaluation
from lmlab.hub.checkpoint import checkpoint_file, from_checkpoint
from lmlab.hub.loaded import Loaded
from lmlab.training.checkpoints import training_command


def export(
    source: Path,
    out: Path,
    evaluation: Evaluation | None = None,
    repo_id: str | None = None,
    transformers: bool = False,
) -> Loaded:
    """Write the model of `source` (a pretraining checkpoint, or a run folder: its best one) into the folder
    `out`, with the run's test figures from `evaluation` (default: where the pipelines evaluate the run, when
    it is one of theirs). A failure leaves `out` as it was; an existing `out` is replaced only if it is an
    export. `repo_id`: the Hub repo the folder is pushed to, which the card tells to load. `transformers`: the
    GPT-NeoX form `transformers` loads (`lmlab.hub.neox`; the Transformer family only) instead of lmlab's."""
    check_out(out)
    checkpoint = checkpoint_file(source)
    loaded = from_checkpoint(checkpoint)
    if transformers:
        neox.check_exportable(loaded.model)
    given, evaluation = evaluation is not None, evaluation or pipeline_evaluation(checkpoint)
    figures = evaluated_figures(evaluation) if evaluation else None
    if given and evaluation and figures is None:
        raise LmlabError(f"no {evaluation.metrics}: {evaluation.rebuild}")
    card = model_card(
        loaded.model,
        loaded.config,
        checkpoint,
        training_command(checkpoint, "pretrain"),
        evaluation,
        figures,
        repo_id or str(out),
        transformers,
        transformers and neox.has_transformers_tokenizer(loaded.tokenizer),
    )
    with staged_dir(out) as staging:
        if transformers:
            neox.write(staging, loaded.model, loaded.tokenizer)
        else:
            folder.write(staging, loaded.model, loaded.tokenizer, loaded.config)
        (staging / folder.CARD_FILE).write_text(card)
    return loaded


def check_out(out: Path) -> None:
    """`out` may be new, an empty folder, or an export (which the new one replaces): never another folder, which
    replacing would delete."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())) or (out / folder.CONFIG_FILE).is_file():
        return
    raise LmlabError(
        f"{out} exists and is not an lmlab export: give a new folder (an export replaces the one it names)"
    )
