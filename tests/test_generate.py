"""Generation: carried state and KV cache give what re-running the whole prefix gives; sampling options."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from lmlab.cli.generate import positional_prompt
from lmlab.core.errors import LmlabError
from lmlab.data.config import TokenizerConfig
from lmlab.data.split import split_dataset
from lmlab.data.tokenize import tokenize
from lmlab.jobs.config import GenerateConfig
from lmlab.jobs.generate import DOCUMENT_BREAK, decoded, encode_prompt, generate, sample, stream_text
from lmlab.jobs.pretrain import pretrain
from lmlab.models import build_model
from tests.helpers.corpora import make_docs, own_splits_corpus, paths_for
from tests.helpers.project import ROOT, env
from tests.helpers.tiny_lm import tiny_config

VOCAB = 50


def model(family: str, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"heads": 4, "context": 24} if family == "transformer" else {}
    return build_model({"family": family, "layers": 2, "width": 32, **extra, **overrides}, VOCAB).eval()


def by_rerunning(net: torch.nn.Module, prompt: list[int], steps: int) -> list[int]:
    """Greedy generation the slow way: the whole sequence (or the transformer's latest window) each step."""
    tokens = list(prompt)
    limit = net.max_positions
    for _ in range(steps):
        window = tokens
        if limit and len(tokens) > limit:
            window = tokens[-(limit // 2) :]  # where generate() restarts its cache
        logits, _ = net(torch.tensor([window]), None)
        tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :]


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_kv_cache_logits_equal_a_full_pass(positions: str) -> None:
    net = model("transformer", positions=positions)
    tokens = torch.randint(0, VOCAB, (2, 20))
    full, _ = net(tokens, None)
    cache = net.init_state(2)
    first, cache = net(tokens[:, :7], cache)  # a prefill, then a chunk of several tokens, then one by one
    second, cache = net(tokens[:, 7:12], cache)
    rest = []
    for i in range(12, 20):
        logits, cache = net(tokens[:, i : i + 1], cache)
        rest.append(logits)
    stepwise = torch.cat([first, second, *rest], dim=1)
    torch.testing.assert_close(stepwise, full, rtol=1e-5, atol=1e-5)
    assert all(k.shape == v.shape == (2, 4, 20, 8) for k, v in cache)  # per layer: [B, heads, T, head_dim]


def test_transformer_generates_past_its_context_by_restarting_the_cache() -> None:
    net = model("transformer")
    out = list(generate(net, [1, 2, 3], max_new_tokens=60, temperature=0))
    assert len(out) == 60 and out == by_rerunning(net, [1, 2, 3], 60)
    with pytest.raises(LmlabError, match="model.context=24"):
        net(torch.zeros(1, 25, dtype=torch.long), None)


def test_sampling_is_seeded_and_respects_top_k_and_top_p() -> None:
    net = model("lstm")
    runs = [list(generate(net, [5], 30, temperature=1.0, seed=s)) for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]]).repeat(200, 1)
    assert set(sample(logits, top_k=2, generator=torch.Generator().manual_seed(0)).tolist()) == {3, 4}
    # probabilities 0.64, 0.24, 0.09, ...: top_p=0.7 keeps the two most likely
    assert set(sample(logits, top_p=0.7, generator=torch.Generator().manual_seed(0)).tolist()) == {3, 4}
    assert set(sample(logits, top_p=0.5, generator=torch.Generator().manual_seed(0)).tolist()) == {4}
    assert sample(logits[:1], temperature=0).item() == 4


def test_generation_stops_at_the_stop_id_and_checks_its_arguments() -> None:
    net = model("gru")
    first = next(generate(net, [1, 2], 1, temperature=0))
    assert list(generate(net, [1, 2], 10, temperature=0, stop_id=first)) == [first]
    with pytest.raises(LmlabError, match="prompt is empty"):
        list(generate(net, [], 5))
    with pytest.raises(LmlabError, match="temperature"):
        sample(torch.zeros(1, 5), temperature=-1)


