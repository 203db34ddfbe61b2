"""The linear layer: z = a_prev · Wᵀ + b.

Index letters used below: n batch (every leading dimension of the input, flattened),
i input features, o output features.
"""

from __future__ import annotations

import math

import torch
import torch.autograd.forward_ad as forward_ad
from torch import Tensor
from torch._C._functorch import peek_interpreter_stack

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction


class Linear(ManualFunction):
    """z = a_prev · Wᵀ + b, with the three gradients of the chain rule written out.

    ∂C/∂a_prev = δ · W        (n,o)·(o,i) → (n,i)   the blame passed to the layer below
    ∂C/∂W      = δᵀ · a_prev  (o,n)·(n,i) → (o,i)   each weight: δ times the input it multiplied
    ∂C/∂b      = Σ_n δ        (o,)                   a bias multiplies a constant 1

    Forward mode (jvp), for tangents ȧ_prev, Ẇ, ḃ:  ż = ȧ_prev · Wᵀ + a_prev · Ẇᵀ + ḃ.
    """

    @staticmethod
    def forward(a_prev: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return torch.nn.functional.linear(a_prev, weight, bias)  # z = a_prev · Wᵀ + b

    @staticmethod
    def setup_context(ctx, inputs, output):
        a_prev, weight, _ = inputs
        needs_a_prev, needs_weight = ctx.needs_input_grad[:2]
        # ∂C/∂W needs a_prev, ∂C/∂a_prev needs W: save only what a wanted gradient reads (the first
        # layer's input needs no gradient, so its W is not saved, as in torch)
        ctx.save_for_backward(a_prev if needs_weight else None, weight if needs_a_prev else None)
        ctx.save_for_forward(a_prev, weight)

    @staticmethod
    def backward(ctx, delta: Tensor):
        a_prev, weight = ctx.saved_tensors
        return linear_gradients(ctx.needs_input_grad, delta, a_prev, weight)

    @staticmethod
    def jvp(ctx, tangent_a_prev, tangent_weight, tangent_bias):
        a_prev, weight = ctx.saved_tensors
        return linear_tangent(a_prev, weight, tangent_a_prev, tangent_weight, tangent_bias)


def linear_gradients(needs_input_grad, delta: Tensor, a_prev: Tensor | None, weight: Tensor | None):
    """Linear's backward, from δ = ∂C/∂z: (∂C/∂a_prev, ∂C/∂W, ∂C/∂b), each only where needed
    (shared with the fused Linear + activation Functions of :mod:`manual_backprop.functional.fused`)."""
    grad_a_prev = grad_weight = grad_bias = None
    delta_no = delta if delta.dim() == 2 else delta.reshape(-1, delta.shape[-1])  # leading dims: more samples n
    if needs_input_grad[0]:
        grad_a_prev = delta @ weight  # ∂C/∂a_prev = δ · W  (Σ_k δ_k · w_kj for each input j)
    if needs_input_grad[1]:
        a_prev_ni = a_prev if a_prev.dim() == 2 else a_prev.reshape(-1, a_prev.shape[-1])
        grad_weight = delta_no.T @ a_prev_ni  # ∂C/∂W = δᵀ · a_prev
    if needs_input_grad[2]:
        grad_bias = delta_no.sum(0)  # ∂C/∂b = Σ_n δ
    return grad_a_prev, grad_weight, grad_bias


def linear_tangent(a_prev: Tensor, weight: Tensor, tangent_a_prev, tangent_weight, tangent_bias) -> Tensor:
    """Linear's forward-mode derivative: ż = ȧ_prev · Wᵀ + a_prev · Ẇᵀ + ḃ (absent tangents are zero)."""
    tangent_z = torch.zeros((), dtype=a_prev.dtype, device=a_prev.device)
    if tangent_a_prev is not None:
        tangent_z = tangent_z + tangent_a_prev @ weight.T  # ∂z/∂a_prev · ȧ_prev
    if tangent_weight is not None:
        tangent_z = tangent_z + a_prev @ tangent_weight.T  # ∂z/∂W · Ẇ
    if tangent_bias is not None:
        tangent_z = tangent_z + tangent_bias  # ∂z/∂b · ḃ
    return tangent_z


def check_linear(input: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """The shapes ``linear`` needs: a 2-D weight, an input ending in in_features, a bias of out_features."""
    if weight.dim() != 2:
        raise LayerInputError(f"linear: weight must be 2-D (out_features, in_features), got shape {shape(weight)}")
    if input.dim() == 0 or input.shape[-1] != weight.shape[1]:
        raise LayerInputError(
            f"linear: input shape {shape(input)} does not end in in_features={weight.shape[1]} "
            f"(weight shape {shape(weight)}); expected (*, {weight.shape[1]})"
        )
    if bias is not None and shape(bias) != (weight.shape[0],):
        raise LayerInputError(
            f"linear: bias shape {shape(bias)} does not match out_features={weight.shape[0]}"
        )


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Like ``torch.nn.functional.linear``, with the hand-written backward of :class:`Linear`."""
    check_linear(input, weight, bias)
    return Linear.call(input, weight, bias)


class Bilinear(ManualFunction):
    """z_k = x1ᵀ · W_k · x2 + b_k  for each output k.

    Index letters: n batch (leading dims flattened), i features of x1, j features of x2, k outputs.
    ∂C/∂x1_ni = Σ_k δ_nk Σ_j W_kij x2_nj      (the blame on x1 goes through W·x2)
    ∂C/∂x2_nj = Σ_k δ_nk Σ_i W_kij x1_ni      (and on x2 through x1ᵀ·W)
    ∂C/∂W_kij = Σ_n δ_nk x1_ni x2_nj          (δ times the product of the two inputs it multiplied)
    ∂C/∂b_k   = Σ_n δ_nk
    """

    @staticmethod
    def forward(x1: Tensor, x2: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return torch.nn.functional.bilinear(x1, x2, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x1, x2, weight, _ = inputs
        ctx.save_for_backward(x1, x2, weight)
        ctx.save_for_forward(x1, x2, weight)

    @staticmethod
    def backward(ctx, delta: Tensor):
        x1, x2, weight = ctx.saved_tensors
        n_out, n_in1, n_in2 = weight.shape
        delta_nk = delta.reshape(-1, n_out)
        x1_ni, x2_nj = x1.reshape(-1, n_in1), x2.reshape(-1, n_in2)
        grad_x1 = grad_x2 = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            blame_nij = (delta_nk @ weight.reshape(n_out, -1)).reshape(-1, n_in1, n_in2)  # Σ_k δ_nk W_kij
        if ctx.needs_input_grad[0]:
            grad_x1 = (blame_nij @ x2_nj.unsqueeze(-1)).reshape(x1.shape)  # Σ_j (Σ_k δ_k W_kij) x2_j
        if ctx.needs_input_grad[1]:
            grad_x2 = (x1_ni.unsqueeze(1) @ blame_nij).reshape(x2.shape)  # Σ_i x1_i (Σ_k δ_k W_kij)
        if ctx.needs_input_grad[2]:
            inputs_nij = x1_ni.unsqueeze(2) * x2_nj.unsqueeze(1)  # x1_i x2_j, the product W_kij multiplied
            grad_weight = (delta_nk.T @ inputs_nij.reshape(-1, n_in1 * n_in2)).reshape(weight.shape)  # Σ_n δ x1 x2
        if ctx.needs_input_grad[3]:
            grad_bias = delta_nk.sum(0)  # ∂C/∂b = Σ_n δ
        return grad_x1, grad_x2, grad_weight, grad_bias

    @staticmethod
    def jvp(ctx, tangent_x1, tangent_x2, tangent_weight, tangent_bias):
        x1, x2, weight = ctx.saved_tensors
        bilinear_form = torch.nn.functional.bilinear  # linear in each argument: its own derivative
        out = torch.zeros((), dtype=x1.dtype, device=x1.device)
        if tangent_x1 is not None:
            out = out + bilinear_form(tangent_x1, x2, weight)  # ẋ1ᵀ W x2
        if tangent_x2 is not None:
            out = out + bilinear_form(x1, tangent_x2, weight)  # x1ᵀ W ẋ2
        if tangent_weight is not None:
            out = out + bilinear_form(x1, x2, tangent_weight)  # x1ᵀ Ẇ x2
        if tangent_bias is not None:
            out = out + tangent_bias
        return out


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Like ``torch.nn.functional.bilinear``, with the hand-written backward of :class:`Bilinear`."""
    if weight.dim() != 3:
        raise LayerInputError(f"bilinear: weight must be 3-D (out, in1, in2), got shape {shape(weight)}")
    if input1.dim() == 0 or input1.shape[:-1] != input2.shape[:-1]:
        raise LayerInputError(
            f"bilinear: input1 shape {shape(input1)} and input2 shape {shape(input2)} must agree on every "
            "dimension but the last"
        )
    if input1.shape[-1] != weight.shape[1] or input2.shape[-1] != weight.shape[2]:
        raise LayerInputError(
            f"bilinear: inputs end in {input1.shape[-1]} and {input2.shape[-1]} features, but weight shape "
            f"{shape(weight)} expects {weight.shape[1]} and {weight.shape[2]}"
        )
    if bias is not None and shape(bias) != (weight.shape[0],):
        raise LayerInputError(f"bilinear: bias shape {shape(bias)} does not match out_features={weight.shape[0]}")
    return Bilinear.call(input1, input2, weight, bias)


class Reshape(ManualFunction):
    """a = z laid out in another shape (Flatten, Unflatten):  ∂C/∂z = ∂C/∂a laid out back in z's shape.

    No calculus: every number moves, none changes. The output is a copy, not a view of z, so that an
    in-place layer after it (``ReLU(inplace=True)``) may write into it.
    """

    @staticmethod
    def forward(z: Tensor, shape: tuple[int, ...]) -> Tensor:
        a = z.reshape(shape)
        if torch.compiler.is_compiling():
            return a.clone()  # dynamo cannot trace _is_view(); inductor drops a copy it does not need
        return a.clone() if a._is_view() else a

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.z_shape, ctx.a_shape = inputs[0].shape, inputs[1]

    @staticmethod
    def backward(ctx, grad_a: Tensor):
        return grad_a.reshape(ctx.z_shape), None  # each δ goes back to the place its number came from

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, _):
        return tangent_z.reshape(ctx.a_shape)


def _records_gradient(z: Tensor) -> bool:
    """Whether a node is built for z: grad mode on and z requiring grad, or forward mode or a torch.func
    transform watching. (Otherwise a reshape is torch's own view: no node, no copy, as in
    :mod:`manual_backprop.functional.shape`; the network's input usually needs no gradient.)"""
    if torch.is_grad_enabled() and z.requires_grad:
        return True
    if torch.compiler.is_compiling():
        return False
    return forward_ad._current_level >= 0 or peek_interpreter_stack() is not None


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Like ``torch.flatten`` (what ``nn.Flatten`` calls), as a copy with the backward of :class:`Reshape`
    (torch's own view when no gradient is recorded)."""
    if input.dim() == 0:
        return Reshape.call(input, (1,)) if _records_gradient(input) else input.reshape(1)
    start, end = start_dim % input.dim(), end_dim % input.dim()
    if start > end:
        raise LayerInputError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {shape(input)}")
    if not _records_gradient(input):
        return torch.flatten(input, start_dim, end_dim)
    flat = math.prod(input.shape[start : end + 1])
    return Reshape.call(input, (*input.shape[:start], flat, *input.shape[end + 1 :]))


def unflatten(input: Tensor, dim: int, sizes: tuple[int, ...]) -> Tensor:
    """Like ``torch.unflatten`` (what ``nn.Unflatten`` calls), as a copy with the backward of :class:`Reshape`
    (torch's own view when no gradient is recorded)."""
    if input.dim() == 0:
        raise LayerInputError("unflatten: the input is a scalar and has no dimension to unflatten")
    d = dim % input.dim()
    sizes = tuple(sizes)
    known = math.prod(s for s in sizes if s != -1)
    if sizes.count(-1) > 1 or (known == 0 or input.shape[d] % known) or (-1 not in sizes and known != input.shape[d]):
        raise LayerInputError(
            f"unflatten: sizes {sizes} do not multiply to dimension {dim} of size {input.shape[d]} (input shape "
            f"{shape(input)})"
        )
    if not _records_gradient(input):
        return torch.unflatten(input, dim, sizes)
    if -1 in sizes:
        sizes = tuple(input.shape[d] // known if s == -1 else s for s in sizes)
    return Reshape.call(input, (*input.shape[:d], *sizes, *input.shape[d + 1 :]))
