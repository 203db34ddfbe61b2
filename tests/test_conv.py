"""Convolution and padding beyond the shared table: hypothesis-drawn shapes and hyper-parameters
against torch, bad input, extreme values, other dtypes, and a converted CNN."""

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_backprop as mbp
from manual_backprop import LayerInputError
from manual_backprop.functional import conv as MC
from manual_backprop.functional.padding import pad

from cases import DT

CONV = {1: (MC.conv1d, F.conv1d), 2: (MC.conv2d, F.conv2d), 3: (MC.conv3d, F.conv3d)}
CONV_T = {1: (MC.conv_transpose1d, F.conv_transpose1d), 2: (MC.conv_transpose2d, F.conv_transpose2d),
          3: (MC.conv_transpose3d, F.conv_transpose3d)}


def _assert_same_as_torch(manual, native, tensors, kwargs, tol=None):
    """Outputs and the gradients of every tensor that requires grad agree with torch's."""
    tol = tol or dict(rtol=1e-10, atol=1e-12)
    mine = [t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in tensors]
    theirs = [t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
              for t in tensors]
    out, expected = manual(*mine, **kwargs), native(*theirs, **kwargs)
    torch.testing.assert_close(out, expected, **tol)
    wrt_mine = [t for t in mine if isinstance(t, torch.Tensor) and t.requires_grad]
    wrt_theirs = [t for t in theirs if isinstance(t, torch.Tensor) and t.requires_grad]
    grad_out = torch.randn_like(expected)
    got = torch.autograd.grad(out, wrt_mine, grad_out)
    want = torch.autograd.grad(expected, wrt_theirs, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tol)
    return out, got


def _leaf(*shape, dtype=DT):
    return torch.randn(*shape, dtype=dtype, requires_grad=True)


# -- hypothesis: any shape and hyper-parameters, against torch --------------------------------------

@st.composite
def conv_settings(draw, transposed=False):
    n = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(n))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(n))
    named_padding = None if transposed else draw(st.sampled_from([None, None, "same", "valid"]))
    stride = (1,) * n if named_padding == "same" else tuple(draw(st.integers(1, 3)) for _ in range(n))
    batch = draw(st.sampled_from([(), (1,), (2,)]))
    kwargs = {"stride": stride, "dilation": dilation, "groups": groups, "padding": named_padding or padding}
    if transposed:
        kwargs["output_padding"] = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
        # an output of at least one cell: (size − 1)·s − 2p + d(k − 1) + output_padding + 1 ≥ 1
        sizes = [max(1, 1 - (d * (k - 1) + op - 2 * p) // s) + draw(st.integers(0, 2))
                 for k, d, p, s, op in zip(kernel, dilation, padding, stride, kwargs["output_padding"])]
        weight_shape = (c_in, c_out // groups, *kernel)
    else:
        padding = padding if named_padding is None else (0,) * n
        # at least one window fits: size + 2p ≥ d(k − 1) + 1
        sizes = [max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 3))
                 for k, d, p in zip(kernel, dilation, padding)]
        weight_shape = (c_out, c_in // groups, *kernel)
    x_shape = (*batch, c_in, *sizes)
    bias = draw(st.booleans())
    return n, x_shape, weight_shape, c_out, bias, kwargs


@settings(max_examples=40, deadline=None)
@given(conv_settings())
def test_conv_any_shape_and_hyper_parameters_match_torch(setting):
    n, x_shape, weight_shape, c_out, bias, kwargs = setting
    tensors = (_leaf(*x_shape), _leaf(*weight_shape), _leaf(c_out) if bias else None)
    _assert_same_as_torch(*CONV[n], tensors, kwargs)


@settings(max_examples=40, deadline=None)
@given(conv_settings(transposed=True))
def test_conv_transpose_any_shape_and_hyper_parameters_match_torch(setting):
    n, x_shape, weight_shape, c_out, bias, kwargs = setting
    tensors = (_leaf(*x_shape), _leaf(*weight_shape), _leaf(c_out) if bias else None)
    _assert_same_as_torch(*CONV_T[n], tensors, kwargs)


@st.composite
def pad_settings(draw):
    mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    n = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 4)) for _ in range(n)]
    lead = draw(st.sampled_from([(2,), (1, 2)])) if mode != "constant" else draw(st.sampled_from([(), (2,), (1, 2)]))
    amounts = []
    for size in reversed(sizes):  # F.pad order: the last dimension first
        if mode == "reflect":
            before, after = draw(st.integers(-size + 1, size - 1)), draw(st.integers(-size + 1, size - 1))
        elif mode == "circular":
            before = draw(st.integers(-size + 1, size))
            after = draw(st.integers(-(size + min(before, 0)) + 1, size + min(before, 0)))
            kept = size - max(-before, 0) - max(-after, 0)
            before, after = min(before, kept), min(after, kept)
        else:
            before, after = draw(st.integers(-size + 1, 3)), draw(st.integers(-size + 1, 3))
        if size + before + after < 1:
            before, after = max(before, 0), max(after, 0)
        amounts += [before, after]
    value = draw(st.sampled_from([None, 0.0, 2.5])) if mode == "constant" else None
    return (*lead, *sizes), tuple(amounts), mode, value


