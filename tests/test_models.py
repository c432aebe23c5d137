"""The four model families behind `build_model`: shapes, causality, TBPTT, learning, tying, init, errors, dropout."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from lmlab.config import ModelConfig
from lmlab.errors import LmlabError
from lmlab.models import LanguageModel, build_model
from lmlab.models.transformer import apply_rotary, rotary_tables

VOCAB = 23
FAMILIES = ["rnn", "lstm", "gru", "transformer"]
RECURRENT = ["rnn", "lstm", "gru"]
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# every family, and the transformer once per position scheme
VARIANTS = [
    pytest.param("rnn", {}, id="rnn"),
    pytest.param("lstm", {}, id="lstm"),
    pytest.param("gru", {}, id="gru"),
    pytest.param("transformer", {"positions": "rotary"}, id="transformer-rotary"),
    pytest.param("transformer", {"positions": "learned"}, id="transformer-learned"),
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and do not fight other work for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(family: str, **overrides: object) -> ModelConfig:
    """A tiny model with every dropout off unless asked for."""
    settings: dict[str, object] = dict(
        family=family,
        layers=2,
        width=16,
        heads=2,
        context=32,
        embed_dropout=0.0,
        dropout=0.0,
        output_dropout=0.0,
    )
    settings.update(overrides)
    return ModelConfig(**settings)


def make(family: str, seed: int = 0, vocab: int = VOCAB, **overrides: object) -> LanguageModel:
    torch.manual_seed(seed)
    return build_model(config(family, **overrides), vocab).eval()


def random_tokens(batch: int, length: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def state_shapes(state: object) -> object:
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return tuple(state.shape)
    return [tuple(s.shape) for s in state]


def expected_state_shape(family: str, layers: int, batch: int, width: int) -> object:
    if family == "transformer":
        return None
    shape = (layers, batch, width)
    return [shape, shape] if family == "lstm" else shape


def random_state(model: LanguageModel, batch: int, seed: int) -> object:
    state = model.init_state(batch)
    generator = torch.Generator().manual_seed(seed)
    if isinstance(state, torch.Tensor):
        return torch.randn(state.shape, generator=generator) * 0.5
    return tuple(torch.randn(s.shape, generator=generator) * 0.5 for s in state)


def assert_states_close(a: object, b: object, **tolerance: float) -> None:
    if a is None or b is None:
        assert a is None and b is None
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, **tolerance)
    else:
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, **tolerance)


# ----- shapes -----


@pytest.mark.parametrize("with_state", [False, True], ids=["no-state", "init-state"])
@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_of_logits_hidden_and_state(family: str, with_state: bool) -> None:
    model = make(family, layers=2, width=16)
    tokens = random_tokens(3, 7)
    state = model.init_state(3, "cpu") if with_state else None
    logits, out_state = model(tokens, state)
    hidden, enc_state = model.encode(tokens, state)
    assert logits.shape == (3, 7, VOCAB)
    assert hidden.shape == (3, 7, 16)
    assert logits.dtype == hidden.dtype == torch.float32
    assert state_shapes(out_state) == expected_state_shape(family, 2, 3, 16)
    assert state_shapes(enc_state) == expected_state_shape(family, 2, 3, 16)
    assert model.stateful is (family != "transformer")
    # forward is encode -> head
    torch.testing.assert_close(logits, model.head(hidden))


@pytest.mark.parametrize("family", RECURRENT)
def test_init_state_is_zero_and_equals_no_state(family: str) -> None:
    model = make(family)
    state = model.init_state(2)
    for part in state if isinstance(state, tuple) else (state,):
        assert part.shape == (2, 2, 16)
        assert not part.any()
    tokens = random_tokens(2, 5)
    torch.testing.assert_close(model(tokens, state)[0], model(tokens)[0], rtol=0, atol=0)


@pytest.mark.parametrize("family", RECURRENT)
def test_incoming_state_is_used(family: str) -> None:
    model = make(family)
    tokens = random_tokens(2, 6)
    fresh, _ = model(tokens)
    carried, new_state = model(tokens, random_state(model, 2, seed=1))
    assert state_shapes(new_state) == expected_state_shape(family, 2, 2, 16)
    assert not torch.allclose(fresh, carried, atol=1e-4)


def test_transformer_has_no_state() -> None:
    model = make("transformer")
    assert model.init_state(4, "cpu") is None
    assert model(random_tokens(4, 5), None)[1] is None


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("family", RECURRENT)
def test_recurrent_projection_when_embed_dim_differs_from_width(family: str, tie: bool) -> None:
    model = make(family, width=20, embed_dim=12, tie_weights=tie)
    assert model.proj is not None and model.proj.weight.shape == (12, 20)
    assert model.embedding.weight.shape == (VOCAB, 12)
    assert model.head.weight.shape == (VOCAB, 12)
    assert model.rnn.input_size == 12 and model.rnn.hidden_size == 20
    tokens = random_tokens(2, 9)
    hidden, state = model.encode(tokens, model.init_state(2))
    logits, _ = model(tokens)
    assert hidden.shape == (2, 9, 12)
    assert logits.shape == (2, 9, VOCAB)
    assert state_shapes(state) == expected_state_shape(family, 2, 2, 20)
    # the same widths need no projection
    assert make(family, width=12, embed_dim=12).proj is None
    assert make(family, width=12).proj is None


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_transformer_positions(positions: str) -> None:
    model = make("transformer", positions=positions, width=16, heads=2, context=32)
    params = dict(model.named_parameters())
    if positions == "learned":
        assert model.position is not None and model.position.weight.shape == (32, 16)
    else:
        assert model.position is None and not any("position" in name for name in params)
        assert model.rotary_cos.shape == model.rotary_sin.shape == (32, 4)  # [context, head_dim / 2]
        assert "rotary_cos" not in model.state_dict()  # recomputed, not saved
    for length in (1, 17, 32):  # any length up to the context
        logits, _ = model(random_tokens(2, length))
        assert logits.shape == (2, length, VOCAB)
    # in one layer without positions, the last position's logits would only see the multiset of its prefix
    one_layer = make("transformer", positions=positions, layers=1, width=16, heads=2, context=32)
    tokens = torch.tensor([[3, 7, 11, 5, 9]])
    swapped = torch.tensor([[7, 3, 11, 5, 9]])
    with torch.no_grad():
        assert not torch.allclose(one_layer(tokens)[0][:, -1], one_layer(swapped)[0][:, -1], atol=1e-5)


def test_rotary_rotation_is_relative() -> None:
    """Position 0 is the identity, norms are kept, and q.k depends only on the offset between positions."""
    head_dim, context = 8, 20
    cos, sin = rotary_tables(context, head_dim)
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=generator)
    same_q = q.expand(1, 1, context, head_dim)
    same_k = k.expand(1, 1, context, head_dim)
    rq, rk = apply_rotary(same_q, cos, sin), apply_rotary(same_k, cos, sin)
    torch.testing.assert_close(rq[..., 0, :], q[..., 0, :])
    torch.testing.assert_close(rq.norm(dim=-1), same_q.norm(dim=-1))
    scores = (rq[0, 0] @ rk[0, 0].T).numpy()  # [m, n] = <rot(q, m), rot(k, n)>
    for shift in (1, 5):
        assert scores[3, 1] == pytest.approx(scores[3 + shift, 1 + shift], abs=1e-5)
        assert scores[2, 9] == pytest.approx(scores[2 + shift, 9 + shift], abs=1e-5)
    assert scores[3, 1] != pytest.approx(scores[3, 2], abs=1e-3)


# ----- causality -----


@pytest.mark.parametrize(("family", "extra"), VARIANTS)
@pytest.mark.parametrize("position", [0, 5, 11])
def test_causality(family: str, extra: dict, position: int) -> None:
    model = make(family, **extra)
    tokens = random_tokens(2, 12, seed=3)
    changed = tokens.clone()
    changed[:, position] = (changed[:, position] + 1) % VOCAB
    with torch.no_grad():
        before, _ = model(tokens)
        after, _ = model(changed)
    torch.testing.assert_close(after[:, :position], before[:, :position], rtol=0, atol=1e-6)
    assert (after[:, position] - before[:, position]).abs().max() > 1e-4
    if position < 11:  # the change reaches every later position
        assert ((after[:, position + 1 :] - before[:, position + 1 :]).abs().amax(dim=-1) > 1e-6).all()


@pytest.mark.parametrize(("family", "extra"), VARIANTS)
def test_causality_of_gradients(family: str, extra: dict) -> None:
    """The loss at position t has no gradient into embeddings of later positions."""
    model = make(family, **extra)
    embedded = {}

    def keep(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        output.retain_grad()
        embedded["x"] = output

    handle = model.embedding.register_forward_hook(keep)
    logits, _ = model(random_tokens(2, 10, seed=4))
    handle.remove()
    logits[:, 4].sum().backward()
    grad = embedded["x"].grad.abs().sum(dim=(0, 2))
    assert (grad[5:] == 0).all()
    assert (grad[:5] > 0).all()


# ----- truncated BPTT -----


@pytest.mark.parametrize("with_state", [False, True], ids=["fresh", "carried-in"])
@pytest.mark.parametrize("family", RECURRENT)
def test_tbptt_halves_equal_one_pass(family: str, with_state: bool) -> None:
    model = make(family, layers=2, width=16, embed_dim=12)
    tokens = random_tokens(3, 20, seed=5)
    start = random_state(model, 3, seed=6) if with_state else None
    with torch.no_grad():
        whole, whole_state = model(tokens, start)
        first, state = model(tokens[:, :8], start)
        second, state = model(tokens[:, 8:], LanguageModel.detach_state(state))
        hidden_a, state_a = model.encode(tokens[:, :13], start)
        hidden_b, state_b = model.encode(tokens[:, 13:], state_a)
        hidden, _ = model.encode(tokens, start)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-5, atol=1e-5)
    assert_states_close(state, whole_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([hidden_a, hidden_b], dim=1), hidden, rtol=1e-5, atol=1e-5)
    assert_states_close(state_b, whole_state, rtol=1e-5, atol=1e-5)
    # a fresh state at the boundary is not the same thing
    restarted, _ = model(tokens[:, 8:])
    assert not torch.allclose(restarted, second, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_detach_state_keeps_values_and_drops_graph(family: str) -> None:
    model = make(family).train()
    _, state = model(random_tokens(2, 6), random_state(model, 2, seed=7) if family != "transformer" else None)
    detached = LanguageModel.detach_state(state)
    if family == "transformer":
        assert state is None and detached is None
        return
    parts, detached_parts = (state, detached) if family == "lstm" else ((state,), (detached,))
    assert type(detached) is type(state) and len(detached_parts) == len(parts)
    for original, cut in zip(parts, detached_parts, strict=True):
        assert original.grad_fn is not None
        assert cut.grad_fn is None and not cut.requires_grad
        assert torch.equal(cut, original)
    # a window started from the detached state back-propagates only into the weights, not through the old window
    logits, _ = model(random_tokens(2, 4, seed=8), detached)
    logits.sum().backward()
    assert model.embedding.weight.grad is not None


# ----- learning -----


@pytest.mark.parametrize(("family", "extra"), VARIANTS)
def test_tiny_model_overfits_tiny_batch(family: str, extra: dict) -> None:
    torch.manual_seed(0)
    model = build_model(config(family, layers=1, width=32, heads=2, context=16, **extra), VOCAB).train()
    batch = random_tokens(2, 17, seed=9)
    batch[1, 0] = (batch[0, 0] + 1) % VOCAB  # the two rows are told apart from their first token
    inputs, targets = batch[:, :-1], batch[:, 1:]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        first = F.cross_entropy(model(inputs)[0].flatten(0, 1), targets.flatten()).item()
    assert first == pytest.approx(math.log(VOCAB), abs=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs)[0].flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits, _ = model(inputs)
        final = F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
    assert final < 0.05
    assert torch.equal(logits.argmax(-1), targets)


# ----- tied weights and parameter counts -----


def manual_count(family: str, cfg: ModelConfig, vocab: int) -> int:
    embed = cfg.embed_dim or cfg.width
    total = vocab * embed * (1 if cfg.tie_weights else 2)
    width = cfg.width
    if family in RECURRENT:
        gates = GATES[family]
        for layer in range(cfg.layers):
            inputs = embed if layer == 0 else width
            total += gates * width * (inputs + width) + 2 * gates * width
        if width != embed:
            total += width * embed
        return total
    bias = cfg.bias
    norm = width * (2 if bias else 1)
    per_layer = 2 * norm + 3 * width * width + width * width + 2 * cfg.mlp_ratio * width * width
    if bias:
        per_layer += 3 * width + width + cfg.mlp_ratio * width + width
    total += cfg.layers * per_layer + norm
    if cfg.positions == "learned":
        total += cfg.context * width
    return total


COUNT_CASES = [
    pytest.param("rnn", {}, id="rnn"),
    pytest.param("lstm", {}, id="lstm"),
    pytest.param("gru", {}, id="gru"),
    pytest.param("lstm", {"width": 20, "embed_dim": 12, "layers": 3}, id="lstm-projected"),
    pytest.param("gru", {"width": 10, "embed_dim": 14}, id="gru-narrow"),
    pytest.param("transformer", {}, id="transformer"),
    pytest.param("transformer", {"positions": "learned", "bias": True, "mlp_ratio": 2}, id="transformer-learned-bias"),
]


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize(("family", "extra"), COUNT_CASES)
def test_tied_weights_and_parameter_counts(family: str, extra: dict, tie: bool) -> None:
    cfg = config(family, tie_weights=tie, **extra)
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB)
    embed = cfg.embed_dim or cfg.width
    if tie:
        assert model.head.weight is model.embedding.weight
    else:
        assert model.head.weight is not model.embedding.weight
        assert not torch.equal(model.head.weight, model.embedding.weight)
    assert model.num_params == manual_count(family, cfg, VOCAB)
    assert model.num_embedding_params == VOCAB * embed * (1 if tie else 2)
    if not tie:
        tied = build_model(config(family, tie_weights=True, **extra), VOCAB)
        assert model.num_params - tied.num_params == VOCAB * embed


@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_tied_matrix_gets_both_gradients(family: str) -> None:
    """The tied matrix's gradient is the embedding's plus the output layer's, as in the same untied model."""
    tied = make(family, tie_weights=True)
    untied = make(family, tie_weights=False)
    state = {k: v for k, v in tied.state_dict().items() if k != "head.weight"}
    untied.load_state_dict({**state, "head.weight": tied.embedding.weight.detach().clone()})
    tokens = random_tokens(2, 6)
    for model in (tied, untied):
        logits, _ = model(tokens)
        F.cross_entropy(logits.flatten(0, 1), tokens.roll(-1, dims=1).flatten()).backward()
    assert len(list(tied.parameters())) == len(list(untied.parameters())) - 1
    torch.testing.assert_close(tied.embedding.weight.grad, untied.embedding.weight.grad + untied.head.weight.grad)


