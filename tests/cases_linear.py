"""Rows for the rest of the linear family (Linear itself is in cases.py)."""

import torch
import torch.nn.functional as F

import manual_backprop.functional as MF
import manual_backprop.functional.linear  # noqa: F401
from manual_backprop.functional.fused import LinearReLU, LinearSigmoid, LinearTanh, linear_then
from manual_backprop.functional.linear import flatten, unflatten

from cases import DT, Case, ModuleCase, _linear, away_from_zero, leaf


def _bilinear(batch, bias=True):
    return lambda: (leaf(torch.randn(*batch, 3, dtype=DT)), leaf(torch.randn(*batch, 2, dtype=DT)),
                    leaf(torch.randn(4, 3, 2, dtype=DT)), leaf(torch.randn(4, dtype=DT)) if bias else None)


FUNCTION_CASES = [
    Case("linear-bilinear-2d", MF.bilinear, F.bilinear, _bilinear((5,))),
    Case("linear-bilinear-3d-no-bias", MF.bilinear, F.bilinear, _bilinear((2, 3), bias=False)),
]

FUNCTION_CASES += [
    Case("linear-flatten", flatten, torch.flatten, lambda: (leaf(torch.randn(2, 3, 4, dtype=DT)),)),
    Case("linear-flatten-middle", flatten, torch.flatten, lambda: (leaf(torch.randn(2, 3, 4, 5, dtype=DT)),),
         {"start_dim": 1, "end_dim": 2}),
    Case("linear-unflatten", unflatten, torch.unflatten, lambda: (leaf(torch.randn(2, 12, dtype=DT)),),
         {"dim": 1, "sizes": (3, -1)}),
]


def _fused(function):
    return lambda x, w, b: linear_then(x, w, b, function)


# a Linear and the activation after it as one Function (what nn.Sequential runs; functional/fused.py)
FUNCTION_CASES += [
    Case("linear-then-sigmoid", _fused(LinearSigmoid), lambda x, w, b: torch.sigmoid(F.linear(x, w, b)),
         _linear((4,))),
    Case("linear-then-tanh-3d-no-bias", _fused(LinearTanh), lambda x, w, b: torch.tanh(F.linear(x, w, b)),
         lambda: (leaf(torch.randn(2, 4, 3, dtype=DT)), leaf(torch.randn(2, 3, dtype=DT)), None)),
    Case("linear-then-relu", _fused(LinearReLU), lambda x, w, b: torch.relu(F.linear(x, w, b)),
         # W picks x's first two features, so each z = x_j, at least 0.1 from ReLU's kink at 0
         lambda: (leaf(away_from_zero(4, 3)), leaf(torch.eye(2, 3, dtype=DT)), leaf(torch.zeros(2, dtype=DT)))),
]

MODULE_CASES = [
    ModuleCase("linear-Sequential-fused-pairs",
               lambda: torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 5),
                                           torch.nn.Tanh(), torch.nn.Linear(5, 3), torch.nn.ReLU(inplace=True),
                                           torch.nn.Linear(3, 2)),
               lambda: (leaf(torch.randn(6, 4, dtype=DT)),)),
    ModuleCase("linear-Flatten", torch.nn.Flatten, lambda: (leaf(torch.randn(2, 3, 2, dtype=DT)),)),
    ModuleCase("linear-Unflatten", lambda: torch.nn.Unflatten(1, (2, 3)), lambda: (leaf(torch.randn(4, 6, dtype=DT)),)),
    ModuleCase("linear-Flatten-then-inplace-ReLU",
               lambda: torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Flatten(0), torch.nn.ReLU(inplace=True)),
               lambda: (leaf(torch.randn(2, 3, dtype=DT)),)),
    ModuleCase("linear-Bilinear", lambda: torch.nn.Bilinear(3, 2, 4),
               lambda: (leaf(torch.randn(5, 3, dtype=DT)), leaf(torch.randn(5, 2, dtype=DT)))),
]
