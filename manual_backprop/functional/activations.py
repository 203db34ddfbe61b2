"""Activations: a = f(z), and the chain-rule factor ∂a/∂z they contribute to δ.

Elementwise activations share one backward, ``δ = ∂C/∂a ⊙ f′(z)``, written once in
:class:`Elementwise`; each activation states only f and f′. Softmax and log-softmax mix the
entries of a row, so they apply their full Jacobian (as a Jacobian-vector product) instead.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from manual_backprop.errors import LayerInputError
from manual_backprop.functional._function import ManualFunction, may_write_in_place


class Elementwise(ManualFunction):
    """Base of the elementwise activations a = f(z):  δ = ∂C/∂z = ∂C/∂a ⊙ f′(z).

    A subclass defines ``f(z, *args)`` and ``df(saved, *args)``, where ``saved`` is z, or a when
    ``saves = "output"`` (σ′ and tanh′ are cheaper from the output). Extra positional arguments are
    plain numbers or strings (a slope, a threshold, an approximation). A subclass with an in-place
    form ``f_`` also gets ``cls.Inplace``, a Function that overwrites z like ``inplace=True`` in
    torch; call it through :meth:`Elementwise.inplace`.
    """

    saves = "input"

    def __init_subclass__(cls, **kwargs):
        # torch.compile and torch.func want staticmethods, so the shared forward/backward are
        # built here as closures over this subclass's f and f′ (before ManualFunction wraps them).
        if cls.__dict__.get("_twin"):  # ManualFunction's jvp twin inherits what is built here
            super().__init_subclass__(**kwargs)
            return
        f, df, from_output = cls.f, cls.df, cls.saves == "output"
        if "chain" not in cls.__dict__:
            cls.chain = staticmethod(_default_chain(df, cls.df_is_fresh))
        chain = cls.chain

        def forward(z, *args):
            return f(z, *args)  # a = f(z)

        def setup_context(ctx, inputs, output):
            ctx.args = inputs[1:]
            ctx.save_for_backward(output if from_output else inputs[0])
            ctx.save_for_forward(output if from_output else inputs[0])

        def backward(ctx, grad_a):
            (saved,) = ctx.saved_tensors
            delta = chain(grad_a, saved, *ctx.args)  # δ = ∂C/∂a ⊙ f′(z)
            return (delta,) + (None,) * len(ctx.args)

        def jvp(ctx, tangent_z, *tangent_args):
            (saved,) = ctx.saved_tensors
            return tangent_z * df(saved, *ctx.args)  # ȧ = f′(z) ⊙ ż

        cls.forward = staticmethod(forward)
        cls.setup_context = staticmethod(setup_context)
        cls.backward = staticmethod(backward)
        cls.jvp = staticmethod(jvp)
        if hasattr(cls, "f_"):
            cls.Inplace = _inplace_variant(cls)
        super().__init_subclass__(**kwargs)

    @staticmethod
    def f(z: Tensor, *args) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def df(saved: Tensor, *args) -> Tensor:
        raise NotImplementedError

    #: whether ``df`` returns a new tensor of its own, shaped like the input (then ``chain`` may multiply
    #: ∂C/∂a into it rather than into a third full-size tensor)
    df_is_fresh = False

    @staticmethod
    def chain(grad_a: Tensor, saved: Tensor, *args) -> Tensor:
        """δ = ∂C/∂a ⊙ f′(z): the activation's factor of the chain rule. Each subclass gets
        :func:`_default_chain` of its ``df`` unless it computes the same product its own way."""
        raise NotImplementedError

    @classmethod
    def inplace(cls, z: Tensor, *args) -> Tensor:
        """a = f(z) written over z; returns z."""
        if torch._C._functorch.is_functorch_wrapped_tensor(z):
            # torch.func cannot batch an in-place Function: compute a out of place (from a copy of z
            # when f′ needs z), then write it over z; clone and copy_ only move numbers
            return z.copy_(cls.call(z if cls.saves == "output" else z.clone(), *args))
        out = cls.Inplace.call(z, *args)
        return out[0] if isinstance(out, tuple) else out


def _default_chain(df, df_is_fresh: bool):
    """``chain`` of an activation that states only f′: δ = ∂C/∂a ⊙ f′(z). (A closure, not a method reading
    the class: dynamo traces a backward that calls it, and cannot read a plain attribute of a Function.)"""

    def chain(grad_a: Tensor, saved: Tensor, *args) -> Tensor:
        slope = df(saved, *args)
        if df_is_fresh and slope.shape == grad_a.shape and slope.dtype == grad_a.dtype and may_write_in_place(grad_a):
            return slope.mul_(grad_a)  # δ = f′(z) ⊙ ∂C/∂a, in the buffer f′ came in
        return grad_a * slope  # δ = ∂C/∂a ⊙ f′(z)

    return chain


def _inplace_variant(cls):
    """The in-place Function of an Elementwise subclass. z is overwritten by a, so f′ comes from a
    (``saves = "output"``), or from a copy of z taken before it is overwritten. The copy is a second
    output (z_before = z, so its own gradient passes straight to z): being an output, it may be
    saved, and a second derivative still flows through it."""
    f_, df, from_output = cls.f_, cls.df, cls.saves == "output"

    if from_output:

        def forward(z, *args):
            return f_(z, *args)  # a = f(z), written over z

        def setup_context(ctx, inputs, output):
            ctx.mark_dirty(inputs[0])
            ctx.args = inputs[1:]
            ctx.save_for_backward(output)
            ctx.save_for_forward(output)

        def backward(ctx, grad_a):
            (a,) = ctx.saved_tensors
            return (grad_a * df(a, *ctx.args),) + (None,) * len(ctx.args)  # δ = ∂C/∂a ⊙ f′(z)

        def jvp(ctx, tangent_z, *tangent_args):
            (a,) = ctx.saved_tensors
            return tangent_z.mul_(df(a, *ctx.args))  # ȧ = f′(z) ⊙ ż, in place like the value

    else:

        def forward(z, *args):
            z_before = z.clone()  # f′ needs z, which f_ is about to overwrite
            return f_(z, *args), z_before

        def setup_context(ctx, inputs, output):
            ctx.mark_dirty(inputs[0])
            ctx.args = inputs[1:]
            ctx.save_for_backward(output[1])
            ctx.save_for_forward(output[1])

        def backward(ctx, grad_a, grad_z_before):
            (z,) = ctx.saved_tensors
            delta = grad_a * df(z, *ctx.args)  # δ = ∂C/∂a ⊙ f′(z)
            if grad_z_before is not None:
                delta = delta + grad_z_before  # ∂z_before/∂z = 1 (only a second derivative sends one)
            return (delta,) + (None,) * len(ctx.args)

        def jvp(ctx, tangent_z, *tangent_args):
            (z,) = ctx.saved_tensors
            tangent_z_before = tangent_z.clone()  # ż_before = ż
            return tangent_z.mul_(df(z, *ctx.args)), tangent_z_before  # ȧ = f′(z) ⊙ ż, in place like the value

    body = {"forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward), "jvp": staticmethod(jvp), "__module__": cls.__module__,
            "generate_vmap_rule": False,
            "__doc__": f"{cls.__name__}, computed in place (not under torch.func.vmap)."}
    return type(f"{cls.__name__}_", (ManualFunction,), body)


class Sigmoid(Elementwise):
    """a = σ(z) = 1 / (1 + e^(−z));  σ′(z) = a(1 − a)."""

    saves = "output"

    @staticmethod
    def f(z):
        return torch.sigmoid(z)

    @staticmethod
    def df(a):
        return torch.addcmul(a, a, a, value=-1)  # σ′(z) = a(1 − a) = a − a·a, in one pass over a

    @staticmethod
    def chain(grad_a, a):
        """δ = ∂C/∂a ⊙ a(1 − a), as g·a − (g·a)·a: two passes like g ⊙ σ′, but the second one in place, into
        the buffer the first made (fresh memory costs more than a pass). In place only when no second
        derivative is being built (``create_graph``): autograd would need g·a as it was."""
        if not may_write_in_place():
            return grad_a * Sigmoid.df(a)
        delta = grad_a * a  # ∂C/∂a ⊙ a
        return delta.addcmul_(delta, a, value=-1)  # − (∂C/∂a ⊙ a) ⊙ a


class Tanh(Elementwise):
    """a = tanh(z);  tanh′(z) = 1 − a²."""

    saves = "output"
    df_is_fresh = True

    @staticmethod
    def f(z):
        return torch.tanh(z)

    @staticmethod
    def df(a):
        return torch.addcmul(a.new_ones(()), a, a, value=-1)  # tanh′(z) = 1 − a·a, in one pass over a


class ReLU(Elementwise):
    """a = max(z, 0);  relu′(z) = [z > 0], read from the output: a > 0 exactly where z > 0."""

    saves = "output"
    df_is_fresh = True

    @staticmethod
    def f(z):
        return torch.relu(z)

    @staticmethod
    def f_(z):
        return torch.relu_(z)

    @staticmethod
    def df(a):
        return torch.sign(a)  # relu′(z) = [z > 0] = sign(a), as a ≥ 0 (one pass; a > 0 then a cast takes two)


def sigmoid(input: Tensor) -> Tensor:
    """Like ``torch.sigmoid``; backward δ = ∂C/∂a · a(1 − a)."""
    return Sigmoid.call(input)


def tanh(input: Tensor) -> Tensor:
    """Like ``torch.tanh``; backward δ = ∂C/∂a · (1 − a²)."""
    return Tanh.call(input)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.relu``; backward δ = ∂C/∂a · [z > 0]."""
    return ReLU.inplace(input) if inplace else ReLU.call(input)


