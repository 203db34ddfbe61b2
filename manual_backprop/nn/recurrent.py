"""Drop-in recurrent layers: RNN, LSTM, GRU and their cells. Each subclasses its ``torch.nn`` twin
(same constructor, parameters ``weight_ih_l0``, ``weight_hh_l0_reverse``, … and ``state_dict``) and
only changes ``forward`` to call the hand-written backpropagation through time of
:mod:`manual_backprop.functional.recurrent`. They take and return what torch's do: a tensor or a
PackedSequence, and ``(output, h_n)`` or ``(output, (h_n, c_n))``.
"""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop.functional import recurrent as MR
from manual_backprop.nn._base import names_the_layer, register


def _sequence_args(module: nn.RNNBase) -> tuple:
    """What torch's modules pass to ``torch.lstm`` & co. after input and hx: the module's settings."""
    module._update_flat_weights()  # the parameters as they are now (e.g. under torch.func.functional_call)
    return (module._flat_weights, module.bias, module.num_layers, module.dropout, module.training,
            module.bidirectional, module.batch_first)


@register(nn.RNN)
class RNN(nn.RNN):
    """h_t = tanh (or relu)(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh), through time
    (see :class:`manual_backprop.functional.recurrent.Recurrence`)."""

    @names_the_layer
    def forward(self, input, hx=None):
        sequence = {"RNN_TANH": MR.rnn_tanh, "RNN_RELU": MR.rnn_relu}[self.mode]
        return sequence(input, hx, *_sequence_args(self))


@register(nn.LSTM)
class LSTM(nn.LSTM):
    """The LSTM through time, with proj_size (see :class:`manual_backprop.functional.recurrent.LSTMStep`)."""

    @names_the_layer
    def forward(self, input, hx=None):
        output, h_n, c_n = MR.lstm(input, hx, *_sequence_args(self))
        return output, (h_n, c_n)


@register(nn.GRU)
class GRU(nn.GRU):
    """The GRU through time (see :class:`manual_backprop.functional.recurrent.GRUStep`)."""

    @names_the_layer
    def forward(self, input, hx=None):
        return MR.gru(input, hx, *_sequence_args(self))


@register(nn.RNNCell)
class RNNCell(nn.RNNCell):
    """h' = tanh (or relu)(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh) (see :class:`manual_backprop.functional.recurrent.Cell`)."""

    @names_the_layer
    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        cells = {"tanh": MR.rnn_tanh_cell, "relu": MR.rnn_relu_cell}
        if self.nonlinearity not in cells:
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return cells[self.nonlinearity](input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


@register(nn.LSTMCell)
class LSTMCell(nn.LSTMCell):
    """One LSTM step, returns (h', c') (see :class:`manual_backprop.functional.recurrent.LSTMStep`)."""

    @names_the_layer
    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        return MR.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


@register(nn.GRUCell)
class GRUCell(nn.GRUCell):
    """One GRU step (see :class:`manual_backprop.functional.recurrent.GRUStep`)."""

    @names_the_layer
    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return MR.gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
