"""Convolution and transposed convolution, written once for any number of spatial dimensions.

Index letters used below (each spatial letter is a tuple, one entry per spatial dimension):
n batch, g group, c input channel (c′ its index inside the group), o output channel (o′ inside
the group), l position in the output of a convolution, i position in its input, k kernel offset;
s stride, p padding, d dilation. x̃ is x zero-padded by p on both sides of every spatial dimension.

A convolution slides a window over the input:  z[n,o,l] = b[o] + Σ_{c′,k} W[o,c′,k] · x̃[n, g·C_g + c′, l·s + k·d]
(g the group of output channel o, C_g = in_channels / groups). A transposed convolution is its mirror:
each input cell spreads itself, weighted by the kernel, onto the output cells i·s − p + k·d.
So the backward of one is the forward of the other, and the weight gradient of both is a
correlation of the layer's input with δ, group by group (:func:`_correlate`).

Complex tensors follow torch's convention: the conjugate of a weight or input enters the gradient.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction
from manual_backprop.functional.padding import pad

IntOrTuple = int | Sequence[int]


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation, groups: int) -> Tensor:
    """torch's forward convolution (conv1d, conv2d or conv3d, from the weight's rank)."""
    return (F.conv1d, F.conv2d, F.conv3d)[weight.dim() - 3](x, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, output_padding, groups: int,
                    dilation) -> Tensor:
    """torch's forward transposed convolution (1d, 2d or 3d, from the weight's rank)."""
    conv_transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[weight.dim() - 3]
    return conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation)


def _batched(t: Tensor, unbatched: bool) -> Tensor:
    return t.unsqueeze(0) if unbatched else t


def _unbatched(t: Tensor, unbatched: bool) -> Tensor:
    return t.squeeze(0) if unbatched else t


def _bias_as_column(bias: Tensor, spatial_dims: int) -> Tensor:
    """b[o] shaped (o, 1, ..., 1), to broadcast over the spatial positions."""
    return bias.reshape(-1, *[1] * spatial_dims)


def _correlate(x: Tensor, delta: Tensor, stride, padding, dilation, groups: int, kernel_size) -> Tensor:
    """∂C/∂W[o,c′,k] = Σ_{n,l} δ[n,o,l] · x̃[n, g·C_g + c′, l·s + k·d], for every group g at once.

    This is itself a convolution, with the roles swapped: batch n and channel c′ trade places, and δ
    is the kernel, sliding over x̃ with dilation s (one step of l moves l·s) and stride d (one step
    of k moves k·d). ``groups`` keeps each output channel o with the inputs of its own group.
    Returns (O, C_g, *kernel_size); O = δ's channels.
    """
    n, c, o, spatial = x.shape[0], x.shape[1], delta.shape[1], x.shape[2:]
    if n == 0:  # no samples, nothing to add up (a convolution over 0 channels would lose the shape)
        return x.new_zeros(o, c // groups, *kernel_size)
    axes = list(range(3, 3 + len(spatial)))
    # x: (n, g, c′, *i) → (c′, g·n, *i): each c′ is one "sample", each (group, sample) one "channel"
    x_as_batch = x.reshape(n, groups, c // groups, *spatial).permute(2, 1, 0, *axes)
    x_as_batch = x_as_batch.reshape(c // groups, groups * n, *spatial)
    # δ: (n, o, *l) → (o, n, *l): each output channel o is one kernel over the samples of its group
    delta_as_kernel = delta.transpose(0, 1)
    per_offset = _conv(x_as_batch, delta_as_kernel, None, dilation, padding, stride,
                       groups)  # (c′, o, *k): Σ_{n,l} δ · x̃
    grad_weight = per_offset.transpose(0, 1)  # (o, c′, *k)
    for axis, k in enumerate(kernel_size, start=2):  # δ may slide past the last kernel offset (over cells
        grad_weight = grad_weight.narrow(axis, 0, k)  # the stride left unused): those offsets are no weights
    return grad_weight


def _unfolded_is_smaller(x: Tensor, delta: Tensor, groups: int, kernel_size) -> bool:
    """Whether :func:`_correlate_unfolded` serves: a 2-d convolution without groups whose unfolded input
    (C·K rows per sample) is no larger than δ (O rows); then a matrix product beats the swapped
    convolution of :func:`_correlate` (for few input channels, e.g. an image's first layer)."""
    return x.dim() == 4 and groups == 1 and x.shape[1] * math.prod(kernel_size) <= delta.shape[1]


def _correlate_unfolded(x: Tensor, delta: Tensor, stride, padding, dilation, kernel_size) -> Tensor:
    """∂C/∂W[o,c,k] = Σ_{n,l} δ[n,o,l] · x̃[n, c, l·s + k·d] as matrix products: ``unfold`` (im2col) lays out
    what each window saw, cols[n, (c,k), l] = x̃[n, c, l·s + k·d], so ∂C/∂W[o,(c,k)] = Σ_n (δ[n] · cols[n]ᵀ)[o,(c,k)].
    2-d, groups = 1."""
    n, o = delta.shape[:2]
    cols = F.unfold(x, kernel_size, dilation, padding, stride)  # (n, c·k, l): the inputs window l multiplied
    per_sample = torch.bmm(delta.reshape(n, o, -1), cols.transpose(1, 2))  # Σ_l δ[n,o,l] · x̃[n,c,l·s + k·d]
    return per_sample.sum(0).reshape(o, x.shape[1], *kernel_size)  # Σ_n


class Conv(ManualFunction):
    """z = W ⋆ a_prev + b:  z[n,o,l] = b[o] + Σ_{c′,k} W[o,c′,k] · ã_prev[n, g·C_g + c′, l·s + k·d].

    ∂C/∂a_prev[n,c,i] = Σ_{o,k: l·s + k·d = i + p} δ[n,o,l] · W[o,c′,k]
                        each input cell collects the blame of every window that saw it: the
                        transposed convolution of δ with W. Cells no window reached (left over at
                        the end when the stride does not divide evenly) get 0.
    ∂C/∂W[o,c′,k]     = Σ_{n,l} δ[n,o,l] · ã_prev[n, g·C_g + c′, l·s + k·d]
                        each weight: δ times every input it multiplied, a correlation per group
    ∂C/∂b[o]          = Σ_{n,l} δ[n,o,l]
    Forward mode (jvp):  ż = W ⋆ ȧ_prev + Ẇ ⋆ a_prev + ḃ.
    ã_prev is a_prev zero-padded by p on both sides; for an asymmetric padding="same", :func:`conv1d`
    (2d, 3d) first adds the odd cell with :func:`~manual_backprop.functional.padding.pad`, as torch does.
    """

    @staticmethod
    def forward(a_prev: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation, groups: int) -> Tensor:
        return _conv(a_prev, weight, bias, stride, padding, dilation, groups)  # z = W ⋆ a_prev + b

    @staticmethod
    def setup_context(ctx, inputs, output):
        a_prev, weight, _, ctx.stride, ctx.padding, ctx.dilation, ctx.groups = inputs
        ctx.unbatched = a_prev.dim() == weight.dim() - 1
        ctx.z_shape = output.shape
        ctx.save_for_backward(a_prev, weight)
        ctx.save_for_forward(a_prev, weight)

    @staticmethod
    def backward(ctx, delta: Tensor):
        a_prev, weight = ctx.saved_tensors
        s, p, d, groups = ctx.stride, ctx.padding, ctx.dilation, ctx.groups
        a_prev, delta = _batched(a_prev, ctx.unbatched), _batched(delta, ctx.unbatched)  # n = 1 if unbatched
        kernel = weight.shape[2:]
        grad_a_prev = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # input rows past the last window (the stride's remainder): the transposed convolution
            # stops short of them by this much, and they get 0
            left_over = tuple((size + 2 * p_ - d_ * (k - 1) - 1) % s_
                              for size, p_, d_, k, s_ in zip(a_prev.shape[2:], p, d, kernel, s))
            grad_a_prev = _conv_transpose(delta, weight.conj(), None, s, p, left_over, groups,
                                          d)  # ∂C/∂a_prev = Wᵀ ⊛ δ: Σ_{o,k} δ[n,o,l] · W[o,c′,k]
            grad_a_prev = _unbatched(grad_a_prev, ctx.unbatched)
        if ctx.needs_input_grad[1] and _unfolded_is_smaller(a_prev, delta, groups, kernel):
            grad_weight = _correlate_unfolded(a_prev.conj(), delta, s, p, d, kernel)  # ∂C/∂W = Σ_{n,l} δ · ã_prev
        elif ctx.needs_input_grad[1]:
            grad_weight = _correlate(a_prev.conj(), delta, s, p, d, groups, kernel)  # ∂C/∂W = Σ_{n,l} δ · ã_prev
        if ctx.needs_input_grad[2]:
            grad_bias = delta.sum([0, *range(2, delta.dim())])  # ∂C/∂b = Σ_{n,l} δ: a bias multiplies 1
        return grad_a_prev, grad_weight, grad_bias, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_a_prev, tangent_weight, tangent_bias, *_):
        a_prev, weight = ctx.saved_tensors
        conv_args = (ctx.stride, ctx.padding, ctx.dilation, ctx.groups)
        tangent_z = a_prev.new_zeros(ctx.z_shape)  # ż starts at 0; each input's term is added below
        if tangent_a_prev is not None:
            tangent_z = tangent_z + _conv(tangent_a_prev, weight, None, *conv_args)  # ∂z/∂a_prev · ȧ = W ⋆ ȧ_prev
        if tangent_weight is not None:
            tangent_z = tangent_z + _conv(a_prev, tangent_weight, None, *conv_args)  # ∂z/∂W · Ẇ = Ẇ ⋆ a_prev
        if tangent_bias is not None:
            tangent_z = tangent_z + _bias_as_column(tangent_bias, len(ctx.stride))  # ∂z/∂b · ḃ = ḃ
        return tangent_z