# ----- from a checkpoint, with the real tokenizer -----


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A checkpoint of a tiny GRU trained on a tiny corpus tokenized by the real tokenize stage."""
    root = tmp_path_factory.mktemp("gen")
    paths = paths_for(root)
    data = own_splits_corpus(
        paths, "sotu", {"train": make_docs(80, seed=1), "val": make_docs(10, seed=2), "test": make_docs(10, seed=3)}
    )
    split_dataset(data, paths)
    tokenizer = TokenizerConfig(type="bpe", vocab_size=320, byte_fallback=True, num_threads=1)
    tokenize(data, None, tokenizer, paths)
    cfg = tiny_config(Path(paths.data_dir), "gru", max_steps=10, val_every=5)
    cfg.tokenizer = tokenizer
    pretrain(cfg, root / "run")
    return root / "run/checkpoints/last.ckpt", paths.tokenized("sotu", tokenizer)


def test_stream_text_continues_the_prompt_with_decodable_text(trained: tuple[Path, Path]) -> None:
    checkpoint, _ = trained
    cfg = GenerateConfig(checkpoint=str(checkpoint), prompt="the day 🙂", max_new_tokens=30, temperature=0.9, seed=3)
    pieces = list(stream_text(cfg, checkpoint))
    assert pieces[0] == "the day 🙂" and len(pieces) > 1
    assert "".join(pieces) == "".join(stream_text(cfg, checkpoint))  # seeded


def test_streamed_pieces_join_to_the_decoding_of_all_the_tokens(trained: tuple[Path, Path]) -> None:
    """Each token is decoded once (no re-decoding of the whole continuation per token), a character split over
    byte-fallback tokens shows whole, and the pieces join to what decoding all the tokens at once gives."""
    _, corpus = trained
    sp = spm.SentencePieceProcessor(model_file=str(corpus / "tokenizer.model"))
    text = "the day 🙂 and ç, then é"
    tokens = sp.encode(text)
    assert any(sp.id_to_piece(t).startswith("<0x") for t in tokens)  # byte fallback: the emoji is several tokens
    pieces = list(decoded(sp, tokens, stop_at_document_end=True))
    assert "".join(pieces) == sp.decode(tokens) == text and all("\ufffd" not in p for p in pieces)
    eos = sp.eos_id()
    assert "".join(decoded(sp, [*tokens[:3], eos, *tokens[3:]], stop_at_document_end=True)) == sp.decode(tokens[:3])
    going_on = "".join(decoded(sp, [*tokens[:3], eos, *tokens[3:]], stop_at_document_end=False))
    assert going_on == sp.decode(tokens[:3]) + DOCUMENT_BREAK + sp.decode(tokens[3:])


def test_generation_goes_past_the_end_of_a_document_when_asked(trained: tuple[Path, Path]) -> None:
    """stop_at_document_end=false: the same seeded sample, not cut at its first end-of-document token."""
    checkpoint, _ = trained
    for seed in range(20):  # a seed whose sample ends a document within its 100 tokens
        base = GenerateConfig(checkpoint=str(checkpoint), prompt="the", max_new_tokens=100, temperature=1.0, seed=seed)
        stopped = "".join(stream_text(base, checkpoint))
        going_on = "".join(stream_text(replace(base, stop_at_document_end=False), checkpoint))
        assert going_on.startswith(stopped)
        if len(going_on) > len(stopped):
            assert going_on[len(stopped) :].startswith(DOCUMENT_BREAK)
            return
    raise AssertionError("no sample of 20 seeds ended a document: the model never samples the end of one")


def test_ctrl_c_ends_generate_quietly_with_130(trained: tuple[Path, Path]) -> None:
    checkpoint, _ = trained
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmlab",
            "generate",
            f"checkpoint={checkpoint}",
            "max_new_tokens=1000000000",  # never done before the signal
            "stop_at_document_end=false",
        ],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a shell: a suite's worker may have come to ignore SIGINT (a child inherits that, and Python then
        # leaves it ignored: the generation ran on for a minute)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout.read(1)  # it streams
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "lmlab generate: interrupted" in err, err[-2000:]


def test_a_tokenizer_that_changed_since_training_is_a_clear_error(trained: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, folder = trained
    saved = torch.load(checkpoint, weights_only=True)
    other = tmp_path / "other"
    other.mkdir()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_docs(80, seed=1)), model_prefix=str(other / "tokenizer"), vocab_size=90
    )
    saved["lmlab"]["corpus"]["folder"] = str(other)
    moved = tmp_path / "moved.ckpt"
    torch.save(saved, moved)
    with pytest.raises(LmlabError, match="90 pieces but .* 320"):
        list(stream_text(GenerateConfig(checkpoint=str(moved)), moved))


def test_a_missing_checkpoint_names_the_stage_to_run(tmp_path: Path) -> None:
    missing = tmp_path / "data/runs/seed1337/pretrain/gru/checkpoints/best.ckpt"
    with pytest.raises(LmlabError, match=r"\(`dvc repro pretrain@gru-1337`\)"):
        list(stream_text(GenerateConfig(checkpoint=str(missing)), missing))


def test_unrepresentable_prompt_characters_are_named_without_byte_fallback(trained: tuple[Path, Path]) -> None:
    _, folder = trained
    other = folder.parent / "nofallback"
    other.mkdir(exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_docs(80, seed=1)), model_prefix=str(other / "tokenizer"), vocab_size=80
    )
    sp = spm.SentencePieceProcessor(model_file=str(other / "tokenizer.model"))
    with pytest.raises(LmlabError, match="Ж"):
        encode_prompt(sp, "the Жук")


def test_the_cli_takes_the_prompt_as_an_argument_or_from_stdin(trained: tuple[Path, Path]) -> None:
    """A prompt with commas and quotes needs no Hydra quoting: positional, or `-` for stdin; both give what
    `stream_text` gives (greedy, so one answer), on the one thread that suits one-sequence decoding."""
    checkpoint, _ = trained
    prompt = 'the day, he said "no", and'
    overrides = [f"checkpoint={checkpoint}", "max_new_tokens=8", "temperature=0"]
    cases = {
        "positional": ([prompt, *overrides], None),
        "stdin": (["-", *overrides], prompt + "\n"),
        "twice": ([prompt, *overrides, "prompt=x"], None),
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "lmlab", "generate", *args],
            cwd=ROOT,
            env=env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in cases.items()
    }
    out = {name: proc.communicate(cases[name][1], timeout=300) + (proc.returncode,) for name, proc in procs.items()}
    expected = "".join(
        stream_text(
            GenerateConfig(checkpoint=str(checkpoint), prompt=prompt, max_new_tokens=8, temperature=0), checkpoint
        )
    )
    for name in ("positional", "stdin"):
        stdout, stderr, code = out[name]
        assert code == 0, stderr[-2000:]
        assert stdout == expected + "\n", name
    stdout, stderr, code = out["twice"]
    assert code == 2 and "the prompt is given twice" in stderr
    assert GenerateConfig().threads == 1


def test_hydra_flags_and_their_values_are_not_the_prompt() -> None:
    assert positional_prompt(["--cfg", "job", "family=gru"]) == (["--cfg", "job", "family=gru"], None)
    assert positional_prompt(["Fellow citizens, I", "-cn", "generate"]) == (["-cn", "generate"], "Fellow citizens, I")
    assert positional_prompt(["a", "b", "top_k=4"]) == (["top_k=4"], "a b")
