"""Drop-in losses. Each subclasses its ``torch.nn`` twin (same constructor, parameters and
``state_dict``) and only changes ``forward`` to call the hand-written Functions."""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop import functional as MF
from manual_backprop.nn._base import names_the_layer, register


@register(nn.MSELoss)
class MSELoss(nn.MSELoss):
    """C = mean (a − y)², ∂C/∂a = 2(a − y)/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.mse_loss(input, target, reduction=self.reduction)


@register(nn.CrossEntropyLoss)
class CrossEntropyLoss(nn.CrossEntropyLoss):
    """C = −mean log softmax(z)_y, ∂C/∂z = (softmax − onehot)/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.cross_entropy(
            input, target, weight=self.weight, ignore_index=self.ignore_index,
            reduction=self.reduction, label_smoothing=self.label_smoothing,
        )
