"""Pooling rows of the shared tables: max, average, adaptive average and adaptive max pooling in
1d/2d/3d, with padding, strides, dilation and ceil_mode at the borders, batched and unbatched.

Max pooling's inputs are a scaled random permutation: no two values tie, and no finite-difference
step of gradcheck can change which input wins a window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import manual_backprop.nn.pooling  # noqa: F401  (registers the drop-in modules with convert)
from manual_backprop.functional import pooling as MP

from cases import DT, Case, ModuleCase, leaf


def distinct(*shape):
    """Values 0.1 apart, shuffled: every window has one clear maximum."""
    n = torch.Size(shape).numel()
    return torch.randperm(n, dtype=DT).reshape(shape) * 0.1 - 0.05 * n


def _distinct(*shape):
    return lambda: (leaf(distinct(*shape)),)


def _randn(*shape):
    return lambda: (leaf(torch.randn(*shape, dtype=DT)),)


def _first(fn):
    """``fn(..., return_indices=True)``'s output alone (the indices are checked in test_pooling.py)."""
    return lambda x, **kw: fn(x, return_indices=True, **kw)[0]


FUNCTION_CASES: list[Case] = [
    # max pooling
    Case("pooling-max_pool1d-pad-dilation", MP.max_pool1d, F.max_pool1d, _distinct(2, 1, 9),
         {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2}),
    Case("pooling-max_pool1d-unbatched-ceil", MP.max_pool1d, F.max_pool1d, _distinct(2, 6),
         {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}),
    Case("pooling-max_pool2d", MP.max_pool2d, F.max_pool2d, _distinct(1, 2, 5, 4),
         {"kernel_size": 3, "stride": 2, "padding": 1}),
    Case("pooling-max_pool2d-overlap", MP.max_pool2d, F.max_pool2d, _distinct(1, 1, 4, 5),
         {"kernel_size": 3, "stride": 1}),
    Case("pooling-max_pool2d-ceil-dilation", MP.max_pool2d, F.max_pool2d, _distinct(1, 1, 6, 5),
         {"kernel_size": (2, 3), "stride": (2, 1), "padding": (1, 0), "dilation": (2, 1), "ceil_mode": True}),
    Case("pooling-max_pool2d-unbatched", MP.max_pool2d, F.max_pool2d, _distinct(2, 4, 3), {"kernel_size": 2}),
    Case("pooling-max_pool2d-indices", _first(MP.max_pool2d), _first(F.max_pool2d), _distinct(1, 1, 5, 5),
         {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
    Case("pooling-max_pool3d", MP.max_pool3d, F.max_pool3d, _distinct(1, 1, 3, 5, 3),
         {"kernel_size": 2, "stride": (1, 2, 1), "padding": 1, "ceil_mode": True}),
    Case("pooling-max_pool3d-unbatched-dilation", MP.max_pool3d, F.max_pool3d, _distinct(1, 4, 3, 4),
         {"kernel_size": 2, "stride": 1, "dilation": (2, 1, 2)}),
    # average pooling: the divisor at the borders under every rule
    Case("pooling-avg_pool1d", MP.avg_pool1d, F.avg_pool1d, _randn(2, 2, 7), {"kernel_size": 3}),
    *[Case(f"pooling-avg_pool1d-pad-ceil-include{include}", MP.avg_pool1d, F.avg_pool1d, _randn(2, 2, 8),
           {"kernel_size": 4, "stride": 3, "padding": 2, "ceil_mode": True, "count_include_pad": include})
      for include in (True, False)],
    Case("pooling-avg_pool1d-unbatched", MP.avg_pool1d, F.avg_pool1d, _randn(2, 6),
         {"kernel_size": 2, "stride": 1, "padding": 1}),
    *[Case(f"pooling-avg_pool2d-pad-ceil-include{include}", MP.avg_pool2d, F.avg_pool2d, _randn(1, 1, 5, 6),
           {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": include})
      for include in (True, False)],
    Case("pooling-avg_pool2d-divisor-override", MP.avg_pool2d, F.avg_pool2d, _randn(1, 1, 5, 5),
         {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True, "divisor_override": 3}),
    Case("pooling-avg_pool2d-rectangular", MP.avg_pool2d, F.avg_pool2d, _randn(1, 1, 6, 5),
         {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)}),
    Case("pooling-avg_pool2d-unbatched", MP.avg_pool2d, F.avg_pool2d, _randn(2, 4, 4), {"kernel_size": 2}),
    *[Case(f"pooling-avg_pool3d-pad-ceil-include{include}", MP.avg_pool3d, F.avg_pool3d, _randn(1, 1, 3, 5, 3),
           {"kernel_size": 2, "stride": (2, 2, 1), "padding": 1, "ceil_mode": True, "count_include_pad": include})
      for include in (True, False)],
    Case("pooling-avg_pool3d-divisor-override-unbatched", MP.avg_pool3d, F.avg_pool3d, _randn(1, 3, 4, 4),
         {"kernel_size": (1, 2, 3), "stride": 1, "divisor_override": -2}),
    # adaptive average pooling: windows [⌊o·L/n⌋, ⌈(o+1)·L/n⌉), overlapping where n does not divide L
    Case("pooling-adaptive_avg_pool1d", MP.adaptive_avg_pool1d, F.adaptive_avg_pool1d, _randn(2, 1, 7),
         {"output_size": 3}),
    Case("pooling-adaptive_avg_pool1d-grow-unbatched", MP.adaptive_avg_pool1d, F.adaptive_avg_pool1d,
         _randn(2, 4), {"output_size": 7}),
    Case("pooling-adaptive_avg_pool2d", MP.adaptive_avg_pool2d, F.adaptive_avg_pool2d, _randn(1, 1, 5, 7),
         {"output_size": (3, None)}),
    Case("pooling-adaptive_avg_pool2d-unbatched", MP.adaptive_avg_pool2d, F.adaptive_avg_pool2d, _randn(2, 4, 4),
         {"output_size": 2}),
    Case("pooling-adaptive_avg_pool3d", MP.adaptive_avg_pool3d, F.adaptive_avg_pool3d, _randn(1, 1, 5, 3, 3),
         {"output_size": (2, 4, 1)}),
    # adaptive max pooling
    Case("pooling-adaptive_max_pool1d", MP.adaptive_max_pool1d, F.adaptive_max_pool1d, _distinct(2, 1, 7),
         {"output_size": 3}),
    Case("pooling-adaptive_max_pool1d-grow-unbatched", MP.adaptive_max_pool1d, F.adaptive_max_pool1d,
         _distinct(2, 4), {"output_size": 6}),
    Case("pooling-adaptive_max_pool2d", MP.adaptive_max_pool2d, F.adaptive_max_pool2d, _distinct(1, 1, 5, 7),
         {"output_size": (None, 3)}),
    Case("pooling-adaptive_max_pool2d-indices", _first(MP.adaptive_max_pool2d), _first(F.adaptive_max_pool2d),
         _distinct(1, 1, 5, 5), {"output_size": 3}),
    Case("pooling-adaptive_max_pool3d-unbatched", MP.adaptive_max_pool3d, F.adaptive_max_pool3d,
         _distinct(1, 3, 4, 3), {"output_size": (2, 3, 2)}),
]


MODULE_CASES: list[ModuleCase] = [
    ModuleCase("pooling-MaxPool1d", lambda: torch.nn.MaxPool1d(3, 2, padding=1, ceil_mode=True),
               lambda: (leaf(distinct(2, 3, 8)),)),
    ModuleCase("pooling-MaxPool2d-indices", lambda: torch.nn.MaxPool2d(3, 2, padding=1, return_indices=True),
               lambda: (leaf(distinct(2, 2, 5, 5)),)),
    ModuleCase("pooling-MaxPool3d", lambda: torch.nn.MaxPool3d((2, 2, 1), dilation=(1, 2, 1)),
               lambda: (leaf(distinct(1, 2, 4, 5, 3)),)),
    ModuleCase("pooling-AvgPool1d", lambda: torch.nn.AvgPool1d(3, 2, 1, True, False),
               lambda: (leaf(torch.randn(2, 3, 8, dtype=DT)),)),
    ModuleCase("pooling-AvgPool2d", lambda: torch.nn.AvgPool2d(3, 2, padding=1, ceil_mode=True),
               lambda: (leaf(torch.randn(2, 2, 6, 5, dtype=DT)),)),
    ModuleCase("pooling-AvgPool2d-divisor", lambda: torch.nn.AvgPool2d(2, 1, divisor_override=3),
               lambda: (leaf(torch.randn(3, 4, 4, dtype=DT)),)),
    ModuleCase("pooling-AvgPool3d", lambda: torch.nn.AvgPool3d(2, (1, 2, 2), (1, 0, 1), False, False),
               lambda: (leaf(torch.randn(1, 2, 3, 4, 5, dtype=DT)),)),
    ModuleCase("pooling-AdaptiveAvgPool1d", lambda: torch.nn.AdaptiveAvgPool1d(3),
               lambda: (leaf(torch.randn(2, 3, 8, dtype=DT)),)),
    ModuleCase("pooling-AdaptiveAvgPool2d", lambda: torch.nn.AdaptiveAvgPool2d((None, 3)),
               lambda: (leaf(torch.randn(2, 2, 5, 7, dtype=DT)),)),
    ModuleCase("pooling-AdaptiveAvgPool3d", lambda: torch.nn.AdaptiveAvgPool3d(2),
               lambda: (leaf(torch.randn(1, 2, 3, 5, 4, dtype=DT)),)),
    ModuleCase("pooling-AdaptiveMaxPool1d-indices", lambda: torch.nn.AdaptiveMaxPool1d(3, return_indices=True),
               lambda: (leaf(distinct(2, 3, 8)),)),
    ModuleCase("pooling-AdaptiveMaxPool2d", lambda: torch.nn.AdaptiveMaxPool2d((3, None)),
               lambda: (leaf(distinct(2, 2, 5, 7)),)),
    ModuleCase("pooling-AdaptiveMaxPool3d", lambda: torch.nn.AdaptiveMaxPool3d((2, 1, 3)),
               lambda: (leaf(distinct(1, 2, 3, 5, 4)),)),
]
