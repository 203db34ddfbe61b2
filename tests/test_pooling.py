"""Pooling beyond the shared tables: random shapes and hyper-parameters against torch (the same
inputs rejected, the same values, indices and gradients otherwise), bad input, ties, extreme
values, every dtype, the indices output, and the functional signatures."""

from __future__ import annotations

import ast
import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from cases_pooling import distinct
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_backprop as mbp
from manual_backprop import LayerInputError
from manual_backprop.functional import pooling as MP

from cases import DT

D_NAMES = {1: "1d", 2: "2d", 3: "3d"}


def _fn(module, kind: str, d: int):
    return getattr(module, f"{kind}{D_NAMES[d]}")


def _native_outcome(call):
    """torch's result, or the exception it raised (whatever kind: RuntimeError, TypeError, ...)."""
    try:
        return call()
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError) as err:
        return err


def _compare(manual_call, native_call, x: torch.Tensor, with_indices: bool = False):
    """Both reject, or both agree on value, indices and ∂C/∂a_prev (float64, 1e-10).

    A dilated max-pooling window can see only padding: z_o = −∞ whatever the input, so its δ_o must
    reach no input. torch sends it to a stray index (sometimes a real input of another row), so
    torch's side gets δ_o = 0 there (the inputs are finite: z_o = −∞ only for such windows).
    """
    x_native = x.detach().clone().requires_grad_(x.requires_grad)
    expected = _native_outcome(lambda: native_call(x_native))
    if isinstance(expected, Exception):
        with pytest.raises(LayerInputError):
            manual_call(x)
        return False
    got = manual_call(x)
    if with_indices:
        (got, got_indices), (expected, expected_indices) = got, expected
        assert torch.equal(got_indices, expected_indices)
        assert not got_indices.requires_grad
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(got)
    (grad,) = torch.autograd.grad(got, x, g)
    if got.numel() == 0:  # an empty output blames no input (torch's backward refuses some of these)
        assert not grad.any()
        return True
    (grad_native,) = torch.autograd.grad(expected, x_native, g.masked_fill(expected == -torch.inf, 0))
    torch.testing.assert_close(grad, grad_native, rtol=1e-10, atol=1e-12)
    return True


# -- random shapes and hyper-parameters: same rejections, same numbers ------------------------------

@st.composite
def _input(draw, d: int, distinct_values: bool):
    batched = draw(st.booleans())
    lead = ([draw(st.integers(0, 2))] if batched else []) + [draw(st.integers(1, 2))]
    spatial = [draw(st.integers(1, 7)) for _ in range(d)]
    shape = (*lead, *spatial)
    x = distinct(*shape) if distinct_values else torch.randn(*shape, dtype=DT)
    return x.requires_grad_()


@st.composite
def _window_settings(draw, d: int, with_dilation: bool):
    """Mostly settings torch accepts (padding ≤ kernel/2 ...); now and then one that it refuses: an
    entry out of range, or a tuple of the wrong length. Too small an input happens by itself."""
    k = [draw(st.integers(1, 4)) for _ in range(d)]
    settings = {"kernel_size": k, "stride": [draw(st.integers(1, 3)) for _ in range(d)],
                "padding": [draw(st.integers(0, k_i // 2)) for k_i in k]}
    if with_dilation:
        settings["dilation"] = [draw(st.integers(1, 3)) for _ in range(d)]
    broken = draw(st.sampled_from([None] * 6 + list(settings)))
    if broken is not None:
        values = settings[broken]
        if draw(st.booleans()):
            values[draw(st.integers(0, d - 1))] = draw(st.integers(-1, 5))
        else:
            settings[broken] = values = draw(st.lists(st.integers(1, 2), max_size=4))
    for name, values in settings.items():  # one int where all agree, as often as a tuple
        settings[name] = values[0] if len(set(values)) == 1 and draw(st.booleans()) else tuple(values)
    if draw(st.integers(0, 3)) == 0:
        settings["stride"] = None  # the default: stride = kernel_size
    return {**settings, "ceil_mode": draw(st.booleans())}


@settings(max_examples=150, deadline=None)
@given(data=st.data(), d=st.sampled_from([1, 2, 3]), return_indices=st.booleans())
def test_max_pool_matches_torch_on_random_settings(data, d, return_indices):
    x = data.draw(_input(d, distinct_values=True))
    kw = data.draw(_window_settings(d, with_dilation=True))
    _compare(lambda t: _fn(MP, "max_pool", d)(t, **kw, return_indices=return_indices),
             lambda t: _fn(F, "max_pool", d)(t, **kw, return_indices=return_indices), x, return_indices)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), d=st.sampled_from([1, 2, 3]), count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, None, 0, 1, 3, -2]))
