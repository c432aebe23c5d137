"""lmlab's models in the real lm-evaluation-harness, offline: custom tasks on local JSON files run through it for
a recurrent family and the Transformer; the adapter's log-probabilities are lmlab evaluate's; a context is read
once and its state carried; the Transformer's context limit; `lmlab harness` and the report's section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets.config
import huggingface_hub.constants
import numpy as np
import pytest
import sentencepiece as spm
import torch
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager

from lmlab.analysis.comparison import SHOWN, markdown, write_report
from lmlab.analysis.config import ReportConfig
from lmlab.analysis.evaluations import load
from lmlab.analysis.harness import load as harness_figures
from lmlab.analysis.harness import section
from lmlab.analysis.stats import Interval
from lmlab.core.errors import LmlabError
from lmlab.data.config import TokenizerConfig
from lmlab.data.corpus import TOKENIZER_FILE
from lmlab.data.tokenize import train_tokenizer
from lmlab.hub.harness import HarnessLM
from lmlab.jobs.generate import generate
from lmlab.jobs.harness import check_tasks, harness
from lmlab.jobs.harness_config import HarnessConfig
from lmlab.jobs.measures import lm_loss
from lmlab.jobs.pretrain import pretrain
from lmlab.models import LanguageModel, build_model
from lmlab.training.checkpoints import load_language_model
from tests.helpers.corpora import make_docs, write_jsonl
from tests.helpers.evaluations import write_evaluation
from tests.helpers.project import ROOT, env
from tests.helpers.tiny_lm import composed, tiny_config, write_corpus

VOCAB = 320
FAMILIES = ("gru", "transformer")  # a recurrent family and the Transformer (context 64: `debug=tiny` keeps it)
TASKS = ("tiny_choice", "tiny_lambada", "tiny_text", "tiny_gen")  # every kind of request the harness makes


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny GRU and Transformer, pretrained a few steps on a corpus folder holding lmlab's real tokenizer."""
    root = tmp_path_factory.mktemp("runs")
    tokenizer = TokenizerConfig(vocab_size=VOCAB, num_threads=1)
    train = write_jsonl(root / "train.jsonl", ({"text": doc} for doc in make_docs(80, seed=1)))
    folder = write_corpus(root / "data", tokenizer=tokenizer, vocab_size=VOCAB)
    (folder / TOKENIZER_FILE).write_bytes(train_tokenizer(train, tokenizer))
    for family in FAMILIES:
        cfg = tiny_config(root / "data", family, max_steps=4, val_every=2)
        cfg.tokenizer = tokenizer
        pretrain(cfg, root / family)
    return {family: root / family / "checkpoints" / "best.ckpt" for family in FAMILIES}


