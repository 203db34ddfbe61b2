"""Every Function: exact first and second derivatives (float64), and the same values and gradients
as torch's own implementation."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_backprop.functional as MF
from manual_backprop import LayerInputError
from manual_backprop.functional.linear import flatten, unflatten

from cases import DT, FUNCTION_CASES, call
from signatures import signature_params

ids = [c.id for c in FUNCTION_CASES]


def _differentiable(args):
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


@pytest.mark.parametrize("case", FUNCTION_CASES, ids=ids)
def test_gradcheck(case):
    args = case.args()

    def fn(*diff):
        it = iter(diff)
        full = [next(it) if isinstance(a, torch.Tensor) and a.requires_grad else a for a in args]
        return call(case.manual, full, case.kwargs)

    assert torch.autograd.gradcheck(fn, tuple(_differentiable(args)), check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(fn, tuple(_differentiable(args)))


@pytest.mark.parametrize("case", FUNCTION_CASES, ids=ids)
def test_matches_torch(case):
    args = case.args()
    twins = [a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args]
    out = call(case.manual, args, case.kwargs)
    expected = call(case.native, twins, case.kwargs)
    torch.testing.assert_close(out, expected, rtol=case.rtol, atol=case.rtol / 100)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, _differentiable(args), grad_out)
    want = torch.autograd.grad(expected, _differentiable(twins), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=case.rtol, atol=case.rtol / 100)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    n_in=st.integers(1, 6),
    n_out=st.integers(1, 6),
    bias=st.booleans(),
)
def test_linear_any_leading_dims(batch, n_in, n_out, bias):
    x = torch.randn(*batch, n_in, dtype=DT, requires_grad=True)
    w = torch.randn(n_out, n_in, dtype=DT, requires_grad=True)
    b = torch.randn(n_out, dtype=DT, requires_grad=True) if bias else None
    params = [t for t in (x, w, b) if t is not None]
    out = MF.linear(x, w, b)
    expected = torch.nn.functional.linear(x, w, b)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(expected, params, g)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5),
    n_classes=st.integers(2, 5),
    spatial=st.lists(st.integers(1, 3), max_size=2),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    smoothing=st.sampled_from([0.0, 0.3]),
    weighted=st.booleans(),
)
def test_cross_entropy_any_shape_and_options(n, n_classes, spatial, reduction, smoothing, weighted):
    z = torch.randn(n, n_classes, *spatial, dtype=DT, requires_grad=True)
    t = torch.randint(0, n_classes, (n, *spatial))
    w = torch.rand(n_classes, dtype=DT) + 0.5 if weighted else None
    kwargs = dict(weight=w, reduction=reduction, label_smoothing=smoothing)
    out, expected = MF.cross_entropy(z, t, **kwargs), torch.nn.functional.cross_entropy(z, t, **kwargs)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, z, g)[0], torch.autograd.grad(expected, z, g)[0],
                               rtol=1e-10, atol=1e-12)


def test_cross_entropy_is_softmax_minus_onehot_over_n():
    z = torch.randn(4, 3, dtype=DT, requires_grad=True)
    y = torch.tensor([0, 2, 1, 2])
    (delta,) = torch.autograd.grad(MF.cross_entropy(z, y), z)
    expected = (torch.softmax(z, 1) - torch.nn.functional.one_hot(y, 3)) / 4
    torch.testing.assert_close(delta, expected.detach(), rtol=1e-12, atol=1e-14)


def test_mse_gradient_is_two_errors_over_n():
    a = torch.randn(3, 2, dtype=DT, requires_grad=True)
    y = torch.randn(3, 2, dtype=DT)
    (grad,) = torch.autograd.grad(MF.mse_loss(a, y), a)
    torch.testing.assert_close(grad, (2 * (a - y) / 6).detach())


def test_softmax_dtype_argument_casts_like_torch():
    z = torch.randn(3, 4, requires_grad=True)
    out = MF.softmax(z, dim=1, dtype=torch.float64)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.softmax(z.detach(), 1, dtype=torch.float64))
    (grad,) = torch.autograd.grad(out[:, 0].sum(), z)
    assert grad.dtype == torch.float32


def test_softmax_without_dim_warns_like_torch():
    z = torch.randn(2, 3)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        out = MF.softmax(z)
    torch.testing.assert_close(out, torch.softmax(z, 1))


def test_relu_inplace_overwrites_its_input():
    z = torch.tensor([-1.0, 2.0], requires_grad=True)
    h = z * 1
    out = MF.relu(h, inplace=True)
    assert out is h and h.tolist() == [0.0, 2.0]
    out.sum().backward()
    assert z.grad.tolist() == [0.0, 1.0]


#: twins outside torch.nn.functional: torch.lstm, torch.gru_cell, ... are C builtins with several overloads
RECURRENT = {"gru", "gru_cell", "lstm", "lstm_cell", "rnn_relu", "rnn_relu_cell", "rnn_tanh", "rnn_tanh_cell"}


@pytest.mark.parametrize("name", sorted(set(MF.__all__) - RECURRENT))
def test_functional_signatures_mirror_torch(name):
    theirs = getattr(torch.nn.functional, name)
    if [p for p, _ in signature_params(theirs)] == ["args", "kwargs"]:  # F.max_pool* hide theirs behind
        theirs = getattr(torch.nn.functional, f"{name}_with_indices")  # a dispatcher on return_indices
    assert signature_params(getattr(MF, name)) == signature_params(theirs)


def test_every_functional_entry_has_a_torch_twin():
    assert all(hasattr(torch.nn.functional, n) or hasattr(torch, n) for n in MF.__all__)


@pytest.mark.parametrize(
    ("call_it", "message"),
    [
        (lambda: MF.linear(torch.randn(4, 5), torch.randn(2, 3)), r"input shape \(4, 5\).*in_features=3"),
        (lambda: MF.linear(torch.randn(4, 3), torch.randn(2, 3), torch.randn(3)), r"bias shape \(3,\)"),
        (lambda: MF.linear(torch.randn(4, 3), torch.randn(3)), r"weight must be 2-D"),
        (lambda: MF.bilinear(torch.randn(4, 3), torch.randn(5, 2), torch.randn(1, 3, 2)), r"must agree on every"),
        (lambda: flatten(torch.randn(2, 3, 4), 2, 1), r"flatten: start_dim 2 comes after end_dim 1"),
        (lambda: unflatten(torch.randn(2, 12), 1, (5, -1)), r"unflatten: sizes \(5, -1\) do not multiply"),
        (lambda: MF.mse_loss(torch.randn(4, 1), torch.randn(4)),
         r"target shape \(4,\) differs from input shape \(4, 1\)"),
        (lambda: MF.mse_loss(torch.randn(4), torch.randn(4), reduction="avg"), r"reduction must be one of"),
        (lambda: MF.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 3, 7])),
         r"class indices \[3, 7\] outside \[0, 3\)"),
        (lambda: MF.cross_entropy(torch.randn(4, 3), torch.zeros(3, dtype=torch.long)), r"expected \(4,\)"),
        (lambda: MF.cross_entropy(torch.randn(4, 3), torch.randn(4, 2)), r"probability target shape"),
        (lambda: MF.cross_entropy(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), weight=torch.ones(2)),
         r"weight shape \(2,\) is not \(3,\)"),
        (lambda: MF.cross_entropy(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), label_smoothing=1.5),
         r"label_smoothing must be in \[0, 1\]"),
    ],
)
def test_bad_input_is_a_clear_error(call_it, message):
    with pytest.raises(LayerInputError, match=message):
        call_it()


@pytest.mark.parametrize("case", FUNCTION_CASES, ids=ids)
def test_per_sample_gradients_with_vmap(case):
    """torch.func.vmap(grad(...)) over two independent samples equals one backward per sample."""
    samples = [case.args() for _ in range(2)]
    slots = [i for i, a in enumerate(samples[0]) if isinstance(a, torch.Tensor)]
    wrt = tuple(k for k, i in enumerate(slots) if samples[0][i].requires_grad)

    def loss(*tensors):
        args = list(samples[0])
        for i, t in zip(slots, tensors):
            args[i] = t
        return call(case.manual, args, case.kwargs).sum()

    stacked = [torch.stack([s[i].detach() for s in samples]) for i in slots]
    batched = torch.func.vmap(torch.func.grad(loss, argnums=wrt))(*stacked)
    for n, sample in enumerate(samples):
        tensors = [sample[i] for i in slots]
        one_by_one = torch.autograd.grad(loss(*tensors), [tensors[k] for k in wrt])
        for got, want in zip(batched, one_by_one):
            torch.testing.assert_close(got[n], want, rtol=1e-10, atol=1e-12)


def test_cross_entropy_with_a_minus_infinity_logit_off_the_target_is_finite_like_torch():
    z = torch.tensor([[0.0, float("-inf"), 1.0]], dtype=DT, requires_grad=True)
    z_native = z.detach().clone().requires_grad_()
    y = torch.tensor([0])
    loss, expected = MF.cross_entropy(z, y), torch.nn.functional.cross_entropy(z_native, y)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(z.grad, z_native.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_with_every_sample_ignored_has_zero_gradient_like_torch(reduction):
    z = torch.randn(3, 4, dtype=DT, requires_grad=True)
    z_native = z.detach().clone().requires_grad_()
    y = torch.full((3,), -100)
    loss, expected = MF.cross_entropy(z, y, reduction=reduction), torch.nn.functional.cross_entropy(
        z_native, y, reduction=reduction)
    torch.testing.assert_close(loss, expected, equal_nan=True)  # 0/0 for 'mean', as in torch
    loss.backward()
    expected.backward()
    assert torch.equal(z.grad, z_native.grad) and not z.grad.any()


def test_probability_targets_refuse_ignore_index_like_torch():
    with pytest.raises(LayerInputError, match="ignore_index=3 applies to class-index targets only"):
        MF.cross_entropy(torch.randn(2, 4), torch.softmax(torch.randn(2, 4), 1), ignore_index=3)
