"""A Linear layer and the activation after it as one Function: a = f(a_prev · Wᵀ + b).

The chain rule is the same as for the two layers one after the other; only the bookkeeping is less.
Backward first turns ∂C/∂a into the error term of the pre-activation,

    δ = ∂C/∂z = ∂C/∂a ⊙ f′(z)          (f′ read from the output a: σ′ = a(1 − a), tanh′ = 1 − a², relu′ = [a > 0])

and then gives Linear's three gradients from δ (:func:`manual_backprop.functional.linear.linear_gradients`):
∂C/∂a_prev = δ · W, ∂C/∂W = δᵀ · a_prev, ∂C/∂b = Σ_n δ.

Why: each hand-written Function costs a fixed amount of Python per call, forward and backward, which
a small layer feels; one Function for the pair halves it. The pre-activation z is a temporary that
nothing else sees, so the activation is computed in place on it (one tensor less), and both saved
tensors (a_prev, a) are the Function's input and output, as with the two layers separately.

``manual_backprop.nn.Sequential`` calls these when it meets a Linear followed by a Sigmoid, Tanh or
ReLU, neither with hooks; the numbers are the very same as the two layers' (the same kernels run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from manual_backprop.functional import activations
from manual_backprop.functional._function import ManualFunction
from manual_backprop.functional.linear import check_linear, linear_gradients, linear_tangent


def _linear_then(activation: type[activations.Elementwise], f_) -> type[ManualFunction]:
    """The fused Function of Linear followed by ``activation`` (an Elementwise that saves its output),
    whose in-place form is ``f_``."""
    assert activation.saves == "output"
    df, chain = activation.df, activation.chain

    def forward(a_prev, weight, bias):
        z = F.linear(a_prev, weight, bias)  # z = a_prev · Wᵀ + b
        return f_(z)  # a = f(z), written over z (a temporary nobody else sees)

    def setup_context(ctx, inputs, output):
        a_prev, weight, _ = inputs
        needs_a_prev, needs_weight = ctx.needs_input_grad[:2]
        # ∂C/∂W needs a_prev, ∂C/∂a_prev needs W, f′ needs a: save only what a wanted gradient reads
        ctx.save_for_backward(a_prev if needs_weight else None, weight if needs_a_prev else None, output)
        ctx.save_for_forward(a_prev, weight, output)

    def backward(ctx, grad_a):
        a_prev, weight, a = ctx.saved_tensors
        delta = chain(grad_a, a)  # δ = ∂C/∂z = ∂C/∂a ⊙ f′(z)
        return linear_gradients(ctx.needs_input_grad, delta, a_prev, weight)  # δ·W, δᵀ·a_prev, Σ_n δ

    def jvp(ctx, tangent_a_prev, tangent_weight, tangent_bias):
        a_prev, weight, a = ctx.saved_tensors
        tangent_z = linear_tangent(a_prev, weight, tangent_a_prev, tangent_weight, tangent_bias)  # ż
        return tangent_z * df(a)  # ȧ = f′(z) ⊙ ż

    name = f"Linear{activation.__name__}"
    body = {"forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward), "jvp": staticmethod(jvp), "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"a = {activation.__name__}(a_prev · Wᵀ + b): Linear and {activation.__name__} as one "
                       f"Function.\n\n    δ = ∂C/∂a ⊙ f′(z), then ∂C/∂a_prev = δ · W, ∂C/∂W = δᵀ · a_prev, "
                       f"∂C/∂b = Σ_n δ."}
    return type(name, (ManualFunction,), body)


LinearSigmoid = _linear_then(activations.Sigmoid, torch.sigmoid_)
LinearTanh = _linear_then(activations.Tanh, torch.tanh_)
LinearReLU = _linear_then(activations.ReLU, torch.relu_)


def linear_then(input: Tensor, weight: Tensor, bias: Tensor | None, function: type[ManualFunction]) -> Tensor:
    """``f(linear(input, weight, bias))`` for one of the fused Functions above, with linear's checks."""
    check_linear(input, weight, bias)
    return function.call(input, weight, bias)
