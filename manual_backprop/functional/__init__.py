"""Hand-written Functions behind ``torch.nn.functional``-style calls.

Each entry has the name, arguments, defaults and ``reduction`` modes of its ``torch.nn.functional``
twin; its gradient comes from a ``torch.autograd.Function`` whose backward is the chain rule
written out (never autograd, never an ATen ``*_backward`` kernel).
"""

from manual_backprop.functional.activations import (
    celu,
    elu,
    gelu,
    glu,
    hardshrink,
    hardsigmoid,
    hardswish,
    hardtanh,
    leaky_relu,
    log_softmax,
    logsigmoid,
    mish,
    prelu,
    relu,
    relu6,
    rrelu,
    selu,
    sigmoid,
    silu,
    softmax,
    softmin,
    softplus,
    softshrink,
    softsign,
    tanh,
    tanhshrink,
    threshold,
)
from manual_backprop.functional.dropout import (
    alpha_dropout,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    feature_alpha_dropout,
)
from manual_backprop.functional.embedding import embedding, embedding_bag
from manual_backprop.functional.linear import bilinear, linear
from manual_backprop.functional.losses import cross_entropy, mse_loss

__all__ = [
    "alpha_dropout",
    "bilinear",
    "celu",
    "cross_entropy",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "elu",
    "embedding",
    "embedding_bag",
    "feature_alpha_dropout",
    "gelu",
    "glu",
    "hardshrink",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "leaky_relu",
    "linear",
    "log_softmax",
    "logsigmoid",
    "mish",
    "mse_loss",
    "prelu",
    "relu",
    "relu6",
    "rrelu",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softmin",
    "softplus",
    "softshrink",
    "softsign",
    "tanh",
    "tanhshrink",
    "threshold",
]
