"""Normalization layers: standardize x over a set of elements, then scale and shift it.

Every normalization here except local response normalization is one computation,
:class:`Normalization`, that differs only in which elements share a mean and a spread:

    BatchNorm      per channel c, over the batch and every spatial position   (n, *spatial)
    InstanceNorm   per sample n and channel c, over the spatial positions     (*spatial)
    LayerNorm      per sample, over the trailing ``normalized_shape``          (*normalized_shape)
    GroupNorm      per sample n and group of channels, over the group          (c in group, *spatial)
    RMSNorm        as LayerNorm, but divided by the root mean square, not centered

:class:`Reduction` states that set (the reduced dimensions) and how γ and β broadcast over x.

Symbols used below: x the input, N the number of elements in one reduced set, μ = Σx/N its mean,
σ = √(Σ(x − μ)²/N + ε) its spread, x̂ = (x − μ)/σ the standardized input, γ (weight) and β (bias)
the affine parameters, y = γ ⊙ x̂ + β the output, δ = ∂C/∂y the gradient arriving from above, and
g = ∂C/∂x̂ = δ ⊙ γ. mean(·) and Σ without other mention run over one reduced set.

Half-precision inputs are computed in float32 (their "opmath" type, as torch does) and the result is
cast back to the input's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction, may_write_in_place

_REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype the arithmetic runs in: float32 for float16/bfloat16, the dtype itself otherwise."""
    return torch.float32 if dtype in _REDUCED_PRECISION else dtype


@dataclass(frozen=True)
class Reduction:
    """Which elements share one μ and σ, and how γ, β broadcast over x.

    ``dims``: the reduced dimensions of the statistics view of x; ``view``: the shape x takes for the
    statistics (GroupNorm: (N, groups, elements per group)), ``None`` for x as it is;
    ``param_shape``: γ and β reshaped to broadcast against x; ``centered``: False for RMSNorm (no μ).
    """

    dims: tuple[int, ...]
    param_shape: tuple[int, ...]
    view: tuple[int, ...] | None = None
    centered: bool = True

    def stats_view(self, t: Tensor) -> Tensor:
        return t if self.view is None else t.reshape(self.view)

    def params_per_set(self, x: Tensor) -> bool:
        """Whether γ and β are one constant over each reduced set of x (BatchNorm, InstanceNorm): centered,
        no view, and the parameter shape spans x's dimensions with 1 along every reduced one."""
        return (self.view is None and self.centered and len(self.param_shape) == x.dim()
                and all(self.param_shape[d] == 1 for d in self.dims))

    def count(self, x: Tensor) -> int:
        """N: how many elements share one μ and σ."""
        sizes = self.stats_view(x).shape
        return math.prod([sizes[d] for d in self.dims])


def _standardize(x: Tensor, reduction: Reduction, eps: float) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """x̂ = (x − μ)/σ in x's shape, with 1/σ, μ and the biased variance in the statistics view.

    Uncentered (RMSNorm): x̂ = x/σ, σ = √(mean(x²) + ε), μ = None, and the "variance" is mean(x²).
    """
    x_view = reduction.stats_view(x.to(_opmath(x.dtype)))
    if reduction.centered:
        # μ = s + mean(x − s) for any constant s; with s one element of the set, x − s stays exact and
        # small even when the set sits far from 0 (1e4 ± 0.01 in float32), so μ and x − μ stay accurate
        shift = x_view.detach()
        for dim in reduction.dims:
            shift = shift.narrow(dim, 0, min(1, shift.shape[dim]))  # (an empty set keeps its empty shift)
        shifted = x_view - shift
        shifted_mean = shifted.mean(reduction.dims, keepdim=True)
        mu = shift + shifted_mean  # μ = Σx/N
        centered = shifted - shifted_mean  # x − μ
        var = centered.square().mean(reduction.dims, keepdim=True)  # Σ(x − μ)²/N
    else:
        var, mu = x_view.square().mean(reduction.dims, keepdim=True), None  # Σx²/N
        centered = x_view
    rstd = torch.rsqrt(var + eps)  # 1/σ
    return (centered * rstd).reshape(x.shape), rstd, mu, var


def _fixed_standardize(x: Tensor, mean: Tensor, var: Tensor, reduction: Reduction, eps: float):
    """x̂ = (x − μ_run)/σ_run with the fixed running statistics (one per channel), and 1/σ_run."""
    opmath = _opmath(x.dtype)
    mu = mean.to(opmath).reshape(reduction.param_shape)
    rstd = torch.rsqrt(var.to(opmath).reshape(reduction.param_shape) + eps)  # 1/σ_run
    return (x.to(opmath) - mu) * rstd, rstd


def _broadcast(param: Tensor | None, like: Tensor, reduction: Reduction) -> Tensor | None:
    return None if param is None else param.to(like.dtype).reshape(reduction.param_shape)


