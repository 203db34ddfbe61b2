"""Attention beyond the case table: bad input, any shape and option (hypothesis), exact derivatives of
the multi-head Functions, dropout with torch's masks, fully masked rows and extreme scores."""

from __future__ import annotations

import copy
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_backprop as mbp
from manual_backprop import LayerInputError
from manual_backprop.functional.attention import (
    AttentionHeads,
    Chunk,
    Heads,
    ScaledDotProductAttention,
    multi_head_attention_forward,
    scaled_dot_product_attention,
)
from manual_backprop.nn.attention import MultiheadAttention

from cases import DT

TOL = dict(rtol=1e-10, atol=1e-12, equal_nan=True)


def _leaves(*shapes, dtype=DT):
    return [torch.randn(*s, dtype=dtype, requires_grad=True) for s in shapes]


def _twins(tensors):
    return [t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in tensors]


def _assert_same_values_and_grads(got, want, inputs_got, inputs_want, **tol):
    tol = tol or TOL
    got, want = [g for g in got if g is not None], [w for w in want if w is not None]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **tol)
    diff_got = [t for t in inputs_got if isinstance(t, torch.Tensor) and t.requires_grad]
    diff_want = [t for t in inputs_want if isinstance(t, torch.Tensor) and t.requires_grad]
    grads_out = [torch.randn_like(w) for w in want]
    for g, w in zip(torch.autograd.grad(got, diff_got, grads_out, allow_unused=True),
                    torch.autograd.grad(want, diff_want, grads_out, allow_unused=True), strict=True):
        if w is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, w, **tol)


# -- signatures -----------------------------------------------------------------------------------------
def test_sdpa_signature_is_torchs():
    """F.scaled_dot_product_attention is a C builtin: its docstring states the signature."""
    params = ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default}"
        for p in inspect.signature(scaled_dot_product_attention).parameters.values()
    )
    assert F.scaled_dot_product_attention.__doc__.replace("\n        ", " ").startswith(
        f"scaled_dot_product_attention({params}) -> Tensor")


def test_multi_head_attention_forward_signature_is_torchs():
    def params(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(multi_head_attention_forward) == params(F.multi_head_attention_forward)
    assert params(MultiheadAttention.forward) == params(torch.nn.MultiheadAttention.forward)
    assert params(MultiheadAttention.__init__) == params(torch.nn.MultiheadAttention.__init__)


# -- scaled_dot_product_attention: any shape and option ----------------------------------------------
@settings(max_examples=30, deadline=None)
@given(
    batch=st.lists(st.integers(1, 2), max_size=2),
    heads=st.sampled_from([None, (2, 2), (2, 1), (4, 2)]),  # (query heads, key/value heads)
    length=st.integers(1, 3),
    n_keys=st.integers(1, 3),
    features=st.integers(1, 3),
    value_features=st.integers(1, 3),
    mask=st.sampled_from(["none", "bool", "float", "causal"]),
    scale=st.sampled_from([None, 0.5, 2.0]),  # a negative scale: see the test below
)
def test_sdpa_any_shape_and_option_matches_torch(batch, heads, length, n_keys, features, value_features, mask, scale):
    gqa = heads is not None and heads[0] != heads[1]
    hq, hkv = heads if heads is not None else (None, None)
    q_shape = (*batch, *([hq] if hq else []), length, features)
    k_shape = (*batch, *([hkv] if hkv else []), n_keys, features)
    v_shape = (*batch, *([hkv] if hkv else []), n_keys, value_features)
    q, k, v = _leaves(q_shape, k_shape, v_shape)
    kwargs = dict(scale=scale, enable_gqa=gqa, is_causal=mask == "causal")
    args = [q, k, v]
    scores = (*q_shape[:-1], n_keys)
    if mask == "bool":  # may mask a whole row: torch and ours both give 0 there
        args.append(torch.rand(scores) > 0.4)
    elif mask == "float":
        args.append(torch.randn(scores[-3:] if len(scores) > 2 else scores, dtype=DT, requires_grad=True))
    twins = _twins(args)
    got = scaled_dot_product_attention(*args, **kwargs)
    want = F.scaled_dot_product_attention(*twins, **kwargs)
    _assert_same_values_and_grads([got], [want], args, twins)


def test_sdpa_negative_scale_follows_the_formula():
    """torch's math path scales Q and K by √scale each, so a negative scale gives NaN there; ours
    is softmax(Q·Kᵀ·scale)·V for any scale."""
    q, k, v = _leaves((2, 1, 3), (2, 4, 3), (2, 4, 2))
    got = scaled_dot_product_attention(q, k, v, is_causal=True, scale=-1.5)
    causal = torch.ones(1, 4, dtype=torch.bool).tril()
    expected = torch.softmax((q @ k.mT * -1.5).masked_fill(~causal, float("-inf")), -1) @ v
    torch.testing.assert_close(got, expected, **TOL)
    assert torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, scale=-1.5), (q, k, v))


