"""Drop-in linear layer. Each subclasses its ``torch.nn`` twin (same constructor, parameters and
``state_dict``) and only changes ``forward`` to call the hand-written Functions."""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop import functional as MF
from manual_backprop.functional.fused import linear_chain
from manual_backprop.functional.linear import flatten, unflatten
from manual_backprop.nn._base import names_the_layer, register


@register(nn.Linear)
class Linear(nn.Linear):
    """z = a_prev · Wᵀ + b  (see :class:`manual_backprop.functional.linear.Linear`)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.linear(input, self.weight, self.bias)

    @names_the_layer
    def forward_chain(self, input: Tensor, kinds: tuple[str | None, ...], params: list[Tensor | None]) -> Tensor:
        """The run of layers that starts here (this Linear, its activation, the next Linear, ...) as one
        Function (:mod:`manual_backprop.functional.fused`); :class:`manual_backprop.nn.Sequential` calls it."""
        return linear_chain(input, kinds, *params)


@register(nn.Bilinear)
class Bilinear(nn.Bilinear):
    """z_k = x1ᵀ · W_k · x2 + b_k  (see :class:`manual_backprop.functional.linear.Bilinear`)."""

    @names_the_layer
    def forward(self, input1: Tensor, input2: Tensor) -> Tensor:
        return MF.bilinear(input1, input2, self.weight, self.bias)


@register(nn.Identity)
class Identity(nn.Identity):
    """a = z: the input itself comes back, so backward has nothing to do (no node in the graph)."""


@register(nn.Flatten)
class Flatten(nn.Flatten):
    """Dimensions start_dim..end_dim merged into one; ∂C/∂z is ∂C/∂a laid back out."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return flatten(input, self.start_dim, self.end_dim)


@register(nn.Unflatten)
class Unflatten(nn.Unflatten):
    """Dimension ``dim`` split into ``unflattened_size``; ∂C/∂z is ∂C/∂a laid back out."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return unflatten(input, self.dim, self.unflattened_size)