def _project(g: Tensor, x_hat: Tensor, rstd: Tensor, reduction: Reduction) -> Tensor:
    """(1/σ)(g − mean(g) − x̂ ⊙ mean(g ⊙ x̂)) over each reduced set: g times the Jacobian ∂x̂/∂x.

    That Jacobian, (1/σ)(I − 11ᵀ/N − x̂x̂ᵀ/N), is symmetric, so the same product is the
    backward (g = ∂C/∂x̂) and the forward-mode derivative (g = ẋ). RMSNorm has no 11ᵀ/N term.
    """
    g_view, x_hat_view = reduction.stats_view(g), reduction.stats_view(x_hat)
    mean_g_x_hat = (g_view * x_hat_view).mean(reduction.dims, keepdim=True)  # mean(g ⊙ x̂): through σ
    through_sigma = x_hat_view * mean_g_x_hat
    if reduction.centered:
        g_view = g_view - g_view.mean(reduction.dims, keepdim=True)  # − mean(g): through μ
    return (rstd * (g_view - through_sigma)).reshape(g.shape)  # times 1/σ: x̂ = (x − μ)/σ


def _sum_over_shared(t: Tensor, reduction: Reduction, like: tuple[torch.Size, torch.dtype]) -> Tensor:
    """Σ of t over every position that shares one entry of γ (or β), in the parameter's (shape, dtype)."""
    param_shape, param_dtype = like
    return t.sum_to_size(reduction.param_shape).reshape(param_shape).to(param_dtype)


def _affine_grads(ctx, sum_delta_x_hat: Tensor, sum_delta: Tensor, weight: Tensor | None, reduction: Reduction):
    """(∂C/∂γ, ∂C/∂β) from the per-set sums Σ δ ⊙ x̂ and Σ δ, each where wanted."""
    grad_weight = grad_bias = None
    if ctx.needs_input_grad[1]:
        grad_weight = _sum_over_shared(sum_delta_x_hat, reduction, (weight.shape, weight.dtype))  # ∂C/∂γ = Σ δ ⊙ x̂
    if ctx.needs_input_grad[2]:
        grad_bias = _sum_over_shared(sum_delta, reduction, ctx.bias_like)  # ∂C/∂β = Σ δ
    return grad_weight, grad_bias


def _update_running_stats(running_mean: Tensor, running_var: Tensor, mu: Tensor, var: Tensor, n: int,
                          momentum: float) -> None:
    """r ← (1 − momentum)·r + momentum·statistic, with the unbiased variance Σ(x − μ)²/(N − 1).

    InstanceNorm has one μ per sample and channel; the running statistic moves toward their average
    over the samples, as torch's does.
    """
    channels = running_mean.numel()
    batch_mean = mu.reshape(-1, channels).mean(0)
    batch_var = (var * (n / (n - 1))).reshape(-1, channels).mean(0)  # unbiased: × N/(N − 1)
    running_mean.copy_(momentum * batch_mean + (1 - momentum) * running_mean)
    running_var.copy_(momentum * batch_var + (1 - momentum) * running_var)


