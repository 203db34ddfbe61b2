"""Packed sequences: torch's ``_pack_padded_sequence`` and ``_pad_packed_sequence``, the two C functions
inside ``torch.nn.utils.rnn.pack_padded_sequence`` and ``pad_packed_sequence``.

A padded batch is a grid of cells (t, b), time step t of sequence b; sequence b is real for
t < length_b and padding after. Packing lists the real cells time step by time step,

    data[k] = padded[t_k, b_k]      k = 0 … N−1, in the order (t=0: b=0…n_0−1), (t=1: b=0…n_1−1), …

where n_t = batch_sizes[t] is the number of sequences still running at step t (the lengths are sorted
longest first, so they are the first n_t). Padding is the inverse: each real cell gets its packed row
back, every other cell the padding value. Both only move numbers, so the chain rule moves δ the same
way back:

    pack:  ∂C/∂padded[t, b] = δ_data[k] where (t, b) = (t_k, b_k), 0 on padding      (a pad of δ with 0)
    pad:   ∂C/∂data[k]      = δ_padded[t_k, b_k]                                      (a pack of δ)

so each Function's backward is the other Function, and the second derivative is hand-written too.

Both are written as row gathers (``index_select``) over the grid flattened time-major, cell t·B + b:

- ``positions[k] = t_k·B + b_k``: the cell of packed row k (pack reads these cells);
- ``source[t·B + b]``: the packed row of cell (t, b), or N (one row past the data, filled with the
  padding value) for a padding cell (pad reads these rows).

Index letters: t time step, b sequence in the (sorted) batch, k packed row, T the grid's time steps,
B its batch, N = Σ_t n_t the packed rows. The index arithmetic runs on the CPU, from ``batch_sizes``
(which torch keeps on the CPU); the gathers run where the data lives.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction


def _fill_grid(rows: Tensor, source: Tensor, fill: float, grid: tuple[int, int], batch_first: bool) -> Tensor:
    """Cell c of a (T, B, *) grid gets row ``source[c]`` of ``rows``, or ``fill`` where source[c] = N.

    With batch_first the result is the (B, T, *) transposed view of the time-major tensor, as torch's."""
    filler = rows.new_full((1, *rows.shape[1:]), fill)  # row N: the padding value
    out = torch.cat([rows, filler]).index_select(0, source).view(*grid, *rows.shape[1:])  # cell c ← row source[c]
    return out.transpose(0, 1) if batch_first else out


def _read_cells(grid: Tensor, positions: Tensor, batch_first: bool) -> Tensor:
    """Row k holds cell ``positions[k]`` of a (T, B, *) grid (a (B, T, *) one with batch_first)."""
    time_major = grid.transpose(0, 1) if batch_first else grid
    return time_major.reshape(-1, *grid.shape[2:]).index_select(0, positions)  # row k ← cell t_k·B + b_k


class PackPaddedSequence(ManualFunction):
    """data[k] = padded[t_k, b_k]: the real cells of a padded batch, time step by time step.

    ∂C/∂padded[t, b] = δ_data[k] for the cell (t, b) = (t_k, b_k) of packed row k, and 0 on every
    padding cell (no packed row read it): δ is padded back to the grid, with 0 as the padding value.
    Forward mode (jvp):  tangent_data[k] = tangent_padded[t_k, b_k].
    """

    @staticmethod
    def forward(padded: Tensor, positions: Tensor, source: Tensor, batch_first: bool) -> Tensor:
        return _read_cells(padded, positions, batch_first)

    @staticmethod
    def setup_context(ctx, inputs, output):
        padded, positions, source, ctx.batch_first = inputs
        ctx.grid = (padded.shape[1], padded.shape[0]) if ctx.batch_first else tuple(padded.shape[:2])  # (T, B)
        ctx.save_for_backward(positions, source)
        ctx.save_for_forward(positions, source)

    @staticmethod
    def backward(ctx, delta: Tensor):
        positions, source = ctx.saved_tensors
        grad_padded = None
        if ctx.needs_input_grad[0]:
            # ∂data[k]/∂padded[t, b] = 1 if (t, b) = (t_k, b_k), else 0: δ_data[k] goes back to its cell
            grad_padded = PadPackedSequence.call(delta, source, positions, ctx.grid, 0.0, ctx.batch_first)
        return grad_padded, None, None, None

    @staticmethod
    def jvp(ctx, tangent_padded, *_):
        positions, _ = ctx.saved_tensors
        return _read_cells(tangent_padded, positions, ctx.batch_first)  # the same move of the tangent


