"""Hand-written Functions behind ``torch.nn.functional``-style calls.

Each entry has the name, arguments, defaults and ``reduction`` modes of its ``torch.nn.functional``
twin; its gradient comes from a ``torch.autograd.Function`` whose backward is the chain rule
written out (never autograd, never an ATen ``*_backward`` kernel).
"""

from manual_backprop.functional.activations import log_softmax, relu, sigmoid, softmax, tanh
from manual_backprop.functional.linear import linear
from manual_backprop.functional.losses import cross_entropy, mse_loss

__all__ = ["cross_entropy", "linear", "log_softmax", "mse_loss", "relu", "sigmoid", "softmax", "tanh"]
