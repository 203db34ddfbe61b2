"""Table rows for convolution and padding (ids start with "conv-"): every stride, padding, dilation,
groups, output_padding and padding-mode path, kept tiny so gradgradcheck stays fast."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import manual_backprop.nn.conv  # registers the drop-in convolutions for convert
import manual_backprop.nn.padding  # noqa: F401  (registers the drop-in padding layers)
from manual_backprop.functional import conv as MC
from manual_backprop.functional.padding import pad

from cases import DT, Case, ModuleCase, leaf


def _conv(x_shape, w_shape, bias=True):
    """(a_prev, W, b) of the given shapes; b has one entry per output channel."""
    def make():
        return (leaf(torch.randn(*x_shape, dtype=DT)), leaf(torch.randn(*w_shape, dtype=DT)),
                leaf(torch.randn(w_shape[0], dtype=DT)) if bias else None)
    return make


def _conv_transpose(x_shape, w_shape, groups=1, bias=True):
    """(a_prev, W, b) of a transposed convolution: W is (in, out/groups, *kernel), b has out entries."""
    def make():
        return (leaf(torch.randn(*x_shape, dtype=DT)), leaf(torch.randn(*w_shape, dtype=DT)),
                leaf(torch.randn(w_shape[1] * groups, dtype=DT)) if bias else None)
    return make


def _x(*shape):
    return lambda: (leaf(torch.randn(*shape, dtype=DT)),)


FUNCTION_CASES: list[Case] = [
    Case("conv-1d", MC.conv1d, F.conv1d, _conv((2, 4, 6), (4, 2, 3)), {"stride": 2, "padding": 1, "groups": 2}),
    Case("conv-1d-unbatched-dilated", MC.conv1d, F.conv1d, _conv((4, 7), (3, 4, 2), bias=False), {"dilation": 2}),
    Case("conv-1d-same-even-kernel", MC.conv1d, F.conv1d, _conv((2, 2, 6), (3, 2, 2)), {"padding": "same"}),
    Case("conv-2d", MC.conv2d, F.conv2d, _conv((1, 4, 4, 4), (4, 2, 3, 2)),
         {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2}),
    Case("conv-2d-stride-leaves-rows-unused", MC.conv2d, F.conv2d, _conv((1, 1, 6, 5), (1, 1, 2, 2)),
         {"stride": 3}),
    Case("conv-2d-few-input-channels-unfolded", MC.conv2d, F.conv2d, _conv((2, 1, 5, 5), (4, 1, 2, 2)),
         {"stride": (2, 1), "padding": 1, "dilation": (1, 2)}),
    Case("conv-2d-same-dilated", MC.conv2d, F.conv2d, _conv((1, 2, 4, 5), (2, 2, 3, 2)),
         {"padding": "same", "dilation": (1, 3)}),
    Case("conv-2d-valid-depthwise", MC.conv2d, F.conv2d, _conv((1, 3, 3, 3), (3, 1, 2, 2)),
         {"padding": "valid", "groups": 3}),
    Case("conv-3d", MC.conv3d, F.conv3d, _conv((1, 2, 2, 3, 2), (2, 1, 2, 2, 2)),
         {"stride": (1, 2, 1), "padding": (1, 0, 1), "groups": 2}),
    Case("conv-3d-unbatched", MC.conv3d, F.conv3d, _conv((1, 3, 3, 2), (2, 1, 2, 2, 1), bias=False),
         {"dilation": (1, 2, 1)}),
    Case("conv-transpose-1d", MC.conv_transpose1d, F.conv_transpose1d, _conv_transpose((1, 4, 4), (4, 3, 3), 2),
         {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}),
    Case("conv-transpose-1d-output-padding-past-stride", MC.conv_transpose1d, F.conv_transpose1d,
         _conv_transpose((1, 2, 4), (2, 2, 3)), {"stride": 2, "output_padding": 2, "dilation": 3}),
    Case("conv-transpose-2d", MC.conv_transpose2d, F.conv_transpose2d, _conv_transpose((1, 2, 2, 3), (2, 3, 2, 3)),
         {"stride": (2, 1), "padding": (0, 1), "output_padding": (1, 0), "dilation": (1, 2)}),
    Case("conv-transpose-2d-unbatched-grouped", MC.conv_transpose2d, F.conv_transpose2d,
         _conv_transpose((4, 3, 2), (4, 1, 2, 2), 2, bias=False), {"groups": 2, "stride": 2, "padding": 1}),
    Case("conv-transpose-3d", MC.conv_transpose3d, F.conv_transpose3d,
         _conv_transpose((1, 2, 1, 2, 2), (2, 1, 2, 2, 2), 2), {"stride": (2, 1, 2), "groups": 2}),
    Case("conv-pad-constant-1d", pad, F.pad, _x(2, 3, 4), {"pad": (1, 2)}),
    Case("conv-pad-constant-value-crop", pad, F.pad, _x(2, 3, 4), {"pad": (2, -1, -1, 1), "value": 1.5}),
    Case("conv-pad-constant-4-dims", pad, F.pad, _x(1, 2, 2, 2), {"pad": (1, 0, 0, 1, 1, 1, 0, 2)}),
    *[Case(f"conv-pad-{mode}-{n}d", pad, F.pad, _x(*shape), {"pad": amounts, "mode": mode})
      for mode in ("reflect", "replicate", "circular")
      for n, shape, amounts in [(1, (2, 3, 4), (2, 3)), (2, (3, 4, 3), (1, 2, 2, 0)),
                                (3, (1, 1, 2, 3, 3), (1, 2, 0, 1, 1, 1))]],
    *[Case(f"conv-pad-{mode}-crop", pad, F.pad, _x(2, 5, 4), {"pad": (-1, 2, 1, -2), "mode": mode})
      for mode in ("reflect", "replicate", "circular")],
]


def _x_module(*shape):
    return lambda: (leaf(torch.randn(*shape, dtype=DT)),)


MODULE_CASES: list[ModuleCase] = [
    ModuleCase("conv-Conv1d", lambda: torch.nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2), _x_module(2, 4, 7)),
    ModuleCase("conv-Conv2d", lambda: torch.nn.Conv2d(2, 3, (3, 2), stride=(1, 2), dilation=(2, 1), bias=False),
               _x_module(2, 2, 6, 5)),
    ModuleCase("conv-Conv2d-same-unbatched", lambda: torch.nn.Conv2d(2, 3, 2, padding="same"), _x_module(2, 4, 4)),
    ModuleCase("conv-Conv3d", lambda: torch.nn.Conv3d(2, 2, 2, padding=1, groups=2), _x_module(1, 2, 3, 3, 2)),
    *[ModuleCase(f"conv-Conv{n}d-{mode}", (lambda n=n, mode=mode: getattr(torch.nn, f"Conv{n}d")(
        2, 2, 2, padding=1, padding_mode=mode)), _x_module(*shape))
      for mode in ("reflect", "replicate", "circular")
      for n, shape in [(1, (2, 2, 5)), (2, (1, 2, 4, 3)), (3, (1, 2, 3, 3, 3))]],
    ModuleCase("conv-Conv1d-same-reflect-even-kernel",
               lambda: torch.nn.Conv1d(2, 2, 4, padding="same", padding_mode="reflect", dilation=1),
               _x_module(2, 2, 6)),
    ModuleCase("conv-ConvTranspose1d", lambda: torch.nn.ConvTranspose1d(4, 2, 3, stride=2, padding=1, groups=2),
               _x_module(2, 4, 5)),
    ModuleCase("conv-ConvTranspose1d-output-size", lambda: torch.nn.ConvTranspose1d(2, 3, 3, stride=3),
               lambda: (leaf(torch.randn(2, 2, 4, dtype=DT)), [13])),
    ModuleCase("conv-ConvTranspose2d", lambda: torch.nn.ConvTranspose2d(2, 2, (2, 3), stride=2, output_padding=1,
                                                                        dilation=(1, 2)),
               _x_module(1, 2, 3, 2)),
    ModuleCase("conv-ConvTranspose3d", lambda: torch.nn.ConvTranspose3d(2, 2, 2, stride=(1, 2, 1), bias=False),
               _x_module(1, 2, 2, 2, 3)),
    *[ModuleCase(f"conv-{name}", make, _x_module(*shape))
      for name, make, shape in [
          ("ZeroPad1d", lambda: torch.nn.ZeroPad1d((1, 2)), (2, 3, 4)),
          ("ZeroPad2d", lambda: torch.nn.ZeroPad2d((1, 0, 2, 1)), (1, 2, 3, 4)),
          ("ZeroPad3d", lambda: torch.nn.ZeroPad3d(1), (1, 2, 2, 3, 2)),
          ("ConstantPad1d", lambda: torch.nn.ConstantPad1d(2, 3.5), (2, 3, 4)),
          ("ConstantPad2d", lambda: torch.nn.ConstantPad2d((1, -1, 0, 2), -2.0), (2, 3, 4)),
          ("ConstantPad3d", lambda: torch.nn.ConstantPad3d(1, 0.5), (2, 2, 3, 2)),
          ("ReflectionPad1d", lambda: torch.nn.ReflectionPad1d((3, 1)), (2, 3, 4)),
          ("ReflectionPad2d", lambda: torch.nn.ReflectionPad2d(2), (1, 2, 3, 4)),
          ("ReflectionPad3d", lambda: torch.nn.ReflectionPad3d(1), (1, 2, 2, 3, 2)),
          ("ReplicationPad1d", lambda: torch.nn.ReplicationPad1d((3, 1)), (3, 4)),
          ("ReplicationPad2d", lambda: torch.nn.ReplicationPad2d((1, 2, 3, 0)), (1, 2, 3, 4)),
          ("ReplicationPad3d", lambda: torch.nn.ReplicationPad3d(2), (2, 2, 3, 2)),
          ("CircularPad1d", lambda: torch.nn.CircularPad1d((3, 1)), (2, 3, 4)),
          ("CircularPad2d", lambda: torch.nn.CircularPad2d((1, 2, 3, 0)), (1, 2, 3, 4)),
          ("CircularPad3d", lambda: torch.nn.CircularPad3d(1), (1, 2, 2, 3, 2)),
      ]],
]