def _save_output_and_dim(ctx, inputs, output):
    """setup_context of softmax and log-softmax: both backwards read only their output a."""
    z, ctx.dim, _ = inputs
    ctx.z_dtype = z.dtype
    ctx.save_for_backward(output)
    ctx.save_for_forward(output)


class Softmax(ManualFunction):
    """a_i = e^(z_i) / Σ_j e^(z_j) along ``dim``.

    Every a_i depends on every z_j: ∂a_i/∂z_j = a_i([i = j] − a_j). Applied to g = ∂C/∂a without
    building the matrix:  δ_j = Σ_i g_i · a_i([i = j] − a_j) = a_j (g_j − Σ_i g_i a_i).
    The Jacobian is symmetric, so forward mode has the same form: ȧ_i = a_i (ż_i − Σ_j a_j ż_j).
    """

    @staticmethod
    def forward(z: Tensor, dim: int, dtype: torch.dtype | None) -> Tensor:
        return torch.softmax(z, dim, dtype=dtype)

    setup_context = staticmethod(_save_output_and_dim)

    @staticmethod
    def backward(ctx, grad_a: Tensor):
        (a,) = ctx.saved_tensors
        weighted_sum = (grad_a * a).sum(ctx.dim, keepdim=True)  # Σ_i g_i a_i
        delta = a * (grad_a - weighted_sum)  # δ_j = a_j (g_j − Σ_i g_i a_i)
        return delta.to(ctx.z_dtype), None, None

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        (a,) = ctx.saved_tensors
        return a * (tangent_z - (tangent_z * a).sum(ctx.dim, keepdim=True))  # ȧ_i = a_i (ż_i − Σ_j a_j ż_j)


