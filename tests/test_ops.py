"""What the table of tests/cases_ops.py cannot express: bad input, ties, rounding modes, extreme
values, mixed dtypes and any broadcasting shape."""

import pytest
import torch
import torch.nn.functional as F
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
        # -- maximum, minimum, max, min
        (lambda: ops.maximum(torch.randn(3), 2.0), r"maximum: other must be a Tensor, got float"),
        (lambda: ops.minimum(torch.randn(2, 3), torch.randn(4)), r"minimum: input shape \(2, 3\), other shape \(4,\)"),
        (lambda: ops.max(torch.randn(2, 3), (0, 1)), r"max: dim must be one int, got \(0, 1\)"),
        (lambda: ops.max(torch.randn(2, 3), 2), r"max: dim 2 out of range for input shape \(2, 3\)"),
        (lambda: ops.min(torch.randn(0)), r"min: input shape \(0,\) is empty; specify a dim"),
        (lambda: ops.max(torch.randn(2, 0), 1), r"max: cannot reduce dim 1 of size 0 \(input shape \(2, 0\)\)"),
        (lambda: ops.max(torch.randn(3), keepdim=True), r"max: keepdim=True needs a dim"),
        (lambda: ops.max(torch.randn(3), torch.randn(3), True), r"max: the form max\(input, other\) takes no dim"),
        (lambda: ops.min(torch.randn(3), torch.randn(3), other=torch.randn(3)), r"min: got a Tensor in the place"),
        (lambda: ops.max(torch.randn(3), torch.randn(2)), r"max: input shape \(3,\), other shape \(2,\)"),
        # -- elementwise
        (lambda: ops.rsqrt(1.0), r"rsqrt: input must be a Tensor, got float"),
        (lambda: ops.erf([0.5]), r"erf: input must be a Tensor, got list"),
        (lambda: ops.clamp(torch.randn(3), min=torch.zeros(3), max=1.0), r"clamp: min \(Tensor\) and max \(float\)"),
        (lambda: ops.clamp(torch.randn(3), min=torch.zeros(2)), r"clamp: input shape \(3,\), min shape \(2,\), max"),
        (lambda: ops.clamp(torch.randn(3), min="0"), r"clamp: min must be a number, a Tensor or None, got str"),
        (lambda: ops.clamp_min(torch.randn(3), None), r"clamp_min: min must be a number or a Tensor, got None"),
        (lambda: ops.clamp_max(torch.randn(3), None), r"clamp_max: max must be a number or a Tensor, got None"),
        (lambda: ops.addcmul(torch.randn(3), torch.randn(2), torch.randn(3)),
         r"addcmul: input shape \(3,\), tensor1 shape \(2,\), tensor2 shape \(3,\) do not broadcast"),
        (lambda: ops.addcdiv(torch.randn(3), torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.long)),
         r"addcdiv: integer division"),
        (lambda: ops.addcmul(torch.randn(3), 2.0, torch.randn(3)), r"addcmul: tensor1 must be a Tensor, got float"),
        # -- reductions
        (lambda: ops.std(torch.ones(2, dtype=torch.long)), r"std: input dtype torch.int64 is not floating"),
        (lambda: ops.std(torch.randn(2, 3), 1, True, correction=0), r"std: pass unbiased=True or correction=0"),
        (lambda: ops.var(torch.randn(2, 3), True, False), r"var: got unbiased=True in the place of dim"),
        (lambda: ops.std(torch.randn(2, 3), dim=(0, 0)), r"std: dim \(0, 0\) names a dimension twice"),
        (lambda: ops.logsumexp(torch.randn(2, 3), None), r"logsumexp: dim must name the dimension"),
        (lambda: ops.logsumexp(torch.randn(2, 3), ()), r"logsumexp: dim must name the dimension"),
        (lambda: ops.logsumexp(torch.randn(2, 3), 3), r"logsumexp: dim 3 out of range for input shape \(2, 3\)"),
        (lambda: ops.prod(torch.randn(2, 3), (0, 1)), r"prod: dim must be one int, got \(0, 1\)"),
        (lambda: ops.prod(torch.randn(2, 3), keepdim=True), r"prod: keepdim=True needs a dim"),
        (lambda: ops.cumsum(torch.randn(2, 3), -3), r"cumsum: dim -3 out of range for input shape \(2, 3\)"),
        (lambda: ops.cumsum(torch.randn(2, 3), None), r"cumsum: dim must be one int, got None"),
        (lambda: ops.vector_norm(torch.arange(3)), r"vector_norm: input dtype torch.int64 is not floating"),
        (lambda: ops.vector_norm(torch.randn(3), "fro"), r"vector_norm: ord must be a real number"),
        (lambda: ops.vector_norm(torch.randn(3, dtype=DT), dtype=torch.float32),
         r"vector_norm: input dtype torch.float64 does not widen to dtype=torch.float32"),
        (lambda: ops.vector_norm(torch.randn(0, 2), float("inf"), 0), r"vector_norm: cannot reduce an empty dim"),
        (lambda: ops.norm(torch.randn(3, 3), "nuc"), r"norm: p='nuc' over dim=None is a matrix norm"),
        (lambda: ops.norm(torch.randn(3, 3, 3), "fro", (0, 1, 2)), r"norm: p='fro' over dim=\(0, 1, 2\) is a matrix"),
        (lambda: ops.norm(torch.randn(3), out=torch.empty(())), r"norm: out= writes in place"),
        (lambda: ops.normalize(torch.randn(3), dim=1), r"normalize: dim 1 out of range for input shape \(3,\)"),
        (lambda: ops.normalize(torch.randn(2, 3), out=torch.empty(2, 3)), r"normalize: out= writes in place"),
        (lambda: ops.cosine_similarity(torch.randn(2, 3), torch.randn(2, 4)),
         r"cosine_similarity: x1 shape \(2, 3\), x2 shape \(2, 4\) do not broadcast"),
        (lambda: ops.cosine_similarity(torch.randn(3), torch.randn(3)), r"cosine_similarity: dim 1 out of range for"),
        (lambda: ops.cosine_similarity(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)),
         r"cosine_similarity: x1 dtype torch.int64 and x2 dtype torch.int64 have no floating"),
        # -- products
        (lambda: ops.baddbmm(torch.randn(3), torch.randn(2, 4, 5), torch.randn(2, 5, 2)),
         r"baddbmm: input shape \(3,\) does not broadcast to the product shape \(2, 4, 2\)"),
        (lambda: ops.baddbmm(torch.randn(2), torch.randn(2, 4, 5), torch.randn(3, 5, 2)),
         r"baddbmm: expected \(b, n, m\) and \(b, m, p\) batches, got batch1 shape \(2, 4, 5\)"),
        (lambda: ops.baddbmm(torch.randn(2, dtype=DT), torch.randn(2, 4, 5), torch.randn(2, 5, 2)),
         r"baddbmm: operands must have the same dtype"),
        (lambda: ops.einsum(), r"einsum: expected an equation and operands"),
        (lambda: ops.einsum("ij,jk"), r"einsum: equation 'ij,jk' got no operands"),
        (lambda: ops.einsum(3, torch.randn(2)), r"einsum: equation must be a str, got int"),
        (lambda: ops.einsum("ij,jk", torch.randn(2, 3)), r"einsum: equation 'ij,jk' has 2 operand term\(s\), got 1"),
        (lambda: ops.einsum("ij", torch.randn(2)), r"einsum: subscripts 'ij' do not fit operand shape \(2,\)"),
        (lambda: ops.einsum("i...j", torch.randn(2)), r"einsum: subscripts 'i...j' do not fit operand shape"),
        (lambda: ops.einsum("i1", torch.randn(2, 2)), r"einsum: subscripts 'i1' in 'i1' must be letters"),
        (lambda: ops.einsum("...i...", torch.randn(2, 2)), r"einsum: subscripts '...i...' .* at most one '...'"),
        (lambda: ops.einsum("i->ii", torch.randn(2)), r"einsum: output subscripts of 'i->ii' must be distinct"),
        (lambda: ops.einsum("i->j", torch.randn(2)), r"einsum: output subscripts of 'i->j' must be distinct letters"),
        (lambda: ops.einsum("ij,jk", torch.randn(2, 3), torch.randn(4, 2)),
         r"einsum: index 'j' has size 3 in one operand and 4 in another"),
        (lambda: ops.einsum("ii", torch.randn(2, 3)), r"einsum: index 'i' repeats in 'ii' with sizes 2 and 3"),
        (lambda: ops.einsum("i,i", torch.randn(2), torch.randn(2, dtype=DT)), r"einsum: operands must have the same"),
        (lambda: ops.einsum("i", [1.0]), r"einsum: operand 0 must be a Tensor, got float"),
        (lambda: ops.einsum(torch.randn(2), [52]), r"einsum: subscript 52 in sublist \[52\] is not within"),
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
        (ops.max, torch.max, (torch.tensor([1.0, float("nan"), 3.0, float("nan")], dtype=DT),)),
        (ops.min, torch.min, (torch.tensor([[1.0, -float("inf")], [-float("inf"), 0.0]], dtype=DT),)),
        (ops.maximum, torch.maximum, (torch.tensor([1.0, 2.0, float("nan"), 2.0, float("inf")], dtype=DT),
                                      torch.tensor([2.0, 2.0, 1.0, float("nan"), float("inf")], dtype=DT))),
        (ops.minimum, torch.minimum, (torch.tensor([1.0, 2.0, float("nan"), -0.0], dtype=DT),
                                      torch.tensor([2.0, 2.0, 1.0, 0.0], dtype=DT))),
        (ops.rsqrt, torch.rsqrt, (torch.tensor([0.0, 1e-300, 4.0, float("inf")], dtype=DT),)),
        (ops.log1p, torch.log1p, (torch.tensor([-1.0, -1e-300, 1e-17, 1e300], dtype=DT),)),
        (ops.expm1, torch.expm1, (torch.tensor([-800.0, 1e-17, 700.0], dtype=DT),)),
        (ops.log2, torch.log2, (torch.tensor([0.0, 1e-300, 8.0, float("inf")], dtype=DT),)),
        (ops.sign, torch.sign, (torch.tensor([-2.0, 0.0, -0.0, 3.0, float("nan")], dtype=DT),)),
        (ops.erf, torch.erf, (torch.tensor([-30.0, 0.0, 1e-300, 30.0], dtype=DT),)),
        (ops.square, torch.square, (torch.tensor([1e200, -1e-200, 0.0], dtype=DT),)),
        (ops.std, torch.std, (torch.tensor([3.0, 3.0, 3.0], dtype=DT),)),
        (ops.std, torch.std, (torch.tensor([[1e150, -1e150], [2.0, 2.0]], dtype=DT), 1)),
        (ops.logsumexp, torch.logsumexp, (torch.tensor([[800.0, 799.0], [-800.0, -799.0]], dtype=DT), 1)),
        (ops.logsumexp, torch.logsumexp, (torch.tensor([[-float("inf"), -float("inf")], [float("inf"), 1.0]],
                                                       dtype=DT), 1)),
        (ops.prod, torch.prod, (torch.tensor([[0.0, 0.0, 2.0], [0.0, 3.0, 2.0]], dtype=DT),)),
        (ops.prod, torch.prod, (torch.tensor([[0.0, 0.0, 2.0], [0.0, 3.0, 2.0]], dtype=DT), 1)),
        (ops.prod, torch.prod, (torch.tensor([[0.0, 0.0, 2.0], [0.0, 3.0, 2.0]], dtype=DT), 0, True)),
        (ops.prod, torch.prod, (torch.tensor([1e200, 1e200, 0.0], dtype=DT),)),
        (ops.prod, torch.prod, (torch.tensor(0.0, dtype=DT),)),
        (ops.prod, torch.prod, (torch.zeros(2, 0, dtype=DT), 1)),
        (ops.cumsum, torch.cumsum, (torch.tensor([1e300, 1e300, -1e300], dtype=DT), 0)),
        (ops.normalize, F.normalize, (torch.tensor([[0.0, 0.0], [1e-13, 0.0], [3.0, -4.0]], dtype=DT),)),
        (ops.normalize, F.normalize, (torch.tensor([[0.0, 0.0], [1e-13, 0.0], [3.0, -4.0]], dtype=DT), 1.0)),
        (ops.cosine_similarity, F.cosine_similarity, (torch.tensor([[0.0, 0.0, 0.0], [1e-10, 2e-10, -1e-10]],
                                                                   dtype=DT), torch.randn(2, 3, dtype=DT))),
        (ops.cosine_similarity, F.cosine_similarity, (torch.randn(2, 3, dtype=DT), torch.randn(2, 3, dtype=DT), 1,
                                                      10.0)),
        (ops.clamp, torch.clamp, (torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 0.5], dtype=DT),
                                  torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0], dtype=DT),
                                  torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0], dtype=DT))),
        (ops.clamp, torch.clamp, (torch.tensor([float("nan"), 1.0], dtype=DT),
                                  torch.tensor([0.0, float("nan")], dtype=DT), None)),
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
                                 (ops.var, torch.var, (x, 0)), (ops.std, torch.std, (x, 0)),
                                 (ops.logsumexp, torch.logsumexp, (x, 1)), (ops.prod, torch.prod, (x, 1)),
                                 (ops.cumsum, torch.cumsum, (x, 1)), (ops.vector_norm, torch.linalg.vector_norm, (x,)),
                                 (ops.einsum, torch.einsum, ("ij,jk->ik", x, w)),
                                 (ops.maximum, torch.maximum, (x, w[:, 0] + 1))]:
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


