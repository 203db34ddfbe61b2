"""What the table of tests/cases_ops.py cannot express: bad input, ties, rounding modes, extreme
values, mixed dtypes and any broadcasting shape."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_backprop import LayerInputError
from manual_backprop.functional import ops

from cases import DT


def _both(manual, native, *args, grad_out=None, **kwargs):
    """Outputs and gradients of the manual op and of torch's, on copies of the same leaves."""
    twins = [a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args]
    out, expected = manual(*args, **kwargs), native(*twins, **kwargs)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    twin_leaves = [a for a in twins if isinstance(a, torch.Tensor) and a.requires_grad]
    g = torch.ones_like(out) if grad_out is None else grad_out
    return out, expected, torch.autograd.grad(out, leaves, g), torch.autograd.grad(expected, twin_leaves, g)


def _assert_same(manual, native, *args, **kwargs):
    out, expected, grads, want = _both(manual, native, *args, **kwargs)
    torch.testing.assert_close(out, expected, equal_nan=True, rtol=1e-10, atol=0)
    for g, w in zip(grads, want):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, equal_nan=True, rtol=1e-10, atol=0)


@pytest.mark.parametrize(
    ("call_it", "message"),
    [
        (lambda: ops.add(torch.randn(2, 3), torch.randn(4)), r"add: input shape \(2, 3\), other shape \(4,\) do not"),
        (lambda: ops.mul(2.0, torch.randn(3)), r"mul: input must be a Tensor, got float"),
        (lambda: ops.sub(torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool)),
         r"sub: subtraction of bool"),
        (lambda: ops.div(torch.randn(3), torch.randn(3), rounding_mode="floor"), r"div: rounding_mode='floor'"),
        (lambda: ops.div(torch.randn(3), torch.randn(3), rounding_mode="trunc"), r"div: rounding_mode='trunc'"),
        (lambda: ops.pow(2.0, 3.0), r"pow: input or exponent must be a Tensor"),
        (lambda: ops.pow(torch.randn(3), torch.randn(2)), r"pow: input shape \(3,\), exponent shape \(2,\)"),
        (lambda: ops.where(torch.ones(3), torch.randn(3), torch.randn(3)), r"where: condition must be a bool"),
        (lambda: ops.where(torch.ones(3, dtype=torch.bool), torch.randn(2), 0.0), r"where: condition shape \(3,\)"),
        (lambda: ops.clamp(torch.randn(3)), r"clamp: at least one of min and max"),
        (lambda: ops.clamp(torch.randn(3), min=torch.zeros(3)), r"clamp: min as a Tensor"),
        (lambda: ops.neg(torch.ones(2, dtype=torch.bool)), r"neg: negation of a bool"),
        (lambda: ops.exp([1.0]), r"exp: input must be a Tensor, got list"),
        (lambda: ops.sum(torch.randn(2, 3), dim=2), r"sum: dim 2 out of range for input shape \(2, 3\)"),
        (lambda: ops.mean(torch.randn(2, 3), dim=(1, -1)), r"mean: dim \(1, -1\) names a dimension twice"),
        (lambda: ops.mean(torch.ones(2, dtype=torch.long)), r"mean: input dtype torch.int64 is not floating"),
        (lambda: ops.var(torch.ones(2, dtype=torch.long)), r"var: input dtype torch.int64"),
        (lambda: ops.amax(torch.randn(0, 3), dim=0), r"amax: cannot reduce an empty dimension"),
        (lambda: ops.amin(torch.randn(2, 3), dim=-3), r"amin: dim -3 out of range"),
        (lambda: ops.matmul(torch.randn(2, 3), torch.randn(4, 2)), r"matmul: input shape \(2, 3\) and other shape"),
        (lambda: ops.matmul(torch.randn(3), torch.tensor(2.0)), r"matmul: both arguments need at least 1 dim"),
        (lambda: ops.matmul(torch.randn(2, 3, 4), torch.randn(3, 4, 2)), r"matmul: batch dimensions"),
        (lambda: ops.matmul(torch.randn(2, 3), torch.randn(3, 2, dtype=DT)), r"matmul: operands must have the same"),
        (lambda: ops.mm(torch.randn(2, 3, 1), torch.randn(3, 2)), r"mm: expected \(n, m\) and \(m, p\)"),
        (lambda: ops.bmm(torch.randn(2, 3, 4), torch.randn(3, 4, 2)), r"bmm: expected \(b, n, m\) and \(b, m, p\)"),
        (lambda: ops.addmm(torch.randn(3), torch.randn(2, 4), torch.randn(4, 2)),
         r"addmm: input shape \(3,\) does not broadcast to the product shape \(2, 2\)"),
        (lambda: ops.addmm(torch.randn(2, 2), torch.randn(2, 4), torch.randn(3, 2)), r"addmm: expected \(n, m\)"),
    ],
)
def test_bad_input_is_a_clear_error(call_it, message):
    with pytest.raises(LayerInputError, match=message):
        call_it()


