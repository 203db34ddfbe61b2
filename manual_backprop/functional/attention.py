"""Attention: each query mixes the values, weighted by how well it matches each key.

    S = Q·Kᵀ·scale + M      the scores; M adds 0 where a key may be attended, −inf where it may not
    P = softmax(S)          row by row: each query's weights over the keys sum to 1
    A = P ⊙ D               D the dropout multiplier (0 or 1/(1 − p)); A = P without dropout
    O = A·V                 each query's output: the weighted mean of the values

Backward, with δ_O = ∂C/∂O (the softmax Jacobian applied row by row, as in ``activations.Softmax``):

    ∂C/∂V = Aᵀ·δ_O
    ∂C/∂A = δ_O·Vᵀ,   ∂C/∂P = ∂C/∂A ⊙ D
    ∂C/∂S = P ⊙ (∂C/∂P − rowsum(∂C/∂P ⊙ P))
    ∂C/∂M = ∂C/∂S,   ∂C/∂Q = ∂C/∂S·K·scale,   ∂C/∂K = ∂C/∂Sᵀ·Q·scale

P is recomputed from Q, K and M in backward (as flash attention does) rather than stored.

:class:`ScaledDotProductAttention` is ``F.scaled_dot_product_attention``. Multi-head attention is
``linear`` in-projections, :class:`AttentionHeads` (split into heads, attend, merge: the reshapes
live inside the Function, so the backward graph holds no native node) and a ``linear``
out-projection; :class:`Chunk` cuts the packed in-projection weight into W_q, W_k, W_v.

Index letters: b every batch dimension (heads included), i queries (L of them), j keys (S),
e query/key features, f value features; in multi-head attention n sequences, h heads, d = E / h
features per head. Matrix shapes: Q (b,i,e), K (b,j,e), V (b,j,f), S, P, A, D (b,i,j), O (b,i,f).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction
from manual_backprop.functional.dropout import _FUSED_DEVICES
from manual_backprop.functional.linear import linear

NEG_INF = float("-inf")


# -- the attention math, shared by both Functions ----------------------------------------------------
def _probabilities(q: Tensor, k: Tensor, m: Tensor | None, scale: float, safe: bool) -> Tensor:
    """P = softmax(Q·Kᵀ·scale + M). ``safe``: a row whose every key is masked (all −inf) attends to
    nothing, P = 0 (what torch's scaled_dot_product_attention does); otherwise such a row is NaN,
    as in torch's multi-head attention when it returns the weights."""
    s = q @ k.transpose(-2, -1) * scale  # S = Q·Kᵀ·scale
    if m is not None:
        s = s + m.to(s.dtype)  # + M
    return _softmax_rows(s, safe)


def _softmax_rows(s: Tensor, safe: bool) -> Tensor:
    p = torch.softmax(s, -1)  # P = softmax(S), row by row
    if safe:
        p = torch.where((s == NEG_INF).all(-1, keepdim=True), 0.0, p)  # a fully masked row: P = 0
    return p


def _dropped(p: Tensor, noise: Tensor | None) -> Tensor:
    return p if noise is None else p * noise  # A = P ⊙ D


def _attention_backward(q, k, v, p, noise, scale, delta_o, grad_a, need_qkm: bool, need_v: bool):
    """∂C/∂Q, ∂C/∂K, ∂C/∂V, ∂C/∂S from δ_O (and ∂C/∂A when the weights A are an output too)."""
    a = _dropped(p, noise)
    grad_q = grad_k = grad_v = grad_s = None
    if need_v:
        grad_v = a.transpose(-2, -1) @ delta_o  # ∂C/∂V = Aᵀ·δ_O
    if need_qkm:
        grad_a_total = delta_o @ v.transpose(-2, -1)  # ∂C/∂A = δ_O·Vᵀ
        if grad_a is not None:
            grad_a_total = grad_a_total + grad_a  # + ∂C/∂A through the returned weights
        grad_p = _dropped(grad_a_total, noise)  # ∂C/∂P = ∂C/∂A ⊙ D
        grad_s = p * (grad_p - (grad_p * p).sum(-1, keepdim=True))  # ∂C/∂S = P ⊙ (∂C/∂P − rowsum(∂C/∂P ⊙ P))
        grad_q = grad_s @ k * scale  # ∂C/∂Q = ∂C/∂S·K·scale
        grad_k = grad_s.transpose(-2, -1) @ q * scale  # ∂C/∂K = ∂C/∂Sᵀ·Q·scale
    return grad_q, grad_k, grad_v, grad_s


def _attention_jvp(q, k, v, p, noise, scale, tangent_q, tangent_k, tangent_v, tangent_m):
    """Ȯ, Ȧ and Ṗ for tangents Q̇, K̇, V̇, Ṁ (None: no tangent)."""
    tangent_s = torch.zeros((), dtype=p.dtype, device=p.device)
    if tangent_q is not None:
        tangent_s = tangent_s + tangent_q @ k.transpose(-2, -1) * scale  # ∂S/∂Q · Q̇
    if tangent_k is not None:
        tangent_s = tangent_s + q @ tangent_k.transpose(-2, -1) * scale  # ∂S/∂K · K̇
    if tangent_m is not None:
        tangent_s = tangent_s + tangent_m.to(p.dtype)  # ∂S/∂M · Ṁ
    tangent_p = p * (tangent_s - (p * tangent_s).sum(-1, keepdim=True))  # Ṗ = P ⊙ (Ṡ − rowsum(P ⊙ Ṡ))
    tangent_a = _dropped(tangent_p, noise)  # Ȧ = Ṗ ⊙ D
    tangent_o = tangent_a @ v  # ∂O/∂A · Ȧ
    if tangent_v is not None:
        tangent_o = tangent_o + _dropped(p, noise) @ tangent_v  # ∂O/∂V · V̇
    return tangent_o, tangent_a, tangent_p


def _sum_to(grad: Tensor | None, like: Tensor | None) -> Tensor | None:
    """A batch dimension broadcast in the forward used one tensor for many: their gradients add up."""
    if grad is None or like is None:
        return None
    return grad.sum_to_size(like.shape).to(like.dtype)


# -- scaled_dot_product_attention -------------------------------------------------------------------
def _repeat_heads(t: Tensor, groups: int) -> Tensor:
    return t if groups == 1 else t.repeat_interleave(groups, -3)  # grouped-query: each key head serves `groups`


def _sum_heads(grad: Tensor | None, groups: int) -> Tensor | None:
    if grad is None or groups == 1:
        return grad
    per_group = grad.reshape(*grad.shape[:-3], -1, groups, *grad.shape[-2:])  # (..., key heads, groups, ·, ·)
    return per_group.sum(-3)  # a shared key head collects the gradients of the query heads it served


class ScaledDotProductAttention(ManualFunction):
    """O = softmax(Q·Kᵀ·scale + M) ⊙ D · V  (see the module docstring for every factor).

    ∂C/∂V = Aᵀ·δ_O;  ∂C/∂P = (δ_O·Vᵀ) ⊙ D;  ∂C/∂S = P ⊙ (∂C/∂P − rowsum(∂C/∂P ⊙ P));
    ∂C/∂M = ∂C/∂S;  ∂C/∂Q = ∂C/∂S·K·scale;  ∂C/∂K = ∂C/∂Sᵀ·Q·scale;  each summed back over the batch
    dimensions it was broadcast along, and over the query heads a grouped key/value head served.

    Forward mode: Ṡ = (Q̇·Kᵀ + Q·K̇ᵀ)·scale + Ṁ,  Ṗ = P ⊙ (Ṡ − rowsum(P ⊙ Ṡ)),  Ȯ = (Ṗ ⊙ D)·V + A·V̇.
    M is additive (None: no mask); D is the dropout multiplier (None: no dropout).
    """

    @staticmethod
    def forward(q, k, v, m, noise, scale: float, groups_k: int, groups_v: int) -> Tensor:
        p = _probabilities(q, _repeat_heads(k, groups_k), m, scale, safe=True)  # P = softmax(Q·Kᵀ·scale + M)
        return _dropped(p, noise) @ _repeat_heads(v, groups_v)  # O = A·V

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, m, noise, ctx.scale, ctx.groups_k, ctx.groups_v = inputs
        ctx.save_for_backward(q, k, v, m, noise)
        ctx.save_for_forward(q, k, v, m, noise)

    @staticmethod
    def backward(ctx, delta_o: Tensor):
        q, k, v, m, noise = ctx.saved_tensors
        k_all, v_all = _repeat_heads(k, ctx.groups_k), _repeat_heads(v, ctx.groups_v)  # K, V for every query head
        p = _probabilities(q, k_all, m, ctx.scale, safe=True)  # P, recomputed
        need_q, need_k, need_v, need_m = ctx.needs_input_grad[:4]
        grad_q, grad_k, grad_v, grad_s = _attention_backward(
            q, k_all, v_all, p, noise, ctx.scale, delta_o, None, need_q or need_k or need_m, need_v)
        grad_q = _sum_to(grad_q, q) if need_q else None  # ∂C/∂Q, summed over broadcast batch dimensions
        grad_k = _sum_to(_sum_heads(grad_k, ctx.groups_k), k) if need_k else None  # ∂C/∂K, per shared head
        grad_v = _sum_to(_sum_heads(grad_v, ctx.groups_v), v) if need_v else None  # ∂C/∂V, per shared head
        grad_m = _sum_to(grad_s, m) if need_m else None  # ∂C/∂M = ∂C/∂S
        return grad_q, grad_k, grad_v, grad_m, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_q, tangent_k, tangent_v, tangent_m, *_):
        q, k, v, m, noise = ctx.saved_tensors
        k_all, v_all = _repeat_heads(k, ctx.groups_k), _repeat_heads(v, ctx.groups_v)  # K, V for every query head
        p = _probabilities(q, k_all, m, ctx.scale, safe=True)  # P, recomputed
        tangent_k = None if tangent_k is None else _repeat_heads(tangent_k, ctx.groups_k)  # K̇ for every query head
        tangent_v = None if tangent_v is None else _repeat_heads(tangent_v, ctx.groups_v)  # V̇ for every query head
        tangent_o, _, _ = _attention_jvp(q, k_all, v_all, p, noise, ctx.scale, tangent_q, tangent_k, tangent_v,
                                      tangent_m)  # Ȯ = (Ṗ ⊙ D)·V + A·V̇
        return tangent_o