def test_num_params_ignores_frozen_parameters() -> None:
    model = make("gru")
    before = model.num_params
    model.rnn.weight_hh_l0.requires_grad_(False)
    assert model.num_params == before - model.rnn.weight_hh_l0.numel()


# ----- initialisation -----


@pytest.mark.parametrize("layers", [1, 3])
def test_lstm_forget_gate_bias_is_one(layers: int) -> None:
    width = 24
    model = make("lstm", layers=layers, width=width)
    bound = 1 / math.sqrt(width)
    for layer in range(layers):
        bias = getattr(model.rnn, f"bias_hh_l{layer}").detach()
        assert torch.all(bias[width : 2 * width] == 1.0)
        others = torch.cat([bias[:width], bias[2 * width :]])
        assert others.abs().max() <= bound and others.abs().max() < 1.0
        assert getattr(model.rnn, f"bias_ih_l{layer}").detach().abs().max() <= bound
    assert model.embedding.weight.abs().max() <= 0.1


@pytest.mark.parametrize("family", ["rnn", "gru"])
def test_other_recurrent_biases_keep_torch_default(family: str) -> None:
    width = 24
    model = make(family, width=width)
    for name, param in model.rnn.named_parameters():
        assert param.detach().abs().max() <= 1 / math.sqrt(width), name
    assert model.embedding.weight.abs().max() <= 0.1