def _tensors_in(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, tuple | list):
        return any(_tensors_in(v) for v in value)
    if isinstance(value, dict):
        return any(_tensors_in(v) for v in value.values())
    return False


def _graph_nodes(out):
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(n for n, _ in node.next_functions)


@pytest.mark.parametrize(
    ("name", "call_it"),
    [
        ("mul-number", lambda x, y: ops.mul(x, 2.5)), ("mul-tensors", lambda x, y: ops.mul(x, y)),
        ("div-number", lambda x, y: ops.div(x, 2.5)), ("div-tensors", lambda x, y: ops.div(x, y)),
        ("pow-number-exponent", lambda x, y: ops.pow(x, 3)), ("pow-number-base", lambda x, y: ops.pow(2.0, y)),
        ("pow-tensors", lambda x, y: ops.pow(x.abs(), y)), ("where", lambda x, y: ops.where(x > 0, x, y)),
        ("maximum", lambda x, y: ops.maximum(x, y)), ("max-dim", lambda x, y: ops.max(x, 0).values),
        ("max", lambda x, y: ops.max(x)), ("clamp-tensors", lambda x, y: ops.clamp(x, y, y + 1)),
        ("addcdiv", lambda x, y: ops.addcdiv(x, x, y, value=0.5)), ("std", lambda x, y: ops.std(x)),
        ("logsumexp", lambda x, y: ops.logsumexp(x, 0)), ("prod", lambda x, y: ops.prod(x)),
        ("cumsum", lambda x, y: ops.cumsum(x, 0)), ("vector_norm", lambda x, y: ops.vector_norm(x, 3)),
        ("normalize", lambda x, y: ops.normalize(x, dim=0)), ("einsum", lambda x, y: ops.einsum("i,i->", x, y)),
        ("cosine_similarity", lambda x, y: ops.cosine_similarity(x, y, dim=0)), ("rsqrt", lambda x, y: ops.rsqrt(y)),
        ("baddbmm", lambda x, y: ops.baddbmm(x, x.reshape(1, 4, 1), y.reshape(1, 1, 4))),
    ],
)
def test_ctx_keeps_no_tensors(name, call_it):
    """Tensors reach backward only through save_for_backward / save_for_forward: one kept as a ctx attribute
    (even inside a tuple) would outlive the graph and slip past torch's in-place checks."""
    x = torch.randn(4, dtype=DT, requires_grad=True)
    y = (torch.rand(4, dtype=DT) + 0.5).requires_grad_()
    out = call_it(x, y)
    for node in _graph_nodes(out):
        kept = {k: v for k, v in getattr(node, "__dict__", {}).items() if _tensors_in(v)}
        assert not kept, f"{type(node).__name__} keeps tensors on ctx: {sorted(kept)}"


