"""One table of layer configurations: gradcheck, gradgradcheck, parity with torch, vmap and the
audit all read it, so a new layer is one more row.

``FUNCTION_CASES`` calls one functional entry; ``MODULE_CASES`` builds one native module and
converts it. Each layer family keeps its rows in ``tests/cases_<family>.py`` (lists named
``FUNCTION_CASES`` and ``MODULE_CASES``); they are gathered here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import manual_backprop.functional as MF
from manual_backprop.recording import Probe

DT = torch.float64


def away_from_zero(*shape):
    """Values with |x| ≥ 0.1, so finite differences never straddle a kink at 0."""
    x = torch.randn(*shape, dtype=DT)
    return x + 0.1 * torch.sign(x)


def leaf(t):
    return t.detach().requires_grad_(True)


@dataclass
class Case:
    """One call of a Function: ``manual(*args, **kwargs)`` vs ``native(*args, **kwargs)``."""

    id: str
    manual: Callable
    native: Callable
    make_args: Callable[[], tuple]
    kwargs: dict = field(default_factory=dict)
    rtol: float = 1e-10
    """for the comparison with torch: looser only where torch's own kernel is less exact (say why)"""

    def args(self):
        return self.make_args()


def _linear(batch, n_in=3, n_out=2, bias=True):
    return lambda: (leaf(torch.randn(*batch, n_in, dtype=DT)), leaf(torch.randn(n_out, n_in, dtype=DT)),
                    leaf(torch.randn(n_out, dtype=DT)) if bias else None)


def _inplace(fn):
    """An in-place call on a copy, so the leaf the checks perturb is never overwritten."""
    return lambda x, **kw: fn(x * 1, inplace=True, **kw)


def _ce(shape, targets="index", weight=False, **kwargs):
    def make():
        z = leaf(torch.randn(*shape, dtype=DT))
        c_dim = 1 if len(shape) >= 2 else 0
        n_classes = shape[c_dim]
        if targets == "index":
            t = torch.randint(0, n_classes, shape[:c_dim] + shape[c_dim + 1:])
            if "ignore_index" in kwargs and t.numel() > 1:
                t.view(-1)[0] = kwargs["ignore_index"]
        else:
            t = leaf(torch.softmax(torch.randn(*shape, dtype=DT), c_dim))
        w = torch.rand(n_classes, dtype=DT) + 0.5 if weight else None
        return z, t, w
    return make


FUNCTION_CASES: list[Case] = [
    Case("linear-2d", MF.linear, F.linear, _linear((4,))),
    Case("linear-unbatched", MF.linear, F.linear, _linear(())),
    Case("linear-3d-batch", MF.linear, F.linear, _linear((2, 3), 4, 5)),
    Case("linear-no-bias", MF.linear, F.linear, _linear((4,), bias=False)),
    *[Case(f"{name}-{len(s)}d", mf, nf, (lambda s=s: (leaf(away_from_zero(*s)),)))
      for name, mf, nf in [("sigmoid", MF.sigmoid, torch.sigmoid), ("tanh", MF.tanh, torch.tanh),
                           ("relu", MF.relu, F.relu)]
      for s in [(5,), (3, 4), (2, 3, 4)]],
    Case("relu-inplace", _inplace(MF.relu), _inplace(F.relu), lambda: (leaf(away_from_zero(3, 4)),)),
    *[Case(f"{name}-dim{d}", mf, nf, lambda: (leaf(torch.randn(2, 3, 4, dtype=DT)),), {"dim": d})
      for name, mf, nf in [("softmax", MF.softmax, F.softmax), ("log_softmax", MF.log_softmax, F.log_softmax)]
      for d in (0, 1, -1)],
    *[Case(f"mse-{r}", MF.mse_loss, F.mse_loss,
           lambda: (leaf(torch.randn(4, 3, dtype=DT)), leaf(torch.randn(4, 3, dtype=DT))), {"reduction": r})
      for r in ("mean", "sum", "none")],
    *[Case(f"mse-weighted-{r}", MF.mse_loss, F.mse_loss,
           lambda: (leaf(torch.randn(4, 3, dtype=DT)), torch.randn(4, 3, dtype=DT),
                    leaf(torch.rand(4, 3, dtype=DT) + 0.5)),
           {"reduction": r})
      for r in ("mean", "sum", "none")],
    *[Case(f"ce-{r}", MF.cross_entropy, F.cross_entropy, _ce((5, 4)), {"reduction": r})
      for r in ("mean", "sum", "none")],
    Case("ce-unbatched", MF.cross_entropy, F.cross_entropy, _ce((4,))),
    Case("ce-spatial", MF.cross_entropy, F.cross_entropy, _ce((2, 4, 3, 2))),
    *[Case(f"ce-weight-ignore-smooth-{r}", MF.cross_entropy, F.cross_entropy, _ce((6, 4), weight=True, ignore_index=1),
           {"reduction": r, "ignore_index": 1, "label_smoothing": 0.2})
      for r in ("mean", "sum", "none")],
    Case("ce-ignore-default", MF.cross_entropy, F.cross_entropy, _ce((5, 3), ignore_index=-100)),
    *[Case(f"ce-probabilities-{r}", MF.cross_entropy, F.cross_entropy, _ce((5, 4), targets="prob", weight=True),
           {"reduction": r, "label_smoothing": 0.1})
      for r in ("mean", "none")],
    Case("ce-probabilities-spatial", MF.cross_entropy, F.cross_entropy, _ce((2, 3, 4), targets="prob")),
    Case("probe", Probe.call, torch.add,
         lambda: (leaf(torch.randn(3, 4, dtype=DT)), leaf(torch.zeros(3, 4, dtype=DT)))),
]


