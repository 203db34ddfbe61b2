"""Rows for the arithmetic ops (manual_backprop.functional.ops): broadcasting, numbers as operands,
every reduction over one, several and all dimensions, the matmul and einsum shapes, and each of torch's
forms of max/min, std, norm and clamp."""

import torch
import torch.nn.functional as F

from manual_backprop.functional import ops

from cases import DT, Case, away_from_zero, leaf


def _t(*shape):
    return leaf(torch.randn(shape, dtype=DT))


def _shifted(by, *shape):
    return leaf(torch.randn(shape, dtype=DT) + by)


def _positive(*shape):
    """In [0.5, 2): away from the kinks and poles of log, sqrt, pow and div at 0."""
    return leaf(torch.rand(shape, dtype=DT) * 1.5 + 0.5)


def _nonzero(*shape):
    return leaf(away_from_zero(*shape) if shape else away_from_zero(1)[0])


def _distinct(*shape):
    """Values with no ties, so finite differences never swap which entry is the extremum."""
    ranks = torch.randperm(torch.Size(shape).numel()).to(DT).reshape(shape)
    return leaf(ranks * 0.5 + torch.rand(shape, dtype=DT) * 0.1)


def _signed_distinct(*shape):
    """Distinct |x| (no ties for an ∞-norm), with random signs, all away from 0."""
    ranks = torch.randperm(torch.Size(shape).numel()).to(DT).reshape(shape)
    signs = torch.randint(0, 2, shape).to(DT) * 2 - 1
    return leaf(signs * (ranks * 0.5 + 0.2 + torch.rand(shape, dtype=DT) * 0.1))


def _with_zeros(*positions):
    """A (3, 4) matrix holding exact zeros where told: prod is a polynomial, smooth even there."""
    def make():
        x = torch.rand(3, 4, dtype=DT) + 0.5
        for p in positions:
            x[p] = 0.0
        return (leaf(x),)
    return make


def _values(fn):
    """max/min along a dim return (values, indices); the table checks the values."""
    return lambda *args, **kwargs: fn(*args, **kwargs).values


def _sublist(einsum):
    """The sublist form of einsum, einsum(A, [0, 1], B, [1, 2], [0, 2])."""
    return lambda a, b: einsum(a, [0, 1], b, [1, 2], [0, 2])


def _list_form(einsum):
    return lambda equation, a, b: einsum(equation, [a, b])