class Normalization(ManualFunction):
    """y = γ ⊙ x̂ + β,  x̂ = (x − μ)/σ,  over the reduced sets that :class:`Reduction` describes.

    With batch statistics (``training``), μ = Σx/N and σ = √(Σ(x − μ)²/N + ε) come from x itself
    (RMSNorm: no μ, σ = √(Σx²/N + ε)). Each x_j reaches x̂_i directly, through μ and through σ:
    ∂x̂_i/∂x_j = (1/σ)([i = j] − 1/N − x̂_i x̂_j / N), hence, with g = ∂C/∂x̂ = δ ⊙ γ,

        ∂C/∂x = (1/σ)(g − mean(g) − x̂ ⊙ mean(g ⊙ x̂))      (RMSNorm: without − mean(g))

    With fixed running statistics (BatchNorm and InstanceNorm in eval mode), μ_run and σ_run are
    constants, so ∂C/∂x = g/σ_run. In both cases

        ∂C/∂γ = Σ δ ⊙ x̂,   ∂C/∂β = Σ δ      (summed over every position that shares γ and β)

    Forward mode (the Jacobian is symmetric): ẏ = γ ⊙ (1/σ)(ẋ − mean(ẋ) − x̂ ⊙ mean(ẋ ⊙ x̂)) + γ̇ ⊙ x̂ + β̇
    (with running statistics: ẏ = γ ⊙ ẋ/σ_run + γ̇ ⊙ x̂ + β̇).

    In training, ``running_mean`` and ``running_var`` (when given) are updated in the forward, in
    place, without gradient: r ← (1 − momentum)·r + momentum·statistic (unbiased variance).
    """

    @staticmethod
    def forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
                running_var: Tensor | None, training: bool, momentum: float, eps: float,
                reduction: Reduction) -> Tensor:
        if training:
            x_hat, _, mu, var = _standardize(x, reduction, eps)  # x̂ = (x − μ)/σ from this batch
            if running_mean is not None and x.numel() > 0:
                _update_running_stats(running_mean, running_var, mu, var, reduction.count(x), momentum)
        else:
            x_hat, _ = _fixed_standardize(x, running_mean, running_var, reduction, eps)  # x̂ = (x − μ_run)/σ_run
        y = x_hat
        if weight is not None:
            y = y * _broadcast(weight, x_hat, reduction)  # γ ⊙ x̂
        if bias is not None:
            y = y + _broadcast(bias, x_hat, reduction)  # + β
        return y.to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, running_mean, running_var, ctx.training, _, ctx.eps, ctx.reduction = inputs
        ctx.bias_like = None if bias is None else (bias.shape, bias.dtype)
        # running statistics change in place at every training step: saved only where backward reads them
        saved = (x, weight) if ctx.training else (x, weight, running_mean, running_var)
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    @staticmethod
    def _x_hat(ctx, x: Tensor, saved: tuple) -> tuple[Tensor, Tensor]:
        """x̂ and 1/σ, recomputed from the saved x so that a second derivative sees their dependence on x."""
        if ctx.training:
            x_hat, rstd, _, _ = _standardize(x, ctx.reduction, ctx.eps)
            return x_hat, rstd
        return _fixed_standardize(x, *saved, ctx.reduction, ctx.eps)

    @staticmethod
    def backward(ctx, delta: Tensor):
        x, weight, *running = ctx.saved_tensors
        x_hat, rstd = Normalization._x_hat(ctx, x, running)  # x̂ and 1/σ
        return Normalization._backward_through(ctx, delta, x, weight, x_hat, rstd)

    @staticmethod
    def _backward_through(ctx, delta: Tensor, x: Tensor, weight: Tensor | None, x_hat: Tensor, rstd: Tensor):
        """∂C/∂x, ∂C/∂γ, ∂C/∂β from x̂ and 1/σ (as functions of x when a second derivative is built)."""
        reduction = ctx.reduction
        delta = delta.to(x_hat.dtype)  # δ in the dtype the arithmetic runs in
        grad_x = grad_weight = grad_bias = None
        if ctx.training and x.numel() > 0 and reduction.params_per_set(x):
            return Normalization._per_channel_backward(ctx, delta, x, weight, x_hat, rstd)
        if ctx.needs_input_grad[0]:
            g = delta if weight is None else delta * _broadcast(weight, x_hat, reduction)  # g = ∂C/∂x̂ = δ ⊙ γ
            if ctx.training:
                grad_x = _project(g, x_hat, rstd, reduction)  # ∂C/∂x = (1/σ)(g − mean g − x̂ ⊙ mean(g ⊙ x̂))
            else:
                grad_x = g * rstd  # ∂C/∂x = g/σ_run: the running statistics do not depend on x
            grad_x = grad_x.to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = _sum_over_shared(delta * x_hat, reduction, (weight.shape, weight.dtype))  # ∂C/∂γ = Σ δ ⊙ x̂
        if ctx.needs_input_grad[2]:
            grad_bias = _sum_over_shared(delta, reduction, ctx.bias_like)  # ∂C/∂β = Σ δ
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None

    @staticmethod
    def _per_channel_backward(ctx, delta: Tensor, x: Tensor, weight: Tensor | None, x_hat: Tensor, rstd: Tensor):
        """Training backward when γ is one constant per reduced set (BatchNorm, InstanceNorm): γ leaves every
        mean, so mean(g) = γ Σδ/N and mean(g ⊙ x̂) = γ Σδ⊙x̂/N reuse the sums that ∂C/∂β and ∂C/∂γ are.

            ∂C/∂x = (γ/σ)(δ − Σδ/N − x̂ ⊙ Σ(δ ⊙ x̂)/N)
        """
        reduction = ctx.reduction
        n = reduction.count(x)
        sum_delta = delta.sum(reduction.dims, keepdim=True)  # Σδ: through μ, and ∂C/∂β
        sum_delta_x_hat = (delta * x_hat).sum(reduction.dims, keepdim=True)  # Σδ ⊙ x̂: through σ, and ∂C/∂γ
        scale = rstd if weight is None else rstd * _broadcast(weight, x_hat, reduction)  # γ/σ
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addcmul(delta - sum_delta / n, x_hat, sum_delta_x_hat, value=-1 / n)  # δ − Σδ/N − x̂ Σδx̂/N
            grad_x = (grad_x * scale).to(x.dtype)  # times γ/σ: y = γ(x − μ)/σ + β
        grad_weight, grad_bias = _affine_grads(ctx, sum_delta_x_hat, sum_delta, weight, reduction)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, tangent_weight, tangent_bias, *_):
        return _normalization_jvp(ctx, tangent_x, tangent_weight, tangent_bias)


