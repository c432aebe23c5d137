"""`lmlab export`, `lmlab.load` and the Hub: a pretraining run as a self-contained folder that loads back with the
checkpoint's logits for every family, refuses what does not fit, feeds `lmlab generate`, and goes to a Hub (a
local stand-in, `tests.helpers.servers.HubServer`) and back by repo id.

One module fixture trains every family for two steps on a tiny corpus with a real sentencepiece tokenizer, in
the main pipeline's run layout (data/runs/seed1337/pretrain/<family>), with a made-up evaluation of the GRU
where `lmlab evaluate` writes one (metrics/seed1337/gru.json, data/eval/seed1337/gru/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from importlib.util import find_spec
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
import yaml
from safetensors.torch import load_file, save_file

import lmlab
from lmlab.cli.export import main as export_main
from lmlab.cli.generate import job as generate_job
from lmlab.cli.verbs import installed
from lmlab.core.errors import LmlabError
from lmlab.hub.folder import FILES, FORMAT_VERSION
from lmlab.jobs.config import GenerateConfig
from lmlab.jobs.generate import stream_text
from lmlab.jobs.pretrain import pretrain
from lmlab.models import FAMILIES, LanguageModel
from lmlab.training.checkpoints import load_language_model
from tests.helpers.corpora import make_docs
from tests.helpers.evaluations import write_evaluation
from tests.helpers.project import env
from tests.helpers.servers import HubServer
from tests.helpers.tiny_lm import tiny_config, write_corpus

VOCAB = 64
BEST = Path("checkpoints/best.ckpt")
TOKEN = "hf_lmlab_test_token_8c1f"  # the stand-in Hub's one user's


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each family's pretraining run folder (two steps; the rnn with an untied output layer)."""
    root = tmp_path_factory.mktemp("hub")
    data = root / "data"
    corpus = write_corpus(data, vocab_size=VOCAB, tokens={"train": 2_000, "val": 400, "test": 400})
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_docs(60, seed=1)),
        model_prefix=str(corpus / "tokenizer"),
        vocab_size=VOCAB,
        minloglevel=2,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folders = {}
    try:
        for family in FAMILIES:
            cfg = tiny_config(data, family, max_steps=2, val_every=2)
            if family == "rnn":
                cfg.model = replace(cfg.model, tie_weights=False)
            folders[family] = data / "runs" / "seed1337" / "pretrain" / family
            pretrain(cfg, folders[family])
    finally:
        torch.set_num_threads(threads)
    write_evaluation(root / "metrics/seed1337/gru.json", data / "eval/seed1337/gru", "gru", 0.72, 0.66)
    return folders


