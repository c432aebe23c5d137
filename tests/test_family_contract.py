"""The contract every model family in `lmlab.models.FAMILIES` keeps; a family gets all of it by being in the table.

Shapes and batch-first states, causality, carrying state (step by step and in TBPTT halves equals one pass),
the state through a checkpoint and a DDP gather, greedy generation equal to re-running the prefix, learning,
dropout, tied weights, layer groups, its config file, a parameter count matched to the other families', and a
count of forward FLOPs per token that agrees with torch's FLOP counter.
Family-specific behaviour (rotary tables, forget-gate bias, ...) is tested in test_models.py.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
import yaml
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

from lmlab.cli.schemas import register_configs, typed
from lmlab.core.errors import LmlabError
from lmlab.jobs.generate import generate
from lmlab.models import FAMILIES, LanguageModel, State, build_model, carried, detach_state, family_config, map_state
from lmlab.tasks.language_model import gather_state
from tests.helpers.project import ROOT

VOCAB = 23
NAMES = list(FAMILIES)
# The shipped sizes (conf/model/<family>.yaml) give every family about this many parameters with the default
# 8000-token vocabulary, 1,024,000 of them the tied 8000 x 128 embedding: comparisons are at equal size.
MATCHED_PARAMS, MATCHED_TOLERANCE, DEFAULT_VOCAB = 1_420_000, 0.01, 8000
# The larger scales (conf/scale/<scale>.yaml, conf/scale_model/<scale>_<family>.yaml): every family within this
# share of the Transformer's count (Mamba-2's blocks come in whole numbers), which falls in the scale's range.
SCALES, SCALE_TOLERANCE = {"small": (10e6, 30e6), "base": (80e6, 120e6)}, 0.03
# Logits of carried-state forms must agree with one pass this closely (normalised logits, float32).
ATOL = 1e-4
# `flops_per_token` must agree with torch's FLOP counter this closely (relative).
FLOPS_TOLERANCE = 0.1


pytestmark = pytest.mark.usefixtures("one_thread")


def make(family: str, seed: int = 0, **overrides: object) -> LanguageModel:
    """The family at a tiny size (2 layers, width 16), dropout off unless asked for; its other keys default."""
    settings = {"family": family, "layers": 2, "width": 16, "embed_dropout": 0.0, "dropout": 0.0}
    torch.manual_seed(seed)
    return build_model({**settings, "output_dropout": 0.0, **overrides}, VOCAB).eval()


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def leaves(state: State) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    map_state(lambda t: found.append(t) or t, state)
    return found


def assert_states_close(a: State, b: State, atol: float = 1e-5) -> None:
    assert type(a) is type(b)
    xs, ys = leaves(a), leaves(b)
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)


def assert_logits_close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.log_softmax(-1), b.log_softmax(-1), rtol=0, atol=ATOL)


def after_prefix(model: LanguageModel, batch: int, seed: int = 11) -> State:
    """A reachable, non-trivial state: the one after reading 5 random tokens."""
    with torch.no_grad():
        return model(tokens(batch, 5, seed), model.init_state(batch))[1]


# ----- shapes and states -----


@pytest.mark.parametrize("family", NAMES)
def test_shapes_and_batch_first_states(family: str) -> None:
    model = make(family)
    batch = tokens(3, 7)
    logits, state = model(batch, model.init_state(3))
    hidden, _ = model.encode(batch, model.init_state(3))
    assert logits.shape == (3, 7, VOCAB) and logits.dtype == torch.float32
    assert hidden.shape == (3, 7, model.embed_dim)
    torch.testing.assert_close(logits, model.head(hidden))  # forward is encode -> head
    for state_ in (model.init_state(3), state):
        assert leaves(state_) and all(t.size(0) == 3 for t in leaves(state_)), "every state tensor is batch first"
    if model.stateful:
        assert_states_close(model(batch, None)[1], state)
    else:
        assert model(batch, None)[1] is None  # training keeps no state it would not use


@pytest.mark.parametrize("length", [1, 6, 70])  # within and across chunks
@pytest.mark.parametrize("family", NAMES)
def test_starting_from_init_state_equals_starting_from_none(family: str, length: int) -> None:
    """None is the initial state (a family may skip the work of reading it): the same logits and state."""
    model = make(family)
    if model.max_positions is not None and length > model.max_positions:
        pytest.skip(f"{length} tokens exceed {family}'s context")
    batch = tokens(2, length)
    with torch.no_grad():
        (given, given_state), (none, none_state) = model(batch, model.init_state(2)), model(batch)
    torch.testing.assert_close(given, none, rtol=0, atol=1e-5)
    if model.stateful:
        assert_states_close(none_state, given_state)


@pytest.mark.parametrize("family", NAMES)
def test_a_carried_in_state_is_used(family: str) -> None:
    model = make(family)
    batch = tokens(2, 6)
    with torch.no_grad():
        fresh, _ = model(batch, model.init_state(2))
        carried_in, _ = model(batch, after_prefix(model, 2))
    assert not torch.allclose(fresh, carried_in, atol=1e-4)


@pytest.mark.parametrize("family", NAMES)
def test_window_rule(family: str) -> None:
    model = make(family)
    assert model.window(12) == (12 if model.stateful or model.max_positions is None else model.max_positions)
    state = object()
    assert carried(model, state, reset=False) is (state if model.stateful else None)
    assert carried(model, state, reset=True) is None


# ----- causality -----


@pytest.mark.parametrize("family", NAMES)
@pytest.mark.parametrize("position", [0, 5, 11])
def test_causality(family: str, position: int) -> None:
    model = make(family)
    batch = tokens(2, 12, seed=3)
    changed = batch.clone()
    changed[:, position] = (changed[:, position] + 1) % VOCAB
    with torch.no_grad():
        before, _ = model(batch)
        after, _ = model(changed)
    torch.testing.assert_close(after[:, :position], before[:, :position], rtol=0, atol=1e-6)
    assert (after[:, position] - before[:, position]).abs().max() > 1e-4
    if position < 11:  # the change reaches every later position
        assert ((after[:, position + 1 :] - before[:, position + 1 :]).abs().amax(dim=-1) > 1e-6).all()


@pytest.mark.parametrize("family", NAMES)
def test_causality_of_gradients(family: str) -> None:
    """The loss at position t has no gradient into embeddings of later positions."""
    model = make(family)
    embedded = {}

    def keep(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        output.retain_grad()
        embedded["x"] = output

    handle = model.embedding.register_forward_hook(keep)
    logits, _ = model(tokens(2, 10, seed=4))
    handle.remove()
    logits[:, 4].sum().backward()
    grad = embedded["x"].grad.abs().sum(dim=(0, 2))
    assert (grad[5:] == 0).all()
    assert (grad[:5] > 0).all()


# ----- carrying state -----


@pytest.mark.parametrize("length", [1, 7, 64, 300])  # not multiples of any chunk size
@pytest.mark.parametrize("start", ["init", "carried-in"])
@pytest.mark.parametrize("family", NAMES)
def test_step_by_step_equals_one_pass(family: str, start: str, length: int) -> None:
    """Token by token with the carried state (generation's form) gives the logits and state of one pass."""
    model = make(family)
    if model.max_positions is not None and length + 5 > model.max_positions:
        pytest.skip(f"{length} tokens after a prefix exceed {family}'s context of {model.max_positions}")
    batch = tokens(2, length, seed=5)
    begin = model.init_state(2) if start == "init" else after_prefix(model, 2)
    with torch.no_grad():
        whole, whole_state = model(batch, begin)
        state, steps = begin, []
        for t in range(length):
            logits, state = model(batch[:, t : t + 1], state)
            steps.append(logits)
    assert_logits_close(torch.cat(steps, dim=1), whole)
    assert_states_close(state, whole_state, atol=ATOL)


@pytest.mark.parametrize("start", ["init", "carried-in"])
@pytest.mark.parametrize("family", NAMES)
def test_tbptt_halves_equal_one_pass(family: str, start: str) -> None:
    """Two windows, the state detached between them (as training carries it), equal one window over both."""
    model = make(family)
    batch = tokens(3, 20, seed=5)
    begin = model.init_state(3) if start == "init" else after_prefix(model, 3)
    with torch.no_grad():
        whole, whole_state = model(batch, begin)
        first, state = model(batch[:, :8], begin)
        second, state = model(batch[:, 8:], detach_state(state))
    assert_logits_close(torch.cat([first, second], dim=1), whole)
    assert_states_close(state, whole_state, atol=ATOL)
    if model.stateful:  # a fresh state at the boundary is not the same thing
        restarted, _ = model(batch[:, 8:])
        assert not torch.allclose(restarted, second, atol=1e-4)


@pytest.mark.parametrize("family", NAMES)
def test_detach_state_keeps_values_and_drops_the_graph(family: str) -> None:
    model = make(family).train()
    _, state = model(tokens(2, 6), after_prefix(model, 2))
    detached = detach_state(state)
    assert type(detached) is type(state)
    for original, cut in zip(leaves(state), leaves(detached), strict=True):
        assert cut.grad_fn is None and not cut.requires_grad and torch.equal(cut, original)
    assert any(t.grad_fn is not None for t in leaves(state))
    logits, _ = model(tokens(2, 4, seed=8), detached)
    logits.sum().backward()  # a window from the detached state back-propagates into the weights only
    assert model.embedding.weight.grad is not None


@pytest.mark.parametrize("family", NAMES)
def test_state_survives_a_checkpoint_round_trip(family: str) -> None:
    """The state as a checkpoint holds it (`gather_state`, `[world, B, ...]`) loads back with weights_only."""
    model = make(family)
    state = after_prefix(model, 2)
    buffer = io.BytesIO()
    torch.save({"tbptt_state": gather_state(state, lambda t: t, world_size=1)}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)["tbptt_state"]
    restored = map_state(lambda t: t[0], saved)
    assert_states_close(restored, state, atol=0)
    batch = tokens(2, 4, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(model(batch, restored)[0], model(batch, state)[0], rtol=0, atol=0)


def test_states_survive_a_ddp_gather() -> None:
    """Two gloo processes gather every family's state as a DDP checkpoint does; each rank's slice is its own."""
    probe = ROOT / "tests" / "helpers" / "state_probe.py"
    result = subprocess.run([sys.executable, str(probe), *NAMES], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [f"ok:{name}" for name in NAMES]


@pytest.mark.parametrize("family", NAMES)
def test_greedy_generation_equals_rerunning_the_prefix(family: str) -> None:
    model = make(family, width=32)
    prompt = [3, 7, 1, 9, 4]
    fast = list(generate(model, prompt, max_new_tokens=15, temperature=0))
    slow = list(prompt)
    for _ in range(15):
        logits, _ = model(torch.tensor([slow]))
        slow.append(int(logits[0, -1].argmax()))
    assert fast == slow[len(prompt) :]


# ----- learning, dropout, weights -----


@pytest.mark.parametrize("family", NAMES)
def test_tiny_model_overfits_a_tiny_batch(family: str) -> None:
    model = make(family, layers=1, width=32).train()
    batch = tokens(2, 17, seed=9)
    batch[1, 0] = (batch[0, 0] + 1) % VOCAB  # the two rows are told apart from their first token
    inputs, targets = batch[:, :-1], batch[:, 1:]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        first = F.cross_entropy(model(inputs)[0].flatten(0, 1), targets.flatten()).item()
    assert first == pytest.approx(math.log(VOCAB), abs=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs)[0].flatten(0, 1), targets.flatten()).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits, _ = model(inputs)
    assert F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item() < 0.05
    assert torch.equal(logits.argmax(-1), targets)


@pytest.mark.parametrize("knob", ["embed_dropout", "dropout", "output_dropout"])
@pytest.mark.parametrize("family", NAMES)
def test_dropout_is_random_in_train_and_off_in_eval(family: str, knob: str) -> None:
    model = make(family, **{knob: 0.5})
    batch = tokens(2, 8)
    model.train()
    assert not torch.allclose(model(batch)[0], model(batch)[0], atol=1e-6)
    model.eval()
    with torch.no_grad():
        a, _ = model(batch)
        torch.testing.assert_close(model(batch)[0], a, rtol=0, atol=0)
        torch.testing.assert_close(make(family)(batch)[0], a, rtol=0, atol=0)  # eval is the dropout-free model


@pytest.mark.parametrize("family", NAMES)
def test_tied_and_untied_output_layer(family: str) -> None:
    tied, untied = make(family), make(family, tie_weights=False)
    assert tied.head.weight is tied.embedding.weight
    assert untied.head.weight is not untied.embedding.weight
    embedding = VOCAB * tied.embed_dim
    assert tied.num_embedding_params == embedding and untied.num_embedding_params == 2 * embedding
    assert untied.num_params - tied.num_params == embedding


@pytest.mark.parametrize("family", NAMES)
def test_layer_groups_hold_every_trainable_parameter_once(family: str) -> None:
    model = make(family)
    groups = model.layer_groups()
    assert len(groups) >= 2 and groups[0][0] is model.embedding.weight  # embeddings first, then the layers
    listed = [id(p) for group in groups for p in group]
    assert len(listed) == len(set(listed)) == len(list(model.parameters()))  # the tied head is the embedding


# ----- compute -----


def attention_flops(
    query: torch.Size, key: torch.Size, value: torch.Size, dropout_p: float = 0.0, is_causal: bool = False, **_: object
) -> int:
    """The CPU flash-attention kernel counted as torch counts its GPU attention kernels (QK^T, then the weighted
    sum of V: 2 per multiply-add), over the query-key pairs it computes: causally, over a window without a cache
    (as many keys as queries, s), s (s + 1) / 2 of the s x s."""
    batch, heads, queries, key_size = query
    pairs = queries * (queries + 1) // 2 if is_causal else queries * key[2]
    return 2 * batch * heads * pairs * (key_size + value[3])


def triangular_solve_flops(matrix: torch.Size, rhs: torch.Size, **_: object) -> int:
    """LAPACK's count for solving A X = B with A triangular (m x m) and B m x n: m^2 n per matrix of the batch."""
    *batch, m, n = rhs
    return math.prod(batch) * m * m * n


# What FlopCounterMode has no formula for, in the ops our families run on the CPU (see the test below).
UNCOUNTED_OPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops,
    torch.ops.aten.linalg_solve_triangular: triangular_solve_flops,
}


@pytest.mark.parametrize("size", ["shipped", "tiny"])
@pytest.mark.parametrize("family", NAMES)
def test_flops_per_token_agrees_with_torchs_flop_counter(family: str, size: str) -> None:
    """`flops_per_token(context)` is within 10% of FlopCounterMode's count of one forward pass over a training
    window (batch 2) per token, from a carried state where the family carries one, as training runs it.

    shipped: conf/model/<family>.yaml, the 8000-token vocabulary, the pipeline's window (batches.bptt, or the
    transformer's context): the figure `train/flops` is built on. tiny: the contract's model (vocabulary 23)
    over 100 tokens (the transformer: its context of 256), where attention and the chunked scans outweigh the
    output layer, and the window crosses a chunk boundary and pads the last chunk.

    What FlopCounterMode counts on the CPU, and what the test adds so that it counts what the formulas count:
    - mm, addmm, bmm (einsum's and `@`'s too) and convolutions: by torch's own formulas, a multiply-add as 2.
    - nn.LSTM: oneDNN's fused kernel (`mkldnn_rnn_layer`) has no formula and counts 0, so the pass runs with
      oneDNN off, where torch computes the same LSTM as per-step matmuls it counts (nn.RNN and nn.GRU run as
      matmuls either way).
    - The transformer's attention: the CPU flash kernel has no formula and counts 0; `attention_flops` counts
      it over the causal triangle the kernel computes (torch's GPU formulas count the full square).
    - Gated DeltaNet's triangular solve has no formula; `triangular_solve_flops` gives LAPACK's count.
    Elementwise ops (norms, activations, gates, softmax, scans by cumsum, exponentials) are counted by neither.
    """
    if size == "shipped":
        shipped = yaml.safe_load((ROOT / "conf" / "model" / f"{family}.yaml").read_text())
        model = build_model(shipped, DEFAULT_VOCAB).eval()
        context = model.window(yaml.safe_load((ROOT / "conf" / "batches" / "default.yaml").read_text())["bptt"])
    else:
        model, context = make(family), make(family).window(100)
    batch = torch.randint(0, model.vocab_size, (2, context), generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False, custom_mapping=UNCOUNTED_OPS)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False, allow_tf32=None), counter:
        model(batch, carried(model, model.init_state(2), reset=False))
    measured = counter.get_total_flops() / batch.numel()
    by_op = {str(op): f"{flops / batch.numel():,.0f}" for op, flops in counter.get_flop_counts()["Global"].items()}
    formula = model.flops_per_token(context)
    assert formula == pytest.approx(measured, rel=FLOPS_TOLERANCE), (
        f"{family} ({size}, window {context}): flops_per_token {formula:,.0f}, FlopCounterMode {measured:,.0f} "
        f"per token, by op {by_op}"
    )


