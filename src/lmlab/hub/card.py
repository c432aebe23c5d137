"""The model card, an export folder's README.md (the Hub shows it as the repo's page): the family and its keys,
the parameters, the data and tokenizer, the training budget, the command that trained the run, and the run's test
figures with their 95% intervals where `lmlab evaluate` measured them, read back as the report reads them
(`lmlab.analysis.evaluations.read_evaluation`: the figures are the report's own, not recomputed here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.core import metrics as M
from lmlab.data.corpus import TOKENIZER_FILE
from lmlab.hub.folder import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE
from lmlab.models import LanguageModel
from lmlab.training.checkpoints import SEED_FOLDER

if TYPE_CHECKING:
    from lmlab.analysis.stats import Interval


@dataclass
class Evaluation:
    """Where one `lmlab evaluate` of the run wrote its figures, and the command that writes them again."""

    metrics: Path  # <metrics_dir>/<family>.json
    folder: Path  # <eval_dir>/<family>/: the per-example record the intervals come from
    rebuild: str


def pipeline_evaluation(checkpoint: Path) -> Evaluation | None:
    """Where the pipelines evaluate the run a pretraining checkpoint belongs to: the main study's
    metrics/seed<k>/<run>.json and data/eval/seed<k>/<run>/ for data/runs/seed<k>/pretrain/<run>/, the transfer
    study's transfer/metrics/... and data/transfer/eval/... for data/runs/transfer/seed<k>/pretrain/<run>/;
    None for a checkpoint of no pipeline's run (`dvc.yaml`, `transfer/dvc.yaml`)."""
    run = checkpoint.parent.parent
    seed_folder = run.parent.parent
    seed = SEED_FOLDER.fullmatch(seed_folder.name)
    if checkpoint.parent.name != "checkpoints" or run.parent.name != "pretrain" or seed is None:
        return None
    above = seed_folder.parent
    if above.name == "runs" and above.parent.name == "data":
        root, study, stage = above.parent.parent, Path(), "evaluate"
        evaluated = root / "data" / "eval" / seed_folder.name / run.name
    elif above.name == "transfer" and above.parent.name == "runs" and above.parent.parent.name == "data":
        root, study, stage = above.parent.parent.parent, Path("transfer"), "transfer/dvc.yaml:evaluate"
        evaluated = root / "data" / "transfer" / "eval" / seed_folder.name / run.name
    else:
        return None
    metrics = root / study / "metrics" / seed_folder.name / f"{run.name}.json"
    return Evaluation(metrics, evaluated, f"run `dvc repro {stage}@{run.name}-{seed['seed']}`")


def evaluated_figures(evaluation: Evaluation) -> dict[str, Any] | None:
    """The evaluation's metrics and figures (`read_evaluation`), or None where it has not been run (no metrics
    file); a damaged or mixed set of its files is an error naming the file and `evaluation.rebuild`."""
    if not evaluation.metrics.is_file():
        return None
    from lmlab.analysis.evaluations import read_evaluation  # scipy and matplotlib: only for a card with figures

    return read_evaluation(evaluation.metrics, evaluation.folder, evaluation.rebuild)


def model_card(
    model: LanguageModel,
    config: dict[str, Any],
    source: Path,
    command: str,
    evaluation: Evaluation | None,
    figures: dict[str, Any] | None,
    where: str,
    transformers: bool = False,
    auto_tokenizer: bool = False,
) -> str:
    """README.md for the export of `model` (config.json's `config`) from the checkpoint `source`, trained by
    `command`; `figures`: `evaluated_figures(evaluation)`; `where`: what loads it (`lmlab.load`, or with
    `transformers`, the GPT-NeoX form's `from_pretrained`; `auto_tokenizer`: its tokenizer's too)."""
    family, corpus, training = config["family"], config.get("corpus", {}), config.get("training", {})
    keys = ", ".join(f"`{key}={value}`" for key, value in config["model"].items() if key != "family")
    params, embedding = model.num_params, model.num_embedding_params
    lines = [
        "---",
        f"library_name: {'transformers' if transformers else 'lmlab'}",
        "pipeline_tag: text-generation",
        "tags:",
        "- lmlab",
        f"- {family}",
        "---",
        "",
        f"# {family} language model (lmlab)",
        "",
        f"A `{family}` language model trained by lmlab, the pipeline that pretrains, fine-tunes and evaluates "
        "recurrent and Transformer language models the same way; exported by `lmlab export` from "
        f"`{source}`.",
        "",
        "| | |",
        "|---|---|",
        f"| Family | `{family}` |",
        f"| Parameters | {params:,} ({params - embedding:,} non-embedding; a tied output layer counts once) |",
        f"| Model keys | {keys} |",
        f"| Data | corpus `{corpus.get('name', 'unknown')}`, tokenizer `{corpus.get('tokenizer', 'unknown')}` "
        f"({config['vocab_size']:,} pieces, `{TOKENIZER_FILE}`) |",
        f"| Training | {spent(training)} |",
        f"| Trained by | {command} |",
        f"| Format | {FORMATS[transformers].format(version=config.get('lmlab_version', 'unknown'))} |",
        "",
        "## Test figures",
        "",
        *figure_lines(evaluation, figures),
        "",
        "## Use",
        "",
        *(transformers_use(where, auto_tokenizer) if transformers else lmlab_use(where)),
        "",
        "## Files",
        "",
        f"- `{WEIGHTS_FILE}`: the weights (safetensors: no pickle)"
        + ("" if transformers else f", each checked against `{CONFIG_FILE}` before loading"),
        f"- `{CONFIG_FILE}`: "
        + (
            "GPT-NeoX's config (transformers' GPTNeoXConfig)"
            if transformers
            else "the family, every model key, the vocabulary size, the corpus and the training budget"
        ),
        f"- `{TOKENIZER_FILE}`: the sentencepiece tokenizer the corpus was tokenized with"
        + (" (read by transformers' LlamaTokenizer: tokenizer_config.json)" if auto_tokenizer else ""),
        "",
    ]
    return "\n".join(lines)


