"""The delta rule: backpropagation in the classic textbook notation, for sigmoid networks.

Textbooks (Rumelhart, Hinton & Williams 1986; Mitchell; Han & Kamber) write a unit's net input
I_j = Σ_i w_ij · O_i + θ_j and its output O_j = 1 / (1 + e^(−I_j)), and give each unit an error

    Error_j = O_j(1 − O_j) · (T_j − O_j)              at an output unit, T_j its target,
    Error_j = O_j(1 − O_j) · Σ_k Error_k · w_jk       at a hidden unit, k over the units it feeds,

and then move every weight and bias by

    w_ij += η · O_i · Error_j,        θ_j += η · Error_j.

This is gradient descent on C = ½ Σ (T − O)² (summed over the output units and the samples):
O_j(1 − O_j) is σ′(I_j), and T_j − O_j is −∂C/∂O_j, so Error_j = −δ_j = −∂C/∂I_j, and
w_ij += η · O_i · Error_j is w_ij −= η · ∂C/∂w_ij. For C = Σ (T − O)² without the ½,
∂C/∂O = 2(O − T): the same step needs 2η with the delta rule.

w_ij is the weight from unit i to unit j, which PyTorch stores as ``weight[j, i]`` (a Linear's rows
are the units it feeds); so Σ_k Error_k · w_jk is ``error_above @ weight_above``. Over a batch the
updates add up sample by sample (Σ_n), all computed from the weights before the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from manual_backprop.explain import _chain, _name

SIGMOID_NETWORK = ("sigmoid networks: a chain (nn.Sequential, nested or converted) of Linear → Sigmoid, ending in a "
                   "Sigmoid")


@dataclass(frozen=True)
class DeltaRuleStep:
    """What one step of :func:`delta_rule_step` computed, by the Linear layer's module path, one row
    per sample n and one column per unit j: ``outputs[path]`` is O_j (after the layer's sigmoid),
    ``errors[path]`` is Error_j. ``inputs`` holds O_i of the input units (the inputs themselves)."""

    inputs: Tensor
    outputs: dict[str, Tensor]
    errors: dict[str, Tensor]
    lr: float

    def __str__(self) -> str:
        rows = [("layer", "n", "O_j", "Error_j")]
        for path in self.outputs:
            for n in range(min(len(self.inputs), 4)):
                rows.append((_name(path), str(n), _vector(self.outputs[path][n]), _vector(self.errors[path][n])))
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        table = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join([f"delta rule step, η = {self.lr:g}: Error_j = O_j(1 − O_j)(T_j − O_j) at the output, "
                          "O_j(1 − O_j) · Σ_k Error_k · w_jk below; w_ij += η · O_i · Error_j", *table])


def _vector(t: Tensor) -> str:
    return "[" + ", ".join(f"{x:.4g}" for x in t.tolist()) + "]"


def _sigmoid_layers(network: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The Linear layers of a Linear → Sigmoid → ... → Linear → Sigmoid chain; an error naming the
    first layer that breaks that pattern."""
    who = "delta_rule_step"
    first, layers = _chain(network, who, SIGMOID_NETWORK)
    for act in first:
        if act.function is not None:
            raise TypeError(f"{who}: layer {_name(act.path)} ({act.name}) comes before the first Linear; it takes "
                            f"{SIGMOID_NETWORK}")
    for layer in layers:
        acts = [act for act in layer.activations if act.function is not None]  # an nn.Identity computes nothing
        not_sigmoid = next((act for act in acts if act.name != "Sigmoid"), None)
        if not_sigmoid is not None:
            raise TypeError(f"{who}: layer {_name(not_sigmoid.path)} ({not_sigmoid.name}) is not a Sigmoid; "
                            f"O_j(1 − O_j) is the sigmoid's derivative, so the delta rule takes {SIGMOID_NETWORK}")
        if len(acts) != 1:
            what = "is not followed by a Sigmoid" if not acts else f"is followed by {len(acts)} Sigmoids"
            raise TypeError(f"{who}: layer {_name(layer.path)} (Linear) {what}; it takes {SIGMOID_NETWORK}")
    return [(layer.path, layer.linear) for layer in layers]


def delta_rule_step(network: nn.Module, inputs, targets, lr: float) -> DeltaRuleStep:
    """One step of the delta rule on a sigmoid network, in place; returns O_j and Error_j of every layer.

    ``network``: Linear → Sigmoid → ... → Linear → Sigmoid (an ``nn.Sequential``, nested or
    converted). ``inputs``: (N, features), or (features,) for one sample; ``targets``: like the
    output, (N, outputs). Plain tensor arithmetic, no autograd: the formulas of the module doc,
    line by line. Equals one SGD step with ``lr`` on C = ½ Σ (T − O)².
    """
    layers = _sigmoid_layers(network)
    if isinstance(lr, bool) or not isinstance(lr, int | float):
        raise TypeError(f"delta_rule_step: lr (η) must be a number, got {lr!r}")
    weight = layers[0][1].weight
    x = torch.as_tensor(inputs, dtype=weight.dtype, device=weight.device)
    x = x[None] if x.dim() == 1 else x
    n_in = layers[0][1].in_features
    if x.dim() != 2 or x.shape[1] != n_in:
        raise ValueError(f"delta_rule_step: inputs of shape {tuple(x.shape)}; expected (N, {n_in}), or ({n_in},)")
    target = torch.as_tensor(targets, dtype=weight.dtype, device=weight.device)
    target = target[None] if target.dim() == 1 and len(x) == 1 else target
    n_out = layers[-1][1].out_features
    if target.shape != (len(x), n_out):
        raise ValueError(f"delta_rule_step: targets of shape {tuple(target.shape)}; the network's output has shape "
                         f"{(len(x), n_out)}")

    with torch.no_grad():
        outputs = {}
        o = x  # the input units pass their input on: O_i = x_i
        for path, linear in layers:
            net_input = o @ linear.weight.T  # I_j = Σ_i w_ij · O_i + θ_j
            if linear.bias is not None:
                net_input = net_input + linear.bias
            o = 1 / (1 + torch.exp(-net_input))  # O_j = 1 / (1 + e^(−I_j))
            outputs[path] = o

        errors = {}
        above = None
        for path, linear in reversed(layers):
            o = outputs[path]
            if above is None:
                errors[path] = o * (1 - o) * (target - o)  # Error_j = O_j(1 − O_j)(T_j − O_j)
            else:
                error_above, weight_above = above
                errors[path] = o * (1 - o) * (error_above @ weight_above)  # O_j(1 − O_j) · Σ_k Error_k · w_jk
            above = errors[path], linear.weight
        errors = {path: errors[path] for path, _ in layers}  # in the network's order, like outputs

        o_prev = x
        for path, linear in layers:  # every Error_j is known: now the weights may change
            linear.weight += lr * errors[path].T @ o_prev  # w_ij += η · Σ_n O_i · Error_j
            if linear.bias is not None:
                linear.bias += lr * errors[path].sum(0)  # θ_j += η · Σ_n Error_j
            o_prev = outputs[path]
    return DeltaRuleStep(inputs=x, outputs=outputs, errors=errors, lr=float(lr))