@settings(max_examples=40, deadline=None)
@given(pad_settings())
def test_pad_any_shape_and_mode_matches_torch(setting):
    x_shape, amounts, mode, value = setting
    _assert_same_as_torch(pad, F.pad, (_leaf(*x_shape), amounts), {"mode": mode, "value": value})


# -- what the gradient looks like ----------------------------------------------------------------

def test_rows_the_stride_never_reaches_get_zero_gradient():
    x = _leaf(1, 1, 7)  # kernel 2, stride 3: windows cover cells 0-1 and 3-4; 2, 5 and 6 are never read
    out = MC.conv1d(x, torch.ones(1, 1, 2, dtype=DT), stride=3)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.flatten().tolist() == [1, 1, 0, 1, 1, 0, 0]


def test_bias_gradient_is_delta_summed_over_batch_and_space():
    x, w, b = _leaf(3, 2, 4, 5), _leaf(4, 2, 3, 3), _leaf(4)
    out = MC.conv2d(x, w, b, padding=1)
    delta = torch.randn_like(out)
    (grad_b,) = torch.autograd.grad(out, b, delta)
    torch.testing.assert_close(grad_b, delta.sum((0, 2, 3)), rtol=1e-12, atol=1e-12)


def test_reflect_pad_adds_each_copy_back_onto_its_source():
    x = _leaf(1, 4)  # reflect (2, 1): a = [x2, x1, x0, x1, x2, x3, x2]
    (grad,) = torch.autograd.grad(pad(x, (2, 1), mode="reflect").sum(), x)
    assert grad.flatten().tolist() == [1, 2, 3, 1]


def test_same_padding_with_an_even_kernel_puts_the_odd_cell_after_like_torch():
    x, w = _leaf(1, 1, 6), _leaf(1, 1, 4)
    out, _ = _assert_same_as_torch(MC.conv1d, F.conv1d, (x, w, None), {"padding": "same"})
    assert out.shape == (1, 1, 6)


def test_empty_batch_gives_empty_outputs_and_zero_weight_gradients():
    tensors = (_leaf(0, 4, 5), _leaf(6, 2, 3), _leaf(6))
    _, grads = _assert_same_as_torch(MC.conv1d, F.conv1d, tensors, {"groups": 2})
    assert not grads[1].any()
    tensors = (_leaf(0, 4, 5), _leaf(4, 3, 3), _leaf(6))
    _assert_same_as_torch(MC.conv_transpose1d, F.conv_transpose1d, tensors, {"groups": 2, "stride": 2})


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "conv_transpose"])
def test_complex_tensors_match_torch(transposed):
    c = torch.complex128
    w_shape = (4, 3, 3) if transposed else (6, 2, 3)
    tensors = (_leaf(2, 4, 5, dtype=c), _leaf(*w_shape, dtype=c), _leaf(6, dtype=c))
    manual, native = (MC.conv_transpose1d, F.conv_transpose1d) if transposed else (MC.conv1d, F.conv1d)
    _assert_same_as_torch(manual, native, tensors, {"stride": 2, "padding": 1, "groups": 2})


# -- extreme values, other dtypes ------------------------------------------------------------------

@pytest.mark.parametrize(("dtype", "scale"), [(torch.float64, 1e150), (torch.float64, 1e-160),
                                              (torch.float32, 1e18), (torch.float32, 1e-20)])
