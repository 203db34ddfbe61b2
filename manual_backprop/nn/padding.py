"""Drop-in padding layers. Each subclasses its ``torch.nn`` twin (same constructor and
``padding`` attribute) and only changes ``forward`` to call :func:`manual_backprop.functional.padding.pad`,
whose backward hands each padded cell's gradient back to the cell it copied. The forward is
written once per mode; 1d/2d/3d differ only in the constructor they inherit."""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop.functional.padding import pad
from manual_backprop.nn._base import names_the_layer, register


class _ConstantPadForward:
    """a = input with a border of ``self.value`` (see :class:`manual_backprop.functional.padding.ConstantPad`)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return pad(input, self.padding, "constant", self.value)


class _CopyPadForward:
    """a = input with a border copied from it (see :class:`manual_backprop.functional.padding.CopyPad`)."""

    mode: str

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return pad(input, self.padding, type(self).mode)


@register(nn.ZeroPad1d)
class ZeroPad1d(_ConstantPadForward, nn.ZeroPad1d):
    """Zeros around the last dimension."""


@register(nn.ZeroPad2d)
class ZeroPad2d(_ConstantPadForward, nn.ZeroPad2d):
    """Zeros around the last two dimensions."""


@register(nn.ZeroPad3d)
class ZeroPad3d(_ConstantPadForward, nn.ZeroPad3d):
    """Zeros around the last three dimensions."""


@register(nn.ConstantPad1d)
class ConstantPad1d(_ConstantPadForward, nn.ConstantPad1d):
    """A constant around the last dimension."""


@register(nn.ConstantPad2d)
class ConstantPad2d(_ConstantPadForward, nn.ConstantPad2d):
    """A constant around the last two dimensions."""


@register(nn.ConstantPad3d)
class ConstantPad3d(_ConstantPadForward, nn.ConstantPad3d):
    """A constant around the last three dimensions."""


@register(nn.ReflectionPad1d)
class ReflectionPad1d(_CopyPadForward, nn.ReflectionPad1d):
    """The mirror image of the last dimension, edge cell not repeated."""

    mode = "reflect"


@register(nn.ReflectionPad2d)
class ReflectionPad2d(_CopyPadForward, nn.ReflectionPad2d):
    """The mirror image of the last two dimensions, edge cells not repeated."""

    mode = "reflect"


@register(nn.ReflectionPad3d)
class ReflectionPad3d(_CopyPadForward, nn.ReflectionPad3d):
    """The mirror image of the last three dimensions, edge cells not repeated."""

    mode = "reflect"


@register(nn.ReplicationPad1d)
class ReplicationPad1d(_CopyPadForward, nn.ReplicationPad1d):
    """Copies of the edge cells of the last dimension."""

    mode = "replicate"


@register(nn.ReplicationPad2d)
class ReplicationPad2d(_CopyPadForward, nn.ReplicationPad2d):
    """Copies of the edge cells of the last two dimensions."""

    mode = "replicate"


@register(nn.ReplicationPad3d)
class ReplicationPad3d(_CopyPadForward, nn.ReplicationPad3d):
    """Copies of the edge cells of the last three dimensions."""

    mode = "replicate"


@register(nn.CircularPad1d)
class CircularPad1d(_CopyPadForward, nn.CircularPad1d):
    """The last dimension wrapped around."""

    mode = "circular"


@register(nn.CircularPad2d)
class CircularPad2d(_CopyPadForward, nn.CircularPad2d):
    """The last two dimensions wrapped around."""

    mode = "circular"


@register(nn.CircularPad3d)
class CircularPad3d(_CopyPadForward, nn.CircularPad3d):
    """The last three dimensions wrapped around."""

    mode = "circular"
