"""Drop-in activations. Each subclasses its ``torch.nn`` twin (same constructor, parameters and
``state_dict``) and only changes ``forward`` to call the hand-written Functions."""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop.errors import LayerInputError
from manual_backprop.functional import activations as MF
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


@register(nn.Hardtanh)
class Hardtanh(nn.Hardtanh):
    """a = clamp(z, min_val, max_val), f′ = [min_val < z < max_val]."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.hardtanh(input, self.min_val, self.max_val, self.inplace)


@register(nn.ReLU6)
class ReLU6(nn.ReLU6):
    """a = min(max(z, 0), 6), f′ = [0 < z < 6]."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.hardtanh(input, self.min_val, self.max_val, self.inplace)


@register(nn.LeakyReLU)
class LeakyReLU(nn.LeakyReLU):
    """a = z or s·z, f′ = 1 or s."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.leaky_relu(input, self.negative_slope, self.inplace)


@register(nn.PReLU)
class PReLU(nn.PReLU):
    """a = z or w_c·z, f′ = 1 or w_c, ∂C/∂w_c = Σ ∂C/∂a · z · [z ≤ 0]."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.prelu(input, self.weight)


@register(nn.RReLU)
class RReLU(nn.RReLU):
    """a = z or r·z with a random slope r in training, f′ = 1 or r."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.rrelu(input, self.lower, self.upper, self.training, self.inplace)


@register(nn.ELU)
class ELU(nn.ELU):
    """a = z or α(e^z − 1), f′ = 1 or α·e^z."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.elu(input, self.alpha, self.inplace)


@register(nn.SELU)
class SELU(nn.SELU):
    """a = λz or λα(e^z − 1), f′ = λ or λα·e^z."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.selu(input, self.inplace)


@register(nn.CELU)
class CELU(nn.CELU):
    """a = z or α(e^(z/α) − 1), f′ = 1 or e^(z/α)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.celu(input, self.alpha, self.inplace)


@register(nn.GELU)
class GELU(nn.GELU):
    """a = z·Φ(z), f′ = Φ(z) + z·φ(z)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.gelu(input, approximate=self.approximate)


@register(nn.SiLU)
class SiLU(nn.SiLU):
    """a = z·σ(z), f′ = σ(z)(1 + z(1 − σ(z)))."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.silu(input, inplace=self.inplace)


@register(nn.Mish)
class Mish(nn.Mish):
    """a = z·tanh(softplus(z))."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.mish(input, inplace=self.inplace)


@register(nn.Softplus)
class Softplus(nn.Softplus):
    """a = log(1 + e^(βz))/β, f′ = σ(βz)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.softplus(input, self.beta, self.threshold)


@register(nn.Softsign)
class Softsign(nn.Softsign):
    """a = z/(1 + |z|), f′ = 1/(1 + |z|)²."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.softsign(input)


@register(nn.Hardsigmoid)
class Hardsigmoid(nn.Hardsigmoid):
    """a = clamp(z/6 + ½, 0, 1), f′ = [−3 < z < 3]/6."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.hardsigmoid(input, self.inplace)


@register(nn.Hardswish)
class Hardswish(nn.Hardswish):
    """a = z·hardsigmoid(z), f′ = 0, z/3 + ½ or 1."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.hardswish(input, self.inplace)


@register(nn.LogSigmoid)
class LogSigmoid(nn.LogSigmoid):
    """a = log σ(z), f′ = σ(−z)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.logsigmoid(input)


@register(nn.Tanhshrink)
class Tanhshrink(nn.Tanhshrink):
    """a = z − tanh(z), f′ = tanh²(z)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.tanhshrink(input)


@register(nn.Softshrink)
class Softshrink(nn.Softshrink):
    """a = z ∓ λ outside [−λ, λ], 0 inside; f′ = [|z| > λ]."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.softshrink(input, self.lambd)


@register(nn.Hardshrink)
class Hardshrink(nn.Hardshrink):
    """a = z outside [−λ, λ], 0 inside; f′ = [|z| > λ]."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.hardshrink(input, self.lambd)


@register(nn.Threshold)
class Threshold(nn.Threshold):
    """a = z above the threshold, value below; f′ = [z > threshold]."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.threshold(input, self.threshold, self.value, self.inplace)


@register(nn.GLU)
class GLU(nn.GLU):
    """a = u ⊙ σ(v) for the halves u, v of z."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.glu(input, self.dim)


@register(nn.Softmin)
class Softmin(nn.Softmin):
    """a = softmax(−z) along ``dim``."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return MF.softmin(input, self.dim, _stacklevel=5)


@register(nn.Softmax2d)
class Softmax2d(nn.Softmax2d):
    """a = softmax(z) over the channels of a (C, H, W) or (N, C, H, W) input."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        if input.dim() not in (3, 4):
            raise LayerInputError(f"Softmax2d: expected a 3-D or 4-D input, got shape {tuple(input.shape)}")
        return MF.softmax(input, -3, _stacklevel=5)