def test_recurrent_untied_head_initialised_like_the_embedding() -> None:
    model = make("lstm", tie_weights=False)
    assert model.head.weight.abs().max() <= 0.1
    assert model.head.weight.std().item() == pytest.approx(0.2 / math.sqrt(12), rel=0.25)


def test_transformer_init_std() -> None:
    layers = 4
    model = make("transformer", vocab=512, width=64, heads=4, layers=layers, bias=True, positions="learned")
    assert model.embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.position.weight.std().item() == pytest.approx(0.02, rel=0.1)
    residual_std = 0.02 / math.sqrt(2 * layers)
    for i, block in enumerate(model.blocks):
        assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1), i
        assert block.mlp.up.weight.std().item() == pytest.approx(0.02, rel=0.1), i
        assert block.attn.out.weight.std().item() == pytest.approx(residual_std, rel=0.1), i
        assert block.mlp.out.weight.std().item() == pytest.approx(residual_std, rel=0.1), i
        for linear in (block.attn.qkv, block.attn.out, block.mlp.up, block.mlp.out):
            assert not linear.bias.any()
        assert torch.all(block.norm1.weight == 1) and torch.all(block.norm2.weight == 1)
    assert torch.all(model.norm.weight == 1) and not model.norm.bias.any()


# ----- errors -----


