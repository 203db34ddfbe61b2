"""Recurrent layers beyond the shared tables: bad input rejected like torch, random configurations
against torch, packed sequences, dropout masks, extreme inputs, forward mode, per-sample gradients."""

import copy

import pytest
import torch
from cases_recurrent import Packed
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.utils._pytree import tree_leaves

import manual_backprop as mbp
from manual_backprop import LayerInputError
from manual_backprop.functional import recurrent as MR

from cases import DT

MODES = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}


def _pair(native: nn.Module) -> tuple[nn.Module, nn.Module]:
    return native, mbp.convert(copy.deepcopy(native), strict=True)


def _grad_leaves(out) -> list[torch.Tensor]:
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]


def _assert_same_run(native, manual, *inputs, tol=None, seed=1):
    """Same outputs, the same gradients for every input and parameter; the manual run passes the audit."""
    tol = tol or dict(rtol=1e-10, atol=1e-10)
    inputs_n = [t.detach().clone().requires_grad_() for t in inputs]
    inputs_m = [t.detach().clone().requires_grad_() for t in inputs]
    torch.manual_seed(seed)
    out_n = native(*inputs_n)
    torch.manual_seed(seed)
    out_m = manual(*inputs_m)
    torch.testing.assert_close(out_m, out_n, **tol)
    grads = [torch.randn_like(t) for t in _grad_leaves(out_n)]
    torch.autograd.backward(_grad_leaves(out_n), grads)
    audit = mbp.audit_backward(_grad_leaves(out_m), gradient=grads)
    assert audit.ok, str(audit)
    for a, b in zip(inputs_m, inputs_n):
        torch.testing.assert_close(a.grad, b.grad, **tol)
    for (name, p_m), (_, p_n) in zip(manual.named_parameters(), native.named_parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, **tol, msg=name)
    return out_m


# -- bad input: rejected where torch rejects it, with a message naming the shapes ---------------------

x3 = torch.randn(5, 2, 3)
p_rnn = [torch.randn(4, 3), torch.randn(4, 4), torch.randn(4), torch.randn(4)]


@pytest.mark.parametrize(
    ("manual", "native", "message"),
    [
        (lambda m: m(torch.randn(5, 2, 2)), nn.LSTM(3, 4), r"lstm: input has 2 features .* expects input_size=3"),
        (lambda m: m(torch.randn(2, 5, 3, 1)), nn.GRU(3, 4), r"gru: expected input to be 2-D .* got 4-D"),
        (lambda m: m(torch.randn(3)), nn.RNN(3, 4), r"rnn_tanh: expected input to be 2-D .* got 1-D"),
        (lambda m: m(x3, torch.zeros(1, 3, 4)), nn.GRU(3, 4), r"hx shape \(1, 3, 4\) does not match .* = \(1, 2, 4\)"),
        (lambda m: m(x3, torch.zeros(1, 4)), nn.RNN(3, 4), r"hx shape \(1, 4\) does not match .* = \(1, 2, 4\)"),
        (lambda m: m(torch.randn(5, 3), torch.zeros(1, 1, 4)), nn.RNN(3, 4),
         r"hx shape \(1, 1, 4\) does not match \(num_layers·directions, hidden_size\) = \(1, 4\)"),
        (lambda m: m(x3, torch.zeros(3, 2, 4)), nn.RNN(3, 4, 2), r"hx shape \(3, 2, 4\) .* = \(2, 2, 4\)"),
        (lambda m: m(x3, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 5))), nn.LSTM(3, 4),
         r"hx\[1\] shape \(1, 2, 5\) does not match"),
        (lambda m: m(x3, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))), nn.LSTM(3, 4, proj_size=2),
         r"hx\[0\] shape \(1, 2, 4\) does not match \(num_layers·directions, batch, proj_size\) = \(1, 2, 2\)"),
        (lambda m: m(x3.double()), nn.LSTM(3, 4), r"input dtype \(torch.float64\) does not match weight_ih_l0"),
        (lambda m: m(torch.randn(0, 2, 3)), nn.GRU(3, 4), r"sequence length to be larger than 0"),
        (lambda m: m(torch.randn(2, 2)), nn.RNNCell(3, 4), r"inconsistent input_size: got 2 .* expected 3"),
        (lambda m: m(torch.randn(2, 3), torch.zeros(3, 4)), nn.GRUCell(3, 4),
         r"gru_cell: hx shape \(3, 4\) does not match input shape \(2, 3\)"),
        (lambda m: m(torch.randn(2, 3, 3)), nn.LSTMCell(3, 4), r"expected input to be 1-D .* got 3-D"),
        (lambda m: m(torch.randn(3), (torch.zeros(2, 4), torch.zeros(2, 4))), nn.LSTMCell(3, 4),
         r"hx\[0\] shape \(2, 4\) does not match input shape \(3,\)"),
    ],
)
def test_modules_reject_bad_input_like_torch(manual, native, message):
    with pytest.raises((RuntimeError, ValueError, IndexError)):
        manual(native)  # torch rejects it too
    with pytest.raises(LayerInputError, match=message):
        manual(mbp.convert(native))


