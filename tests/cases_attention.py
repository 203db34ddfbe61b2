"""Attention rows of the case tables: scaled_dot_product_attention and nn.MultiheadAttention.

Shapes stay tiny: for the functional rows L = 2 queries, S = 3 keys, E = 2 features, 2 heads;
for the modules L = 3, S = 4, N = 2 sequences, E = 4 features, 2 heads. Dropout
cases are not here: a fresh mask per call defeats gradcheck and vmap (see tests/test_attention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import manual_backprop.nn.attention  # noqa: F401  (registers the drop-in modules)
from manual_backprop.functional.attention import scaled_dot_product_attention

from cases import DT, Case, ModuleCase, leaf

L, S, N, E, H = 3, 4, 2, 4, 2  # modules
FL, FS, FE = 2, 3, 2  # functional rows: queries, keys, features


def _qkv(q_shape, k_shape, v_shape, mask=None):
    def make():
        tensors = tuple(leaf(torch.randn(*s, dtype=DT)) for s in (q_shape, k_shape, v_shape))
        return tensors if mask is None else (*tensors, mask())
    return make


def _bool_mask(*batch):
    """True = attend; every query keeps key 0, so no row is fully masked (see the test file for that)."""
    def make():
        mask = torch.rand(*batch, FL, FS) > 0.5
        mask[..., 0] = True
        return mask
    return make


def _float_mask(*batch):
    return lambda: leaf(torch.randn(*batch, FL, FS, dtype=DT))


def _sdpa(id, make, **kwargs):
    return Case(f"attention-sdpa-{id}", scaled_dot_product_attention, F.scaled_dot_product_attention, make, kwargs)


FUNCTION_CASES: list[Case] = [
    _sdpa("4d", _qkv((1, H, FL, FE), (1, H, FS, FE), (1, H, FS, 3))),
    _sdpa("3d", _qkv((2, FL, FE), (2, FS, FE), (2, FS, 1))),
    _sdpa("unbatched", _qkv((FL, FE), (FS, FE), (FS, 2))),
    _sdpa("broadcast-batch", _qkv((2, H, FL, FE), (1, H, FS, FE), (FS, 1))),
    _sdpa("bool-mask", _qkv((H, FL, FE), (H, FS, FE), (H, FS, 2), _bool_mask())),
    _sdpa("bool-mask-per-head", _qkv((1, H, FL, FE), (1, H, FS, FE), (1, H, FS, 2), _bool_mask(H))),
    _sdpa("float-mask", _qkv((H, FL, FE), (H, FS, FE), (H, FS, 2), _float_mask())),
    _sdpa("float-mask-per-head", _qkv((1, H, FL, FE), (1, H, FS, FE), (1, H, FS, 2), _float_mask(H))),
    _sdpa("causal", _qkv((H, FL, FE), (H, FS, FE), (H, FS, 2)), is_causal=True),
    _sdpa("causal-more-queries", _qkv((4, FE), (FS, FE), (FS, 2)), is_causal=True),
    _sdpa("scale", _qkv((H, FL, FE), (H, FS, FE), (H, FS, 2)), scale=0.3),
    _sdpa("gqa", _qkv((4, FL, FE), (2, FS, FE), (1, FS, 2)), enable_gqa=True),
    _sdpa("gqa-bool-mask", _qkv((1, 4, FL, FE), (1, 2, FS, FE), (1, 2, FS, 2), _bool_mask(4)), enable_gqa=True),
]


def _x(*shape):
    return lambda: leaf(torch.randn(*shape, dtype=DT))


def _mha(id, make, *inputs, train=True):
    """inputs: query, key, value, then MultiheadAttention.forward's other arguments in order
    (key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)."""
    return ModuleCase(f"attention-MultiheadAttention-{id}", make,
                      lambda: tuple(i() if callable(i) else i for i in inputs), train)


def _kpm():
    mask = torch.zeros(N, S, dtype=torch.bool)
    mask[0, -1] = mask[1, 1] = True  # True = padding, ignored
    return mask


def _attn_bool():
    mask = torch.rand(L, S) > 0.6
    mask[:, 0] = False  # True = may not attend; key 0 stays open to every query
    return mask


def _causal():
    return torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=DT)


_MHA = lambda **kw: lambda: torch.nn.MultiheadAttention(E, H, **kw)  # noqa: E731
_SEQ = (_x(L, N, E), _x(S, N, E), _x(S, N, E))

MODULE_CASES: list[ModuleCase] = [
    _mha("weights", _MHA(), *_SEQ),
    _mha("no-weights", _MHA(), *_SEQ, None, False),
    _mha("per-head-weights", _MHA(), *_SEQ, None, True, None, False),
    _mha("batch-first", _MHA(batch_first=True), _x(N, L, E), _x(N, S, E), _x(N, S, E)),
    _mha("batch-first-no-weights", _MHA(batch_first=True), _x(N, L, E), _x(N, S, E), _x(N, S, E), None, False),
    _mha("unbatched", _MHA(), _x(L, E), _x(S, E), _x(S, E), None, True, None, False),
    _mha("bool-masks", _MHA(), *_SEQ, _kpm, True, _attn_bool),
    _mha("bool-masks-no-weights", _MHA(), *_SEQ, _kpm, False, _attn_bool),
    _mha("float-masks", _MHA(), *_SEQ, _x(N, S), True, _x(N * H, L, S)),
    _mha("float-masks-no-weights", _MHA(), *_SEQ, _x(N, S), False, _x(L, S)),
    _mha("bias-kv-zero-attn", _MHA(add_bias_kv=True, add_zero_attn=True), *_SEQ, _x(N, S), True, _x(L, S), False),
    _mha("bias-kv-zero-attn-no-weights", _MHA(add_bias_kv=True, add_zero_attn=True), *_SEQ, _kpm, False, _attn_bool),
    _mha("kdim-vdim-no-bias", _MHA(kdim=3, vdim=5, bias=False), _x(L, N, E), _x(S, N, 3), _x(S, N, 5)),
    _mha("causal", _MHA(), _x(L, N, E), _x(L, N, E), _x(L, N, E), None, False, _causal, True, True),
    _mha("causal-weights", _MHA(), _x(L, N, E), _x(L, N, E), _x(L, N, E), None, True, _causal, True, True),
    _mha("dropout-eval", _MHA(dropout=0.5), *_SEQ, train=False),
    _mha("dropout", _MHA(dropout=0.5), *_SEQ),
    _mha("dropout-no-weights", _MHA(dropout=0.5, batch_first=True), _x(N, L, E), _x(N, S, E), _x(N, S, E), None,
         False),
]