def test_avg_pool_matches_torch_on_random_settings(data, d, count_include_pad, divisor_override):
    """The divisor at every border: padding, ceil_mode's extra window, count_include_pad, override."""
    x = data.draw(_input(d, distinct_values=False))
    kw = data.draw(_window_settings(d, with_dilation=False))
    kw["count_include_pad"] = count_include_pad
    if d > 1:
        kw["divisor_override"] = divisor_override
    _compare(lambda t: _fn(MP, "avg_pool", d)(t, **kw), lambda t: _fn(F, "avg_pool", d)(t, **kw), x)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), d=st.sampled_from([1, 2, 3]), kind=st.sampled_from(["adaptive_avg_pool", "adaptive_max_pool"]),
       return_indices=st.booleans())
def test_adaptive_pool_matches_torch_on_random_sizes(data, d, kind, return_indices):
    """Windows [⌊o·L/n⌋, ⌈(o+1)·L/n⌉): overlapping, growing (n > L) and empty (n = 0) outputs."""
    x = data.draw(_input(d, distinct_values=kind == "adaptive_max_pool"))
    entry = st.integers(-1, 9) if d == 1 else st.one_of(st.none(), st.integers(-1, 9))
    output_size = data.draw(st.one_of(st.integers(-1, 9), st.tuples(*[entry] * d),
                                      st.lists(entry, max_size=4).map(tuple)))
    with_indices = kind == "adaptive_max_pool" and return_indices
    extra = {"return_indices": True} if with_indices else {}
    _compare(lambda t: _fn(MP, kind, d)(t, output_size, **extra), lambda t: _fn(F, kind, d)(t, output_size, **extra),
             x, with_indices)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_avg_pool_border_divisors_one_by_one(d):
    """The whole Jacobian ∂z_o/∂a_prev_j = [j ∈ window_o] / D_o, row by row (a one-hot δ each): the
    divisor of every window, the ceil_mode window that runs past the padding included."""
    x = torch.randn(1, 1, *[5] * d, dtype=DT)
    for count_include_pad in (True, False):
        kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=count_include_pad)
        jacobian = torch.autograd.functional.jacobian(lambda t, kw=kw: _fn(MP, "avg_pool", d)(t, **kw), x)
        expected = torch.autograd.functional.jacobian(lambda t, kw=kw: _fn(F, "avg_pool", d)(t, **kw), x)
        torch.testing.assert_close(jacobian, expected, rtol=1e-12, atol=1e-14)


# -- bad input ----------------------------------------------------------------------------------------

x2 = torch.randn(2, 3, 5, 5)