def _broadcast(name: str, what: str, *shapes) -> tuple[int, ...]:
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        raise LayerInputError(f"{name}: {what} {', '.join(str(tuple(s)) for s in shapes)} do not broadcast") from None


def _check_sdpa(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa) -> tuple[tuple[int, ...], int, int]:
    """Validates like torch; returns the shape of S (b..., L, S) and the key and value head groups."""
    name = "scaled_dot_product_attention"
    if min(query.dim(), key.dim(), value.dim()) < 2:
        raise LayerInputError(f"{name}: query, key and value must be at least 2-D (..., L or S, features), got "
                              f"shapes {shape(query)}, {shape(key)}, {shape(value)}")
    if not query.is_floating_point() or query.dtype != key.dtype or query.dtype != value.dtype:
        raise LayerInputError(f"{name}: query, key and value must share one floating dtype, got "
                              f"{query.dtype}, {key.dtype}, {value.dtype}")
    if query.device != key.device or query.device != value.device:
        raise LayerInputError(f"{name}: query, key and value must be on one device, got "
                              f"{query.device}, {key.device}, {value.device}")
    if query.shape[-1] != key.shape[-1]:
        raise LayerInputError(f"{name}: query {shape(query)} and key {shape(key)} must have the same last "
                              "dimension (the features a query is compared on)")
    if key.shape[-2] != value.shape[-2]:
        raise LayerInputError(f"{name}: key {shape(key)} and value {shape(value)} must hold the same number "
                              "of positions S (dimension -2)")
    groups_k = groups_v = 1
    if enable_gqa:
        if min(query.dim(), key.dim(), value.dim()) < 3:
            raise LayerInputError(f"{name}: enable_gqa needs a head dimension (-3) in query, key and value, got "
                                  f"shapes {shape(query)}, {shape(key)}, {shape(value)}")
        heads_q, heads_k, heads_v = query.shape[-3], key.shape[-3], value.shape[-3]
        if heads_k == 0 or heads_v == 0 or heads_q % heads_k or heads_q % heads_v:
            raise LayerInputError(f"{name}: with enable_gqa the key heads ({heads_k}) and value heads ({heads_v}) "
                                  f"must divide the query heads ({heads_q})")
        groups_k, groups_v = heads_q // heads_k, heads_q // heads_v
    batch_k = (*key.shape[:-3], key.shape[-3] * groups_k) if groups_k > 1 else key.shape[:-2]
    batch_v = (*value.shape[:-3], value.shape[-3] * groups_v) if groups_v > 1 else value.shape[:-2]
    batch_s = _broadcast(name, "the batch dimensions of query and key", query.shape[:-2], batch_k)
    _broadcast(name, "the batch dimensions of the scores and value", batch_s, batch_v)
    scores = (*batch_s, query.shape[-2], key.shape[-2])
    if attn_mask is not None:
        if is_causal:
            raise LayerInputError(f"{name}: give attn_mask or is_causal=True, not both (torch refuses both too)")
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            raise LayerInputError(f"{name}: attn_mask must be bool or floating point, got {attn_mask.dtype}")
        try:
            fits = attn_mask.dim() >= 2 and torch.broadcast_shapes(attn_mask.shape, scores) == scores
        except RuntimeError:
            fits = False
        if not fits:
            raise LayerInputError(f"{name}: attn_mask shape {shape(attn_mask)} does not broadcast to the scores' "
                                  f"shape {scores} (..., L, S)")
    if dropout_p > 1:
        raise LayerInputError(f"{name}: dropout probability has to be between 0 and 1, but got {dropout_p}")
    return scores, groups_k, groups_v