class ConvTranspose(ManualFunction):
    """z = Wᵀ ⊛ a_prev + b, the mirror of :class:`Conv`: input cell a_prev[n,c,i] adds W[c,o′,k] · a_prev[n,c,i]
    onto output cell j = i·s − p + k·d (o = g·O_g + o′, g the group of c), plus b[o].

    ∂C/∂a_prev[n,c,i] = Σ_{o′,k} W[c,o′,k] · δ̃[n, g·O_g + o′, i·s + k·d]
                        each input cell: the δ of every cell it was spread onto, weighted the same
                        way, which is the (plain) convolution of δ with W
    ∂C/∂W[c,o′,k]     = Σ_{n,i} a_prev[n,c,i] · δ̃[n, g·O_g + o′, i·s + k·d]
                        each weight: the input it carried times the δ where it landed, a correlation
                        of δ with a_prev per group
    ∂C/∂b[o]          = Σ_{n,j} δ[n,o,j]
    (δ̃: δ zero-padded by p.)  Forward mode (jvp):  ż = Wᵀ ⊛ ȧ_prev + Ẇᵀ ⊛ a_prev + ḃ.
    """

    @staticmethod
    def forward(a_prev: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, output_padding,
                groups: int, dilation) -> Tensor:
        return _conv_transpose(a_prev, weight, bias, stride, padding, output_padding, groups,
                               dilation)  # z = Wᵀ ⊛ a_prev + b

    @staticmethod
    def setup_context(ctx, inputs, output):
        a_prev, weight, _, ctx.stride, ctx.padding, ctx.output_padding, ctx.groups, ctx.dilation = inputs
        ctx.unbatched = a_prev.dim() == weight.dim() - 1
        ctx.z_shape = output.shape
        ctx.save_for_backward(a_prev, weight)
        ctx.save_for_forward(a_prev, weight)

    @staticmethod
    def backward(ctx, delta: Tensor):
        a_prev, weight = ctx.saved_tensors
        s, p, d, groups = ctx.stride, ctx.padding, ctx.dilation, ctx.groups
        a_prev, delta = _batched(a_prev, ctx.unbatched), _batched(delta, ctx.unbatched)  # n = 1 if unbatched
        grad_a_prev = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_a_prev = _conv(delta, weight.conj(), None, s, p, d,
                                groups)  # ∂C/∂a_prev = W ⋆ δ: Σ_{o′,k} W[c,o′,k] · δ̃[n,o,i·s + k·d]
            for axis, size in enumerate(a_prev.shape[2:], start=2):  # an output_padding ≥ s adds windows
                grad_a_prev = grad_a_prev.narrow(axis, 0, size)  # past the last input cell: drop them
            grad_a_prev = _unbatched(grad_a_prev, ctx.unbatched)
        if ctx.needs_input_grad[1]:
            grad_weight = _correlate(delta, a_prev.conj(), s, p, d, groups,
                                     weight.shape[2:])  # ∂C/∂W = Σ_{n,i} a_prev · δ̃
        if ctx.needs_input_grad[2]:
            grad_bias = delta.sum([0, *range(2, delta.dim())])  # ∂C/∂b = Σ_{n,j} δ
        return grad_a_prev, grad_weight, grad_bias, None, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_a_prev, tangent_weight, tangent_bias, *_):
        a_prev, weight = ctx.saved_tensors
        conv_args = (ctx.stride, ctx.padding, ctx.output_padding, ctx.groups, ctx.dilation)
        tangent_z = a_prev.new_zeros(ctx.z_shape)  # ż starts at 0; each input's term is added below
        if tangent_a_prev is not None:
            tangent_z = tangent_z + _conv_transpose(tangent_a_prev, weight, None, *conv_args)  # Wᵀ ⊛ ȧ_prev
        if tangent_weight is not None:
            tangent_z = tangent_z + _conv_transpose(a_prev, tangent_weight, None, *conv_args)  # Ẇᵀ ⊛ a_prev
        if tangent_bias is not None:
            tangent_z = tangent_z + _bias_as_column(tangent_bias, len(ctx.stride))  # ḃ
        return tangent_z