@pytest.mark.parametrize(
    ("call_it", "message"),
    [
        (lambda: MP.max_pool2d(torch.randn(5, 5), 2), r"max_pool2d: expected a 3-D \(C, H, W\) or 4-D .*\(5, 5\)"),
        (lambda: MP.max_pool1d(torch.randn(1, 2, 3, 5), 2), r"max_pool1d: expected a 2-D .* got shape \(1, 2, 3, 5\)"),
        (lambda: MP.avg_pool3d(torch.randn(3, 5, 5), 2), r"avg_pool3d: expected a 4-D \(C, D, H, W\) or 5-D"),
        (lambda: MP.adaptive_avg_pool1d(torch.randn(5), 2), r"adaptive_avg_pool1d: expected a 2-D"),
        (lambda: MP.max_pool2d(x2, 2, padding=2), r"max_pool2d: padding=\(2, 2\) must be at most half of "
                                                  r"kernel_size=\(2, 2\)"),
        (lambda: MP.avg_pool1d(torch.randn(2, 5), 3, padding=2), r"avg_pool1d: padding=\(2,\) must be at most half"),
        (lambda: MP.max_pool2d(x2, 6), r"max_pool2d: input spatial size \(5, 5\) is too small .* would be \(0, 0\)"),
        (lambda: MP.avg_pool2d(x2, (2, 6)), r"avg_pool2d: input spatial size \(5, 5\) is too small"),
        (lambda: MP.max_pool1d(torch.randn(1, 5), 3, dilation=3), r"output size would be \(0,\)"),
        (lambda: MP.max_pool2d(x2, 0), r"max_pool2d: kernel_size must be ≥ 1, got 0"),
        (lambda: MP.max_pool2d(x2, 2, stride=0), r"max_pool2d: stride must be ≥ 1, got 0"),
        (lambda: MP.max_pool2d(x2, 2, padding=-1), r"max_pool2d: padding must be ≥ 0, got -1"),
        (lambda: MP.max_pool3d(torch.randn(1, 1, 4, 4, 4), 2, dilation=(1, 0, 1)), r"dilation must be ≥ 1"),
        (lambda: MP.max_pool2d(x2, (2, 2, 2)), r"kernel_size must be an int or a sequence of 2 ints, got \(2, 2, 2\)"),
        (lambda: MP.avg_pool1d(torch.randn(2, 5), (2, 2)), r"kernel_size must be an int or a sequence of 1 ints"),
        (lambda: MP.max_pool2d(x2, 2.0), r"kernel_size must hold ints, got 2.0"),
        (lambda: MP.avg_pool2d(x2, 2, divisor_override=0), r"avg_pool2d: divisor_override must not be zero"),
        (lambda: MP.max_pool2d(torch.randn(2, 0, 5, 5), 2), r"input shape \(2, 0, 5, 5\) has an empty channel"),
        (lambda: MP.avg_pool2d(torch.randn(2, 3, 0, 5), 1), r"input shape \(2, 3, 0, 5\) has an empty"),
        (lambda: MP.adaptive_max_pool2d(torch.randn(3, 0, 5), 2), r"input shape \(3, 0, 5\) has an empty"),
        (lambda: MP.max_pool2d(x2.long(), 2), r"max_pool2d: expected a floating-point input, got torch.int64"),
        (lambda: MP.avg_pool2d(x2.bool(), 2), r"expected a floating-point input, got torch.bool"),
        (lambda: MP.max_pool2d([[1.0]], 2), r"max_pool2d: input must be a Tensor, got list"),
        (lambda: MP.adaptive_avg_pool2d(x2, (2,)), r"output_size must be an int or a sequence of 2 ints, got \(2,\)"),
        (lambda: MP.adaptive_max_pool3d(torch.randn(1, 2, 3, 3, 3), (1, 2, 3, 4)), r"sequence of 3 ints"),
        (lambda: MP.adaptive_avg_pool1d(x2[0], (None,)), r"adaptive_avg_pool1d: output_size must be an int"),
        (lambda: MP.adaptive_max_pool1d(x2[0], None), r"output_size must hold ints, got None"),
        (lambda: MP.adaptive_max_pool2d(x2, -1), r"output_size must be ≥ 0, got -1"),
        (lambda: MP.adaptive_avg_pool2d(x2, (2, 1.5)), r"output_size must hold ints, got \(2, 1.5\)"),
    ],
)
def test_bad_input_is_a_clear_error(call_it, message):
    with pytest.raises(LayerInputError, match=message):
        call_it()


def test_a_converted_pooling_layer_names_itself_in_errors():
    model = mbp.convert(torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(4)), strict=True)
    with pytest.raises(LayerInputError, match=r"layer '1' \(AvgPool2d\): avg_pool2d: input spatial size \(3, 3\)"):
        model(torch.randn(1, 1, 6, 6))