@pytest.fixture(scope="module")
def exported(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GRU's export, made once; tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("exported") / "gru"
    assert export_main([str(runs["gru"]), str(out)]) == 0
    return out


def logits(model: LanguageModel) -> torch.Tensor:
    """Logits of two chunks of a fixed batch, the second from the state the first left (a KV cache, a recurrent
    state): what generation and evaluation compute."""
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first, state = model(tokens[:, :7], None)
        second, _ = model(tokens[:, 7:], state)
    return torch.cat([first, second], dim=1)


def copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_an_export_loads_back_with_the_checkpoints_logits(runs: dict[str, Path], family: str, tmp_path: Path) -> None:
    out = tmp_path / family
    assert export_main([str(runs[family]), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    saved = load_language_model(runs[family] / BEST).model.eval()
    loaded = lmlab.load(out)
    assert not loaded.model.training and type(loaded.model) is type(saved)
    assert torch.equal(logits(loaded.model), logits(saved))
    assert loaded.model.num_params == saved.num_params  # a tied output layer stays tied (the rnn's is untied)
    assert (loaded.model.head.weight is loaded.model.embedding.weight) == (family != "rnn")
    assert loaded.config["family"] == family and loaded.config["format_version"] == FORMAT_VERSION
    assert loaded.config["model"] == asdict(saved.cfg)
    assert loaded.config["vocab_size"] == VOCAB and loaded.config["corpus"] == {"name": "sotu", "tokenizer": "bpe8000"}
    assert loaded.config["training"]["steps"] == 2  # and what the run's val curve recorded at that step:
    assert loaded.config["training"]["tokens"] > 0 and loaded.config["training"]["flops"] > 0
    corpus_tokenizer = spm.SentencePieceProcessor(
        model_file=str(runs[family].parents[3] / "tokenized/sotu-bpe8000/tokenizer.model")
    )
    assert loaded.tokenizer.encode("the day was hot") == corpus_tokenizer.encode("the day was hot")
    from_checkpoint = lmlab.load(runs[family])  # a run folder loads too, with the same record
    assert from_checkpoint.config == loaded.config and torch.equal(logits(from_checkpoint.model), logits(saved))


def test_the_card_names_the_model_its_budget_and_the_runs_test_figures(runs: dict[str, Path], exported: Path) -> None:
    card = (exported / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "lmlab" and "gru" in front["tags"]
    model = lmlab.load(exported).model
    params, embedding = model.num_params, model.num_embedding_params
    assert f"| Parameters | {params:,} ({params - embedding:,} non-embedding" in card
    assert "`layers=2`" in card and "`width=32`" in card
    assert "corpus `sotu`, tokenizer `bpe8000` (64 pieces" in card
    assert "| Training | 2 steps, " in card and " tokens, " in card and " FLOPs" in card
    assert "| Trained by | `dvc repro pretrain@gru-1337` |" in card
    # the figures of the made-up evaluation, with the intervals the report computes from its per-example record
    assert "metrics/seed1337/gru.json" in card
    for row in ("Test loss (nats per token)", "Test perplexity", "Test bits per byte", "majority class"):
        assert row in card
    assert "| Accuracy, the classifier fine-tuned from this model | 0.720 [0." in card
    assert "| Accuracy, the same classifier trained from scratch | 0.660 [0." in card


def test_the_card_says_where_no_evaluation_was_found(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export_main([str(runs["lstm"]), str(tmp_path / "lstm")]) == 0
    card = (tmp_path / "lstm/README.md").read_text()
    assert "No evaluation of this run was found" in card and "`dvc repro evaluate@lstm-1337`" in card
    elsewhere = tmp_path / "lstm.ckpt"  # a checkpoint away from its run folder: no pipeline, no val curve
    shutil.copy(runs["lstm"] / BEST, elsewhere)
    assert export_main([str(elsewhere), str(tmp_path / "bare")]) == 0
    card = (tmp_path / "bare/README.md").read_text()
    assert "not a pipeline run's" in card and "| Trained by | `lmlab pretrain` |" in card
    assert "| Training | 2 steps (tokens and FLOPs: the run's val curve was not found) |" in card
    assert json.loads((tmp_path / "bare/config.json").read_text())["training"] == {"steps": 2}
    # --evaluation: the figures of an `lmlab evaluate` the pipelines' layout does not find
    root = runs["gru"].parents[4]
    given = [str(root / "metrics/seed1337/gru.json"), str(root / "data/eval/seed1337/gru")]
    assert export_main([str(elsewhere), str(tmp_path / "given"), "--evaluation", *given]) == 0
    card = (tmp_path / "given/README.md").read_text()
    assert "| Accuracy, the classifier fine-tuned from this model | 0.720 [0." in card
    missing = tmp_path / "none.json"
    assert export_main([str(elsewhere), str(tmp_path / "x"), "--evaluation", str(missing), given[1]]) == 2
    assert f"no {missing}: run `lmlab evaluate`" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_folder_of_another_version_is_refused_naming_the_file_and_its_keys(exported: Path, tmp_path: Path) -> None:
    folder = copy(exported, tmp_path)
    path = folder / "config.json"
    original = json.loads(path.read_text())

    def refused(config: dict, match: str) -> None:
        path.write_text(json.dumps(config))
        with pytest.raises(LmlabError, match=match):
            lmlab.load(folder)

    model_keys = {**original["model"], "rope_theta": 10000.0, "sliding_window": 8}
    refused({**original, "model": model_keys}, rf"{path}: model.rope_theta is not a key .*nor are model.sliding_window")
    refused({**original, "quantization": "int8"}, rf"{path} has .* keys this lmlab does not know \(quantization\)")
    refused({**original, "format_version": FORMAT_VERSION + 1}, rf"{path} has format_version {FORMAT_VERSION + 1}")
    refused({**original, "vocab_size": "64"}, rf"{path}: 'vocab_size' is '64', not an integer")
    path.write_text(json.dumps(original))
    assert torch.equal(logits(lmlab.load(folder).model), logits(lmlab.load(exported).model))


def test_weights_that_do_not_fit_the_config_are_refused_before_loading(exported: Path, tmp_path: Path) -> None:
    folder = copy(exported, tmp_path)
    weights = folder / "model.safetensors"
    tensors = load_file(weights)

    def refused(changed: dict[str, torch.Tensor], match: str) -> None:
        save_file(changed, weights)
        with pytest.raises(LmlabError, match=match):
            lmlab.load(folder)

    wide = {**tensors, "embedding.weight": torch.zeros(VOCAB, 33)}
    refused(wide, rf"{weights}: tensor 'embedding.weight' is F32 of shape \[64, 33\], but the gru model .* \[64, 32\]")
    half = {**tensors, "embedding.weight": tensors["embedding.weight"].half()}
    refused(half, r"tensor 'embedding.weight' is F16 of shape \[64, 32\], but .* needs F32")
    refused({k: v for k, v in tensors.items() if k != "embedding.weight"}, "missing embedding.weight")
    refused({**tensors, "head.bias": torch.zeros(VOCAB)}, r"not the model's: head.bias")
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(LmlabError, match=rf"{weights} is not a readable safetensors file"):
        lmlab.load(folder)
    weights.unlink()
    with pytest.raises(LmlabError, match=rf"no model.safetensors in {folder}"):
        lmlab.load(folder)
    shutil.copy(exported / "model.safetensors", weights)
    other = tmp_path / "other"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_docs(60, seed=2)), model_prefix=str(other), vocab_size=70, minloglevel=2
    )
    shutil.copy(other.with_suffix(".model"), folder / "tokenizer.model")
    with pytest.raises(LmlabError, match=r"tokenizer.model has 70 pieces but .*config.json says vocab_size 64"):
        lmlab.load(folder)


def test_an_export_is_whole_or_absent_and_replaces_only_an_export(
    runs: dict[str, Path], exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = torch.load(runs["gru"] / BEST, weights_only=True)
    saved["lmlab"]["corpus"]["folder"] = str(tmp_path / "gone")  # its tokenizer cannot be found
    moved = tmp_path / "moved.ckpt"
    torch.save(saved, moved)
    out = tmp_path / "out"
    assert export_main([str(moved), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmlab export: error: ") and err.count("\n") == 1 and "has no tokenizer.model here" in err
    assert list(tmp_path.iterdir()) == [moved]  # no folder, no staging folder
    # an existing export stays as it was when a new one fails, and is replaced whole when one succeeds
    previous = copy(exported, tmp_path)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    assert export_main([str(moved), str(previous)]) == 2
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert export_main([str(runs["lstm"]), str(previous)]) == 0
    assert lmlab.load(previous).config["family"] == "lstm"
    # any other folder is refused, untouched
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    assert export_main([str(runs["lstm"]), str(other)]) == 2
    assert "notes exists and is not an lmlab export" in capsys.readouterr().err
    assert (other / "todo.txt").read_text() == "keep me"
    for missing, message in ((tmp_path / "nothing", "no checkpoint at"), (tmp_path, "a folder without checkpoints/")):
        assert export_main([str(missing), str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main([str(runs["lstm"]), str(tmp_path / "x"), "--private"])  # --private without --push-to-hub
    with pytest.raises(LmlabError, match="no export folder, run folder or checkpoint at"):
        lmlab.load(tmp_path / "nothing")


def test_generate_reads_an_export_folder_as_it_reads_the_checkpoint(
    runs: dict[str, Path], exported: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    """`lmlab generate checkpoint=<export folder>`: the verb's job (what the CLI runs once Hydra has read the
    overrides) samples what the checkpoint samples."""
    checkpoint = runs["gru"] / BEST
    cfg = GenerateConfig(checkpoint=str(exported), prompt="the day", max_new_tokens=12, temperature=0.9, seed=3)
    sampled = "".join(stream_text(cfg, exported))
    assert sampled == "".join(stream_text(cfg, checkpoint)) and sampled.startswith("the day")
    capsys.readouterr()
    generate_job()(replace(cfg, prompt=""), "the day")
    assert capsys.readouterr().out == sampled + "\n"


PUSH_AND_LOAD = """
import sys

import torch
from safetensors.torch import save_file

import lmlab
from lmlab.cli.export import main
from lmlab.core.errors import LmlabError

run, out, repo, logits_file = sys.argv[1:]
if main([run, out, "--push-to-hub", repo, "--private"]) != 0:
    sys.exit(1)
torch.set_num_threads(1)  # as the test's own process: the same kernels, the same floats
tokens = torch.randint(0, {vocab}, (2, 12), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    first, state = lmlab.load(repo).model(tokens[:, :7], None)
    second, _ = lmlab.load(repo, revision="main").model(tokens[:, 7:], state)
save_file({{"logits": torch.cat([first, second], dim=1)}}, logits_file)
for source, revision in ((repo, "v9"), ("lmlab-tests/missing", None)):
    try:
        lmlab.load(source, revision=revision)
    except LmlabError as err:
        print(err)
"""


def test_push_to_a_hub_and_load_by_repo_id(runs: dict[str, Path], tmp_path: Path, one_thread: None) -> None:
    """`lmlab export --push-to-hub` into a private repo of a local stand-in for the Hub, then `lmlab.load(repo
    id)` with a cache of its own: the checkpoint's logits. In a child process: huggingface_hub reads HF_ENDPOINT,
    HF_TOKEN and HF_HOME when it is imported."""
    repo = "lmlab-tests/tiny-transformer"
    out, logits_file = tmp_path / "transformer", tmp_path / "logits.safetensors"
    assert installed("lmlab.tools")["export"] == "lmlab.cli.export"  # `lmlab export` runs this main
    with HubServer(token=TOKEN) as hub:
        hub_env = {**env(), "HF_ENDPOINT": hub.base_url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf")}
        hub_env.pop("HF_HUB_OFFLINE", None)
        child = subprocess.run(
            [sys.executable, "-c", PUSH_AND_LOAD.format(vocab=VOCAB), str(runs["transformer"]), str(out), repo]
            + [str(logits_file)],
            cwd=tmp_path,
            env=hub_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert child.returncode == 0, child.stderr[-3000:]
        assert f"pushed {out} to {hub.base_url}/{repo}" in child.stdout
        assert hub.repos[repo].private
        assert hub.files(repo) == {p.name: p.read_bytes() for p in out.iterdir()}
        writes = [r for r in hub.requests if r.method == "POST"]
        assert writes and all(r.header("authorization") == f"Bearer {TOKEN}" for r in writes)
    assert f'lmlab.load("{repo}")' in (out / "README.md").read_text()
    expected = logits(load_language_model(runs["transformer"] / BEST).model.eval())
    assert torch.equal(load_file(logits_file)["logits"], expected)
    assert f"the model repo {repo} on {hub.base_url} has no revision 'v9'" in child.stdout
    assert f"the Hub at {hub.base_url} has no model repo lmlab-tests/missing" in child.stdout
    assert (tmp_path / "hf/hub/models--lmlab-tests--tiny-transformer").is_dir()  # huggingface_hub's cache
    assert TOKEN not in child.stdout + child.stderr


# The folder `make test` installs transformers into, apart from the suite's environment (installed there,
# torchmetrics would import it in every Lightning process: docs/hub.md).
TRANSFORMERS = os.environ.get("LMLAB_TRANSFORMERS_PATH")
HF_READ = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, tokens, texts, requests = sys.argv[1], *(json.loads(arg) for arg in sys.argv[2:])
read = {}
if tokens:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        read |= {"class": type(model).__name__, "logits": model(torch.tensor(tokens)).logits.tolist()}
if texts:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    read["ids"] = [tokenizer.encode(text, add_special_tokens=False) for text in texts]
    read["decoded"] = [tokenizer.decode(ids) for ids in read["ids"]]
if requests:  # lm-evaluation-harness's own model for transformers
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    lm = HFLM(pretrained=folder, device="cpu", batch_size=2)
    asked = [Instance("loglikelihood", {}, tuple(pair), i) for i, pair in enumerate(requests)]
    read["loglikelihood"] = [logprob for logprob, _ in lm.loglikelihood(asked)]
print(json.dumps(read))
"""


def read_with_transformers(
    folder: Path, tokens: torch.Tensor, texts: list[str], requests: list[tuple[str, str]] | None = None
) -> dict:
    """What `transformers` (in its own folder, or the suite's environment) reads from an export: the logits of
    `tokens`, the ids of `texts`, and lm-evaluation-harness's `hf` model's loglikelihood of (context,
    continuation) `requests`."""
    if TRANSFORMERS is None and find_spec("transformers") is None:
        pytest.skip("transformers is not installed: `make test` installs it apart (LMLAB_TRANSFORMERS_PATH)")
    run_env = env() | {"USE_HUB_KERNELS": "NO"}  # transformers 5 would fetch kernels from the Hub (or want `kernels`)
    if TRANSFORMERS is not None:
        run_env["PYTHONPATH"] = os.pathsep.join(filter(None, [TRANSFORMERS, run_env.get("PYTHONPATH")]))
    args = [sys.executable, "-c", HF_READ, str(folder), *map(json.dumps, (tokens.tolist(), texts, requests or []))]
    result = subprocess.run(args, env=run_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_transformer_exports_as_gpt_neox_that_transformers_loads_with_the_same_logits(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "neox"
    assert export_main([str(runs["transformer"]), str(out), "--format", "transformers"]) == 0
    # the fixture's tokenizer is a unigram one: no transformers tokenizer files, and the card says to use sentencepiece
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer.model"]
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt_neox"
    card = (out / "README.md").read_text()
    assert "AutoModelForCausalLM.from_pretrained" in card and "sentencepiece.SentencePieceProcessor" in card
    saved = load_language_model(runs["transformer"] / BEST).model.eval()
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    read = read_with_transformers(out, tokens, [])
    assert read["class"] == "GPTNeoXForCausalLM"
    with torch.no_grad():
        ours, _ = saved(tokens, None)
    assert torch.allclose(torch.tensor(read["logits"]), ours, atol=1e-5, rtol=0), "transformers' logits differ"
    with pytest.raises(LmlabError, match="is a transformers model \\(gpt_neox\\), not an lmlab export"):
        lmlab.load(out)


def test_a_bpe_tokenizer_reads_the_same_ids_in_transformers_and_the_harness_hf_model_lmlabs_loglikelihoods(
    tmp_path: Path,
) -> None:
    """lmlab's default tokenizer (BPE, byte fallback, lossless, lmlab's special ids) as transformers'
    LlamaTokenizer, and a Transformer exported with it read by lm-eval's own `hf` model."""
    from lmlab.data.corpus import SPECIAL_IDS
    from lmlab.hub import neox
    from lmlab.models import build_model, family_config

    prefix = tmp_path / "tokenizer"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_docs(60, seed=1)),
        model_prefix=str(prefix),
        vocab_size=300,
        model_type="bpe",
        byte_fallback=True,
        unk_id=SPECIAL_IDS["unk"],
        bos_id=SPECIAL_IDS["bos"],
        eos_id=SPECIAL_IDS["eod"],
        pad_id=SPECIAL_IDS["pad"],
        normalization_rule_name="identity",  # lmlab.data.tokenize's: lossless
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        minloglevel=2,
    )
    tokenizer = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    assert neox.has_transformers_tokenizer(tokenizer)
    torch.manual_seed(0)
    config = {"family": "transformer", "layers": 2, "width": 32, "heads": 4, "context": 64, "bias": True}
    model = build_model(family_config(config), tokenizer.get_piece_size()).eval()
    folder = tmp_path / "folder"
    folder.mkdir()
    neox.write(folder, model, tokenizer)
    texts = ["the day was hot", "  two  spaces\nand a line", "Ünïcödé: bytes"]
    requests = [("the day was", " hot"), ("  two  spaces", "\nand a line")]
    read = read_with_transformers(folder, torch.zeros(0), texts, requests)
    assert read["ids"] == [tokenizer.encode(text) for text in texts]
    assert read["decoded"] == texts
    ours = []
    for context, continuation in requests:
        ids, start = tokenizer.encode(context + continuation), len(tokenizer.encode(context))
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids]), None)[0][0], dim=-1)
        ours.append(sum(logprobs[k - 1, ids[k]].item() for k in range(start, len(ids))))
    assert read["loglikelihood"] == pytest.approx(ours, abs=1e-4)
    # pushed whole: the tokenizer's transformers files go with lmlab's
    (folder / "README.md").write_text("card")
    with HubServer(token=TOKEN) as hub:
        hub_env = {**env(), "HF_ENDPOINT": hub.base_url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf")}
        hub_env.pop("HF_HUB_OFFLINE", None)
        push = "import sys, pathlib, lmlab.hub.remote as r; r.push(pathlib.Path(sys.argv[1]), sys.argv[2])"
        child = subprocess.run(
            [sys.executable, "-c", push, str(folder), "lmlab-tests/neox"], env=hub_env, capture_output=True, text=True
        )
        assert child.returncode == 0, child.stderr[-3000:]
        assert hub.files("lmlab-tests/neox") == {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_family_without_a_transformers_class_is_refused_and_nothing_written(
    runs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    assert export_main([str(runs["gru"]), str(tmp_path / "gru"), "--format", "transformers"]) == 2
    assert "the gru family has no `transformers` model class" in capsys.readouterr().err
    assert not (tmp_path / "gru").exists()
