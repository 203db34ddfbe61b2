"""Drop-in convolutions. Each subclasses its ``torch.nn`` twin (same constructor, parameters and
``state_dict``) and only changes ``forward`` to call the hand-written Functions. The forward is
written once for 1d/2d/3d (:class:`_ConvForward`, :class:`_ConvTransposeForward`); each class
names its functional entry."""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop.errors import LayerInputError
from manual_backprop.functional.conv import (
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)
from manual_backprop.functional.padding import pad
from manual_backprop.nn._base import names_the_layer, register


class _ConvForward:
    """torch's ``_conv_forward``: a padding mode other than zeros is applied first, by :func:`pad`,
    then the convolution runs unpadded."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        conv = type(self).conv
        if self.padding_mode != "zeros":
            padded = pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class _ConvTransposeForward:
    """torch's ``ConvTranspose*d.forward``: ``output_size`` picks the output_padding that reaches it."""

    @names_the_layer
    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise LayerInputError(f"only padding_mode='zeros' is supported for {type(self).__name__}, "
                                  f"got {self.padding_mode!r}")
        try:
            output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                                  len(self.kernel_size), self.dilation)
        except ValueError as err:  # an output_size out of reach, said by torch
            raise LayerInputError(str(err)) from None
        return type(self).conv_transpose(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                         self.groups, self.dilation)


@register(nn.Conv1d)
class Conv1d(_ConvForward, nn.Conv1d):
    """z = W ⋆ a_prev + b over one spatial dimension (see :class:`manual_backprop.functional.conv.Conv`)."""

    conv = staticmethod(conv1d)


@register(nn.Conv2d)
class Conv2d(_ConvForward, nn.Conv2d):
    """z = W ⋆ a_prev + b over two spatial dimensions (see :class:`manual_backprop.functional.conv.Conv`)."""

    conv = staticmethod(conv2d)


@register(nn.Conv3d)
class Conv3d(_ConvForward, nn.Conv3d):
    """z = W ⋆ a_prev + b over three spatial dimensions (see :class:`manual_backprop.functional.conv.Conv`)."""

    conv = staticmethod(conv3d)


@register(nn.ConvTranspose1d)
class ConvTranspose1d(_ConvTransposeForward, nn.ConvTranspose1d):
    """z = Wᵀ ⊛ a_prev + b over one spatial dimension (see
    :class:`manual_backprop.functional.conv.ConvTranspose`)."""

    conv_transpose = staticmethod(conv_transpose1d)


@register(nn.ConvTranspose2d)
class ConvTranspose2d(_ConvTransposeForward, nn.ConvTranspose2d):
    """z = Wᵀ ⊛ a_prev + b over two spatial dimensions (see
    :class:`manual_backprop.functional.conv.ConvTranspose`)."""

    conv_transpose = staticmethod(conv_transpose2d)


@register(nn.ConvTranspose3d)
class ConvTranspose3d(_ConvTransposeForward, nn.ConvTranspose3d):
    """z = Wᵀ ⊛ a_prev + b over three spatial dimensions (see
    :class:`manual_backprop.functional.conv.ConvTranspose`)."""

    conv_transpose = staticmethod(conv_transpose3d)
