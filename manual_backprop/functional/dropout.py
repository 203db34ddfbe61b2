"""Dropout: a = z ⊙ m + β, with a random mask m drawn once per forward, and δ = ∂C/∂a ⊙ m.

The mask is drawn by the functional entries, outside the Function, exactly as torch's kernels draw
it (the same generator calls on a tensor of the same shape), so that after ``torch.manual_seed``
the same units are dropped as by ``torch.nn.functional``. The Function then sees m as a fixed
tensor, so the chain rule is that of an elementwise product:

- plain dropout: keep ~ Bernoulli(1 − p) per element, m = keep / (1 − p), β = 0;
- channel dropout (dropout1d/2d/3d): keep drawn per (sample, channel), shape (N, C, 1, ...),
  broadcast over the spatial dimensions;
- alpha dropout (and its channel form): a dropped unit is set to SELU's negative saturation value
  −α (α = λ·α_SELU = 1.7580993408473766) instead of 0, then everything is scaled by
  α′ = 1 / √((α²p + 1)(1 − p)) and shifted by α·α′·p, which keeps mean 0 and variance 1. As an
  elementwise product: m = keep · α′ and β = (keep − 1)·α·α′ + α·α′·p (torch's own arithmetic).

In evaluation mode, with p = 0 or with an empty input the layer is the identity and, like torch,
returns its input itself (no Function, no graph node). With p = 1 every unit is dropped: m = 0.

Index letters: n batch, c channel; m has the input's shape, or (n, c, 1, ...) for channel dropout.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from manual_backprop.errors import LayerInputError
from manual_backprop.functional._function import ManualFunction

#: α: alpha dropout sets a dropped unit to −α, SELU's negative saturation value (−λ·α of SELU)
ALPHA = 1.7580993408473766


class Dropout(ManualFunction):
    """a = z ⊙ m + β, the random mask m (and shift β) fixed for this forward.

    ∂C/∂z = δ ⊙ m               the dropped units (m = 0) pass no blame back; kept ones scale it by m
    ∂C/∂m = Σ δ ⊙ z             summed over the dimensions m was broadcast along (channel dropout)
    ∂C/∂β = Σ δ                 likewise
    Forward mode (jvp):  ȧ = ż ⊙ m + z ⊙ ṁ + β̇.
    The functional entries build m and β without gradient; only z normally needs one.
    """

    @staticmethod
    def forward(z: Tensor, m: Tensor, beta: Tensor | None) -> Tensor:
        a = z * m  # a = z ⊙ m
        return a if beta is None else a.add_(beta)  # + β (alpha dropout), added in place like torch

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, m, beta = inputs
        ctx.z_shape = z.shape
        ctx.beta_shape = None if beta is None else beta.shape
        saved = (z if ctx.needs_input_grad[1] else None, m)  # z only for ∂C/∂m
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(z, m)

    @staticmethod
    def backward(ctx, delta: Tensor):
        z, m = ctx.saved_tensors
        grad_z = grad_m = grad_beta = None
        if ctx.needs_input_grad[0]:
            grad_z = (delta * m).sum_to_size(ctx.z_shape)  # ∂C/∂z = δ ⊙ ∂a/∂z = δ ⊙ m
        if ctx.needs_input_grad[1]:
            grad_m = (delta * z).sum_to_size(m.shape)  # ∂C/∂m = Σ δ ⊙ z over the broadcast dims
        if ctx.needs_input_grad[2]:
            grad_beta = delta.sum_to_size(ctx.beta_shape)  # ∂C/∂β = Σ δ (∂a/∂β = 1)
        return grad_z, grad_m, grad_beta

    @staticmethod
    def jvp(ctx, tangent_z, tangent_m, tangent_beta):
        z, m = ctx.saved_tensors
        if tangent_z is not None:
            tangent_a = tangent_z * m  # ∂a/∂z · ż = m ⊙ ż
        else:
            tangent_a = torch.zeros(torch.broadcast_shapes(z.shape, m.shape), dtype=z.dtype, device=z.device)
        if tangent_m is not None:
            tangent_a = tangent_a + z * tangent_m  # ∂a/∂m · ṁ = z ⊙ ṁ
        if tangent_beta is not None:
            tangent_a = tangent_a + tangent_beta  # ∂a/∂β · β̇
        return tangent_a


class DropoutInplace(ManualFunction):
    """:class:`Dropout` written over z (``inplace=True``): a = z ⊙ m + β in z's memory.

    ∂C/∂z = δ ⊙ m; forward mode ȧ = ż ⊙ m (in place like the value). z is gone after the forward,
    so here m and β must be constants (the functional entries make them so). Not under
    ``torch.func.vmap`` (a Function that marks an input dirty has no generated vmap rule).
    """

    generate_vmap_rule = False

    @staticmethod
    def forward(z: Tensor, m: Tensor, beta: Tensor | None) -> Tensor:
        z.mul_(m)  # a = z ⊙ m, written over z
        return z if beta is None else z.add_(beta)  # + β

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, m, _ = inputs
        if any(ctx.needs_input_grad[1:]):
            raise LayerInputError("dropout (inplace=True): the mask and shift must be constants, "
                                  "since z is overwritten and ∂C/∂m = δ ⊙ z needs it")
        ctx.mark_dirty(z)
        ctx.save_for_backward(m)
        ctx.save_for_forward(m)

    @staticmethod
    def backward(ctx, delta: Tensor):
        (m,) = ctx.saved_tensors
        return delta * m, None, None  # ∂C/∂z = δ ⊙ m

    @staticmethod
    def jvp(ctx, tangent_z, *_):
        (m,) = ctx.saved_tensors
        return tangent_z.mul_(m)  # ȧ = m ⊙ ż, in place like the value


_FUSED_DEVICES = ("cuda", "xpu", "lazy", torch._C._get_privateuse1_backend_name())


def _check_p(name: str, p: float) -> None:
    if p < 0.0 or p > 1.0:
        raise LayerInputError(f"{name}: dropout probability has to be between 0 and 1, but got {p}")


def _channel_noise(name: str, input: Tensor, unbatched: bool) -> Tensor:
    """An uninitialised (n, c, 1, ...) tensor, as torch's ``make_feature_noise`` makes it.

    An unbatched input is seen as a batch of one, like torch's ``unsqueeze(0)``; the leading 1 is
    dropped again so that m broadcasts against the input itself.
    """
    sizes = (1, *input.shape) if unbatched else tuple(input.shape)
    if len(sizes) < 2:
        raise LayerInputError(f"{name}: feature (channel) dropout requires at least 2 dimensions in the input, "
                              f"got shape {tuple(input.shape)}")
    noise = input.new_empty((sizes[0], sizes[1], *[1] * (len(sizes) - 2)))
    return noise.squeeze(0) if unbatched else noise


def _mask_and_shift(name: str, input: Tensor, p: float, inplace: bool, channels: str | None,
                    alpha: bool) -> tuple[Tensor, Tensor | None]:
    """m and β for a forward in training mode with 0 < p, drawn as torch's ``_dropout_impl`` does."""
    if p == 1:
        return torch.zeros((), dtype=input.dtype, device=input.device), None  # every unit dropped: m = 0
    if not input.is_floating_point():
        raise LayerInputError(f"{name}: input must be a floating-point tensor in training mode, got {input.dtype}")
    if channels is None and not alpha and not inplace and input.device.type in _FUSED_DEVICES:
        # here torch's F.dropout runs the fused kernel native_dropout, which draws its own mask: take
        # that mask (its output may differ from z ⊙ m in the last bit, as 1/(1 − p) is rounded there)
        _, keep = torch.native_dropout(input.detach(), p, True)
        return keep.to(input.dtype).div_(1 - p), None
    if channels is None:
        keep = torch.empty_like(input)
    else:
        keep = _channel_noise(name, input, unbatched=channels == "unbatched")
    keep.bernoulli_(1 - p)  # keep ~ Bernoulli(1 − p): 1 keeps a unit, 0 drops it
    if not alpha:
        return keep.div_(1 - p), None  # m = keep / (1 − p), so that E[a] = z
    scale = 1.0 / math.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))  # α′: keeps variance 1 (in double, as torch)
    beta = keep.add(-1).mul_(ALPHA * scale).add_(ALPHA * scale * p)  # β = (keep − 1)·α·α′ + α·α′·p
    return keep.mul_(scale), beta  # m = keep · α′