# ----- config and size -----


@pytest.mark.parametrize("family", NAMES)
def test_config_file_holds_the_family_keys_only(family: str) -> None:
    path = ROOT / "conf" / "model" / f"{family}.yaml"
    shipped = yaml.safe_load(path.read_text())
    schema = FAMILIES[family].config
    assert shipped["family"] == family and schema().family == family
    assert set(shipped) <= {f.name for f in fields(schema)}, f"{path} has keys {schema.__name__} lacks"
    assert isinstance(family_config(shipped), schema)
    own = {f.name for f in fields(schema)}
    others = {f.name for other in FAMILIES.values() for f in fields(other.config)} - own
    foreign = min(others, default="not_a_key")  # a key of another family, where there is one
    with pytest.raises(LmlabError, match=rf"model\.{foreign} is not a key of model family '{family}'.*its keys are"):
        family_config({**shipped, foreign: 1})


@pytest.mark.parametrize("family", NAMES)
def test_shipped_size_matches_the_other_families(family: str) -> None:
    model = build_model(yaml.safe_load((ROOT / "conf" / "model" / f"{family}.yaml").read_text()), DEFAULT_VOCAB)
    assert abs(model.num_params - MATCHED_PARAMS) <= MATCHED_TOLERANCE * MATCHED_PARAMS, model.num_params
    assert 0 < model.num_params - model.num_embedding_params  # the non-embedding count is reported too