def _normalization_jvp(ctx, tangent_x, tangent_weight, tangent_bias) -> Tensor:
    """ẏ = γ ⊙ ẋ̂ + γ̇ ⊙ x̂ + β̇ (see :class:`Normalization`), from the x and γ saved first in ``ctx``."""
    x, weight, *running = ctx.saved_tensors
    reduction = ctx.reduction
    x_hat, rstd = Normalization._x_hat(ctx, x, running)  # x̂ and 1/σ
    tangent_y = torch.zeros_like(x_hat)
    if tangent_x is not None:
        tangent_x = tangent_x.to(x_hat.dtype)
        if ctx.training:
            tangent_x_hat = _project(tangent_x, x_hat, rstd, reduction)  # ẋ̂ = (1/σ)(ẋ − mean ẋ − x̂ mean(ẋ x̂))
        else:
            tangent_x_hat = tangent_x * rstd  # ẋ̂ = ẋ/σ_run
        if weight is not None:
            tangent_x_hat = tangent_x_hat * _broadcast(weight, x_hat, reduction)  # γ ⊙ ẋ̂
        tangent_y = tangent_y + tangent_x_hat
    if tangent_weight is not None:
        tangent_y = tangent_y + _broadcast(tangent_weight, x_hat, reduction) * x_hat  # γ̇ ⊙ x̂
    if tangent_bias is not None:
        tangent_y = tangent_y + _broadcast(tangent_bias, x_hat, reduction)  # β̇
    return tangent_y.to(x.dtype)


def _save_with_statistics(ctx, inputs, output) -> None:
    """setup_context of the Functions whose forward is torch's (BatchNormTraining, LayerNormTraining): the
    outputs μ and 1/σ are not differentiable; x, γ, μ and 1/σ are saved."""
    x, weight, bias, _, _, ctx.training, _, ctx.eps, ctx.reduction = inputs
    _, mu, rstd = output
    ctx.mark_non_differentiable(mu, rstd)
    ctx.bias_like = None if bias is None else (bias.shape, bias.dtype)
    ctx.save_for_backward(x, weight, mu, rstd)
    ctx.save_for_forward(x, weight, mu, rstd)


class BatchNormTraining(Normalization):
    """:class:`Normalization` for BatchNorm with batch statistics, its forward computed by torch's
    ``native_batch_norm`` forward, which also returns the statistics μ and 1/σ per channel (and updates
    the running ones): backward then needs no pass over x to find them again.

    Outputs (y, μ, 1/σ); μ and 1/σ are not differentiable. γ is one constant per channel, so (see
    :meth:`Normalization._per_channel_backward`)

        ∂C/∂x = (γ/σ)(δ − Σδ/N − x̂ ⊙ Σ(δ ⊙ x̂)/N),   ∂C/∂γ = Σ δ ⊙ x̂,   ∂C/∂β = Σ δ

    When no second derivative is being built (grad mode off in backward), x − μ comes from the saved
    μ, and everything is computed in place in one full-size buffer (on the CPU, fresh memory costs
    more than a pass over it): first δ ⊙ (x − μ) for Σδ ⊙ x̂, then ∂C/∂x =
    −(γ/σ)·x̂·Σδx̂/N + (γ/σ)·δ − (γ/σ)·Σδ/N, a per-channel "a·x̂ + b·δ + c". The buffer is made like δ,
    so that vmap over δ (batched gradients) writes into a batched tensor. Otherwise x̂ and 1/σ are
    recomputed from x, so that a second derivative sees how they depend on x.
    """

    @staticmethod
    def forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
                running_var: Tensor | None, training: bool, momentum: float, eps: float,
                reduction: Reduction) -> tuple[Tensor, Tensor, Tensor]:
        return torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum,
                                       eps)  # (y = γ ⊙ x̂ + β, μ, 1/σ)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_with_statistics(ctx, inputs, output)

    @staticmethod
    def backward(ctx, delta: Tensor, _grad_mu, _grad_rstd):
        x, weight, mu, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # a second derivative: x̂ and 1/σ as functions of x
            x_hat, rstd, _, _ = _standardize(x, ctx.reduction, ctx.eps)
            return Normalization._per_channel_backward(ctx, delta, x, weight, x_hat, rstd)
        reduction = ctx.reduction
        n = reduction.count(x)
        mu, rstd = mu.reshape(reduction.param_shape), rstd.reshape(reduction.param_shape)
        sum_delta = delta.sum(reduction.dims, keepdim=True)  # Σδ: through μ, and ∂C/∂β
        buffer = torch.empty_like(delta)  # the one full-size tensor allocated here, filled twice
        delta_centered = buffer.copy_(x).sub_(mu).mul_(delta)  # δ ⊙ (x − μ) = σ δ ⊙ x̂
        sum_delta_x_hat = delta_centered.sum(reduction.dims, keepdim=True) * rstd  # Σδ ⊙ x̂: through σ, and ∂C/∂γ
        scale = rstd if weight is None else rstd * _broadcast(weight, buffer, reduction)  # γ/σ
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = buffer.copy_(x).sub_(mu)  # x − μ = σ x̂
            grad_x = grad_x.mul_(scale * rstd * sum_delta_x_hat / -n)  # − (γ/σ) x̂ Σδx̂/N: through σ
            grad_x = grad_x.addcmul_(delta, scale)  # + (γ/σ) δ: directly
            grad_x = grad_x.sub_(scale * sum_delta / n)  # − (γ/σ) Σδ/N: through μ
        grad_weight, grad_bias = _affine_grads(ctx, sum_delta_x_hat, sum_delta, weight, reduction)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, tangent_weight, tangent_bias, *_):
        return _normalization_jvp(ctx, tangent_x, tangent_weight, tangent_bias), None, None