@pytest.mark.parametrize(
    ("call_it", "message"),
    [
        (lambda: MR.rnn_tanh(x3, torch.zeros(1, 2, 4), p_rnn[:3], True, 1, 0.0, False, False, False),
         r"rnn_tanh: got 3 parameters, expected num_layers·directions·4 = 4"),
        (lambda: MR.rnn_tanh(x3, torch.zeros(2, 2, 4), [*p_rnn, torch.randn(4, 5), *p_rnn[1:]], True, 2, 0.0, False,
                             False, False), r"weight_ih_l1 has shape \(4, 5\), expected \(4, 4\)"),
        (lambda: MR.gru(x3, torch.zeros(1, 2, 4), p_rnn, True, 1, 0.0, False, False, False),
         r"weight_ih_l0 shape \(4, 3\) is not \(3·hidden_size, input_size\)"),
        (lambda: MR.lstm(x3, (torch.zeros(1, 2, 4),), p_rnn, True, 1, 0.0, False, False, False),
         r"lstm expects two hidden states \(h, c\)"),
        (lambda: MR.rnn_tanh(x3, None, p_rnn * 2, True, 2, 1.5, True, False, False), r"dropout must be in \[0, 1\]"),
        (lambda: MR.rnn_tanh(x3.long(), None, p_rnn, True, 1, 0.0, False, False, False), r"floating-point"),
        (lambda: MR.rnn_tanh(PackedSequence(torch.randn(4, 3), torch.tensor([1, 3])), None, p_rnn, True, 1, 0.0,
                             False, False, False), r"batch_sizes \[1, 3\] must not increase"),
        (lambda: MR.lstm_cell(torch.randn(2, 3), None, torch.randn(15, 3), torch.randn(16, 4)),
         r"lstm_cell: w_ih shape \(15, 3\) does not fit hidden_size=4 .* expected \(16, 3\)"),
        (lambda: MR.rnn_relu_cell(torch.randn(2, 3), torch.zeros(2, 4), *p_rnn[:2], torch.randn(5)),
         r"b_ih shape \(5,\) does not fit"),
    ],
)
def test_functional_bad_input_is_a_clear_error(call_it, message):
    with pytest.raises(LayerInputError, match=message):
        call_it()


def test_an_error_names_the_layer_path():
    model = mbp.convert(nn.Sequential(nn.LSTM(3, 4)))
    with pytest.raises(LayerInputError, match=r"layer '0' \(LSTM\): lstm: input has 2 features"):
        model(torch.randn(5, 2, 2))


# -- the drop-ins keep torch's names, state and results ------------------------------------------------


