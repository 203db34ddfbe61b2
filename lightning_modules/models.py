"""Plain PyTorch models used by the command line and the examples; ``convert`` makes them manual.

Any ``nn.Module`` trains the same way (``--model.network=<class path>``); these are the small
fully-connected networks the data sets here need, named so that TensorBoard tags read
``error_terms/fc1``.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Literal

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}
Activation = Literal["sigmoid", "tanh", "relu", "leaky_relu", "gelu"]


class MLP(nn.Sequential):
    """A fully-connected network: Linear → activation per hidden layer, then a Linear output.

    ``sizes`` lists the widths from the input to the output; ``activation`` is the hidden layers'
    σ; ``output_activation="sigmoid"`` squashes the output too (the classic network trained with
    squared error on 0/1 targets), otherwise the output is the last Linear's z (logits). Layers
    are named ``fc1, <activation>1, fc2, ...``.
    """

    def __init__(
        self,
        sizes: list[int] = [64, 32, 10],  # noqa: B006 - read-only; shows in --print_config
        activation: Activation = "sigmoid",
        output_activation: Literal["sigmoid"] | None = None,
    ):
        name = type(self).__name__
        if len(sizes) < 2:
            raise ValueError(f"{name}: sizes needs an input and an output width, got {sizes}")
        if any(not isinstance(n, int) or n < 1 for n in sizes):
            raise ValueError(f"{name}: every width in sizes must be a positive integer, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"{name}: unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if output_activation not in (None, "sigmoid"):
            raise ValueError(f"{name}: output_activation must be None or 'sigmoid', got {output_activation!r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes), start=1):
            layers[f"fc{i}"] = nn.Linear(n_in, n_out)
            if i < len(sizes) - 1:
                layers[f"{activation}{i}"] = ACTIVATIONS[activation]()
        if output_activation is not None:
            layers[f"{output_activation}{len(sizes) - 1}"] = ACTIVATIONS[output_activation]()
        super().__init__(layers)


class SigmoidMLP(MLP):
    """The classic network: Linear → Sigmoid per hidden layer, a Linear output (logits).

    Layers are named ``fc1, sigmoid1, fc2, ...`` so the TensorBoard tags read
    ``error_terms/fc1``. ``sizes`` lists the widths from the input to the output.
    """

    def __init__(self, sizes: list[int] = [64, 32, 10]):  # noqa: B006 - read-only; shows in --print_config
        super().__init__(sizes, activation="sigmoid")
