"""Rows for the rest of the linear family (Linear itself is in cases.py)."""

import itertools

import torch
import torch.nn.functional as F

import manual_backprop.functional as MF
import manual_backprop.functional.linear  # noqa: F401
from manual_backprop.functional.fused import linear_chain
from manual_backprop.functional.linear import flatten, unflatten

from cases import DT, Case, ModuleCase, away_from_zero, leaf


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


def _chain(kinds, batch=(4,), widths=(3, 4, 2), bias=True):
    """A LinearChain's arguments: an input and W, b for each layer (widths[0] in, widths[-1] out)."""
    def make():
        params = []
        for n_in, n_out in itertools.pairwise(widths):
            params += [leaf(torch.randn(n_out, n_in, dtype=DT)), leaf(torch.randn(n_out, dtype=DT)) if bias else None]
        return (leaf(torch.randn(*batch, widths[0], dtype=DT)), tuple(kinds), *params)
    return make


def _chain_native(x, kinds, *params):
    for layer, kind in enumerate(kinds):
        x = F.linear(x, params[2 * layer], params[2 * layer + 1])
        x = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, None: lambda z: z}[kind](x)
    return x


def _relu_chain():
    """One Linear + ReLU whose W picks x's first two features, so each z = x_j is at least 0.1 from the kink."""
    return (leaf(away_from_zero(4, 3)), ("relu",), leaf(torch.eye(2, 3, dtype=DT)), leaf(torch.zeros(2, dtype=DT)))


# Linear layers and their activations as one Function (what nn.Sequential runs; functional/fused.py)
FUNCTION_CASES += [
    Case("linear-chain-sigmoid-tanh", linear_chain, _chain_native, _chain(("sigmoid", "tanh"))),
    Case("linear-chain-tanh-none-3d-no-bias", linear_chain, _chain_native,
         _chain(("tanh", None, "sigmoid"), batch=(2, 3), widths=(3, 4, 4, 2), bias=False)),
    Case("linear-chain-one-relu", linear_chain, _chain_native, _relu_chain),
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
