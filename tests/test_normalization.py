"""The normalization family beyond the shared tables: any shape and hyper-parameter (hypothesis),
running statistics over several steps, bad input, extreme inputs, half precision, and the drop-ins."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_backprop as mbp
import manual_backprop.functional.normalization as MFN
import manual_backprop.nn.normalization as MNN
from manual_backprop import LayerInputError

from cases import DT

FUNCTIONS = ["batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm", "local_response_norm"]


def _twin(t):
    return t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t


def _compare(manual, native, args, kwargs, rtol=1e-10, atol=1e-12, grad_out=None):
    """Same output, same gradients for every argument that requires grad, same running statistics after."""
    twins = [_twin(a) for a in args]
    out, expected = manual(*args, **kwargs), native(*twins, **kwargs)
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)
    wrt = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    wrt_native = [a for a in twins if isinstance(a, torch.Tensor) and a.requires_grad]
    grad_out = torch.randn_like(out) if grad_out is None else grad_out
    for got, want in zip(torch.autograd.grad(out, wrt, grad_out), torch.autograd.grad(expected, wrt_native, grad_out)):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    for a, b in zip(args, twins):
        if isinstance(a, torch.Tensor) and not a.requires_grad:  # running statistics, updated in forward
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    return out


def _param(n, present, dtype=DT):
    return torch.randn(n, dtype=dtype, requires_grad=True) if present else None


# -- any shape and hyper-parameter ------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 4),
    channels=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 3), max_size=3),
    training=st.booleans(),
    running=st.booleans(),
    affine=st.sampled_from(["none", "weight", "both"]),
    momentum=st.floats(0.0, 1.0),
    eps=st.sampled_from([1e-5, 1e-3, 0.5]),
)
def test_batch_norm_any_shape_and_hyper_parameters(n, channels, spatial, training, running, affine, momentum, eps):
    x = torch.randn(n, channels, *spatial, dtype=DT, requires_grad=True)
    if training and n * torch.Size(spatial).numel() == 1:
        with pytest.raises(LayerInputError, match="Expected more than 1 value per channel when training"):
            MFN.batch_norm(x, None, None, training=True)
        return
    running = running or not training
    rm = torch.randn(channels, dtype=DT) if running else None
    rv = torch.rand(channels, dtype=DT) + 0.5 if running else None
    weight, bias = _param(channels, affine != "none"), _param(channels, affine == "both")
    _compare(MFN.batch_norm, F.batch_norm, (x, rm, rv, weight, bias),
             dict(training=training, momentum=momentum, eps=eps))


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 3),
    channels=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 3), min_size=1, max_size=3).filter(lambda s: torch.Size(s).numel() > 1),
    use_input_stats=st.booleans(),
    running=st.booleans(),
    affine=st.booleans(),
    momentum=st.floats(0.0, 1.0),
    eps=st.sampled_from([1e-5, 1e-2]),
)
def test_instance_norm_any_shape_and_hyper_parameters(n, channels, spatial, use_input_stats, running, affine,
                                                      momentum, eps):
    x = torch.randn(n, channels, *spatial, dtype=DT, requires_grad=True)
    running = running or not use_input_stats
    rm = torch.randn(channels, dtype=DT) if running else None
    rv = torch.rand(channels, dtype=DT) + 0.5 if running else None
    _compare(MFN.instance_norm, F.instance_norm, (x, rm, rv, _param(channels, affine), _param(channels, affine)),
             dict(use_input_stats=use_input_stats, momentum=momentum, eps=eps))


@settings(max_examples=12, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), max_size=2),
    normalized=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    affine=st.sampled_from(["none", "weight", "both"]),
    eps=st.sampled_from([1e-5, 1e-2, 1.0]),
)
def test_layer_norm_any_shape_and_hyper_parameters(batch, normalized, affine, eps):
    x = torch.randn(*batch, *normalized, dtype=DT, requires_grad=True)
    weight = torch.randn(normalized, dtype=DT, requires_grad=True) if affine != "none" else None
    bias = torch.randn(normalized, dtype=DT, requires_grad=True) if affine == "both" else None
    _compare(MFN.layer_norm, F.layer_norm, (x, normalized, weight, bias), dict(eps=eps))


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 3),
    groups=st.integers(1, 4),
    per_group=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 3), max_size=2),
    affine=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-2]),
)
def test_group_norm_any_shape_and_groups(n, groups, per_group, spatial, affine, eps):
    channels = groups * per_group
    x = torch.randn(n, channels, *spatial, dtype=DT, requires_grad=True)
    args = (x, groups, _param(channels, affine), _param(channels, affine))
    if n * per_group * torch.Size(spatial).numel() == 1:  # torch's own rule for one value per group
        with pytest.raises(LayerInputError, match="Expected more than 1 value per channel"):
            MFN.group_norm(*args, eps=eps)
        return
    _compare(MFN.group_norm, F.group_norm, args, dict(eps=eps))


@settings(max_examples=12, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), max_size=2),
    normalized=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    weight=st.booleans(),
    eps=st.sampled_from([None, 1e-6, 1e-2]),
)
def test_rms_norm_any_shape_and_eps(batch, normalized, weight, eps):
    x = torch.randn(*batch, *normalized, dtype=DT, requires_grad=True)
    w = torch.randn(normalized, dtype=DT, requires_grad=True) if weight else None
    _compare(MFN.rms_norm, F.rms_norm, (x, normalized, w), dict(eps=eps))


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 2),
    channels=st.integers(1, 6),
    spatial=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    size=st.integers(1, 7),
    alpha=st.floats(1e-4, 2.0),
    beta=st.floats(0.1, 2.0),
    k=st.floats(0.5, 3.0),
)
def test_local_response_norm_any_shape_and_hyper_parameters(n, channels, spatial, size, alpha, beta, k):
    x = torch.randn(n, channels, *spatial, dtype=DT, requires_grad=True)
    _compare(MFN.local_response_norm, F.local_response_norm, (x, size), dict(alpha=alpha, beta=beta, k=k))


# -- the modules over several steps -------------------------------------------------------------------

@pytest.mark.parametrize("momentum", [None, 0.1, 0.7])
@pytest.mark.parametrize("cls", [torch.nn.BatchNorm1d, torch.nn.BatchNorm2d])
def test_batch_norm_running_statistics_follow_torch_over_steps_then_eval(cls, momentum):
    native = cls(3, momentum=momentum).to(DT)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    assert type(manual) is getattr(MNN, cls.__name__)
    shape = (5, 3) if cls is torch.nn.BatchNorm1d else (2, 3, 2, 2)
    for step in range(4):
        x = torch.randn(*shape, dtype=DT) * (step + 1) + step
        torch.testing.assert_close(manual(x), native(x), rtol=1e-10, atol=1e-12)
        assert manual.num_batches_tracked.item() == native.num_batches_tracked.item() == step + 1
        torch.testing.assert_close(manual.running_mean, native.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(manual.running_var, native.running_var, rtol=1e-12, atol=1e-12)
    manual.eval()
    native.eval()
    x = torch.randn(*shape, dtype=DT)
    _compare(manual, native, (x.requires_grad_(),), {})
    assert manual.num_batches_tracked.item() == 4  # eval leaves the statistics alone


def test_instance_norm_running_statistics_follow_torch_over_steps():
    native = torch.nn.InstanceNorm1d(2, affine=True, track_running_stats=True, momentum=0.4).to(DT)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    for step in range(3):
        x = torch.randn(3, 2, 5, dtype=DT) + step
        torch.testing.assert_close(manual(x), native(x), rtol=1e-10, atol=1e-12)
    for name, buffer in native.named_buffers():
        torch.testing.assert_close(getattr(manual, name), buffer, rtol=1e-12, atol=1e-12)


def test_two_training_steps_then_one_backward():
    """The running statistics change in place at every step; backward must not need their old values."""
    bn = MNN.BatchNorm1d(3).to(DT)
    x1, x2 = (torch.randn(4, 3, dtype=DT, requires_grad=True) for _ in range(2))
    (bn(x1).square().sum() + bn(x2).square().sum()).backward()
    assert x1.grad is not None and bn.weight.grad is not None


def test_batch_norm_momentum_none_is_a_cumulative_average():
    bn = MNN.BatchNorm1d(2, momentum=None).to(DT)
    batches = [torch.randn(6, 2, dtype=DT) for _ in range(3)]
    for x in batches:
        bn(x)
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean(0) for x in batches]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([x.var(0) for x in batches]).mean(0))


def test_eval_mode_gradient_is_g_over_running_sigma():
    bn = MNN.BatchNorm1d(3).to(DT).eval()
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 4.0], dtype=DT))
        bn.weight.copy_(torch.tensor([1.0, -2.0, 3.0], dtype=DT))
    x = torch.randn(4, 3, dtype=DT, requires_grad=True)
    delta = torch.randn(4, 3, dtype=DT)
    (grad,) = torch.autograd.grad(bn(x), x, delta)
    torch.testing.assert_close(grad, delta * bn.weight.detach() / (bn.running_var + bn.eps).sqrt())


def test_training_gradient_is_the_textbook_formula():
    x = torch.randn(5, 2, dtype=DT, requires_grad=True)
    gamma = torch.randn(2, dtype=DT, requires_grad=True)
    delta = torch.randn(5, 2, dtype=DT)
    grad_x, grad_gamma = torch.autograd.grad(MFN.batch_norm(x, None, None, gamma, training=True), (x, gamma), delta)
    mu, sigma = x.detach().mean(0), (x.detach().var(0, unbiased=False) + 1e-5).sqrt()
    x_hat, g = (x.detach() - mu) / sigma, delta * gamma.detach()
    torch.testing.assert_close(grad_x, (g - g.mean(0) - x_hat * (g * x_hat).mean(0)) / sigma)
    torch.testing.assert_close(grad_gamma, (delta * x_hat).sum(0))


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_backward_from_the_saved_statistics_matches_the_differentiable_path(affine):
    """LayerNormTraining's three backward paths give the same first derivatives: in place from the saved μ
    and 1/σ (plain backward), out of place from them (vmap over δ), and recomputed from x (create_graph)."""
    x = torch.randn(3, 4, 5, dtype=DT, requires_grad=True)
    params = (torch.randn(4, 5, dtype=DT, requires_grad=True), torch.randn(4, 5, dtype=DT, requires_grad=True))
    inputs = (x, *params) if affine else (x,)
    y = MFN.layer_norm(x, [4, 5], *(params if affine else ()))
    assert type(y.grad_fn).__name__ == "LayerNormTrainingBackward"
    deltas = torch.randn(2, 3, 4, 5, dtype=DT)
    in_place = torch.autograd.grad(y, inputs, deltas[0], retain_graph=True)
    differentiable = torch.autograd.grad(y, inputs, deltas[0], retain_graph=True, create_graph=True)
    batched = torch.autograd.grad(y, inputs, deltas, retain_graph=True, is_grads_batched=True)
    for a, b, c in zip(in_place, differentiable, batched):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(c[0], a)
    torch.testing.assert_close(batched[0][1], torch.autograd.grad(y, x, deltas[1])[0])


def test_unbatched_instance_norm_needs_no_native_node():
    native = torch.nn.InstanceNorm2d(2, affine=True, track_running_stats=True).to(DT)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x = torch.randn(2, 3, 3, dtype=DT, requires_grad=True)
    out = manual(x)
    torch.testing.assert_close(out, native(x), rtol=1e-10, atol=1e-12)
    assert mbp.audit_backward(out, gradient=torch.randn_like(out)).ok
    torch.testing.assert_close(manual.running_mean, native.running_mean)


def test_instance_norm_without_affine_warns_like_torch_when_channels_differ():
    manual = MNN.InstanceNorm1d(5)
    x = torch.randn(2, 3, 4)
    with pytest.warns(UserWarning, match="does not match num_features"):
        out = manual(x)
    with pytest.warns(UserWarning, match="does not match num_features"):
        torch.testing.assert_close(out, torch.nn.InstanceNorm1d(5)(x))


EMPTY = [
    ("batch_norm", MFN.batch_norm, F.batch_norm, (0, 3), lambda: (torch.zeros(3), torch.ones(3)), dict(training=True)),
    ("batch_norm-eval", MFN.batch_norm, F.batch_norm, (0, 3, 2), lambda: (torch.zeros(3), torch.ones(3)), {}),
    ("layer_norm", MFN.layer_norm, F.layer_norm, (0, 3), lambda: ([3],), {}),
    ("group_norm", MFN.group_norm, F.group_norm, (0, 4, 2), lambda: (2,), {}),
    ("rms_norm", MFN.rms_norm, F.rms_norm, (0, 3), lambda: ([3],), {}),
]


@pytest.mark.parametrize(("name", "manual", "native", "shape", "make_args", "kwargs"), EMPTY, ids=[e[0] for e in EMPTY])
def test_an_empty_batch_gives_an_empty_output_and_leaves_the_statistics_like_torch(name, manual, native, shape,
                                                                                   make_args, kwargs):
    _compare(manual, native, (torch.randn(*shape, requires_grad=True), *make_args()), kwargs)


def test_an_empty_batch_leaves_instance_norm_statistics_alone():
    """torch turns them into NaN (the average over no sample); we keep them, as batch_norm does."""
    running_mean, running_var = torch.zeros(3), torch.ones(3)
    out = MFN.instance_norm(torch.randn(0, 3, 4), running_mean, running_var)
    assert out.shape == (0, 3, 4)
    assert running_mean.tolist() == [0.0] * 3 and running_var.tolist() == [1.0] * 3


def test_local_response_norm_of_an_empty_input_is_the_input():
    x = torch.randn(0, 3, 4, requires_grad=True)
    assert MFN.local_response_norm(x, 2) is x


def test_rms_norm_default_eps_is_the_float32_eps_for_half_inputs_like_torch():
    x = torch.randn(3, 8).half() * 1e-3
    torch.testing.assert_close(MFN.rms_norm(x, [8]), F.rms_norm(x, [8]), rtol=0, atol=0)
    torch.testing.assert_close(MFN.rms_norm(x, [8]), MFN.rms_norm(x, [8], eps=torch.finfo(torch.float32).eps))


# -- numerical stability --------------------------------------------------------------------------

def _constant_channel(dtype):
    x = torch.randn(4, 3, 5, dtype=dtype)
    x[:, 1] = 2.5  # one channel (and, for layer/instance norm, some rows) with zero variance
    return x


STABILITY = [
    ("batch_norm", lambda x: MFN.batch_norm(x, None, None, training=True),
     lambda x: F.batch_norm(x, None, None, training=True)),
    ("batch_norm-eval", lambda x: MFN.batch_norm(x, torch.zeros(3, dtype=x.dtype), torch.zeros(3, dtype=x.dtype)),
     lambda x: F.batch_norm(x, torch.zeros(3, dtype=x.dtype), torch.zeros(3, dtype=x.dtype))),
    ("instance_norm", MFN.instance_norm, F.instance_norm),
    ("layer_norm", lambda x: MFN.layer_norm(x, [5]), lambda x: F.layer_norm(x, [5])),
    ("group_norm", lambda x: MFN.group_norm(x, 3), lambda x: F.group_norm(x, 3)),
    ("rms_norm", lambda x: MFN.rms_norm(x, [5]), lambda x: F.rms_norm(x, [5])),
    ("local_response_norm", lambda x: MFN.local_response_norm(x, 2), lambda x: F.local_response_norm(x, 2)),
]


def _out_and_grad(fn, x, grad_out=None):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape) if grad_out is None else grad_out
    (grad,) = torch.autograd.grad(out, x, grad_out)
    return out.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("name", "manual", "native"), STABILITY, ids=[s[0] for s in STABILITY])
def test_zero_variance_gives_torch_finite_outputs_and_gradients(name, manual, native, dtype):
    x = _constant_channel(dtype)
    out, grad = _out_and_grad(manual, x)
    out_native, grad_native = _out_and_grad(native, x)
    assert out.isfinite().all() and grad.isfinite().all()
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, out_native, **tol)
    torch.testing.assert_close(grad, grad_native, **tol)


def _error(t: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest deviation from a float64 reference, relative to the reference's largest entry (inf if not finite)."""
    if not t.isfinite().all():
        return float("inf")
    return ((t.double() - reference).abs().max() / reference.abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("scale", [1e-30, 1e18, 1e30])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("name", "manual", "native"), STABILITY, ids=[s[0] for s in STABILITY])
