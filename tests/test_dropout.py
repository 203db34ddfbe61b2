"""Dropout beyond the case table: random masks in training mode (the same as torch's for the same
seed), the identity in evaluation mode, in-place calls, vmap randomness, bad input."""

import copy
import importlib
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_backprop as mbp
import manual_backprop.nn.dropout  # registers the drop-in modules
from manual_backprop import LayerInputError
from manual_backprop.functional.dropout import (
    Dropout,
    DropoutInplace,
    alpha_dropout,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    feature_alpha_dropout,
)

# the module, not the function of the same name that manual_backprop.functional exports
dropout_module = importlib.import_module("manual_backprop.functional.dropout")
DT = torch.float64
MANUAL = {f.__name__: f for f in (dropout, alpha_dropout, feature_alpha_dropout, dropout1d, dropout2d, dropout3d)}
SHAPES = {  # shapes each variant accepts without a warning, batched and unbatched where it has both
    "dropout": [(3, 4), (5,), (2, 3, 2), ()],
    "alpha_dropout": [(3, 4), (7,)],
    "feature_alpha_dropout": [(2, 3, 4), (2, 3, 2, 2), (4, 3)],
    "dropout1d": [(2, 3, 4), (3, 4)],
    "dropout2d": [(2, 3, 2, 2)],
    "dropout3d": [(2, 3, 2, 2, 2), (3, 2, 2, 2)],
}


def _both(name, x, p, training=True, inplace=False, seed=7):
    """(manual, native) outputs and input gradients, each drawn after the same seed."""
    results = []
    for fn in (MANUAL[name], getattr(F, name)):
        z = x.clone().requires_grad_(x.is_floating_point())
        src = z * 1 if inplace and z.requires_grad else z  # in place on a copy, never on the leaf
        torch.manual_seed(seed)
        out = fn(src, p, training, inplace)
        grad = None
        if out.requires_grad:
            torch.manual_seed(99)
            (grad,) = torch.autograd.grad(out, z, torch.randn_like(out))
        results.append((out, grad))
    return results


@pytest.mark.parametrize("name", list(MANUAL))
@pytest.mark.parametrize("inplace", [False, True], ids=["out-of-place", "inplace"])
def test_training_masks_and_gradients_are_torchs_bit_for_bit(name, inplace):
    for shape in SHAPES[name]:
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            for p in (0.15, 1.0):  # 1/(1 − 0.15) rounds differently from 1 / fl(0.85) in float32
                (out, grad), (want, want_grad) = _both(name, torch.randn(shape, dtype=dtype), p, inplace=inplace)
                assert out.shape == want.shape and torch.equal(out, want), (shape, dtype, p)
                assert torch.equal(grad, want_grad), (shape, dtype, p)


def test_a_transposed_input_gets_torchs_mask_too():
    x = torch.randn(4, 3, dtype=DT).t()
    (out, grad), (want, want_grad) = _both("dropout", x, 0.4)
    assert torch.equal(out, want) and torch.equal(grad, want_grad)


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(list(MANUAL)),
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    p=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_any_shape_and_p_match_torch(name, batch, channels, spatial, p, seed):
    shape = {"dropout1d": (batch, channels, spatial[0]), "dropout2d": (batch, channels, *spatial[:2], 1)[:4],
             "dropout3d": (batch, channels, *[*spatial, 1, 1][:3])}.get(name, (batch, channels, *spatial))
    (out, grad), (want, want_grad) = _both(name, torch.randn(shape, dtype=DT), p, seed=seed)
    assert torch.equal(out, want)
    if grad is not None or want_grad is not None:
        assert torch.equal(grad, want_grad)


@pytest.mark.parametrize("name", list(MANUAL))
def test_the_expected_fraction_is_dropped_and_kept_units_are_scaled(name):
    x = torch.ones({"dropout1d": (400, 50, 1), "dropout3d": (400, 50, 1, 1, 1)}.get(name, (400, 50, 1, 1)), dtype=DT)
    torch.manual_seed(0)
    out = MANUAL[name](x, 0.3, True)
    dropped = out != out.max()
    assert abs(dropped.double().mean().item() - 0.3) < 0.05
    if "alpha" not in name:
        kept = out[~dropped]
        assert torch.allclose(kept, torch.full_like(kept, 1 / 0.7))


