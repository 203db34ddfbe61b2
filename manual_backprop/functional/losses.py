"""Losses: C as a function of the network's output a, and the first factor of every δ, ∂C/∂a.

``reduction`` works as in torch: 'none' keeps one loss per sample, 'sum' adds them, 'mean'
divides the sum by D (the number of elements, or the total weight where weights are given).
The backward of every reduction is the same per-element derivative times g / D, where g is the
gradient arriving from above (1 for a loss that is the end of the graph).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import _reduction

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction

REDUCTIONS = ("none", "mean", "sum")


def _reduction_of(name: str, size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    if reduction not in REDUCTIONS:
        raise LayerInputError(f"{name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _reduce(per_element: Tensor, reduction: str, denominator: Tensor | float) -> Tensor:
    if reduction == "none":
        return per_element
    total = per_element.sum()
    return total / denominator if reduction == "mean" else total


def _upstream(grad: Tensor, reduction: str, denominator: Tensor | float) -> Tensor:
    """g / D: the gradient from above, spread back over the elements the reduction combined."""
    return grad / denominator if reduction == "mean" else grad


class MSELoss(ManualFunction):
    """C = Σ w (a − y)² / D   (w = 1 and D = N without weights; D = Σ w with them).

    ∂C/∂a = 2 w (a − y) / D,  ∂C/∂y = −∂C/∂a,  ∂C/∂w = ((a − y)² − C) / Σ w  (mean) or (a − y)².
    Forward mode sums the same factors times the tangents ȧ, ẏ, ẇ.
    """

    @staticmethod
    def forward(a: Tensor, y: Tensor, w: Tensor | None, reduction: str) -> Tensor:
        squared_error = (a - y) ** 2
        if w is None:
            return _reduce(squared_error, reduction, squared_error.numel())
        return _reduce(squared_error * w, reduction, w.sum())

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, y, w, ctx.reduction = inputs
        ctx.save_for_backward(a, y, w, output)
        ctx.save_for_forward(a, y, w, output)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, y, w, loss = ctx.saved_tensors
        error = a - y  # (a − y), recomputed from the inputs so a second derivative sees it
        denominator = error.numel() if w is None else w.sum()  # D: N, or Σ w
        g = _upstream(grad, ctx.reduction, denominator)  # g / D
        weighted_error = error if w is None else w * error  # w (a − y)
        grad_a = 2 * weighted_error * g if ctx.needs_input_grad[0] else None  # ∂C/∂a = 2w(a − y)/D
        grad_y = -2 * weighted_error * g if ctx.needs_input_grad[1] else None  # ∂C/∂y = −2w(a − y)/D
        grad_w = None
        if ctx.needs_input_grad[2]:
            mean_part = loss if ctx.reduction == "mean" else 0  # D = Σ w depends on w too
            grad_w = (error * error - mean_part) * g  # ∂C/∂w = ((a − y)² − C) / Σ w
        return grad_a, grad_y, grad_w, None

    @staticmethod
    def jvp(ctx, tangent_a, tangent_y, tangent_w, _):
        a, y, w, loss = ctx.saved_tensors
        error = a - y
        tangent_error = (0 if tangent_a is None else tangent_a) - (0 if tangent_y is None else tangent_y)  # ė = ȧ − ẏ
        weighted = 2 * error * tangent_error if w is None else 2 * w * error * tangent_error  # 2w(a − y)·ė
        if tangent_w is not None:
            mean_part = loss if ctx.reduction == "mean" else 0
            weighted = weighted + (error * error - mean_part) * tangent_w  # ((a − y)² − C)·ẇ
        denominator = error.numel() if w is None else w.sum()
        return _reduce(weighted, ctx.reduction, denominator)


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    """Like ``torch.nn.functional.mse_loss``; backward ∂C/∂a = 2(a − y)/N.

    Unlike torch, which only warns, a target whose shape differs from the input's is an error:
    broadcasting (N, 1) against (N,) silently computes an N × N loss.
    """
    reduction = _reduction_of("mse_loss", size_average, reduce, reduction)
    if shape(target) != shape(input):
        raise LayerInputError(
            f"mse_loss: target shape {shape(target)} differs from input shape {shape(input)}; "
            "reshape one of them (torch would broadcast them, which is almost always a bug)"
        )
    if weight is not None and shape(weight) != shape(input):
        raise LayerInputError(f"mse_loss: weight shape {shape(weight)} differs from input shape {shape(input)}")
    return MSELoss.call(input, target, weight, reduction)


def _class_dim(z: Tensor) -> int:
    return 1 if z.dim() >= 2 else 0


def _target_weights(z: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, smoothing: float):
    """q and D of the cross entropy  C = −Σ_c q_c log p_c / D,  for one element per sample.

    q is the (weighted, smoothed) target distribution: one-hot y for plain class targets,
    (1 − ε)·onehot + ε/C with label smoothing, each class scaled by its weight w_c, zero for ignored
    samples. D is what 'mean' divides by: Σ w_y over kept samples (class targets) or the number of
    samples (probability targets), as in torch.
    """
    dim, n_classes = _class_dim(z), z.shape[_class_dim(z)]
    class_weight = torch.ones(n_classes, dtype=z.dtype, device=z.device) if weight is None else weight
    w_shape = [1] * z.dim()
    w_shape[dim] = n_classes
    w = class_weight.reshape(w_shape)
    if target.is_floating_point():  # probability targets
        q = (target * (1 - smoothing) + smoothing / n_classes) * w
        return q, target.numel() / n_classes
    keep = target != ignore_index
    y = target.where(keep, 0)
    kept = keep.unsqueeze(dim)
    classes = torch.arange(n_classes, device=z.device).reshape(w_shape)
    onehot = (y.unsqueeze(dim) == classes).to(z.dtype)
    weighted_onehot = onehot * w * kept  # w_y at class y, zero for ignored samples
    q = (1 - smoothing) * weighted_onehot + (smoothing / n_classes) * w * kept
    return q, weighted_onehot.sum()  # Σ w_y over kept samples


class CrossEntropy(ManualFunction):
    """C = −Σ_c q_c log softmax(z)_c / D   (q = one-hot target in the plain case, D = N).

    With p = softmax(z):  ∂C/∂z_j = (p_j · Σ_c q_c − q_j) / D, which for a one-hot target is the
    textbook (softmax − onehot) / N.  For probability targets also ∂C/∂t_c = −(1 − ε) w_c log p_c / D.
    Forward mode: Ċ = Σ_j ∂C/∂z_j · ż_j + Σ_c ∂C/∂t_c · ṫ_c.
    """

    @staticmethod
    def forward(z, target, weight, ignore_index: int, smoothing: float, reduction: str) -> Tensor:
        q, denominator = _target_weights(z, target, weight, ignore_index, smoothing)
        q_log_p = q * torch.log_softmax(z, _class_dim(z))
        q_log_p = torch.where(q == 0, 0.0, q_log_p)  # 0 · log 0 = 0: a −inf logit off the target is fine
        return _reduce(-q_log_p.sum(_class_dim(z)), reduction, denominator)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, target, weight, ctx.ignore_index, ctx.smoothing, ctx.reduction = inputs
        ctx.save_for_backward(z, target, weight)
        ctx.save_for_forward(z, target, weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, target, weight = ctx.saved_tensors
        dim = _class_dim(z)
        q, denominator = _target_weights(z, target, weight, ctx.ignore_index, ctx.smoothing)
        g = _upstream(grad, ctx.reduction, denominator)  # g / D
        if ctx.reduction == "mean" and not target.is_floating_point():
            g = torch.where(denominator > 0, g, 0.0)  # every sample ignored: C is 0/0, no sample is to blame
        if ctx.reduction == "none":
            g = g.unsqueeze(dim)  # one loss per sample: broadcast it over the classes
        grad_z = grad_target = None
        if ctx.needs_input_grad[0]:
            p = torch.softmax(z, dim)  # ∂(−log p_c)/∂z_j = p_j − [c = j]
            grad_z = (p * q.sum(dim, keepdim=True) - q) * g  # ∂C/∂z = (p · Σq − q) / D
        if ctx.needs_input_grad[1]:
            w = 1 if weight is None else weight.reshape([-1 if d == dim else 1 for d in range(z.dim())])  # w_c
            log_p = torch.log_softmax(z, dim)  # ∂q_c/∂t_c = (1 − ε) w_c, times ∂C/∂q_c = −log p_c / D
            grad_target = -(1 - ctx.smoothing) * w * log_p * g  # ∂C/∂t = −(1 − ε) w log p / D
        return grad_z, grad_target, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_z, tangent_target, *_):
        z, target, weight = ctx.saved_tensors
        dim = _class_dim(z)
        q, denominator = _target_weights(z, target, weight, ctx.ignore_index, ctx.smoothing)
        per_element = torch.zeros_like(z)
        if tangent_z is not None:
            p = torch.softmax(z, dim)
            per_element = per_element + (p * q.sum(dim, keepdim=True) - q) * tangent_z  # ∂l/∂z · ż
        if tangent_target is not None:
            w = 1 if weight is None else weight.reshape([-1 if d == dim else 1 for d in range(z.dim())])
            per_element = per_element - (1 - ctx.smoothing) * w * torch.log_softmax(z, dim) * tangent_target
        tangent_loss = _reduce(per_element.sum(dim), ctx.reduction, denominator)
        if ctx.reduction == "mean" and not target.is_floating_point():
            tangent_loss = torch.where(denominator > 0, tangent_loss, 0.0)
        return tangent_loss


def _can_inspect_values(t: Tensor) -> bool:
    """Whether a Python ``if`` may look at ``t``'s values: not while compiling (a graph break) and
    not inside ``torch.func`` transforms (vmap cannot branch per sample)."""
    return not torch.compiler.is_compiling() and not torch._C._functorch.is_functorch_wrapped_tensor(t)


def _check_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, smoothing: float):
    if input.dim() == 0:
        raise LayerInputError("cross_entropy: input must have a class dimension, got a scalar")
    dim = _class_dim(input)
    n_classes = input.shape[dim]
    if not 0.0 <= smoothing <= 1.0:
        raise LayerInputError(f"cross_entropy: label_smoothing must be in [0, 1], got {smoothing}")
    if weight is not None:
        if shape(weight) != (n_classes,):
            raise LayerInputError(f"cross_entropy: weight shape {shape(weight)} is not ({n_classes},), one per class")
        if weight.requires_grad:
            raise LayerInputError("cross_entropy: class weights are constants here; pass weight.detach()")
    if target.is_floating_point():
        if ignore_index != -100:
            raise LayerInputError(
                f"cross_entropy: ignore_index={ignore_index} applies to class-index targets only, "
                "and this target holds probabilities"
            )
        if shape(target) != shape(input):
            raise LayerInputError(
                f"cross_entropy: probability target shape {shape(target)} differs from input shape {shape(input)}"
            )
        return
    expected = shape(input)[:dim] + shape(input)[dim + 1 :]
    if shape(target) != expected:
        raise LayerInputError(
            f"cross_entropy: class-index target shape {shape(target)} does not match input shape "
            f"{shape(input)}; expected {expected} (the input without its class dimension {dim})"
        )
    if target.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16, torch.int8):
        raise LayerInputError(f"cross_entropy: class-index target must be an integer tensor, got {target.dtype}")
    if _can_inspect_values(target):
        bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
        if bad.any():
            raise LayerInputError(
                f"cross_entropy: target holds class indices {sorted(set(target[bad].tolist()))[:10]} "
                f"outside [0, {n_classes}) (ignore_index={ignore_index})"
            )


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Like ``torch.nn.functional.cross_entropy``; backward ∂C/∂z = (softmax − onehot)/N.

    Class-index or probability targets, class weights, ``ignore_index``, ``label_smoothing``, and
    inputs (C,), (N, C) or (N, C, d1, d2, ...).
    """
    reduction = _reduction_of("cross_entropy", size_average, reduce, reduction)
    _check_cross_entropy(input, target, weight, ignore_index, label_smoothing)
    return CrossEntropy.call(input, target.long() if not target.is_floating_point() else target, weight,
                              ignore_index, float(label_smoothing), reduction)
