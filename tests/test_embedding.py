"""Embedding and EmbeddingBag beyond the case table: the options whose backward is by convention not
the derivative (padding_idx lookups, scale_grad_by_freq), max_norm, sparse gradients, any shape
(hypothesis), bad input, extreme values."""

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_backprop as mbp
import manual_backprop.nn.embedding  # registers the drop-in modules
from manual_backprop import LayerInputError
from manual_backprop.functional.embedding import embedding, embedding_bag

DT = torch.float64
TOL = dict(rtol=1e-12, atol=1e-12)


def _grads(fn, inputs, kwargs, wrt, g=None):
    """fn's output and its gradients for the tensors at positions ``wrt`` of ``inputs`` (fresh leaves)."""
    inputs = [t.detach().clone().requires_grad_(k in wrt) if isinstance(t, torch.Tensor) and t.is_floating_point()
              else t for k, t in enumerate(inputs)]
    out = fn(*inputs, **kwargs)
    g = torch.randn_like(out) if g is None else g
    return out, torch.autograd.grad(out, [inputs[k] for k in wrt], g), g


def _assert_like_torch(manual, native, inputs, kwargs, wrt=(1,)):
    out, grads, g = _grads(manual, inputs, kwargs, wrt)
    want, want_grads, _ = _grads(native, inputs, kwargs, wrt, g)
    torch.testing.assert_close(out, want, **TOL)
    for got, w in zip(grads, want_grads):
        torch.testing.assert_close(got, w, **TOL)


# -- Embedding ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    num_embeddings=st.integers(1, 6),
    dim=st.integers(1, 4),
    idx_shape=st.lists(st.integers(0, 3), max_size=3),
    padding=st.one_of(st.none(), st.integers(-6, 5)),
    scale_grad_by_freq=st.booleans(),
    int32=st.booleans(),
)
def test_embedding_any_shape_and_options_match_torch(num_embeddings, dim, idx_shape, padding, scale_grad_by_freq,
                                                      int32):
    padding = None if padding is None else max(-num_embeddings, min(padding, num_embeddings - 1))
    idx = torch.randint(0, num_embeddings, idx_shape, dtype=torch.int32 if int32 else torch.int64)
    w = torch.randn(num_embeddings, dim, dtype=DT)
    kwargs = dict(padding_idx=padding, scale_grad_by_freq=scale_grad_by_freq)
    _assert_like_torch(embedding, F.embedding, [idx, w], kwargs)


def test_padding_row_gets_no_gradient_but_the_lookup_still_reads_it():
    w = torch.randn(4, 3, dtype=DT, requires_grad=True)
    idx = torch.tensor([[2, 0], [2, 2]])
    out = embedding(idx, w, padding_idx=2)
    assert torch.equal(out[0, 0], w[2])
    (grad,) = torch.autograd.grad(out, w, torch.ones_like(out))
    assert not grad[2].any() and torch.equal(grad[0], torch.ones(3, dtype=DT))