@dataclass
class ModuleCase:
    """One native module (``make()``) and its inputs (``inputs()``, float64, leaves needing grad).

    Converted and native copies must agree on outputs, input and parameter gradients and buffers
    (float64 within 1e-10 relative; float32 within 1e-5), and the converted one passes the audit.
    """

    id: str
    make: Callable[[], torch.nn.Module]
    inputs: Callable[[], tuple]
    train: bool = True
    rtol: float = 1e-10
    """float64 tolerance against torch: looser only where torch's own kernel is less exact (say why)"""


MODULE_CASES: list[ModuleCase] = [
    ModuleCase("Linear", lambda: torch.nn.Linear(4, 3), lambda: (leaf(torch.randn(5, 4, dtype=DT)),)),
    ModuleCase("Linear-3d-no-bias", lambda: torch.nn.Linear(4, 3, bias=False),
               lambda: (leaf(torch.randn(2, 5, 4, dtype=DT)),)),
    ModuleCase("Sigmoid", torch.nn.Sigmoid, lambda: (leaf(torch.randn(3, 4, dtype=DT)),)),
    ModuleCase("Tanh", torch.nn.Tanh, lambda: (leaf(torch.randn(3, 4, dtype=DT)),)),
    ModuleCase("ReLU", torch.nn.ReLU, lambda: (leaf(away_from_zero(3, 4)),)),
    ModuleCase("Softmax", lambda: torch.nn.Softmax(dim=-1), lambda: (leaf(torch.randn(3, 4, dtype=DT)),)),
    ModuleCase("LogSoftmax", lambda: torch.nn.LogSoftmax(dim=0), lambda: (leaf(torch.randn(3, 4, dtype=DT)),)),
    ModuleCase("MSELoss-sum", lambda: torch.nn.MSELoss(reduction="sum"),
               lambda: (leaf(torch.randn(3, 4, dtype=DT)), torch.randn(3, 4, dtype=DT))),
    ModuleCase("CrossEntropyLoss-weighted", lambda: torch.nn.CrossEntropyLoss(torch.rand(4, dtype=DT) + 0.5,
                                                                              label_smoothing=0.1),
               lambda: (leaf(torch.randn(5, 4, dtype=DT)), torch.randint(0, 4, (5,)))),
]


def _gather_family_tables() -> None:
    """Every tests/cases_<family>.py; MBP_CASE_FAMILIES=conv,pooling gathers only those (for
    working on one family; CI gathers all)."""
    only = {f for f in os.environ.get("MBP_CASE_FAMILIES", "").split(",") if f}
    for path in sorted(Path(__file__).parent.glob("cases_*.py")):
        if only and path.stem.removeprefix("cases_") not in only:
            continue
        family = importlib.import_module(path.stem)
        FUNCTION_CASES.extend(getattr(family, "FUNCTION_CASES", []))
        MODULE_CASES.extend(getattr(family, "MODULE_CASES", []))


_gather_family_tables()


def call(fn, args, kwargs):
    """Loss functions take their third argument (weight) by keyword."""
    if len(args) == 3 and fn in (MF.mse_loss, F.mse_loss, MF.cross_entropy, F.cross_entropy):
        return fn(args[0], args[1], weight=args[2], **kwargs)
    return fn(*args, **kwargs)


# -- models: Linear with each activation, each loss ------------------------------------------------
ACTIVATIONS = {
    "sigmoid": lambda: torch.nn.Sigmoid(),
    "tanh": lambda: torch.nn.Tanh(),
    "relu": lambda: torch.nn.ReLU(),
    "relu-inplace": lambda: torch.nn.ReLU(inplace=True),
    "softmax": lambda: torch.nn.Softmax(dim=1),
    "log_softmax": lambda: torch.nn.LogSoftmax(dim=1),
}
LOSSES = {
    "mse": (lambda: torch.nn.MSELoss(), lambda n, c: torch.randn(n, c, dtype=DT)),
    "cross_entropy": (lambda: torch.nn.CrossEntropyLoss(), lambda n, c: torch.randint(0, c, (n,))),
}
MODEL_CASES = [(a, loss) for a in ACTIVATIONS for loss in LOSSES]


def native_model(activation: str) -> torch.nn.Sequential:
    """Linear → activation → Linear → activation, in float64."""
    return torch.nn.Sequential(
        torch.nn.Linear(5, 4), ACTIVATIONS[activation](), torch.nn.Linear(4, 3), ACTIVATIONS[activation]()
    ).to(DT)


def han_kamber():
    """Han & Kamber's 3-2-1 sigmoid network (see test_han_kamber.py): x = (1, 0, 1), T = 1, η = 0.9."""
    net = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Linear(2, 1), nn.Sigmoid()).to(DT)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.2, 0.4, -0.5], [-0.3, 0.1, 0.2]], dtype=DT))
        net[0].bias.copy_(torch.tensor([-0.4, 0.2], dtype=DT))
        net[2].weight.copy_(torch.tensor([[-0.3, -0.2]], dtype=DT))
        net[2].bias.copy_(torch.tensor([0.1], dtype=DT))
    return net