@pytest.mark.parametrize("name", list(MANUAL))
def test_eval_p0_and_empty_input_return_the_input_itself_like_torch(name):
    x = torch.randn(SHAPES[name][0], dtype=DT, requires_grad=True)
    assert MANUAL[name](x, 0.5, False) is x
    assert MANUAL[name](x, 0.0, True) is x
    if name in ("dropout", "alpha_dropout", "feature_alpha_dropout", "dropout2d"):
        assert getattr(F, name)(x, 0.5, False) is x  # torch too (dropout1d/3d unbatched: a view of it)
    empty = torch.empty(0, *SHAPES[name][0][1:], dtype=DT)
    assert MANUAL[name](empty, 0.5, True) is empty


def test_unbatched_dropout1d_in_eval_has_torchs_values():
    x = torch.randn(3, 4, dtype=DT)
    assert torch.equal(dropout1d(x, training=False), F.dropout1d(x, training=False))


TINY = {"dropout": (3, 2), "alpha_dropout": (3, 2), "feature_alpha_dropout": (2, 2, 2), "dropout1d": (2, 2, 2),
        "dropout2d": (2, 2, 1, 2), "dropout3d": (2, 2, 1, 1, 2)}


@pytest.mark.parametrize("name", list(MANUAL))
def test_gradcheck_with_the_mask_fixed_by_the_seed(name):
    """Re-seeding before every call fixes the mask, so the public entry itself can be gradchecked."""
    x = torch.randn(TINY[name], dtype=DT, requires_grad=True)

    def fn(z):
        torch.manual_seed(3)
        return MANUAL[name](z, 0.4, True)

    assert torch.autograd.gradcheck(fn, (x,), check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_backward_is_delta_times_mask():
    x = torch.randn(6, 5, dtype=DT, requires_grad=True)
    torch.manual_seed(0)
    out = dropout(x, 0.25)
    delta = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, delta)
    torch.manual_seed(0)
    keep = torch.empty_like(x).bernoulli_(0.75)
    torch.testing.assert_close(grad, delta * (keep / 0.75), rtol=0, atol=0)  # m = keep / (1 − p)


def test_forward_mode_matches_torch():
    x, tangent = torch.randn(2, 3, 4, dtype=DT), torch.randn(2, 3, 4, dtype=DT)
    for name in ("dropout", "alpha_dropout", "dropout1d"):
        results = []
        for fn in (MANUAL[name], getattr(F, name)):
            torch.manual_seed(5)
            results.append(torch.func.jvp(lambda z, fn=fn: fn(z, 0.4, True), (x,), (tangent,)))
        (out, t), (want, want_t) = results
        assert torch.equal(out, want) and torch.equal(t, want_t), name


def test_inplace_forward_mode_matches_torch():
    import torch.autograd.forward_ad as fwAD

    x, tangent = torch.randn(3, 4, dtype=DT), torch.randn(3, 4, dtype=DT)
    results = []
    for fn in (dropout, F.dropout):
        with fwAD.dual_level():
            dual = fwAD.make_dual(x.clone(), tangent.clone()) * 1
            torch.manual_seed(5)
            out = fn(dual, 0.4, True, True)
            assert out is dual
            results.append(tuple(t.clone() for t in fwAD.unpack_dual(out)[:2]))
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("name", ["dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d"])
@pytest.mark.parametrize("randomness", ["error", "same", "different"])
def test_vmap_randomness_behaves_like_torch(name, randomness):
    x = torch.randn(3, *SHAPES[name][0], dtype=DT)
    results = []
    for fn in (MANUAL[name], getattr(F, name)):
        torch.manual_seed(2)
        try:
            results.append(torch.func.vmap(lambda t, fn=fn: fn(t, 0.5, True), randomness=randomness)(x))
        except RuntimeError as err:
            results.append(str(err))
    if randomness == "error":
        assert all("randomness" in r for r in results)
    else:
        assert torch.equal(*results)


def test_per_sample_gradients_under_vmap_match_torch():
    x = torch.randn(4, 3, 5, dtype=DT)

    def loss(fn):
        return lambda z: (fn(z, 0.3, True) ** 2).sum()

    grads = []
    for fn in (dropout, F.dropout):
        torch.manual_seed(1)
        grads.append(torch.func.vmap(torch.func.grad(loss(fn)), randomness="different")(x))
    assert torch.equal(*grads)