def adapter(checkpoint: Path, batch_size: int = 32) -> HarnessLM:
    """The harness model from a checkpoint and its corpus's tokenizer, as `lmlab generate` loads them."""
    loaded = load_language_model(checkpoint)
    sp = spm.SentencePieceProcessor(model_file=str(Path(loaded.corpus["folder"]) / TOKENIZER_FILE))
    return HarnessLM(loaded.model, sp, batch_size)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Task YAMLs on local JSON lines (`dataset_path: json`): multiple choice, a last word (LAMBADA's form), whole
    documents (rolling), generation. Their data sets are cached in the folder, not in the user's cache."""
    folder = tmp_path_factory.mktemp("tasks")
    docs = make_docs(12, seed=5)
    words = [doc.split() for doc in docs]
    write_jsonl(
        folder / "choice.jsonl",
        (
            {"context": " ".join(w[:-1]), "choices": [w[-1], "the", "day"][: 2 + i % 2], "label": 0}
            for i, w in enumerate(words)
        ),
    )
    write_jsonl(folder / "lambada.jsonl", ({"text": " ".join(w)} for w in words))
    write_jsonl(folder / "text.jsonl", ({"text": "\n".join(docs[i : i + 4])} for i in range(0, 12, 4)))
    write_jsonl(
        folder / "gen.jsonl", ({"question": " ".join(w[:3]), "answer": w[3] if len(w) > 3 else ""} for w in words[:4])
    )
    common = "dataset_path: json\ntest_split: test\n"
    kinds = {
        "tiny_choice": ("choice", "output_type: multiple_choice\ndoc_to_text: '{{context}}'\n"
                        "doc_to_choice: '{{choices}}'\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n"
                        "  - metric: acc_norm\n"),
        "tiny_lambada": ("lambada", "output_type: loglikelihood\n"
                         "doc_to_text: \"{{text.split(' ')[:-1]|join(' ')}}\"\n"
                         "doc_to_target: \"{{' '+text.split(' ')[-1]}}\"\nmetric_list:\n"
                         "  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
                         "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"),
        "tiny_text": ("text", "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
                      "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n"),
        "tiny_gen": ("gen", "output_type: generate_until\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n"
                     "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 80\n  do_sample: false\n"
                     "metric_list:\n  - metric: exact_match\n"),
    }  # fmt: skip
    for task, (data, body) in kinds.items():
        files = f"dataset_kwargs:\n  data_files:\n    test: {folder / data}.jsonl\n  cache_dir: {folder / 'cache'}\n"
        (folder / f"{task}.yaml").write_text(f"task: {task}\n{common}{files}{body}")
    return folder


def instances(kind: str, arguments: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, args, i) for i, args in enumerate(arguments)]


def whole_logprob(model: LanguageModel, tokens: list[int], scored: int) -> tuple[float, bool]:
    """The last `scored` tokens' log-probability and greedy match, reading the whole sequence from a fresh state."""
    with torch.inference_mode():
        logits, _ = model(torch.tensor([tokens[:-1]]), model.init_state(1))
    logprobs = logits[0, -scored:].float().log_softmax(-1)
    targets = torch.tensor(tokens[-scored:])
    greedy = bool((logprobs.argmax(-1) == targets).all())
    return float(logprobs.gather(-1, targets[:, None]).sum()), greedy


class Text:
    """Token ids as the test split of a corpus: what `lm_loss` reads."""

    def __init__(self, tokens: list[int]) -> None:
        self.ids = np.array(tokens, dtype=np.uint16)

    def tokens(self, split: str) -> np.ndarray:
        return self.ids


def evaluate_nats(model: LanguageModel, tokens: list[int]) -> float:
    """`lmlab evaluate`'s test loss over `tokens` (one window, summed nats): its own function, `lm_loss`."""
    nats, _ = lm_loss(model, Text(tokens), "test", 1, len(tokens) - 1, None, "cpu")
    return float(nats.sum())