class PadPackedSequence(ManualFunction):
    """padded[t, b] = data[k] where (t, b) = (t_k, b_k), else the padding value.

    ∂C/∂data[k] = δ_padded[t_k, b_k]: each packed row collects the δ of the one cell it was copied to
    (padding cells hold a constant and pass nothing back): δ is packed.
    Forward mode (jvp):  tangent_padded[t_k, b_k] = tangent_data[k], and 0 on padding (a constant there).
    """

    @staticmethod
    def forward(data: Tensor, source: Tensor, positions: Tensor, grid: tuple[int, int], padding_value: float,
                batch_first: bool) -> Tensor:
        return _fill_grid(data, source, padding_value, grid, batch_first)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, source, positions, ctx.grid, _, ctx.batch_first = inputs
        ctx.save_for_backward(source, positions)
        ctx.save_for_forward(source, positions)

    @staticmethod
    def backward(ctx, delta: Tensor):
        source, positions = ctx.saved_tensors
        grad_data = None
        if ctx.needs_input_grad[0]:
            # ∂padded[t_k, b_k]/∂data[k] = 1, the only cell data[k] went to: read δ there
            grad_data = PackPaddedSequence.call(delta, positions, source, ctx.batch_first)
        return grad_data, None, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_data, *_):
        source, _ = ctx.saved_tensors
        return _fill_grid(tangent_data, source, 0.0, ctx.grid, ctx.batch_first)  # padding has tangent 0


# -- index arithmetic (CPU, int64) -----------------------------------------------------------------
def _cells(batch_sizes: Tensor, steps: int, batch: int) -> tuple[Tensor, Tensor]:
    """(positions, source) for a time-major grid of ``steps`` × ``batch`` cells (see the module doc)."""
    n_t = batch_sizes
    t = torch.arange(n_t.shape[0]).repeat_interleave(n_t)  # t_k: the time step of packed row k
    first_row = n_t.cumsum(0) - n_t  # the packed row where step t begins
    b = torch.arange(t.shape[0]) - first_row[t]  # b_k: its place among the n_t sequences of step t
    positions = t * batch + b  # cell t_k·B + b_k
    source = torch.full((steps * batch,), t.shape[0], dtype=torch.int64)  # N: the padding row
    source[positions] = torch.arange(t.shape[0])  # cell of row k ← k
    return positions, source


def _check_index_tensor(name: str, what: str, t: Tensor) -> None:
    if not isinstance(t, Tensor) or t.dim() != 1 or t.device.type != "cpu" or t.dtype != torch.int64:
        got = (f"{t.dim()}-D {t.device.type} {t.dtype} tensor of shape {shape(t)}" if isinstance(t, Tensor)
               else type(t).__name__)
        raise LayerInputError(f"{name}: {what} must be a 1-D CPU int64 tensor (as torch requires), got a {got}")