def test_mul_by_a_tensor_modified_in_place_is_caught():
    x = torch.randn(3, dtype=DT, requires_grad=True)
    y = torch.randn(3, dtype=DT)
    out = ops.mul(x, y)
    y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize(("manual", "native"), [(ops.maximum, torch.maximum), (ops.minimum, torch.minimum),
                                                (ops.max, torch.max), (ops.min, torch.min)])
def test_pairwise_ties_split_the_gradient_half_and_half_like_torch(manual, native):
    x = torch.tensor([1.0, 2.0, 3.0], dtype=DT, requires_grad=True)
    y = torch.tensor([2.0, 2.0, 0.0], dtype=DT, requires_grad=True)
    out, expected, grads, want = _both(manual, native, x, y)
    assert torch.equal(out, expected)
    for g, w in zip(grads, want):
        assert torch.equal(g, w)
    assert grads[0][1] == grads[1][1] == 0.5


@pytest.mark.parametrize(("manual", "native"), [(ops.max, torch.max), (ops.min, torch.min)])
def test_reduction_forms_of_max_and_min_match_torch(manual, native):
    x = torch.tensor([[1.0, 3.0, 3.0, 0.0], [-2.0, -2.0, 5.0, -2.0]], dtype=DT, requires_grad=True)
    out, expected, (grad,), (want,) = _both(manual, native, x)  # the whole tensor: ties share δ evenly
    assert torch.equal(out, expected) and torch.equal(grad, want)
    for args, kwargs in [((1,), {}), ((0, True), {}), ((), {"dim": -1, "keepdim": True})]:
        got, expected = manual(x, *args, **kwargs), native(x, *args, **kwargs)
        assert type(got) is type(expected)  # torch.return_types.max / .min
        assert torch.equal(got.values, expected.values) and torch.equal(got.indices, expected.indices)
        _, indices = got  # unpacks like torch's
        assert indices.dtype == torch.long and not indices.requires_grad
        (grad,) = torch.autograd.grad(got.values.sum(), x)
        (want,) = torch.autograd.grad(expected.values.sum(), x)
        assert torch.equal(grad, want)  # all of δ to the returned index, none to the other ties
    assert torch.equal(manual(x.detach(), 1, keepdim=True).indices, getattr(x.detach(), native.__name__)(1, True)[1])


