"""Rows for the operations that move numbers (manual_backprop.functional.shape): the view family, the
permutations, expand and repeat, copies, every kind of index, cat/stack, split/chunk/unbind (their tuple
of outputs joined by a native op after them, as a case needs one output), gather, flips, masks, casts.

Index tensors live in the lambdas, not in the arguments, so the vmap test batches only the input.
Not here (see tests/test_shape.py): casts between dtypes and devices (gradcheck needs float64
throughout), channels_last copies (torch's vmap does not clone into channels_last), index_select with a
0-d index (under vmap torch's own index_select ignores such an index)."""

import torch

from manual_backprop.functional import ops
from manual_backprop.functional import shape as S

from cases import DT, Case, leaf


def _t(*shape):
    return lambda: (leaf(torch.randn(shape, dtype=DT)),)


def _transposed(*shape):
    """A leaf laid out non-contiguously (its last two dims swapped in memory)."""
    return lambda: (leaf(torch.randn(*shape[:-2], shape[-1], shape[-2], dtype=DT).transpose(-1, -2)),)


def _set(index):
    """``h[index] = v`` on a copy h of x (so the leaf the checks perturb is never written), manual and native."""

    def manual(x, v):
        h = S.clone(x)
        S.setitem(h, index, v)
        return h

    def native(x, v):
        h = x.clone()
        h[index] = v
        return h

    return manual, native


def _weighted(pieces):
    """The pieces joined again, each scaled differently, so each gets its own gradient (manual ops only,
    so the row passes the audit too)."""
    return S.cat([ops.mul(S.reshape(p, -1), k + 1) for k, p in enumerate(pieces)])


def _weighted_native(pieces):
    return torch.cat([p.reshape(-1) * (k + 1) for k, p in enumerate(pieces)])


_IDX = torch.tensor([2, 0, 2, 1])
_ROWS = torch.tensor([[1, 0], [1, 1]])
_GATHER = torch.tensor([[[0, 2, 2, 1]], [[1, 1, 0, 0]]])
_MASK = torch.tensor([[True, False, True], [False, False, True]])

INDICES = {
    "int": (1,),
    "negative-int": (slice(None), -1),
    "slice-step": (slice(None), slice(0, 3, 2)),
    "ellipsis-slice": (Ellipsis, slice(None, 2)),
    "none-int-slice": (0, None, slice(1, None, 2)),
    "list": ([1, 0, 1],),
    "list-middle-with-slice": (slice(None), [2, 0, 2], slice(1, 3)),
    "tensors-repeated": (_IDX[:3].clamp(max=1), slice(None), _IDX[:3]),
    "tensors-apart": (_IDX[:2].clamp(max=1), slice(None), _IDX[:2]),
    "int-then-tensor": (0, slice(None), _IDX),
    "tensor-2d": (_ROWS,),
    "ellipsis-tensor": (Ellipsis, _IDX),
    "bool-true": (True, 0),
    "bool-false": (False,),
    "zero-d-tensor": (torch.tensor(1), Ellipsis, _ROWS),
    "list-and-none": (0, [1, 2], None, [0, 3]),
    "mask-leading": (_MASK,),
    "mask-full": (_GATHER.expand(2, 3, 4) > 0,),
    "slice-mask": (slice(None), _MASK[0, :, None].expand(3, 4)),
    "mask-then-slice": (_MASK, slice(1, 3)),
    "bool-list": ([True, False],),
}

