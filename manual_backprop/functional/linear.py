"""The linear layer: z = a_prev · Wᵀ + b.

Index letters used below: n batch (every leading dimension of the input, flattened),
i input features, o output features.
"""

from __future__ import annotations

import torch
from torch import Tensor

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
        ctx.save_for_backward(a_prev, weight)
        ctx.save_for_forward(a_prev, weight)

    @staticmethod
    def backward(ctx, delta: Tensor):
        a_prev, weight = ctx.saved_tensors
        grad_a_prev = grad_weight = grad_bias = None
        delta_no = delta.reshape(-1, delta.shape[-1])  # every leading dimension is one more sample n
        if ctx.needs_input_grad[0]:
            grad_a_prev = delta @ weight  # ∂C/∂a_prev = δ · W  (Σ_k δ_k · w_kj for each input j)
        if ctx.needs_input_grad[1]:
            grad_weight = delta_no.T @ a_prev.reshape(-1, a_prev.shape[-1])  # ∂C/∂W = δᵀ · a_prev
        if ctx.needs_input_grad[2]:
            grad_bias = delta_no.sum(0)  # ∂C/∂b = Σ_n δ
        return grad_a_prev, grad_weight, grad_bias

    @staticmethod
    def jvp(ctx, tangent_a_prev, tangent_weight, tangent_bias):
        a_prev, weight = ctx.saved_tensors
        tangent_z = torch.zeros((), dtype=a_prev.dtype, device=a_prev.device)
        if tangent_a_prev is not None:
            tangent_z = tangent_z + tangent_a_prev @ weight.T  # ∂z/∂a_prev · ȧ_prev
        if tangent_weight is not None:
            tangent_z = tangent_z + a_prev @ tangent_weight.T  # ∂z/∂W · Ẇ
        if tangent_bias is not None:
            tangent_z = tangent_z + tangent_bias  # ∂z/∂b · ḃ
        return tangent_z


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Like ``torch.nn.functional.linear``, with the hand-written backward of :class:`Linear`."""
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
    return Linear.call(input, weight, bias)