def test_parameter_names_and_state_dict_are_torchs():
    native = nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2)
    manual = mbp.convert(copy.deepcopy(native))
    assert type(manual) is mbp.SUPPORTED_MODULES[nn.LSTM] and isinstance(manual, nn.LSTM)
    assert list(manual.state_dict()) == list(native.state_dict())
    assert "weight_hh_l1_reverse" in manual.state_dict() and "weight_hr_l0" in manual.state_dict()
    native.load_state_dict(manual.state_dict())
    assert mbp.restore(manual).__class__ is nn.LSTM


@pytest.mark.parametrize("frozen", ["parameters", "input"])
def test_only_what_needs_a_gradient_gets_one(frozen):
    native, manual = _pair(nn.LSTM(2, 3, 2, bidirectional=True).to(DT))
    for model in (native, manual):
        model.requires_grad_(frozen != "parameters")
    x = torch.randn(3, 2, 2, dtype=DT, requires_grad=frozen != "input")
    grads = []
    for model in (native, manual):
        out = model(x)[0]
        wrt = [x] if frozen == "parameters" else list(model.parameters())
        grads.append(torch.autograd.grad((out**2).sum(), wrt))
    for got, want in zip(*reversed(grads)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    mode=st.sampled_from(sorted(MODES)),
    layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    bias=st.booleans(),
    lengths=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    packed=st.booleans(),
    with_state=st.booleans(),
)
def test_random_configurations_match_torch(mode, layers, bidirectional, batch_first, bias, lengths, packed,
                                           with_state):
    rnn = MODES[mode](2, 3, layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional).to(DT)
    states = [torch.randn(layers * (1 + bidirectional), len(lengths), 3, dtype=DT)] * with_state
    states *= 2 if mode == "LSTM" else 1
    if packed:
        native, manual = _pair(Packed(rnn, lengths))
        _assert_same_run(native, manual, torch.randn(sum(lengths), 2, dtype=DT), *states)
    else:
        native, manual = _pair(nn.Sequential(rnn)) if not states else _pair(_WithState(rnn))
        shape = (len(lengths), max(lengths), 2) if batch_first else (max(lengths), len(lengths), 2)
        _assert_same_run(native, manual, torch.randn(*shape, dtype=DT), *states)


class _WithState(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, *states):
        return self.rnn(x, states if len(states) > 1 else states[0])


# -- packed sequences ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
def test_packed_output_is_each_sequence_run_alone(mode):
    """A packed batch of lengths 3, 1, 2 gives each sequence what it gets run alone, at its own length:
    a sequence that ended early keeps its last state, and the reverse direction starts at its own end."""
    manual = mbp.convert(MODES[mode](2, 3, 2, bidirectional=True).to(DT))
    lengths = [3, 1, 2]
    x = torch.randn(3, 3, 2, dtype=DT)
    out, h = manual(pack_padded_sequence(x, lengths, enforce_sorted=False))
    assert isinstance(out, PackedSequence)
    padded, out_lengths = pad_packed_sequence(out)
    assert out_lengths.tolist() == lengths
    h_n = h[0] if mode == "LSTM" else h
    for b, n in enumerate(lengths):
        alone, h_alone = manual(x[:n, b])  # unbatched, n steps
        torch.testing.assert_close(padded[:n, b], alone, rtol=1e-12, atol=1e-12)
        assert not padded[n:, b].any()
        torch.testing.assert_close(h_n[:, b], h_alone[0] if mode == "LSTM" else h_alone, rtol=1e-12, atol=1e-12)


# -- dropout -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.3, 1.0])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_dropout_draws_torchs_masks_and_as_many_random_numbers(mode, p):
    native, manual = _pair(MODES[mode](2, 3, 3, dropout=p, batch_first=True).to(DT))
    x = torch.randn(2, 4, 2, dtype=DT)
    _assert_same_run(native, manual, x, seed=7)  # same masks: same outputs and gradients
    drawn_after = []
    for model in (native, manual):
        torch.manual_seed(7)
        model(x)
        drawn_after.append(torch.rand(3))  # where the generator stands after the forward
    assert torch.equal(*drawn_after)