def _dropout_multiplier(p: float, size, like: Tensor) -> Tensor | None:
    """D = 0 (dropped) or 1/(1 − p) (kept), drawn as torch's dropout draws it for weights of this
    shape, dtype and device, so that for one seed D is torch's mask: on the CPU keep ~ Bernoulli(1 − p)
    into an empty tensor, divided by 1 − p; where torch runs its fused kernel, that kernel on ones."""
    if p <= 0:
        return None
    if p >= 1 or like.device.type in _FUSED_DEVICES:
        return F.dropout(torch.ones(size, dtype=like.dtype, device=like.device), p)
    return torch.empty(size, dtype=like.dtype, device=like.device).bernoulli_(1 - p).div_(1 - p)  # keep / (1 − p)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """Like ``torch.nn.functional.scaled_dot_product_attention``: softmax(Q·Kᵀ·scale + M)·V.

    A bool ``attn_mask`` keeps the positions that are True; a float one is added to the scores (and
    gets a gradient). ``is_causal`` lets query i see keys j ≤ i. ``dropout_p`` drops attention
    weights (always, as in torch) with torch's own dropout mask for the seed. ``enable_gqa`` lets
    several query heads share one key/value head. Backward: see :class:`ScaledDotProductAttention`.
    """
    scores, groups_k, groups_v = _check_sdpa(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    m = attn_mask
    if attn_mask is not None and attn_mask.dtype == torch.bool:  # True: attend (+0); False: masked (−inf)
        m = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill(~attn_mask, NEG_INF)
    if is_causal:  # query i sees keys j ≤ i
        seen = torch.ones(scores[-2:], dtype=torch.bool, device=query.device).tril()
        m = torch.zeros(scores[-2:], dtype=query.dtype, device=query.device).masked_fill(~seen, NEG_INF)
    noise = _dropout_multiplier(dropout_p, scores, query)
    return ScaledDotProductAttention.call(query, key, value, m, noise, scale, groups_k, groups_v)


# -- multi-head attention -----------------------------------------------------------------------------
class Heads(NamedTuple):
    """How :class:`AttentionHeads` lays out its tensors; ``layout`` names the dimensions of q, k, v and
    the output: 'LNE' (sequence, batch, features: torch's default), 'NLE' (batch_first) or 'LE'
    (one unbatched sequence)."""

    num_heads: int
    layout: str
    add_zero_attn: bool
    causal: bool
    need_weights: bool
    average_attn_weights: bool


def _to_heads(x: Tensor, how: Heads) -> Tensor:
    """(L,N,E), (N,L,E) or (L,E) → (n,h,L,d): split the features into h heads of d."""
    if how.layout == "NLE":
        x = x.transpose(0, 1)
    elif how.layout == "LE":
        x = x.unsqueeze(1)
    length, n, e = x.shape
    return x.reshape(length, n, how.num_heads, e // how.num_heads).permute(1, 2, 0, 3)


def _from_heads(x: Tensor, how: Heads) -> Tensor:
    """(n,h,L,d) → the layout of ``how``: concatenate the heads' features (the inverse of _to_heads)."""
    n, h, length, d = x.shape
    if how.layout == "NLE":  # one copy, laid out (N,L,E) as it is indexed, so that a Linear after it copies no more
        return x.transpose(1, 2).reshape(n, length, h * d)
    x = x.permute(2, 0, 1, 3).reshape(length, n, h * d)
    return x[:, 0] if how.layout == "LE" else x


def _keys_to_heads(k: Tensor, bias_k: Tensor | None, how: Heads) -> Tensor:
    """(n,h,S',d): the S keys (or values), then bias_k if given, then a zero key if add_zero_attn."""
    kh = _to_heads(k, how)
    n, h, _, d = kh.shape
    parts = [kh]
    if bias_k is not None:
        parts.append(bias_k.reshape(1, h, 1, d).expand(n, h, 1, d))
    if how.add_zero_attn:
        parts.append(kh.new_zeros(n, h, 1, d))
    return torch.cat(parts, 2) if len(parts) > 1 else kh


def _first(t: Tensor, count: int, dim: int) -> Tensor:
    """The first ``count`` entries along ``dim`` (the real keys, before the bias and zero keys)."""
    return t if t.shape[dim] == count else t.narrow(dim, 0, count)  # (a no-op slice would not batch under vmap)


def _keys_from_heads(grad: Tensor, bias_k: Tensor | None, how: Heads, need_k: bool, need_bias: bool):
    """∂C/∂k and ∂C/∂bias_k from the gradient of the (n,h,S',d) keys; the zero key is a constant."""
    n_keys = grad.shape[2] - (bias_k is not None) - how.add_zero_attn
    grad_k = _from_heads(_first(grad, n_keys, 2), how) if need_k else None  # the S projected keys
    grad_bias = None
    if need_bias:
        grad_bias = grad[:, :, n_keys].sum(0).reshape(bias_k.shape)  # bias_k joins all n sequences: their blame adds up
    return grad_k, grad_bias


def _additive_mask(attn_mask, key_padding_mask, how: Heads, qh: Tensor, n_keys: int, constants: bool):
    """M, (n or 1, h or 1, L, S'): attn_mask plus key_padding_mask, 0 at the bias and zero keys; with
    ``constants``, −inf above the diagonal in the causal case (a constant: no tangent there)."""
    n, _, length, _ = qh.shape
    m = None
    if attn_mask is not None:
        per_head = attn_mask  # (L,S), or (n·h,L,S) → (n,h,L,S)
        if attn_mask.dim() == 3:
            per_head = attn_mask.reshape(-1, how.num_heads, length, attn_mask.shape[-1])
        m = F.pad(per_head, (0, n_keys - attn_mask.shape[-1]))
    if key_padding_mask is not None:
        per_key = key_padding_mask.reshape(n, 1, 1, key_padding_mask.shape[-1])
        padding = F.pad(per_key, (0, n_keys - key_padding_mask.shape[-1]))
        m = padding if m is None else m + padding
    if constants and how.causal:  # torch's is_causal hint, used only without the other masks: query i sees keys j ≤ i
        seen = torch.ones(length, n_keys, dtype=torch.bool, device=qh.device).tril()
        m = torch.zeros(length, n_keys, dtype=qh.dtype, device=qh.device).masked_fill(~seen, NEG_INF)
    return m


def _mask_grads(grad_s, attn_mask, key_padding_mask, need_attn: bool, need_padding: bool):
    """∂C/∂attn_mask and ∂C/∂key_padding_mask: ∂C/∂S at the real keys, summed where a mask was shared."""
    grad_attn = grad_padding = None
    if need_attn:  # a 2-D mask serves every sequence and head; a 3-D one holds one (L,S) per sequence and head
        g = _first(grad_s, attn_mask.shape[-1], -1)
        grad_attn = (g.sum((0, 1)) if attn_mask.dim() == 2 else g.reshape(attn_mask.shape)).to(attn_mask.dtype)
    if need_padding:  # a key's padding entry is added to that key's score for every head and query
        g = _first(grad_s, key_padding_mask.shape[-1], -1)
        grad_padding = g.sum((1, 2)).reshape(key_padding_mask.shape).to(key_padding_mask.dtype)
    return grad_attn, grad_padding


def _weights(a: Tensor, how: Heads) -> Tensor:
    """The weights torch returns: A averaged over the heads (n,L,S') or per head (n,h,L,S')."""
    w = a.mean(1) if how.average_attn_weights else a
    return w[0] if how.layout == "LE" else w


def _weights_grad(grad_w: Tensor, how: Heads, size) -> Tensor:
    """∂C/∂A from ∂C/∂(returned weights): the mean over h heads passes 1/h to each."""
    g = grad_w.unsqueeze(0) if how.layout == "LE" else grad_w
    return g.unsqueeze(1).expand(size) / how.num_heads if how.average_attn_weights else g


def _heads_and_probabilities(ctx):
    """The heads Q, K, V (n,h,·,d) and P per head, recomputed from the saved inputs; and the scale 1/√d."""
    q, k, v, bias_k, bias_v, attn_mask, key_padding_mask, _ = ctx.saved_tensors
    how = ctx.how
    qh, kh, vh = _to_heads(q, how), _keys_to_heads(k, bias_k, how), _keys_to_heads(v, bias_v, how)
    m = _additive_mask(attn_mask, key_padding_mask, how, qh, kh.shape[2], constants=True)
    scale = 1 / math.sqrt(qh.shape[-1])
    return qh, kh, vh, _probabilities(qh, kh, m, scale, safe=not how.need_weights), scale


def _head_probabilities(qh: Tensor, kh: Tensor, m: Tensor | None, scale: float, safe: bool) -> Tensor:
    """P = softmax(Q·Kᵀ·scale + M) per head, as :func:`_probabilities` computes it, in fewer passes
    over the (n,h,L,S) scores: the scale, and a mask that every head shares, ride in one ``baddbmm``.
    ``safe`` as there (the caller leaves it off where no row can be fully masked)."""
    n, h, length, d = qh.shape
    q3, k3t = qh.reshape(n * h, length, d), kh.reshape(n * h, -1, d).transpose(1, 2)
    if m is not None and m.dim() == 2:
        s = torch.baddbmm(m.to(qh.dtype), q3, k3t, alpha=scale).view(n, h, length, -1)  # S = M + Q·Kᵀ·scale
    else:
        s = torch.baddbmm(q3.new_zeros(()), q3, k3t, beta=0, alpha=scale).view(n, h, length, -1)  # S = Q·Kᵀ·scale
        if m is not None:
            s = s + m.to(s.dtype)  # + M
    return _softmax_rows(s, safe)


class AttentionHeads(ManualFunction):
    """Multi-head attention between the projections: split into heads, attend, merge.

    q (L,n,E), k and v (S,n,E) (or batch first, or unbatched) are cut into h heads of d = E/h
    features; bias_k / bias_v (1,1,E) join the keys / values as one more position, and a zero key
    and value with add_zero_attn; attn_mask (L,S) or (n·h,L,S) and key_padding_mask (n,S) add up to
    M. Per head, O = softmax(Q·Kᵀ/√d + M) ⊙ D · V, and the heads' outputs are concatenated. With
    ``need_weights`` the weights A (averaged over the heads or not) are a second output.

    P and A = P ⊙ D per head are outputs too (after the others; the public entries drop them), so that
    backward reads them instead of recomputing them, as σ's backward reads σ: with X = ∂C/∂A (δ_O·Vᵀ,
    plus the gradient of the returned weights and of A itself) and ∂C/∂P = X ⊙ D + ∂C/∂P_out,

        P ⊙ ∂C/∂P = X ⊙ A + P ⊙ ∂C/∂P_out =: Y,     ∂C/∂S = Y − P ⊙ rowsum(Y)

    (the softmax factor of the module docstring, with P ⊙ D = A: D itself is not needed). Without
    dropout A is P and only P is returned. The rest of backward: ∂C/∂V = Aᵀ·δ_O, ∂C/∂Q = ∂C/∂S·K/√d,
    ∂C/∂K = ∂C/∂Sᵀ·Q/√d, per head; ∂C/∂q, ∂C/∂k, ∂C/∂v are the heads' gradients put back side by
    side; ∂C/∂bias_k = Σ_n ∂C/∂K at the bias position; ∂C/∂attn_mask = ∂C/∂S summed over what the
    mask was shared by (n and h for a 2-D mask); ∂C/∂key_padding_mask = Σ_h Σ_i ∂C/∂S. Forward mode
    runs the tangents through the same split and the attention jvp.
    """

    @staticmethod
    def forward(q, k, v, bias_k, bias_v, attn_mask, key_padding_mask, noise, how: Heads):
        qh, kh, vh = _to_heads(q, how), _keys_to_heads(k, bias_k, how), _keys_to_heads(v, bias_v, how)
        m = _additive_mask(attn_mask, key_padding_mask, how, qh, kh.shape[2], constants=True)
        safe = not how.need_weights and m is not None and not how.causal  # a causal row always sees its own key
        p = _head_probabilities(qh, kh, m, 1 / math.sqrt(qh.shape[-1]), safe)  # P per head
        a = _dropped(p, noise)  # A = P ⊙ D
        out = _from_heads(a @ vh, how)  # O = A·V, heads side by side
        weights = ()
        if how.need_weights:  # per head they would be A itself, or a view of it: a copy, one tensor per output
            weights = (_weights(a, how) if how.average_attn_weights else _weights(a, how).clone(),)
        return (out, *weights, p) if noise is None else (out, *weights, p, a)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.how = inputs[-1]
        ctx.set_materialize_grads(False)  # an output nobody used sends None, not a tensor of zeros
        p_a = output[1 + ctx.how.need_weights:]  # (P,) or (P, A)
        ctx.save_for_backward(*inputs[:-2], *p_a)  # q, k, v, bias_k, bias_v, attn_mask, key_padding_mask; not D
        ctx.save_for_forward(*inputs[:-1])

    @staticmethod
    def backward(ctx, grad_out: Tensor | None, *grads: Tensor | None):
        q, k, v, bias_k, bias_v, attn_mask, key_padding_mask, p, *dropped = ctx.saved_tensors
        how = ctx.how
        grad_weights = grads[0] if how.need_weights else None
        grad_p_out, *grad_a_out = grads[how.need_weights:]
        a = dropped[0] if dropped else p  # A = P ⊙ D (A = P without dropout)
        grad_a_out = grad_a_out[0] if grad_a_out else None
        need_q, need_k, need_v, need_bk, need_bv, need_attn, need_padding = ctx.needs_input_grad[:7]
        need_qkm = need_q or need_k or need_bk or need_attn or need_padding
        qh, kh, vh = _to_heads(q, how), _keys_to_heads(k, bias_k, how), _keys_to_heads(v, bias_v, how)
        scale = 1 / math.sqrt(qh.shape[-1])
        # δ_O per head (the merge only moved numbers), laid out once for the two products that read it
        delta_o = None if grad_out is None else _to_heads(grad_out, how).contiguous()
        grad_qh = grad_kh = grad_vh = grad_s = None
        if need_v or need_bv:
            grad_vh = a.transpose(-2, -1) @ delta_o if delta_o is not None else torch.zeros_like(vh)  # ∂C/∂V = Aᵀ·δ_O
        if need_qkm:
            x = None if delta_o is None else delta_o @ vh.transpose(-2, -1)  # ∂C/∂A = δ_O·Vᵀ
            for extra in (_weights_grad(grad_weights, how, p.shape) if grad_weights is not None else None,
                          grad_a_out):  # + ∂C/∂A through the returned weights and through A itself
                if extra is not None:
                    x = extra if x is None else x + extra
            y = torch.zeros_like(p) if x is None else x * a  # Y = P ⊙ ∂C/∂P = X ⊙ A ...
            if grad_p_out is not None:
                y = y + grad_p_out * p  # ... + P ⊙ ∂C/∂P_out
            grad_s = torch.addcmul(y, p, y.sum(-1, keepdim=True), value=-1)  # ∂C/∂S = Y − P ⊙ rowsum(Y)
            grad_qh = grad_s @ kh * scale  # ∂C/∂Q = ∂C/∂S·K·scale
            grad_kh = grad_s.transpose(-2, -1) @ qh * scale  # ∂C/∂K = ∂C/∂Sᵀ·Q·scale
        grad_q = _from_heads(grad_qh, how) if need_q else None  # ∂C/∂q: the heads' ∂C/∂Q side by side
        grad_k, grad_bias_k = (_keys_from_heads(grad_kh, bias_k, how, need_k, need_bk) if need_k or need_bk
                               else (None, None))  # ∂C/∂k, ∂C/∂bias_k
        grad_v, grad_bias_v = (_keys_from_heads(grad_vh, bias_v, how, need_v, need_bv) if need_v or need_bv
                               else (None, None))  # ∂C/∂v, ∂C/∂bias_v
        grad_attn, grad_padding = _mask_grads(grad_s, attn_mask, key_padding_mask, need_attn, need_padding)  # ∂C/∂M
        return grad_q, grad_k, grad_v, grad_bias_k, grad_bias_v, grad_attn, grad_padding, None, None

    @staticmethod
    def jvp(ctx, tangent_q, tangent_k, tangent_v, tangent_bias_k, tangent_bias_v, tangent_attn, tangent_padding, *_):
        q, k, v, bias_k, bias_v, _, _, noise = ctx.saved_tensors
        how = ctx.how
        qh, kh, vh, p, scale = _heads_and_probabilities(ctx)  # the heads, and P per head

        def tangent_or_zero(tangent, x):  # the tangent of an input without one is 0
            return None if x is None else tangent if tangent is not None else torch.zeros_like(x)

        tangent_qh = _to_heads(tangent_or_zero(tangent_q, q), how)  # Q̇ per head
        tangent_kh = _keys_to_heads(tangent_or_zero(tangent_k, k), tangent_or_zero(tangent_bias_k, bias_k), how)  # K̇
        tangent_vh = _keys_to_heads(tangent_or_zero(tangent_v, v), tangent_or_zero(tangent_bias_v, bias_v), how)  # V̇
        tangent_m = None
        if tangent_attn is not None or tangent_padding is not None:  # Ṁ: the masks' tangents, padded like M
            tangent_m = _additive_mask(tangent_attn, tangent_padding, how, qh, kh.shape[2], constants=False)
        tangent_o, tangent_a, tangent_p = _attention_jvp(qh, kh, vh, p, noise, scale, tangent_qh, tangent_kh,
                                                         tangent_vh, tangent_m)  # Ȯ, Ȧ and Ṗ per head
        tangent_out = _from_heads(tangent_o, how)  # Ȯ, heads side by side
        weights = (_weights(tangent_a, how),) if how.need_weights else ()
        return (tangent_out, *weights, tangent_p) if noise is None else (tangent_out, *weights, tangent_p, tangent_a)


class Chunk(ManualFunction):
    """W_q, W_k, W_v = the three row blocks of a packed W (in_proj_weight or in_proj_bias).

    Each block is a slice of W, so ∂C/∂W = [∂C/∂W_q; ∂C/∂W_k; ∂C/∂W_v] (zeros for an unused block),
    and in forward mode each block's tangent is the same slice of Ẇ.
    """

    @staticmethod
    def forward(w: Tensor, chunks: int):
        return tuple(block.clone() for block in w.chunk(chunks))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.chunks = inputs[1]

    @staticmethod
    def backward(ctx, *grad_blocks: Tensor):
        return torch.cat(grad_blocks), None  # ∂C/∂W: the blocks' gradients stacked back in place

    @staticmethod
    def jvp(ctx, tangent_w: Tensor, _):
        return tuple(block.clone() for block in tangent_w.chunk(ctx.chunks))  # each block's tangent: its slice of Ẇ


def _canonical_mask(mask: Tensor | None, name: str, dtype: torch.dtype) -> Tensor | None:
    """A bool mask as 0 / −inf in the query's dtype (True: masked), a float mask as it is."""
    if mask is None:
        return None
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise LayerInputError(f"multi_head_attention_forward: {name} must be bool or floating point, got {mask.dtype}")
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, NEG_INF)
    return mask


