"""Rows for the activations beyond the vertical slice's sigmoid, tanh, ReLU and softmax family."""

import torch
import torch.nn.functional as F

import manual_backprop.functional.activations as MA
import manual_backprop.nn.activations  # noqa: F401  (registers the modules)

from cases import DT, Case, ModuleCase, away_from_zero, leaf


def _x(*shape, scale=1.0):
    """Values away from every kink these activations have (0, ±λ, ±3, thresholds)."""
    return lambda: (leaf(away_from_zero(*shape) * scale + 0.013),)


def _inplace(fn):
    return lambda x, *args, **kw: fn(x * 1, *args, inplace=True, **kw)


#: torch's CPU hardsigmoid backward multiplies by the float constant 1.0f / 6.0f, even in float64
TORCH_FLOAT_SIXTH = 1e-7

ELEMENTWISE = [
    # id, manual, native, kwargs, input scale
    ("relu6", MA.relu6, F.relu6, {}, 4.0),
    ("hardtanh", MA.hardtanh, F.hardtanh, {"min_val": -0.5, "max_val": 0.7}, 1.0),
    ("leaky_relu", MA.leaky_relu, F.leaky_relu, {"negative_slope": 0.2}, 1.0),
    ("leaky_relu-negative-slope", MA.leaky_relu, F.leaky_relu, {"negative_slope": -0.3}, 1.0),
    ("elu", MA.elu, F.elu, {"alpha": 0.7}, 1.0),
    ("selu", MA.selu, F.selu, {}, 1.0),
    ("celu", MA.celu, F.celu, {"alpha": 1.5}, 1.0),
    ("gelu", MA.gelu, F.gelu, {}, 2.0),
    ("gelu-tanh", MA.gelu, F.gelu, {"approximate": "tanh"}, 2.0),
    ("silu", MA.silu, F.silu, {}, 2.0),
    ("mish", MA.mish, F.mish, {}, 2.0),
    ("softplus", MA.softplus, F.softplus, {"beta": 2.0, "threshold": 3.0}, 2.0),
    ("softsign", MA.softsign, F.softsign, {}, 2.0),
    ("hardsigmoid", MA.hardsigmoid, F.hardsigmoid, {}, 3.0),
    ("hardswish", MA.hardswish, F.hardswish, {}, 3.0),
    ("logsigmoid", MA.logsigmoid, F.logsigmoid, {}, 2.0),
    ("tanhshrink", MA.tanhshrink, F.tanhshrink, {}, 1.0),
    ("softshrink", MA.softshrink, F.softshrink, {"lambd": 0.3}, 1.0),
    ("hardshrink", MA.hardshrink, F.hardshrink, {"lambd": 0.3}, 1.0),
    ("threshold", MA.threshold, F.threshold, {"threshold": 0.2, "value": -1.5}, 1.0),
    ("rrelu-eval", MA.rrelu, F.rrelu, {"lower": 0.1, "upper": 0.4}, 1.0),
]
INPLACE = {"relu6", "hardtanh", "leaky_relu", "elu", "selu", "celu", "silu", "mish", "hardsigmoid", "hardswish",
           "threshold"}

FUNCTION_CASES = [
    *[Case(f"activations-{name}-{len(shape)}d", mf, nf, _x(*shape, scale=scale), kw,
           rtol=TORCH_FLOAT_SIXTH if name == "hardsigmoid" else 1e-10)
      for name, mf, nf, kw, scale in ELEMENTWISE for shape in [(5,), (2, 3, 4)]],
    *[Case(f"activations-{name}-inplace", _inplace(mf), _inplace(nf), _x(3, 4, scale=scale), kw,
           rtol=TORCH_FLOAT_SIXTH if name == "hardsigmoid" else 1e-10)
      for name, mf, nf, kw, scale in ELEMENTWISE if name in INPLACE],
    Case("activations-softplus-past-threshold", MA.softplus, F.softplus, _x(4, 5, scale=30.0)),
    *[Case(f"activations-prelu-{name}", MA.prelu, F.prelu,
           (lambda shape=shape, n=n: (leaf(away_from_zero(*shape)), leaf(torch.rand(n, dtype=DT) + 0.1))))
      for name, shape, n in [("shared", (2, 3, 4), 1), ("per-channel", (2, 3, 4), 3), ("1d", (3,), 1),
                             ("per-channel-4d", (2, 3, 2, 2), 3)]],
    *[Case(f"activations-glu-dim{d}", MA.glu, F.glu, lambda: (leaf(torch.randn(2, 4, 6, dtype=DT)),), {"dim": d})
      for d in (0, 1, -1)],
    *[Case(f"activations-softmin-dim{d}", MA.softmin, F.softmin, lambda: (leaf(torch.randn(2, 3, 4, dtype=DT)),),
           {"dim": d}) for d in (0, -1)],
]