def test_rounding_modes_are_rejected_even_without_gradients():
    """floor/trunc division is a step function: no derivative worth passing back, so it is refused."""
    with pytest.raises(LayerInputError, match="no useful derivative"):
        ops.div(torch.tensor([7.0]), 2.0, rounding_mode="floor")


@pytest.mark.parametrize(("manual", "native"), [(ops.amax, torch.amax), (ops.amin, torch.amin)])
def test_ties_split_the_gradient_evenly_like_torch(manual, native):
    x = torch.tensor([[1.0, 3.0, 3.0, 3.0], [-2.0, -2.0, 0.0, 1.0]], dtype=DT, requires_grad=True)
    for kwargs in ({}, {"dim": 1}, {"dim": 0, "keepdim": True}):
        out, expected, (grad,), (want,) = _both(manual, native, x, **kwargs)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(grad, want, rtol=1e-12, atol=0)
    (grad,) = torch.autograd.grad(ops.amax(x, dim=1).sum(), x)
    assert grad[0].tolist() == [0.0, 1 / 3, 1 / 3, 1 / 3]


@pytest.mark.parametrize(
    ("manual", "native", "args"),
    [
        (ops.exp, torch.exp, (torch.tensor([-800.0, 0.0, 700.0, 800.0], dtype=DT),)),
        (ops.log, torch.log, (torch.tensor([0.0, 1e-300, 1.0, float("inf")], dtype=DT),)),
        (ops.sqrt, torch.sqrt, (torch.tensor([0.0, 1e-300, 4.0, 1e300], dtype=DT),)),
        (ops.abs, torch.abs, (torch.tensor([-1e300, 0.0, -0.0, 2.0], dtype=DT),)),
        (ops.reciprocal, torch.reciprocal, (torch.tensor([1e-200, -1e200, 0.0, 3.0], dtype=DT),)),
        (ops.clamp, torch.clamp, (torch.tensor([-1e300, -1.0, 1.0, 1e300], dtype=DT), -1.0, 1.0)),
        (ops.div, torch.div, (torch.tensor([1e300, 1.0, 0.0], dtype=DT), torch.tensor([1e-300, 0.0, 0.0], dtype=DT))),
        (ops.pow, torch.pow, (torch.tensor([0.0, 0.0, 2.0, -2.0], dtype=DT),
                              torch.tensor([2.0, 0.0, 0.5, 3.0], dtype=DT))),
        (ops.pow, torch.pow, (torch.tensor([0.0, 1e-300, 3.0], dtype=DT), 0)),
        (ops.pow, torch.pow, (0.0, torch.tensor([0.0, 1.0, -1.0], dtype=DT))),
        (ops.mul, torch.mul, (torch.tensor([1e300, 0.0], dtype=DT), torch.tensor([1e10, float("inf")], dtype=DT))),
        (ops.var, torch.var, (torch.tensor([1e150, -1e150, 3.0], dtype=DT),)),
        (ops.amax, torch.amax, (torch.tensor([[float("-inf"), float("-inf")], [1.0, float("inf")]], dtype=DT), 1)),
        (ops.amax, torch.amax, (torch.tensor([1.0, float("nan"), 2.0], dtype=DT),)),
        (ops.mean, torch.mean, (torch.tensor([1e308, 1e308], dtype=DT),)),
    ],
)
def test_extreme_values_give_what_torch_gives(manual, native, args):
    args = tuple(a.clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
    _assert_same(manual, native, *args)


def test_var_of_one_entry_is_nan_like_torch():
    x = torch.tensor([2.0], dtype=DT, requires_grad=True)
    with pytest.warns(UserWarning, match="degrees of freedom"):
        _assert_same(ops.var, torch.var, x)


def test_mixed_dtypes_promote_and_each_gradient_keeps_its_operand_dtype():
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.randn(4, dtype=DT, requires_grad=True)
    for manual, native in [(ops.add, torch.add), (ops.mul, torch.mul), (ops.div, torch.div), (ops.sub, torch.sub)]:
        out, expected, grads, want = _both(manual, native, x, y)
        assert out.dtype == expected.dtype == DT
        assert [g.dtype for g in grads] == [w.dtype for w in want] == [torch.float32, DT]
        for g, w in zip(grads, want):
            torch.testing.assert_close(g, w)


def test_sum_and_mean_dtype_argument_casts_like_torch():
    x = torch.randn(3, 4, requires_grad=True)
    for manual, native in [(ops.sum, torch.sum), (ops.mean, torch.mean)]:
        out, expected, (grad,), (want,) = _both(manual, native, x, 1, dtype=DT)
        assert out.dtype == DT and grad.dtype == torch.float32
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(grad, want)


def test_integer_inputs_compute_like_torch_without_gradients():
    i = torch.arange(6).reshape(2, 3)
    assert torch.equal(ops.add(i, 2, alpha=3), torch.add(i, 2, alpha=3))
    assert torch.equal(ops.mul(i, i), i * i)
    torch.testing.assert_close(ops.div(i, 4), torch.div(i, 4))
    assert torch.equal(ops.sum(i, dim=1), i.sum(1))
    assert torch.equal(ops.amax(i), i.amax())
    assert torch.equal(ops.matmul(i, i.T), i @ i.T)


def test_clamp_passes_the_gradient_at_its_bounds_like_torch():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0], dtype=DT, requires_grad=True)
    _assert_same(ops.clamp, torch.clamp, x, 0.0, 1.0)
    (grad,) = torch.autograd.grad(ops.clamp(x, 0.0, 1.0).sum(), x)
    assert grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    _assert_same(ops.clamp, torch.clamp, x, 1.5, 0.5)  # min > max: every output is max, no gradient


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_like_torch(dtype):
    x = (torch.rand(3, 4) + 0.5).to(dtype).requires_grad_()
    w = torch.randn(4, 2).to(dtype).requires_grad_()
    for manual, native, args in [(ops.matmul, torch.matmul, (x, w)), (ops.pow, torch.pow, (x, 1.5)),
                                 (ops.log, torch.log, (x,)), (ops.amax, torch.amax, (x, 1)),
                                 (ops.var, torch.var, (x, 0))]:
        out, expected, grads, want = _both(manual, native, *args)
        assert out.dtype == expected.dtype
        torch.testing.assert_close(out, expected)
        for g, w_ in zip(grads, want):
            assert g.dtype == dtype
            torch.testing.assert_close(g, w_, rtol=2e-2, atol=1e-2)