def test_extreme_magnitudes_are_finite_and_as_accurate_as_torch(name, manual, native, dtype, scale):
    """Against torch's own float64 result: finite wherever torch is, and no further off than torch.

    (In float32 at 1e30 torch's layer and group norm give NaN, and torch's rms_norm gradient at 1e18
    is off by half its size; ours stay at the float64 reference.)
    """
    x = torch.randn(4, 3, 5, dtype=DT).mul(scale).to(dtype)
    reference_out, reference_grad = _out_and_grad(native, x.double())
    out, grad = _out_and_grad(manual, x)
    out_native, grad_native = _out_and_grad(native, x)
    assert out.isfinite().all() or not out_native.isfinite().all()
    assert grad.isfinite().all() or not grad_native.isfinite().all()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert _error(out, reference_out) <= max(_error(out_native, reference_out), tol)
    assert _error(grad, reference_grad) <= max(_error(grad_native, reference_grad), tol)


@pytest.mark.parametrize(("name", "manual", "native"), STABILITY[:5], ids=[s[0] for s in STABILITY[:5]])
def test_a_large_offset_in_float32_is_as_accurate_as_torch(name, manual, native):
    """1e4 + noise in float32: measured against a float64 reference, our error is no larger than torch's
    (give or take one rounding of the result: both err by the same few percent, from x's own rounding)."""
    x = (torch.randn(4, 3, 5) * 1e-2 + 1e4).float()
    reference_out, reference_grad = _out_and_grad(native, x.double())
    out, grad = _out_and_grad(manual, x)
    out_native, grad_native = _out_and_grad(native, x)
    slack = torch.finfo(torch.float32).eps  # one rounding, relative to the largest entry as _error is
    assert _error(out, reference_out) <= max(_error(out_native, reference_out), 1e-5) + slack
    assert _error(grad, reference_grad) <= max(_error(grad_native, reference_grad), 1e-5) + slack