def _pack_padded_sequence(input: Tensor, lengths: Tensor, batch_first: bool) -> tuple[Tensor, Tensor]:
    """Like ``torch._pack_padded_sequence``: (data, batch_sizes), with the backward of :class:`PackPaddedSequence`.

    ``lengths`` must be sorted longest first (``pack_padded_sequence(..., enforce_sorted=False)`` sorts
    the batch with an ``index_select`` before calling this). batch_sizes[t] = #{b : length_b > t}.
    """
    name = "_pack_padded_sequence"
    _check_index_tensor(name, "lengths", lengths)
    if input.dim() < 2:
        raise LayerInputError(f"{name}: input must be at least 2-D ({'B, T' if batch_first else 'T, B'}, *), "
                              f"got shape {shape(input)}")
    steps, batch = (input.shape[1], input.shape[0]) if batch_first else (input.shape[0], input.shape[1])
    if input.numel() == 0:
        raise LayerInputError(f"{name}: cannot pack an empty tensor (input shape {shape(input)})")
    if lengths.shape[0] != batch:
        raise LayerInputError(f"{name}: got {lengths.shape[0]} lengths for a batch of {batch} sequences "
                              f"(input shape {shape(input)}, batch_first={batch_first})")
    values = lengths.tolist()
    if values[-1] <= 0:
        raise LayerInputError(f"{name}: every length must be greater than 0, got lengths {values}")
    if any(a < b for a, b in itertools.pairwise(values)):
        raise LayerInputError(f"{name}: lengths {values} must be sorted in decreasing order; "
                              "pack_padded_sequence(..., enforce_sorted=False) sorts them for you")
    if values[0] > steps:
        raise LayerInputError(f"{name}: the longest length {values[0]} exceeds the {steps} time steps of input "
                              f"shape {shape(input)} (batch_first={batch_first})")
    batch_sizes = (lengths.unsqueeze(0) > torch.arange(values[0]).unsqueeze(1)).sum(1)  # n_t = #{b : length_b > t}
    positions, source = _cells(batch_sizes, steps, batch)
    data = PackPaddedSequence.call(input, positions.to(input.device), source.to(input.device), bool(batch_first))
    return data, batch_sizes


def _pad_packed_sequence(data: Tensor, batch_sizes: Tensor, batch_first: bool, padding_value: float,
                         total_length: int) -> tuple[Tensor, Tensor]:
    """Like ``torch._pad_packed_sequence``: (padded, lengths), with the backward of :class:`PadPackedSequence`.

    The grid has T = max(total_length, len(batch_sizes)) steps (total_length ≤ 0: len(batch_sizes))
    and B = batch_sizes[0] sequences; length_b = #{t : n_t > b}. With batch_first the result is
    torch's transposed view of a time-major tensor.
    """
    name = "_pad_packed_sequence"
    _check_index_tensor(name, "batch_sizes", batch_sizes)
    if batch_sizes.shape[0] == 0:
        raise LayerInputError(f"{name}: batch_sizes can not be empty")
    if data.dim() == 0:
        raise LayerInputError(f"{name}: data must be at least 1-D (packed rows, *), got a 0-D tensor")
    n_t = batch_sizes.tolist()
    if n_t[-1] < 0 or any(a < b for a, b in itertools.pairwise(n_t)):
        raise LayerInputError(f"{name}: batch_sizes {n_t} must be non-negative and non-increasing")
    if data.shape[0] != sum(n_t):
        raise LayerInputError(f"{name}: data has {data.shape[0]} rows (shape {shape(data)}) but batch_sizes {n_t} "
                              f"add up to {sum(n_t)}")
    steps = len(n_t)
    if total_length > 0:
        if total_length < steps:
            raise LayerInputError(f"{name}: total_length={total_length} is less than the length of the longest "
                                  f"sequence, {steps}")
        steps = total_length
    batch = n_t[0]
    positions, source = _cells(batch_sizes, steps, batch)
    padded = PadPackedSequence.call(data, source.to(data.device), positions.to(data.device), (steps, batch),
                                    padding_value, bool(batch_first))
    lengths = (batch_sizes.unsqueeze(0) > torch.arange(batch).unsqueeze(1)).sum(1)  # length_b = #{t : n_t > b}
    return padded, lengths