def test_unknown_family_names_the_choices() -> None:
    with pytest.raises(LmlabError, match="model.family='mamba'") as caught:
        build_model(config("mamba"), VOCAB)
    for family in FAMILIES:
        assert family in str(caught.value)


def test_width_not_divisible_by_heads() -> None:
    with pytest.raises(LmlabError, match=r"model\.width=30.*model\.heads=4"):
        build_model(config("transformer", width=30, heads=4), VOCAB)


def test_odd_head_dim_with_rotary() -> None:
    with pytest.raises(LmlabError, match=r"model\.width=12.*model\.heads=4.*even"):
        build_model(config("transformer", width=12, heads=4, positions="rotary"), VOCAB)
    build_model(config("transformer", width=16, heads=4, positions="rotary"), VOCAB)  # head dim 4 is fine


def test_unknown_positions() -> None:
    with pytest.raises(LmlabError, match="model.positions='alibi'.*rotary or learned"):
        build_model(config("transformer", positions="alibi"), VOCAB)


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_input_longer_than_context(positions: str) -> None:
    model = make("transformer", positions=positions, context=8)
    assert model(random_tokens(1, 8))[0].shape == (1, 8, VOCAB)
    with pytest.raises(LmlabError, match=r"9 tokens.*model\.context=8"):
        model(random_tokens(1, 9))
    with pytest.raises(LmlabError, match=r"model\.context=8"):
        model.encode(random_tokens(1, 9))