def _dropout(name: str, input: Tensor, p: float, training: bool, inplace: bool,
             channels: str | None = None, alpha: bool = False) -> Tensor:
    _check_p(name, p)
    if p == 0 or not training or input.numel() == 0:
        return input  # the identity: torch returns the input itself
    m, beta = _mask_and_shift(name, input, p, inplace, channels, alpha)
    if inplace and torch._C._functorch.is_functorch_wrapped_tensor(input):
        # torch.func cannot batch an in-place Function: drop out of place, then write over the input
        return input.copy_(Dropout.call(input, m, beta))
    return DropoutInplace.call(input, m, beta) if inplace else Dropout.call(input, m, beta)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.dropout`` (same mask for the same seed); backward δ ⊙ keep / (1 − p)."""
    return _dropout("dropout", input, p, training, inplace)


def alpha_dropout(input: Tensor, p: float = 0.5, training: bool = False, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.alpha_dropout`` (same mask for the same seed); backward δ ⊙ keep · α′."""
    return _dropout("alpha_dropout", input, p, training, inplace, alpha=True)


def feature_alpha_dropout(input: Tensor, p: float = 0.5, training: bool = False, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.feature_alpha_dropout``: alpha dropout of whole channels."""
    return _dropout("feature_alpha_dropout", input, p, training, inplace, channels="batched", alpha=True)


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.dropout1d``: drops whole channels of (N, C, L) or (C, L)."""
    _check_p("dropout1d", p)
    if input.dim() not in (2, 3):
        raise LayerInputError(
            f"dropout1d: expected a 2-D (C, L) or 3-D (N, C, L) input, got shape {tuple(input.shape)}"
        )
    channels = "batched" if input.dim() == 3 else "unbatched"
    return _dropout("dropout1d", input, p, training, inplace, channels=channels)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.dropout2d``: drops whole channels of (N, C, H, W), with torch's warnings."""
    _check_p("dropout2d", p)
    inp_dim = input.dim()
    if inp_dim not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {inp_dim}-D input to dropout2d, which is deprecated "
            "and will result in an error in a future release. To retain the behavior "
            "and silence this warning, please use dropout instead. Note that dropout2d "
            "exists to provide channel-wise dropout on inputs with 2 spatial dimensions, "
            "a channel dimension, and an optional batch dimension (i.e. 3D or 4D inputs).",
            stacklevel=2,
        )
    if inp_dim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
            "1D dropout behavior is desired - input is interpreted as shape (N, C, L), where C "
            "is the channel dim. This behavior will change in a future release to interpret the "
            "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
            "channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=2,
        )
    return _dropout("dropout2d", input, p, training, inplace, channels="batched")


def dropout3d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Like ``torch.nn.functional.dropout3d``: drops whole channels of (N, C, D, H, W) or (C, D, H, W)."""
    _check_p("dropout3d", p)
    inp_dim = input.dim()
    if inp_dim not in (4, 5):
        warnings.warn(
            f"dropout3d: Received a {inp_dim}-D input to dropout3d, which is deprecated "
            "and will result in an error in a future release. To retain the behavior "
            "and silence this warning, please use dropout instead. Note that dropout3d "
            "exists to provide channel-wise dropout on inputs with 3 spatial dimensions, "
            "a channel dimension, and an optional batch dimension (i.e. 4D or 5D inputs).",
            stacklevel=2,
        )
    channels = "batched" if inp_dim == 5 else "unbatched"
    return _dropout("dropout3d", input, p, training, inplace, channels=channels)
