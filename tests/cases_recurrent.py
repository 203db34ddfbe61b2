"""Recurrent rows of the shared tables: RNN (tanh, relu), LSTM (projections too), GRU and their cells.

Sizes are tiny (seq 3, batch 2, input 2, hidden 3) so gradcheck and gradgradcheck stay fast. A
Function case returns one tensor, so a sequence or LSTM cell appears once per output it checks.
Dropout draws random masks, so it is only in MODULE_CASES (seeded like the native module).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import manual_backprop.nn.recurrent  # noqa: F401  (registers the drop-ins for convert)
from manual_backprop.functional import recurrent as MR

from cases import DT, Case, ModuleCase, leaf

SEQ, BATCH, N_IN, HIDDEN = 3, 2, 2, 3
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def _randn(*shape):
    return leaf(torch.randn(*shape, dtype=DT))


# -- cells -------------------------------------------------------------------------------------------


def _cell_args(kind, batch=(BATCH,), bias=True, states=1):
    rows = GATES[kind] * HIDDEN
    return lambda: (_randn(*batch, N_IN), *[_randn(*batch, HIDDEN) for _ in range(states)],
                    _randn(rows, N_IN), _randn(rows, HIDDEN), *([_randn(rows), _randn(rows)] if bias else []))


def _lstm_cell(cell, output):
    return lambda x, h, c, *w: cell(x, (h, c), *w)[output]


def _one_sample(cell):
    """torch's cells take (batch, features) only; nn.GRUCell adds the batch of one around them."""
    return lambda x, h, *w: cell(x.unsqueeze(0), h.unsqueeze(0), *w).squeeze(0)


CELL_CASES = [
    Case("recurrent-rnn_tanh_cell", MR.rnn_tanh_cell, torch.rnn_tanh_cell, _cell_args("rnn_tanh")),
    Case("recurrent-rnn_tanh_cell-no-bias", MR.rnn_tanh_cell, torch.rnn_tanh_cell, _cell_args("rnn_tanh", bias=False)),
    Case("recurrent-rnn_relu_cell", MR.rnn_relu_cell, torch.rnn_relu_cell, _cell_args("rnn_relu")),
    Case("recurrent-gru_cell", MR.gru_cell, torch.gru_cell, _cell_args("gru")),
    Case("recurrent-gru_cell-unbatched", MR.gru_cell, _one_sample(torch.gru_cell), _cell_args("gru", batch=())),
    Case("recurrent-lstm_cell-h", _lstm_cell(MR.lstm_cell, 0), _lstm_cell(torch.lstm_cell, 0),
         _cell_args("lstm", states=2)),
    Case("recurrent-lstm_cell-c", _lstm_cell(MR.lstm_cell, 1), _lstm_cell(torch.lstm_cell, 1),
         _cell_args("lstm", states=2)),
]


# -- sequences ---------------------------------------------------------------------------------------


def _sequence_args(kind, layers=1, bidirectional=False, bias=True, batch_first=False, proj=0, rows=None,
                   hidden=HIDDEN):
    """x (or a packed sequence's data: ``rows`` of them), h0 (and c0), then the flat parameters."""
    directions = 2 if bidirectional else 1
    gate_rows, h_out = GATES[kind] * hidden, proj or hidden

    def make():
        x = _randn(rows, N_IN) if rows else _randn(*((BATCH, SEQ) if batch_first else (SEQ, BATCH)), N_IN)
        states = [_randn(layers * directions, BATCH, h_out)]
        if kind == "lstm":
            states.append(_randn(layers * directions, BATCH, hidden))
        params = []
        for layer in range(layers):
            for _ in range(directions):
                params += [_randn(gate_rows, N_IN if layer == 0 else directions * h_out), _randn(gate_rows, h_out)]
                params += [_randn(gate_rows), _randn(gate_rows)] if bias else []
                params += [_randn(proj, hidden)] if proj else []
        return (x, *states, *params)

    return make


def _sequence(fn, kind, output, layers=1, bidirectional=False, bias=True, batch_first=False):
    """fn(x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)[output]."""
    n_states = 2 if kind == "lstm" else 1

    def call(x, *tensors):
        states, params = tensors[:n_states], list(tensors[n_states:])
        hx = tuple(states) if kind == "lstm" else states[0]
        return fn(x, hx, params, bias, layers, 0.0, False, bidirectional, batch_first)[output]

    return call