def test_max_over_dim_of_a_scalar_like_torch():
    x = torch.tensor(2.5, dtype=DT, requires_grad=True)
    got, expected = ops.max(x, 0), torch.max(x, 0)
    assert torch.equal(got.values, expected.values) and torch.equal(got.indices, expected.indices)
    (grad,) = torch.autograd.grad(got.values, x)
    assert grad.item() == 1.0


@pytest.mark.parametrize("ord", [0, 0.5, 1, 1.5, 2, 3, float("inf"), -1, -float("inf")])
def test_vector_norm_at_zero_gives_torchs_gradient(ord):
    """Rows that are all zero, partly zero and free of zeros: torch's rule (0 where the norm or, for p < 1,
    the entry is 0; nothing at all for p = 0, which counts entries)."""
    x = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, -1.0], [3.0, -4.0, 1.0]], dtype=DT, requires_grad=True)
    twin = x.detach().clone().requires_grad_()
    out, expected = ops.vector_norm(x, ord, 1), torch.linalg.vector_norm(twin, ord, 1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    g = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    (grad,) = torch.autograd.grad(out, x, g)
    (want,) = torch.autograd.grad(expected, twin, g, allow_unused=True, materialize_grads=True)
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=0)


def test_norm_forms_route_like_torch():
    x = torch.randn(2, 3, 4, dtype=DT)
    for args, kwargs in [((), {}), (("fro", (0, 1)), {}), ((1.0, -1, True), {}), ((None,), {"dim": 2}),
                         ((float("inf"),), {}), ((), {"p": 3, "dim": (1, 2), "dtype": DT})]:
        torch.testing.assert_close(ops.norm(x, *args, **kwargs), torch.norm(x, *args, **kwargs), rtol=1e-12, atol=0)
        torch.testing.assert_close(ops.norm(x, *args, **kwargs), x.norm(*args, **kwargs), rtol=1e-12, atol=0)
    y = torch.randn(3, 4)
    assert ops.norm(y, 2, 1, False, DT).dtype == y.norm(2, 1, False, DT).dtype == DT  # Tensor.norm's 4th is dtype