class LogSoftmax(ManualFunction):
    """a_i = z_i − log Σ_j e^(z_j) along ``dim``.

    ∂a_i/∂z_j = [i = j] − softmax_j, so  δ_j = g_j − softmax_j · Σ_i g_i, with softmax = e^a,
    and in forward mode  ȧ_i = ż_i − Σ_j softmax_j ż_j.
    """

    @staticmethod
    def forward(z: Tensor, dim: int, dtype: torch.dtype | None) -> Tensor:
        return torch.log_softmax(z, dim, dtype=dtype)

    setup_context = staticmethod(_save_output_and_dim)

    @staticmethod
    def backward(ctx, grad_a: Tensor):
        (a,) = ctx.saved_tensors
        delta = grad_a - a.exp() * grad_a.sum(ctx.dim, keepdim=True)  # δ_j = g_j − softmax_j Σ_i g_i
        return delta.to(ctx.z_dtype), None, None

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        (a,) = ctx.saved_tensors
        return tangent_z - (a.exp() * tangent_z).sum(ctx.dim, keepdim=True)  # ȧ_i = ż_i − Σ_j softmax_j ż_j


def _softmax_dim(name: str, input: Tensor, dim: int | None, stacklevel: int) -> int:
    if dim is not None:
        return dim
    # torch's deprecated implicit choice, with the same warning
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. "
        "Change the call to include dim=X as an argument.",
        stacklevel=stacklevel,
    )
    return 0 if input.dim() in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """Like ``torch.nn.functional.softmax``; backward δ = a ⊙ (g − Σ g ⊙ a)."""
    return Softmax.call(input, _softmax_dim("softmax", input, dim, _stacklevel), dtype)


