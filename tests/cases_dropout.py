"""Dropout rows of the case table.

Only deterministic calls can go through gradcheck, parity and vmap: p = 1 in training (every unit
dropped, no random draw) and the Function itself with a fixed mask m (and shift β), against the
same product written with native ops. Training with 0 < p < 1 (random masks), evaluation mode (the
input itself comes back, a leaf with no graph to audit) and in-place calls are checked in
tests/test_dropout.py. The module rows run in training mode: the generic test seeds torch before
each forward, so the converted and native layers draw the same mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import manual_backprop.nn.dropout  # noqa: F401  (registers the drop-in modules)
from manual_backprop.functional.dropout import (
    Dropout,
    alpha_dropout,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    feature_alpha_dropout,
)

from cases import DT, Case, ModuleCase, leaf


def _x(*shape):
    return lambda: (leaf(torch.randn(*shape, dtype=DT)),)


def _mask(*shape, p=0.4):
    return torch.empty(*shape, dtype=DT).bernoulli_(1 - p) / (1 - p)


def _fixed(z_shape, m_shape, mask_grad=False, shift=False):
    def make():
        m = _mask(*m_shape)
        args = (leaf(torch.randn(*z_shape, dtype=DT)), leaf(m) if mask_grad else m)
        return args + ((leaf(torch.randn(*m_shape, dtype=DT)),) if shift else ())
    return make


def _product(z, m, beta=None):
    return z * m if beta is None else z * m + beta


def _function(z, m, beta=None):
    return Dropout.call(z, m, beta)


FUNCTION_CASES = [
    Case("dropout-p1", dropout, F.dropout, _x(3, 4), {"p": 1.0}),
    Case("dropout-alpha-p1", alpha_dropout, F.alpha_dropout, _x(3, 4), {"p": 1.0, "training": True}),
    Case("dropout-feature-alpha-p1", feature_alpha_dropout, F.feature_alpha_dropout, _x(2, 3, 2),
         {"p": 1.0, "training": True}),
    Case("dropout-1d-p1-unbatched", dropout1d, F.dropout1d, _x(3, 4), {"p": 1.0}),
    Case("dropout-2d-p1", dropout2d, F.dropout2d, _x(2, 3, 2, 2), {"p": 1.0}),
    Case("dropout-3d-p1", dropout3d, F.dropout3d, _x(2, 2, 2, 1, 2), {"p": 1.0}),
    Case("dropout-function-fixed-mask", _function, _product, _fixed((3, 4), (3, 4))),
    Case("dropout-function-channel-mask", _function, _product, _fixed((2, 3, 2, 2), (2, 3, 1, 1))),
    Case("dropout-function-mask-and-shift-grads", _function, _product,
         _fixed((2, 3, 2), (2, 3, 1), mask_grad=True, shift=True)),
]


def _seq(*layers):
    return lambda: torch.nn.Sequential(torch.nn.Linear(3, 4), *layers)


MODULE_CASES = [
    ModuleCase("dropout-Dropout", lambda: torch.nn.Dropout(0.5), _x(4, 5)),
    ModuleCase("dropout-Dropout1d", lambda: torch.nn.Dropout1d(0.5), _x(2, 3, 4)),
    ModuleCase("dropout-Dropout1d-unbatched", lambda: torch.nn.Dropout1d(0.5), _x(3, 4)),
    ModuleCase("dropout-Dropout2d", lambda: torch.nn.Dropout2d(0.5), _x(2, 3, 2, 2)),
    ModuleCase("dropout-Dropout3d", lambda: torch.nn.Dropout3d(0.5), _x(2, 3, 2, 1, 2)),
    ModuleCase("dropout-Dropout3d-unbatched", lambda: torch.nn.Dropout3d(0.5), _x(3, 2, 1, 2)),
    ModuleCase("dropout-AlphaDropout", lambda: torch.nn.AlphaDropout(0.3), _x(4, 5)),
    ModuleCase("dropout-FeatureAlphaDropout", lambda: torch.nn.FeatureAlphaDropout(0.4), _x(2, 3, 2, 2)),
    ModuleCase("dropout-Dropout-inplace-after-Linear", _seq(torch.nn.Dropout(0.5, inplace=True)), _x(5, 3)),
    ModuleCase("dropout-Dropout-eval-after-Linear", _seq(torch.nn.Dropout(0.5)), _x(5, 3), train=False),
]