def test_sdpa_float32_mask_on_float64_query_like_torch():
    q, k, v = _leaves((2, 3, 4), (2, 5, 4), (2, 5, 3))
    mask = torch.randn(3, 5, requires_grad=True)
    args = [q, k, v, mask]
    twins = _twins(args)
    _assert_same_values_and_grads([scaled_dot_product_attention(*args)], [F.scaled_dot_product_attention(*twins)],
                                  args, twins, rtol=1e-6, atol=1e-6)
    assert torch.autograd.grad(scaled_dot_product_attention(*args).sum(), mask)[0].dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sdpa_lower_precision_matches_torch(dtype):
    q, k, v = _leaves((2, 2, 3, 8), (2, 2, 5, 8), (2, 2, 5, 4), dtype=dtype)
    mask = torch.rand(3, 5) > 0.3
    args, twins = [q, k, v, mask], _twins([q, k, v, mask])
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    got, want = scaled_dot_product_attention(*args), F.scaled_dot_product_attention(*twins)
    assert got.dtype == dtype
    _assert_same_values_and_grads([got], [want], args, twins, **tol)


# -- fully masked rows and extreme scores ---------------------------------------------------------------
def test_sdpa_fully_masked_row_is_zero_with_zero_gradient_like_torch():
    q, k, v = _leaves((2, 3, 4), (2, 5, 4), (2, 5, 3))
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False  # query 1 may attend to no key
    args, twins = [q, k, v, mask], _twins([q, k, v, mask])
    got = scaled_dot_product_attention(*args)
    assert not got[:, 1].any()
    _assert_same_values_and_grads([got], [F.scaled_dot_product_attention(*twins)], args, twins)
    (grad_q,) = torch.autograd.grad(scaled_dot_product_attention(*args).sum(), q)
    assert torch.isfinite(grad_q).all() and not grad_q[:, 1].any()


def test_sdpa_minus_infinity_in_a_float_mask_is_finite_like_torch():
    q, k, v = _leaves((2, 3, 4), (2, 5, 4), (2, 5, 3))
    mask = torch.zeros(3, 5, dtype=DT)
    mask[:, 2] = float("-inf")
    mask[0, :] = float("-inf")  # and one row with every key masked
    mask.requires_grad_()
    args, twins = [q, k, v, mask], _twins([q, k, v, mask])
    got = scaled_dot_product_attention(*args)
    assert torch.isfinite(got).all()
    _assert_same_values_and_grads([got], [F.scaled_dot_product_attention(*twins)], args, twins)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sdpa_huge_scores_stay_finite_like_torch(dtype):
    q, k, v = [t * 300 for t in _leaves((2, 3, 4), (2, 5, 4), (2, 5, 3), dtype=dtype)]  # |S| in the 10⁴–10⁵
    q, k, v = [t.detach().requires_grad_() for t in (q, k, v)]
    mask = torch.full((3, 5), -1e9, dtype=dtype)
    mask[:, :2] = 0
    args, twins = [q, k, v, mask], _twins([q, k, v, mask])
    got = scaled_dot_product_attention(*args)
    grads = torch.autograd.grad(got.sum(), (q, k, v), retain_graph=True)
    assert torch.isfinite(got).all() and all(torch.isfinite(g).all() for g in grads)
    tol = dict(rtol=1e-8, atol=1e-6) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-2)
    _assert_same_values_and_grads([got], [F.scaled_dot_product_attention(*twins)], args, twins, **tol)