FORMATS = {
    False: "lmlab {version}, export format_version " + str(FORMAT_VERSION),
    True: "transformers' GPT-NeoX (`GPTNeoXForCausalLM`), exported by lmlab {version}: the same logits",
}


def lmlab_use(where: str) -> list[str]:
    return [
        "```python",
        "import lmlab",
        "",
        f'loaded = lmlab.load("{where}")  # .model (eval mode), .tokenizer (sentencepiece), .config',
        "```",
        "",
        "```bash",
        f'lmlab generate checkpoint={where} "The year began"  # in an lmlab project folder (it reads conf/)',
        "```",
    ]


def transformers_use(where: str, auto_tokenizer: bool) -> list[str]:
    tokenizer = (
        [f'tokenizer = AutoTokenizer.from_pretrained("{where}")  # no BOS: pieces only, as lmlab trained it']
        if auto_tokenizer
        else [
            "# transformers' LlamaTokenizer would misread this sentencepiece model (not a lossless BPE one);",
            f'# from the Hub, the file is huggingface_hub.hf_hub_download("<repo id>", "{TOKENIZER_FILE}")',
            f'tokenizer = sentencepiece.SentencePieceProcessor(model_file="{where}/{TOKENIZER_FILE}")',
        ]
    )
    return [
        "```python",
        "from transformers import AutoModelForCausalLM" + (", AutoTokenizer" if auto_tokenizer else ""),
        *([] if auto_tokenizer else ["import sentencepiece"]),
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{where}")',
        *tokenizer,
        "```",
        *(
            ["", "```bash", f"lm_eval --model hf --model_args pretrained={where} --tasks lambada_openai", "```"]
            if auto_tokenizer
            else []
        ),
    ]


def spent(training: dict[str, int | float]) -> str:
    parts = [f"{training['steps']:,} steps"] if "steps" in training else []
    parts += [f"{training['tokens']:,} tokens"] if "tokens" in training else []
    parts += [f"{training['flops']:.3g} FLOPs (3 x forward FLOPs per token x tokens)"] if "flops" in training else []
    return ", ".join(parts) + ("" if "tokens" in training else " (tokens and FLOPs: the run's val curve was not found)")


def figure_lines(evaluation: Evaluation | None, figures: dict[str, Any] | None) -> list[str]:
    if evaluation is None:
        return [
            "This checkpoint is not a pipeline run's, so no evaluation was looked for: `lmlab export --evaluation "
            "METRICS_JSON EVAL_FOLDER` adds the figures of an `lmlab evaluate` of it."
        ]
    if figures is None:
        return [f"No evaluation of this run was found ({evaluation.metrics} does not exist: {evaluation.rebuild})."]
    from lmlab.analysis.figures import CLASSIFIERS
    from lmlab.analysis.stats import CONFIDENCE

    f = figures["figures"]
    rows: list[tuple[str, Interval | None]] = [
        ("Test loss (nats per token)", f.loss),
        ("Test perplexity", f.ppl),
        ("Test bits per byte", f.bpb),
        ("Accuracy, the classifier fine-tuned from this model", f.accuracy.get(M.TEST)),
        ("Accuracy, the same classifier trained from scratch", f.accuracy.get(M.SCRATCH_TEST)),
        ("Accuracy, always the train split's majority class", f.majority),
        ("Fine-tuned minus from scratch, accuracy (paired)", f.gain),
    ]
    lines = [
        f"Measured by `lmlab evaluate` ({evaluation.metrics}); brackets: {CONFIDENCE:.0%} intervals "
        f"({f.loss.how} for loss, perplexity and bits per byte; bootstrap over test documents for accuracy).",
        "",
        "| Figure | Value |",
        "|---|---|",
        *(f"| {name} | {interval.show(1 if interval is f.ppl else 3)} |" for name, interval in rows if interval),
    ]
    for prefix, (name, share) in f.collapsed.items():
        lines += [
            "",
            f"{CLASSIFIERS[prefix].capitalize()} collapsed: it predicts {name!r} for {share:.0%} of test documents.",
        ]
    return lines
