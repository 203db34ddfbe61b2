"""Drop-in normalization layers. Each subclasses its ``torch.nn`` twin (same constructor, parameters,
buffers and ``state_dict``) and only changes ``forward`` to call the hand-written Functions.

BatchNorm and InstanceNorm keep torch's own bookkeeping in their ``forward`` (which statistics to
use, ``num_batches_tracked``, the cumulative average for ``momentum=None``), written once for the
1d/2d/3d classes in a mixin.
"""

from __future__ import annotations

import warnings

from torch import Tensor, nn

from manual_backprop.errors import LayerInputError
from manual_backprop.functional.normalization import (
    _instance_norm,
    batch_norm,
    group_norm,
    layer_norm,
    local_response_norm,
    rms_norm,
)
from manual_backprop.nn._base import names_the_layer, register


def _check_input_dim(module: nn.Module, name: str, input: Tensor) -> None:
    """torch's own rank check of the module, raised as a LayerInputError."""
    try:
        module._check_input_dim(input)
    except ValueError as err:
        raise LayerInputError(f"{name}: {err}") from None


class _BatchNorm:
    """forward of BatchNorm1d/2d/3d: torch's ``_BatchNorm.forward``, calling :func:`batch_norm`."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        _check_input_dim(self, "batch_norm", input)
        # the running statistics move by `momentum`, or by 1/(batches seen) for a cumulative average
        exponential_average_factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                exponential_average_factor = 1.0 / float(self.num_batches_tracked)
        # batch statistics in training, and in eval when there are no running statistics to use
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        # running statistics are passed where they are updated (training) or used (eval)
        use_buffers = not self.training or self.track_running_stats
        return batch_norm(
            input,
            self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None,
            self.weight,
            self.bias,
            bn_training,
            exponential_average_factor,
            self.eps,
        )


@register(nn.BatchNorm1d)
class BatchNorm1d(_BatchNorm, nn.BatchNorm1d):
    """BatchNorm over (N, C) or (N, C, L) (see :class:`manual_backprop.functional.normalization.Normalization`)."""


@register(nn.BatchNorm2d)
class BatchNorm2d(_BatchNorm, nn.BatchNorm2d):
    """BatchNorm over (N, C, H, W) (see :class:`manual_backprop.functional.normalization.Normalization`)."""


@register(nn.BatchNorm3d)
class BatchNorm3d(_BatchNorm, nn.BatchNorm3d):
    """BatchNorm over (N, C, D, H, W) (see :class:`manual_backprop.functional.normalization.Normalization`)."""


class _InstanceNorm:
    """forward of InstanceNorm1d/2d/3d: torch's ``_InstanceNorm.forward``, calling the functional entry
    (an unbatched input goes in as it is, so no native unsqueeze sits between the layers)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        _check_input_dim(self, "instance_norm", input)
        feature_dim = input.dim() - self._get_no_batch_dim()
        if input.size(feature_dim) != self.num_features:
            if self.affine:
                raise LayerInputError(
                    f"instance_norm: expected input's size at dim={feature_dim} to match num_features "
                    f"({self.num_features}), but got: {input.size(feature_dim)}."
                )
            warnings.warn(
                f"input's size at dim={feature_dim} does not match num_features. "
                "You can silence this warning by not passing in num_features, "
                "which is not used because affine=False",
                stacklevel=3,
            )
        return _instance_norm(
            input,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
            batched=input.dim() != self._get_no_batch_dim(),
        )


@register(nn.InstanceNorm1d)
class InstanceNorm1d(_InstanceNorm, nn.InstanceNorm1d):
    """InstanceNorm over (N, C, L) or (C, L) (see :class:`manual_backprop.functional.normalization.Normalization`)."""


@register(nn.InstanceNorm2d)
class InstanceNorm2d(_InstanceNorm, nn.InstanceNorm2d):
    """InstanceNorm over (N, C, H, W) or (C, H, W)."""


@register(nn.InstanceNorm3d)
class InstanceNorm3d(_InstanceNorm, nn.InstanceNorm3d):
    """InstanceNorm over (N, C, D, H, W) or (C, D, H, W)."""


@register(nn.LayerNorm)
class LayerNorm(nn.LayerNorm):
    """y = γ ⊙ (x − μ)/σ + β over the trailing normalized_shape (see :func:`layer_norm`)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


@register(nn.GroupNorm)
class GroupNorm(nn.GroupNorm):
    """y = γ ⊙ (x − μ)/σ + β with statistics per sample and group of channels (see :func:`group_norm`)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


@register(nn.RMSNorm)
class RMSNorm(nn.RMSNorm):
    """y = γ ⊙ x/√(mean x² + ε) over the trailing normalized_shape (see :func:`rms_norm`)."""

    @names_the_layer
    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)


@register(nn.LocalResponseNorm)
class LocalResponseNorm(nn.LocalResponseNorm):
    """b_c = x_c / (k + (α/n) Σ_{window} x²)^β across channels (see :func:`local_response_norm`)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return local_response_norm(input, self.size, self.alpha, self.beta, self.k)