# -- max pooling: ties, indices, special values -------------------------------------------------------

@pytest.mark.parametrize("d", [1, 2, 3])
def test_ties_send_delta_where_torch_does(d):
    """Equal values in a window: torch picks one winner, and δ goes to that same input here."""
    x = torch.zeros(2, 1, *[4] * d, dtype=DT, requires_grad=True)  # every window is one big tie
    x_native = x.detach().clone().requires_grad_()
    for kind, kw in [("max_pool", dict(kernel_size=3, stride=1, padding=1)), ("adaptive_max_pool", {"output_size": 3})]:
        out, expected = _fn(MP, kind, d)(x, **kw), _fn(F, kind, d)(x_native, **kw)
        g = torch.randn_like(out)
        (grad,) = torch.autograd.grad(out, x, g)
        (grad_native,) = torch.autograd.grad(expected, x_native, g)
        torch.testing.assert_close(grad, grad_native, rtol=0, atol=0)


def test_delta_of_overlapping_windows_adds_up_at_a_shared_maximum():
    x = torch.tensor([[[0.0, 1.0, 9.0, 2.0, 3.0]]], dtype=DT, requires_grad=True)
    out = MP.max_pool1d(x, 3, stride=1)  # 9 wins all three windows
    (grad,) = torch.autograd.grad(out, x, torch.tensor([[[1.0, 10.0, 100.0]]], dtype=DT))
    assert grad.tolist() == [[[0.0, 0.0, 111.0, 0.0, 0.0]]]


def test_a_dilated_window_of_padding_only_passes_no_delta():
    """Row o's window taps columns −1 and 2 of a 2-wide input: z_o = −∞ for every input, so no input
    is to blame (torch's own backward credits a stray index: the first input of the next row)."""
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=DT, requires_grad=True)
    kw = dict(kernel_size=(1, 2), padding=(0, 1), dilation=(1, 3))
    out, indices = MP.max_pool2d(x, **kw, return_indices=True)
    assert torch.equal(out, torch.full((1, 1, 2, 1), -torch.inf, dtype=DT))
    assert torch.equal(indices, F.max_pool2d(x, **kw, return_indices=True)[1])  # torch's indices, as they are
    (grad,) = torch.autograd.grad(out, x, torch.full_like(out, 10.0))
    assert not grad.any()
    _, tangent = torch.func.jvp(lambda t: MP.max_pool2d(t, **kw), (x.detach(),), (torch.ones_like(x),))
    assert not tangent.any()
    y = distinct(1, 2, 3, 2).requires_grad_()  # some windows see input, some only padding (−∞: no
    # finite differences there, so gradcheck sees those outputs as 0)
    assert torch.autograd.gradcheck(lambda t: MP.max_pool2d(t, (2, 2), 1, (1, 1), (2, 3)).nan_to_num(neginf=0.0),
                                    (y,), check_forward_ad=True, check_batched_grad=True)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_indices_are_torchs_and_not_differentiable(d):
    x = distinct(2, 3, *[5] * d).requires_grad_()
    for kind, args in [("max_pool", (3, 2, 1, 1, True)), ("adaptive_max_pool", ((4,) * d,))]:
        out, indices = _fn(MP, kind, d)(x, *args, return_indices=True)
        expected, expected_indices = _fn(F, kind, d)(x.detach(), *args, return_indices=True)
        assert torch.equal(indices, expected_indices) and indices.dtype == torch.int64
        assert out.requires_grad and not indices.requires_grad
        torch.testing.assert_close(out, expected)


def test_max_pool_indices_unpool_back_like_torch():
    x = distinct(1, 2, 4, 6)
    out, indices = MP.max_pool2d(x, 2, return_indices=True)
    expected = F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2)
    torch.testing.assert_close(F.max_unpool2d(out, indices, 2), expected)