def _x4():
    return (leaf(away_from_zero(2, 3, 2, 2) * 2 + 0.013),)

MODULE_CASES = [
    *[ModuleCase(f"activations-{name}", make, _x4, rtol=TORCH_FLOAT_SIXTH if name == "Hardsigmoid" else 1e-10)
      for name, make in [
          ("ReLU6", torch.nn.ReLU6), ("Hardtanh", lambda: torch.nn.Hardtanh(-0.5, 0.7)),
          ("LeakyReLU", lambda: torch.nn.LeakyReLU(0.2)), ("PReLU-per-channel", lambda: torch.nn.PReLU(3, init=0.3)),
          ("PReLU", torch.nn.PReLU), ("ELU", lambda: torch.nn.ELU(0.5)), ("SELU", torch.nn.SELU),
          ("CELU", lambda: torch.nn.CELU(2.0)), ("GELU", torch.nn.GELU), ("GELU-tanh", lambda: torch.nn.GELU("tanh")),
          ("SiLU", torch.nn.SiLU), ("Mish", torch.nn.Mish), ("Softplus", lambda: torch.nn.Softplus(2.0, 1.0)),
          ("Softsign", torch.nn.Softsign), ("Hardsigmoid", torch.nn.Hardsigmoid), ("Hardswish", torch.nn.Hardswish),
          ("LogSigmoid", torch.nn.LogSigmoid), ("Tanhshrink", torch.nn.Tanhshrink),
          ("Softshrink", lambda: torch.nn.Softshrink(0.3)), ("Hardshrink", lambda: torch.nn.Hardshrink(0.3)),
          ("Threshold", lambda: torch.nn.Threshold(0.2, -1.0)), ("GLU", lambda: torch.nn.GLU(-1)),
          ("Softmin", lambda: torch.nn.Softmin(1)), ("Softmax2d", torch.nn.Softmax2d),
          ("RReLU-training", lambda: torch.nn.RReLU(0.1, 0.3))]],
    ModuleCase("activations-RReLU-eval", lambda: torch.nn.RReLU(0.1, 0.3), _x4, train=False),
    *[ModuleCase(f"activations-linear-then-{name}-inplace",
                 (lambda make=make: torch.nn.Sequential(torch.nn.Linear(4, 5), make())),
                 lambda: (leaf(torch.randn(3, 4, dtype=DT)),),
                 rtol=TORCH_FLOAT_SIXTH if name == "hardsigmoid" else 1e-10)
      for name, make in [
          ("relu6", lambda: torch.nn.ReLU6(True)), ("hardtanh", lambda: torch.nn.Hardtanh(inplace=True)),
          ("leaky_relu", lambda: torch.nn.LeakyReLU(0.1, True)), ("elu", lambda: torch.nn.ELU(inplace=True)),
          ("selu", lambda: torch.nn.SELU(True)), ("celu", lambda: torch.nn.CELU(inplace=True)),
          ("silu", lambda: torch.nn.SiLU(True)), ("mish", lambda: torch.nn.Mish(True)),
          ("hardsigmoid", lambda: torch.nn.Hardsigmoid(True)), ("hardswish", lambda: torch.nn.Hardswish(True)),
          ("threshold", lambda: torch.nn.Threshold(0.1, 20.0, True))]],
]