def test_std_and_var_accept_each_of_torchs_forms():
    x = torch.randn(3, 4, dtype=DT)
    for args, kwargs in [((), {}), ((False,), {}), ((1, True), {}), ((1, False, True), {}), ((None, False), {}),
                         ((1,), {"keepdim": True, "correction": 2}), (((0, 1),), {"unbiased": False}),
                         ((), {"dim": 0, "correction": 0})]:
        for manual, native in [(ops.std, torch.std), (ops.var, torch.var)]:
            got = manual(x, *args, **kwargs)
            torch.testing.assert_close(got, native(x, *args, **kwargs), rtol=1e-12, atol=0)
            torch.testing.assert_close(got, getattr(x, native.__name__)(*args, **kwargs), rtol=1e-12, atol=0)


def test_std_of_a_constant_slice_has_zero_gradient_like_torch():
    x = torch.tensor([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]], dtype=DT, requires_grad=True)
    _assert_same(ops.std, torch.std, x, 1)
    (grad,) = torch.autograd.grad(ops.std(x, 1).sum(), x)
    assert not grad[0].any()


def test_prod_with_zeros_never_divides_by_them():
    """One zero: only it gets a gradient, the product of the others; two zeros: every gradient is 0."""
    x = torch.tensor([[2.0, 0.0, 3.0, 4.0], [0.0, 5.0, 0.0, 1.0]], dtype=DT, requires_grad=True)
    (grad,) = torch.autograd.grad(ops.prod(x, 1).sum(), x)
    assert grad.tolist() == [[0.0, 24.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    _assert_same(ops.prod, torch.prod, x, 1, grad_out=torch.tensor([1.5, -2.0], dtype=DT))
    assert torch.autograd.gradgradcheck(lambda t: ops.prod(t, 1), (x,))


def test_cosine_similarity_below_eps_has_torchs_gradient():
    """torch floors each norm at eps for the value only, the gradient flows as through the unfloored norm
    (not the derivative of the floored formula, so this is parity, not gradcheck)."""
    x1 = torch.randn(3, 4, dtype=DT, requires_grad=True)
    x2 = torch.randn(3, 4, dtype=DT, requires_grad=True)
    for eps in (1e-8, 1.0, 5.0):
        _assert_same(ops.cosine_similarity, F.cosine_similarity, x1, x2, 1, eps, grad_out=torch.randn(3, dtype=DT))


def test_clamp_with_crossed_and_equal_tensor_bounds_matches_torch():
    z = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 0.5, 0.5, 3.0], dtype=DT, requires_grad=True)
    lo = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 2.0], dtype=DT, requires_grad=True)
    hi = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.5, 2.0], dtype=DT, requires_grad=True)
    grad_out = torch.arange(1.0, 9.0, dtype=DT)
    _assert_same(ops.clamp, torch.clamp, z, lo, hi, grad_out=grad_out)
    _assert_same(ops.clamp_min, torch.clamp_min, z, lo, grad_out=grad_out)
    _assert_same(ops.clamp_max, torch.clamp_max, z, hi, grad_out=grad_out)