def test_extreme_magnitudes_stay_finite_like_torch(dtype, scale):
    """Products of huge (or tiny) inputs and weights: the same finite numbers as torch, no inf/NaN."""
    x, w, b = _leaf(2, 2, 5, 4, dtype=dtype), _leaf(4, 1, 2, 3, dtype=dtype), _leaf(4, dtype=dtype)
    with torch.no_grad():
        x.mul_(scale)
        w.mul_(scale)
    rel = dict(rtol=1e-10, atol=0) if dtype == torch.float64 else dict(rtol=1e-4, atol=0)
    out, grads = _assert_same_as_torch(MC.conv2d, F.conv2d, (x, w, b), {"groups": 2, "stride": (2, 1)}, rel)
    assert out.isfinite().all() and all(g.isfinite().all() for g in grads)
    out, grads = _assert_same_as_torch(MC.conv_transpose2d, F.conv_transpose2d, (x, w.transpose(0, 1).detach()
                                       .reshape(2, 2, 2, 3).requires_grad_(), None), {"stride": 2}, rel)
    assert out.isfinite().all() and all(g.isfinite().all() for g in grads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_dtypes_match_torch(dtype):
    tol = {torch.float16: dict(rtol=1e-2, atol=1e-2), torch.bfloat16: dict(rtol=5e-2, atol=1e-1),
           torch.float32: dict(rtol=1e-5, atol=1e-5)}[dtype]
    tensors = (_leaf(2, 4, 6, 5, dtype=dtype), _leaf(6, 2, 3, 3, dtype=dtype), _leaf(6, dtype=dtype))
    out, grads = _assert_same_as_torch(MC.conv2d, F.conv2d, tensors, {"groups": 2, "padding": 1, "stride": 2}, tol)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    tensors = (_leaf(2, 4, 3, 3, dtype=dtype), _leaf(4, 3, 2, 2, dtype=dtype), None)
    _assert_same_as_torch(MC.conv_transpose2d, F.conv_transpose2d, tensors, {"stride": 2, "output_padding": 1}, tol)
    for mode in ("constant", "reflect", "replicate", "circular"):
        _assert_same_as_torch(pad, F.pad, (_leaf(2, 3, 4, dtype=dtype), (1, 2, 2, 1)), {"mode": mode}, tol)


def test_autocast_backward_gives_float32_gradients_like_torch():
    x, w = _leaf(2, 4, 6, 6, dtype=torch.float32), _leaf(6, 2, 3, 3, dtype=torch.float32)
    x_n, w_n = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, expected = MC.conv2d(x, w, groups=2), F.conv2d(x_n, w_n, groups=2)
    assert out.dtype == expected.dtype == torch.bfloat16
    grad_out = torch.randn_like(out)
    want_all = torch.autograd.grad(expected, (x_n, w_n), grad_out)
    for got, want in zip(torch.autograd.grad(out, (x, w), grad_out), want_all):
        assert got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=2e-2, atol=5e-2)


# -- a converted CNN -------------------------------------------------------------------------------

def test_converted_cnn_matches_native_and_passes_the_audit():
    native = torch.nn.Sequential(
        torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(2, 4, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding="same", padding_mode="circular", groups=2), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(4, 2, 2, stride=2, output_padding=1), torch.nn.ZeroPad2d((1, 0, 0, 1)),
    ).to(DT)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x = torch.randn(3, 2, 8, 7, dtype=DT)
    out_m, out_n = manual(x), native(x)
    torch.testing.assert_close(out_m, out_n, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(out_n)
    out_n.backward(grad_out)
    audit = mbp.audit_backward(out_m, gradient=grad_out)
    assert audit.ok, str(audit)
    for (name, p_m), (_, p_n) in zip(manual.named_parameters(), native.named_parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, rtol=1e-10, atol=1e-10, msg=name)


def test_per_sample_gradients_of_a_conv_layer_with_vmap():
    w, x = torch.randn(3, 2, 2, dtype=DT), torch.randn(4, 2, 6, dtype=DT)

    def loss(weight, sample):
        return MC.conv1d(sample, weight, stride=2, padding=1).square().sum()

    def native_loss(weight, sample):
        return F.conv1d(sample, weight, stride=2, padding=1).square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(w, x)
    for n in range(4):
        torch.testing.assert_close(per_sample[n], torch.func.grad(native_loss)(w, x[n]), rtol=1e-10, atol=1e-12)


# -- signatures ------------------------------------------------------------------------------------

def _documented_signature(fn):
    """(name, default) pairs of a torch function, from its signature or, for a C builtin, its docstring."""
    try:
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]
    except ValueError:
        head = fn.__doc__.strip().splitlines()[0]
        params = head[head.index("(") + 1:head.index(")")].split(", ")
        return [(p.split("=")[0], eval(p.split("=")[1]) if "=" in p else inspect.Parameter.empty) for p in params]


@pytest.mark.parametrize("name", ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                                  "conv_transpose3d"])
def test_conv_signatures_mirror_torch(name):
    ours = [(p.name, p.default) for p in inspect.signature(getattr(MC, name)).parameters.values()]
    assert ours == _documented_signature(getattr(F, name))


def test_pad_signature_mirrors_torch():
    assert _documented_signature(pad) == _documented_signature(F.pad)




