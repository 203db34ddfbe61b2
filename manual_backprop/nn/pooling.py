"""Drop-in pooling layers. Each subclasses its ``torch.nn`` twin (same constructor and settings) and
only changes ``forward`` to call the hand-written Functions of
:mod:`manual_backprop.functional.pooling`; the forward is written once per kind of pooling."""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop.functional import pooling as MF
from manual_backprop.nn._base import names_the_layer, register


def _max_pool_forward(max_pool):
    @names_the_layer
    def forward(self, input: Tensor):
        return max_pool(input, self.kernel_size, self.stride, self.padding, self.dilation,
                        ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    return forward


def _avg_pool_forward(avg_pool):
    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return avg_pool(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                        self.divisor_override)

    return forward


def _adaptive_max_pool_forward(adaptive_max_pool):
    @names_the_layer
    def forward(self, input: Tensor):
        return adaptive_max_pool(input, self.output_size, self.return_indices)

    return forward


def _adaptive_avg_pool_forward(adaptive_avg_pool):
    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return adaptive_avg_pool(input, self.output_size)

    return forward


@register(nn.MaxPool1d)
class MaxPool1d(nn.MaxPool1d):
    """z_o = max over window o; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o (``MaxPool``)."""

    forward = _max_pool_forward(MF.max_pool1d)


@register(nn.MaxPool2d)
class MaxPool2d(nn.MaxPool2d):
    """z_o = max over window o; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o (``MaxPool``)."""

    forward = _max_pool_forward(MF.max_pool2d)


@register(nn.MaxPool3d)
class MaxPool3d(nn.MaxPool3d):
    """z_o = max over window o; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o (``MaxPool``)."""

    forward = _max_pool_forward(MF.max_pool3d)


@register(nn.AvgPool1d)
class AvgPool1d(nn.AvgPool1d):
    """z_o = Σ_{window o} a_prev / D_o; backward δ_prev = Wᵀ · δ (``AvgPool``)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:  # no divisor_override in torch's AvgPool1d
        return MF.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)


@register(nn.AvgPool2d)
class AvgPool2d(nn.AvgPool2d):
    """z_o = Σ_{window o} a_prev / D_o; backward δ_prev = Wᵀ · δ (``AvgPool``)."""

    forward = _avg_pool_forward(MF.avg_pool2d)


@register(nn.AvgPool3d)
class AvgPool3d(nn.AvgPool3d):
    """z_o = Σ_{window o} a_prev / D_o; backward δ_prev = Wᵀ · δ (``AvgPool``)."""

    forward = _avg_pool_forward(MF.avg_pool3d)


@register(nn.AdaptiveMaxPool1d)
class AdaptiveMaxPool1d(nn.AdaptiveMaxPool1d):
    """z_o = max over adaptive window o; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o."""

    forward = _adaptive_max_pool_forward(MF.adaptive_max_pool1d)


@register(nn.AdaptiveMaxPool2d)
class AdaptiveMaxPool2d(nn.AdaptiveMaxPool2d):
    """z_o = max over adaptive window o; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o."""

    forward = _adaptive_max_pool_forward(MF.adaptive_max_pool2d)


@register(nn.AdaptiveMaxPool3d)
class AdaptiveMaxPool3d(nn.AdaptiveMaxPool3d):
    """z_o = max over adaptive window o; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o."""

    forward = _adaptive_max_pool_forward(MF.adaptive_max_pool3d)


@register(nn.AdaptiveAvgPool1d)
class AdaptiveAvgPool1d(nn.AdaptiveAvgPool1d):
    """z_o = mean over adaptive window o; backward δ_prev = Wᵀ · δ (``AdaptiveAvgPool``)."""

    forward = _adaptive_avg_pool_forward(MF.adaptive_avg_pool1d)


@register(nn.AdaptiveAvgPool2d)
class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """z_o = mean over adaptive window o; backward δ_prev = Wᵀ · δ (``AdaptiveAvgPool``)."""

    forward = _adaptive_avg_pool_forward(MF.adaptive_avg_pool2d)


@register(nn.AdaptiveAvgPool3d)
class AdaptiveAvgPool3d(nn.AdaptiveAvgPool3d):
    """z_o = mean over adaptive window o; backward δ_prev = Wᵀ · δ (``AdaptiveAvgPool``)."""

    forward = _adaptive_avg_pool_forward(MF.adaptive_avg_pool3d)
