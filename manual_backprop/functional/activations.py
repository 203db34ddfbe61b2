"""Activations: a = f(z), and the chain-rule factor ∂a/∂z they contribute to δ.

Elementwise activations share one backward, ``δ = ∂C/∂a ⊙ f′(z)``, written once in
:class:`Elementwise`; each activation states only f and f′. Softmax and log-softmax mix the
entries of a row, so they apply their full Jacobian (as a Jacobian-vector product) instead.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from manual_backprop.functional._function import ManualFunction


class Elementwise(ManualFunction):
    """Base of the elementwise activations a = f(z):  δ = ∂C/∂z = ∂C/∂a ⊙ f′(z).

    A subclass defines ``f(z, *args)`` and ``df(saved, *args)``, where ``saved`` is z, or a when
    ``saves = "output"`` (σ′ and tanh′ are cheaper from the output). Extra positional arguments are
    plain numbers (a slope, a threshold). A subclass with an in-place form ``f_`` also gets
    ``cls.Inplace``, a Function that overwrites z (like ``inplace=True`` in torch); it must save the
    output, since z is gone after the forward.
    """

    saves = "input"

    def __init_subclass__(cls, **kwargs):
        # torch.compile and torch.func want staticmethods, so the shared forward/backward are
        # built here as closures over this subclass's f and f′ (before ManualFunction wraps them).
        f, df, from_output = cls.f, cls.df, cls.saves == "output"

        def forward(z, *args):
            return f(z, *args)  # a = f(z)

        def setup_context(ctx, inputs, output):
            ctx.args = inputs[1:]
            ctx.save_for_backward(output if from_output else inputs[0])
            ctx.save_for_forward(output if from_output else inputs[0])

        def backward(ctx, grad_a):
            (saved,) = ctx.saved_tensors
            delta = grad_a * df(saved, *ctx.args)  # δ = ∂C/∂a ⊙ f′(z)
            return (delta,) + (None,) * len(ctx.args)

        def jvp(ctx, tangent_z, *tangent_args):
            (saved,) = ctx.saved_tensors
            return tangent_z * df(saved, *ctx.args)  # ȧ = f′(z) ⊙ ż

        cls.forward = staticmethod(forward)
        cls.setup_context = staticmethod(setup_context)
        cls.backward = staticmethod(backward)
        cls.jvp = staticmethod(jvp)
        if hasattr(cls, "f_"):
            cls.Inplace = _inplace_variant(cls, backward)
        super().__init_subclass__(**kwargs)

    @staticmethod
    def f(z: Tensor, *args) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def df(saved: Tensor, *args) -> Tensor:
        raise NotImplementedError


def _inplace_variant(cls, backward):
    if cls.saves != "output":
        raise TypeError(f"{cls.__name__}: an in-place activation must compute f′ from its output")
    f_ = cls.f_

    def forward(z, *args):
        return f_(z, *args)  # a = f(z), written over z

    def setup_context(ctx, inputs, output):
        ctx.mark_dirty(inputs[0])
        ctx.args = inputs[1:]
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    def jvp(ctx, tangent_z, *tangent_args):
        (a,) = ctx.saved_tensors
        return tangent_z.mul_(cls.df(a, *ctx.args))  # ȧ = f′(z) ⊙ ż, in place like the value

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
        return a * (1 - a)  # σ′(z) = a(1 − a)


class Tanh(Elementwise):
    """a = tanh(z);  tanh′(z) = 1 − a²."""

    saves = "output"

    @staticmethod
    def f(z):
        return torch.tanh(z)

    @staticmethod
    def df(a):
        return 1 - a * a  # tanh′(z) = 1 − a²


class ReLU(Elementwise):
    """a = max(z, 0);  relu′(z) = [z > 0], read from the output: a > 0 exactly where z > 0."""

    saves = "output"

    @staticmethod
    def f(z):
        return torch.relu(z)

    @staticmethod
    def f_(z):
        return torch.relu_(z)

    @staticmethod
    def df(a):
        return (a > 0).to(a.dtype)  # relu′(z) = [z > 0]


def sigmoid(input: Tensor) -> Tensor:
    """Like ``torch.sigmoid``; backward δ = ∂C/∂a · a(1 − a)."""
    return Sigmoid.call(input)


def tanh(input: Tensor) -> Tensor:
    """Like ``torch.tanh``; backward δ = ∂C/∂a · (1 − a²)."""
    return Tanh.call(input)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.relu``; backward δ = ∂C/∂a · [z > 0]."""
    return ReLU.Inplace.call(input) if inplace else ReLU.call(input)


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