class LayerNormTraining(Normalization):
    """:class:`Normalization` for LayerNorm, its forward computed by torch's ``native_layer_norm`` forward,
    which also returns the statistics μ and 1/σ of every row (one row: the trailing normalized_shape, N
    elements): backward then needs no pass over x to find them again.

    Outputs (y, μ, 1/σ); μ and 1/σ are not differentiable. With g = δ ⊙ γ, row by row,

        ∂C/∂x = (1/σ)(g − mean(g) − x̂ ⊙ mean(g ⊙ x̂)),   ∂C/∂γ = Σ δ ⊙ x̂,   ∂C/∂β = Σ δ

    When no second derivative is being built (grad mode off in backward), x̂ = (x − μ)/σ comes from the
    saved μ and 1/σ, and where :func:`may_write_in_place` allows, everything is computed in one full-size
    buffer (see :meth:`_in_place`). Otherwise x̂ and 1/σ are recomputed from x, so that a second derivative
    sees how they depend on x.
    """

    @staticmethod
    def forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
                running_var: Tensor | None, training: bool, momentum: float, eps: float,
                reduction: Reduction) -> tuple[Tensor, Tensor, Tensor]:
        normalized = x.shape[reduction.dims[0]:]
        return torch.native_layer_norm(x, normalized, weight, bias, eps)  # (y = γ ⊙ x̂ + β, μ, 1/σ)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_with_statistics(ctx, inputs, output)
        ctx.x_shape = inputs[0].shape

    @staticmethod
    def backward(ctx, delta: Tensor, _grad_mu, _grad_rstd):
        x, weight, mu, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # a second derivative: x̂ and 1/σ as functions of x
            x_hat, rstd, _, _ = _standardize(x, ctx.reduction, ctx.eps)
            return Normalization._backward_through(ctx, delta, x, weight, x_hat, rstd)
        n = ctx.reduction.count(x)  # N: the elements of one row
        x, delta = x.reshape(-1, n), delta.reshape(-1, n)  # one row per μ and σ
        mu, rstd = mu.reshape(-1, 1), rstd.reshape(-1, 1)
        gamma = None if weight is None else weight.reshape(n)
        if may_write_in_place(delta, x, mu, rstd):
            grad_x, grad_weight = LayerNormTraining._in_place(ctx, delta, x, gamma, mu, rstd)
        else:
            x_hat = (x - mu) * rstd  # x̂ = (x − μ)/σ
            grad_x = grad_weight = None
            if ctx.needs_input_grad[0]:
                g = delta if gamma is None else delta * gamma  # g = ∂C/∂x̂ = δ ⊙ γ
                mean_g, mean_g_x_hat = g.mean(1, keepdim=True), (g * x_hat).mean(1, keepdim=True)
                grad_x = (g - mean_g - x_hat * mean_g_x_hat) * rstd  # ∂C/∂x = (1/σ)(g − mean g − x̂ mean(g x̂))
            if ctx.needs_input_grad[1]:
                grad_weight = (delta * x_hat).sum(0)  # ∂C/∂γ = Σ δ ⊙ x̂
        grad_x = None if grad_x is None else grad_x.reshape(ctx.x_shape)
        grad_weight = None if grad_weight is None else grad_weight.reshape(weight.shape)
        grad_bias = delta.sum(0).reshape(ctx.bias_like[0]) if ctx.needs_input_grad[2] else None  # ∂C/∂β = Σ δ
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None

    @staticmethod
    def _in_place(ctx, delta: Tensor, x: Tensor, gamma: Tensor | None, mu: Tensor, rstd: Tensor):
        """∂C/∂x and ∂C/∂γ, rows of x and δ in one full-size buffer of their own (on the CPU, fresh memory
        costs more than a pass over it): first δ ⊙ (x − μ) = σ δ ⊙ x̂, whose sums give ∂C/∂γ = (1/σ)ᵀ(δ ⊙ (x − μ))
        and mean(g ⊙ x̂) = (1/σ)(δ ⊙ (x − μ))·γ/N, then ∂C/∂x = (1/σ)(g − mean(g) − (x − μ) ⊙ mean(g ⊙ x̂)/σ),
        mean(g) = δ·γ/N (matrix-vector products over the rows)."""
        n = x.shape[1]
        buffer = torch.empty_like(delta)  # the one full-size tensor allocated here, filled twice
        delta_centered = torch.sub(x, mu, out=buffer).mul_(delta)  # δ ⊙ (x − μ) = σ δ ⊙ x̂
        grad_weight = rstd.reshape(-1) @ delta_centered if ctx.needs_input_grad[1] else None  # ∂C/∂γ = Σ δ ⊙ x̂
        if not ctx.needs_input_grad[0]:
            return None, grad_weight
        if gamma is None:
            mean_g, mean_g_x_hat = delta.mean(1, keepdim=True), delta_centered.mean(1, keepdim=True) * rstd
        else:
            mean_g = (delta @ gamma).unsqueeze(1) / n  # mean(g) = δ·γ/N: through μ
            mean_g_x_hat = (delta_centered @ gamma).unsqueeze(1) * rstd / n  # mean(g ⊙ x̂) = (δ ⊙ x̂)·γ/N: through σ
        grad_x = torch.sub(x, mu, out=buffer).mul_(-rstd * mean_g_x_hat)  # − x̂ ⊙ mean(g ⊙ x̂), x̂ = (x − μ)/σ
        grad_x = grad_x.sub_(mean_g)  # − mean(g)
        grad_x = grad_x.add_(delta) if gamma is None else grad_x.addcmul_(delta, gamma)  # + g = δ ⊙ γ: directly
        return grad_x.mul_(rstd), grad_weight  # times 1/σ: x̂ = (x − μ)/σ

    @staticmethod
    def jvp(ctx, tangent_x, tangent_weight, tangent_bias, *_):
        return _normalization_jvp(ctx, tangent_x, tangent_weight, tangent_bias), None, None


