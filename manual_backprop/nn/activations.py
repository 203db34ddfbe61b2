"""Drop-in activations. Each subclasses its ``torch.nn`` twin (same constructor, parameters and
``state_dict``) and only changes ``forward`` to call the hand-written Functions."""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop import functional as MF
from manual_backprop.nn._base import names_the_layer, register


@register(nn.Sigmoid)
class Sigmoid(nn.Sigmoid):
    """a = σ(z), σ′ = a(1 − a)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.sigmoid(input)


@register(nn.Tanh)
class Tanh(nn.Tanh):
    """a = tanh(z), tanh′ = 1 − a²."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.tanh(input)


@register(nn.ReLU)
class ReLU(nn.ReLU):
    """a = max(z, 0), relu′ = [z > 0]."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.relu(input, inplace=self.inplace)


@register(nn.Softmax)
class Softmax(nn.Softmax):
    """a = softmax(z) along ``dim``."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.softmax(input, self.dim, _stacklevel=5)


@register(nn.LogSoftmax)
class LogSoftmax(nn.LogSoftmax):
    """a = log softmax(z) along ``dim``."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.log_softmax(input, self.dim, _stacklevel=5)
