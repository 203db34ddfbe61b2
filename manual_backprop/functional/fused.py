"""A chain of Linear layers, each followed by a Sigmoid, Tanh, ReLU or nothing, as one Function.

    z_l = a_{l−1} · W_lᵀ + b_l,   a_l = f_l(z_l),   l = 1 … L   (a_0 the input)

Its backward is backpropagation as the textbook writes it for a whole network, from the last layer
down (f_l′ read from the output a_l: σ′ = a(1 − a), tanh′ = 1 − a², relu′ = [a > 0]):

    δ_L = ∂C/∂a_L ⊙ f_L′(z_L)                 the error term at the top
    ∂C/∂W_l = δ_lᵀ · a_{l−1}                  each weight: δ times the input it multiplied
    ∂C/∂b_l = Σ_n δ_l
    ∂C/∂a_{l−1} = δ_l · W_l                   the blame passed down (Σ_k δ_k · w_kj)
    δ_{l−1} = ∂C/∂a_{l−1} ⊙ f_{l−1}′(z_{l−1})

(the Linear layer's three products are :func:`manual_backprop.functional.linear.linear_gradients`,
the activation's factor each activation's own ``chain``).

Why: each hand-written Function costs a fixed amount of Python per call, forward and backward, which a
small layer feels; one Function for the whole chain pays it once. z_l is a temporary nobody else sees,
so f_l is computed in place on it. Backward needs every a_l; the Function returns them (a_1 … a_{L−1})
as extra outputs, which :func:`linear_chain` drops, so that it may save them (a saved output keeps its
place in a second derivative: what reaches a_l there joins ∂C/∂a_l). Autograd saves the same tensors
as for the layers one by one: a_0 (when W_1 needs a gradient), each a_l, each W_l.

``manual_backprop.nn.Sequential`` calls it when it meets such a run of layers, none with hooks; the
numbers are the very same as the layers' one by one (the same kernels run, in the same order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from manual_backprop.errors import LayerInputError
from manual_backprop.functional import activations
from manual_backprop.functional._function import ManualFunction
from manual_backprop.functional.linear import check_linear, linear_gradients, linear_tangent

#: the activations a chain may hold after a Linear layer: name → (Function, its f computed in place)
ACTIVATIONS: dict[str, tuple[type[activations.Elementwise], object]] = {
    "sigmoid": (activations.Sigmoid, torch.sigmoid_),
    "tanh": (activations.Tanh, torch.tanh_),
    "relu": (activations.ReLU, torch.relu_),
}


class LinearChain(ManualFunction):
    """a_l = f_l(a_{l−1} · W_lᵀ + b_l) for l = 1 … L: Linear layers, each with an optional activation.

    δ_L = ∂C/∂a_L ⊙ f_L′(z_L)
    ∂C/∂W_l = δ_lᵀ · a_{l−1}
    ∂C/∂b_l = Σ_n δ_l
    δ_{l−1} = (δ_l · W_l) ⊙ f_{l−1}′(z_{l−1})

    Forward mode: ż_l = ȧ_{l−1} · W_lᵀ + a_{l−1} · Ẇ_lᵀ + ḃ_l,  ȧ_l = f_l′(z_l) ⊙ ż_l.
    ``kinds``: one activation name per layer (a key of :data:`ACTIVATIONS`, or None); ``params``:
    W_1, b_1, W_2, b_2, … (a bias may be None). Returns a_L, then a_1 … a_{L−1}.
    """

    @staticmethod
    def forward(a_0: Tensor, kinds: tuple[str | None, ...], *params: Tensor | None) -> tuple[Tensor, ...]:
        a, outputs = a_0, []
        for layer, kind in enumerate(kinds):
            a = F.linear(a, params[2 * layer], params[2 * layer + 1])  # z_l = a_{l−1} · W_lᵀ + b_l
            if kind is not None:
                a = ACTIVATIONS[kind][1](a)  # a_l = f_l(z_l), written over z_l
            outputs.append(a)
        return outputs[-1], *outputs[:-1]

    @staticmethod
    def setup_context(ctx, inputs, output):
        a_0, ctx.kinds, *params = inputs
        ctx.set_materialize_grads(False)  # a_1 … a_{L−1} get a gradient of their own only in a second derivative
        needs_w_1 = ctx.needs_input_grad[2]
        # a_0 only if ∂C/∂W_1 reads it, as Linear saves it; a_1 … a_{L−1}, read by f′ and by ∂C/∂W above them;
        # a_L only if f_L′ reads it
        ctx.save_for_backward(a_0 if needs_w_1 else None, *params[0::2], *output[1:],
                              output[0] if ctx.kinds[-1] is not None else None)
        ctx.save_for_forward(a_0, *params[0::2], *output[1:], output[0])

    @staticmethod
    def backward(ctx, grad_a_top: Tensor | None, *grad_a_inner: Tensor | None):
        depth = len(ctx.kinds)
        a_0, *rest = ctx.saved_tensors
        weights, a = rest[:depth], [a_0, *rest[depth:]]  # a[l] = a_l, l = 0 … L
        needs = ctx.needs_input_grad[2:]
        grads: list[Tensor | None] = [None] * (2 * depth)
        grad_a = grad_a_top  # ∂C/∂a_L
        for layer in reversed(range(depth)):
            if layer < depth - 1 and grad_a_inner[layer] is not None:
                own = grad_a_inner[layer]  # (a second derivative only: a_l's own output gradient)
                grad_a = own if grad_a is None else grad_a + own
            if grad_a is None:
                continue  # nothing reaches this layer or any below it from above
            kind = ctx.kinds[layer]
            delta = grad_a if kind is None else ACTIVATIONS[kind][0].chain(grad_a, a[layer + 1])  # δ_l = ∂C/∂a_l ⊙ f′
            del grad_a  # (its memory back before the products)
            wanted = (layer > 0 or ctx.needs_input_grad[0], needs[2 * layer], needs[2 * layer + 1])  # (b None: False)
            grad_a, grads[2 * layer], grads[2 * layer + 1] = linear_gradients(  # δ_l·W_l, δ_lᵀ·a_{l−1}, Σ_n δ_l
                wanted, delta, a[layer], weights[layer])
            del delta
        return grad_a, None, *grads

    @staticmethod
    def jvp(ctx, tangent_a_0, _, *tangent_params):
        depth = len(ctx.kinds)
        a_0, *rest = ctx.saved_tensors
        weights, a = rest[:depth], [a_0, *rest[depth:]]
        tangent, tangents = tangent_a_0, []
        for layer, kind in enumerate(ctx.kinds):
            tangent = linear_tangent(a[layer], weights[layer], tangent, tangent_params[2 * layer],
                                     tangent_params[2 * layer + 1])  # ż_l
            if kind is not None:
                tangent = tangent * ACTIVATIONS[kind][0].df(a[layer + 1])  # ȧ_l = f_l′(z_l) ⊙ ż_l
            tangents.append(tangent)
        return tangents[-1], *tangents[:-1]


def linear_chain(input: Tensor, kinds: tuple[str | None, ...], *params: Tensor | None) -> Tensor:
    """a_L of :class:`LinearChain`: ``kinds`` one activation name (or None) per Linear layer, ``params``
    W_1, b_1, W_2, b_2, … Checks each layer's shapes as ``linear`` does."""
    if not kinds or len(params) != 2 * len(kinds):
        raise LayerInputError(f"linear_chain: {len(kinds)} layer(s) need {2 * len(kinds)} parameters "
                              f"(W, b per layer), got {len(params)}")
    check_linear(input, params[0], params[1])
    for layer in range(1, len(kinds)):
        weight, bias = params[2 * layer], params[2 * layer + 1]
        if weight.dim() != 2 or weight.shape[1] != params[2 * layer - 2].shape[0] or (
                bias is not None and tuple(bias.shape) != (weight.shape[0],)):
            raise LayerInputError(
                f"linear_chain: layer {layer} has weight shape {tuple(weight.shape)}"
                f"{'' if bias is None else f' and bias shape {tuple(bias.shape)}'}, which does not follow "
                f"layer {layer - 1}'s {params[2 * layer - 2].shape[0]} outputs")
    unknown = [kind for kind in kinds if kind is not None and kind not in ACTIVATIONS]
    if unknown:
        raise LayerInputError(f"linear_chain: activation {unknown[0]!r} is not one of {sorted(ACTIVATIONS)}")
    return LinearChain.call(input, tuple(kinds), *params)[0]