def test_transformer_embed_dim_must_equal_width() -> None:
    with pytest.raises(LmlabError, match=r"model\.embed_dim=8.*model\.width"):
        build_model(config("transformer", width=16, embed_dim=8), VOCAB)
    assert build_model(config("transformer", width=16, embed_dim=16), VOCAB).embed_dim == 16


# ----- dropout -----

DROPOUT_KNOBS = ["embed_dropout", "dropout", "output_dropout"]


@pytest.mark.parametrize("knob", DROPOUT_KNOBS)
@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_is_random_in_train_and_off_in_eval(family: str, knob: str) -> None:
    model = make(family, layers=2, **{knob: 0.5})
    tokens = random_tokens(2, 8)
    model.train()
    first, _ = model(tokens)
    second, _ = model(tokens)
    assert not torch.allclose(first, second, atol=1e-6)
    model.eval()
    with torch.no_grad():
        a, _ = model(tokens)
        b, _ = model(tokens)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # eval output is the dropout-free model's
    plain = make(family, layers=2)
    with torch.no_grad():
        torch.testing.assert_close(plain(tokens)[0], a, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_dropout_means_deterministic_training_forward(family: str) -> None:
    model = make(family).train()
    tokens = random_tokens(2, 8)
    torch.testing.assert_close(model(tokens)[0], model(tokens)[0], rtol=0, atol=0)