def test_forward_mode_with_indices_gathers_the_tangent_at_the_argmax():
    x, tangent = distinct(2, 2, 5, 5), torch.randn(2, 2, 5, 5, dtype=DT)
    for kind, args in [("max_pool", (2, 2, 1)), ("adaptive_max_pool", (3,))]:
        _, (tangent_out, _) = torch.func.jvp(
            lambda t, kind=kind, args=args: _fn(MP, kind, 2)(t, *args, return_indices=True), (x,), (tangent,))
        _, expected = torch.func.jvp(lambda t, kind=kind, args=args: _fn(F, kind, 2)(t, *args), (x,), (tangent,))
        torch.testing.assert_close(tangent_out, expected, rtol=1e-12, atol=0)


def test_per_sample_gradients_with_indices_under_vmap():
    x = distinct(3, 2, 5, 5)

    def loss(sample):
        out, _ = MP.max_pool2d(sample, 2, return_indices=True)
        return (out ** 2).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss))(x)
    for n in range(3):
        sample = x[n].clone().requires_grad_()
        (expected,) = torch.autograd.grad((F.max_pool2d(sample, 2) ** 2).sum(), sample)
        torch.testing.assert_close(per_sample[n], expected)


@pytest.mark.parametrize(("kind", "args"), [("max_pool", (2, 2, 1)), ("avg_pool", (2, 2, 1)),
                                            ("adaptive_max_pool", (3,)), ("adaptive_avg_pool", (3,))])
def test_extreme_inputs_give_torchs_values_and_gradients(kind, args):
    """±inf, NaN, ±1e308 and the smallest subnormal: the same outputs and δ as torch, NaN where it has NaN."""
    values = torch.tensor([float("inf"), -float("inf"), 1e308, -1e308, 5e-324, 0.0, 1.0, -2.0, 3.0, float("nan"),
                           1e308, 1e308, -1e-300, 4.0, 2e-308, -5.0], dtype=DT)
    for x in (values.reshape(1, 1, 4, 4), values.flip(0).reshape(1, 1, 4, 4), values[:-1].roll(3)[:9].reshape(1, 3, 3)):
        x = x.clone().requires_grad_()
        x_native = x.detach().clone().requires_grad_()
        out, expected = _fn(MP, kind, 2)(x, *args), _fn(F, kind, 2)(x_native, *args)
        torch.testing.assert_close(out, expected, equal_nan=True, rtol=1e-12, atol=0)
        for g in (torch.ones_like(out), torch.full_like(out, 1e308), torch.full_like(out, 1e-310)):
            (grad,) = torch.autograd.grad(out, x, g, retain_graph=True)
            (grad_native,) = torch.autograd.grad(expected, x_native, g, retain_graph=True)
            torch.testing.assert_close(grad, grad_native, equal_nan=True, rtol=1e-12, atol=0)


# -- dtypes and modules ---------------------------------------------------------------------------------

MODULES = [
    lambda: torch.nn.MaxPool1d(3, 2, 1, ceil_mode=True),
    lambda: torch.nn.MaxPool2d(3, 2, 1, return_indices=True),
    lambda: torch.nn.MaxPool3d(2, 1, dilation=2),
    lambda: torch.nn.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False),
    lambda: torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, divisor_override=5),
    lambda: torch.nn.AvgPool3d(2, 2, 1, ceil_mode=True),
    lambda: torch.nn.AdaptiveAvgPool1d(4),
    lambda: torch.nn.AdaptiveAvgPool2d((3, None)),
    lambda: torch.nn.AdaptiveAvgPool3d(3),
    lambda: torch.nn.AdaptiveMaxPool1d(4, return_indices=True),
    lambda: torch.nn.AdaptiveMaxPool2d(3),
    lambda: torch.nn.AdaptiveMaxPool3d((None, 2, 3)),
]
TOLERANCE = {torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
             torch.float32: dict(rtol=1e-5, atol=1e-6)}


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("make", MODULES, ids=lambda m: type(m()).__name__)
def test_every_module_in_every_float_dtype(make, dtype):
    native = make()
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    d = int(type(native).__name__[-2])
    x = distinct(2, 3, *[6] * d).div(10).to(dtype).requires_grad_()  # distinct in float16 and bfloat16 too
    x_native = x.detach().clone().requires_grad_()
    expected = _native_outcome(lambda: native(x_native))
    if isinstance(expected, NotImplementedError):  # avg_pool3d in float16 or bfloat16 on CPU
        with pytest.raises(LayerInputError, match=rf"layer '\(root\)' .*torch has no kernel for a {dtype}"):
            manual(x)
        return
    out = manual(x)
    if isinstance(out, tuple):
        assert torch.equal(out[1], expected[1])
        out, expected = out[0], expected[0]
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)  # the forward is torch's own
    g = torch.randn_like(out)
    audit = mbp.audit_backward(out, gradient=g)
    assert audit.ok, str(audit)
    expected.backward(g)
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad, x_native.grad, **TOLERANCE[dtype])


