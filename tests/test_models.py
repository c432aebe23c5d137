"""What is particular to each shipped family: projections, positions, initialisation, exact parameter counts,
config errors. What every family must do is in test_family_contract.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.core.errors import LmlabError
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
    with pytest.raises(LmlabError, match="model.positions='alibi': must be one of rotary, learned"):
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


# ----- Mamba-2, Gated DeltaNet: the chunked algorithms against their recurrences, in float64 -----


def random_inputs(length: int, seed: int, heads: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(2, *shape, generator=generator, dtype=torch.float64)

    return {
        "x": rand(length, heads, 4),
        "log_a": -torch.rand(2, length, heads, generator=generator, dtype=torch.float64) * 2,  # decays in (e^-2, 1]
        "B": rand(length, heads, 5),
        "C": rand(length, heads, 5),
        "k": F.normalize(rand(length, heads, 5), dim=-1),
        "beta": torch.rand(2, length, heads, generator=generator, dtype=torch.float64),
        "h0": rand(heads, 4, 5),
    }


@pytest.mark.parametrize("length", [1, 7, 16, 37])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("signed", [False, True])
def test_ssd_and_its_step_equal_the_state_space_recurrence(length: int, groups: int, signed: bool) -> None:
    """h_t = a_t h_(t-1) + x_t B_t^T, y_t = h_t C_t, per head; B and C per group of heads; chunks of 8
    (lengths below, at and across a chunk); `signed`: about half the decays negative (a_t in (-1, 1), the
    negative-eigenvalue extension), given to the scan as log magnitude and sign."""
    from lmlab.models.mamba2 import ssd, step

    v = random_inputs(length, seed=length)
    B, C = v["B"][:, :, :groups], v["C"][:, :, :groups]
    per_head = 3 // groups
    negative = (torch.rand(v["log_a"].shape, generator=torch.Generator().manual_seed(7)) < 0.5).double()
    negative = negative if signed else None
    a = v["log_a"].exp() * (1 - 2 * negative if signed else 1)
    for h0 in (torch.zeros_like(v["h0"]), v["h0"]):
        h, expected, stepped = h0, [], h0
        for t in range(length):
            Bt, Ct = B[:, t].repeat_interleave(per_head, 1), C[:, t].repeat_interleave(per_head, 1)
            h = h * a[:, t, :, None, None] + v["x"][:, t, :, :, None] * Bt[:, :, None, :]
            expected.append((h @ Ct[:, :, :, None]).squeeze(-1))
            sign = negative[:, t] if signed else None
            y, stepped = step(v["x"][:, t], v["log_a"][:, t], B[:, t], C[:, t], stepped, sign)
            torch.testing.assert_close(y[:, 0], expected[-1])
        y, last = ssd(v["x"], v["log_a"], B, C, 8, h0, negative)
        torch.testing.assert_close(y, torch.stack(expected, 1))
        torch.testing.assert_close(last, h)
        torch.testing.assert_close(stepped, h)


@pytest.mark.parametrize("length", [1, 7, 16, 37])
@pytest.mark.parametrize("beta_scale", [1.0, 2.0])
def test_chunkwise_delta_rule_equals_the_recurrence(length: int, beta_scale: float) -> None:
    """S_t = a_t S_(t-1) (I - b k k^T) + b v k^T, o_t = S_t q_t (S stored as keys x values); chunks of 8;
    b in (0, 2) too (the negative-eigenvalue extension: I - b k k^T reflects along k where b > 1)."""
    from lmlab.models.gated_deltanet import chunk_delta_rule

    v = random_inputs(length, seed=100 + length)
    v["beta"] = v["beta"] * beta_scale
    q, k, values, S0 = v["C"], v["k"], v["x"], v["h0"].transpose(-1, -2)  # S: [b, h, K=5, V=4]
    for S in (torch.zeros_like(S0), S0):
        state, expected = S, []
        for t in range(length):
            kt, decay, beta = k[:, t], v["log_a"][:, t].exp(), v["beta"][:, t]
            state = state * decay[..., None, None]
            erased = state - kt.unsqueeze(-1) * (kt.unsqueeze(-2) @ state) * beta[..., None, None]
            state = erased + beta[..., None, None] * kt.unsqueeze(-1) * values[:, t].unsqueeze(-2)
            expected.append((q[:, t].unsqueeze(-2) @ state).squeeze(-2))
        o, last = chunk_delta_rule(q, k, values, v["log_a"], v["beta"], 8, S)
        torch.testing.assert_close(o, torch.stack(expected, 1))
        torch.testing.assert_close(last, state)


def test_short_convolution_is_causal_and_continues_across_windows() -> None:
    from lmlab.models.blocks import ShortConv

    torch.manual_seed(0)
    conv = ShortConv(6, 4, bias=True)
    x = torch.randn(2, 11, 6)
    whole, state = conv(x, conv.init_state(2, "cpu", x.dtype))
    first, mid = conv(x[:, :5], conv.init_state(2, "cpu", x.dtype))
    second, end = conv(x[:, 5:], mid)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    torch.testing.assert_close(end, state)
    steps, s = [], conv.init_state(2, "cpu", x.dtype)
    for t in range(11):
        y, s = conv(x[:, t : t + 1], s)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), whole)
    reference = F.silu(F.conv1d(F.pad(x.transpose(1, 2), (3, 0)), conv.conv.weight, conv.conv.bias, groups=6))
    torch.testing.assert_close(whole, reference.transpose(1, 2))


def test_mamba2_heads_must_divide_the_inner_size() -> None:
    with pytest.raises(LmlabError, match=r"model\.heads=3.*model\.groups=1"):
        build_model(config("mamba2", heads=3), VOCAB)
    with pytest.raises(LmlabError, match=r"model\.groups=3"):
        build_model(config("mamba2", heads=4, groups=3), VOCAB)


@pytest.mark.parametrize("family", ["mamba2", "gated_deltanet"])
def test_fused_kernels_without_cuda_is_a_clear_error(family: str) -> None:
    model = build_model(config(family, fused_kernels=True), VOCAB)
    with pytest.raises(LmlabError, match=r"model\.fused_kernels=true .*(GPU|pip install)"):
        model(torch.zeros(1, 9, dtype=torch.long))
    model(torch.zeros(1, 1, dtype=torch.long))  # one token is the recurrence: no kernel needed


def test_decay_gate_initialisation() -> None:
    """A in the papers' range, softplus(dt_bias) = dt log-uniform in [0.001, 0.1]: the decay starts near one."""
    from lmlab.models.blocks import DecayGate

    torch.manual_seed(0)
    gate = DecayGate(4096)
    A, dt = gate.A_log.exp(), F.softplus(gate.dt_bias)
    assert 1 <= A.min() and A.max() <= 16
    assert 1e-3 * 0.999 <= dt.min() and dt.max() <= 0.1 * 1.001
    assert abs(dt.log().mean().item() - (math.log(1e-3) + math.log(0.1)) / 2) < 0.1
    log_a, step = gate(torch.zeros(1, 1, 4096))
    torch.testing.assert_close(step[0, 0], dt)
    torch.testing.assert_close(log_a[0, 0], -A * dt)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused kernels run on CUDA only")
