"""The losses beyond what the case table checks: torch's signatures, bad input, extreme values,
shapes and settings drawn by hypothesis, other dtypes and devices."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_backprop as mbp
import manual_backprop.functional.losses as ML
from manual_backprop import LayerInputError

from cases import DT

NEW_FUNCTIONS = [
    "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "nll_loss", "kl_div", "poisson_nll_loss", "gaussian_nll_loss", "soft_margin_loss", "multilabel_soft_margin_loss",
    "margin_ranking_loss", "hinge_embedding_loss", "cosine_embedding_loss", "multi_margin_loss", "triplet_margin_loss",
]


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", NEW_FUNCTIONS)
def test_functional_signature_mirrors_torch(name):
    assert _params(getattr(ML, name)) == _params(getattr(F, name))


def _same_as_torch(manual, native, args, kwargs=None, rtol=1e-10, atol=1e-12):
    """Values and the gradients of every input that requires grad, against torch's."""
    kwargs = kwargs or {}
    twins = [a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args]
    out, expected = manual(*args, **kwargs), native(*twins, **kwargs)
    assert out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol, equal_nan=True)
    wrt = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    if wrt:
        g = torch.randn_like(expected)
        got = torch.autograd.grad(out, [args[i] for i in wrt], g, allow_unused=True)
        want = torch.autograd.grad(expected, [twins[i] for i in wrt], g, allow_unused=True)
        for i, a, b in zip(wrt, got, want):
            assert (a is None) == (b is None), f"argument {i}"
            if a is not None:
                torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True, msg=f"argument {i}")
    return out, expected


def _leaf(t):
    return t.detach().to(DT).requires_grad_(True)


# -- extreme values: the same finite numbers as torch ----------------------------------------------


def test_bce_with_probabilities_exactly_zero_and_one_is_finite_like_torch():
    a = _leaf(torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5]))
    y = _leaf(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3]))
    out, _ = _same_as_torch(ML.binary_cross_entropy, F.binary_cross_entropy, [a, y], {"reduction": "none"})
    assert out.tolist()[:4] == [100.0, 100.0, 0.0, 0.0]  # log clamped to −100, as torch
    (grad_a,) = torch.autograd.grad(ML.binary_cross_entropy(a, y.detach(), reduction="sum"), a)
    assert torch.isfinite(grad_a).all()  # (a − y)/max(a(1 − a), 1e-12): ±1e12, finite
    # ∂C/∂y = −logit(a) is ±inf at a ∈ {0, 1}, as in torch (compared above, infinities included)


@pytest.mark.parametrize("pos_weight", [None, torch.tensor([2.5])])
def test_bce_with_logits_of_plus_minus_1e4_is_finite_like_torch(pos_weight):
    x = _leaf(torch.tensor([1e4, -1e4, 1e4, -1e4, 0.0, 30.0, -30.0]))
    y = _leaf(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.2, 0.7]))
    pw = None if pos_weight is None else pos_weight.to(DT)
    kwargs = {"reduction": "none", "pos_weight": pw}
    out, _ = _same_as_torch(ML.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, [x, y], kwargs)
    assert torch.isfinite(out).all()
    for g in torch.autograd.grad(ML.binary_cross_entropy_with_logits(x, y, **kwargs).sum(), [x, y]):
        assert torch.isfinite(g).all()


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
def test_kl_div_with_zeros_in_the_target_is_finite_like_torch(reduction):
    x = _leaf(torch.log_softmax(torch.randn(3, 4), 1))
    y = torch.softmax(torch.randn(3, 4), 1).to(DT)
    y[0, 1], y[2, 0] = 0.0, 0.0
    out, _ = _same_as_torch(ML.kl_div, F.kl_div, [x, y], {"reduction": reduction})
    assert torch.isfinite(out).all()
    (grad_x,) = torch.autograd.grad(ML.kl_div(x, y, reduction=reduction).sum(), x)
    assert torch.isfinite(grad_x).all() and grad_x[0, 1] == 0


