"""Rows for the rest of the linear family (Linear itself is in cases.py)."""

import torch
import torch.nn.functional as F

import manual_backprop.functional as MF

from cases import DT, Case, ModuleCase, leaf


def _bilinear(batch, bias=True):
    return lambda: (leaf(torch.randn(*batch, 3, dtype=DT)), leaf(torch.randn(*batch, 2, dtype=DT)),
                    leaf(torch.randn(4, 3, 2, dtype=DT)), leaf(torch.randn(4, dtype=DT)) if bias else None)


FUNCTION_CASES = [
    Case("linear-bilinear-2d", MF.bilinear, F.bilinear, _bilinear((5,))),
    Case("linear-bilinear-3d-no-bias", MF.bilinear, F.bilinear, _bilinear((2, 3), bias=False)),
]

MODULE_CASES = [
    ModuleCase("linear-Bilinear", lambda: torch.nn.Bilinear(3, 2, 4),
               lambda: (leaf(torch.randn(5, 3, dtype=DT)), leaf(torch.randn(5, 2, dtype=DT)))),
]