def test_dropout_is_off_in_eval_mode():
    manual = mbp.convert(nn.GRU(2, 3, 2, dropout=0.9).to(DT)).eval()
    x = torch.randn(4, 2, 2, dtype=DT)
    torch.testing.assert_close(manual(x), manual(x), rtol=0, atol=0)


# -- extreme inputs: saturated gates, as finite and as accurate as torch --------------------------------

EXTREME_MODELS = {"RNN": lambda: nn.RNN(2, 3, 2, bidirectional=True),
                  "RNN-relu": lambda: nn.RNN(2, 3, 2, nonlinearity="relu"),
                  "LSTM": lambda: nn.LSTM(2, 3, 2, bidirectional=True),
                  "GRU": lambda: nn.GRU(2, 3, 2, bidirectional=True)}


@pytest.mark.parametrize("mode", sorted(EXTREME_MODELS))
@pytest.mark.parametrize("scale", [1e4, 1e-30])
def test_extreme_inputs_match_torch_in_float64(mode, scale):
    native, manual = _pair(EXTREME_MODELS[mode]().to(DT))
    out = _assert_same_run(native, manual, torch.randn(4, 2, 2, dtype=DT) * scale)
    assert all(torch.isfinite(t).all() for t in tree_leaves(out))


def _float32_run(model, x, grads):
    x = x.detach().to(next(model.parameters()).dtype).requires_grad_()
    out = _grad_leaves(model(x))
    torch.autograd.backward(out, [g.to(t.dtype) for g, t in zip(grads, out)])
    return [t.double() for t in out], [x.grad.double()] + [p.grad.double() for p in model.parameters()]


@pytest.mark.parametrize("mode", sorted(EXTREME_MODELS))
@pytest.mark.parametrize("scale", [1e4, 30.0])
def test_extreme_inputs_in_float32_are_finite_and_as_accurate_as_torch(mode, scale):
    """Saturated gates in float32: every gradient as close to the exact (float64) one as torch's.
    torch's float32 CPU LSTM is oneDNN's, not the same arithmetic, so the yardstick is the truth."""
    native = EXTREME_MODELS[mode]()
    manual = mbp.convert(copy.deepcopy(native))
    exact = copy.deepcopy(native).to(DT)
    x = torch.randn(4, 2, 2, dtype=DT) * scale
    grads = [torch.randn_like(t) for t in _grad_leaves(exact(x))]
    (out_exact, grads_exact), (out_n, grads_n), (out_m, grads_m) = [_float32_run(m, x, grads)
                                                                     for m in (exact, native, manual)]
    for want, got_n, got_m in zip(out_exact + grads_exact, out_n + grads_n, out_m + grads_m):
        assert torch.isfinite(got_m).all()
        err_native, err_manual = (got_n - want).abs().max(), (got_m - want).abs().max()
        assert err_manual <= 2 * err_native + 1e-6 * (1 + want.abs().max())