def _seq_case(kind, output, **options):
    settings = {k: v for k, v in options.items() if k not in ("proj", "hidden")}
    label = "-".join([kind, ["output", "h_n", "c_n"][output]]
                     + [k if v is True else f"{k}{v}" for k, v in options.items() if v is not False])
    return Case(f"recurrent-{label}", _sequence(getattr(MR, kind), kind, output, **settings),
                _sequence(getattr(torch, kind), kind, output, **settings), _sequence_args(kind, **options))


LENGTHS = [2, 3]  # unequal, unsorted: the PackedSequence sorts them, longest first
_PACKED = pack_padded_sequence(torch.zeros(SEQ, BATCH, 1), LENGTHS, enforce_sorted=False)


def _packed(fn, kind, output, native):
    """A packed sequence of LENGTHS. torch.{kind} takes (data, batch_sizes, hx sorted longest first …)
    and returns the sorted states; ours takes a PackedSequence and keeps the caller's order, as nn.GRU."""
    n_states = 2 if kind == "lstm" else 1
    sorted_, unsorted = _PACKED.sorted_indices, _PACKED.unsorted_indices

    def call(data, *tensors):
        states, params = tensors[:n_states], list(tensors[n_states:])
        if native:
            states = [s.index_select(1, sorted_) for s in states]
            hx = tuple(states) if kind == "lstm" else states[0]
            out = fn(data, _PACKED.batch_sizes, hx, params, True, 1, 0.0, False, True)
            out = (out[0], *[s.index_select(1, unsorted) for s in out[1:]])
        else:
            hx = tuple(states) if kind == "lstm" else states[0]
            out = fn(PackedSequence(data, _PACKED.batch_sizes, sorted_, unsorted), hx, params, True, 1, 0.0, False,
                     True, False)
            out = (out[0].data, *out[1:])
        return out[output]

    return call


def _packed_case(kind, output):
    return Case(f"recurrent-{kind}-packed-bidirectional-{['output', 'h_n', 'c_n'][output]}",
                _packed(getattr(MR, kind), kind, output, native=False),
                _packed(getattr(torch, kind), kind, output, native=True),
                _sequence_args(kind, bidirectional=True, rows=sum(LENGTHS), hidden=2))


# gradcheck and gradgradcheck cost grows with the number of parameters squared: the multi-layer and
# bidirectional rows use hidden 2 (every configuration is also checked against torch in MODULE_CASES).
SEQUENCE_CASES = [
    _seq_case("rnn_tanh", 0),
    _seq_case("rnn_tanh", 1, layers=2, bidirectional=True, hidden=2),
    _seq_case("rnn_relu", 0, batch_first=True),
    _seq_case("gru", 1, batch_first=True),
    _seq_case("gru", 0, layers=2, bias=False, hidden=2),
    _seq_case("lstm", 0),
    _seq_case("lstm", 2, layers=2, bias=False, batch_first=True, hidden=2),
    _seq_case("lstm", 1, proj=2),
    _packed_case("gru", 0),
    _packed_case("rnn_tanh", 1),
    _packed_case("lstm", 2),
]

FUNCTION_CASES: list[Case] = CELL_CASES + SEQUENCE_CASES


# -- modules -----------------------------------------------------------------------------------------


class WithStates(nn.Module):
    """rnn(x, (h0, c0)) with h0 and c0 as separate inputs, so the tables cast them and check their gradients."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, h0, c0):
        return self.rnn(x, (h0, c0))


class Packed(nn.Module):
    """rnn(PackedSequence(data, …), hx): sequences of unequal ``lengths``, packed once here (the
    packing's own bookkeeping is native; the data is the leaf whose gradient is checked)."""

    def __init__(self, rnn: nn.Module, lengths: list[int], enforce_sorted: bool = False):
        super().__init__()
        self.rnn = rnn
        padded = torch.zeros(max(lengths), len(lengths), 1)
        self.meta = pack_padded_sequence(padded, lengths, enforce_sorted=enforce_sorted)[1:]

    def forward(self, data, *hx):
        batch_sizes, *indices = self.meta
        sorted_indices, unsorted_indices = (i if i is None else i.to(data.device) for i in indices)  # data's device
        packed = PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices)
        return self.rnn(packed, (hx if len(hx) > 1 else hx[0]) if hx else None)


def _module(make, *shapes, train=True, id_):
    return ModuleCase(f"recurrent-{id_}", make, lambda: tuple(_randn(*s) for s in shapes), train)


