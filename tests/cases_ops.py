"""Rows for the arithmetic ops (manual_backprop.functional.ops): broadcasting, numbers as operands,
every reduction over one, several and all dimensions, and the matmul shapes."""

import torch

from manual_backprop.functional import ops

from cases import DT, Case, away_from_zero, leaf


def _t(*shape):
    return leaf(torch.randn(shape, dtype=DT))


def _positive(*shape):
    """In [0.5, 2): away from the kinks and poles of log, sqrt, pow and div at 0."""
    return leaf(torch.rand(shape, dtype=DT) * 1.5 + 0.5)


def _nonzero(*shape):
    return leaf(away_from_zero(*shape) if shape else away_from_zero(1)[0])


def _distinct(*shape):
    """Values with no ties, so finite differences never swap which entry is the extremum."""
    ranks = torch.randperm(torch.Size(shape).numel()).to(DT).reshape(shape)
    return leaf(ranks * 0.5 + torch.rand(shape, dtype=DT) * 0.1)


BINARY = [("add", ops.add, torch.add, _t), ("sub", ops.sub, torch.sub, _t), ("mul", ops.mul, torch.mul, _t),
          ("div", ops.div, torch.div, _nonzero)]

FUNCTION_CASES = [
    *[Case(f"ops-{name}-{tag}", mf, nf, lambda a=a, b=b, make=make: (_t(*a), make(*b)))
      for name, mf, nf, make in BINARY
      for tag, a, b in [("same", (3, 4), (3, 4)), ("broadcast", (2, 1, 4), (3, 1)), ("scalar-tensor", (3, 4), ())]],
    *[Case(f"ops-{name}-number", mf, nf, lambda: (_t(3, 4), 2.5)) for name, mf, nf, _ in BINARY],
    Case("ops-add-alpha", ops.add, torch.add, lambda: (_t(3, 4), _t(4)), {"alpha": -0.5}),
    Case("ops-sub-alpha", ops.sub, torch.sub, lambda: (_t(2, 3), _t(2, 1)), {"alpha": 3}),
    Case("ops-pow-tensors", ops.pow, torch.pow, lambda: (_positive(3, 4), _t(3, 4))),
    Case("ops-pow-broadcast", ops.pow, torch.pow, lambda: (_positive(2, 1, 3), _t(4, 1))),
    Case("ops-pow-number-exponent", ops.pow, torch.pow, lambda: (_positive(3, 4), 2.5)),
    Case("ops-pow-square", ops.pow, torch.pow, lambda: (_t(3, 4), 2)),
    Case("ops-pow-number-base", ops.pow, torch.pow, lambda: (1.7, _t(3, 4))),
    Case("ops-where", ops.where, torch.where, lambda: (torch.rand(3, 4) > 0.5, _t(3, 4), _t(3, 4))),
    Case("ops-where-broadcast", ops.where, torch.where, lambda: (torch.rand(3, 1) > 0.5, _t(4), _t(2, 1, 1))),
    Case("ops-where-number", ops.where, torch.where, lambda: (torch.rand(3, 4) > 0.5, _t(3, 4), 0.0)),
    *[Case(f"ops-{name}", mf, nf, lambda make=make: (make(3, 4),))
      for name, mf, nf, make in [("exp", ops.exp, torch.exp, _t), ("log", ops.log, torch.log, _positive),
                                 ("sqrt", ops.sqrt, torch.sqrt, _positive), ("abs", ops.abs, torch.abs, _nonzero),
                                 ("neg", ops.neg, torch.neg, _t),
                                 ("reciprocal", ops.reciprocal, torch.reciprocal, _nonzero)]],
    *[Case(f"ops-clamp-{tag}", ops.clamp, torch.clamp, lambda: (_nonzero(4, 5),), kw)
      for tag, kw in [("both", {"min": -0.05, "max": 0.05}), ("min", {"min": 0.0}), ("max", {"max": 0.0})]],
    *[Case(f"ops-{name}-{tag}", mf, nf, lambda: (_t(2, 3, 4),), kw)
      for name, mf, nf in [("sum", ops.sum, torch.sum), ("mean", ops.mean, torch.mean)]
      for tag, kw in [("all", {}), ("dim", {"dim": 1}), ("dims-keepdim", {"dim": (0, -1), "keepdim": True})]],
    Case("ops-sum-scalar", ops.sum, torch.sum, lambda: (_t(),), {"dim": 0}),
    *[Case(f"ops-var-{tag}", ops.var, torch.var, lambda: (_t(2, 3, 4),), kw)
      for tag, kw in [("all", {}), ("dim", {"dim": 1}), ("dims-keepdim-biased", {"dim": (0, 2), "keepdim": True,
                                                                                 "correction": 0})]],
    *[Case(f"ops-{name}-{tag}", mf, nf, lambda: (_distinct(2, 3, 4),), kw)
      for name, mf, nf in [("amax", ops.amax, torch.amax), ("amin", ops.amin, torch.amin)]
      for tag, kw in [("all", {}), ("dim", {"dim": 1}), ("dims-keepdim", {"dim": (0, 2), "keepdim": True})]],
    *[Case(f"ops-matmul-{tag}", ops.matmul, torch.matmul, lambda a=a, b=b: (_t(*a), _t(*b)))
      for tag, a, b in [("2d", (3, 4), (4, 2)), ("dot", (4,), (4,)), ("vec-mat", (4,), (4, 2)),
                        ("mat-vec", (3, 4), (4,)), ("batched", (2, 3, 4), (2, 4, 2)),
                        ("broadcast-batch", (2, 1, 3, 4), (5, 4, 2)), ("vec-batched", (4,), (2, 4, 3)),
                        ("batched-vec", (2, 3, 4), (4,))]],
    Case("ops-mm", ops.mm, torch.mm, lambda: (_t(3, 4), _t(4, 2))),
    Case("ops-bmm", ops.bmm, torch.bmm, lambda: (_t(2, 3, 4), _t(2, 4, 2))),
    Case("ops-addmm", ops.addmm, torch.addmm, lambda: (_t(3, 2), _t(3, 4), _t(4, 2))),
    Case("ops-addmm-broadcast-beta-alpha", ops.addmm, torch.addmm, lambda: (_t(2), _t(3, 4), _t(4, 2)),
         {"beta": 0.5, "alpha": -2.0}),
]

MODULE_CASES = []