def _check_mha(query, key, value, key_padding_mask, attn_mask, embed_dim_to_check, num_heads, bias_k, bias_v,
               use_separate_proj_weight, in_proj_weight, static_k, static_v, is_causal, need_weights, dropout_p,
               training, layout) -> tuple[int, int, int]:
    """Validates like torch's multi_head_attention_forward; returns (L, n, S)."""
    name = "multi_head_attention_forward"
    if query.dim() not in (2, 3):
        raise LayerInputError(f"{name}: query must be 2-D (L, E) unbatched or 3-D batched, got shape {shape(query)}")
    if any(t.is_nested for t in (query, key, value)):
        raise LayerInputError(f"{name}: nested tensors are not supported")
    if key.dim() != query.dim() or value.dim() != query.dim():
        raise LayerInputError(f"{name}: key {shape(key)} and value {shape(value)} must have the rank of query "
                              f"{shape(query)}")
    batched = query.dim() == 3
    seq, batch = (1, 0) if layout == "NLE" else (0, 1)
    length, n_keys = query.shape[seq], key.shape[seq]
    n = query.shape[batch] if batched else 1
    if batched and (key.shape[batch] != n or value.shape[batch] != n):
        raise LayerInputError(f"{name}: query {shape(query)}, key {shape(key)} and value {shape(value)} must hold "
                              f"the same number of sequences (dimension {batch})")
    if value.shape[seq] != n_keys:
        raise LayerInputError(f"{name}: key {shape(key)} and value {shape(value)} must hold the same number of "
                              f"positions (dimension {seq})")
    if not use_separate_proj_weight and key.shape != value.shape:
        raise LayerInputError(f"{name}: key shape {shape(key)} does not match value shape {shape(value)}")
    embed_dim = query.shape[-1]
    if embed_dim != embed_dim_to_check:
        raise LayerInputError(f"{name}: query {shape(query)} has {embed_dim} features, expected embed_dim="
                              f"{embed_dim_to_check}")
    if num_heads <= 0 or embed_dim % num_heads:
        raise LayerInputError(f"{name}: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    if not use_separate_proj_weight and in_proj_weight is None:
        raise LayerInputError(f"{name}: use_separate_proj_weight is False but in_proj_weight is None")
    if static_k is not None or static_v is not None:
        raise LayerInputError(f"{name}: static_k / static_v are not supported")
    if (bias_k is None) != (bias_v is None):
        raise LayerInputError(f"{name}: give both bias_k and bias_v, or neither")
    for bias, bias_name in ((bias_k, "bias_k"), (bias_v, "bias_v")):
        if bias is not None and shape(bias) != (1, 1, embed_dim):
            raise LayerInputError(f"{name}: {bias_name} shape {shape(bias)} is not (1, 1, {embed_dim})")
    if key_padding_mask is not None and shape(key_padding_mask) != ((n, n_keys) if batched else (n_keys,)):
        raise LayerInputError(f"{name}: key_padding_mask shape {shape(key_padding_mask)} is not "
                              f"{(n, n_keys) if batched else (n_keys,)} (sequences, key positions)")
    if attn_mask is not None:
        expected = [(length, n_keys), (n * num_heads, length, n_keys)]
        if all(shape(attn_mask) != e for e in expected):  # (== each: `in` misjudges symbolic sizes under dynamo)
            raise LayerInputError(f"{name}: attn_mask shape {shape(attn_mask)} is not {expected[0]} or "
                                  f"{expected[1]} (sequences × heads, queries, keys)")
    if is_causal and attn_mask is None:
        raise LayerInputError(f"{name}: is_causal=True needs attn_mask (the causal mask it hints at), as in torch")
    for mask, mask_name in ((attn_mask, "attn_mask"), (key_padding_mask, "key_padding_mask")):
        if mask is not None and mask.is_floating_point() and need_weights and mask.dtype != query.dtype:
            raise LayerInputError(f"{name}: float {mask_name} of dtype {mask.dtype} does not match the query's "
                                  f"{query.dtype} (torch refuses this when need_weights=True)")
    if training and dropout_p > 1:
        raise LayerInputError(f"{name}: dropout probability has to be between 0 and 1, but got {dropout_p}")
    return length, n, n_keys


def _multi_head_attention(
    query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v, add_zero_attn,
    dropout_p, out_proj_weight, out_proj_bias, training, key_padding_mask, need_weights, attn_mask,
    use_separate_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight, static_k, static_v, average_attn_weights,
    is_causal, batch_first,
) -> tuple[Tensor, Tensor | None]:
    """torch's multi_head_attention_forward, with ``batch_first`` handled inside the Function (a
    transpose outside it would be a native node in the backward graph)."""
    layout = "LE" if query.dim() == 2 else "NLE" if batch_first else "LNE"
    length, n, n_keys = _check_mha(query, key, value, key_padding_mask, attn_mask, embed_dim_to_check, num_heads,
                                   bias_k, bias_v, use_separate_proj_weight, in_proj_weight, static_k, static_v,
                                   is_causal, need_weights, dropout_p, training, layout)
    if key_padding_mask is not None and attn_mask is not None and key_padding_mask.dtype != attn_mask.dtype:
        warnings.warn("Support for mismatched key_padding_mask and attn_mask is deprecated. Use same type for both "
                      "instead.", stacklevel=3)
    key_padding_mask = _canonical_mask(key_padding_mask, "key_padding_mask", query.dtype)
    attn_mask = _canonical_mask(attn_mask, "attn_mask", query.dtype)
    causal = is_causal and key_padding_mask is None and not need_weights  # torch then ignores attn_mask for the hint
    if causal:
        attn_mask = None
    # in-projection: q = query·W_qᵀ + b_q, k = key·W_kᵀ + b_k, v = value·W_vᵀ + b_v
    if use_separate_proj_weight:
        w_q, w_k, w_v = q_proj_weight, k_proj_weight, v_proj_weight
    else:
        w_q, w_k, w_v = Chunk.call(in_proj_weight, 3)
    b_q, b_k, b_v = (None, None, None) if in_proj_bias is None else Chunk.call(in_proj_bias, 3)
    q, k, v = linear(query, w_q, b_q), linear(key, w_k, b_k), linear(value, w_v, b_v)
    n_keys_total = n_keys + (bias_k is not None) + bool(add_zero_attn)
    noise = _dropout_multiplier(dropout_p if training else 0.0, (n, num_heads, length, n_keys_total), q)
    how = Heads(num_heads, layout, bool(add_zero_attn), causal, bool(need_weights), bool(average_attn_weights))
    result = AttentionHeads.call(q, k, v, bias_k, bias_v, attn_mask, key_padding_mask, noise, how)
    attn_output, attn_weights = result[0], result[1] if need_weights else None  # (P and A, for backward, follow)
    out = linear(attn_output, out_proj_weight, out_proj_bias)  # out-projection
    if layout == "NLE":
        out = SequenceMajor.call(out)  # torch's memory layout, so a dropout after it draws the same mask
    return out, attn_weights


class SequenceMajor(ManualFunction):
    """a = z with the memory layout of torch's batch_first attention output, (N, L, E) stored as
    (L, N, E): the same numbers, so ∂C/∂z = ∂C/∂a. Layout matters to whatever fills a tensor in
    memory order after it, such as dropout's mask (``bernoulli_`` on ``empty_like``)."""

    @staticmethod
    def forward(z: Tensor) -> Tensor:
        n, length, e = z.shape
        a = torch.empty_strided((n, length, e), (e, n * e, 1), dtype=z.dtype, device=z.device)
        return a.copy_(z)  # a new tensor, not a view, so in-place layers after it stay allowed

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad_a: Tensor):
        return grad_a  # every number passes through unchanged

    @staticmethod
    def jvp(ctx, tangent_z: Tensor):
        return tangent_z.clone()


def multi_head_attention_forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    embed_dim_to_check: int,
    num_heads: int,
    in_proj_weight: Tensor | None,
    in_proj_bias: Tensor | None,
    bias_k: Tensor | None,
    bias_v: Tensor | None,
    add_zero_attn: bool,
    dropout_p: float,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
    training: bool = True,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    use_separate_proj_weight: bool = False,
    q_proj_weight: Tensor | None = None,
    k_proj_weight: Tensor | None = None,
    v_proj_weight: Tensor | None = None,
    static_k: Tensor | None = None,
    static_v: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Like ``torch.nn.functional.multi_head_attention_forward`` (sequence-first (L, N, E) or unbatched):
    in-projections with :func:`linear`, the heads in :class:`AttentionHeads`, the out-projection with
    :func:`linear`. Dropout on the weights uses torch's own mask for the seed. ``static_k`` and
    ``static_v`` are not supported."""
    return _multi_head_attention(
        query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v, add_zero_attn,
        dropout_p, out_proj_weight, out_proj_bias, training, key_padding_mask, need_weights, attn_mask,
        use_separate_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight, static_k, static_v,
        average_attn_weights, is_causal, batch_first=False)
