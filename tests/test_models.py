"""What is particular to each shipped family: projections, positions, initialisation, exact parameter counts,
config errors. What every family must do is in test_family_contract.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.errors import LmlabError
from lmlab.models import LanguageModel, ModelConfig, build_model, family_config
from lmlab.models.transformer import apply_rotary, rotary_tables

VOCAB = 23
RECURRENT = ["rnn", "lstm", "gru"]
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def config(family: str, **overrides: object) -> ModelConfig:
    """A tiny model with every dropout off unless asked for."""
    settings: dict[str, object] = dict(family=family, layers=2, width=16, embed_dropout=0.0, dropout=0.0)
    if family == "transformer":
        settings.update(heads=2, context=32)
    return family_config({**settings, "output_dropout": 0.0, **overrides})


def make(family: str, seed: int = 0, vocab: int = VOCAB, **overrides: object) -> LanguageModel:
    torch.manual_seed(seed)
    return build_model(config(family, **overrides), vocab).eval()


def random_tokens(batch: int, length: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def state_shapes(state: object) -> object:
    return tuple(state.shape) if isinstance(state, torch.Tensor) else [tuple(s.shape) for s in state]


def expected_state_shape(family: str, layers: int, batch: int, width: int) -> object:
    shape = (batch, layers, width)  # batch first
    return [shape, shape] if family == "lstm" else shape


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


# ----- minGRU, minLSTM -----


def test_log_space_scan_equals_the_recurrence() -> None:
    """h_t = c_t h_(t-1) + v_t from logs, over 300 steps, from a zero and from a positive h0."""
    from lmlab.models.minrnn import log_scan

    generator = torch.Generator().manual_seed(0)
    coeffs = torch.rand(2, 300, 5, generator=generator, dtype=torch.float64) * 0.98 + 0.01
    values = torch.rand(2, 300, 5, generator=generator, dtype=torch.float64) + 0.01
    for h0 in (torch.zeros(2, 5, dtype=torch.float64), torch.rand(2, 5, generator=generator, dtype=torch.float64)):
        h, expected = h0, []
        for t in range(300):
            h = coeffs[:, t] * h + values[:, t]
            expected.append(h)
        torch.testing.assert_close(log_scan(coeffs.log(), values.log(), h0), torch.stack(expected, 1))


def test_min_rnn_gates() -> None:
    """minLSTM's normalised gates sum to one; minGRU's are (1 - z, z); g is positive and continuous at 0."""
    from lmlab.models.minrnn import MinRNN, g, log_g

    x = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1))
    for lstm in (True, False):
        log_coeff, log_weight, _ = MinRNN(8, 6, lstm).log_gates(x)
        torch.testing.assert_close(log_coeff.exp() + log_weight.exp(), torch.ones_like(log_coeff))
    v = torch.linspace(-6, 6, 101)
    assert (g(v) > 0).all() and g(torch.tensor([-1e-6, 0.0])).sub(0.5).abs().max() < 1e-5
    torch.testing.assert_close(log_g(v), g(v).log())