_dims = st.lists(st.integers(1, 3), min_size=0, max_size=3)


@settings(max_examples=30, deadline=None)
@given(a=_dims, b_rank=st.integers(0, 3), stretch=st.lists(st.booleans(), min_size=3, max_size=3),
       op=st.sampled_from(["add", "sub", "mul", "div", "pow"]))
def test_any_broadcast_matches_torch(a, b_rank, stretch, op):
    """Random shapes made to broadcast: b's dimensions are a's trailing ones, some shrunk to 1."""
    b = [1 if s else n for n, s in zip(a[len(a) - min(b_rank, len(a)):], stretch)]
    if b_rank > len(a):  # or b has more dimensions than a, a's being its trailing ones
        a, b = b, a
    x = (torch.rand(a, dtype=DT) + 0.5).requires_grad_()
    y = (torch.rand(b, dtype=DT) + 0.5).requires_grad_()
    grad_out = torch.randn(torch.broadcast_shapes(x.shape, y.shape), dtype=DT)
    _assert_same(getattr(ops, op), getattr(torch, op), x, y, grad_out=grad_out)


@settings(max_examples=30, deadline=None)
@given(batch=_dims, a_ones=st.lists(st.booleans(), min_size=3, max_size=3), b_rank=st.integers(0, 3),
       n=st.integers(1, 3), m=st.integers(1, 3), p=st.integers(1, 3), a_vec=st.booleans(), b_vec=st.booleans())
def test_matmul_any_shapes_match_torch(batch, a_ones, b_rank, n, m, p, a_vec, b_vec):
    """a's batch dims are ``batch`` with some shrunk to 1; b's are a suffix of it with the others shrunk."""
    a_batch = [1 if one else d for d, one in zip(batch, a_ones)]
    b_batch = [d if one else 1 for d, one in zip(batch, a_ones)][len(batch) - min(b_rank, len(batch)):]
    a = torch.randn((m,) if a_vec else (*a_batch, n, m), dtype=DT, requires_grad=True)
    b = torch.randn((m,) if b_vec else (*b_batch, m, p), dtype=DT, requires_grad=True)
    grad_out = torch.randn(torch.matmul(a, b).shape, dtype=DT)
    _assert_same(ops.matmul, torch.matmul, a, b, grad_out=grad_out)


def test_forward_mode_through_broadcasting():
    x, y = torch.randn(3, 1, dtype=DT), torch.randn(4, dtype=DT)
    tx, ty = torch.randn(3, 1, dtype=DT), torch.randn(4, dtype=DT)
    for manual, native in [(ops.mul, torch.mul), (ops.add, torch.add)]:
        _, got = torch.func.jvp(manual, (x, y), (tx, ty))
        _, want = torch.func.jvp(native, (x, y), (tx, ty))
        torch.testing.assert_close(got, want)
