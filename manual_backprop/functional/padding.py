"""Padding: a = x with a border added around its last dimensions, as ``torch.nn.functional.pad``.

``pad`` lists (before, after) amounts from the last dimension backwards, as in torch; a negative
amount crops. Index letters: i a position of x along one padded dimension, j a position of a.

- constant: the border holds a constant, which has no gradient; a cell copied from x passes δ
  straight back. So ∂C/∂x is δ with the border cut off (and zeros where a negative pad cropped x).
- reflect / replicate / circular: every cell of a is a copy of one cell of x, a[j] = x[src(j)],
  with src the mirror image, the nearest edge, or the wrap-around. A cell of x copied several
  times collects the gradient of every copy: ∂C/∂x[i] = Σ_{j: src(j) = i} δ[j].
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction

MODES = ("constant", "reflect", "replicate", "circular")


def _padded_axes(x: Tensor, pad: tuple[int, ...]):
    """(axis, before, after) for each padded dimension, the last dimension first."""
    return [(x.dim() - 1 - m, pad[2 * m], pad[2 * m + 1]) for m in range(len(pad) // 2)]


def _source_index(size: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    """src(j): the cell of x (0..size−1) that cell j of the padded dimension copies."""
    if mode == "circular":  # wrap around what is left after cropping (torch crops first, then wraps)
        first, kept = max(-before, 0), _circular_kept(size, before, after)
        i = torch.arange(-max(before, 0), kept + max(after, 0), device=device)
        return first + i.remainder(kept)
    i = torch.arange(-before, size + after, device=device)  # j − before: where j sits relative to x
    if mode == "reflect":  # mirror at the first and last cell, which are not repeated
        return torch.where(i < 0, -i, torch.where(i >= size, 2 * (size - 1) - i, i))
    return i.clamp(0, size - 1)  # replicate: the nearest edge cell


def _circular_kept(size: int, before: int, after: int) -> int:
    """How many cells of x a circular pad keeps (a negative amount crops them first)."""
    return size - max(-before, 0) - max(-after, 0)


class ConstantPad(ManualFunction):
    """a = x inside, ``value`` on the border (a negative amount crops x instead).

    ∂C/∂x = δ with the border cut off: each cell of x reaches a unchanged (factor 1), the border
    cells are constants (factor 0). Where x was cropped, its cells reached nothing: gradient 0.
    Cutting off the border is padding by minus the amounts, so the backward is one more pad.
    Forward mode (jvp): ȧ = ẋ padded with 0 (the constant's tangent).
    """

    @staticmethod
    def forward(x: Tensor, pad: tuple[int, ...], value: float) -> Tensor:
        return F.pad(x, pad, "constant", value)  # a = x, with a border of value

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.pad, _ = inputs

    @staticmethod
    def backward(ctx, delta: Tensor):
        uncropped = [-amount for amount in ctx.pad]  # padding by minus the amounts cuts the border off
        grad_x = F.pad(delta, uncropped)  # ∂C/∂x = δ without the border (1 inside, 0 for constants)
        return grad_x, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        return F.pad(tangent_x, ctx.pad)  # ȧ = ẋ inside, 0 on the border


class CopyPad(ManualFunction):
    """a[j] = x[src(j)] along each padded dimension (reflect, replicate or circular).

    ∂C/∂x[i] = Σ_{j: src(j) = i} δ[j]: every copy of a cell hands its δ back to that cell; a cell
    copied onto the border as well as kept inside adds both. Written one padded dimension at a
    time (the last dimension first), undone in the reverse order in backward.
    Forward mode (jvp): ȧ[j] = ẋ[src(j)], the same copies of the tangent.
    """

    @staticmethod
    def forward(x: Tensor, pad: tuple[int, ...], mode: str) -> Tensor:
        a = x
        for axis, before, after in _padded_axes(x, pad):
            a = a.index_select(axis, _source_index(x.shape[axis], before, after, mode, x.device))  # a[j] = x[src(j)]
        return a

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.pad, ctx.mode = inputs
        ctx.x_shape = x.shape

    @staticmethod
    def backward(ctx, delta: Tensor):
        grad = delta
        for axis, before, after in reversed(_padded_axes(delta, ctx.pad)):
            size = ctx.x_shape[axis]
            src = _source_index(size, before, after, ctx.mode, delta.device)  # src(j), as in the forward
            cells = list(grad.shape)  # ∂C/∂x has x's size along this axis
            cells[axis] = size
            grad = grad.new_zeros(cells).index_add(axis, src, grad)  # ∂C/∂x[i] = Σ_{j: src(j) = i} δ[j]
        return grad, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        return CopyPad.forward(tangent_x, ctx.pad, ctx.mode)  # ȧ[j] = ẋ[src(j)]


def _check_pad(input: Tensor, pad: tuple[int, ...], mode: str, value: float | None) -> None:
    if mode not in MODES:
        raise LayerInputError(f"pad: mode must be one of {MODES}, got {mode!r}")
    if len(pad) % 2 != 0:
        raise LayerInputError(f"pad: pad must hold (before, after) pairs, got an odd number of amounts {pad}")
    if len(pad) > 2 * input.dim():
        raise LayerInputError(f"pad: pad {pad} has {len(pad) // 2} pairs, but the input shape {shape(input)} has "
                              f"only {input.dim()} dimensions")
    if mode == "constant":
        for axis, before, after in _padded_axes(input, pad):
            if input.shape[axis] + before + after < 0:
                raise LayerInputError(f"pad: dimension {axis} of input shape {shape(input)} padded by "
                                      f"({before}, {after}) would have negative size")
        return
    if value is not None and value != 0:
        raise LayerInputError(f"pad: mode {mode!r} takes no value, got value={value}")
    n = len(pad) // 2
    if n not in (1, 2, 3) or input.dim() not in (n + 1, n + 2):
        raise LayerInputError(f"pad: mode {mode!r} with {len(pad)} amounts pads the last {n} dimensions of an "
                              f"input with {n + 1} or {n + 2} dimensions (n ≤ 3), got input shape {shape(input)}")
    if mode != "circular" and any(size == 0 for size in input.shape[-n - 1:]):
        raise LayerInputError(f"pad: mode {mode!r} needs non-empty dimensions (all but a batch dimension), "
                              f"got input shape {shape(input)}")
    for axis, before, after in _padded_axes(input, pad):
        size = input.shape[axis]
        if mode == "reflect" and (before >= size or after >= size):
            raise LayerInputError(f"pad: reflect padding ({before}, {after}) of dimension {axis} must be smaller "
                                  f"than its size {size} (input shape {shape(input)})")
        kept = _circular_kept(size, before, after)
        if mode == "circular" and (kept < 0 or before > kept or after > kept):
            raise LayerInputError(f"pad: circular padding ({before}, {after}) of dimension {axis} would wrap around "
                                  f"more than once (size {size}, {max(kept, 0)} kept, input shape {shape(input)})")
        smallest = 0 if mode == "circular" else 1
        if size + before + after < smallest:
            raise LayerInputError(f"pad: dimension {axis} of input shape {shape(input)} padded by ({before}, {after}) "
                                  f"would have size {size + before + after}")


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """Like ``torch.nn.functional.pad``, with the hand-written backward of :class:`ConstantPad` or
    :class:`CopyPad` (reflect, replicate, circular)."""
    try:
        amounts = tuple(map(operator.index, pad))
    except TypeError:  # not integers
        raise LayerInputError(f"pad: pad must be a sequence of ints, got {pad!r}") from None
    _check_pad(input, amounts, mode, value)
    if mode == "constant":
        return ConstantPad.call(input, amounts, 0.0 if value is None else value)
    return CopyPad.call(input, amounts, mode)