EINSUM = [("matmul", "ij,jk->ik", [(3, 4), (4, 2)]), ("implicit", "ij,jk", [(3, 4), (4, 2)]),
          ("implicit-order", "ba,aB", [(2, 3), (3, 4)]), ("outer", "i,j", [(3,), (4,)]),
          ("trace", "ii", [(3, 3)]), ("diagonal", "ii->i", [(3, 3)]), ("sum-all", "ij->", [(2, 3)]),
          ("sum-rows", "ij->j", [(2, 3)]), ("transpose", "ij->ji", [(2, 3)]),
          ("batch-diagonal", "bii,bj->bij", [(2, 3, 3), (2, 4)]), ("three", "iij,jk,k->i", [(2, 2, 3), (3, 4), (4,)]),
          ("ellipsis-broadcast", "...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
          ("ellipsis-implicit", "i...,j", [(2, 3, 4), (5,)]), ("ellipsis-summed", "...ij->ij", [(2, 3, 4)]),
          ("ellipsis-diagonal", "...ii->...i", [(2, 3, 3)]), ("size-1-broadcast", "ij,j->i", [(2, 3), (1,)]),
          ("size-1-label", "i,i->i", [(1,), (3,)]), ("spaces", "i j , j k -> i k", [(3, 4), (4, 2)])]

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
    # -- maximum, minimum, max, min in torch's forms
    *[Case(f"ops-{name}-{tag}", mf, nf, lambda a=a, b=b: (_t(*a), _t(*b)))
      for name, mf, nf in [("maximum", ops.maximum, torch.maximum), ("minimum", ops.minimum, torch.minimum),
                           ("max-other", ops.max, torch.max), ("min-other", ops.min, torch.min)]
      for tag, a, b in [("same", (3, 4), (3, 4)), ("broadcast", (2, 1, 4), (3, 1))]],
    *[Case(f"ops-{name}-all", mf, nf, lambda: (_distinct(2, 3, 4),))
      for name, mf, nf in [("max", ops.max, torch.max), ("min", ops.min, torch.min)]],
    *[Case(f"ops-{name}-{tag}", _values(mf), _values(nf), lambda args=args: (_distinct(2, 3, 4), *args), kw)
      for name, mf, nf in [("max", ops.max, torch.max), ("min", ops.min, torch.min)]
      for tag, args, kw in [("dim", (1,), {}), ("dim-keepdim", (-1, True), {}), ("dim-kw", (), {"dim": 0})]],
    Case("ops-max-scalar-dim", _values(ops.max), _values(torch.max), lambda: (_t(), 0)),
    # -- elementwise
    *[Case(f"ops-{name}", getattr(ops, name), getattr(torch, name), lambda make=make: (make(3, 4),))
      for name, make in [("rsqrt", _positive), ("square", _t), ("sin", _t), ("cos", _t), ("log1p", _positive),
                         ("expm1", _t), ("log2", _positive), ("sign", _nonzero), ("erf", _t)]],
    *[Case(f"ops-{name}-{tag}", getattr(ops, name), getattr(torch, name), lambda: (_t(3, 4), _t(4), _t(3, 1)), kw)
      for name in ("addcmul", "addcdiv") for tag, kw in [("default", {}), ("value", {"value": -0.5})]],
    *[Case(f"ops-clamp-tensors-{tag}", ops.clamp, torch.clamp, make)
      for tag, make in [("both", lambda: (_t(3, 4), _shifted(-0.5, 4), _shifted(0.5, 3, 1))),
                        ("crossed", lambda: (_t(3, 4), _shifted(1.0, 3, 4), _shifted(-1.0, 3, 4))),
                        ("min", lambda: (_t(3, 4), _t(4), None)), ("max", lambda: (_t(3, 4), None, _t(2, 1, 4))),
                        ("constant-bounds", lambda: (_t(3, 4), torch.zeros(4, dtype=DT), torch.ones(4, dtype=DT)))]],
    *[Case(f"ops-{name}-{tag}", getattr(ops, name), getattr(torch, name), make)
      for name in ("clamp_min", "clamp_max")
      for tag, make in [("number", lambda: (_nonzero(3, 4), 0.0)), ("tensor", lambda: (_t(3, 4), _t(4)))]],
    # -- reductions
    *[Case(f"ops-std-{tag}", ops.std, torch.std, lambda args=args: (_t(2, 3, 4), *args), kw)
      for tag, args, kw in [("all", (), {}), ("dim", (1,), {}),
                            ("dims-keepdim-biased", ((0, 2),), {"keepdim": True, "correction": 0}),
                            ("unbiased-positional", (1, False, True), {}), ("unbiased-only", (False,), {}),
                            ("unbiased-kw", (), {"dim": 2, "unbiased": True})]],
    Case("ops-var-unbiased-positional", ops.var, torch.var, lambda: (_t(2, 3, 4), 1, False, True)),
    *[Case(f"ops-logsumexp-{tag}", ops.logsumexp, torch.logsumexp, lambda args=args: (_t(2, 3, 4), *args))
      for tag, args in [("dim", (1,)), ("dims-keepdim", ((0, 2), True)), ("last", (-1,))]],
    *[Case(f"ops-prod-{tag}", ops.prod, torch.prod, make, kw)
      for tag, make, kw in [("all", lambda: (_positive(3, 4),), {}), ("dim", lambda: (_t(3, 4), 1), {}),
                            ("dim-keepdim", lambda: (_t(3, 4), 0, True), {}),
                            ("one-zero", _with_zeros((1, 2)), {}),
                            ("zeros-in-rows", _with_zeros((0, 1), (1, 1), (1, 3)), {"dim": 1}),
                            ("zeros-in-columns", _with_zeros((0, 1), (2, 1), (1, 3)), {"dim": 0})]],
    *[Case(f"ops-cumsum-{tag}", ops.cumsum, torch.cumsum, lambda args=args: (_t(2, 3, 4), *args))
      for tag, args in [("dim0", (0,)), ("last", (-1,))]],
    Case("ops-cumsum-scalar", ops.cumsum, torch.cumsum, lambda: (_t(), 0)),
    *[Case(f"ops-vector_norm-{tag}", ops.vector_norm, torch.linalg.vector_norm,
           lambda args=args: (_signed_distinct(3, 4), *args), kw)
      for tag, args, kw in [("2-all", (), {}), ("1-dim", (1, 1), {}), ("3-dims-keepdim", (3, (0, 1), True), {}),
                            ("inf", (float("inf"), 1), {}), ("-inf", (-float("inf"), 0), {}), ("0.5", (0.5, 1), {}),
                            ("1.5", (1.5, 0), {}), ("-1", (-1, 1), {}),
                            ("kw", (), {"ord": 4, "dim": -1, "keepdim": True})]],
    *[Case(f"ops-norm-{tag}", ops.norm, torch.norm, lambda args=args: (_signed_distinct(3, 4), *args), kw)
      for tag, args, kw in [("fro", (), {}), ("fro-dim", ("fro", 1), {}), ("p-dim-keepdim", (3, 1, True), {}),
                            ("none", (None,), {}), ("kw", (), {"p": 1, "dim": 0})]],
    *[Case(f"ops-normalize-{tag}", ops.normalize, F.normalize, lambda: (_signed_distinct(3, 4),), kw)
      for tag, kw in [("default", {}), ("p1-dim0", {"p": 1.0, "dim": 0}), ("large-eps", {"eps": 2.0})]],
    *[Case(f"ops-cosine_similarity-{tag}", ops.cosine_similarity, F.cosine_similarity,
           lambda a=a, b=b: (_t(*a), _t(*b)), kw)
      for tag, a, b, kw in [("default", (3, 4), (3, 4), {}), ("broadcast", (1, 4), (3, 4), {"dim": -1}),
                            ("dim0", (3, 4), (3, 1), {"dim": 0})]],
    # -- products
    Case("ops-baddbmm", ops.baddbmm, torch.baddbmm, lambda: (_t(2, 3, 2), _t(2, 3, 4), _t(2, 4, 2))),
    Case("ops-baddbmm-broadcast-beta-alpha", ops.baddbmm, torch.baddbmm, lambda: (_t(3, 1), _t(2, 3, 4), _t(2, 4, 2)),
         {"beta": 0.5, "alpha": -2.0}),
    *[Case(f"ops-einsum-{tag}", ops.einsum, torch.einsum, lambda eq=eq, shapes=shapes: (eq, *[_t(*s) for s in shapes]))
      for tag, eq, shapes in EINSUM],
    Case("ops-einsum-list", _list_form(ops.einsum), _list_form(torch.einsum), lambda: ("bij,bjk->bik", _t(2, 3, 4),
                                                                                      _t(2, 4, 2))),
    Case("ops-einsum-sublist", _sublist(ops.einsum), _sublist(torch.einsum), lambda: (_t(3, 4), _t(4, 2))),
]

MODULE_CASES = []