FUNCTION_CASES = [
    # same numbers, another shape
    Case("shape-reshape-ints", lambda x: S.reshape(x, 4, -1), lambda x: x.reshape(4, -1), _t(2, 3, 4)),
    Case("shape-reshape-tuple", lambda x: S.reshape(x, (3, 8)), lambda x: torch.reshape(x, (3, 8)), _t(2, 3, 4)),
    Case("shape-reshape-keyword", lambda x: S.reshape(x, shape=[24]), lambda x: x.reshape(shape=[24]), _t(2, 3, 4)),
    Case("shape-reshape-non-contiguous", lambda x: S.reshape(x, -1), lambda x: x.reshape(-1), _transposed(3, 4)),
    Case("shape-reshape-to-scalar", lambda x: S.reshape(x, ()), lambda x: x.reshape(()), _t(1, 1)),
    Case("shape-view-ints", lambda x: S.view(x, 6, 4), lambda x: x.view(6, 4), _t(2, 3, 4)),
    Case("shape-view-size", lambda x: S.view(x, torch.Size([2, 12])), lambda x: x.view(torch.Size([2, 12])),
         _t(2, 3, 4)),
    Case("shape-view_as", lambda x: S.view_as(x, torch.empty(4, 6)), lambda x: x.view_as(torch.empty(4, 6)),
         _t(2, 3, 4)),
    Case("shape-reshape_as", lambda x: S.reshape_as(x, torch.empty(12)), lambda x: x.reshape_as(torch.empty(12)),
         _transposed(3, 4)),
    Case("shape-squeeze-all", S.squeeze, torch.squeeze, _t(1, 3, 1, 2)),
    Case("shape-squeeze-dim", lambda x: S.squeeze(x, -2), lambda x: x.squeeze(-2), _t(1, 3, 1, 2)),
    Case("shape-squeeze-tuple", lambda x: S.squeeze(x, (0, 1, 2)), lambda x: x.squeeze((0, 1, 2)), _t(1, 3, 1, 2)),
    Case("shape-unsqueeze", lambda x: S.unsqueeze(x, -1), lambda x: x.unsqueeze(-1), _t(2, 3)),
    Case("shape-unsqueeze-front", lambda x: S.unsqueeze(x, 0), lambda x: torch.unsqueeze(x, 0), _t(2, 3)),
    Case("shape-flatten", lambda x: S.flatten(x, 1), lambda x: torch.flatten(x, 1), _t(2, 3, 4)),
    Case("shape-flatten-all", S.flatten, torch.flatten, _transposed(3, 4)),
    Case("shape-flatten-middle", lambda x: S.flatten(x, -3, -2), lambda x: x.flatten(-3, -2), _t(2, 3, 4, 2)),
    Case("shape-unflatten", lambda x: S.unflatten(x, -1, (2, -1)), lambda x: x.unflatten(-1, (2, -1)), _t(3, 4)),
    # the dimensions reordered
    Case("shape-transpose", lambda x: S.transpose(x, 0, -1), lambda x: x.transpose(0, -1), _t(2, 3, 4)),
    Case("shape-swapaxes", lambda x: S.swapaxes(x, 1, 2), lambda x: torch.swapaxes(x, 1, 2), _t(2, 3, 4)),
    Case("shape-swapdims", lambda x: S.swapdims(x, -1, -2), lambda x: x.swapdims(-1, -2), _t(2, 3, 4)),
    Case("shape-t-matrix", S.t, torch.t, _t(3, 4)),
    Case("shape-t-vector", S.t, torch.t, _t(3)),
    Case("shape-permute-ints", lambda x: S.permute(x, 2, 0, 1), lambda x: x.permute(2, 0, 1), _t(2, 3, 4)),
    Case("shape-permute-tuple", lambda x: S.permute(x, (-1, 0, 1)), lambda x: torch.permute(x, (-1, 0, 1)),
         _t(2, 3, 4)),
    Case("shape-movedim-int", lambda x: S.movedim(x, 0, -1), lambda x: x.movedim(0, -1), _t(2, 3, 4)),
    Case("shape-movedim-tuples", lambda x: S.movedim(x, (0, 1), (2, 0)), lambda x: torch.movedim(x, (0, 1), (2, 0)),
         _t(2, 3, 4)),
    # copies along dimensions
    Case("shape-expand", lambda x: S.expand(x, 2, -1, 4), lambda x: x.expand(2, -1, 4), _t(3, 1)),
    Case("shape-expand-tuple", lambda x: S.expand(x, (5, 3, 2)), lambda x: x.expand((5, 3, 2)), _t(1, 2)),
    Case("shape-expand-same-shape", lambda x: S.expand(x, 1, 3, 2), lambda x: x.expand(1, 3, 2), _t(3, 2)),
    Case("shape-expand_as", lambda x: S.expand_as(x, torch.empty(2, 3, 4)), lambda x: x.expand_as(torch.empty(2, 3, 4)),
         _t(3, 1)),
    Case("shape-repeat", lambda x: S.repeat(x, 2, 3), lambda x: x.repeat(2, 3), _t(2, 3)),
    Case("shape-repeat-more-dims", lambda x: S.repeat(x, (2, 1, 3)), lambda x: x.repeat((2, 1, 3)), _t(2, 3)),
    # copies
    Case("shape-contiguous", S.contiguous, lambda x: x.contiguous(), _transposed(3, 4)),
    Case("shape-clone", S.clone, torch.clone, _transposed(3, 4)),
    # indexing
    *[Case(f"shape-getitem-{name}", lambda x, index=index: S.getitem(x, index), lambda x, index=index: x[index],
           _t(2, 3, 4))
      for name, index in INDICES.items()],
    Case("shape-getitem-vector-int", lambda x: S.getitem(x, -2), lambda x: x[-2], _t(5)),
    Case("shape-select", lambda x: S.select(x, 1, -1), lambda x: torch.select(x, 1, -1), _t(2, 3, 4)),
    Case("shape-narrow", lambda x: S.narrow(x, 2, 1, 2), lambda x: x.narrow(2, 1, 2), _t(2, 3, 4)),
    Case("shape-narrow-negative-start", lambda x: S.narrow(x, -1, -3, 3), lambda x: torch.narrow(x, -1, -3, 3),
         _t(2, 3, 4)),
    Case("shape-diagonal", S.diagonal, torch.diagonal, _t(3, 4)),
    Case("shape-diagonal-offset-dims", lambda x: S.diagonal(x, -1, 2, 0), lambda x: x.diagonal(-1, 2, 0),
         _t(3, 2, 4)),
    # joining
    Case("shape-cat", lambda x, y: S.cat([x, y], 1), lambda x, y: torch.cat([x, y], 1),
         lambda: (leaf(torch.randn(2, 3, dtype=DT)), leaf(torch.randn(2, 2, dtype=DT)))),
    Case("shape-cat-constant-and-legacy-empty", lambda x: S.cat((torch.ones(1, 3, dtype=DT), x, torch.empty(0)), -2),
         lambda x: torch.cat((torch.ones(1, 3, dtype=DT), x, torch.empty(0)), -2), _t(2, 3)),
    Case("shape-cat-promotes", lambda x: S.cat([x, torch.ones(2, dtype=torch.float32)]),
         lambda x: torch.cat([x, torch.ones(2, dtype=torch.float32)]), _t(3)),
    Case("shape-cat-same-tensor-twice", lambda x, y: S.cat([x, y, x], -1), lambda x, y: torch.cat([x, y, x], -1),
         lambda: (leaf(torch.randn(2, 3, dtype=DT)), leaf(torch.randn(2, 1, dtype=DT)))),
    Case("shape-concat", lambda x, y: S.concat((x, y), dim=-1), lambda x, y: torch.concat((x, y), dim=-1),
         lambda: (leaf(torch.randn(2, 3, dtype=DT)), leaf(torch.randn(2, 1, dtype=DT)))),
    Case("shape-concatenate", lambda x, y: S.concatenate([x, y], axis=0),
         lambda x, y: torch.concatenate([x, y], axis=0),
         lambda: (leaf(torch.randn(2, 3, dtype=DT)), leaf(torch.randn(1, 3, dtype=DT)))),
    Case("shape-stack", lambda x, y: S.stack([x, y], -1), lambda x, y: torch.stack([x, y], -1),
         lambda: (leaf(torch.randn(2, 3, dtype=DT)), leaf(torch.randn(2, 3, dtype=DT)))),
    Case("shape-stack-same-tensor-twice", lambda x: S.stack([x, x], 1), lambda x: torch.stack([x, x], 1), _t(2, 3)),
    Case("shape-stack-with-constant", lambda x: S.stack((x, torch.zeros(2, 3, dtype=DT))),
         lambda x: torch.stack((x, torch.zeros(2, 3, dtype=DT))), _t(2, 3)),
    # splitting (one Function, a tuple of outputs)
    Case("shape-split-int", lambda x: _weighted(S.split(x, 2, 1)), lambda x: _weighted_native(torch.split(x, 2, 1)),
         _t(2, 5)),
    Case("shape-split-sections", lambda x: _weighted(S.split(x, [1, 3, 0], -1)),
         lambda x: _weighted_native(x.split([1, 3, 0], -1)), _t(2, 4)),
    Case("shape-split-one-piece-used", lambda x: S.split(x, 2)[1], lambda x: torch.split(x, 2)[1], _t(5, 2)),
    Case("shape-chunk", lambda x: _weighted(S.chunk(x, 3, 1)), lambda x: _weighted_native(torch.chunk(x, 3, 1)),
         _t(2, 7)),
    Case("shape-chunk-fewer", lambda x: _weighted(S.chunk(x, 4)), lambda x: _weighted_native(x.chunk(4)), _t(6, 2)),
    Case("shape-unbind", lambda x: _weighted(S.unbind(x, 1)), lambda x: _weighted_native(torch.unbind(x, 1)),
         _t(2, 3, 2)),
    Case("shape-unbind-one-used", lambda x: S.unbind(x)[-1], lambda x: x.unbind()[-1], _t(3, 2)),
    # gathering
    Case("shape-gather", lambda x: S.gather(x, -1, _GATHER), lambda x: torch.gather(x, -1, _GATHER), _t(2, 3, 4)),
    Case("shape-gather-dim0", lambda x: S.gather(x, 0, _GATHER[:, 0, :3].T % 2),
         lambda x: x.gather(0, _GATHER[:, 0, :3].T % 2), _t(2, 5)),
    Case("shape-index_select", lambda x: S.index_select(x, 1, _IDX), lambda x: torch.index_select(x, 1, _IDX),
         _t(2, 3, 4)),
    # reordering and masking
    Case("shape-flip", lambda x: S.flip(x, (0, -1)), lambda x: torch.flip(x, (0, -1)), _t(2, 3, 4)),
    Case("shape-flip-ints", lambda x: S.flip(x, 1), lambda x: x.flip(1), _t(2, 3, 4)),
    Case("shape-roll", lambda x: S.roll(x, (1, -2), (0, 2)), lambda x: torch.roll(x, (1, -2), (0, 2)), _t(2, 3, 4)),
    Case("shape-roll-flattened", lambda x: S.roll(x, 5), lambda x: x.roll(5), _t(2, 3, 4)),
    Case("shape-tril", S.tril, torch.tril, _t(3, 4)),
    Case("shape-tril-batched-offset", lambda x: S.tril(x, -1), lambda x: x.tril(-1), _t(2, 4, 3)),
    Case("shape-triu", lambda x: S.triu(x, diagonal=1), lambda x: torch.triu(x, diagonal=1), _t(2, 3, 4)),
    Case("shape-masked_fill-number", lambda x: S.masked_fill(x, _GATHER[:, :, :3] > 0, -1.5),
         lambda x: x.masked_fill(_GATHER[:, :, :3] > 0, -1.5), _t(2, 1, 3)),
    Case("shape-masked_fill-tensor-value", lambda x, v: S.masked_fill(x, _GATHER > 0, v),
         lambda x, v: torch.masked_fill(x, _GATHER > 0, v),
         lambda: (leaf(torch.randn(2, 3, 4, dtype=DT)), leaf(torch.tensor(0.7, dtype=DT)))),
    Case("shape-masked_fill-mask-broadcasts-input", lambda x, v: S.masked_fill(x, _GATHER > 0, v),
         lambda x, v: x.masked_fill(_GATHER > 0, v),
         lambda: (leaf(torch.randn(4, dtype=DT)), leaf(torch.tensor(-2.0, dtype=DT)))),
    # in-place writes (on a manual copy of the leaf); under torch.func they run as torch's own copy_ / setitem
    Case("shape-copy_", lambda x, y: S.copy_(S.clone(x), y), lambda x, y: x.clone().copy_(y),
         lambda: (leaf(torch.randn(2, 3, dtype=DT)), leaf(torch.randn(2, 3, dtype=DT)))),
    Case("shape-copy_-broadcast", lambda x, y: S.copy_(S.clone(x), y), lambda x, y: x.clone().copy_(y),
         lambda: (leaf(torch.randn(2, 3, 4, dtype=DT)), leaf(torch.randn(3, 1, dtype=DT)))),
    *[Case(f"shape-setitem-{name}", *_set(index), lambda value_shape=value_shape: (
        leaf(torch.randn(2, 3, 4, dtype=DT)), leaf(torch.randn(value_shape, dtype=DT))))
      for name, index, value_shape in [("slice", (slice(None), 1), (2, 4)),
                                       ("broadcast-value", (slice(None), slice(0, 2)), (4,)),
                                       ("leading-ones-value", (0,), (1, 1, 4)),
                                       ("int-and-list", (1, [0, 2]), (2, 4)),
                                       ("tensors", (_IDX[:2].clamp(max=1), slice(None), _IDX[:2]), (2, 3)),
                                       ("mask", (_MASK,), (4,)),
                                       ("ellipsis-0d-value", (Ellipsis, 2), ())]],
    Case("shape-setitem-number", lambda x: _set((0, slice(1, None)))[0](x, -3.0),
         lambda x: _set((0, slice(1, None)))[1](x, -3.0), _t(2, 3, 4)),
    # casts that copy (gradcheck needs float64 both ways; the dtype changes are in tests/test_shape.py)
    Case("shape-to-copy", lambda x: S.to(x, DT, copy=True), lambda x: x.to(DT, copy=True), _t(3, 2)),
]

MODULE_CASES = []