@pytest.mark.parametrize("randomness", ["same", "different"])
def test_in_place_dropout_under_vmap_matches_torch(randomness):
    x = torch.randn(4, 3, 5, dtype=DT)

    def loss(fn):
        return lambda z: (fn(z * 1, 0.3, True, inplace=True) ** 2).sum()

    grads = []
    for fn in (dropout, F.dropout):
        torch.manual_seed(1)
        grads.append(torch.func.vmap(torch.func.grad(loss(fn)), randomness=randomness)(x))
    assert torch.equal(*grads)


def test_audit_passes_in_training_mode():
    for name, fn in MANUAL.items():
        x = torch.randn(SHAPES[name][0], dtype=DT, requires_grad=True)
        out = fn(x, 0.5, True)
        assert mbp.audit_backward(out, gradient=torch.randn_like(out)).ok
    out = dropout(torch.randn(3, 4, dtype=DT, requires_grad=True) * 1, 0.5, True, True)
    graph = mbp.audit_backward(out, gradient=torch.randn_like(out)).graph
    assert "DropoutInplace" in graph


def test_inplace_overwrites_its_input_like_torch():
    x = torch.randn(3, 4, dtype=DT)
    for name in MANUAL:
        h, h_native = x.clone(), x.clone()
        if name in ("feature_alpha_dropout", "dropout2d", "dropout3d"):
            h, h_native = h.reshape(1, 3, 4, 1)[..., :], h_native.reshape(1, 3, 4, 1)[..., :]
        torch.manual_seed(4)
        out = MANUAL[name](h, 0.5, True, True)
        torch.manual_seed(4)
        getattr(F, name)(h_native, 0.5, True, True)
        assert out is h and torch.equal(h, h_native), name


def test_inplace_on_a_leaf_is_refused_like_torch():
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        dropout(x, 0.5, True, True)


def test_inplace_function_refuses_a_mask_that_needs_a_gradient():
    z = torch.randn(3, dtype=DT) * 1
    with pytest.raises(LayerInputError, match="mask and shift must be constants"):
        DropoutInplace.call(z, torch.ones(3, dtype=DT, requires_grad=True), None)


def test_function_gradients_for_mask_and_shift_are_the_product_rule():
    z = torch.randn(2, 3, 4, dtype=DT, requires_grad=True)
    m = torch.rand(2, 3, 1, dtype=DT, requires_grad=True)
    beta = torch.randn(2, 3, 1, dtype=DT, requires_grad=True)
    delta = torch.randn(2, 3, 4, dtype=DT)
    grads = torch.autograd.grad(Dropout.call(z, m, beta), (z, m, beta), delta)
    want = ((delta * m), (delta * z).sum(-1, keepdim=True), delta.sum(-1, keepdim=True))
    for got, w in zip(grads, want):
        torch.testing.assert_close(got, w.detach())