def test_kl_div_target_gradient_at_a_zero_target_is_minus_infinity():
    """∂l/∂y = log y + 1 − x → −∞ as y → 0; torch's xlogy backward gives NaN there instead."""
    x, y = _leaf(torch.tensor([-1.0, -2.0])), _leaf(torch.tensor([0.0, 0.5]))
    (grad_y,) = torch.autograd.grad(ML.kl_div(x, y, reduction="sum"), y)
    assert grad_y[0] == -math.inf
    torch.testing.assert_close(grad_y[1], torch.log(y[1]).detach() + 1 + 2)


def test_soft_margin_is_finite_where_torch_overflows():
    x = _leaf(torch.tensor([-1000.0, 1000.0, 3.0, -40.0]))
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=DT)
    out = ML.soft_margin_loss(x, y, reduction="none")
    expected = torch.nn.functional.softplus(-y * x.detach())  # log(1 + e^(−yx)), evaluated stably
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    assert torch.isinf(F.soft_margin_loss(x.detach(), y, reduction="none")[:2]).all()  # torch: log(1 + e^1000)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, (-y * torch.sigmoid(-y * x)).detach())
    _same_as_torch(ML.soft_margin_loss, F.soft_margin_loss, [x[2:].detach().requires_grad_(), y[2:]])