# -- half precision ---------------------------------------------------------------------------------

def _run(fn, x, args, kwargs, grad_out):
    """Output and gradients (input, then each tensor argument that requires grad) of one call on copies."""
    x = x.detach().clone().requires_grad_()
    args = [_twin(a) for a in args]
    out = fn(x, *args, **kwargs)
    wrt = [x] + [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return [out, *torch.autograd.grad(out, wrt, grad_out.to(out.dtype))], args


@pytest.mark.parametrize("param_dtype", ["same", torch.float32], ids=["params-same", "params-float32"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_is_as_accurate_as_torch(dtype, param_dtype):
    """Against torch's float64 result on the same values: as close as torch's own half-precision result
    (give or take one rounding of the result), in the same dtypes, running statistics alike."""
    param_dtype = dtype if param_dtype == "same" else param_dtype
    x = torch.randn(4, 6, 5).to(dtype)
    w, b = (torch.randn(6).to(param_dtype).requires_grad_() for _ in range(2))
    w5 = torch.randn(5).to(param_dtype).requires_grad_()
    grad_out = torch.randn(4, 6, 5).to(dtype)
    calls = [
        (MFN.batch_norm, F.batch_norm, (torch.zeros(6, dtype=param_dtype), torch.ones(6, dtype=param_dtype), w, b),
         dict(training=True)),
        (MFN.batch_norm, F.batch_norm, (torch.randn(6).to(param_dtype), torch.rand(6).add(0.5).to(param_dtype), w, b),
         {}),
        (MFN.instance_norm, F.instance_norm, (None, None, w, b), {}),
        (MFN.layer_norm, F.layer_norm, ([5], w5), {}),
        (MFN.group_norm, F.group_norm, (3, w, b), {}),
        (MFN.rms_norm, F.rms_norm, ([5], w5), {}),
        (MFN.local_response_norm, F.local_response_norm, (3,), {}),
    ]
    slack = 2.0 ** (-7 if dtype == torch.bfloat16 else -10)  # one rounding to the result's precision
    for manual, native, args, kwargs in calls:
        ours, our_args = _run(manual, x, args, kwargs, grad_out)
        theirs, their_args = _run(native, x, args, kwargs, grad_out)
        reference, _ = _run(native, x.double(), [a.double() if isinstance(a, torch.Tensor) else a for a in args],
                            kwargs, grad_out.double())
        assert ours[0].dtype == dtype
        for got, want, ref in zip(ours, theirs, reference):
            assert got.dtype == want.dtype
            scale = ref.abs().max().item()
            assert (got.double() - ref).abs().max() <= (want.double() - ref).abs().max() + slack * scale, manual
        for a, b_ in zip(our_args, their_args):  # running statistics
            if isinstance(a, torch.Tensor) and not a.requires_grad:
                torch.testing.assert_close(a, b_, rtol=slack, atol=slack)


# -- bad input --------------------------------------------------------------------------------------

BAD_INPUT = [
    (lambda: MFN.batch_norm(torch.randn(1, 3), None, None, training=True),
     r"batch_norm: Expected more than 1 value per channel when training, got input size \(1, 3\)"),
    (lambda: MFN.batch_norm(torch.randn(1, 3, 1, 1), torch.zeros(3), torch.ones(3), training=True),
     "Expected more than 1 value per channel when training"),
    (lambda: MFN.batch_norm(torch.randn(4, 3), torch.zeros(2), torch.ones(2), training=True),
     r"batch_norm: running_mean shape \(2,\) does not match the number of channels \(3,\)"),
    (lambda: MFN.batch_norm(torch.randn(4, 3), None, None, torch.ones(2), training=True),
     r"batch_norm: weight shape \(2,\) does not match the number of channels \(3,\)"),
    (lambda: MFN.batch_norm(torch.randn(4, 3), None, None, None, torch.ones(4), training=True),
     r"bias shape \(4,\)"),
    (lambda: MFN.batch_norm(torch.randn(4, 3), torch.zeros(3), None, training=True),
     "running_mean and running_var must either both be None or neither"),
    (lambda: MFN.batch_norm(torch.randn(4, 3), None, None), "must be given in evaluation mode"),
    (lambda: MFN.batch_norm(torch.randn(3), None, None, training=True), r"input must be \(N, C, \*\)"),
    (lambda: MFN.batch_norm(torch.randn(4, 3), None, None, training=True, eps=0.0), "eps must be positive"),
    (lambda: MFN.batch_norm(torch.randn(4, 3), torch.zeros(3), torch.ones(3), eps=-1.0), "eps must be non-negative"),
    (lambda: MFN.batch_norm(torch.ones(4, 3, dtype=torch.long), None, None, training=True),
     "batch_norm: input must be a floating-point tensor, got torch.int64"),
    (lambda: MFN.batch_norm(torch.randn(4, 3), None, None, torch.ones(3, dtype=DT), training=True),
     "batch_norm: weight dtype torch.float64 does not go with input dtype torch.float32"),
    (lambda: MFN.batch_norm(torch.randn(4, 3), torch.zeros(3, requires_grad=True), torch.ones(3)),
     "running_mean requires grad"),
    (lambda: MFN.instance_norm(torch.randn(2, 3, 1)),
     r"instance_norm: Expected more than 1 spatial element when training, got input size \(2, 3, 1\)"),
    (lambda: MFN.instance_norm(torch.randn(2, 3, 4), torch.zeros(2), torch.ones(2)),
     r"running_mean shape \(2,\) does not match the number of channels \(3,\)"),
    (lambda: MFN.instance_norm(torch.randn(2, 3, 4), use_input_stats=False),
     "must be given when use_input_stats is False"),
    (lambda: MFN.layer_norm(torch.randn(2, 4), [3]),
     r"layer_norm: input shape \(2, 4\) does not end in normalized_shape=\(3,\)"),
    (lambda: MFN.layer_norm(torch.randn(4), [2, 4]), r"does not end in normalized_shape=\(2, 4\)"),
    (lambda: MFN.layer_norm(torch.randn(2, 4), []), "normalized_shape must hold at least one dimension"),
    (lambda: MFN.layer_norm(torch.randn(2, 4), [4], torch.ones(3)),
     r"layer_norm: weight shape \(3,\) does not match normalized_shape \(4,\)"),
    (lambda: MFN.layer_norm(torch.ones(2, 4, dtype=torch.int32), [4]), "must be a floating-point tensor"),
    (lambda: MFN.group_norm(torch.randn(2, 6, 3), 4),
     r"group_norm: num_groups=4 must be positive and divide the 6 channels of input shape \(2, 6, 3\)"),
    (lambda: MFN.group_norm(torch.randn(2, 6), 0), "num_groups=0 must be positive"),
    (lambda: MFN.group_norm(torch.randn(2, 6, 3), 3, torch.ones(5)),
     r"group_norm: weight shape \(5,\) does not match the number of channels \(6,\)"),
    (lambda: MFN.group_norm(torch.randn(6), 3), "at least 2 dimensions"),
    (lambda: MFN.group_norm(torch.randn(1, 3), 3), "Expected more than 1 value per channel"),
    (lambda: MFN.rms_norm(torch.randn(2, 4), [3]), r"rms_norm: input shape \(2, 4\) does not end in"),
    (lambda: MFN.rms_norm(torch.randn(2, 4), [4], torch.ones(2, 2)), r"rms_norm: weight shape \(2, 2\)"),
    (lambda: MFN.local_response_norm(torch.randn(2, 3), 2), r"local_response_norm: input must be \(N, C, \*\)"),
    (lambda: MFN.local_response_norm(torch.randn(2, 3, 4), 0), "size must be positive, got 0"),
    (lambda: MNN.BatchNorm2d(3)(torch.randn(2, 3, 4)), r"batch_norm: expected 4D input \(got 3D input\)"),
    (lambda: MNN.BatchNorm1d(3)(torch.randn(2, 4)), r"weight shape \(3,\) does not match .* \(4,\)"),
    (lambda: MNN.BatchNorm1d(3)(torch.randn(1, 3)), "Expected more than 1 value per channel when training"),
    (lambda: MNN.InstanceNorm1d(3)(torch.randn(2, 3, 4, 5)), r"instance_norm: expected 2D or 3D input \(got 4D"),
    (lambda: MNN.InstanceNorm2d(3, affine=True)(torch.randn(2, 4, 5, 5)),
     r"expected input's size at dim=1 to match num_features \(3\), but got: 4"),
    (lambda: MNN.LayerNorm(4)(torch.randn(2, 5)), r"does not end in normalized_shape=\(4,\)"),
    (lambda: MNN.GroupNorm(2, 4)(torch.randn(2, 6, 3)), r"weight shape \(4,\) does not match .* \(6,\)"),
    (lambda: MNN.RMSNorm(4)(torch.randn(2, 5)), r"rms_norm: input shape \(2, 5\)"),
    (lambda: MNN.LocalResponseNorm(2)(torch.randn(2, 3)), "at least 3 dimensions"),
]


@pytest.mark.parametrize(("call_it", "message"), BAD_INPUT)
def test_bad_input_is_a_clear_error(call_it, message):
    with pytest.raises(LayerInputError, match=message):
        call_it()


def test_an_error_in_a_converted_model_names_the_layer():
    model = mbp.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)), strict=True)
    with pytest.raises(LayerInputError, match=r"layer '1' \(BatchNorm1d\): batch_norm: Expected more than 1 value"):
        model(torch.randn(1, 3))