@pytest.mark.parametrize(("family", "package"), [("mamba2", "mamba_ssm"), ("gated_deltanet", "fla")])
def test_fused_kernels_agree_with_the_pure_pytorch_form(family: str, package: str) -> None:
    pytest.importorskip(package)
    torch.manual_seed(0)
    pure = build_model(config(family, width=128, layers=2), 8000).cuda()
    fused = build_model(config(family, width=128, layers=2, fused_kernels=True), 8000).cuda()
    fused.load_state_dict(pure.state_dict())
    tokens = torch.randint(0, 8000, (4, 300), device="cuda")
    state = pure(tokens[:, :37])[1]
    with torch.no_grad():
        (a, sa), (b, sb) = pure(tokens, state), fused(tokens, state)
    torch.testing.assert_close(a.log_softmax(-1), b.log_softmax(-1), rtol=0, atol=2e-3)
    for x, y in zip(sa, sb, strict=True):
        torch.testing.assert_close(x[1], y[1], rtol=1e-3, atol=1e-3)


def test_the_chunked_scans_from_none_equal_from_zeros() -> None:
    """None is the zero state without the work of reading it, in one chunk and across chunks."""
    from lmlab.models.gated_deltanet import chunk_delta_rule
    from lmlab.models.mamba2 import ssd

    for length in (5, 8, 21):
        v = random_inputs(length, seed=7)
        zeros = torch.zeros_like(v["h0"])
        from_none, from_zeros = (ssd(v["x"], v["log_a"], v["B"], v["C"], 8, h0) for h0 in (None, zeros))
        for a, b in zip(from_none, from_zeros, strict=True):
            torch.testing.assert_close(a, b)
        S = zeros.transpose(-1, -2)
        args = (v["C"], v["k"], v["x"], v["log_a"], v["beta"], 8)
        for a, b in zip(chunk_delta_rule(*args, None), chunk_delta_rule(*args, S), strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("family", ["mamba2", "gated_deltanet"])
def test_negative_eigenvalues_reach_the_layer_and_its_two_forms_agree(family: str) -> None:
    """`negative_eigenvalues=true` (Grazzi et al. 2025): some decays are negative (Mamba-2) or some writing
    strengths above 1 (Gated DeltaNet) at initialisation, the window form equals token by token across chunks,
    and the option changes the model's output (default off: the papers' layers)."""
    model = make(family, negative_eigenvalues=True, chunk_size=8).double().eval()
    mixer = model.blocks[0].mixer
    x = torch.randn(2, 37, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    a, beta = (mixer.in_proj(x)[..., -mixer.heads :], None) if family == "mamba2" else mixer.ab(x).chunk(2, dim=-1)
    if family == "mamba2":
        assert (2 * mixer.decay(a)[0].exp() - 1 < 0).any()
    else:
        assert (mixer.beta_scale * beta.sigmoid() > 1).any()
    batch = random_tokens(2, 37, seed=4)
    with torch.no_grad():
        whole, whole_state = model(batch, model.init_state(2))
        state, steps = model.init_state(2), []
        for t in range(37):
            logits, state = model(batch[:, t : t + 1], state)
            steps.append(logits)
        torch.testing.assert_close(torch.cat(steps, dim=1), whole)
        plain = make(family, chunk_size=8).double().eval()
        assert not torch.allclose(plain(batch, plain.init_state(2))[0], whole)


def test_negative_eigenvalues_have_no_mamba_ssm_kernel() -> None:
    with pytest.raises(LmlabError, match="negative_eigenvalues=true has no mamba-ssm kernel"):
        make("mamba2", negative_eigenvalues=True, fused_kernels=True)