def scaled_params(scale: str, family: str) -> int:
    """The family's parameter count as `lmlab pretrain scale=<scale> model=<family>` composes it (meta tensors)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = typed(compose(config_name="pretrain", overrides=[f"scale={scale}", f"model={family}"]))
    with torch.device("meta"):
        return build_model(cfg.model, DEFAULT_VOCAB).num_params


@pytest.mark.parametrize("scale", list(SCALES))
def test_each_scale_gives_every_family_about_one_size(scale: str) -> None:
    register_configs()
    counts = {family: scaled_params(scale, family) for family in NAMES}
    low, high = SCALES[scale]
    assert low <= counts["transformer"] <= high, counts
    off = {
        f: n / counts["transformer"] - 1
        for f, n in counts.items()
        if abs(n / counts["transformer"] - 1) > SCALE_TOLERANCE
    }
    assert not off, off
    assert (
        scaled_params("tiny", "lstm")
        == build_model(yaml.safe_load((ROOT / "conf/model/lstm.yaml").read_text()), DEFAULT_VOCAB).num_params
    )  # tiny: the model files as they are


def test_unknown_family_names_the_choices() -> None:
    with pytest.raises(LmlabError, match="model.family='mamba'") as caught:
        build_model({"family": "mamba"}, VOCAB)
    assert all(name in str(caught.value) for name in FAMILIES)


def test_every_family_a_study_names_is_in_the_table() -> None:
    """The pipeline and the sweep files choose families from the table; every family has its config file."""
    assert {path.stem for path in (ROOT / "conf" / "model").glob("*.yaml")} == set(FAMILIES)
    named = {
        "conf/dvc/pipeline.yaml": yaml.safe_load((ROOT / "conf" / "dvc" / "pipeline.yaml").read_text())["families"],
        "params.yaml": yaml.safe_load((ROOT / "params.yaml").read_text())["families"],
    }
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        sweep = yaml.safe_load(path.read_text())
        values = sweep.get("parameters", {}).get("model", {}).get("values", [])
        fixed = [arg.split("=", 1)[1] for arg in sweep["command"] if str(arg).startswith("model=")]
        named[f"sweeps/{path.name}"] = [*values, *fixed]
    for where, families in named.items():
        assert set(families) <= set(FAMILIES), f"{where} names {set(families) - set(FAMILIES)}, not in FAMILIES"
    assert named["conf/dvc/pipeline.yaml"] == named["params.yaml"]