# -- bad input ------------------------------------------------------------------------------------

def _x(*shape):
    return torch.randn(*shape)


@pytest.mark.parametrize(
    ("call_it", "message"),
    [
        (lambda: MC.conv2d(_x(4, 5), _x(2, 4, 3, 3)), r"conv2d: expected a 3-D \(unbatched\) or 4-D \(batched\) "
                                                       r"input, got shape \(4, 5\)"),
        (lambda: MC.conv1d(_x(2, 4, 5), _x(2, 4, 3, 3)), r"conv1d: weight must be 3-D .* got shape \(2, 4, 3, 3\)"),
        (lambda: MC.conv2d(_x(1, 3, 5, 5), _x(2, 4, 3, 3)),
         r"conv2d: input shape \(1, 3, 5, 5\) has 3 channels .* weight shape \(2, 4, 3, 3\) with groups=1 expects 4"),
        (lambda: MC.conv2d(_x(1, 4, 5, 5), _x(6, 1, 3, 3), groups=2),
         r"input shape \(1, 4, 5, 5\) has 4 channels .* expects 2 \(weight.shape\[1\] · groups = 1 · 2\)"),
        (lambda: MC.conv1d(_x(1, 4, 5), _x(5, 2, 3), groups=2), r"has 5 at dimension 0, not a positive multiple of "
                                                                r"groups=2"),
        (lambda: MC.conv1d(_x(1, 4, 5), _x(6, 4, 3), groups=0), r"groups must be a positive int, got 0"),
        (lambda: MC.conv2d(_x(1, 1, 3, 3), _x(1, 1, 4, 2)), r"padded input size \(3, 3\) .* smaller than the "
                                                            r"dilated kernel \(4, 2\)"),
        (lambda: MC.conv1d(_x(1, 1, 5), _x(1, 1, 3), dilation=3), r"dilated kernel \(7,\)"),
        (lambda: MC.conv1d(_x(1, 1, 5), _x(1, 1, 3), padding="same", stride=2),
         r"padding='same' is not supported for strided convolutions"),
        (lambda: MC.conv1d(_x(1, 1, 5), _x(1, 1, 3), padding="full"), r"padding must be 'valid', 'same' or ints"),
        (lambda: MC.conv2d(_x(1, 1, 5, 5), _x(1, 1, 3, 3), stride=(1, 1, 1)),
         r"stride must be an int or a sequence of 2 ints"),
        (lambda: MC.conv1d(_x(1, 1, 5), _x(1, 1, 3), stride=0), r"stride must be positive"),
        (lambda: MC.conv1d(_x(1, 1, 5), _x(1, 1, 3), padding=-1), r"padding must be non-negative"),
        (lambda: MC.conv1d(_x(1, 1, 5), _x(1, 1, 3), dilation=0), r"dilation must be positive"),
        (lambda: MC.conv1d(_x(1, 2, 5), _x(3, 2, 3), _x(2)), r"bias shape \(2,\) does not match out_channels=3"),
        (lambda: MC.conv1d(_x(1, 2, 5), _x(3, 2, 3).double()), r"input \(torch.float32, cpu\) and weight "
                                                               r"\(torch.float64, cpu\)"),
        (lambda: MC.conv1d(_x(1, 0, 5), _x(3, 0, 3)), r"must not be empty"),
        (lambda: MC.conv_transpose1d(_x(1, 3, 5), _x(4, 2, 3)),
         r"conv_transpose1d: input shape \(1, 3, 5\) has 3 channels .* expects 4 \(weight.shape\[0\]\)"),
        (lambda: MC.conv_transpose1d(_x(1, 4, 5), _x(4, 2, 3), _x(2), groups=2),
         r"bias shape \(2,\) does not match out_channels=4"),
        (lambda: MC.conv_transpose1d(_x(1, 4, 5), _x(4, 2, 3), padding="same"),
         r"conv_transpose1d: padding must be ints"),
        (lambda: MC.conv_transpose1d(_x(1, 4, 5), _x(4, 2, 3), stride=2, output_padding=2),
         r"output_padding \(2,\) must be smaller than either stride \(2,\) or dilation \(1,\)"),
        (lambda: MC.conv_transpose1d(_x(1, 4, 2), _x(4, 2, 3), padding=3), r"output size \(-2,\), which is too small"),
        (lambda: MC.conv_transpose2d(_x(4, 5), _x(4, 2, 3, 3)), r"expected a 3-D \(unbatched\) or 4-D \(batched\)"),
        (lambda: pad(_x(2, 3), (1, 2, 3)), r"pad: pad must hold \(before, after\) pairs"),
        (lambda: pad(_x(2, 3), (1, 1, 1, 1, 1, 1)), r"pad: pad \(1, 1, 1, 1, 1, 1\) has 3 pairs, but the input "
                                                    r"shape \(2, 3\) has only 2 dimensions"),
        (lambda: pad(_x(2, 3), (1, 1), mode="wrap"), r"pad: mode must be one of"),
        (lambda: pad(_x(2, 3), (1.5, 1)), r"pad: pad must be a sequence of ints"),
        (lambda: pad(_x(2, 3), (-2, -2)), r"dimension 1 of input shape \(2, 3\) padded by \(-2, -2\) would have "
                                          r"negative size"),
        (lambda: pad(_x(2, 3), (1, 1), mode="reflect", value=1.0), r"mode 'reflect' takes no value"),
        (lambda: pad(_x(1, 2, 3), (3, 0), mode="reflect"), r"reflect padding \(3, 0\) of dimension 2 must be "
                                                           r"smaller than its size 3"),
        (lambda: pad(_x(1, 2, 3), (4, 0), mode="circular"), r"circular padding \(4, 0\) .* wrap around more than "
                                                            r"once"),
        (lambda: pad(_x(1, 2, 3), (2, -2), mode="circular"), r"wrap around more than once \(size 3, 1 kept"),
        (lambda: pad(_x(5), (1, 1), mode="replicate"), r"mode 'replicate' with 2 amounts pads the last 1 dimensions "
                                                       r"of an input with 2 or 3 dimensions"),
        (lambda: pad(_x(2, 2, 2, 2), (1, 1), mode="reflect"), r"input with 2 or 3 dimensions"),
        (lambda: pad(_x(2, 0, 3), (1, 1), mode="replicate"), r"needs non-empty dimensions"),
        (lambda: pad(_x(1, 2, 3), (-2, -1), mode="replicate"), r"would have size 0"),
    ],
)
def test_bad_input_is_a_clear_error(call_it, message):
    with pytest.raises(LayerInputError, match=message):
        call_it()