# -- argument checks, as torch's (every failure a LayerInputError naming the call) ------------------

def _expand(name: str, what: str, value: IntOrTuple, n: int) -> tuple[int, ...]:
    """An int or a sequence of 1 or n ints, as an n-tuple (torch's expand_param_if_needed)."""
    try:
        values = tuple(map(operator.index, value)) if isinstance(value, Sequence) else (operator.index(value),)
    except TypeError:  # not integers
        values = ()
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise LayerInputError(
            f"{name}: {what} must be an int or a sequence of {n} ints for {n} spatial dimension(s), got {value!r}"
        )
    return values


def _check_tensors(name: str, n: int, input: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
                   transposed: bool) -> int:
    """Ranks, channels, groups, bias, dtypes and devices; returns the number of output channels."""
    if input.dim() not in (n + 1, n + 2):
        raise LayerInputError(
            f"{name}: expected a {n + 1}-D (unbatched) or {n + 2}-D (batched) input, got shape {shape(input)}"
        )
    layout = ("(in_channels, out_channels/groups, *kernel)" if transposed
              else "(out_channels, in_channels/groups, *kernel)")
    if weight.dim() != n + 2:
        raise LayerInputError(f"{name}: weight must be {n + 2}-D {layout}, got shape {shape(weight)}")
    if not isinstance(groups, int) or groups < 1:
        raise LayerInputError(f"{name}: groups must be a positive int, got {groups!r}")
    if weight.shape[0] % groups != 0 or weight.shape[0] < groups:
        raise LayerInputError(
            f"{name}: weight shape {shape(weight)} {layout} has {weight.shape[0]} at dimension 0, "
            f"not a positive multiple of groups={groups}"
        )
    channels = input.shape[-n - 1]
    if channels == 0 or weight.numel() == 0:
        raise LayerInputError(f"{name}: input shape {shape(input)} and weight shape {shape(weight)} must not be "
                              "empty in the channel and kernel dimensions")
    expected = weight.shape[0] if transposed else weight.shape[1] * groups
    if channels != expected:
        rule = "weight.shape[0]" if transposed else f"weight.shape[1] · groups = {weight.shape[1]} · {groups}"
        raise LayerInputError(
            f"{name}: input shape {shape(input)} has {channels} channels (dimension {input.dim() - n - 1}), "
            f"but weight shape {shape(weight)} with groups={groups} expects {expected} ({rule})"
        )
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if bias is not None and shape(bias) != (out_channels,):
        raise LayerInputError(f"{name}: bias shape {shape(bias)} does not match out_channels={out_channels}")
    for other, label in ((weight, "weight"), (bias, "bias")):
        if other is not None and (other.dtype != input.dtype or other.device != input.device):
            raise LayerInputError(
                f"{name}: input ({input.dtype}, {input.device}) and {label} ({other.dtype}, {other.device}) "
                "must have the same dtype and device"
            )
    return out_channels