MODULE_CASES: list[ModuleCase] = [
    _module(lambda: nn.RNN(N_IN, HIDDEN), (SEQ, BATCH, N_IN), id_="RNN"),
    _module(lambda: nn.RNN(N_IN, HIDDEN, 2, nonlinearity="relu", bidirectional=True, batch_first=True),
            (BATCH, SEQ, N_IN), (4, BATCH, HIDDEN), id_="RNN-relu-2-layers-bidirectional-batch_first-h0"),
    _module(lambda: nn.RNN(N_IN, HIDDEN, bias=False), (SEQ, N_IN), (1, HIDDEN), id_="RNN-unbatched-no-bias"),
    _module(lambda: nn.LSTM(N_IN, HIDDEN), (SEQ, BATCH, N_IN), id_="LSTM"),
    _module(lambda: WithStates(nn.LSTM(N_IN, HIDDEN, 2, bidirectional=True)),
            (SEQ, BATCH, N_IN), (4, BATCH, HIDDEN), (4, BATCH, HIDDEN), id_="LSTM-2-layers-bidirectional-h0-c0"),
    _module(lambda: nn.LSTM(N_IN, HIDDEN, batch_first=True, bias=False), (BATCH, SEQ, N_IN),
            id_="LSTM-batch_first-no-bias"),
    _module(lambda: WithStates(nn.LSTM(N_IN, HIDDEN, 2, proj_size=2, bidirectional=True)),
            (SEQ, BATCH, N_IN), (4, BATCH, 2), (4, BATCH, HIDDEN), id_="LSTM-proj_size-bidirectional"),
    _module(lambda: WithStates(nn.LSTM(N_IN, HIDDEN)), (SEQ, N_IN), (1, HIDDEN), (1, HIDDEN), id_="LSTM-unbatched"),
    _module(lambda: nn.GRU(N_IN, HIDDEN, 2, bidirectional=True), (SEQ, BATCH, N_IN), id_="GRU-2-layers-bidirectional"),
    _module(lambda: nn.GRU(N_IN, HIDDEN, batch_first=True), (SEQ, N_IN), (1, HIDDEN), id_="GRU-unbatched-h0"),
    # dropout between layers: the same masks as torch for the same seed (CPU)
    _module(lambda: nn.GRU(N_IN, HIDDEN, 3, dropout=0.5, bidirectional=True, batch_first=True), (BATCH, SEQ, N_IN),
            id_="GRU-dropout-3-layers"),
    _module(lambda: nn.LSTM(N_IN, HIDDEN, 2, dropout=0.5), (SEQ, BATCH, N_IN), train=False, id_="LSTM-dropout-eval"),
    # packed sequences of unequal lengths, sorted by PackedSequence or already sorted
    _module(lambda: Packed(nn.RNN(N_IN, HIDDEN, 2, bidirectional=True), [2, 3, 1]), (6, N_IN), (4, 3, HIDDEN),
            id_="RNN-packed-bidirectional-h0"),
    _module(lambda: Packed(nn.LSTM(N_IN, HIDDEN, 2, dropout=0.5), [1, 3]), (4, N_IN), (2, 2, HIDDEN),
            (2, 2, HIDDEN), id_="LSTM-packed-dropout-h0-c0"),
    _module(lambda: Packed(nn.GRU(N_IN, HIDDEN, bidirectional=True), [3, 2, 2], enforce_sorted=True), (7, N_IN),
            id_="GRU-packed-sorted"),
    _module(lambda: Packed(nn.LSTM(N_IN, HIDDEN, proj_size=2), [2, 3]), (5, N_IN), id_="LSTM-packed-proj_size"),
    # cells
    _module(lambda: nn.RNNCell(N_IN, HIDDEN), (BATCH, N_IN), id_="RNNCell"),
    _module(lambda: nn.RNNCell(N_IN, HIDDEN, nonlinearity="relu", bias=False), (BATCH, N_IN), (BATCH, HIDDEN),
            id_="RNNCell-relu-no-bias-h"),
    _module(lambda: nn.LSTMCell(N_IN, HIDDEN), (BATCH, N_IN), id_="LSTMCell"),
    _module(lambda: WithStates(nn.LSTMCell(N_IN, HIDDEN)), (N_IN,), (HIDDEN,), (HIDDEN,), id_="LSTMCell-unbatched-hx"),
    _module(lambda: nn.GRUCell(N_IN, HIDDEN), (BATCH, N_IN), (BATCH, HIDDEN), id_="GRUCell-h"),
    _module(lambda: nn.GRUCell(N_IN, HIDDEN), (N_IN,), id_="GRUCell-unbatched"),
]