# -- the drop-ins mirror torch ----------------------------------------------------------------------

def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functional_signatures_mirror_torch(name):
    assert [(n, d) for n, _, d in _params(getattr(MFN, name))] == [
        (n, d) for n, _, d in _params(getattr(F, name))]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_converted_model_with_every_normalization_matches_torch_and_passes_the_audit(train):
    native = torch.nn.Sequential(
        torch.nn.BatchNorm1d(2), torch.nn.GroupNorm(2, 2), torch.nn.InstanceNorm1d(2, affine=True,
                                                                                     track_running_stats=True),
        torch.nn.LocalResponseNorm(2), torch.nn.LayerNorm(3), torch.nn.RMSNorm(3),
    ).to(DT).train(train)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x = torch.randn(5, 2, 3, dtype=DT, requires_grad=True)
    out = manual(x)
    torch.testing.assert_close(out, native(x), rtol=1e-10, atol=1e-12)
    audit = mbp.audit_backward(out, gradient=torch.randn_like(out))
    assert audit.ok, str(audit)
    for (name, b_m), (_, b_n) in zip(manual.named_buffers(), native.named_buffers()):
        torch.testing.assert_close(b_m, b_n, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.slow
def test_compiled_normalizations_match_torch_without_graph_breaks():
    """The running statistics are updated inside the Function's forward; torch.compile traces that too."""
    native = torch.nn.Sequential(torch.nn.BatchNorm1d(2), torch.nn.GroupNorm(2, 2), torch.nn.LocalResponseNorm(2))
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    compiled = torch.compile(manual, fullgraph=True)  # fullgraph: a graph break would raise
    x = torch.randn(5, 2, 3)
    x_m, x_n = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_m, out_n = compiled(x_m), native(x_n)
    torch.testing.assert_close(out_m, out_n)
    grad_out = torch.randn_like(out_n)
    out_m.backward(grad_out)
    out_n.backward(grad_out)
    torch.testing.assert_close(x_m.grad, x_n.grad)
    for (name, b_m), (_, b_n) in zip(manual.named_buffers(), native.named_buffers()):
        torch.testing.assert_close(b_m, b_n, msg=name)
