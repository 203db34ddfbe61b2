"""Drop-in replacements for ``torch.nn`` modules, with hand-written backward passes."""

from manual_backprop.nn._base import SUPPORTED_MODULES
from manual_backprop.nn.activations import LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from manual_backprop.nn.linear import Linear
from manual_backprop.nn.losses import CrossEntropyLoss, MSELoss

__all__ = [
    "SUPPORTED_MODULES",
    "CrossEntropyLoss",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
]
