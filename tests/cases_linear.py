"""Rows for the rest of the linear family (Linear itself is in cases.py)."""

import torch
import torch.nn.functional as F

import manual_backprop.functional as MF
import manual_backprop.functional.linear  # noqa: F401
from manual_backprop.functional.linear import flatten, unflatten

from cases import DT, Case, ModuleCase, leaf


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

MODULE_CASES = [
    ModuleCase("linear-Flatten", torch.nn.Flatten, lambda: (leaf(torch.randn(2, 3, 2, dtype=DT)),)),
    ModuleCase("linear-Unflatten", lambda: torch.nn.Unflatten(1, (2, 3)), lambda: (leaf(torch.randn(4, 6, dtype=DT)),)),
    ModuleCase("linear-Flatten-then-inplace-ReLU",
               lambda: torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Flatten(0), torch.nn.ReLU(inplace=True)),
               lambda: (leaf(torch.randn(2, 3, dtype=DT)),)),
    ModuleCase("linear-Bilinear", lambda: torch.nn.Bilinear(3, 2, 4),
               lambda: (leaf(torch.randn(5, 3, dtype=DT)), leaf(torch.randn(5, 2, dtype=DT)))),
]