def log_softmax(
    input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None
) -> Tensor:
    """Like ``torch.nn.functional.log_softmax``; backward δ = g − softmax · Σ g."""
    return LogSoftmax.call(input, _softmax_dim("log_softmax", input, dim, _stacklevel), dtype)


# -- the rest of the elementwise family: each states f and f′ ------------------------------------
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715


def _mask(condition: Tensor, like: Tensor) -> Tensor:
    return condition.to(like.dtype)


class Hardtanh(Elementwise):
    """a = clamp(z, min_val, max_val);  f′(z) = [min_val < z < max_val], the same from a."""

    saves = "output"

    @staticmethod
    def f(z, lo, hi):
        return torch.nn.functional.hardtanh(z, lo, hi)

    @staticmethod
    def f_(z, lo, hi):
        return torch.nn.functional.hardtanh_(z, lo, hi)

    @staticmethod
    def df(a, lo, hi):
        return _mask((a > lo) & (a < hi), a)  # 1 inside the ramp, 0 where clamped


class LeakyReLU(Elementwise):
    """a = z for z > 0, s·z otherwise;  f′(z) = 1 for z > 0, s otherwise."""

    @staticmethod
    def f(z, slope):
        return torch.nn.functional.leaky_relu(z, slope)

    @staticmethod
    def f_(z, slope):
        return torch.nn.functional.leaky_relu_(z, slope)

    @staticmethod
    def df(z, slope):
        return torch.where(z > 0, 1.0, torch.full_like(z, slope))


class ELU(Elementwise):
    """a = z for z > 0, α(e^z − 1) otherwise;  f′(z) = 1 for z > 0, α·e^z otherwise."""

    @staticmethod
    def f(z, alpha):
        return torch.nn.functional.elu(z, alpha)

    @staticmethod
    def f_(z, alpha):
        return torch.nn.functional.elu_(z, alpha)

    @staticmethod
    def df(z, alpha):
        return torch.where(z > 0, 1.0, alpha * torch.exp(z)).to(z.dtype)


class SELU(Elementwise):
    """a = λ·z for z > 0, λα(e^z − 1) otherwise (λ, α fixed);  f′(z) = λ for z > 0, λα·e^z otherwise."""

    @staticmethod
    def f(z):
        return torch.selu(z)

    @staticmethod
    def f_(z):
        return torch.selu_(z)

    @staticmethod
    def df(z):
        return SELU_SCALE * torch.where(z > 0, 1.0, SELU_ALPHA * torch.exp(z)).to(z.dtype)


class CELU(Elementwise):
    """a = z for z > 0, α(e^(z/α) − 1) otherwise;  f′(z) = 1 for z > 0, e^(z/α) otherwise."""

    @staticmethod
    def f(z, alpha):
        return torch.celu(z, alpha)

    @staticmethod
    def f_(z, alpha):
        return torch.celu_(z, alpha)

    @staticmethod
    def df(z, alpha):
        return torch.where(z > 0, 1.0, torch.exp(z / alpha)).to(z.dtype)