def test_scale_grad_by_freq_divides_each_row_by_its_count():
    w = torch.randn(4, 2, dtype=DT, requires_grad=True)
    (grad,) = torch.autograd.grad(embedding(torch.tensor([1, 1, 3, 1]), w, scale_grad_by_freq=True).sum(), w)
    assert grad[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("kwargs", [{"padding_idx": 1}, {"scale_grad_by_freq": True}], ids=["padding", "freq"])
def test_backward_with_conventions_is_still_twice_differentiable(kwargs):
    """gradcheck cannot pass (by design δ is not the derivative), but the backward is linear in δ and
    its own derivative is exact."""
    w = torch.randn(4, 3, dtype=DT, requires_grad=True)
    idx = torch.tensor([[1, 0], [1, 3]])
    assert torch.autograd.gradgradcheck(lambda t: embedding(idx, t, **kwargs), (w,))


def test_forward_mode_reads_the_padding_row_like_torch():
    w, tangent = torch.randn(4, 3, dtype=DT), torch.randn(4, 3, dtype=DT)
    idx = torch.tensor([[1, 0], [1, 3]])
    got = torch.func.jvp(lambda t: embedding(idx, t, padding_idx=1), (w,), (tangent,))
    want = torch.func.jvp(lambda t: F.embedding(idx, t, padding_idx=1), (w,), (tangent,))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_per_sample_gradients_with_padding_under_vmap():
    w = torch.randn(5, 3, dtype=DT)
    idx = torch.tensor([[0, 1, 1], [4, 2, 1]])

    def loss(fn):
        return lambda t, i: (fn(i, t, padding_idx=1, scale_grad_by_freq=True) ** 2).sum()

    batched = torch.func.vmap(torch.func.grad(loss(embedding)), in_dims=(None, 0))(w, idx)
    for n in range(2):
        torch.testing.assert_close(batched[n], torch.func.grad(loss(F.embedding))(w, idx[n]), **TOL)


def test_max_norm_renormalises_the_weight_in_place_like_torch():
    w = torch.randn(6, 3, dtype=DT) * 3
    idx = torch.tensor([[0, 2], [2, 5]])
    w_m, w_n = w.clone().requires_grad_(), w.clone().requires_grad_()
    version = w_m._version
    out, want = embedding(idx, w_m, max_norm=1.5, norm_type=1.0), F.embedding(idx, w_n, max_norm=1.5, norm_type=1.0)
    assert w_m._version > version
    torch.testing.assert_close(w_m, w_n, rtol=0, atol=0)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, w_m, g)[0], torch.autograd.grad(want, w_n, g)[0], **TOL)
    assert mbp.audit_backward(embedding(idx, w_m, max_norm=1.0), gradient=g).ok


def test_sparse_gradient_is_torchs():
    idx = torch.tensor([[0, 2], [2, 4]])
    grads = []
    for fn in (embedding, F.embedding):
        w = torch.randn(5, 3, dtype=DT, requires_grad=True)
        fn(idx, w, padding_idx=4, sparse=True).sum().backward()
        grads.append(w.grad)
    assert grads[0].is_sparse and grads[0].shape == grads[1].shape
    assert torch.equal(grads[0]._indices(), grads[1]._indices()) and torch.equal(grads[0]._values(), grads[1]._values())


def test_sparse_embedding_trains_with_sparse_adam():
    layer = mbp.convert(torch.nn.Embedding(5, 3, sparse=True))
    opt = torch.optim.SparseAdam(layer.parameters(), lr=0.1)
    before = layer.weight.detach().clone()
    layer(torch.tensor([1, 3])).sum().backward()
    opt.step()
    changed = (layer.weight != before).any(1)
    assert changed.tolist() == [False, True, False, True, False]


def test_empty_indices():
    w = torch.randn(4, 3, dtype=DT, requires_grad=True)
    out = embedding(torch.zeros(0, 2, dtype=torch.long), w)
    assert out.shape == (0, 2, 3)
    (grad,) = torch.autograd.grad(out, w, torch.ones_like(out))
    assert grad.shape == (4, 3) and not grad.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_matches_torch(dtype):
    idx = torch.tensor([[0, 2, 2], [3, 2, 0]])
    w = torch.randn(4, 3, dtype=dtype)
    out, grads, g = _grads(embedding, [idx, w], {"scale_grad_by_freq": True}, (1,))
    want, want_grads, _ = _grads(F.embedding, [idx, w], {"scale_grad_by_freq": True}, (1,), g)
    assert torch.equal(out, want)
    torch.testing.assert_close(grads[0], want_grads[0])


def test_extreme_values_stay_finite_like_torch():
    w = torch.tensor([[1e300, -1e300], [3.0, 4.0], [5.0, 6.0]], dtype=DT)
    idx = torch.tensor([0, 1, 2, 2])
    g = torch.tensor([[1.0, 1.0], [float("inf"), 1.0], [1e308, 1e308], [1e308, 1e308]], dtype=DT)
    for kwargs in ({"padding_idx": 1}, {"padding_idx": 1, "scale_grad_by_freq": True}):
        out, grads, _ = _grads(embedding, [idx, w], kwargs, (1,), g)
        want, want_grads, _ = _grads(F.embedding, [idx, w], kwargs, (1,), g)
        assert torch.equal(out, want)
        torch.testing.assert_close(grads[0], want_grads[0], rtol=0, atol=0)  # inf only where torch has it


# -- EmbeddingBag ------------------------------------------------------------------------------