def _check_positive(name: str, what: str, values: tuple[int, ...], minimum: int) -> None:
    if any(v < minimum for v in values):
        kind = "positive" if minimum == 1 else "non-negative"
        raise LayerInputError(f"{name}: {what} must be {kind}, got {what}={values}")


def _conv_nd(n: int, input: Tensor, weight: Tensor, bias: Tensor | None, stride: IntOrTuple,
             padding: str | IntOrTuple, dilation: IntOrTuple, groups: int) -> Tensor:
    name = f"conv{n}d"
    _check_tensors(name, n, input, weight, bias, groups, transposed=False)
    stride, dilation = _expand(name, "stride", stride, n), _expand(name, "dilation", dilation, n)
    _check_positive(name, "stride", stride, 1)
    _check_positive(name, "dilation", dilation, 1)
    kernel, spatial = weight.shape[2:], input.shape[-n:]
    reach = tuple(d * (k - 1) for d, k in zip(dilation, kernel))  # a window spans d·(k − 1) + 1 cells
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * n
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise LayerInputError(f"{name}: padding='same' is not supported for strided convolutions "
                                      f"(stride={stride})")
            # torch pads r // 2 before and r − r // 2 after; the odd cell goes after, by an explicit pad
            extra = [0, 0] * n
            for axis, r in enumerate(reach):
                extra[2 * (n - 1 - axis) + 1] = r % 2  # F.pad order: last dimension first
            if any(extra):
                input = pad(input, extra)
                spatial = input.shape[-n:]
            padding = tuple(r // 2 for r in reach)
        else:
            raise LayerInputError(f"{name}: padding must be 'valid', 'same' or ints, got {padding!r}")
    padding = _expand(name, "padding", padding, n)
    _check_positive(name, "padding", padding, 0)
    padded = tuple(size + 2 * p for size, p in zip(spatial, padding))
    if any(size < r + 1 for size, r in zip(padded, reach)):
        raise LayerInputError(
            f"{name}: padded input size {padded} (input {shape(input)}, padding {padding}) is smaller than the "
            f"dilated kernel {tuple(r + 1 for r in reach)} (kernel {tuple(kernel)}, dilation {dilation})"
        )
    return Conv.call(input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose_nd(n: int, input: Tensor, weight: Tensor, bias: Tensor | None, stride: IntOrTuple,
                       padding: IntOrTuple, output_padding: IntOrTuple, groups: int, dilation: IntOrTuple) -> Tensor:
    name = f"conv_transpose{n}d"
    _check_tensors(name, n, input, weight, bias, groups, transposed=True)
    if isinstance(padding, str):
        raise LayerInputError(f"{name}: padding must be ints (no 'same' or 'valid' for a transposed "
                              f"convolution), got {padding!r}")
    stride, padding = _expand(name, "stride", stride, n), _expand(name, "padding", padding, n)
    output_padding, dilation = _expand(name, "output_padding", output_padding, n), _expand(name, "dilation",
                                                                                           dilation, n)
    _check_positive(name, "stride", stride, 1)
    _check_positive(name, "dilation", dilation, 1)
    _check_positive(name, "padding", padding, 0)
    _check_positive(name, "output_padding", output_padding, 0)
    if any(op >= s and op >= d for op, s, d in zip(output_padding, stride, dilation)):
        raise LayerInputError(f"{name}: output_padding {output_padding} must be smaller than either stride "
                              f"{stride} or dilation {dilation}")
    kernel, spatial = weight.shape[2:], input.shape[-n:]
    out = tuple((size - 1) * s - 2 * p + d * (k - 1) + op + 1
                for size, s, p, d, k, op in zip(spatial, stride, padding, dilation, kernel, output_padding))
    if any(size < 1 for size in spatial) or any(size < 1 for size in out):
        raise LayerInputError(f"{name}: input size {tuple(spatial)} gives output size {out}, which is too small "
                              f"(stride {stride}, padding {padding}, dilation {dilation}, kernel {tuple(kernel)})")
    return ConvTranspose.call(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrTuple = 1,
           padding: str | IntOrTuple = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """Like ``torch.nn.functional.conv1d``, with the hand-written backward of :class:`Conv`."""
    return _conv_nd(1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrTuple = 1,
           padding: str | IntOrTuple = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """Like ``torch.nn.functional.conv2d``, with the hand-written backward of :class:`Conv`."""
    return _conv_nd(2, input, weight, bias, stride, padding, dilation, groups)


def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrTuple = 1,
           padding: str | IntOrTuple = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """Like ``torch.nn.functional.conv3d``, with the hand-written backward of :class:`Conv`."""
    return _conv_nd(3, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrTuple = 1,
                     padding: IntOrTuple = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                     dilation: IntOrTuple = 1) -> Tensor:
    """Like ``torch.nn.functional.conv_transpose1d``, with the hand-written backward of :class:`ConvTranspose`."""
    return _conv_transpose_nd(1, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrTuple = 1,
                     padding: IntOrTuple = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                     dilation: IntOrTuple = 1) -> Tensor:
    """Like ``torch.nn.functional.conv_transpose2d``, with the hand-written backward of :class:`ConvTranspose`."""
    return _conv_transpose_nd(2, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrTuple = 1,
                     padding: IntOrTuple = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                     dilation: IntOrTuple = 1) -> Tensor:
    """Like ``torch.nn.functional.conv_transpose3d``, with the hand-written backward of :class:`ConvTranspose`."""
    return _conv_transpose_nd(3, input, weight, bias, stride, padding, output_padding, groups, dilation)