# -- dropout -------------------------------------------------------------------------------------------
def test_sdpa_dropout_uses_torchs_mask_for_the_seed():
    """torch drops the weights with its own dropout, drawn for the weights' shape: so do we."""
    q, k, v = _leaves((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3))
    args, twins = [q, k, v], _twins([q, k, v])
    torch.manual_seed(7)
    got = scaled_dot_product_attention(*args, dropout_p=0.4)
    torch.manual_seed(7)
    want = F.scaled_dot_product_attention(*twins, dropout_p=0.4)
    _assert_same_values_and_grads([got], [want], args, twins)
    assert not torch.allclose(got, scaled_dot_product_attention(*args))  # dropout did drop something


def test_sdpa_dropout_derivatives_are_exact_for_a_fixed_mask():
    """Not in the case table: a fresh mask per call defeats finite differences and vmap. With the
    mask D held fixed, the Function's first and second derivatives are checked here."""
    q, k, v = _leaves((2, 3, 2), (2, 4, 2), (2, 4, 2))
    mask = torch.randn(3, 4, dtype=DT, requires_grad=True)
    noise = F.dropout(torch.ones(2, 3, 4, dtype=DT), 0.5)

    def fn(q, k, v, mask):
        return ScaledDotProductAttention.call(q, k, v, mask, noise, 0.7, 1, 1)

    assert torch.autograd.gradcheck(fn, (q, k, v, mask), check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(fn, (q, k, v, mask))


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_mha_dropout_uses_torchs_mask_for_the_seed(need_weights, batch_first):
    native = torch.nn.MultiheadAttention(4, 2, dropout=0.5, batch_first=batch_first).double()
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x = torch.randn(2, 3, 4, dtype=DT)
    torch.manual_seed(3)
    got = manual(x, x, x, need_weights=need_weights)
    torch.manual_seed(3)
    want = native(x, x, x, need_weights=need_weights)
    torch.testing.assert_close(got, want, **TOL)
    manual.eval()
    assert not torch.allclose(got[0], manual(x, x, x)[0])  # dropout did drop something in training


def test_dropout_above_one_is_an_error():
    q = torch.randn(2, 3, 4)
    with pytest.raises(LayerInputError, match=r"dropout probability has to be between 0 and 1, but got 1\.5"):
        scaled_dot_product_attention(q, q, q, dropout_p=1.5)
    mha = mbp.convert(torch.nn.MultiheadAttention(4, 2, dropout=1.5))
    with pytest.raises(LayerInputError, match=r"\(MultiheadAttention\): .*dropout probability"):
        mha(q, q, q)


# -- multi-head attention: exact derivatives of the Functions behind it ------------------------------------
def _mha_arguments(layout="LNE", add_bias_kv=False, add_zero_attn=False, float_masks=False, separate=False, bias=True,
                   length=2, n_keys=3, n=2, embed_dim=4):
    """Leaves for multi_head_attention_forward with 2 heads; float masks are leaves too."""
    def seq(t, e):
        return (t, e) if layout == "LE" else (n, t, e) if layout == "NLE" else (t, n, e)

    kdim = 3 if separate else embed_dim
    query, key, value = _leaves(seq(length, embed_dim), seq(n_keys, kdim), seq(n_keys, kdim))
    weights = dict(zip(["q_proj_weight", "k_proj_weight", "v_proj_weight"],
                       _leaves((embed_dim, embed_dim), (embed_dim, kdim), (embed_dim, kdim)), strict=True)
                   ) if separate else {}
    in_proj_weight = None if separate else _leaves((3 * embed_dim, embed_dim))[0]
    in_proj_bias, out_bias = _leaves((3 * embed_dim,), (embed_dim,)) if bias else (None, None)
    bias_k, bias_v = _leaves((1, 1, embed_dim), (1, 1, embed_dim)) if add_bias_kv else (None, None)
    masks = {}
    if float_masks:
        masks = dict(key_padding_mask=_leaves((n_keys,) if layout == "LE" else (n, n_keys))[0],
                     attn_mask=_leaves((length, n_keys) if layout != "NLE" else (n * 2, length, n_keys))[0])
    args = [query, key, value, embed_dim, 2, in_proj_weight, in_proj_bias, bias_k, bias_v, add_zero_attn, 0.0,
            _leaves((embed_dim, embed_dim))[0], out_bias]
    return args, dict(use_separate_proj_weight=separate, **weights, **masks)


MHA_CONFIGS = {
    "weights": dict(),
    "no-weights": dict(call=dict(need_weights=False)),
    "per-head-weights-float-masks": dict(float_masks=True, call=dict(average_attn_weights=False)),
    "batch-first-float-masks": dict(layout="NLE", float_masks=True),
    "unbatched-float-masks-no-weights": dict(layout="LE", float_masks=True, call=dict(need_weights=False)),
    "bias-kv-zero-attn-float-masks": dict(add_bias_kv=True, add_zero_attn=True, float_masks=True),
    "separate-weights-no-bias": dict(separate=True, bias=False, add_zero_attn=True, call=dict(need_weights=False)),
}


def _mha_call(config, layout):
    from manual_backprop.functional.attention import _multi_head_attention

    def call(args, kwargs):
        kwargs = {**kwargs, **config.get("call", {})}
        names = list(inspect.signature(multi_head_attention_forward).parameters)
        full = dict(zip(names, args, strict=False)) | kwargs
        out, weights = _multi_head_attention(**{n: full.get(n, p.default) for n, p in
                                                inspect.signature(multi_head_attention_forward).parameters.items()},
                                             batch_first=layout == "NLE")
        return (out,) if weights is None else (out, weights)
    return call


HEADS_CONFIGS = {  # layout, add_zero_attn, causal, need_weights, average, bias_kv, attn_mask, key_padding_mask
    "weights-averaged": ("LNE", False, False, True, True, False, "2d", True),
    "weights-per-head": ("LNE", False, False, True, False, True, "3d", False),
    "no-weights": ("LNE", True, False, False, True, True, "2d", True),
    "batch-first": ("NLE", True, False, True, True, False, "3d", True),
    "unbatched": ("LE", False, False, True, False, True, "2d", True),
    "causal": ("NLE", False, True, False, True, False, None, False),
}


@pytest.mark.parametrize("name", [*HEADS_CONFIGS, "weights-per-head+dropout", "batch-first+dropout",
                                  "causal+dropout", "unbatched+dropout"])
def test_attention_heads_has_exact_first_and_second_derivatives(name):
    """The Function behind MultiheadAttention (the projections are Linear and Chunk, checked apart);
    with ``+dropout`` for one fixed dropout multiplier D (A = P ⊙ D is then an output of its own)."""
    config, dropout = name.removesuffix("+dropout"), name.endswith("+dropout")
    layout, zero_attn, causal, need_weights, average, bias_kv, attn_mask, padding = HEADS_CONFIGS[config]
    n, length, n_keys, embed_dim, heads = 2, 2, 2, 2, 2
    batch = () if layout == "LE" else (n,)

    def seq(t):
        return (t, embed_dim) if layout == "LE" else (n, t, embed_dim) if layout == "NLE" else (t, n, embed_dim)

    tensors = dict(zip("qkv", _leaves(seq(length), seq(n_keys), seq(n_keys)), strict=True))
    tensors |= dict(zip(["bias_k", "bias_v"], _leaves((1, 1, embed_dim), (1, 1, embed_dim)), strict=True)
                    ) if bias_kv else {}
    if attn_mask:
        tensors["attn_mask"] = _leaves((length, n_keys) if attn_mask == "2d" else (n * heads, length, n_keys))[0]
    if padding:
        tensors["key_padding_mask"] = _leaves((*batch, n_keys))[0]
    how = Heads(heads, layout, zero_attn, causal, need_weights, average)
    order = ["q", "k", "v", "bias_k", "bias_v", "attn_mask", "key_padding_mask"]
    n_keys_total = n_keys + bias_kv + zero_attn
    noise = F.dropout(torch.ones(1 if layout == "LE" else n, heads, length, n_keys_total, dtype=DT), 0.5) \
        if dropout else None

    def fn(*diff):
        given = dict(zip(tensors, diff, strict=True))
        return AttentionHeads.call(*[given.get(name) for name in order], noise, how)

    assert torch.autograd.gradcheck(fn, tuple(tensors.values()), check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(fn, tuple(tensors.values()))


@pytest.mark.parametrize("name", MHA_CONFIGS)
def test_mha_functional_matches_torch(name):
    config = MHA_CONFIGS[name]
    layout = config.get("layout", "LNE")
    args, kwargs = _mha_arguments(**{k: v for k, v in config.items() if k != "call"})
    twins, twin_kwargs = _twins(args), {k: _twins([v])[0] for k, v in kwargs.items()}
    got = _mha_call(config, layout)(args, kwargs)
    torch_args = list(twins)
    if layout == "NLE":  # torch's functional is sequence-first; its module transposes around it
        torch_args[:3] = [t.transpose(0, 1) for t in twins[:3]]
    out, weights = F.multi_head_attention_forward(*torch_args, **twin_kwargs, **config.get("call", {}))
    want = [out.transpose(0, 1) if layout == "NLE" else out, weights]
    _assert_same_values_and_grads(list(got), want, [*args, *kwargs.values()], [*twins, *twin_kwargs.values()])


def test_mha_backward_graph_holds_only_manual_functions():
    model = mbp.convert(torch.nn.MultiheadAttention(4, 2, add_bias_kv=True).double(), strict=True)
    x = torch.randn(3, 2, 4, dtype=DT, requires_grad=True)
    out, weights = model(x, x, x)
    audit = mbp.audit_backward([out, weights], [torch.randn_like(out), torch.randn_like(weights)])
    assert audit.ok, str(audit)
    assert set(audit.graph) == {"Linear", "Chunk", "AttentionHeads", "AccumulateGrad (no calculus)"}


def test_mha_per_sample_gradients_with_vmap():
    """torch.func.vmap(grad) through the module: one gradient per sequence, as from one backward each."""
    model = mbp.convert(torch.nn.MultiheadAttention(4, 2).double(), strict=True)
    params = dict(model.named_parameters())
    xs = torch.randn(2, 3, 4, dtype=DT)  # two independent (L, E) sequences

    def loss(p, x):
        out, weights = torch.func.functional_call(model, p, (x, x, x))
        return out.sum() + weights.square().sum()

    batched = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xs)
    for i, x in enumerate(xs):
        one = torch.autograd.grad(loss(params, x), list(params.values()))
        for name, g in zip(params, one, strict=True):
            torch.testing.assert_close(batched[name][i], g, **TOL)


def test_mha_forward_mode_matches_native():
    native = torch.nn.MultiheadAttention(4, 2, add_bias_kv=True, add_zero_attn=True).double()
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x, tangent = torch.randn(3, 2, 4, dtype=DT), torch.randn(3, 2, 4, dtype=DT)
    kpm = torch.tensor([[False, False, True], [False, False, False]])
    got = torch.func.jvp(lambda x: manual(x, x, x, key_padding_mask=kpm), (x,), (tangent,))
    want = torch.func.jvp(lambda x: native(x, x, x, key_padding_mask=kpm), (x,), (tangent,))
    torch.testing.assert_close(got, want, **TOL)


def test_chunk_has_exact_derivatives():
    w = _leaves((6, 2))[0]
    assert torch.autograd.gradcheck(lambda w: Chunk.call(w, 3), (w,), check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(lambda w: Chunk.call(w, 3), (w,))


# -- multi-head attention module: any option ----------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    heads_and_dim=st.sampled_from([(1, 2), (2, 4), (3, 3)]),
    length=st.integers(1, 3),
    n_keys=st.integers(1, 3),
    n=st.integers(1, 2),
    layout=st.sampled_from(["LNE", "NLE", "LE"]),
    need_weights=st.booleans(),
    average=st.booleans(),
    add_bias_kv=st.booleans(),
    add_zero_attn=st.booleans(),
    separate=st.booleans(),
    bias=st.booleans(),
    masks=st.sampled_from(["none", "bool", "float", "float-grad"]),
    mask_3d=st.booleans(),
)
def test_mha_module_any_option_matches_torch(heads_and_dim, length, n_keys, n, layout, need_weights, average,
                                             add_bias_kv, add_zero_attn, separate, bias, masks, mask_3d):
    heads, embed_dim = heads_and_dim
    kdim = 2 if separate else None
    native = torch.nn.MultiheadAttention(embed_dim, heads, bias=bias, add_bias_kv=add_bias_kv,
                                         add_zero_attn=add_zero_attn, kdim=kdim, vdim=kdim,
                                         batch_first=layout == "NLE").double()
    with torch.no_grad():
        for p in native.parameters():
            p.normal_()  # zero biases would hide a wrong bias gradient
    manual = mbp.convert(copy.deepcopy(native), strict=True)

    def seq(t, e):
        return (t, e) if layout == "LE" else (n, t, e) if layout == "NLE" else (t, n, e)

    inputs = _leaves(seq(length, embed_dim), seq(n_keys, kdim or embed_dim), seq(n_keys, kdim or embed_dim))
    kwargs = dict(need_weights=need_weights, average_attn_weights=average)
    if masks != "none":
        batch = 1 if layout == "LE" else n
        mask_shape = (batch * heads, length, n_keys) if mask_3d else (length, n_keys)
        kpm_shape = (n_keys,) if layout == "LE" else (n, n_keys)
        if masks == "bool":
            kwargs |= dict(attn_mask=torch.rand(mask_shape) > 0.7, key_padding_mask=torch.rand(kpm_shape) > 0.7)
        else:
            kwargs |= dict(attn_mask=torch.randn(mask_shape, dtype=DT, requires_grad=masks == "float-grad"),
                           key_padding_mask=torch.randn(kpm_shape, dtype=DT, requires_grad=masks == "float-grad"))
    twin_inputs = _twins(inputs)
    twin_kwargs = {k: _twins([v])[0] for k, v in kwargs.items()}
    got = manual(*inputs, **kwargs)
    want = native(*twin_inputs, **twin_kwargs)
    all_got = [*inputs, *kwargs.values(), *manual.parameters()]
    all_want = [*twin_inputs, *twin_kwargs.values(), *native.parameters()]
    _assert_same_values_and_grads(list(got), list(want), all_got, all_want)


def test_mha_fully_masked_sequence_like_torch():
    """A sequence whose every key is padding: torch's weights path gives NaN (a softmax over −inf
    only), its scaled_dot_product_attention path 0. Ours follows each."""
    native = torch.nn.MultiheadAttention(4, 2).double()
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x = torch.randn(3, 2, 4, dtype=DT)
    kpm = torch.tensor([[True] * 3, [False] * 3])
    for need_weights in (True, False):
        got, want = manual(x, x, x, kpm, need_weights), native(x, x, x, kpm, need_weights)
        torch.testing.assert_close(got, want, **TOL)
    assert torch.isfinite(manual(x, x, x, kpm, False)[0]).all()


def test_out_proj_converts_and_computes_like_linear():
    native = torch.nn.MultiheadAttention(4, 2).double()
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    assert type(manual.out_proj).__module__ == "manual_backprop.nn.attention"
    x = torch.randn(5, 4, dtype=DT, requires_grad=True)
    out = manual.out_proj(x)
    torch.testing.assert_close(out, native.out_proj(x), **TOL)
    assert mbp.audit_backward(out, torch.randn_like(out)).ok
    assert manual.state_dict().keys() == native.state_dict().keys()


def test_mismatched_mask_types_warn_like_torch():
    model = mbp.convert(torch.nn.MultiheadAttention(4, 2))
    x = torch.randn(3, 2, 4)
    with pytest.warns(UserWarning, match="mismatched key_padding_mask and attn_mask"):
        model(x, x, x, key_padding_mask=torch.zeros(2, 3, dtype=torch.bool), attn_mask=torch.zeros(3, 3))


def test_is_causal_hint_uses_the_causal_mask_like_torch():
    """With is_causal and no need for weights, torch ignores attn_mask and masks causally."""
    native = torch.nn.MultiheadAttention(4, 2).double()
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x = torch.randn(3, 2, 4, dtype=DT)
    not_causal = torch.zeros(3, 3, dtype=DT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = native(x, x, x, need_weights=False, attn_mask=not_causal, is_causal=True)
    torch.testing.assert_close(manual(x, x, x, need_weights=False, attn_mask=not_causal, is_causal=True), want, **TOL)


# -- bad input ------------------------------------------------------------------------------------------
_q = torch.randn(2, 3, 4)


@pytest.mark.parametrize(
    ("call_it", "message"),
    [
        (lambda: scaled_dot_product_attention(torch.randn(4), torch.randn(4), torch.randn(4)), r"at least 2-D"),
        (lambda: scaled_dot_product_attention(_q, _q.double(), _q), r"one floating dtype.*float64"),
        (lambda: scaled_dot_product_attention(*[torch.ones(2, 3, 4, dtype=torch.long)] * 3), r"floating dtype"),
        (lambda: scaled_dot_product_attention(_q, torch.randn(2, 5, 3), torch.randn(2, 5, 3)),
         r"query \(2, 3, 4\) and key \(2, 5, 3\) must have the same last dimension"),
        (lambda: scaled_dot_product_attention(_q, torch.randn(2, 5, 4), torch.randn(2, 4, 4)),
         r"key \(2, 5, 4\) and value \(2, 4, 4\) must hold the same number of positions"),
        (lambda: scaled_dot_product_attention(_q, torch.randn(3, 5, 4), torch.randn(3, 5, 4)),
         r"batch dimensions of query and key \(2,\), \(3,\) do not broadcast"),
        (lambda: scaled_dot_product_attention(_q, _q, _q, attn_mask=torch.ones(3, 3, dtype=torch.long)),
         r"attn_mask must be bool or floating point, got torch.int64"),
        (lambda: scaled_dot_product_attention(_q, _q, _q, attn_mask=torch.ones(3)), r"attn_mask shape \(3,\)"),
        (lambda: scaled_dot_product_attention(_q, _q, _q, attn_mask=torch.ones(3, 4)),
         r"attn_mask shape \(3, 4\) does not broadcast to the scores' shape \(2, 3, 3\)"),
        (lambda: scaled_dot_product_attention(_q, _q, _q, attn_mask=torch.ones(5, 2, 3, 3)),
         r"attn_mask shape \(5, 2, 3, 3\)"),
        (lambda: scaled_dot_product_attention(_q, _q, _q, attn_mask=torch.ones(3, 3), is_causal=True),
         r"attn_mask or is_causal=True, not both"),
        (lambda: scaled_dot_product_attention(torch.randn(1, 3, 2, 4), torch.randn(1, 2, 2, 4),
                                              torch.randn(1, 2, 2, 4), enable_gqa=True),
         r"key heads \(2\) and value heads \(2\) must divide the query heads \(3\)"),
        (lambda: scaled_dot_product_attention(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4), enable_gqa=True),
         r"enable_gqa needs a head dimension"),
    ],
)
def test_sdpa_bad_input_is_a_clear_error(call_it, message):
    with pytest.raises(LayerInputError, match=message):
        call_it()


def test_sdpa_devices_must_match():
    q = torch.randn(2, 3, 4)
    with pytest.raises(LayerInputError, match="one device"):
        scaled_dot_product_attention(q, q, torch.empty(2, 3, 4, device="meta"))


_x = torch.randn(3, 2, 4)
_mha = torch.nn.MultiheadAttention(4, 2)


@pytest.mark.parametrize(
    ("kwargs", "call_args", "message"),
    [
        (dict(), (torch.randn(1, 3, 2, 4), _x, _x), r"query must be 2-D \(L, E\) unbatched or 3-D batched, got shape"),
        (dict(), (_x, torch.randn(3, 4), torch.randn(3, 4)), r"key \(3, 4\) and value \(3, 4\) must have the rank"),
        (dict(), (torch.randn(3, 2, 5), _x, _x), r"query \(3, 2, 5\) has 5 features, expected embed_dim=4"),
        (dict(), (_x, torch.randn(3, 3, 4), torch.randn(3, 3, 4)),
         r"query \(3, 2, 4\), key \(3, 3, 4\) and value \(3, 3, 4\) must hold the same number of sequences"),
        (dict(), (_x, torch.randn(4, 2, 4), _x),
         r"key \(4, 2, 4\) and value \(3, 2, 4\) must hold the same number of positions \(dimension 0\)"),
        (dict(key_padding_mask=torch.zeros(3, 2, dtype=torch.bool)), (_x, _x, _x),
         r"key_padding_mask shape \(3, 2\) is not \(2, 3\)"),
        (dict(attn_mask=torch.zeros(3, 4, dtype=torch.bool)), (_x, _x, _x),
         r"attn_mask shape \(3, 4\) is not \(3, 3\) or \(4, 3, 3\)"),
        (dict(attn_mask=torch.zeros(2, 3, 3, dtype=torch.bool)), (_x, _x, _x), r"attn_mask shape \(2, 3, 3\)"),
        (dict(attn_mask=torch.zeros(3, 3, dtype=torch.long)), (_x, _x, _x),
         r"attn_mask must be bool or floating point, got torch.int64"),
        (dict(is_causal=True), (_x, _x, _x), r"is_causal=True needs attn_mask"),
        (dict(attn_mask=torch.zeros(3, 3, dtype=torch.float64)), (_x, _x, _x),
         r"float attn_mask of dtype torch.float64 does not match the query's torch.float32"),
    ],
)
def test_mha_bad_input_is_a_clear_error_naming_the_layer(kwargs, call_args, message):
    model = mbp.convert(torch.nn.Sequential(copy.deepcopy(_mha)))
    with pytest.raises(LayerInputError, match=r"layer '0' \(MultiheadAttention\): multi_head_attention_forward: "
                                              + message):
        model[0](*call_args, **kwargs)


def test_mha_static_keys_are_refused():
    args, _ = _mha_arguments()
    with pytest.raises(LayerInputError, match="static_k / static_v are not supported"):
        multi_head_attention_forward(*args, static_k=torch.randn(4, 3, 2, dtype=DT))


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer_in_training_matches_native_dropout_included(norm_first):
    """A batch_first attention output has torch's memory layout, so the dropout after it draws the
    same mask from the same seed."""
    native = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.2, batch_first=True, norm_first=norm_first)
    native = native.double()
    manual = mbp.convert(copy.deepcopy(native))
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.manual_seed(3)
    expected = native(x)
    torch.manual_seed(3)
    out = manual(x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    expected.sum().backward()
    out.sum().backward()
    for (name, p), (_, q) in zip(manual.named_parameters(), native.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10, msg=name)
    attended = manual.self_attn(x, x, x, need_weights=False)[0]
    assert attended.stride() == native.self_attn(x, x, x, need_weights=False)[0].stride()