@st.composite
def _bags(draw):
    num_embeddings, dim = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["sum", "mean", "max"]))
    two_d = draw(st.booleans())
    if two_d:
        idx_shape, offsets, last = (draw(st.integers(1, 3)), draw(st.integers(1, 3))), None, False
    else:
        sizes = draw(st.lists(st.integers(0, 3), min_size=1, max_size=4))
        idx_shape = (sum(sizes),)
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        last = draw(st.booleans())
        offsets = torch.tensor([*starts, sum(sizes)] if last else starts)
    padding = draw(st.one_of(st.none(), st.integers(-num_embeddings, num_embeddings - 1)))
    psw = mode == "sum" and draw(st.booleans())
    freq = mode != "max" and draw(st.booleans())
    kwargs = dict(mode=mode, include_last_offset=last, padding_idx=padding, scale_grad_by_freq=freq)
    return num_embeddings, dim, idx_shape, offsets, psw, kwargs


def _bag_grads(fn, idx, w, offsets, psw, kwargs, g=None):
    w = w.clone().requires_grad_()
    psw = None if psw is None else psw.clone().requires_grad_()
    out = fn(idx, w, offsets, per_sample_weights=psw, **kwargs)
    g = torch.randn_like(out) if g is None else g
    grads = torch.autograd.grad(out, [w] + ([] if psw is None else [psw]), g)
    return out, grads, g


def _counts(idx, num_embeddings):
    return torch.bincount(idx.reshape(-1), minlength=num_embeddings).clamp(min=1).to(DT).unsqueeze(1)


@settings(max_examples=60, deadline=None)
@given(_bags())
def test_embedding_bag_any_bags_and_options_match_torch(bag):
    num_embeddings, dim, idx_shape, offsets, with_psw, kwargs = bag
    idx = torch.randint(0, num_embeddings, idx_shape)
    w = torch.randn(num_embeddings, dim, dtype=DT)
    psw = torch.rand(idx_shape, dtype=DT) + 0.5 if with_psw else None
    out, grads, g = _bag_grads(embedding_bag, idx, w, offsets, psw, kwargs)
    unscaled = dict(kwargs, scale_grad_by_freq=False)  # see the next test: torch 2.13 miscounts on CPU
    want, want_grads, _ = _bag_grads(F.embedding_bag, idx, w, offsets, psw, unscaled, g)
    torch.testing.assert_close(out, want, **TOL)
    if kwargs["scale_grad_by_freq"]:
        want_grads = (want_grads[0] / _counts(idx, num_embeddings), *want_grads[1:])  # ÷ count(r)
    for got, w_ in zip(grads, want_grads):
        torch.testing.assert_close(got, w_, **TOL)


