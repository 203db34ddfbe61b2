"""Drop-in dropout layers. Each subclasses its ``torch.nn`` twin (same constructor and settings) and
only changes ``forward`` to call the hand-written Functions; the masks are drawn as torch draws them,
so the same seed drops the same units."""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop.functional.dropout import (
    alpha_dropout,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    feature_alpha_dropout,
)
from manual_backprop.nn._base import names_the_layer, register


@register(nn.Dropout)
class Dropout(nn.Dropout):
    """a = z ⊙ keep / (1 − p) in training, the identity in eval (see :mod:`manual_backprop.functional.dropout`)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return dropout(input, self.p, self.training, self.inplace)


@register(nn.Dropout1d)
class Dropout1d(nn.Dropout1d):
    """Dropout of whole channels of (N, C, L) or (C, L)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return dropout1d(input, self.p, self.training, self.inplace)


@register(nn.Dropout2d)
class Dropout2d(nn.Dropout2d):
    """Dropout of whole channels of (N, C, H, W)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return dropout2d(input, self.p, self.training, self.inplace)


@register(nn.Dropout3d)
class Dropout3d(nn.Dropout3d):
    """Dropout of whole channels of (N, C, D, H, W) or (C, D, H, W)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return dropout3d(input, self.p, self.training, self.inplace)


@register(nn.AlphaDropout)
class AlphaDropout(nn.AlphaDropout):
    """Alpha dropout for SELU networks: a = z ⊙ keep · α′ + β. Like torch's, it ignores ``inplace``."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return alpha_dropout(input, self.p, self.training)


@register(nn.FeatureAlphaDropout)
class FeatureAlphaDropout(nn.FeatureAlphaDropout):
    """Alpha dropout of whole channels. Like torch's, it ignores ``inplace``."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return feature_alpha_dropout(input, self.p, self.training)