def test_the_fused_gpu_branch_takes_torchs_fused_mask(monkeypatch):
    """On CUDA torch's F.dropout uses the fused native_dropout kernel; this runs that branch on CPU."""
    monkeypatch.setattr(dropout_module, "_FUSED_DEVICES", ("cpu",))
    x = torch.randn(5, 6, dtype=DT, requires_grad=True)
    torch.manual_seed(8)
    out = dropout(x, 0.3)
    torch.manual_seed(8)
    want, keep = torch.native_dropout(x.detach(), 0.3, True)
    assert torch.equal(out, want)
    delta = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, delta)
    torch.testing.assert_close(grad, delta * keep / 0.7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_masks_match_torch():
    for name in MANUAL:
        for inplace in (False, True):
            x = torch.randn(SHAPES[name][0], device="cuda")
            (out, grad), (want, want_grad) = _both(name, x, 0.3, inplace=inplace)
            assert torch.equal(out, want), (name, inplace)
            torch.testing.assert_close(grad, want_grad, rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:dropout.d. Received")
@pytest.mark.parametrize("name", list(MANUAL))
def test_extreme_inputs_give_torchs_values(name):
    big = {torch.float64: 1e300, torch.float32: 3e38, torch.float16: 6e4, torch.bfloat16: 3e38}
    for dtype, value in big.items():
        x = torch.tensor([value, -value, float("inf"), float("nan"), 0.0, 1e-30], dtype=dtype)
        x = x.repeat(4).reshape(2, 3, 4)
        (out, grad), (want, want_grad) = _both(name, x, 0.5)
        torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(grad, want_grad, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize(
    ("call_it", "message"),
    [
        (lambda: dropout(torch.randn(3), 1.5), r"dropout: dropout probability has to be between 0 and 1, but got 1.5"),
        (lambda: alpha_dropout(torch.randn(3), -0.1), r"alpha_dropout: .* but got -0.1"),
        (lambda: dropout1d(torch.randn(2, 3, 4, 5)), r"dropout1d: expected a 2-D \(C, L\) or 3-D .*\(2, 3, 4, 5\)"),
        (lambda: dropout1d(torch.randn(5), training=False), r"dropout1d: expected .* got shape \(5,\)"),
        (lambda: feature_alpha_dropout(torch.randn(5), 0.5, True), r"at least 2 dimensions.*\(5,\)"),
        (lambda: dropout3d(torch.randn(()), 0.5), r"dropout3d: feature \(channel\) dropout requires at least 2"),
        (lambda: dropout(torch.arange(4), 0.5), r"dropout: input must be a floating-point tensor.*torch.int64"),
    ],
)
def test_bad_input_is_a_clear_error(call_it, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(LayerInputError, match=message):
            call_it()


def test_what_torch_accepts_in_eval_or_with_p_one_is_accepted_too():
    x = torch.randn(5)
    assert feature_alpha_dropout(x, 0.5, False) is x  # no channel check in eval, like torch
    assert torch.equal(dropout(torch.arange(4), 1.0), F.dropout(torch.arange(4), 1.0))  # integers times 0


@pytest.mark.parametrize(("name", "shape", "match"), [
    ("dropout2d", (2, 3, 4), "Received a 3D input to dropout2d"),
    ("dropout2d", (2, 3), "Received a 2-D input to dropout2d"),
    ("dropout3d", (2, 3, 4), "Received a 3-D input to dropout3d"),
])
def test_dropout2d_and_3d_warn_like_torch(name, shape, match):
    x = torch.randn(shape, dtype=DT)
    with pytest.warns(UserWarning, match=match):
        torch.manual_seed(0)
        out = MANUAL[name](x, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        assert torch.equal(out, getattr(F, name)(x, 0.5))


def test_functional_signatures_mirror_torch():
    for name, fn in MANUAL.items():
        ours = [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]
        theirs = [(p.name, p.default) for p in inspect.signature(getattr(F, name)).parameters.values()]
        assert ours == theirs, name


NATIVE_MODULES = [torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
                  torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout]


@pytest.mark.parametrize("native_cls", NATIVE_MODULES)
def test_converted_module_in_a_model_trains_like_native(native_cls):
    shape = {torch.nn.Dropout1d: (4, 3, 5), torch.nn.Dropout3d: (4, 3, 2, 1, 5)}.get(native_cls, (4, 3, 2, 5))
    native = torch.nn.Sequential(torch.nn.Linear(5, 5), native_cls(0.4), torch.nn.Linear(5, 2)).to(DT)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x = torch.randn(shape, dtype=DT)
    for mode in ("train", "eval"):
        getattr(native, mode)()
        getattr(manual, mode)()
        torch.manual_seed(6)
        out_m = manual(x)
        torch.manual_seed(6)
        out_n = native(x)
        torch.testing.assert_close(out_m, out_n, rtol=1e-12, atol=1e-12)
        assert mbp.audit_backward(out_m, gradient=torch.ones_like(out_m)).ok
        out_n.sum().backward()
        for p_m, p_n in zip(manual.parameters(), native.parameters()):
            torch.testing.assert_close(p_m.grad, p_n.grad, rtol=1e-12, atol=1e-12)


def test_alpha_dropout_modules_ignore_inplace_like_torch():
    x = torch.randn(3, 4, dtype=DT)
    for cls in (torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout):
        layer = mbp.convert(cls(0.5, inplace=True))
        h = x.clone()
        out = layer(h)
        assert out is not h and torch.equal(h, x)


def test_error_from_a_module_names_the_layer():
    model = mbp.convert(torch.nn.Sequential(torch.nn.Dropout1d(0.5)))
    with pytest.raises(LayerInputError, match=r"layer '0' \(Dropout1d\): dropout1d: expected"):
        model(torch.randn(2, 3, 4, 5))