def test_types_promote_like_torch():
    i = torch.arange(6).reshape(2, 3)
    f = torch.randn(2, 3, dtype=DT, requires_grad=True)
    for got, want in [(ops.maximum(i, f), torch.maximum(i, f)), (ops.max(i, f), torch.max(i, f)),
                      (ops.clamp(i, f), torch.clamp(i, f)), (ops.clamp(i, None, f), torch.clamp(i, None, f)),
                      (ops.cumsum(i, 1), torch.cumsum(i, 1)),
                      (ops.cumsum(i, 0, dtype=DT), torch.cumsum(i, 0, dtype=DT)),
                      (ops.prod(i), torch.prod(i)), (ops.prod(i, 1, dtype=DT), torch.prod(i, 1, dtype=DT)),
                      (ops.square(i), torch.square(i)), (ops.sign(i > 2), torch.sign(i > 2)),
                      (ops.sin(i), torch.sin(i)),
                      (ops.erf(i), torch.erf(i)), (ops.logsumexp(i, 1), torch.logsumexp(i, 1)),
                      (ops.max(i), torch.max(i)), (ops.min(i, 1).values, torch.min(i, 1).values),
                      (ops.einsum("ij,kj->ik", i, i), torch.einsum("ij,kj->ik", i, i)),
                      (ops.addcmul(i, i, i, value=2), torch.addcmul(i, i, i, value=2)),
                      (ops.addcdiv(f, i, f, value=2), torch.addcdiv(f, i, f, value=2)),
                      (ops.cosine_similarity(i, f), F.cosine_similarity(i, f))]:
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    (grad,) = torch.autograd.grad(ops.maximum(i, f).sum(), f)
    (want,) = torch.autograd.grad(torch.maximum(i, f).sum(), f)
    assert torch.equal(grad, want)