def _channel_window_sum(t: Tensor, before: int, after: int) -> Tensor:
    """For every channel c (dim 1): Σ of t over channels c − before … c + after (zeros past the edges)."""
    padded = torch.nn.functional.pad(t.movedim(1, -1), (before, after))
    return padded.unfold(-1, before + after + 1, 1).sum(-1).movedim(-1, 1)


class LocalResponseNorm(ManualFunction):
    """b_c = x_c / d_c^β,  d_c = k + (α/n) Σ_{c' ∈ W(c)} x_{c'}²  across channels (dim 1).

    Index letters: c, j channels; n the window size; W(c) = channels c − ⌊n/2⌋ … c + ⌊(n − 1)/2⌋.
    x_j reaches b_j directly and every d_c whose window holds j, i.e. c ∈ W*(j) = j − ⌊(n − 1)/2⌋ …
    j + ⌊n/2⌋ (the mirrored window). With δ = ∂C/∂b:

        ∂C/∂x_j = δ_j / d_j^β  −  (2αβ/n) · x_j · Σ_{c ∈ W*(j)} δ_c x_c d_c^(−β−1)

    Forward mode: ḋ_c = (2α/n) Σ_{c' ∈ W(c)} x_{c'} ẋ_{c'},   ḃ_c = ẋ_c / d_c^β − β x_c d_c^(−β−1) ḋ_c.
    """

    @staticmethod
    def _d(x: Tensor, size: int, alpha: float, k: float) -> Tensor:
        """d_c = k + (α/n) Σ_{c' ∈ W(c)} x_{c'}²."""
        return _channel_window_sum(x * x, size // 2, (size - 1) // 2) / size * alpha + k

    @staticmethod
    def forward(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        x_op = x.to(_opmath(x.dtype))
        return (x_op / LocalResponseNorm._d(x_op, size, alpha, k).pow(beta)).to(x.dtype)  # b = x / d^β

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.size, ctx.alpha, ctx.beta, ctx.k = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx, delta: Tensor):
        (x,) = ctx.saved_tensors
        size, alpha, beta = ctx.size, ctx.alpha, ctx.beta
        x_op = x.to(_opmath(x.dtype))  # x and δ in the dtype the arithmetic runs in
        delta = delta.to(x_op.dtype)
        d = LocalResponseNorm._d(x_op, size, alpha, ctx.k)  # recomputed from x so a second derivative sees it
        d_pow = d.pow(-beta)  # d^(−β)
        direct = delta * d_pow  # δ_j / d_j^β: x_j in the numerator of b_j
        through_d = delta * (x_op * d_pow) / d  # δ_c x_c d_c^(−β−1) = −(1/β) ∂C/∂d_c, as δ b / d (no underflow)
        mirrored = _channel_window_sum(through_d, (size - 1) // 2, size // 2)  # Σ over c ∈ W*(j)
        grad_x = direct - (2 * alpha * beta / size) * x_op * mirrored  # ∂d_c/∂x_j = (2α/n) x_j
        return grad_x.to(x.dtype), None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        (x,) = ctx.saved_tensors
        size, alpha, beta = ctx.size, ctx.alpha, ctx.beta
        x_op = x.to(_opmath(x.dtype))  # x and ẋ in the dtype the arithmetic runs in
        tangent_x = tangent_x.to(x_op.dtype)
        d = LocalResponseNorm._d(x_op, size, alpha, ctx.k)  # d_c
        tangent_d = _channel_window_sum(x_op * tangent_x, size // 2, (size - 1) // 2) * (2 * alpha / size)  # ḋ
        d_pow = d.pow(-beta)  # d^(−β)
        tangent_b = tangent_x * d_pow - beta * (x_op * d_pow) / d * tangent_d  # ḃ = ẋ/d^β − β x d^(−β−1) ḋ
        return tangent_b.to(x.dtype)


# -- checks shared by the wrappers ------------------------------------------------------------------

def _check_floating(name: str, input: Tensor) -> None:
    if not input.is_floating_point():
        raise LayerInputError(f"{name}: input must be a floating-point tensor, got {input.dtype}")


def _check_params(name: str, input: Tensor, expected: tuple[int, ...], what: str, **params: Tensor | None) -> None:
    """Each parameter has shape ``expected`` and a dtype torch accepts: the input's, or float32 beside a
    float16/bfloat16 input."""
    allowed = {input.dtype} | ({torch.float32} if input.dtype in _REDUCED_PRECISION else set())
    for param_name, param in params.items():
        if param is None:
            continue
        if shape(param) != expected:
            raise LayerInputError(
                f"{name}: {param_name} shape {shape(param)} does not match {what} {expected} "
                f"(input shape {shape(input)})"
            )
        if param.dtype not in allowed:
            raise LayerInputError(
                f"{name}: {param_name} dtype {param.dtype} does not go with input dtype {input.dtype} "
                f"(expected one of {sorted(str(d) for d in allowed)})"
            )


def _check_running_stats(name: str, running_mean: Tensor | None, running_var: Tensor | None) -> None:
    if (running_mean is None) != (running_var is None):
        raise LayerInputError(f"{name}: running_mean and running_var must either both be None or neither be None")
    for stat_name, stat in (("running_mean", running_mean), ("running_var", running_var)):
        if stat is not None and stat.requires_grad:
            raise LayerInputError(
                f"{name}: {stat_name} requires grad, but running statistics get no gradient; pass {stat_name}.detach()"
            )


def _per_channel(input: Tensor, channel_dim: int = 1) -> tuple[int, ...]:
    """The shape that broadcasts one γ (or β) per channel over the input: (1, C, 1, ...)."""
    param_shape = [1] * input.dim()
    param_shape[channel_dim] = input.shape[channel_dim]
    return tuple(param_shape)


# -- the functional entries -------------------------------------------------------------------------

def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Like ``torch.nn.functional.batch_norm``: statistics per channel over (N, *spatial).

    Backward ∂C/∂x = (1/σ)(g − mean g − x̂ ⊙ mean(g ⊙ x̂)) in training, g/σ_run in eval (g = δ ⊙ γ).
    """
    name = "batch_norm"
    _check_floating(name, input)
    if input.dim() < 2:
        raise LayerInputError(f"{name}: input must be (N, C, *), got shape {shape(input)}")
    _check_running_stats(name, running_mean, running_var)
    channels = (input.shape[1],)
    _check_params(name, input, channels, "the number of channels", weight=weight, bias=bias,
                  running_mean=running_mean, running_var=running_var)
    if training:
        if input.shape[0] * math.prod(input.shape[2:]) == 1:
            raise LayerInputError(
                f"{name}: Expected more than 1 value per channel when training, got input size {shape(input)}"
            )
        if eps <= 0.0:
            raise LayerInputError(f"{name}: eps must be positive during training, but got {eps}")
    else:
        if eps < 0.0:
            raise LayerInputError(f"{name}: eps must be non-negative, but got {eps}")
        if running_mean is None:
            raise LayerInputError(f"{name}: running_mean and running_var must be given in evaluation mode")
    reduction = Reduction((0, *range(2, input.dim())), _per_channel(input))
    args = (input, weight, bias, running_mean, running_var, bool(training), float(momentum), float(eps), reduction)
    if training and input.numel() > 0 and input.dtype in (torch.float32, torch.float64) and all(
            t is None or t.dtype == input.dtype for t in (weight, bias, running_mean, running_var)):
        return BatchNormTraining.call(*args)[0]  # torch's kernel finds μ and 1/σ, and keeps them for backward
    return Normalization.call(*args)


def _instance_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_input_stats: bool,
    momentum: float,
    eps: float,
    batched: bool = True,
) -> Tensor:
    """instance_norm on (N, C, *), or, with ``batched=False`` (for the nn modules), on one sample (C, *)."""
    name = "instance_norm"
    _check_floating(name, input)
    channel_dim = 1 if batched else 0
    if input.dim() < channel_dim + 1:
        raise LayerInputError(f"{name}: input must be (N, C, *), got shape {shape(input)}")
    _check_running_stats(name, running_mean, running_var)
    channels = (input.shape[channel_dim],)
    _check_params(name, input, channels, "the number of channels", weight=weight, bias=bias,
                  running_mean=running_mean, running_var=running_var)
    if use_input_stats:
        if math.prod(input.shape[channel_dim + 1:]) == 1:
            raise LayerInputError(
                f"{name}: Expected more than 1 spatial element when training, got input size {shape(input)}"
            )
    elif running_mean is None:
        raise LayerInputError(f"{name}: running_mean and running_var must be given when use_input_stats is False")
    reduction = Reduction(tuple(range(channel_dim + 1, input.dim())), _per_channel(input, channel_dim))
    return Normalization.call(input, weight, bias, running_mean, running_var, bool(use_input_stats),
                              float(momentum), float(eps), reduction)


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Like ``torch.nn.functional.instance_norm``: statistics per sample and channel over *spatial.

    Backward as :func:`batch_norm`, over each (n, c)'s spatial positions.
    """
    return _instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


def _normalized_shape(name: str, input: Tensor, normalized_shape) -> tuple[int, ...]:
    normalized = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not normalized:
        raise LayerInputError(f"{name}: normalized_shape must hold at least one dimension, got {normalized}")
    if input.dim() < len(normalized) or shape(input)[input.dim() - len(normalized):] != normalized:
        raise LayerInputError(
            f"{name}: input shape {shape(input)} does not end in normalized_shape={normalized}; "
            f"expected (*, {', '.join(map(str, normalized))})"
        )
    return normalized


def layer_norm(
    input: Tensor,
    normalized_shape: list[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Like ``torch.nn.functional.layer_norm``: statistics per sample over the trailing normalized_shape.

    Backward ∂C/∂x = (1/σ)(g − mean g − x̂ ⊙ mean(g ⊙ x̂)), g = δ ⊙ γ.
    """
    name = "layer_norm"
    _check_floating(name, input)
    normalized = _normalized_shape(name, input, normalized_shape)
    _check_params(name, input, normalized, "normalized_shape", weight=weight, bias=bias)
    reduction = Reduction(tuple(range(input.dim() - len(normalized), input.dim())), normalized)
    args = (input, weight, bias, None, None, True, 0.0, float(eps), reduction)
    if input.numel() > 0 and input.dtype in (torch.float32, torch.float64) and all(
            t is None or t.dtype == input.dtype for t in (weight, bias)):
        return LayerNormTraining.call(*args)[0]  # torch's kernel finds μ and 1/σ, and keeps them for backward
    return Normalization.call(*args)


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Like ``torch.nn.functional.group_norm``: statistics per sample and group of C/num_groups channels.

    Backward ∂C/∂x = (1/σ)(g − mean g − x̂ ⊙ mean(g ⊙ x̂)) over each group, g = δ ⊙ γ.
    """
    name = "group_norm"
    _check_floating(name, input)
    if input.dim() < 2:
        raise LayerInputError(f"{name}: input must be (N, C, *) with at least 2 dimensions, got shape {shape(input)}")
    n, channels = input.shape[:2]
    if num_groups <= 0 or channels % num_groups:
        raise LayerInputError(
            f"{name}: num_groups={num_groups} must be positive and divide the {channels} channels "
            f"of input shape {shape(input)}"
        )
    spatial = math.prod(input.shape[2:])
    if n * channels // num_groups * spatial == 1:  # torch's own test, with the same message
        raise LayerInputError(
            f"{name}: Expected more than 1 value per channel when training, got input size "
            f"{[n * channels // num_groups, num_groups, *input.shape[2:]]}"
        )
    _check_params(name, input, (channels,), "the number of channels", weight=weight, bias=bias)
    reduction = Reduction((2,), _per_channel(input),
                          view=(n, num_groups, channels // num_groups * spatial))
    return Normalization.call(input, weight, bias, None, None, True, 0.0, float(eps), reduction)


def rms_norm(
    input: Tensor,
    normalized_shape: list[int],
    weight: Tensor | None = None,
    eps: float | None = None,
) -> Tensor:
    """Like ``torch.nn.functional.rms_norm``: x̂ = x/√(mean x² + ε) over the trailing normalized_shape.

    ``eps=None`` is the machine epsilon of the dtype the arithmetic runs in (float32 for
    float16/bfloat16 inputs), as in torch. Backward ∂C/∂x = (1/σ)(g − x̂ ⊙ mean(g ⊙ x̂)), g = δ ⊙ γ.
    """
    name = "rms_norm"
    _check_floating(name, input)
    normalized = _normalized_shape(name, input, normalized_shape)
    if weight is not None and shape(weight) != normalized:
        raise LayerInputError(
            f"{name}: weight shape {shape(weight)} does not match normalized_shape {normalized} "
            f"(input shape {shape(input)})"
        )
    if eps is None:
        eps = torch.finfo(_opmath(input.dtype)).eps
    reduction = Reduction(tuple(range(input.dim() - len(normalized), input.dim())), normalized, centered=False)
    return Normalization.call(input, weight, None, None, None, True, 0.0, float(eps), reduction)


def local_response_norm(input: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> Tensor:
    """Like ``torch.nn.functional.local_response_norm``: b_c = x_c / (k + (α/n) Σ_{window} x²)^β across channels.

    Backward ∂C/∂x_j = δ_j/d_j^β − (2αβ/n) x_j Σ_{c ∋ j} δ_c x_c d_c^(−β−1).
    """
    name = "local_response_norm"
    _check_floating(name, input)
    if input.dim() < 3:
        raise LayerInputError(f"{name}: input must be (N, C, *) with at least 3 dimensions, got shape {shape(input)}")
    if size <= 0:
        raise LayerInputError(f"{name}: size must be positive, got {size}")
    if input.numel() == 0:
        return input  # as torch: nothing to normalize
    return LocalResponseNorm.call(input, int(size), float(alpha), float(beta), float(k))