def test_module_errors_name_the_layer():
    model = mbp.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(5, 2, 1)))
    with pytest.raises(LayerInputError, match=r"layer '1' \(Conv2d\): conv2d: input shape \(2, 4, 3, 3\) has 4 "
                                              r"channels"):
        model(torch.randn(2, 3, 5, 5))
    with pytest.raises(LayerInputError, match=r"layer '0' \(ReflectionPad1d\): pad: reflect padding \(4, 4\)"):
        mbp.convert(torch.nn.Sequential(torch.nn.ReflectionPad1d(4)))(torch.randn(1, 2, 3))


def test_conv_transpose_output_size_out_of_reach_is_an_error():
    layer = mbp.convert(torch.nn.Sequential(torch.nn.ConvTranspose1d(2, 2, 3, stride=2)))[0]
    assert layer(torch.randn(1, 2, 4), output_size=[10]).shape == (1, 2, 10)
    with pytest.raises(LayerInputError, match=r"layer '0' \(ConvTranspose1d\): requested an output size of \[13\]"):
        layer(torch.randn(1, 2, 4), output_size=[13])


@pytest.mark.parametrize("wrt", [0, 1, 2], ids=["input", "weight", "bias"])
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "conv_transpose"])
def test_forward_mode_with_one_tangent_matches_torch(transposed, wrt):
    """torch.func.jvp with a tangent for one argument only (the others held constant)."""
    w_shape = (4, 3, 2, 2) if transposed else (6, 2, 2, 2)
    args = [torch.randn(2, 4, 3, 4, dtype=DT), torch.randn(*w_shape, dtype=DT), torch.randn(6, dtype=DT)]
    kwargs = {"stride": 2, "groups": 2, "padding": 1}
    manual, native = (MC.conv_transpose2d, F.conv_transpose2d) if transposed else (MC.conv2d, F.conv2d)

    def only(fn):
        return lambda t: fn(*[t if i == wrt else a for i, a in enumerate(args)], **kwargs)

    tangent = torch.randn_like(args[wrt])
    got = torch.func.jvp(only(manual), (args[wrt],), (tangent,))
    want = torch.func.jvp(only(native), (args[wrt],), (tangent,))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_forward_mode_matches_torch(mode):
    x, tangent = torch.randn(2, 3, 4, dtype=DT), torch.randn(2, 3, 4, dtype=DT)
    got = torch.func.jvp(lambda t: pad(t, (2, -1, 1, 2), mode=mode), (x,), (tangent,))
    want = torch.func.jvp(lambda t: F.pad(t, (2, -1, 1, 2), mode=mode), (x,), (tangent,))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
