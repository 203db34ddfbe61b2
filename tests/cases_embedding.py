"""Embedding rows of the case table.

Left out, and checked in tests/test_embedding.py instead, are the options whose backward is by
design not the derivative of the forward, so gradcheck cannot pass (not for torch either):
``scale_grad_by_freq`` (divides by the lookup count) and an Embedding lookup of ``padding_idx``
(the row is used but gets no gradient). In ``embedding_bag`` a padding member is left out of the
forward too, so those rows are here. Also there: ``max_norm`` (renormalises the weight in place),
``sparse=True`` (a sparse gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import manual_backprop.nn.embedding  # noqa: F401  (registers the drop-in modules)
from manual_backprop.functional.embedding import embedding, embedding_bag

from cases import DT, Case, ModuleCase, leaf

V, D = 6, 3  # rows of the table, embedding dimension


def _lookup(*idx_shape, dtype=torch.int64):
    return lambda: (torch.randint(0, V, idx_shape, dtype=dtype), leaf(torch.randn(V, D, dtype=DT)))


OFFSETS = [0, 3, 3, 5]  # bags of 3, 0 (empty), 2 and 2 members of a 7-long input


def _bag(idx_shape=(7,), offsets=OFFSETS, psw=False, padding=None, last=False):
    """(input, weight, offsets[, None, 2, False, 'sum', False, per_sample_weights]) for embedding_bag."""
    def make():
        idx = torch.randint(0, V, idx_shape)
        if padding is not None:
            idx.view(-1)[:2] = padding  # with OFFSETS, the first bag holds padding twice
        off = None if offsets is None else torch.tensor([*offsets, idx.numel()] if last else offsets)
        args = (idx, leaf(torch.randn(V, D, dtype=DT)), off)
        if psw:
            args += (None, 2, False, "sum", False, leaf(torch.rand(idx_shape, dtype=DT) + 0.5))
        return args
    return make


FUNCTION_CASES = [
    Case("embedding-1d", embedding, F.embedding, _lookup(5)),
    Case("embedding-2d", embedding, F.embedding, _lookup(2, 3)),
    Case("embedding-scalar-index", embedding, F.embedding, _lookup()),
    Case("embedding-int32", embedding, F.embedding, _lookup(4, dtype=torch.int32)),
    *[Case(f"embedding-bag-{mode}", embedding_bag, F.embedding_bag, _bag(), {"mode": mode})
      for mode in ("sum", "mean", "max")],
    *[Case(f"embedding-bag-2d-{mode}", embedding_bag, F.embedding_bag, _bag((3, 2), None), {"mode": mode})
      for mode in ("sum", "mean", "max")],
    *[Case(f"embedding-bag-padding-{mode}", embedding_bag, F.embedding_bag, _bag(padding=4),
           {"mode": mode, "padding_idx": 4})
      for mode in ("sum", "mean", "max")],
    Case("embedding-bag-per-sample-weights", embedding_bag, F.embedding_bag, _bag(psw=True, padding=1),
         {"padding_idx": 1}),
    Case("embedding-bag-2d-per-sample-weights", embedding_bag, F.embedding_bag, _bag((2, 3), None, psw=True)),
    *[Case(f"embedding-bag-include-last-offset-{mode}", embedding_bag, F.embedding_bag, _bag(last=True),
           {"mode": mode, "include_last_offset": True})
      for mode in ("mean", "max")],
]


def _idx(*shape, low=0):
    return lambda: (torch.randint(low, V, shape),)


def _bag_inputs(psw=False):
    def make():
        idx = torch.tensor([1, 4, 4, 0, 2, 5, 1])
        off = torch.tensor([0, 2, 2, 6])
        return (idx, off) + ((leaf(torch.rand(7, dtype=DT) + 0.5),) if psw else ())
    return make


MODULE_CASES = [
    ModuleCase("embedding-Embedding", lambda: torch.nn.Embedding(V, D), _idx(2, 3)),
    ModuleCase("embedding-Embedding-padding", lambda: torch.nn.Embedding(V, D, padding_idx=0),
               lambda: (torch.tensor([[0, 2, 0], [3, 2, 5]]),)),
    ModuleCase("embedding-Embedding-max-norm", lambda: torch.nn.Embedding(V, D, max_norm=1.0), _idx(2, 3)),
    ModuleCase("embedding-Embedding-scale-grad-by-freq",
               lambda: torch.nn.Embedding(V, D, padding_idx=1, scale_grad_by_freq=True),
               lambda: (torch.tensor([[1, 2, 2], [3, 2, 1]]),)),
    ModuleCase("embedding-EmbeddingBag-sum-per-sample-weights", lambda: torch.nn.EmbeddingBag(V, D, mode="sum"),
               _bag_inputs(psw=True)),
    ModuleCase("embedding-EmbeddingBag-mean-2d", lambda: torch.nn.EmbeddingBag(V, D), _idx(3, 2)),
    ModuleCase("embedding-EmbeddingBag-max-padding", lambda: torch.nn.EmbeddingBag(V, D, mode="max", padding_idx=4),
               _bag_inputs()),
    ModuleCase("embedding-EmbeddingBag-include-last-offset",
               lambda: torch.nn.EmbeddingBag(V, D, mode="mean", include_last_offset=True),
               lambda: (torch.tensor([1, 4, 4, 0, 2]), torch.tensor([0, 2, 2, 5]))),
]