def test_embedding_bag_scale_grad_by_freq_uses_each_rows_own_count():
    """torch 2.13 on CPU divides by the count of another row here (pytorch/pytorch#190063, fixed by
    #190264, giving [0, 1, 0, 0.5]); its CUDA kernel and nn.Embedding divide by the row's own count."""
    w = torch.ones(4, 3, dtype=DT, requires_grad=True)
    embedding_bag(torch.tensor([1, 1, 3]), w, torch.tensor([0]), mode="sum", scale_grad_by_freq=True).sum().backward()
    assert w.grad[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_embedding_bag_with_uniform_counts_matches_torch_with_scale_grad_by_freq():
    idx, offsets = torch.tensor([1, 3, 3, 1, 0, 0]), torch.tensor([0, 2, 4])
    for mode in ("sum", "mean"):
        kwargs = dict(mode=mode, scale_grad_by_freq=True)
        _assert_like_torch(embedding_bag, F.embedding_bag, [idx, torch.randn(4, 3, dtype=DT), offsets], kwargs)


def test_max_mode_ties_send_the_gradient_to_the_first_member_like_torch():
    w = torch.tensor([[1.0, 2.0], [5.0, 0.0], [5.0, 0.0]], dtype=DT)
    idx, offsets = torch.tensor([2, 1, 0]), torch.tensor([0])
    _assert_like_torch(lambda i, t: embedding_bag(i, t, offsets, mode="max"),
                       lambda i, t: F.embedding_bag(i, t, offsets, mode="max"), [idx, w], {})
    _, (grad,), _ = _bag_grads(embedding_bag, idx, w, offsets, None, {"mode": "max"}, torch.ones(1, 2, dtype=DT))
    assert grad.tolist() == [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]  # coordinate 0: rows 2 and 1 tie, row 2 comes first


def test_bag_of_padding_only_and_empty_bags_are_zero_with_finite_gradients():
    w = torch.randn(4, 2, dtype=DT)
    idx, offsets = torch.tensor([3, 3, 1, 2]), torch.tensor([0, 2, 2])
    g = torch.tensor([[float("inf"), 1.0], [float("nan"), 1.0], [1.0, 1.0]], dtype=DT)
    for mode in ("sum", "mean", "max"):
        out, grads, _ = _bag_grads(embedding_bag, idx, w, offsets, None, {"mode": mode, "padding_idx": 3}, g)
        want, want_grads, _ = _bag_grads(F.embedding_bag, idx, w, offsets, None, {"mode": mode, "padding_idx": 3}, g)
        assert not out[:2].any() and torch.equal(out, want)
        assert torch.isfinite(grads[0]).all()
        torch.testing.assert_close(grads[0], want_grads[0], **TOL)


def test_no_bags_and_no_members():
    w = torch.randn(4, 2, dtype=DT)
    for idx, offsets in ((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)),
                         (torch.zeros(0, dtype=torch.long), torch.tensor([0, 0]))):
        psw = torch.rand(idx.shape, dtype=DT)
        out, grads, g = _bag_grads(embedding_bag, idx, w, offsets, psw, {"mode": "sum"})
        want, want_grads, _ = _bag_grads(F.embedding_bag, idx, w, offsets, psw, {"mode": "sum"}, g)
        assert torch.equal(out, want)
        for got, w_ in zip(grads, want_grads):
            assert torch.equal(got, w_)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_sparse_gradient_is_torchs(mode):
    idx, offsets = torch.tensor([0, 2, 2, 4, 1]), torch.tensor([0, 1, 4])
    grads = []
    for fn in (embedding_bag, F.embedding_bag):
        w = torch.randn(5, 3, dtype=DT, requires_grad=True)
        fn(idx, w, offsets, mode=mode, padding_idx=4, sparse=True).sum().backward()
        grads.append(w.grad)
    assert grads[0].is_sparse
    assert torch.equal(grads[0]._indices(), grads[1]._indices())
    torch.testing.assert_close(grads[0]._values(), grads[1]._values(), **TOL)


def test_embedding_bag_forward_mode_where_torch_has_none():
    """torch 2.13 raises NotImplementedError for forward AD through embedding_bag; ours is the directional
    derivative (checked against central differences)."""
    idx, offsets = torch.tensor([0, 2, 2, 4, 1]), torch.tensor([0, 1, 1, 4])
    w, w_t = torch.randn(5, 3, dtype=DT), torch.randn(5, 3, dtype=DT)
    p, p_t = torch.rand(5, dtype=DT), torch.randn(5, dtype=DT)
    eps = 1e-6
    for mode in ("sum", "mean", "max"):
        psw, psw_t = ((p,), (p_t,)) if mode == "sum" else ((), ())

        def f(t, *s, mode=mode):
            return embedding_bag(idx, t, offsets, mode=mode, padding_idx=2, per_sample_weights=s[0] if s else None)

        _, tangent = torch.func.jvp(f, (w, *psw), (w_t, *psw_t))
        step = [(a + eps * b, a - eps * b) for a, b in zip((w, *psw), (w_t, *psw_t))]
        numerical = (f(*[s[0] for s in step]) - f(*[s[1] for s in step])) / (2 * eps)
        torch.testing.assert_close(tangent, numerical, rtol=1e-6, atol=1e-6)
        with pytest.raises(NotImplementedError):
            torch.func.jvp(lambda t, mode=mode: F.embedding_bag(idx, t, offsets, mode=mode), (w,), (w_t,))