def test_a_loss_from_these_ops_passes_the_audit():
    from manual_backprop.audit import audit_backward

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, dtype=DT, requires_grad=True)
    w = torch.randn(4, 5, dtype=DT, requires_grad=True)
    lo = torch.full((5,), -0.5, dtype=DT, requires_grad=True)
    h = ops.einsum("bij,jk->bik", x, w)
    h = ops.clamp(h, lo, None)
    h = ops.maximum(h, ops.square(ops.sin(h)))
    h = ops.addcmul(ops.normalize(h, dim=-1), ops.cos(h), ops.erf(h), value=0.5)
    w_batch = ops.einsum("jk,b->bjk", ops.log1p(ops.exp(w)), torch.ones(2, dtype=DT))
    h = ops.baddbmm(h, ops.rsqrt(ops.exp(x)), w_batch)
    parts = [ops.max(h), ops.max(h, 1).values, ops.std(h, 1, True), ops.logsumexp(h, (0, 2)),
             ops.prod(ops.add(ops.sign(h), h), -1), ops.cumsum(h, 1), ops.norm(h, 3, 2),
             ops.vector_norm(h, float("inf")), ops.cosine_similarity(h, ops.expm1(h), dim=2),
             ops.min(h, ops.clamp_max(h, 0.3)), ops.addcdiv(h, h, ops.exp(h))]
    loss = ops.sum(parts[0])
    for part in parts[1:]:
        loss = ops.add(loss, ops.sum(part))
    report = audit_backward(loss)
    assert report.ok, str(report)
    assert {"Einsum", "Baddbmm", "ExtremumAlongDim", "Std", "LogSumExp", "Prod", "Cumsum", "VectorNorm",
            "CosineSimilarity", "PairExtremum", "Addc", "ClampByTensors", "Sign", "Erf"} <= set(report.graph)


_letters = st.sampled_from("abcd")


@settings(max_examples=40, deadline=None)
@given(terms=st.lists(st.lists(_letters, min_size=0, max_size=3), min_size=1, max_size=3),
       sizes=st.fixed_dictionaries({c: st.integers(1, 3) for c in "abcd"}),
       ones=st.lists(st.booleans(), min_size=9, max_size=9), explicit=st.booleans(), data=st.data())
def test_einsum_any_equation_matches_torch(terms, sizes, ones, explicit, data):
    """Random equations over a–d (repeats within an operand included) with some sizes shrunk to 1 for
    broadcasting; an explicit output picks any subset of the letters in any order."""
    flags = iter(ones)
    shapes = [[1 if next(flags, False) and len(set(t)) == len(t) else sizes[c] for c in t] for t in terms]
    letters = sorted(set("".join("".join(t) for t in terms)))
    equation = ",".join("".join(t) for t in terms)
    if explicit:
        order = data.draw(st.permutations(letters))
        equation += "->" + "".join(order[: data.draw(st.integers(0, len(order)))])
    operands = [torch.randn(s, dtype=DT, requires_grad=True) for s in shapes]
    try:
        expected = torch.einsum(equation, *[t.detach() for t in operands])
    except RuntimeError:
        with pytest.raises(LayerInputError):  # torch refuses it: so does einsum, with a clear error
            ops.einsum(equation, *operands)
        return
    grad_out = torch.randn(expected.shape, dtype=DT)
    _assert_same(ops.einsum, torch.einsum, equation, *operands, grad_out=grad_out)


def test_einsum_backward_is_differentiable_and_batches():
    a = torch.randn(2, 3, 3, dtype=DT, requires_grad=True)
    b = torch.randn(3, 1, dtype=DT, requires_grad=True)
    fn = lambda a, b: ops.einsum("bii,ij->bj", a, b)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b), check_batched_grad=True, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(fn, (a, b))