def test_multilabel_soft_margin_with_huge_logits_is_finite_like_torch():
    x = _leaf(torch.tensor([[1e4, -1e4, 0.5], [-1e4, 1e4, -2.0]]))
    y = _leaf(torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    out, _ = _same_as_torch(ML.multilabel_soft_margin_loss, F.multilabel_soft_margin_loss, [x, y],
                            {"reduction": "none"})
    assert torch.isfinite(out).all()


def test_poisson_full_target_gradient_is_finite_at_zero_counts():
    """The Stirling term is masked for y ≤ 1; torch's mask still leaks a NaN into ∂C/∂y at y = 0."""
    x, y = _leaf(torch.tensor([0.3, -0.2, 1.0])), _leaf(torch.tensor([0.0, 1.0, 4.0]))
    out = ML.poisson_nll_loss(x, y, full=True, reduction="sum")
    torch.testing.assert_close(out, F.poisson_nll_loss(x.detach(), y.detach(), full=True, reduction="sum"))
    grad_x, grad_y = torch.autograd.grad(out, [x, y])
    torch.testing.assert_close(grad_x, (torch.exp(x) - y).detach())
    expected_y = -x.detach() + torch.tensor([0.0, 0.0, math.log(4.0) + 1 / 8], dtype=DT)  # −x + log y + 1/(2y)
    torch.testing.assert_close(grad_y, expected_y)


def test_nll_with_minus_infinity_off_the_target_is_finite_like_torch():
    z = _leaf(torch.tensor([[0.0, -math.inf, -1.0], [-math.inf, -0.5, -2.0]]))
    _same_as_torch(ML.nll_loss, F.nll_loss, [z, torch.tensor([0, 1])])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_with_every_sample_ignored_has_zero_gradient_like_torch(reduction):
    z = _leaf(torch.randn(3, 4))
    _same_as_torch(ML.nll_loss, F.nll_loss, [z, torch.full((3,), -100)], {"reduction": reduction})
    (grad,) = torch.autograd.grad(ML.nll_loss(z, torch.full((3,), -100), reduction=reduction), z)
    assert not grad.any()


def test_gaussian_variance_below_eps_is_clamped_and_still_gets_its_gradient_like_torch():
    x, y = _leaf(torch.randn(4, 3)), _leaf(torch.randn(4, 3))
    var = _leaf(torch.rand(4, 3) * 1e-8)
    _same_as_torch(ML.gaussian_nll_loss, F.gaussian_nll_loss, [x, y, var], {"eps": 1e-6})


def test_cosine_embedding_of_a_zero_vector_is_finite_like_torch():
    x1 = _leaf(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    x2 = _leaf(torch.tensor([[1.0, -1.0, 2.0], [0.0, 0.0, 0.0]]))
    _same_as_torch(ML.cosine_embedding_loss, F.cosine_embedding_loss, [x1, x2, torch.tensor([1, -1])],
                   {"margin": -0.5, "reduction": "none"})


def test_l1_gradient_at_equal_values_is_zero_like_torch():
    a = _leaf(torch.tensor([1.0, 2.0, 3.0]))
    _same_as_torch(ML.l1_loss, F.l1_loss, [a, _leaf(torch.tensor([1.0, 1.0, 3.0]))])


@pytest.mark.parametrize("margin", [0.0, 1.0])
def test_margin_ranking_passes_the_gradient_exactly_at_the_hinge_like_torch(margin):
    x1, x2 = _leaf(torch.tensor([1.0, 2.0])), _leaf(torch.tensor([1.0, 1.0]))
    _same_as_torch(ML.margin_ranking_loss, F.margin_ranking_loss, [x1, x2, _leaf(torch.ones(2))],
                   {"margin": margin, "reduction": "sum"})


@pytest.mark.parametrize("fn", ["hinge_embedding_loss", "cosine_embedding_loss"])
def test_a_target_read_only_through_comparisons_gets_no_gradient_like_torch(fn):
    x1, x2, y = _leaf(torch.randn(4, 3)), _leaf(torch.randn(4, 3)), _leaf(torch.tensor([1.0, -1.0, 1.0, -1.0]))
    args = [x1, y[:, None].expand(4, 3).detach().requires_grad_()] if fn == "hinge_embedding_loss" else [x1, x2, y]
    out = getattr(ML, fn)(*args)
    assert torch.autograd.grad(out, args[-1], allow_unused=True) == (None,)
    assert torch.autograd.grad(getattr(F, fn)(*args), args[-1], allow_unused=True) == (None,)


def test_kl_div_mean_warns_like_torch():
    x, y = torch.randn(2, 3), torch.rand(2, 3)
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        out = ML.kl_div(x, y)
    with pytest.warns(UserWarning, match="'batchmean'"):
        torch.testing.assert_close(out, F.kl_div(x, y))


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
@pytest.mark.parametrize(("kwargs"), [{"size_average": False}, {"reduce": False}, {"size_average": True}])
def test_legacy_reduction_arguments_like_torch(kwargs):
    x, y = _leaf(torch.randn(3, 2)), _leaf(torch.randn(3, 2))
    for name in ["l1_loss", "smooth_l1_loss", "soft_margin_loss", "poisson_nll_loss"]:
        target = torch.sign(y.detach()) if name == "soft_margin_loss" else y
        _same_as_torch(getattr(ML, name), getattr(F, name), [x, target], kwargs)
    _same_as_torch(ML.kl_div, F.kl_div, [x, torch.rand(3, 2, dtype=DT)], kwargs)


@pytest.mark.parametrize("p", [0.5, 1.5, 3, math.inf, -1.0])
def test_triplet_margin_any_norm_like_torch(p):
    a, pos, neg = (_leaf(torch.randn(5, 3)) for _ in range(3))
    _same_as_torch(ML.triplet_margin_loss, F.triplet_margin_loss, [a, pos, neg],
                   {"p": p, "swap": True, "margin": 2.0, "reduction": "none"})


def test_triplet_with_p_zero_counts_nonzeros_and_has_zero_gradient():
    a, pos, neg = (_leaf(torch.randn(5, 3)) for _ in range(3))
    out = ML.triplet_margin_loss(a, pos, neg, p=0)
    torch.testing.assert_close(out, F.triplet_margin_loss(a, pos, neg, p=0))
    assert all(not g.any() for g in torch.autograd.grad(out, [a, pos, neg]))  # torch: None, the same zeros


@pytest.mark.parametrize(("input_shape", "target"), [((4,), torch.tensor([1])), ((), torch.tensor(0)),
                                                      ((1, 4), torch.tensor([3]))])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_multi_margin_small_shapes_like_torch(input_shape, target, reduction):
    _same_as_torch(ML.multi_margin_loss, F.multi_margin_loss, [_leaf(torch.randn(input_shape)), target],
                   {"reduction": reduction})


# -- shapes and settings drawn by hypothesis ---------------------------------------------------------

POINTWISE = {
    # name: (make the target from x (or None: a random real), extra kwargs drawn from a strategy)
    "l1_loss": (None, st.just({})),
    "smooth_l1_loss": (None, st.sampled_from([0.0, 0.3, 2.0]).map(lambda b: {"beta": b})),
    "huber_loss": (None, st.sampled_from([0.3, 2.0]).map(lambda d: {"delta": d})),
    "binary_cross_entropy": (lambda x: torch.rand_like(x), st.just({})),
    "binary_cross_entropy_with_logits": (lambda x: torch.rand_like(x), st.just({})),
    "kl_div": (lambda x: torch.rand_like(x), st.sampled_from([{}, {"log_target": True}])),
    "poisson_nll_loss": (lambda x: torch.rand_like(x) * 3,
                         st.fixed_dictionaries({"log_input": st.booleans(), "full": st.booleans()})),
    "soft_margin_loss": (lambda x: torch.sign(torch.randn_like(x)), st.just({})),
    "hinge_embedding_loss": (lambda x: torch.sign(torch.randn_like(x)), st.sampled_from([{}, {"margin": 0.3}])),
}


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")
@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(POINTWISE)),
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    data=st.data(),
)
def test_elementwise_losses_any_shape_and_setting(name, shape, reduction, data):
    make_target, extra = POINTWISE[name]
    kwargs = {"reduction": reduction, **data.draw(extra)}
    x = torch.randn(shape, dtype=DT)
    if name == "binary_cross_entropy" or (name == "poisson_nll_loss" and not kwargs["log_input"]):
        x = torch.rand(shape, dtype=DT) * 0.8 + 0.1
    if name == "kl_div" and reduction == "none":
        kwargs["reduction"] = "batchmean"
    y = torch.randn(shape, dtype=DT) if make_target is None else make_target(x)
    x, y = x.requires_grad_(), y.requires_grad_(name not in ("soft_margin_loss", "hinge_embedding_loss"))
    _same_as_torch(getattr(ML, name), getattr(F, name), [x, y], kwargs)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 4),
    n_classes=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 3), max_size=2),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
    ignore=st.booleans(),
)
def test_nll_any_shape_and_options(n, n_classes, spatial, reduction, weighted, ignore):
    z = _leaf(torch.log_softmax(torch.randn(n, n_classes, *spatial), 1))
    t = torch.randint(0, n_classes, (n, *spatial))
    w = torch.rand(n_classes, dtype=DT) + 0.5 if weighted else None
    _same_as_torch(ML.nll_loss, F.nll_loss, [z, t, w], {"reduction": reduction, "ignore_index": 0 if ignore else -100})


