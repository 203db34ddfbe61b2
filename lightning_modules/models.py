"""Plain PyTorch models used by the command line; ``convert`` makes them manual."""

from __future__ import annotations

import itertools
from collections import OrderedDict

from torch import nn


class SigmoidMLP(nn.Sequential):
    """The classic network: Linear → Sigmoid per hidden layer, a Linear output (logits).

    Layers are named ``fc1, sigmoid1, fc2, ...`` so the TensorBoard tags read
    ``error_terms/fc1``. ``sizes`` lists the widths from the input to the output.
    """

    def __init__(self, sizes: list[int] = [64, 32, 10]):  # noqa: B006 - read-only; shows in --print_config
        if len(sizes) < 2:
            raise ValueError(f"SigmoidMLP: sizes needs an input and an output width, got {sizes}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes), start=1):
            layers[f"fc{i}"] = nn.Linear(n_in, n_out)
            if i < len(sizes) - 1:
                layers[f"sigmoid{i}"] = nn.Sigmoid()
        super().__init__(layers)