@pytest.mark.usefixtures("one_thread")
def test_custom_tasks_run_through_the_harness_for_a_recurrent_family_and_the_transformer(
    checkpoints: dict[str, Path], tasks: Path
) -> None:
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    for family, checkpoint in checkpoints.items():
        lm = adapter(checkpoint, batch_size=4)
        results = simple_evaluate(model=lm, tasks=list(TASKS), task_manager=manager, bootstrap_iters=10)
        figures = results["results"]
        for task, metric in [("tiny_choice", "acc"), ("tiny_choice", "acc_norm"), ("tiny_lambada", "acc")]:
            assert 0 <= figures[task][f"{metric},none"] <= 1 and figures[task][f"{metric}_stderr,none"] >= 0, family
        assert figures["tiny_lambada"]["perplexity,none"] > 1 and figures["tiny_text"]["word_perplexity,none"] > 1
        assert 0 < figures["tiny_text"]["bits_per_byte,none"] < 20 and "exact_match,none" in figures["tiny_gen"]
        assert results["config"]["family"] == family and results["config"]["max_length"] == lm.model.max_positions
        # each multiple-choice answer's log-probability is the model's, read whole
        example = results["samples"]["tiny_choice"][0]
        for (context, continuation), [(logprob, _)] in zip(example["arguments"], example["resps"], strict=True):
            whole = lm.tok_encode(context + continuation)
            expected, _ = whole_logprob(lm.model, whole, len(whole) - len(lm.tok_encode(context)))
            assert logprob == pytest.approx(expected, abs=1e-4)
    # the harness builds it by name too (model="lmlab", model_args="source=..."), through lmlab.load
    built = get_model("lmlab").create_from_arg_string(f"source={checkpoints['gru']}", {"batch_size": 4, "device": None})
    assert isinstance(built, HarnessLM) and built.model.cfg.family == "gru" and built.batch_size == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_loglikelihoods_are_the_log_probabilities_lmlab_evaluate_computes(
    checkpoints: dict[str, Path], family: str
) -> None:
    """For the same text, minus the continuation's log-probability is what `lm_loss` gives for context and
    continuation less what it gives for the context alone."""
    lm = adapter(checkpoints[family])
    pairs = [("the day was", " long"), ("he said that it", " was the way"), ("what", " a thing\nthey had")]
    answers = lm.loglikelihood(instances("loglikelihood", pairs))
    for (context, continuation), (logprob, greedy) in zip(pairs, answers, strict=True):
        whole, head = lm.tok_encode(context + continuation), lm.tok_encode(context)
        assert whole[: len(head)] == head and len(head) > 1
        nats = evaluate_nats(lm.model, whole) - evaluate_nats(lm.model, head)
        assert logprob == pytest.approx(-nats, rel=1e-5, abs=1e-4)
        assert greedy == whole_logprob(lm.model, whole, len(whole) - len(head))[1]