class GELU(Elementwise):
    """a = z·Φ(z) (Φ the normal CDF);  f′(z) = Φ(z) + z·φ(z).

    With ``approximate="tanh"``: a = ½z(1 + t), t = tanh(√(2/π)(z + 0.044715z³)),
    f′(z) = ½(1 + t) + ½z(1 − t²)·√(2/π)(1 + 3·0.044715z²).
    """

    @staticmethod
    def f(z, approximate):
        return torch.nn.functional.gelu(z, approximate=approximate)

    @staticmethod
    def df(z, approximate):
        if approximate == "tanh":
            t = torch.tanh(SQRT_2_OVER_PI * (z + GELU_TANH_C * z**3))
            return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * z * z)
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))  # Φ(z)
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # φ(z)
        return cdf + z * pdf


class SiLU(Elementwise):
    """a = z·σ(z);  f′(z) = σ(z)(1 + z(1 − σ(z)))."""

    @staticmethod
    def f(z):
        return torch.nn.functional.silu(z)

    @staticmethod
    def f_(z):
        return torch.nn.functional.silu(z, inplace=True)

    @staticmethod
    def df(z):
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))


class Mish(Elementwise):
    """a = z·tanh(softplus(z));  f′(z) = tanh(sp) + z·σ(z)(1 − tanh²(sp)),  sp = softplus(z)."""

    @staticmethod
    def f(z):
        return torch.nn.functional.mish(z)

    @staticmethod
    def f_(z):
        return torch.nn.functional.mish(z, inplace=True)

    @staticmethod
    def df(z):
        t = torch.tanh(torch.nn.functional.softplus(z))
        return t + z * torch.sigmoid(z) * (1 - t * t)


class Softplus(Elementwise):
    """a = log(1 + e^(βz))/β (= z where βz > threshold);  f′(z) = σ(βz) (= 1 there)."""

    @staticmethod
    def f(z, beta, threshold):
        return torch.nn.functional.softplus(z, beta, threshold)

    @staticmethod
    def df(z, beta, threshold):
        return torch.where(z * beta > threshold, 1.0, torch.sigmoid(z * beta)).to(z.dtype)


class Softsign(Elementwise):
    """a = z / (1 + |z|);  f′(z) = 1 / (1 + |z|)²."""

    @staticmethod
    def f(z):
        return z / (1 + z.abs())

    @staticmethod
    def df(z):
        return 1 / (1 + z.abs()) ** 2


class Hardsigmoid(Elementwise):
    """a = clamp(z/6 + ½, 0, 1);  f′(z) = 1/6 for −3 < z < 3, 0 outside."""

    @staticmethod
    def f(z):
        return torch.nn.functional.hardsigmoid(z)

    @staticmethod
    def f_(z):
        return torch.nn.functional.hardsigmoid(z, inplace=True)

    @staticmethod
    def df(z):
        return _mask((z > -3) & (z < 3), z) / 6


class Hardswish(Elementwise):
    """a = z·clamp(z/6 + ½, 0, 1);  f′(z) = 0 for z < −3, z/3 + ½ for −3 ≤ z ≤ 3, 1 for z > 3."""

    @staticmethod
    def f(z):
        return torch.nn.functional.hardswish(z)

    @staticmethod
    def f_(z):
        return torch.nn.functional.hardswish(z, inplace=True)

    @staticmethod
    def df(z):
        return torch.where(z < -3, 0.0, torch.where(z <= 3, z / 3 + 0.5, 1.0)).to(z.dtype)


class LogSigmoid(Elementwise):
    """a = log σ(z);  f′(z) = 1 − σ(z) = σ(−z)."""

    @staticmethod
    def f(z):
        return torch.nn.functional.logsigmoid(z)

    @staticmethod
    def df(z):
        return torch.sigmoid(-z)


class Tanhshrink(Elementwise):
    """a = z − tanh(z);  f′(z) = tanh²(z)."""

    @staticmethod
    def f(z):
        return z - torch.tanh(z)

    @staticmethod
    def df(z):
        return torch.tanh(z) ** 2


