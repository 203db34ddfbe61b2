"""Pooling: each output z_o summarises one window of the input a_prev, and δ flows back only into
that window.

Max pooling passes on one input per window (its argmax), so its backward routes each δ_o to that
single input. Average pooling is linear: z = W · a_prev, one averaging matrix per spatial
dimension (a window is a box, and its divisor is a product over the dimensions), so its backward
is δ_prev = Wᵀ · δ, applied one dimension at a time. The N-d case is written once; 1d/2d/3d only
fix d.

Index letters used below: o an output position (within one sample and channel), j an input
position, d the number of spatial dimensions; argmax_o is the input position that won window o.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import Tensor

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction

_MAX_POOL = {1: F.max_pool1d_with_indices, 2: F.max_pool2d_with_indices, 3: F.max_pool3d_with_indices}
_ADAPTIVE_MAX_POOL = {1: F.adaptive_max_pool1d_with_indices, 2: F.adaptive_max_pool2d_with_indices,
                      3: F.adaptive_max_pool3d_with_indices}
_ADAPTIVE_AVG_POOL = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


def _torch_avg_pool(a: Tensor, d: int, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """torch's own average pooling, the value of the forward pass (and, being linear, of its jvp)."""
    if d == 1:
        return F.avg_pool1d(a, kernel_size, stride, padding, ceil_mode, count_include_pad)
    avg_pool = F.avg_pool2d if d == 2 else F.avg_pool3d
    return avg_pool(a, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


# -- max pooling: z_o = a_prev[argmax_o] ------------------------------------------------------------

def _planes(a_prev_shape, z_shape, d: int):
    """a_prev's and z's shapes with the d spatial dimensions flattened into one: argmax numbers the
    positions of one (sample, channel) plane."""
    lead = len(a_prev_shape) - d
    return ((*a_prev_shape[:lead], math.prod(a_prev_shape[lead:])),
            (*z_shape[:lead], math.prod(z_shape[lead:])))


def _save_argmax(ctx, inputs, output, touching: Tensor | None = None):
    """setup_context of both max poolings: backward and jvp need where each maximum came from (and,
    for dilated windows, which windows hold any input at all)."""
    a_prev, d = inputs[0], inputs[1]
    _, argmax = output
    ctx.mark_non_differentiable(argmax)
    ctx.d, ctx.a_prev_shape, ctx.n_settings = d, tuple(a_prev.shape), len(inputs) - 1
    ctx.save_for_backward(argmax, touching)
    ctx.save_for_forward(argmax, touching)


def _windows_touching_input(n_in, n_out, kernel_size, stride, padding, dilation, device) -> Tensor:
    """[window o holds at least one real input], shaped like z's spatial dimensions.

    A dilated window can step over the whole input and see only padding; its z_o is the constant −∞
    (torch then reports a stray argmax, even one that names a real input of another row).
    """
    touching = torch.ones((), dtype=torch.bool, device=device)
    for k in range(len(n_in)):
        taps = (torch.arange(n_out[k], device=device)[:, None] * stride[k] - padding[k]
                + torch.arange(kernel_size[k], device=device) * dilation[k])  # input positions window o reads
        along = ((taps >= 0) & (taps < n_in[k])).any(1)
        touching = touching & along.reshape([-1 if i == k else 1 for i in range(len(n_in))])
    return touching


def _route_delta_to_argmax(ctx, delta: Tensor, _grad_argmax):
    """Backward of both max poolings: δ_prev_j = Σ_{o: argmax_o = j} δ_o."""
    argmax, touching = ctx.saved_tensors
    if touching is not None:
        delta = delta.where(touching, 0)  # a window of padding only is the constant −∞: ∂z_o/∂a_prev = 0
        argmax = argmax.where(touching, 0)  # and its stray argmax must not receive anything
    a_plane, z_plane = _planes(ctx.a_prev_shape, argmax.shape, ctx.d)  # argmax counts within one plane
    # ∂z_o/∂a_prev_j = [j = argmax_o]: each δ_o lands on its argmax, δs of windows sharing one add up
    delta_prev = delta.new_zeros(a_plane).scatter_add_(-1, argmax.reshape(z_plane), delta.reshape(z_plane))
    return (delta_prev.reshape(ctx.a_prev_shape),) + (None,) * ctx.n_settings


def _tangent_at_argmax(ctx, tangent_a_prev: Tensor, *_):
    """jvp of both max poolings: ż_o = ȧ_prev[argmax_o]."""
    argmax, touching = ctx.saved_tensors
    if touching is not None:
        argmax = argmax.where(touching, 0)  # stray argmax of a window of padding only: keep it in range
    a_plane, z_plane = _planes(ctx.a_prev_shape, argmax.shape, ctx.d)
    tangent_z = tangent_a_prev.reshape(a_plane).gather(-1, argmax.reshape(z_plane))  # ∂z_o/∂a_prev · ȧ_prev
    tangent_z = tangent_z.reshape(argmax.shape)
    if touching is not None:
        tangent_z = tangent_z.where(touching, 0)  # ż_o = 0 where z_o is the constant −∞
    return tangent_z, None


class MaxPool(ManualFunction):
    """z_o = max_{j ∈ window_o} a_prev_j = a_prev[argmax_o]   (padding counts as −∞, never the max).

    Only the winner of a window moves its output, ∂z_o/∂a_prev_j = [j = argmax_o], so
    δ_prev_j = Σ_{o: argmax_o = j} δ_o: each δ_o goes back to the input it came from, and an input
    that wins several overlapping windows collects all their δ. The other inputs get 0, and so does
    every input from a dilated window that sees only padding (its z_o is the constant −∞).
    Forward mode: ż_o = ȧ_prev[argmax_o].  Returns (z, argmax); argmax is not differentiable.
    """

    @staticmethod
    def forward(a_prev: Tensor, d: int, kernel_size, stride, padding, dilation, ceil_mode: bool):
        return _MAX_POOL[d](a_prev, kernel_size, stride, padding, dilation, ceil_mode, True)  # (z, argmax)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a_prev, d, kernel_size, stride, padding, dilation, _ = inputs
        touching = None
        if any(step > 1 for step in dilation):  # only dilated windows can miss the input entirely
            touching = _windows_touching_input(a_prev.shape[-d:], output[0].shape[-d:], kernel_size, stride,
                                               padding, dilation, a_prev.device)
        _save_argmax(ctx, inputs, output, touching)

    backward = staticmethod(_route_delta_to_argmax)
    jvp = staticmethod(_tangent_at_argmax)


class AdaptiveMaxPool(ManualFunction):
    """z_o = max of a_prev over window o = [⌊o·L/n⌋, ⌈(o+1)·L/n⌉) per dimension (L in, n out).

    The same chain rule as :class:`MaxPool`: δ_prev_j = Σ_{o: argmax_o = j} δ_o; ż_o = ȧ_prev[argmax_o].
    """

    @staticmethod
    def forward(a_prev: Tensor, d: int, output_size):
        return _ADAPTIVE_MAX_POOL[d](a_prev, output_size, True)  # (z, argmax)

    setup_context = staticmethod(_save_argmax)
    backward = staticmethod(_route_delta_to_argmax)
    jvp = staticmethod(_tangent_at_argmax)


# -- average pooling: z = W · a_prev, one averaging matrix W per spatial dimension -------------------

def _spread_over_windows(delta: Tensor, weights: list[Tensor]) -> Tensor:
    """δ_prev = Wᵀ · δ along each spatial dimension in turn: δ_prev_j = Σ_o δ_o · W_oj.

    ``weights[k]`` is W for spatial dimension k, of shape (outputs, inputs) along it. Autocast is
    off here: pooling has no weights of its own, so δ keeps its dtype, as in torch's backward.
    """
    with torch.autocast(delta.device.type, enabled=False):
        for k, w in enumerate(weights):
            axis = delta.dim() - len(weights) + k
            delta = (delta.movedim(axis, -1) @ w).movedim(-1, axis)  # Σ_o δ_o · W_oj along this axis
    return delta


def _window_weights(start: Tensor, stop: Tensor, divisor: Tensor, n_in: int) -> Tensor:
    """W_oj = [start_o ≤ j < stop_o] / divisor_o: window o averages the inputs it covers."""
    j = torch.arange(n_in, device=start.device)
    covered = (start[:, None] <= j) & (j < stop[:, None])
    return covered.to(divisor.dtype) / divisor[:, None]


def _avg_pool_weights(n_in, n_out, k, s, p, count_include_pad, divisor_override, like: Tensor) -> Tensor:
    """W of one spatial dimension of avg_pool, with torch's divisor for every border rule."""
    start = torch.arange(n_out, device=like.device) * s - p  # window o starts at o·s − p (padded coordinates)
    stop = start + k
    if divisor_override:
        divisor = torch.ones(n_out, dtype=like.dtype, device=like.device)  # D is applied once, outside
    elif count_include_pad:
        divisor = (stop.clamp(max=n_in + p) - start).to(like.dtype)  # counts the zero padding, not past it
    else:
        divisor = (stop.clamp(max=n_in) - start.clamp(min=0)).to(like.dtype)  # counts real inputs only
    return _window_weights(start, stop, divisor, n_in)


def _adaptive_weights(n_in: int, n_out: int, like: Tensor) -> Tensor:
    """W of one spatial dimension of adaptive_avg_pool: window o = [⌊o·L/n⌋, ⌈(o+1)·L/n⌉)."""
    o = torch.arange(n_out, device=like.device)
    start = o * n_in // n_out
    stop = ((o + 1) * n_in + n_out - 1) // n_out
    return _window_weights(start, stop, (stop - start).to(like.dtype), n_in)


class AvgPool(ManualFunction):
    """z_o = (1/D_o) Σ_{j ∈ window_o} a_prev_j, window o = [o·s − p, o·s − p + k) per dimension.

    D_o is the product over dimensions of: the window's length clipped to the padded input
    (count_include_pad=True), its length clipped to the real input (False), or divisor_override.
    Every input of window o moves z_o by 1/D_o, ∂z_o/∂a_prev_j = [j ∈ window_o] / D_o = W_oj, so
    δ_prev_j = Σ_{o: j ∈ window_o} δ_o / D_o = (Wᵀ · δ)_j. W factorises over the dimensions, so
    backward applies one small matrix per dimension. Forward mode: ż = avg_pool(ȧ_prev) (linear).
    """

    @staticmethod
    def forward(a_prev: Tensor, d: int, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        return _torch_avg_pool(a_prev, d, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (a_prev, ctx.d, ctx.kernel_size, ctx.stride, ctx.padding, ctx.ceil_mode, ctx.count_include_pad,
         ctx.divisor_override) = inputs
        ctx.a_prev_shape = tuple(a_prev.shape)

    @staticmethod
    def backward(ctx, delta: Tensor):
        n_in, n_out = ctx.a_prev_shape[-ctx.d:], delta.shape[-ctx.d:]
        # ∂z_o/∂a_prev_j, one factor per dimension: W_oj = [j ∈ window_o] / D_o
        weights = [_avg_pool_weights(n_in[k], n_out[k], ctx.kernel_size[k], ctx.stride[k], ctx.padding[k],
                                     ctx.count_include_pad, ctx.divisor_override, delta) for k in range(ctx.d)]
        delta_prev = _spread_over_windows(delta, weights)  # δ_prev_j = Σ_o δ_o · [j ∈ window_o] / D_o
        if ctx.divisor_override:
            delta_prev = delta_prev / ctx.divisor_override  # every window divides by the same D
        return (delta_prev,) + (None,) * 7

    @staticmethod
    def jvp(ctx, tangent_a_prev: Tensor, *_):
        # z is linear in a_prev: ż = W · ȧ_prev = avg_pool(ȧ_prev)
        return _torch_avg_pool(tangent_a_prev, ctx.d, ctx.kernel_size, ctx.stride, ctx.padding, ctx.ceil_mode,
                         ctx.count_include_pad, ctx.divisor_override)


class AdaptiveAvgPool(ManualFunction):
    """z_o = mean of a_prev over window o = [⌊o·L/n⌋, ⌈(o+1)·L/n⌉) per dimension (L in, n out).

    ∂z_o/∂a_prev_j = [j ∈ window_o] / |window_o| = W_oj, so δ_prev = Wᵀ · δ: each δ_o is shared
    evenly by the inputs of its window, one dimension at a time. Forward mode: ż = adaptive_avg_pool(ȧ).
    """

    @staticmethod
    def forward(a_prev: Tensor, d: int, output_size):
        return _ADAPTIVE_AVG_POOL[d](a_prev, output_size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a_prev, ctx.d, ctx.output_size = inputs
        ctx.a_prev_shape = tuple(a_prev.shape)

    @staticmethod
    def backward(ctx, delta: Tensor):
        n_in = ctx.a_prev_shape[-ctx.d:]
        weights = [_adaptive_weights(n_in[k], ctx.output_size[k], delta)  # ∂z_o/∂a_prev_j per dimension
                   for k in range(ctx.d)]
        delta_prev = _spread_over_windows(delta, weights)  # δ_prev_j = Σ_o δ_o · [j ∈ window_o] / |window_o|
        return delta_prev, None, None

    @staticmethod
    def jvp(ctx, tangent_a_prev: Tensor, *_):
        return _ADAPTIVE_AVG_POOL[ctx.d](tangent_a_prev, ctx.output_size)  # ż = W · ȧ_prev (linear)


# -- checks: whatever torch rejects, rejected here with the shapes and values at fault ---------------

def _check_input(name: str, input, d: int) -> None:
    if not isinstance(input, Tensor):
        raise LayerInputError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if input.dim() not in (d + 1, d + 2):
        raise LayerInputError(
            f"{name}: expected a {d + 1}-D (C, {_SPATIAL[d]}) or {d + 2}-D (N, C, {_SPATIAL[d]}) input, "
            f"got shape {shape(input)}"
        )
    if not input.is_floating_point():
        raise LayerInputError(f"{name}: expected a floating-point input, got {input.dtype}")
    if any(n == 0 for n in input.shape[-(d + 1):]):
        raise LayerInputError(
            f"{name}: input shape {shape(input)} has an empty channel or spatial dimension "
            "(only the batch dimension N may be 0)"
        )


def _int(name: str, arg: str, value, item, minimum: int) -> int:
    try:
        number = operator.index(item)
    except TypeError:
        raise LayerInputError(f"{name}: {arg} must hold ints, got {value!r}") from None
    if number < minimum:
        raise LayerInputError(f"{name}: {arg} must be ≥ {minimum}, got {value!r}")
    return number


def _ints(name: str, arg: str, value, d: int, minimum: int) -> tuple[int, ...]:
    """``value`` as d ints ≥ minimum: one int, or a sequence of 1 or d of them (torch's rule)."""
    items = list(value) if isinstance(value, (tuple, list, torch.Size)) else [value]
    if len(items) not in (1, d):
        raise LayerInputError(f"{name}: {arg} must be an int or a sequence of {d} ints, got {value!r}")
    return tuple(_int(name, arg, value, item, minimum) for item in items) * (d // len(items))


def _pooled_length(n_in: int, k: int, s: int, p: int, dilation: int, ceil_mode: bool) -> int:
    """torch's output length: ⌊(L + 2p − dilation·(k − 1) − 1) / s⌋ + 1, or ⌈…⌉ with ceil_mode, where
    a window may not start in the right padding."""
    n_out = (n_in + 2 * p - dilation * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (n_out - 1) * s >= n_in + p:
        n_out -= 1
    return n_out


def _check_windows(name: str, input: Tensor, d: int, kernel_size, stride, padding, dilation, ceil_mode):
    """kernel, stride, padding, dilation as d-tuples, checked like torch; the output is ≥ 1 everywhere."""
    k = _ints(name, "kernel_size", kernel_size, d, 1)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _ints(
        name, "stride", stride, d, 1)
    p = _ints(name, "padding", padding, d, 0)
    dil = _ints(name, "dilation", dilation, d, 1)
    if any(p_i > k_i // 2 for p_i, k_i in zip(p, k)):
        raise LayerInputError(f"{name}: padding={p} must be at most half of kernel_size={k}")
    n_in = tuple(input.shape[-d:])
    n_out = tuple(_pooled_length(*args, bool(ceil_mode)) for args in zip(n_in, k, s, p, dil))
    if min(n_out) < 1:
        raise LayerInputError(
            f"{name}: input spatial size {n_in} is too small for kernel_size={k}, stride={s}, padding={p}, "
            f"dilation={dil}: the output size would be {n_out}"
        )
    return k, s, p, dil


def _check_output_size(name: str, input: Tensor, d: int, output_size) -> tuple[int, ...]:
    """output_size as d ints ≥ 0: one int, or d entries where None keeps the input's size (2d and 3d)."""
    if not isinstance(output_size, (tuple, list, torch.Size)):
        return (_int(name, "output_size", output_size, output_size, 0),) * d
    if len(output_size) != d or (d == 1 and None in output_size):
        raise LayerInputError(f"{name}: output_size must be an int or a sequence of {d} ints, got {output_size!r}")
    return tuple(n_in if n is None else _int(name, "output_size", output_size, n, 0)
                 for n, n_in in zip(output_size, input.shape[-d:]))


# -- the functional entries, with torch.nn.functional's signatures -----------------------------------

def _apply(name: str, function: type[ManualFunction], input: Tensor, *settings):
    try:
        return function.call(input, *settings)
    except NotImplementedError as err:  # torch's forward kernel lacks this dtype here (float16 avg_pool3d on CPU)
        raise LayerInputError(f"{name}: torch has no kernel for a {input.dtype} input on {input.device.type} "
                              f"({err})") from None


def _max_pool(name, d, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    _check_input(name, input, d)
    k, s, p, dil = _check_windows(name, input, d, kernel_size, stride, padding, dilation, ceil_mode)
    z, argmax = _apply(name, MaxPool, input, d, k, s, p, dil, bool(ceil_mode))
    return (z, argmax) if return_indices else z


def _avg_pool(name, d, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    _check_input(name, input, d)
    k, s, p, _ = _check_windows(name, input, d, kernel_size, stride, padding, 1, ceil_mode)
    if d == 3 and any(n < k_i for n, k_i in zip(input.shape[-3:], k)):
        raise LayerInputError(  # torch's avg_pool3d asks this even where padding would make room
            f"{name}: input spatial size {tuple(input.shape[-3:])} is smaller than kernel_size={k}"
        )
    if divisor_override is not None:
        try:
            divisor_override = operator.index(divisor_override)
        except TypeError:
            raise LayerInputError(f"{name}: divisor_override must be an int, got {divisor_override!r}") from None
        if divisor_override == 0:
            raise LayerInputError(f"{name}: divisor_override must not be zero")
    return _apply(name, AvgPool, input, d, k, s, p, bool(ceil_mode), bool(count_include_pad), divisor_override)


def _adaptive_max_pool(name, d, input, output_size, return_indices):
    _check_input(name, input, d)
    z, argmax = _apply(name, AdaptiveMaxPool, input, d, _check_output_size(name, input, d, output_size))
    return (z, argmax) if return_indices else z


def _adaptive_avg_pool(name, d, input, output_size):
    _check_input(name, input, d)
    return _apply(name, AdaptiveAvgPool, input, d, _check_output_size(name, input, d, output_size))


def max_pool1d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """Like ``torch.nn.functional.max_pool1d``; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o."""
    return _max_pool("max_pool1d", 1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """Like ``torch.nn.functional.max_pool2d``; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o."""
    return _max_pool("max_pool2d", 2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """Like ``torch.nn.functional.max_pool3d``; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o."""
    return _max_pool("max_pool3d", 3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool1d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """Like ``torch.nn.functional.avg_pool1d``; backward δ_prev_j = Σ_{o: j ∈ window_o} δ_o / D_o."""
    return _avg_pool("avg_pool1d", 1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override=None) -> Tensor:
    """Like ``torch.nn.functional.avg_pool2d``; backward δ_prev_j = Σ_{o: j ∈ window_o} δ_o / D_o."""
    return _avg_pool("avg_pool2d", 2, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                           divisor_override)


def avg_pool3d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override=None) -> Tensor:
    """Like ``torch.nn.functional.avg_pool3d``; backward δ_prev_j = Σ_{o: j ∈ window_o} δ_o / D_o."""
    return _avg_pool("avg_pool3d", 3, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                           divisor_override)


def adaptive_max_pool1d(input: Tensor, output_size, return_indices: bool = False):
    """Like ``torch.nn.functional.adaptive_max_pool1d``; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o."""
    return _adaptive_max_pool("adaptive_max_pool1d", 1, input, output_size, return_indices)


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    """Like ``torch.nn.functional.adaptive_max_pool2d``; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o."""
    return _adaptive_max_pool("adaptive_max_pool2d", 2, input, output_size, return_indices)


def adaptive_max_pool3d(input: Tensor, output_size, return_indices: bool = False):
    """Like ``torch.nn.functional.adaptive_max_pool3d``; backward δ_prev_j = Σ_{o: argmax_o = j} δ_o."""
    return _adaptive_max_pool("adaptive_max_pool3d", 3, input, output_size, return_indices)


def adaptive_avg_pool1d(input: Tensor, output_size) -> Tensor:
    """Like ``torch.nn.functional.adaptive_avg_pool1d``; backward δ_prev_j = Σ_{o: j ∈ window_o} δ_o / |window_o|."""
    return _adaptive_avg_pool("adaptive_avg_pool1d", 1, input, output_size)


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Like ``torch.nn.functional.adaptive_avg_pool2d``; backward δ_prev_j = Σ_{o: j ∈ window_o} δ_o / |window_o|."""
    return _adaptive_avg_pool("adaptive_avg_pool2d", 2, input, output_size)


def adaptive_avg_pool3d(input: Tensor, output_size) -> Tensor:
    """Like ``torch.nn.functional.adaptive_avg_pool3d``; backward δ_prev_j = Σ_{o: j ∈ window_o} δ_o / |window_o|."""
    return _adaptive_avg_pool("adaptive_avg_pool3d", 3, input, output_size)