@pytest.mark.parametrize("family", ["gru", "mamba2"])
def test_a_recurrent_context_is_read_once_and_its_state_carried_into_each_continuation(
    checkpoints: dict[str, Path], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five continuations of one context and two of another: each context is read once (a batch of one), and
    every answer equals re-reading its whole sequence from a fresh state."""
    if family == "gru":
        lm = adapter(checkpoints["gru"], batch_size=3)
    else:  # a parallel-scan family: its chunked scan and carried state against the whole sequence
        torch.manual_seed(0)
        model = build_model({"family": "mamba2", "layers": 2, "width": 32}, VOCAB).eval()
        lm = HarnessLM(model, adapter(checkpoints["gru"]).tokenizer, batch_size=3)
    shared = "the day was long and he said that it"
    pairs = [(shared, c) for c in (" was", " is the way", " had", " them\nall", " see")]
    pairs += [("they", " can"), ("they", " write more")]
    reads: list[tuple[int, ...]] = []  # the shape of every batch the model reads (`forward` reads through `encode`)
    encode = lm.model.encode
    monkeypatch.setattr(
        lm.model, "encode", lambda tokens, state: reads.append(tuple(tokens.shape)) or encode(tokens, state)
    )
    answers = lm.loglikelihood(instances("loglikelihood", pairs))
    monkeypatch.undo()
    for (context, continuation), (logprob, greedy) in zip(pairs, answers, strict=True):
        whole = lm.tok_encode(context + continuation)
        expected, expected_greedy = whole_logprob(lm.model, whole, len(whole) - len(lm.tok_encode(context)))
        assert logprob == pytest.approx(expected, abs=1e-4) and greedy == expected_greedy
    # the contexts, a batch of one each; the continuations in batches of 3 and 2 (the shared one's), and of 2
    assert sorted(shape for shape in reads if shape[0] == 1) == sorted(
        [(1, len(lm.tok_encode(shared))), (1, len(lm.tok_encode("they")))]
    )
    assert sorted(shape[0] for shape in reads) == [1, 1, 2, 2, 3]


def test_the_transformer_cuts_a_long_context_from_the_left_and_rolls_over_long_documents(
    checkpoints: dict[str, Path],
) -> None:
    lm = adapter(checkpoints["transformer"], batch_size=2)
    limit = lm.max_length
    assert limit == lm.model.max_positions == 64
    context = " ".join(" ".join(make_docs(6, seed=9)).split())  # ends in a word: no space moves to the continuation
    assert len(lm.tok_encode(context)) > 2 * limit
    pairs = [(context, " the day"), (context, " was"), ("he", " said")]
    for (ctx, cont), (logprob, _) in zip(pairs, lm.loglikelihood(instances("loglikelihood", pairs)), strict=True):
        whole, head = lm.tok_encode(ctx + cont), lm.tok_encode(ctx)
        kept = whole[-(limit + 1) :]  # the latest tokens: the context and continuation fit the model's context
        assert logprob == pytest.approx(whole_logprob(lm.model, kept, len(whole) - len(head))[0], abs=1e-4)
    # a document of several contexts' length: every token predicted once, each window a full context
    document = " ".join(make_docs(8, seed=11))
    tokens = lm.tok_encode(document)
    (total,) = lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(document,)]))
    expected = whole_logprob(lm.model, tokens[: limit + 1], limit)[0]  # the first window, from the document start
    for end in range(
        limit + 1, len(tokens), limit
    ):  # then windows of the latest full context, each scoring what is new
        stop = min(end + limit, len(tokens))
        expected += whole_logprob(lm.model, tokens[stop - limit - 1 : stop], stop - end)[0]
    assert total == pytest.approx(expected, abs=1e-3)
    # a recurrent family reads the whole document in one pass
    gru = adapter(checkpoints["gru"])
    (whole,) = gru.loglikelihood_rolling(instances("loglikelihood_rolling", [(document,)]))
    assert gru.max_length is None
    assert whole == pytest.approx(whole_logprob(gru.model, gru.tok_encode(document), len(tokens) - 1)[0], abs=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_in_a_batch_is_lmlab_generate_s_greedy_continuation(
    checkpoints: dict[str, Path], family: str
) -> None:
    """Contexts of one length continue in step, each as `lmlab generate` continues it alone at temperature 0 (the
    Transformer past its context: the latest half-context read again), cut at the stop sequence."""
    lm = adapter(checkpoints[family])
    by_length: dict[int, list[str]] = {}
    for context in ["the day was", "the way was", "he said it", "they had a", "what a day", "it was the", "they"]:
        by_length.setdefault(len(lm.tok_encode(context)), []).append(context)
    contexts = max(by_length.values(), key=len)[:2] + ["they"]
    assert len(contexts) == 3  # two of one length: one batch
    free = {"until": [], "max_gen_toks": 90, "do_sample": False}  # 90 tokens: past the Transformer's context
    texts = lm.generate_until(instances("generate_until", [(c, free) for c in contexts]))
    for context, text in zip(contexts, texts, strict=True):
        tokens = generate(lm.model, lm.tok_encode(context), 90, temperature=0, stop_id=lm.eot_token_id)
        assert text == lm.tok_decode([t for t in tokens if t != lm.eot_token_id])
    stop = texts[0][5:8]
    cut = lm.generate_until(instances("generate_until", [(c, {**free, "until": [stop]}) for c in contexts]))
    assert cut == [text.split(stop)[0] for text in texts] and len(cut[0]) < len(texts[0])


def test_the_verb_writes_each_task_s_summary_and_the_report_shows_it(
    checkpoints: dict[str, Path], tasks: Path, tmp_path: Path
) -> None:
    """`lmlab harness` on a checkpoint (the GRU's through the CLI, the Transformer's through the job) writes the
    harness's results and a summary in lmlab's names with intervals; the report shows them beside perplexity
    and, the intervals overlapping, calls no family better; without them it is as it was."""
    for family in FAMILIES:
        write_evaluation(tmp_path / f"metrics/{family}.json", tmp_path / "eval" / family, family, 0.7, 0.7)
    report = ReportConfig(
        families=list(FAMILIES),
        params_file=str(tmp_path / "none.yaml"),
        metrics_dir=str(tmp_path / "metrics"),
        samples_dir=str(tmp_path / "eval"),
        out_dir=str(tmp_path / "reports"),
    )
    before = markdown(load(report, SHOWN), harness_figures(report, list(FAMILIES), [""]))  # no harness files yet
    where = [f"metrics_dir={tmp_path / 'metrics'}", f"eval_dir={tmp_path / 'eval'}", f"include_path={tasks}"]
    cli = subprocess.run(
        [sys.executable, "-m", "lmlab", "harness", "family=gru", f"source={checkpoints['gru']}", "threads=1"]
        + ["tasks=[tiny_choice,tiny_lambada]", *where],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0 and "Traceback" not in cli.stderr, cli.stderr[-3000:]  # a perplexity's pool too
    assert "tiny_choice: tiny_choice/acc " in cli.stdout + cli.stderr
    overrides = [f"source={checkpoints['transformer']}", "family=transformer", "tasks=[tiny_choice]", *where]
    cfg = composed("harness", overrides)
    assert isinstance(cfg, HarnessConfig)
    harness(cfg)
    summary = json.loads((tmp_path / "metrics/harness/gru/tiny_choice.json").read_text())
    assert summary["family"] == "gru" and summary["examples"] == {"tiny_choice": 12}
    acc = summary["harness/tiny_choice/acc"]
    low, high = summary["intervals"]["harness/tiny_choice/acc"]
    results = json.loads((tmp_path / "eval/harness/gru/tiny_choice.json").read_text())
    stderr = results["results"]["tiny_choice"]["acc_stderr,none"]
    assert (low, high) == pytest.approx((acc - 1.96 * stderr, acc + 1.96 * stderr), abs=1e-3)
    assert summary["chance"]["harness/tiny_choice/acc"] == pytest.approx((1 / 2 + 1 / 3) / 2)  # 2 or 3 choices
    assert summary["higher_is_better"] == {"harness/tiny_choice/acc": True, "harness/tiny_choice/acc_norm": True}
    lambada = json.loads((tmp_path / "metrics/harness/gru/tiny_lambada.json").read_text())
    assert set(lambada["intervals"]) == {"harness/tiny_lambada/acc", "harness/tiny_lambada/perplexity"}
    assert lambada["chance"] == {} and lambada["higher_is_better"]["harness/tiny_lambada/perplexity"] is False
    assert set(results["results"]) == {"tiny_choice"}  # each task's own results file

    text = write_report(report).read_text()
    section = text[text.index("## lm-evaluation-harness") : text.index("## Does pretraining pay?")]
    assert text.replace(section, "") == before  # without harness files, the report as it was
    header = next(line for line in section.splitlines() if line.startswith("| family"))
    assert (
        header
        == "| family | test ppl | tiny_choice acc | tiny_choice acc_norm | tiny_lambada acc | tiny_lambada perplexity |"
    )
    gru = next(line for line in section.splitlines() if line.startswith("| gru"))
    assert f"{acc:.3f} [{low:.3f}, {high:.3f}]" in gru
    transformer = next(line for line in section.splitlines() if line.startswith("| transformer"))
    assert transformer.endswith("| — | — |")  # no tiny_lambada summary for it
    assert "| chance | — | 0.417 | 0.417 | — | — |" in section
    assert "- **tiny_choice acc**: no verdict: the intervals overlap; no family is above chance (0.417)" in section
    assert "No family is above chance on any multiple-choice figure here" in section
    assert "- **tiny_lambada acc**: one family: nothing to compare" in section


def test_the_report_calls_a_family_better_only_where_the_intervals_are_apart(tmp_path: Path) -> None:
    """Two seeds: each figure's t-interval over them; better (in the task's direction) only where intervals are
    apart, above chance only where the whole interval is; a damaged summary names its DVC stage."""
    figures = {  # family -> (acc, perplexity) at seeds 1 and 2
        "gru": ((0.60, 100.0), (0.61, 101.0)),
        "lstm": ((0.29, 200.0), (0.35, 260.0)),
        "transformer": ((0.10, 300.0), (0.11, 301.0)),
    }
    for family, seeds in figures.items():
        for seed, (acc, ppl) in enumerate(seeds, start=1):
            names = {"acc": "harness/lambada/acc", "ppl": "harness/lambada/perplexity"}
            summary = {
                "family": family,
                "task": "lambada",
                names["acc"]: acc,
                names["ppl"]: ppl,
                "intervals": {names["acc"]: [acc - 0.01, acc + 0.01]},
                "chance": {names["acc"]: 0.25},
                "higher_is_better": {names["acc"]: True, names["ppl"]: False},
                "examples": {"lambada": 500},
            }
            path = tmp_path / f"metrics/seed{seed}/harness/{family}/lambada.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(summary))
    report = ReportConfig(families=list(figures), seeds=[1, 2], metrics_dir=str(tmp_path / "metrics"))
    found = harness_figures(report, list(figures), ["seed1", "seed2"])
    gru = found.figures["harness/lambada/acc"]["gru"]
    assert gru.estimate == pytest.approx(0.605) and gru.how == "t-interval over 2 seeds"
    lines = section(found, {family: Interval(300.0, 290.0, 310.0, "") for family in figures})
    acc = next(line for line in lines if line.startswith("- **lambada acc**"))
    assert acc == (
        "- **lambada acc**: gru better than transformer (intervals apart); no verdict between the others (their "
        "intervals overlap); no better than chance (0.250): lstm, transformer"
    )
    ppl = next(line for line in lines if line.startswith("- **lambada perplexity**"))
    assert ppl.startswith("- **lambada perplexity**: gru better than transformer (intervals apart)")
    assert not any("No family is above chance" in line for line in lines)
    (tmp_path / "metrics/seed2/harness/lstm/lambada.json").write_text("{}")
    with pytest.raises(LmlabError, match=r"lambada.json has no key 'family': run `dvc repro harness@lstm-2-lambada`"):
        harness_figures(report, list(figures), ["seed1", "seed2"])


def test_errors_name_the_key_and_what_it_accepts(
    checkpoints: dict[str, Path], tasks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing source, an unknown task, a family the source does not hold, a task whose data set is on the Hub
    while offline: each one line naming the key (the CLI prints it and exits 2)."""
    where = [f"metrics_dir={tmp_path / 'metrics'}", f"eval_dir={tmp_path / 'eval'}"]
    missing = composed("harness", [f"source={tmp_path / 'runs/gru'}", "family=gru", "tasks=[tiny_choice]", *where])
    with pytest.raises(LmlabError, match=r"^source=.*runs/gru: no export folder, run folder or checkpoint at"):
        harness(missing)
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    with pytest.raises(LmlabError, match=r"tasks=\['tiny_choice', 'tiny_chioce'\]: tiny_chioce is not a task, group"):
        check_tasks(["tiny_choice", "tiny_chioce"], manager.all_tasks, str(tasks))
    wrong = composed("harness", [f"source={checkpoints['gru']}", "family=lstm", "tasks=[tiny_choice]", *where])
    with pytest.raises(LmlabError, match=r"family=lstm, but source=.* holds a gru: give family=gru"):
        harness(wrong)
    (tmp_path / "hub_task.yaml").write_text(
        "task: hub_task\ndataset_path: lmlab-tests/absent\noutput_type: loglikelihood\ntest_split: test\n"
        "doc_to_text: '{{a}}'\ndoc_to_target: '{{b}}'\n"
    )
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # what HF_DATASETS_OFFLINE=1 sets
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    offline = composed("harness", [f"source={checkpoints['gru']}", "family=gru", "tasks=[hub_task]", *where])
    offline.include_path = str(tmp_path)
    with pytest.raises(LmlabError, match=r"^tasks: hub_task needs its data set from the Hugging Face Hub, which could"):
        harness(offline)