class Softshrink(Elementwise):
    """a = z − λ for z > λ, z + λ for z < −λ, 0 between;  f′(z) = [|z| > λ]."""

    @staticmethod
    def f(z, lambd):
        return torch.nn.functional.softshrink(z, lambd)

    @staticmethod
    def df(z, lambd):
        return _mask(z.abs() > lambd, z)


class Hardshrink(Elementwise):
    """a = z for |z| > λ, 0 otherwise;  f′(z) = [|z| > λ]."""

    @staticmethod
    def f(z, lambd):
        return torch.nn.functional.hardshrink(z, lambd)

    @staticmethod
    def df(z, lambd):
        return _mask(z.abs() > lambd, z)


class Threshold(Elementwise):
    """a = z for z > threshold, value otherwise;  f′(z) = [z > threshold]."""

    @staticmethod
    def f(z, threshold, value):
        return torch.nn.functional.threshold(z, threshold, value)

    @staticmethod
    def f_(z, threshold, value):
        return torch.nn.functional.threshold_(z, threshold, value)

    @staticmethod
    def df(z, threshold, value):
        return _mask(z > threshold, z)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.relu6``: hardtanh between 0 and 6."""
    return hardtanh(input, 0.0, 6.0, inplace)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.hardtanh``; backward δ = ∂C/∂a · [min_val < z < max_val]."""
    if min_val > max_val:
        raise LayerInputError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
    return Hardtanh.inplace(input, min_val, max_val) if inplace else Hardtanh.call(input, min_val, max_val)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.leaky_relu``; backward δ = ∂C/∂a · (1 if z > 0 else slope)."""
    return LeakyReLU.inplace(input, negative_slope) if inplace else LeakyReLU.call(input, negative_slope)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.elu``; backward δ = ∂C/∂a · (1 if z > 0 else α·e^z)."""
    return ELU.inplace(input, alpha) if inplace else ELU.call(input, alpha)


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.selu``; backward δ = ∂C/∂a · λ(1 if z > 0 else α·e^z)."""
    return SELU.inplace(input) if inplace else SELU.call(input)


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.celu``; backward δ = ∂C/∂a · (1 if z > 0 else e^(z/α))."""
    if alpha == 0:
        raise LayerInputError("celu: alpha must not be 0 (ZeroDivisionError in z/α)")
    return CELU.inplace(input, alpha) if inplace else CELU.call(input, alpha)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """Like ``torch.nn.functional.gelu``; backward δ = ∂C/∂a · (Φ(z) + z·φ(z)) (or the tanh form)."""
    if approximate not in ("none", "tanh"):
        raise LayerInputError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.call(input, approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.silu``; backward δ = ∂C/∂a · σ(z)(1 + z(1 − σ(z)))."""
    return SiLU.inplace(input) if inplace else SiLU.call(input)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.mish``; backward δ = ∂C/∂a · (tanh(sp) + z·σ(z)(1 − tanh²(sp)))."""
    return Mish.inplace(input) if inplace else Mish.call(input)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """Like ``torch.nn.functional.softplus``; backward δ = ∂C/∂a · σ(βz)."""
    return Softplus.call(input, beta, threshold)


def softsign(input: Tensor) -> Tensor:
    """Like ``torch.nn.functional.softsign``; backward δ = ∂C/∂a / (1 + |z|)²."""
    return Softsign.call(input)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.hardsigmoid``; backward δ = ∂C/∂a · [−3 < z < 3]/6."""
    return Hardsigmoid.inplace(input) if inplace else Hardsigmoid.call(input)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.hardswish``; backward δ = ∂C/∂a · (0, z/3 + ½ or 1)."""
    return Hardswish.inplace(input) if inplace else Hardswish.call(input)


def logsigmoid(input: Tensor) -> Tensor:
    """Like ``torch.nn.functional.logsigmoid``; backward δ = ∂C/∂a · σ(−z)."""
    return LogSigmoid.call(input)


def tanhshrink(input: Tensor) -> Tensor:
    """Like ``torch.nn.functional.tanhshrink``; backward δ = ∂C/∂a · tanh²(z)."""
    return Tanhshrink.call(input)


def softshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """Like ``torch.nn.functional.softshrink``; backward δ = ∂C/∂a · [|z| > λ]."""
    if lambd < 0:
        raise LayerInputError(f"softshrink: lambda must be greater or equal to 0, got {lambd}")
    return Softshrink.call(input, lambd)


def hardshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """Like ``torch.nn.functional.hardshrink``; backward δ = ∂C/∂a · [|z| > λ]."""
    return Hardshrink.call(input, lambd)


def threshold(input: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.threshold``; backward δ = ∂C/∂a · [z > threshold]."""
    return Threshold.inplace(input, threshold, value) if inplace else Threshold.call(input, threshold, value)


# -- activations with a parameter, randomness, or several inputs per output ---------------------
class PReLU(ManualFunction):
    """a = z for z > 0, w_c·z otherwise (w per channel c = dim 1, or one w for all).

    δ = ∂C/∂a · (1 if z > 0 else w_c);   ∂C/∂w_c = Σ over all but the channel of ∂C/∂a · z · [z ≤ 0].
    """

    @staticmethod
    def forward(z: Tensor, weight: Tensor) -> Tensor:
        return torch.nn.functional.prelu(z, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def _per_channel(z: Tensor, weight: Tensor) -> Tensor:
        """w laid out to broadcast against z: along dim 1 (dim 0 for a 1-D z), or a scalar."""
        if weight.numel() == 1 or z.dim() == 0:
            return weight.reshape(())
        shape = [1] * z.dim()
        shape[1 if z.dim() >= 2 else 0] = -1
        return weight.reshape(shape)

    @staticmethod
    def backward(ctx, grad_a: Tensor):
        z, weight = ctx.saved_tensors
        positive = z > 0
        w = PReLU._per_channel(z, weight)
        grad_z = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_z = torch.where(positive, grad_a, grad_a * w)  # ∂a/∂z = 1 or w_c
        if ctx.needs_input_grad[1]:
            per_element = torch.where(positive, 0.0, grad_a * z)  # ∂a/∂w_c = z where z ≤ 0
            if weight.numel() == 1:
                grad_weight = per_element.sum().reshape(weight.shape)  # one w: sum everywhere
            else:
                channel = 1 if z.dim() >= 2 else 0
                dims = [d for d in range(z.dim()) if d != channel]
                grad_weight = per_element.sum(dims).reshape(weight.shape)  # Σ over all but the channel
        return grad_z, grad_weight

    @staticmethod
    def jvp(ctx, tangent_z, tangent_weight):
        z, weight = ctx.saved_tensors
        positive = z > 0
        out = torch.zeros_like(z)
        if tangent_z is not None:
            out = out + torch.where(positive, tangent_z, tangent_z * PReLU._per_channel(z, weight))
        if tangent_weight is not None:
            out = out + torch.where(positive, 0.0, z * PReLU._per_channel(z, tangent_weight))
        return out


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """Like ``torch.nn.functional.prelu``; backward δ = ∂C/∂a · (1 or w), ∂C/∂w = Σ ∂C/∂a · z · [z ≤ 0]."""
    channels = input.shape[1] if input.dim() >= 2 else 1  # as torch: a 1-D input is one channel
    if weight.numel() != 1 and weight.numel() != channels:
        raise LayerInputError(
            f"prelu: weight has {weight.numel()} parameters but the input (shape {tuple(input.shape)}) has "
            f"{channels} channels; expected 1 or {channels}"
        )
    return PReLU.call(input, weight)


class RReLU(ManualFunction):
    """Training mode: a = z for z > 0, r·z otherwise, with r drawn uniformly from [lower, upper]
    per element (torch's own draw, so the same seed gives the same r). (In eval mode RReLU is a
    leaky ReLU with slope (lower + upper)/2, and :func:`rrelu` uses :class:`LeakyReLU`.)

    δ = ∂C/∂a · r  (r = 1 where z > 0): the forward records each element's factor as ``noise``.
    """

    generate_vmap_rule = False  # a random draw per element cannot be batched

    @staticmethod
    def forward(z: Tensor, lower: float, upper: float):
        noise = torch.empty_like(z)
        a = torch.ops.aten.rrelu_with_noise(z, noise, lower, upper, True)  # a forward op; fills noise with r
        return a, noise

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.save_for_forward(output[1])

    @staticmethod
    def backward(ctx, grad_a: Tensor, _):
        (noise,) = ctx.saved_tensors
        return grad_a * noise, None, None  # δ = ∂C/∂a · r

    @staticmethod
    def jvp(ctx, tangent_z, *_):
        (noise,) = ctx.saved_tensors
        return tangent_z * noise, None


def rrelu(
    input: Tensor, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False, inplace: bool = False
) -> Tensor:
    """Like ``torch.nn.functional.rrelu``; backward δ = ∂C/∂a · r, the slope each element drew."""
    if not training:
        return leaky_relu(input, (lower + upper) / 2, inplace)
    if inplace:
        raise LayerInputError(
            "rrelu: inplace=True in training is not supported by the manual version; use inplace=False"
        )
    return RReLU.call(input, lower, upper)[0]


class GLU(ManualFunction):
    """Split z in halves u, v along ``dim``:  a = u ⊙ σ(v).

    ∂C/∂u = ∂C/∂a ⊙ σ(v),   ∂C/∂v = ∂C/∂a ⊙ u ⊙ σ(v)(1 − σ(v)),   δ = [∂C/∂u, ∂C/∂v] along dim.
    """

    @staticmethod
    def forward(z: Tensor, dim: int) -> Tensor:
        return torch.nn.functional.glu(z, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, ctx.dim = inputs
        ctx.save_for_backward(z)
        ctx.save_for_forward(z)

    @staticmethod
    def backward(ctx, grad_a: Tensor):
        (z,) = ctx.saved_tensors
        u, v = z.chunk(2, ctx.dim)
        gate = torch.sigmoid(v)  # σ(v)
        grad_u = grad_a * gate  # ∂a/∂u = σ(v)
        grad_v = grad_a * u * gate * (1 - gate)  # ∂a/∂v = u·σ′(v)
        return torch.cat([grad_u, grad_v], ctx.dim), None

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, _):
        (z,) = ctx.saved_tensors
        u, v = z.chunk(2, ctx.dim)
        tangent_u, tangent_v = tangent_z.chunk(2, ctx.dim)
        gate = torch.sigmoid(v)
        return tangent_u * gate + u * gate * (1 - gate) * tangent_v


def glu(input: Tensor, dim: int = -1) -> Tensor:
    """Like ``torch.nn.functional.glu``; backward [∂C/∂a·σ(v), ∂C/∂a·u·σ′(v)]."""
    if input.dim() == 0 or input.shape[dim] % 2:
        raise LayerInputError(
            f"glu: halving dimension {dim} of input shape {tuple(input.shape)} needs an even size"
        )
    return GLU.call(input, dim)


class Softmin(ManualFunction):
    """a = softmax(−z) along ``dim``:  δ_j = −a_j (g_j − Σ_i g_i a_i)  (softmax's, times ∂(−z)/∂z = −1)."""

    @staticmethod
    def forward(z: Tensor, dim: int, dtype: torch.dtype | None) -> Tensor:
        return torch.softmax(-z, dim, dtype=dtype)

    setup_context = staticmethod(_save_output_and_dim)

    @staticmethod
    def backward(ctx, grad_a: Tensor):
        (a,) = ctx.saved_tensors
        delta = -a * (grad_a - (grad_a * a).sum(ctx.dim, keepdim=True))  # −a_j (g_j − Σ_i g_i a_i)
        return delta.to(ctx.z_dtype), None, None

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        (a,) = ctx.saved_tensors
        return -a * (tangent_z - (tangent_z * a).sum(ctx.dim, keepdim=True))


def softmin(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """Like ``torch.nn.functional.softmin``; backward δ = −a ⊙ (g − Σ g ⊙ a)."""
    return Softmin.call(input, _softmax_dim("softmin", input, dim, _stacklevel), dtype)