def test_channels_last_input_gives_torchs_gradients():
    x = torch.randn(2, 3, 7, 6, dtype=DT).to(memory_format=torch.channels_last).requires_grad_()
    for kind, args in [("max_pool", (3, 2, 1, 2)), ("avg_pool", (3, 2, 1, True, False)), ("adaptive_max_pool", (4,)),
                       ("adaptive_avg_pool", (4,))]:
        out, expected = _fn(MP, kind, 2)(x, *args), _fn(F, kind, 2)(x, *args)
        g = torch.randn_like(expected)
        torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(expected, x, g)[0])


@pytest.mark.parametrize(("kind", "args"), [("max_pool", (3, 2, 1)), ("avg_pool", (3, 2, 1, True)),
                                            ("adaptive_max_pool", (4,)), ("adaptive_avg_pool", (4,))])
def test_under_autocast_delta_keeps_its_dtype_like_torch(kind, args):
    """No weights to meet: a float32 δ stays float32 (autocast would round the averaging to bfloat16)."""
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, expected = _fn(MP, kind, 2)(x, *args), _fn(F, kind, 2)(x, *args)
        g = torch.randn_like(expected)
        grad, grad_native = torch.autograd.grad(out, x, g)[0], torch.autograd.grad(expected, x, g)[0]
    assert out.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(grad, grad_native, rtol=1e-6, atol=1e-7)


def test_a_pooling_network_converts_and_passes_the_audit():
    native = torch.nn.Sequential(torch.nn.MaxPool2d(2, ceil_mode=True), torch.nn.AvgPool2d(3, 1, 1),
                                 torch.nn.AdaptiveMaxPool2d(3), torch.nn.AdaptiveAvgPool2d(1)).to(DT)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x = distinct(2, 3, 9, 7).requires_grad_()
    x_native = x.detach().clone().requires_grad_()
    out, expected = manual(x), native(x_native)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    audit = mbp.audit_backward(out, gradient=torch.ones_like(out))
    assert audit.ok, str(audit)
    expected.backward(torch.ones_like(expected))
    torch.testing.assert_close(x.grad, x_native.grad, rtol=1e-12, atol=0)


# -- the functional entries mirror torch.nn.functional ----------------------------------------------------

def _signature(fn):
    """Names and defaults; torch's max pools hide theirs behind a dispatch on return_indices, and its
    C builtins state theirs in the first line of the docstring."""
    fn = getattr(F, f"{fn.__name__}_with_indices", fn)
    try:
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]
    except ValueError:
        header = ast.parse(fn.__doc__.strip().splitlines()[0].split(" -> ")[0]).body[0].value
        return [(a.id, inspect.Parameter.empty) for a in header.args] + [
            (k.arg, ast.literal_eval(k.value)) for k in header.keywords]


NAMES = [f"{kind}{D_NAMES[d]}" for kind in ("max_pool", "avg_pool", "adaptive_max_pool", "adaptive_avg_pool")
         for d in (1, 2, 3)]


@pytest.mark.parametrize("name", NAMES)
def test_functional_signatures_mirror_torch(name):
    def mine(fn):
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    assert mine(getattr(MP, name)) == _signature(getattr(F, name))