@settings(max_examples=30, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    dim=st.integers(1, 4),
    p=st.sampled_from([1, 1.5, 2, 3, math.inf]),
    swap=st.booleans(),
    margin=st.sampled_from([0.5, 1.0, 3.0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_triplet_any_shape_and_options(batch, dim, p, swap, margin, reduction):
    a, pos, neg = (_leaf(torch.randn(*batch, dim)) for _ in range(3))
    _same_as_torch(ML.triplet_margin_loss, F.triplet_margin_loss, [a, pos, neg],
                   {"p": p, "swap": swap, "margin": margin, "reduction": reduction})


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 4),
    n_classes=st.integers(1, 5),
    p=st.sampled_from([1, 2]),
    margin=st.sampled_from([-0.5, 0.5, 1.0, 2.0]),
    weighted=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_multi_margin_any_shape_and_options(n, n_classes, p, margin, weighted, reduction):
    x, t = _leaf(torch.randn(n, n_classes)), torch.randint(0, n_classes, (n,))
    w = torch.rand(n_classes, dtype=DT) + 0.5 if weighted else None
    _same_as_torch(ML.multi_margin_loss, F.multi_margin_loss, [x, t],
                   {"p": p, "margin": margin, "weight": w, "reduction": reduction})


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    var_form=st.sampled_from(["same", "per-sample", "size-1", "float"]),
    full=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    data=st.data(),
)
def test_gaussian_nll_variance_shapes_like_torch(shape, var_form, full, reduction, data):
    x, y = _leaf(torch.randn(shape)), _leaf(torch.randn(shape))
    if var_form == "float":
        var = 0.8
    else:
        var_shape = list(shape)
        if var_form == "per-sample":
            var_shape = var_shape[:-1]
        elif var_form == "size-1":
            var_shape[data.draw(st.integers(0, len(shape) - 1))] = 1
        var = _leaf(torch.rand(var_shape) + 0.2)
    _same_as_torch(ML.gaussian_nll_loss, F.gaussian_nll_loss, [x, y, var], {"full": full, "reduction": reduction})


# -- bad input: what torch rejects, a LayerInputError that names the function and the culprit --------

r = torch.rand
long = torch.long
BAD_INPUT = [
    (lambda: ML.l1_loss(r(4, 3), r(4, 1)), r"l1_loss: target shape \(4, 1\) differs from input shape \(4, 3\)"),
    (lambda: ML.l1_loss(r(4, 3), r(4, 3), weight=r(3)), r"l1_loss: weight shape \(3,\) differs"),
    (lambda: ML.l1_loss(r(3), r(3), reduction="avg"), r"l1_loss: reduction must be one of"),
    (lambda: ML.l1_loss(r(3), torch.ones(3, dtype=torch.bool)), r"l1_loss: target must be a real number tensor"),
    (lambda: ML.l1_loss(torch.ones(3, dtype=long), r(3)), r"l1_loss: input must be a floating-point tensor"),
    (lambda: ML.smooth_l1_loss(r(3), r(3), beta=-1.0), r"smooth_l1_loss: beta must be ≥ 0, got -1.0"),
    (lambda: ML.huber_loss(r(3), r(3), delta=0.0), r"huber_loss: delta must be > 0, got 0.0"),
    (lambda: ML.huber_loss(r(3), r(3), reduction="avg"), r"huber_loss: reduction must be one of"),
    (lambda: ML.binary_cross_entropy(r(4, 3) + 1, r(4, 3)),
     r"binary_cross_entropy: every input value must be a probability in \[0, 1\]"),
    (lambda: ML.binary_cross_entropy(torch.tensor([math.nan, 0.5]), r(2)), r"every input value must be a probability"),
    (lambda: ML.binary_cross_entropy(r(3), r(3) * 2 - 1.5), r"every target value must be a probability"),
    (lambda: ML.binary_cross_entropy(r(3), r(3, dtype=DT)), r"target dtype torch.float64 differs from input dtype"),
    (lambda: ML.binary_cross_entropy(r(4, 3), r(4, 1)), r"binary_cross_entropy: target shape \(4, 1\) differs"),
    (lambda: ML.binary_cross_entropy(r(4, 3), r(4, 3), r(2)), r"weight shape \(2,\) does not broadcast to input"),
    (lambda: ML.binary_cross_entropy(r(4, 3), r(4, 3), r(2, 4, 3)), r"weight shape \(2, 4, 3\) does not broadcast"),
    (lambda: ML.binary_cross_entropy(r(3), r(3), r(3).requires_grad_()), r"does not differentiate weight"),
    (lambda: ML.binary_cross_entropy_with_logits(r(4, 3), r(4)), r"with_logits: target shape \(4,\) differs"),
    (lambda: ML.binary_cross_entropy_with_logits(r(3), torch.ones(3, dtype=long)),
     r"target must be a floating-point tensor, got torch.int64"),
    (lambda: ML.binary_cross_entropy_with_logits(r(4, 3), r(4, 3), pos_weight=r(2)),
     r"pos_weight shape \(2,\) does not broadcast to input shape \(4, 3\)"),
    (lambda: ML.binary_cross_entropy_with_logits(r(3), r(3), pos_weight=r(3).requires_grad_()),
     r"does not differentiate pos_weight"),
    (lambda: ML.nll_loss(torch.tensor(1.0), torch.tensor(0)), r"nll_loss: input must have a class dimension"),
    (lambda: ML.nll_loss(r(4, 3), torch.tensor([0, 1, 2])), r"nll_loss: class-index target shape \(3,\) does not"),
    (lambda: ML.nll_loss(r(4, 3), torch.tensor([0, 1, 2, 3])), r"class indices \[3\] outside \[0, 3\)"),
    (lambda: ML.nll_loss(r(4, 3), torch.tensor([0, -1, 2, 1])), r"class indices \[-1\] outside \[0, 3\)"),
    (lambda: ML.nll_loss(r(2, 3), torch.tensor([0.0, 1.0])), r"nll_loss: target must hold class indices as"),
    (lambda: ML.nll_loss(r(2, 3), torch.tensor([0, 1], dtype=torch.int32)), r"got torch.int32"),
    (lambda: ML.nll_loss(r(2, 3, 2), torch.zeros(2, 2, dtype=torch.uint8)), r"as torch.int64 for input shape"),
    (lambda: ML.nll_loss(r(2, 3), torch.tensor([0, 1]), r(2)), r"nll_loss: weight shape \(2,\) is not \(3,\)"),
    (lambda: ML.nll_loss(r(2, 3), torch.tensor([0, 1]), r(3, dtype=DT)), r"nll_loss: weight dtype torch.float64"),
    (lambda: ML.nll_loss(r(2, 3), torch.tensor([0, 1]), r(3).requires_grad_()), r"class weights are constants"),
    (lambda: ML.kl_div(r(3), r(3), reduction="avg"), r"kl_div: reduction must be one of .*batchmean"),
    (lambda: ML.kl_div(r(4, 3), r(3), reduction="sum"), r"kl_div: target shape \(3,\) differs"),
    (lambda: ML.kl_div(r(3), torch.ones(3, dtype=long), reduction="sum"), r"kl_div: target must be a floating"),
    (lambda: ML.poisson_nll_loss(r(4, 3), r(3)), r"poisson_nll_loss: target shape \(3,\) differs"),
    (lambda: ML.gaussian_nll_loss(r(4, 3), r(4, 3), -r(4, 3)), r"gaussian_nll_loss: var holds negative entries"),
    (lambda: ML.gaussian_nll_loss(r(4, 3), r(4, 3), -1.0), r"gaussian_nll_loss: var must be ≥ 0, got -1.0"),
    (lambda: ML.gaussian_nll_loss(r(4, 3), r(4, 3), 1), r"var must be a tensor or a float, got int"),
    (lambda: ML.gaussian_nll_loss(r(4, 3), r(4, 3), r(3)), r"var shape \(3,\) does not fit input shape \(4, 3\)"),
    (lambda: ML.gaussian_nll_loss(r(4, 3), r(4, 3), r(1, 1)), r"var shape \(1, 1\) does not fit"),
    (lambda: ML.gaussian_nll_loss(r(4, 3), r(5, 3), r(4, 3)), r"target shape \(5, 3\) .* do not broadcast"),
    (lambda: ML.gaussian_nll_loss(r(3), r(3), r(3), reduction="avg"), r"gaussian_nll_loss: reduction must be"),
    (lambda: ML.soft_margin_loss(r(3), r(3).requires_grad_()), r"soft_margin_loss: torch does not differentiate tar"),
    (lambda: ML.soft_margin_loss(r(4, 3), r(3)), r"soft_margin_loss: target shape \(3,\) differs"),
    (lambda: ML.multilabel_soft_margin_loss(torch.tensor(0.5), torch.tensor(1.0)), r"must have a class dimension"),
    (lambda: ML.multilabel_soft_margin_loss(r(4, 3), r(4, 3), r(2)), r"weight shape \(2,\) does not broadcast"),
    (lambda: ML.multilabel_soft_margin_loss(r(4, 3), r(3)), r"multilabel_soft_margin_loss: target shape \(3,\)"),
    (lambda: ML.margin_ranking_loss(r(4), r(3), r(4)), r"input2 shape \(3,\) differs from input1 shape \(4,\)"),
    (lambda: ML.margin_ranking_loss(r(4, 1), r(4, 1), r(4)), r"target shape \(4,\) differs from input1 shape"),
    (lambda: ML.hinge_embedding_loss(r(4, 3), r(3)), r"hinge_embedding_loss: target shape \(3,\) differs"),
    (lambda: ML.cosine_embedding_loss(r(4, 3), r(4, 3), r(4, 3)), r"expected inputs \(N, D\) with a target \(N,\)"),
    (lambda: ML.cosine_embedding_loss(r(2, 4, 3), r(2, 4, 3), r(4)), r"got inputs \(2, 4, 3\) and target \(4,\)"),
    (lambda: ML.cosine_embedding_loss(r(4, 3), r(4, 2), r(4)), r"input2 shape \(4, 2\) differs from input1"),
    (lambda: ML.cosine_embedding_loss(r(4, 3), r(4, 3), r(3)), r"target shape \(3,\) differs from the inputs"),
    (lambda: ML.multi_margin_loss(r(4, 3), torch.tensor([0, 1, 2, 0]), p=3), r"only p = 1 and p = 2"),
    (lambda: ML.multi_margin_loss(r(2, 4, 3), torch.tensor([0, 1])), r"input must be \(C,\) or \(N, C\)"),
    (lambda: ML.multi_margin_loss(r(4, 3), torch.tensor([0, 1, 2])), r"target shape \(3,\) does not hold one class"),
    (lambda: ML.multi_margin_loss(r(4, 3), torch.tensor([0.0, 1, 2, 0])), r"class indices as int64, got torch.fl"),
    (lambda: ML.multi_margin_loss(r(4, 3), torch.tensor([0, 1, 2, 3])), r"class indices \[3\] outside \[0, 3\)"),
    (lambda: ML.multi_margin_loss(r(4, 3), torch.tensor([0, 1, 2, 0]), weight=r(2)), r"weight shape \(2,\) is not"),
    (lambda: ML.multi_margin_loss(r(4, 3), torch.tensor([0, 1, 2, 0]), weight=r(1, 3)), r"weight shape \(1, 3\)"),
    (lambda: ML.multi_margin_loss(r(4, 3), torch.tensor([0, 1, 2, 0]), weight=r(3, dtype=DT)), r"weight dtype"),
    (lambda: ML.triplet_margin_loss(r(4, 3), r(4, 3), r(4, 3), margin=0), r"margin must be > 0, got 0"),
    (lambda: ML.triplet_margin_loss(r(4, 3), r(3), r(4, 3)), r"positive shape \(3,\) differs from anchor shape"),
    (lambda: ML.triplet_margin_loss(r(4, 3), r(4, 3), r(4, 2)), r"negative shape \(4, 2\) differs"),
    (lambda: ML.triplet_margin_loss(r(()), r(()), r(())), r"anchor must be \(N, D\) or \(D,\), got a scalar"),
]


@pytest.mark.parametrize(("call_it", "message"), BAD_INPUT, ids=[f"bad-{i}" for i in range(len(BAD_INPUT))])
def test_bad_input_is_a_clear_error(call_it, message):
    with pytest.raises(LayerInputError, match=message):
        call_it()


def test_value_checks_step_aside_under_vmap():
    """Under torch.func.vmap no Python `if` may read values; the shape checks still run."""
    x, y = torch.rand(2, 3), torch.rand(2, 3)
    torch.testing.assert_close(torch.func.vmap(ML.binary_cross_entropy)(x, y),
                               torch.stack([F.binary_cross_entropy(x[i], y[i]) for i in range(2)]))
    with pytest.raises(LayerInputError, match="target shape"):
        torch.func.vmap(ML.binary_cross_entropy)(x, torch.rand(2, 4))


def test_module_error_names_the_loss():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.criterion = torch.nn.BCELoss()

        def forward(self, p, y):
            return self.criterion(p, y)

    net = mbp.convert(Net())
    with pytest.raises(LayerInputError, match=r"layer 'criterion' \(BCELoss\): binary_cross_entropy: target shape"):
        net(torch.rand(4, 3), torch.rand(4))


def test_module_settings_reach_the_function():
    """Non-default settings of each module change the value, and the converted module follows torch."""
    x, y = torch.randn(4, 3, dtype=DT), torch.randn(4, 3, dtype=DT)
    for make in [lambda: torch.nn.SmoothL1Loss(beta=0.2, reduction="none"), lambda: torch.nn.HuberLoss(delta=0.3),
                 lambda: torch.nn.PoissonNLLLoss(log_input=False, full=True, eps=0.5, reduction="sum"),
                 lambda: torch.nn.KLDivLoss(reduction="batchmean", log_target=True),
                 lambda: torch.nn.HingeEmbeddingLoss(margin=0.3, reduction="sum")]:
        native = make()
        a = x.abs() + 0.1 if isinstance(native, torch.nn.PoissonNLLLoss) else x
        b = torch.sign(y) if isinstance(native, torch.nn.HingeEmbeddingLoss) else y.abs()
        torch.testing.assert_close(mbp.convert(make())(a, b), native(a, b))


# -- devices and dtypes ------------------------------------------------------------------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOW_PRECISION = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}


def _one_call_each(device, dtype):
    def x(*s):
        return torch.randn(s, device=device).to(dtype).requires_grad_()

    def prob(*s):
        return (torch.rand(s, device=device) * 0.8 + 0.1).to(dtype).requires_grad_()

    def sign(*s):
        return torch.where(torch.rand(s, device=device) < 0.5, -1.0, 1.0).to(dtype)

    labels = torch.tensor([0, 2, 1, 1], device=device)
    return {
        "l1_loss": (x(4, 3), x(4, 3)), "smooth_l1_loss": (x(4, 3), x(4, 3)), "huber_loss": (x(4, 3), x(4, 3)),
        "binary_cross_entropy": (prob(4, 3), prob(4, 3)), "binary_cross_entropy_with_logits": (x(4, 3), prob(4, 3)),
        "nll_loss": (x(4, 3), labels), "kl_div": (x(4, 3), prob(4, 3)), "poisson_nll_loss": (x(4, 3), prob(4, 3)),
        "gaussian_nll_loss": (x(4, 3), x(4, 3), prob(4, 3)), "soft_margin_loss": (x(4, 3), sign(4, 3)),
        "multilabel_soft_margin_loss": (x(4, 3), prob(4, 3)), "margin_ranking_loss": (x(4), x(4), sign(4)),
        "hinge_embedding_loss": (x(4, 3), sign(4, 3)), "cosine_embedding_loss": (x(4, 3), x(4, 3), sign(4)),
        "multi_margin_loss": (x(4, 3), labels), "triplet_margin_loss": (x(4, 3), x(4, 3), x(4, 3)),
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", list(LOW_PRECISION), ids=str)
def test_other_dtypes_and_devices_follow_torch(device, dtype):
    tol = LOW_PRECISION[dtype]
    for name, args in _one_call_each(device, dtype).items():
        kwargs = {"reduction": "sum"}
        try:
            twins = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
            expected = getattr(F, name)(*twins, **kwargs)
        except (RuntimeError, NotImplementedError):  # torch has no kernel for this dtype on this device
            continue
        out = getattr(ML, name)(*args, **kwargs)
        assert out.dtype == expected.dtype and out.device == expected.device, name
        torch.testing.assert_close(out, expected, rtol=tol, atol=tol * 4, msg=name)
        grads = torch.autograd.grad(out, [a for a in args if a.requires_grad])
        expected_grads = torch.autograd.grad(expected, [a for a in twins if a.requires_grad])
        for got, want in zip(grads, expected_grads):
            assert got.dtype == want.dtype, name
            torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=name)