def test_a_saturated_gate_keeps_its_slope():
    """σ′(z) = σ(z)σ(−z) and tanh′(z) = 4σ(2z)σ(−2z) stay exact where a(1 − a) and 1 − a² round to 0."""
    z = torch.tensor([-30.0, -17.0, 0.0, 9.0, 17.0, 30.0])
    exact_sigmoid = torch.sigmoid(z.double()) * torch.sigmoid(-z.double())
    exact_tanh = 1 / torch.cosh(z.double()) ** 2
    torch.testing.assert_close(MR._sigmoid_slope(z).double(), exact_sigmoid, rtol=1e-5, atol=0)
    torch.testing.assert_close(MR._tanh_slope(z).double(), exact_tanh, rtol=1e-5, atol=0)
    a = torch.sigmoid(z)
    assert (a * (1 - a))[-1] == 0  # what the output alone gives in float32


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.LSTM(2, 3, 2, bidirectional=True, dropout=0.5), (4, 2, 2)),
    (lambda: nn.LSTM(2, 3, proj_size=2, batch_first=True), (2, 4, 2)),
    (lambda: Packed(nn.LSTM(2, 3, bidirectional=True), [2, 4, 1]), (7, 2)),
    (lambda: nn.LSTM(2, 3, bias=False), (4, 2)),
], ids=["2-layers-bidirectional-dropout", "proj_size-batch_first", "packed-bidirectional", "unbatched-no-bias"])
def test_the_backward_from_kept_gates_is_the_one_that_recomputes_them(make, shape):
    """Without create_graph the LSTM's backward reads the gates forward kept (LSTMStep.backward_through_time,
    after torch's kernel ran the steps where it can); with it, the differentiable path runs the steps again.
    Both give the same first derivatives."""
    model = mbp.convert(make().to(DT))
    x = torch.randn(*shape, dtype=DT, requires_grad=True)
    grads = []
    for create_graph in (False, True):
        torch.manual_seed(0)
        out = _grad_leaves(model(x))
        weights = [torch.ones_like(t) * torch.arange(t.numel(), dtype=DT).view_as(t).cos() for t in out]
        loss = sum((t * w).sum() for t, w in zip(out, weights))
        grads.append(torch.autograd.grad(loss, [x, *model.parameters()], create_graph=create_graph))
    for fast, recomputed in zip(*grads):
        torch.testing.assert_close(fast, recomputed.detach(), rtol=1e-10, atol=1e-12)


# -- forward mode, per-sample gradients, low precision -------------------------------------------------


@pytest.mark.parametrize("make", [lambda: nn.LSTM(2, 3, 2, bidirectional=True, proj_size=2),
                                  lambda: nn.GRU(2, 3, batch_first=True), lambda: nn.LSTMCell(2, 3)],
                         ids=["LSTM", "GRU", "LSTMCell"])
def test_forward_mode_matches_torch(make):
    native, manual = _pair(make().to(DT))
    x, tangent = torch.randn(3, 2, 2, dtype=DT), torch.randn(3, 2, 2, dtype=DT)
    if isinstance(native, nn.LSTMCell):
        x, tangent = x[0], tangent[0]
    out_m, jvp_m = torch.func.jvp(lambda inp: manual(inp)[1], (x,), (tangent,))
    out_n, jvp_n = torch.func.jvp(lambda inp: native(inp)[1], (x,), (tangent,))
    torch.testing.assert_close(out_m, out_n, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(jvp_m, jvp_n, rtol=1e-10, atol=1e-12)


def test_per_sample_gradients_of_a_module_with_vmap():
    """vmap(grad) over samples: each sample is an unbatched (T, features) sequence inside."""
    manual = mbp.convert(nn.LSTM(2, 3, 2, bidirectional=True).to(DT))
    params = {name: p.detach() for name, p in manual.named_parameters()}

    def loss(p, x):
        output, (_, c_n) = torch.func.functional_call(manual, p, (x,))
        return (output**2).sum() + c_n.sum()

    xs = torch.randn(3, 4, 2, dtype=DT)
    batched = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xs)
    for n in range(3):
        one = torch.func.grad(loss)(params, xs[n])
        for name in params:
            torch.testing.assert_close(batched[name][n], one[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_as_close_to_float64_as_torch(dtype):
    reference = nn.LSTM(4, 8, 2, bidirectional=True).to(DT)
    x = torch.randn(5, 3, 4, dtype=DT)
    results = []
    for model in (reference, copy.deepcopy(reference).to(dtype), mbp.convert(copy.deepcopy(reference).to(dtype))):
        inp = x.detach().to(next(model.parameters()).dtype).requires_grad_()
        out = model(inp)[0]
        out.float().pow(2).sum().backward()
        assert out.dtype == inp.dtype and inp.grad.dtype == inp.dtype
        results.append([out.double(), inp.grad.double(), model.weight_ih_l0.grad.double()])
    for want, native, manual in zip(*results):
        err_native, err_manual = (native - want).abs().max(), (manual - want).abs().max()
        assert err_manual <= 2 * err_native + 1e-3