def test_embedding_bag_max_norm_renormalises_like_torch():
    idx, offsets = torch.tensor([0, 2, 2, 4]), torch.tensor([0, 2])
    w = torch.randn(5, 3, dtype=DT) * 3
    w_m, w_n = w.clone(), w.clone()
    out = embedding_bag(idx, w_m, offsets, max_norm=1.0)
    want = F.embedding_bag(idx, w_n, offsets, max_norm=1.0)
    assert torch.equal(w_m, w_n) and torch.equal(out, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_low_precision_matches_torch(dtype, mode):
    idx, offsets = torch.tensor([0, 2, 2, 4, 1, 3]), torch.tensor([0, 1, 4])
    w = torch.randn(5, 3, dtype=dtype)
    psw = torch.rand(6, dtype=dtype) if mode == "sum" else None
    out, grads, g = _bag_grads(embedding_bag, idx, w, offsets, psw, {"mode": mode})
    want, want_grads, _ = _bag_grads(F.embedding_bag, idx, w, offsets, psw, {"mode": mode}, g)
    assert torch.equal(out, want)
    for got, w_ in zip(grads, want_grads):
        torch.testing.assert_close(got, w_)


def test_old_argument_order_warns_and_works_like_torch():
    w, idx = torch.randn(4, 2, dtype=DT), torch.tensor([[0, 3]])
    with pytest.warns(UserWarning, match="Argument order of nn.functional.embedding_bag was changed"):
        out = embedding_bag(w, idx)
    torch.testing.assert_close(out, F.embedding_bag(idx, w), **TOL)


# -- bad input ---------------------------------------------------------------------------------

W = torch.randn(5, 3)
I2 = torch.tensor([0, 1])
O1 = torch.tensor([0])


@pytest.mark.parametrize(
    ("call_it", "message"),
    [
        (lambda: embedding(torch.tensor([[0, 7], [-1, 2]]), W), r"embedding: indices \[-1, 7\] are outside \[0, 5\)"),
        (lambda: embedding(torch.tensor([0.0, 1.0]), W), r"embedding: indices must be an integer tensor.*float32"),
        (lambda: embedding(I2.short(), W), r"integer tensor \(int64 or int32\), got torch.int16"),
        (lambda: embedding(I2, torch.randn(5)), r"embedding: weight must be 2-D .* got shape \(5,\)"),
        (lambda: embedding(I2, W, padding_idx=5), r"embedding: padding_idx=5 must be within num_embeddings, -5"),
        (lambda: embedding(I2, W, padding_idx=-6), r"padding_idx=-6 must be within"),
        (lambda: embedding(I2, W, scale_grad_by_freq=True, sparse=True), r"scale_grad_by_freq is not supported"),
        (lambda: embedding_bag(torch.tensor([0, 9]), W, O1), r"embedding_bag: indices \[9\] are outside \[0, 5\)"),
        (lambda: embedding_bag(I2.float(), W, O1), r"embedding_bag: indices must be an integer tensor"),
        (lambda: embedding_bag(I2, W, torch.tensor([1])), r"offsets\[0\] has to be 0 .* got 1"),
        (lambda: embedding_bag(torch.tensor([0, 1, 2]), W, torch.tensor([0, 2, 1])), r"non-decreasing.*\[0, 2, 1\]"),
        (lambda: embedding_bag(I2, W, torch.tensor([0, 3])), r"offsets\[-1\]=3 is greater than the input's length 2"),
        (lambda: embedding_bag(I2, W, torch.tensor([0, 1]), include_last_offset=True),
         r"last offset must equal the input's length 2 \(CSR layout\), got 1"),
        (lambda: embedding_bag(I2, W, torch.zeros(0, dtype=torch.long), include_last_offset=True),
         r"include_last_offset needs at least one offset"),
        (lambda: embedding_bag(I2, W, O1.float()), r"offsets must be an integer tensor"),
        (lambda: embedding_bag(I2, W, torch.zeros(0, dtype=torch.long)),  # torch crashes on this one
         r"offsets is empty \(no bag\) but the input holds 2 indices"),
        (lambda: embedding_bag(I2, W, O1, per_sample_weights=torch.ones(2), mode="mean"),
         r"per_sample_weights is only supported for mode='sum', got mode='mean'"),
        (lambda: embedding_bag(I2, W, O1, per_sample_weights=torch.ones(3), mode="sum"),
         r"per_sample_weights shape \(3,\) differs from the input shape \(2,\)"),
        (lambda: embedding_bag(I2, W, O1, per_sample_weights=torch.ones(2, dtype=DT), mode="sum"),
         r"per_sample_weights dtype torch.float64 differs from the weight's torch.float32"),
        (lambda: embedding_bag(I2.reshape(1, 2), W, O1), r"if input is 2-D .* offsets has to be None"),
        (lambda: embedding_bag(torch.zeros(2, 0, dtype=torch.long), W), r"bags of length ≥ 1, got shape \(2, 0\)"),
        (lambda: embedding_bag(I2, W), r"a 1-D input needs 1-D offsets .* got None"),
        (lambda: embedding_bag(I2, W, O1.reshape(1, 1)), r"a 1-D input needs 1-D offsets .* got shape \(1, 1\)"),
        (lambda: embedding_bag(I2.reshape(1, 1, 2), W), r"input has to be 1-D or 2-D, got shape \(1, 1, 2\)"),
        (lambda: embedding_bag(I2, W, O1, mode="min"), r"mode has to be one of sum, mean or max, got 'min'"),
        (lambda: embedding_bag(I2, W, O1, mode="max", scale_grad_by_freq=True), r"max mode does not support scaling"),
        (lambda: embedding_bag(I2, W, O1, mode="max", sparse=True), r"max mode does not support sparse"),
        (lambda: embedding_bag(I2, W, O1, sparse=True, scale_grad_by_freq=True), r"not supported with sparse"),
        (lambda: embedding_bag(I2, W, O1, padding_idx=7), r"padding_idx=7 must be within num_embeddings"),
        (lambda: embedding_bag(I2, torch.randn(5, 3, 1), O1), r"weight must be 2-D .* \(5, 3, 1\)"),
    ],
)
def test_bad_input_is_a_clear_error(call_it, message):
    with pytest.raises(LayerInputError, match=message):
        call_it()


def test_error_from_a_module_names_the_layer():
    model = mbp.convert(torch.nn.Sequential(torch.nn.Embedding(5, 2)))
    with pytest.raises(LayerInputError, match=r"layer '0' \(Embedding\): embedding: indices \[5\]"):
        model(torch.tensor([5]))


def test_index_checks_are_skipped_under_vmap():
    """vmap cannot branch on values per sample; a bad index then fails in torch's own kernel."""
    idx = torch.tensor([[0, 1], [2, 3]])
    out = torch.func.vmap(lambda i: embedding(i, W))(idx)
    assert torch.equal(out, F.embedding(idx, W))


# -- modules -----------------------------------------------------------------------------------


def test_functional_signatures_mirror_torch():
    for ours, theirs in ((embedding, F.embedding), (embedding_bag, F.embedding_bag)):
        assert ([(p.name, p.default) for p in inspect.signature(ours).parameters.values()]
                == [(p.name, p.default) for p in inspect.signature(theirs).parameters.values()])


def test_text_classifier_trains_like_native():
    native = torch.nn.Sequential(torch.nn.EmbeddingBag(10, 4, mode="mean", padding_idx=0),
                                 torch.nn.Linear(4, 3)).to(DT)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    idx = torch.tensor([[1, 5, 0], [2, 2, 9], [0, 0, 3]])
    y = torch.tensor([0, 2, 1])
    loss_m = mbp.functional.cross_entropy(manual(idx), y)
    loss_n = F.cross_entropy(native(idx), y)
    torch.testing.assert_close(loss_m, loss_n, **TOL)
    assert mbp.audit_backward(loss_m).ok
    loss_n.backward()
    for p_m, p_n in zip(manual.parameters(), native.parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, **TOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_torch():
    idx, offsets = torch.tensor([0, 2, 2, 4, 1, 3], device="cuda"), torch.tensor([0, 1, 1, 4], device="cuda")
    w = torch.randn(5, 3, device="cuda")
    for mode in ("sum", "mean", "max"):
        out, grads, g = _bag_grads(embedding_bag, idx, w, offsets, None, {"mode": mode, "padding_idx": 2})
        want, want_grads, _ = _bag_grads(F.embedding_bag, idx, w, offsets, None, {"mode": mode, "padding_idx": 2}, g)
        torch.testing.assert_close(out, want)
        torch.testing.assert_close(grads[0], want_grads[0])
    idx2 = idx.reshape(2, 3)
    _assert_like_torch(embedding, F.embedding, [idx2, w.double()], {"padding_idx": 2, "scale_grad_by_freq": True})
