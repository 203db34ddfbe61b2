"""Rows for the shared tables: the normalization family (BatchNorm, InstanceNorm, LayerNorm, GroupNorm,
RMSNorm, LocalResponseNorm). Shapes stay tiny: every row runs gradcheck and gradgradcheck."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

import manual_backprop.functional.normalization as MFN
import manual_backprop.nn.normalization  # noqa: F401  (registers the drop-in modules for convert)

from cases import DT, Case, ModuleCase, leaf


def _randn(*shape):
    return torch.randn(*shape, dtype=DT)


def _positive(*shape):
    return torch.rand(*shape, dtype=DT) + 0.5


def _stats_norm(x_shape, channels, running=True, affine=True, bias=True, constant_channel=False):
    """(x, running_mean, running_var, weight, bias) for batch_norm / instance_norm."""

    def make():
        x = _randn(*x_shape)
        if constant_channel:
            x[:, 0] = 0.7  # zero variance: x̂ = 0, σ = √ε
        return (leaf(x),
                _randn(channels) if running else None, _positive(channels) if running else None,
                leaf(_randn(channels)) if affine else None, leaf(_randn(channels)) if affine and bias else None)

    return make


def _rms(x_shape, normalized_shape, weight=True):
    return lambda: (leaf(_randn(*x_shape)), normalized_shape, leaf(_randn(*normalized_shape)) if weight else None)


FUNCTION_CASES: list[Case] = [
    Case("normalization-batch_norm-train-2d", MFN.batch_norm, F.batch_norm, _stats_norm((4, 3), 3),
         {"training": True, "momentum": 0.3}),
    Case("normalization-batch_norm-train-4d", MFN.batch_norm, F.batch_norm, _stats_norm((3, 2, 2, 2), 2),
         {"training": True}),
    Case("normalization-batch_norm-train-no-stats-no-affine", MFN.batch_norm, F.batch_norm,
         _stats_norm((3, 2, 4), 2, running=False, affine=False), {"training": True, "eps": 1e-3}),
    Case("normalization-batch_norm-train-no-bias", MFN.batch_norm, F.batch_norm,
         _stats_norm((3, 2, 4), 2, running=False, bias=False), {"training": True}),
    Case("normalization-batch_norm-train-constant-channel", MFN.batch_norm, F.batch_norm,
         _stats_norm((4, 2, 3), 2, constant_channel=True), {"training": True}),
    Case("normalization-batch_norm-eval", MFN.batch_norm, F.batch_norm, _stats_norm((3, 2, 2), 2),
         {"training": False}),
    Case("normalization-batch_norm-eval-no-affine", MFN.batch_norm, F.batch_norm,
         _stats_norm((3, 2, 2, 2), 2, affine=False), {"training": False, "eps": 0.1}),
    Case("normalization-instance_norm", MFN.instance_norm, F.instance_norm,
         _stats_norm((2, 3, 4), 3, running=False, affine=False), {}),
    Case("normalization-instance_norm-affine-running", MFN.instance_norm, F.instance_norm,
         _stats_norm((2, 3, 2, 2), 3), {"momentum": 0.2}),
    Case("normalization-instance_norm-eval", MFN.instance_norm, F.instance_norm, _stats_norm((2, 3, 4), 3),
         {"use_input_stats": False}),
    Case("normalization-instance_norm-constant-channel", MFN.instance_norm, F.instance_norm,
         _stats_norm((2, 2, 3), 2, running=False, constant_channel=True), {}),
    Case("normalization-layer_norm", MFN.layer_norm, F.layer_norm,
         lambda: (leaf(_randn(2, 3, 4)), (4,), leaf(_randn(4)), leaf(_randn(4)))),
    Case("normalization-layer_norm-2d-shape", MFN.layer_norm, F.layer_norm,
         lambda: (leaf(_randn(2, 3, 4)), (3, 4), leaf(_randn(3, 4)), leaf(_randn(3, 4)))),
    Case("normalization-layer_norm-no-affine", MFN.layer_norm, F.layer_norm,
         lambda: (leaf(_randn(3, 5)), (5,)), {"eps": 1e-2}),
    Case("normalization-layer_norm-no-bias", MFN.layer_norm, F.layer_norm,
         lambda: (leaf(_randn(3, 4)), (4,), leaf(_randn(4)), None)),
    Case("normalization-layer_norm-unbatched", MFN.layer_norm, F.layer_norm,
         lambda: (leaf(_randn(4)), (4,), leaf(_randn(4)), leaf(_randn(4)))),
    Case("normalization-group_norm", MFN.group_norm, F.group_norm,
         lambda: (leaf(_randn(2, 6, 3)), 3, leaf(_randn(6)), leaf(_randn(6)))),
    Case("normalization-group_norm-one-group-4d", MFN.group_norm, F.group_norm,
         lambda: (leaf(_randn(2, 4, 2, 2)), 1, leaf(_randn(4)), leaf(_randn(4)))),
    Case("normalization-group_norm-2d-no-affine", MFN.group_norm, F.group_norm,
         lambda: (leaf(_randn(3, 6)), 2), {"eps": 1e-3}),
    Case("normalization-rms_norm", MFN.rms_norm, F.rms_norm, _rms((2, 3, 4), (4,))),
    Case("normalization-rms_norm-2d-shape-eps", MFN.rms_norm, F.rms_norm, _rms((2, 3, 4), (3, 4)), {"eps": 1e-3}),
    Case("normalization-rms_norm-no-weight", MFN.rms_norm, F.rms_norm, _rms((3, 4), (4,), weight=False)),
    *[Case(f"normalization-local_response_norm-size{size}-{len(shape)}d", MFN.local_response_norm,
           F.local_response_norm, (lambda shape=shape, size=size: (leaf(_randn(*shape)), size)),
           {"alpha": 0.5, "beta": 0.7, "k": 1.5})
      for size, shape in [(3, (2, 5, 3)), (2, (2, 4, 2, 2)), (6, (1, 4, 3))]],
    Case("normalization-local_response_norm-defaults", MFN.local_response_norm, F.local_response_norm,
         lambda: (leaf(_randn(2, 3, 4)), 2)),
]


# -- modules ------------------------------------------------------------------------------------------

def _randomized(module: torch.nn.Module, num_batches_tracked: int | None = None) -> torch.nn.Module:
    """Random γ, β and running statistics instead of the 1s and 0s torch starts with."""
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            t = getattr(module, name, None)
            if t is not None:
                t.copy_(torch.randn_like(t))
        if getattr(module, "running_var", None) is not None:
            module.running_var.copy_(torch.rand_like(module.running_var) + 0.5)
        if num_batches_tracked is not None:
            module.num_batches_tracked.fill_(num_batches_tracked)
    return module


def _x(*shape):
    return lambda: (leaf(_randn(*shape)),)


nn = torch.nn

MODULE_CASES: list[ModuleCase] = [
    ModuleCase("normalization-BatchNorm1d", lambda: _randomized(nn.BatchNorm1d(3)), _x(4, 3)),
    ModuleCase("normalization-BatchNorm1d-3d-cumulative", lambda: _randomized(nn.BatchNorm1d(2, momentum=None), 4),
               _x(3, 2, 4)),
    *([ModuleCase("normalization-BatchNorm1d-no-bias", lambda: _randomized(nn.BatchNorm1d(3, bias=False)), _x(4, 3))]
      if "bias" in inspect.signature(nn.BatchNorm1d).parameters else []),  # torch ≥ 2.12
    ModuleCase("normalization-BatchNorm2d", lambda: _randomized(nn.BatchNorm2d(2, momentum=0.3)), _x(3, 2, 2, 2)),
    ModuleCase("normalization-BatchNorm2d-eval", lambda: _randomized(nn.BatchNorm2d(2)), _x(3, 2, 2, 2), train=False),
    ModuleCase("normalization-BatchNorm2d-untracked-no-affine",
               lambda: nn.BatchNorm2d(2, affine=False, track_running_stats=False), _x(3, 2, 2, 2)),
    ModuleCase("normalization-BatchNorm2d-untracked-eval",
               lambda: _randomized(nn.BatchNorm2d(2, track_running_stats=False)), _x(3, 2, 2, 2), train=False),
    ModuleCase("normalization-BatchNorm3d", lambda: _randomized(nn.BatchNorm3d(2)), _x(2, 2, 2, 2, 2)),
    ModuleCase("normalization-InstanceNorm1d", lambda: nn.InstanceNorm1d(3), _x(2, 3, 4)),
    ModuleCase("normalization-InstanceNorm1d-unbatched-tracked",
               lambda: _randomized(nn.InstanceNorm1d(3, affine=True, track_running_stats=True)), _x(3, 4)),
    ModuleCase("normalization-InstanceNorm2d-tracked",
               lambda: _randomized(nn.InstanceNorm2d(2, affine=True, track_running_stats=True, momentum=0.3)),
               _x(2, 2, 3, 2)),
    ModuleCase("normalization-InstanceNorm2d-tracked-eval",
               lambda: _randomized(nn.InstanceNorm2d(2, affine=True, track_running_stats=True)),
               _x(2, 2, 3, 2), train=False),
    ModuleCase("normalization-InstanceNorm3d", lambda: _randomized(nn.InstanceNorm3d(2, affine=True)),
               _x(2, 2, 2, 2, 2)),
    ModuleCase("normalization-LayerNorm", lambda: _randomized(nn.LayerNorm(4)), _x(2, 3, 4)),
    ModuleCase("normalization-LayerNorm-2d-shape-no-affine", lambda: nn.LayerNorm((3, 4), elementwise_affine=False),
               _x(2, 3, 4)),
    ModuleCase("normalization-LayerNorm-no-bias", lambda: _randomized(nn.LayerNorm(4, bias=False)), _x(3, 4)),
    ModuleCase("normalization-GroupNorm", lambda: _randomized(nn.GroupNorm(3, 6)), _x(2, 6, 3)),
    ModuleCase("normalization-GroupNorm-no-affine", lambda: nn.GroupNorm(2, 4, affine=False), _x(2, 4, 2, 2)),
    ModuleCase("normalization-RMSNorm", lambda: _randomized(nn.RMSNorm(4)), _x(2, 3, 4)),
    ModuleCase("normalization-RMSNorm-2d-shape-eps", lambda: nn.RMSNorm((3, 4), eps=1e-3, elementwise_affine=False),
               _x(2, 3, 4)),
    ModuleCase("normalization-LocalResponseNorm", lambda: nn.LocalResponseNorm(3, alpha=0.5, k=1.5), _x(2, 5, 3)),
    ModuleCase("normalization-LocalResponseNorm-4d", lambda: nn.LocalResponseNorm(2), _x(2, 4, 2, 2)),
]
