"""Losses: C as a function of the network's output a, and the first factor of every δ, ∂C/∂a.

``reduction`` works as in torch: 'none' keeps one loss per sample, 'sum' adds them, 'mean'
divides the sum by D (the number of elements, or the total weight where weights are given).
The backward of every reduction is the same per-element derivative times g / D, where g is the
gradient arriving from above (1 for a loss that is the end of the graph).

Three rooms: MSE and cross-entropy; the losses that act element by element (L1, smooth L1, Huber,
BCE, BCE with logits, KL divergence, Poisson and Gaussian NLL, soft margin, margin ranking, hinge
embedding), which share one backward in :class:`PointwiseLoss` and state only l and ∂l/∂t; and the
losses over a class or feature dimension (NLL, multi-label soft margin, cosine embedding, multi
margin, triplet margin). Index letters: n sample, c class, d feature.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import _reduction

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction, float32_under_autocast, may_write_in_place

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


class ClassIndexCrossEntropy(ManualFunction):
    """C = −Σ_n log softmax(z_n)_{y_n} / N: cross entropy in its plain case (each target a class in [0, C),
    no class weights, no label smoothing), without building the one-hot q of CrossEntropy.

    ∂C/∂z = (softmax(z) − onehot(y)) / N: p · g everywhere, then − g added at each sample's target.
    Forward mode: Ċ = Σ_n (Σ_j p_nj ż_nj − ż_{n,y_n}) / N.

    The Function also returns log p = log softmax(z), the loss's one intermediate, so that backward may
    read p = e^(log p) from it (as torch's own backward does) rather than compute softmax(z) again;
    :func:`cross_entropy` drops it. Being an output, it keeps its place in a second derivative: whatever
    reaches it (∂C/∂log p, only in a second derivative) goes back to z through ∂log p_i/∂z_j = [i = j] − p_j.
    """

    @staticmethod
    def forward(z: Tensor, target: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
        log_p = torch.log_softmax(z, _class_dim(z))  # log p = z − log Σ e^z
        # −log p_y at each sample's target, reduced (summed, or averaged over N): one kernel where a gather, a
        # negation, a sum and a division are four
        return torch.nn.functional.nll_loss(log_p, target, reduction=reduction), log_p

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, target, ctx.reduction = inputs
        ctx.set_materialize_grads(False)  # log p's gradient is None outside second derivatives
        ctx.save_for_backward(output[1], target)
        ctx.save_for_forward(z, target)

    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_log_p: Tensor | None):
        log_p, target = ctx.saved_tensors
        dim = _class_dim(log_p)
        p = log_p.exp()  # softmax(z), from the saved log p
        grad_z = None
        if grad is not None:
            g = _upstream(grad, ctx.reduction, target.numel())  # g / N
            if ctx.reduction == "none":
                g = g.unsqueeze(dim)  # one loss per sample: broadcast it over the classes
            y = target.unsqueeze(dim)
            # ∂(−log p_y)/∂z_j = p_j − [j = y]: the p_j part, times g (into p's own buffer where it may be)
            grad_z = p.mul_(g) if grad_log_p is None and may_write_in_place(g) else p * g
            grad_z.scatter_add_(dim, y, (-g).expand(y.shape))  # the − [j = y] part, at the target only
        if grad_log_p is not None:
            # ∂C/∂z_j = Σ_i ∂C/∂log p_i · ([i = j] − p_j) = ∂C/∂log p_j − p_j · Σ_i ∂C/∂log p_i
            through_log_p = grad_log_p - p * grad_log_p.sum(dim, keepdim=True)
            grad_z = through_log_p if grad_z is None else grad_z + through_log_p
        return grad_z, None, None

    @staticmethod
    def jvp(ctx, tangent_z, *_):
        z, target = ctx.saved_tensors
        dim = _class_dim(z)
        p = torch.softmax(z, dim)
        through_p = (p * tangent_z).sum(dim, keepdim=True)  # Σ_j p_j ż_j
        at_target = tangent_z.gather(dim, target.unsqueeze(dim)).squeeze(dim)  # ż_y
        tangent_log_p = tangent_z - through_p  # (log p)˙_i = ż_i − Σ_j p_j ż_j
        return _reduce(through_p.squeeze(dim) - at_target, ctx.reduction, target.numel()), tangent_log_p


def _can_inspect_values(t: Tensor) -> bool:
    """Whether a Python ``if`` may look at ``t``'s values: not while compiling (a graph break) and
    not inside ``torch.func`` transforms (vmap cannot branch per sample)."""
    return not torch.compiler.is_compiling() and not torch._C._functorch.is_functorch_wrapped_tensor(t)


def _check_class_weight(name: str, weight: Tensor | None, n_classes: int) -> None:
    if weight is None:
        return
    if shape(weight) != (n_classes,):
        raise LayerInputError(f"{name}: weight shape {shape(weight)} is not ({n_classes},), one per class")
    if weight.requires_grad:
        raise LayerInputError(f"{name}: class weights are constants here; pass weight.detach()")


def _check_class_index_target(name: str, input: Tensor, target: Tensor, ignore_index: int, dtypes) -> bool:
    """A target of class indices: the input's shape without its class dimension, integers in [0, C).

    Returns whether every target was seen to be a class in [0, C) and none can be ignore_index: False
    when there are no targets, or when values cannot be looked at (compiling, vmap).
    """
    dim = _class_dim(input)
    n_classes = input.shape[dim]
    expected = shape(input)[:dim] + shape(input)[dim + 1 :]
    if shape(target) != expected:
        raise LayerInputError(
            f"{name}: class-index target shape {shape(target)} does not match input shape "
            f"{shape(input)}; expected {expected} (the input without its class dimension {dim})"
        )
    if target.dtype not in dtypes:
        raise LayerInputError(f"{name}: class-index target must be an integer tensor, got {target.dtype}")
    if not _can_inspect_values(target) or target.numel() == 0:
        return False
    lowest, highest = (int(v) for v in torch.aminmax(target))  # one pass over the targets
    if lowest >= 0 and highest < n_classes:
        return not lowest <= ignore_index <= highest  # (a target might be ignore_index: not seen as a class)
    bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)  # only when some lie outside
    if bad.any():
        raise LayerInputError(
            f"{name}: target holds class indices {sorted(set(target[bad].tolist()))[:10]} "
            f"outside [0, {n_classes}) (ignore_index={ignore_index})"
        )
    return False


def _check_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
                         smoothing: float) -> bool:
    """Raises on a bad call; returns whether every target is a class index in [0, C), none ignored."""
    if input.dim() == 0:
        raise LayerInputError("cross_entropy: input must have a class dimension, got a scalar")
    n_classes = input.shape[_class_dim(input)]
    if not 0.0 <= smoothing <= 1.0:
        raise LayerInputError(f"cross_entropy: label_smoothing must be in [0, 1], got {smoothing}")
    _check_class_weight("cross_entropy", weight, n_classes)
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
        return False
    return _check_class_index_target("cross_entropy", input, target, ignore_index,
                                     (torch.int64, torch.int32, torch.uint8, torch.int16, torch.int8))


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
    every_target_a_class = _check_cross_entropy(input, target, weight, ignore_index, label_smoothing)
    if every_target_a_class and weight is None and label_smoothing == 0.0:
        return ClassIndexCrossEntropy.call(input, target.long(), reduction)[0]  # the textbook case, without q
    return CrossEntropy.call(input, target.long() if not target.is_floating_point() else target, weight,
                              ignore_index, float(label_smoothing), reduction)


# -- losses that act element by element ----------------------------------------------------------

#: ATen's EPSILON, 1e-12 as a C float: the floor of a(1 − a) in BCE's backward, and what the cosine
#: embedding loss adds to each squared norm.
EPSILON = 9.999999960041972e-13


def _denominator(elements_shape, w: Tensor | None, mean_over) -> Tensor | int:
    """D of 'mean': the number of loss elements N ("elements"), Σ w ("weight"), or a given count."""
    if mean_over == "elements":
        return math.prod(elements_shape)
    if mean_over == "weight":
        return w.sum()
    return mean_over


class PointwiseLoss(ManualFunction):
    """Base of the losses whose every element l depends only on the same element of each input t_k:

        C = Σ w ⊙ l(t_1, t_2, ...) / D      (w = 1 without a weight; D as in :func:`_denominator`)

    The chain rule is the same for all of them and is written once here:

        ∂C/∂t_k = w ⊙ ∂l/∂t_k · g / D        (summed over any dimension t_k was broadcast along)
        ∂C/∂w   = (l − [D = Σ w] · C) · g / D

    with g the gradient arriving from above. A subclass states only ``loss(*tensors, *settings)`` and
    its partial derivatives ``dloss(needs, *tensors, *settings)`` (one per tensor, None where ``needs``
    says no gradient is wanted), and how many tensors it takes (``n_inputs``); the settings are plain
    numbers (β, δ, a margin, a flag). Forward mode: Ċ = Σ (w ⊙ Σ_k ∂l/∂t_k · ṫ_k + (l − [D = Σ w] · C) · ẇ) / D.
    A loss whose tensors line up only after a reshape (a variance per sample against a mean per
    element) states it in ``align``; the gradients are summed and reshaped back.

    The Function's arguments are ``(*tensors, w, reduction, mean_over, *settings)``.
    """

    n_inputs = 2

    def __init_subclass__(cls, **kwargs):
        if cls.__dict__.get("_twin"):  # the twin ManualFunction makes for jvp inherits the finished methods
            return super().__init_subclass__(**kwargs)
        # torch.compile and torch.func want staticmethods: build them as closures over loss and dloss.
        n, loss, dloss, align = cls.n_inputs, cls.loss, cls.dloss, cls.align

        def mean_part(ctx, cost):
            """C where D = Σ w depends on w (its derivative adds −C · g / D), else 0."""
            return cost if ctx.reduction == "mean" and ctx.mean_over == "weight" else 0

        def forward(*args):
            tensors, (w, reduction, mean_over, *settings) = args[:n], args[n:]
            elements = loss(*align(tensors, settings), *settings)  # l, element by element
            if w is not None:
                elements = elements * w  # w ⊙ l
            return _reduce(elements, reduction, _denominator(elements.shape, w, mean_over))

        def setup_context(ctx, inputs, output):
            tensors, (w, ctx.reduction, ctx.mean_over, *settings) = inputs[:n], inputs[n:]
            ctx.settings = tuple(settings)
            ctx.shape = torch.broadcast_shapes(*(t.shape for t in (*align(tensors, settings), w) if t is not None))
            ctx.save_for_backward(*tensors, w, output)
            ctx.save_for_forward(*tensors, w, output)

        def backward(ctx, grad):
            *originals, w, cost = ctx.saved_tensors
            tensors = align(originals, ctx.settings)
            needs = ctx.needs_input_grad
            g = _upstream(grad, ctx.reduction, _denominator(ctx.shape, w, ctx.mean_over))  # g / D
            w_g = g if w is None else w * g  # w · g / D
            partials = dloss(needs[:n], *tensors, *ctx.settings)  # ∂l/∂t_k
            grads = [(w_g * d).sum_to_size(t.shape).reshape(original.shape) if need else None  # ∂C/∂t_k
                     for original, t, d, need in zip(originals, tensors, partials, needs)]  # = w ⊙ ∂l/∂t_k · g/D
            grad_w = None
            if needs[n]:
                elements = loss(*tensors, *ctx.settings)  # ∂(w ⊙ l)/∂w = l
                grad_w = ((elements - mean_part(ctx, cost)) * g).sum_to_size(w.shape)  # ∂C/∂w = (l − C)·g/D
            return (*grads, grad_w) + (None,) * (2 + len(ctx.settings))

        def jvp(ctx, *tangents):
            *originals, w, cost = ctx.saved_tensors
            tensors = align(originals, ctx.settings)
            tangent_tensors, tangent_w = align(tangents[:n], ctx.settings), tangents[n]
            partials = dloss([t is not None for t in tangent_tensors], *tensors, *ctx.settings)
            per_element = cost.new_zeros(ctx.shape)
            for d, tangent in zip(partials, tangent_tensors):
                if tangent is not None and d is not None:  # d is None for a tensor torch does not differentiate
                    per_element = per_element + d * tangent  # ∂l/∂t_k · ṫ_k
            if w is not None:
                per_element = per_element * w  # w ⊙ Σ_k ∂l/∂t_k · ṫ_k
            if tangent_w is not None:
                elements = loss(*tensors, *ctx.settings)
                per_element = per_element + (elements - mean_part(ctx, cost)) * tangent_w  # (l − C) · ẇ
            return _reduce(per_element, ctx.reduction, _denominator(ctx.shape, w, ctx.mean_over))

        cls.forward = staticmethod(forward)
        cls.setup_context = staticmethod(setup_context)
        cls.backward = staticmethod(backward)
        cls.jvp = staticmethod(jvp)
        super().__init_subclass__(**kwargs)

    @staticmethod
    def align(tensors: tuple, settings: tuple) -> tuple:
        return tensors

    @staticmethod
    def loss(*tensors_and_settings) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def dloss(needs, *tensors_and_settings) -> tuple[Tensor | None, ...]:
        raise NotImplementedError


class L1Loss(PointwiseLoss):
    """l = |a − y|;   ∂l/∂a = sign(a − y),  ∂l/∂y = −sign(a − y)   (0 at a = y, as in torch)."""

    @staticmethod
    def loss(a, y):
        return (a - y).abs()

    @staticmethod
    def dloss(needs, a, y):
        sign = torch.sign(a - y)  # ∂|a − y|/∂a
        return sign, -sign  # ∂l/∂a, ∂l/∂y


class SmoothL1Loss(PointwiseLoss):
    """l = ½ (a − y)² / β  where |a − y| < β,  else |a − y| − ½ β      (β = 0: l = |a − y|)

    ∂l/∂a = (a − y)/β clamped to [−1, 1]  (sign(a − y) for β = 0),   ∂l/∂y = −∂l/∂a.
    """

    @staticmethod
    def loss(a, y, beta):
        error = (a - y).abs()
        if beta == 0:
            return error
        return torch.where(error < beta, 0.5 * error * error / beta, error - 0.5 * beta)

    @staticmethod
    def dloss(needs, a, y, beta):
        if beta == 0:
            slope = torch.sign(a - y)  # ∂|a − y|/∂a
        else:
            slope = ((a - y) / beta).clamp(-1, 1)  # (a − y)/β inside the quadratic zone, ±1 outside
        return slope, -slope  # ∂l/∂a, ∂l/∂y


class HuberLoss(PointwiseLoss):
    """l = ½ (a − y)²  where |a − y| < δ,  else δ (|a − y| − ½ δ)      (δ · SmoothL1 with β = δ)

    ∂l/∂a = (a − y) clamped to [−δ, δ],   ∂l/∂y = −∂l/∂a.
    """

    @staticmethod
    def loss(a, y, delta):
        error = (a - y).abs()
        return torch.where(error < delta, 0.5 * error * error, delta * (error - 0.5 * delta))

    @staticmethod
    def dloss(needs, a, y, delta):
        slope = (a - y).clamp(-delta, delta)  # a − y inside the quadratic zone, ±δ outside
        return slope, -slope  # ∂l/∂a, ∂l/∂y


class BinaryCrossEntropy(PointwiseLoss):
    """l = −[y · log a + (1 − y) · log(1 − a)],  each log clamped to ≥ −100 as in torch (a ∈ {0, 1}).

    ∂l/∂a = (a − y) / max(a (1 − a), ε)     (ε = 1e-12; torch's backward, finite at a ∈ {0, 1})
    ∂l/∂y = log(1 − a) − log a = −logit(a)
    """

    @staticmethod
    def loss(a, y):
        log_a = torch.log(a).clamp(min=-100)
        log_1_minus_a = torch.log1p(-a).clamp(min=-100)
        return -(y * log_a + (1 - y) * log_1_minus_a)

    @staticmethod
    def dloss(needs, a, y):
        grad_a = (a - y) / (a * (1 - a)).clamp(min=EPSILON) if needs[0] else None  # ∂l/∂a = (a − y)/(a(1 − a))
        grad_y = -torch.logit(a) if needs[1] else None  # ∂l/∂y = −log(a / (1 − a))
        return grad_a, grad_y


class BinaryCrossEntropyWithLogits(PointwiseLoss):
    """l = −[p_w · y · log σ(x) + (1 − y) · log σ(−x)]  =  (1 − y) x − (1 + (p_w − 1) y) · log σ(x)

    (p_w: the positive-class weight, 1 without one). log σ is computed stably, so logits of ±1e4
    give finite values and gradients.
    ∂l/∂x = (1 + (p_w − 1) y) · σ(x) − p_w · y      (σ(x) − y without p_w)
    ∂l/∂y = log σ(−x) − p_w · log σ(x)              (−x without p_w)
    """

    n_inputs = 3

    @staticmethod
    def loss(x, y, pos_weight):
        log_weight = 1 if pos_weight is None else 1 + (pos_weight - 1) * y  # 1 + (p_w − 1) y
        return (1 - y) * x - log_weight * F.logsigmoid(x)

    @staticmethod
    def dloss(needs, x, y, pos_weight):
        grad_x = grad_y = None
        if needs[0]:
            log_weight = 1 if pos_weight is None else 1 + (pos_weight - 1) * y
            positive = y if pos_weight is None else pos_weight * y  # p_w · y
            grad_x = log_weight * torch.sigmoid(x) - positive  # ∂l/∂x = (1 + (p_w − 1) y) σ(x) − p_w y
        if needs[1]:
            if pos_weight is None:
                grad_y = -x  # ∂l/∂y = −x
            else:
                grad_y = F.logsigmoid(-x) - pos_weight * F.logsigmoid(x)  # ∂l/∂y = log σ(−x) − p_w log σ(x)
        return grad_x, grad_y, None


class KLDiv(PointwiseLoss):
    """x: log-probabilities, y: probabilities (or log-probabilities with ``log_target``).

    l = y (log y − x)   (0 where y = 0);   ∂l/∂x = −y,      ∂l/∂y = log y + 1 − x
    log_target: l = e^y (y − x);           ∂l/∂x = −e^y,    ∂l/∂y = e^y (y − x + 1)
    """

    @staticmethod
    def loss(x, y, log_target):
        if log_target:
            return torch.exp(y) * (y - x)
        return torch.xlogy(y, y) - y * x  # y log y is 0 at y = 0

    @staticmethod
    def dloss(needs, x, y, log_target):
        grad_x = grad_y = None
        if log_target:
            p = torch.exp(y)  # e^y, the target probability
            grad_x = -p if needs[0] else None  # ∂l/∂x = −e^y
            grad_y = p * (y - x + 1) if needs[1] else None  # ∂l/∂y = e^y (y − x) + e^y
        else:
            grad_x = -y if needs[0] else None  # ∂l/∂x = −y
            grad_y = torch.log(y) + 1 - x if needs[1] else None  # ∂l/∂y = log y + 1 − x
        return grad_x, grad_y


def _stirling_mask(y: Tensor) -> tuple[Tensor, Tensor]:
    """[y > 1] and y where it is > 1, else 2: the Stirling term's domain, with a safe log elsewhere."""
    large = y > 1
    return large, torch.where(large, y, 2.0)


class PoissonNLL(PointwiseLoss):
    """Poisson negative log-likelihood of the count y under the rate λ:

    log_input (x = log λ):   l = e^x − y x;               ∂l/∂x = e^x − y,          ∂l/∂y = −x
    otherwise (x = λ):       l = x − y log(x + ε);        ∂l/∂x = 1 − y/(x + ε),   ∂l/∂y = −log(x + ε)
    full adds Stirling's log y! ≈ y log y − y + ½ log(2π y) where y > 1:  ∂/∂y += log y + 1/(2y)
    """

    @staticmethod
    def loss(x, y, log_input, full, eps):
        value = torch.exp(x) - y * x if log_input else x - y * torch.log(x + eps)
        if full:
            large, y_safe = _stirling_mask(y)
            stirling = y_safe * torch.log(y_safe) - y_safe + 0.5 * torch.log(2 * math.pi * y_safe)
            value = value + torch.where(large, stirling, 0.0)
        return value

    @staticmethod
    def dloss(needs, x, y, log_input, full, eps):
        grad_x = grad_y = None
        if needs[0]:
            grad_x = torch.exp(x) - y if log_input else 1 - y / (x + eps)  # ∂l/∂x
        if needs[1]:
            grad_y = -x if log_input else -torch.log(x + eps)  # ∂l/∂y of −y x, or of −y log(x + ε)
            if full:
                large, y_safe = _stirling_mask(y)
                grad_y = grad_y + torch.where(large, torch.log(y_safe) + 0.5 / y_safe, 0.0)  # + log y + 1/(2y)
        return grad_x, grad_y


def _clamped_variance(var: Tensor, eps: float) -> Tensor:
    """v = max(var, ε) in value, while its derivative passes to var unchanged (torch clamps without grad)."""
    return var + (var.clamp(min=eps) - var).detach()


class GaussianNLL(PointwiseLoss):
    """Gaussian negative log-likelihood of y under mean x and variance v = max(var, ε):

    l = ½ (log v + (x − y)² / v)   (+ ½ log 2π with ``full``)
    ∂l/∂x = (x − y)/v,   ∂l/∂y = −(x − y)/v,   ∂l/∂var = ½ (1/v − (x − y)²/v²)
    (torch clamps var without recording it, so the gradient reaches var even where var < ε).
    A var with one entry per sample (the input's shape without its last dimension) is aligned as
    var[..., None]; ∂C/∂var then sums over that last dimension.
    """

    n_inputs = 3

    @staticmethod
    def align(tensors, settings):
        x, y, var = tensors
        var_per_sample = settings[-1]
        return x, y, var.unsqueeze(-1) if var_per_sample and var is not None else var

    @staticmethod
    def loss(x, y, var, full, eps, var_per_sample):
        v = _clamped_variance(var, eps)
        value = 0.5 * (torch.log(v) + (x - y) ** 2 / v)
        return value + 0.5 * math.log(2 * math.pi) if full else value

    @staticmethod
    def dloss(needs, x, y, var, full, eps, var_per_sample):
        v = _clamped_variance(var, eps)
        scaled_error = (x - y) / v  # (x − y)/v
        grad_var = 0.5 * (1 / v - scaled_error * scaled_error) if needs[2] else None  # ½ (1/v − (x − y)²/v²)
        return scaled_error, -scaled_error, grad_var  # ∂l/∂x, ∂l/∂y, ∂l/∂var


class SoftMargin(PointwiseLoss):
    """l = log(1 + e^(−y x)) = −log σ(y x)   (stable for large |x|);   ∂l/∂x = −y σ(−y x).

    torch does not differentiate the target y.
    """

    @staticmethod
    def loss(x, y):
        return -F.logsigmoid(y * x)

    @staticmethod
    def dloss(needs, x, y):
        return -y * torch.sigmoid(-y * x), None  # ∂l/∂x = −y σ(−y x)


class MarginRanking(PointwiseLoss):
    """l = max(0, −y (x1 − x2) + margin);   with h = [−y (x1 − x2) + margin ≥ 0] (torch passes the
    gradient at 0):  ∂l/∂x1 = −y h,   ∂l/∂x2 = y h,   ∂l/∂y = −(x1 − x2) h.
    """

    n_inputs = 3

    @staticmethod
    def loss(x1, x2, y, margin):
        return (-y * (x1 - x2) + margin).clamp(min=0)

    @staticmethod
    def dloss(needs, x1, x2, y, margin):
        difference = x1 - x2
        active = (-y * difference + margin >= 0).to(difference.dtype)  # ∂max(0, u)/∂u
        grad_y = -difference * active if needs[2] else None  # ∂l/∂y = −(x1 − x2) h
        return -y * active, y * active, grad_y  # ∂l/∂x1 = −y h, ∂l/∂x2 = y h


class HingeEmbedding(PointwiseLoss):
    """l = [y ≠ 1] · max(0, margin − x) + [y ≠ −1] · x     (y = ±1 picks one term, as in torch)

    ∂l/∂x = −[y ≠ 1] [margin − x ≥ 0] + [y ≠ −1].  The target enters only through comparisons, so
    it gets no gradient (the wrapper passes it detached, as torch leaves it out of the graph).
    """

    @staticmethod
    def loss(x, y, margin):
        return torch.where(y != 1, (margin - x).clamp(min=0), 0.0) + torch.where(y != -1, x, 0.0)

    @staticmethod
    def dloss(needs, x, y, margin):
        below_margin = ((y != 1) & (margin - x >= 0)).to(x.dtype)  # ∂max(0, margin − x)/∂x = −1 there
        return (y != -1).to(x.dtype) - below_margin, None  # ∂l/∂x


# -- losses over a class or feature dimension -----------------------------------------------------


class NLLLoss(ManualFunction):
    """C = −Σ_n w_{y_n} z_{n,y_n} / D     (z: log-probabilities, y_n: the class of sample n)

    Indices: n sample (with any spatial positions), c class (dimension 1, or 0 unbatched).
    D = Σ_n w_{y_n} over the samples kept (y_n ≠ ignore_index) for 'mean'; ignored samples add 0.
    With q the weighted one-hot target, q_{n,c} = w_c [c = y_n] (0 for ignored samples):
    C = −Σ q ⊙ z / D,   so   ∂C/∂z = −q · g / D.   Forward mode: Ċ = −Σ q ⊙ ż / D.
    """

    @staticmethod
    def forward(z: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str) -> Tensor:
        q, denominator = _target_weights(z, target, weight, ignore_index, 0.0)
        q_z = torch.where(q == 0, 0.0, q * z)  # 0 · (−inf) = 0: a −inf log-probability off the target is fine
        return _reduce(-q_z.sum(_class_dim(z)), reduction, denominator)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, target, weight, ctx.ignore_index, ctx.reduction = inputs
        ctx.save_for_backward(z, target, weight)
        ctx.save_for_forward(z, target, weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, target, weight = ctx.saved_tensors
        q, denominator = _target_weights(z, target, weight, ctx.ignore_index, 0.0)  # q = w_y · onehot(y)
        g = _upstream(grad, ctx.reduction, denominator)  # g / D
        if ctx.reduction == "mean":
            g = torch.where(denominator > 0, g, 0.0)  # every sample ignored: C is 0/0, no sample is to blame
        if ctx.reduction == "none":
            g = g.unsqueeze(_class_dim(z))  # one loss per sample: broadcast it over the classes
        grad_z = -q * g if ctx.needs_input_grad[0] else None  # ∂C/∂z = −w_y onehot(y) · g / D
        return grad_z, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_z, *_):
        z, target, weight = ctx.saved_tensors
        q, denominator = _target_weights(z, target, weight, ctx.ignore_index, 0.0)
        tangent = _reduce(-(q * tangent_z).sum(_class_dim(z)), ctx.reduction, denominator)  # −Σ q ⊙ ż / D
        return torch.where(denominator > 0, tangent, 0.0) if ctx.reduction == "mean" else tangent


class ClassIndexNLLLoss(ManualFunction):
    """C = −Σ_n z_{n,y_n} / N: the negative log-likelihood in its plain case (each target a class in [0, C), no
    class weights), without building the one-hot q of NLLLoss.

    ∂C/∂z_{n,c} = −[c = y_n] · g / N: −g / N at each sample's target, 0 elsewhere (z itself is not needed).
    Forward mode: Ċ = −Σ_n ż_{n,y_n} / N.
    """

    @staticmethod
    def forward(z: Tensor, target: Tensor, reduction: str) -> Tensor:
        return torch.nn.functional.nll_loss(z, target, reduction=reduction)  # −z_y, reduced: one kernel

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, target, ctx.reduction = inputs
        ctx.z_shape, ctx.z_dtype = z.shape, z.dtype
        ctx.save_for_backward(target)
        ctx.save_for_forward(target)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (target,) = ctx.saved_tensors
        dim = 1 if len(ctx.z_shape) >= 2 else 0
        g = _upstream(grad, ctx.reduction, target.numel())  # g / N
        y = target.unsqueeze(dim)
        blame = (-g).unsqueeze(dim) if ctx.reduction == "none" else (-g).expand(y.shape)
        grad_z = grad.new_zeros(ctx.z_shape, dtype=ctx.z_dtype)  # ∂C/∂z_{n,c} = 0 off the target
        return grad_z.scatter(dim, y, blame.to(ctx.z_dtype)), None, None  # −g / N at the target

    @staticmethod
    def jvp(ctx, tangent_z, *_):
        (target,) = ctx.saved_tensors
        dim = 1 if tangent_z.dim() >= 2 else 0
        at_target = tangent_z.gather(dim, target.unsqueeze(dim)).squeeze(dim)  # ż_y
        return _reduce(-at_target, ctx.reduction, target.numel())


class MultiLabelSoftMargin(ManualFunction):
    """One binary logistic loss per class, averaged over the K classes of each sample:

    C_n = Σ_c w_c l_{n,c} / K,   l_{n,c} = −[y log σ(x) + (1 − y) log σ(−x)]   (at n, c)
    Indices: n sample (every leading dimension), c class (the last dimension, K of them).
    ∂C_n/∂x_{n,c} = w_c (σ(x_{n,c}) − y_{n,c}) / K
    ∂C_n/∂y_{n,c} = −w_c (log σ(x) − log σ(−x)) / K = −w_c x_{n,c} / K
    ∂C_n/∂w_c     = l_{n,c} / K    (summed over n)
    each times g / N ('mean' over N samples), g ('sum') or g_n ('none').
    """

    @staticmethod
    def forward(x: Tensor, y: Tensor, w: Tensor | None, reduction: str) -> Tensor:
        elements = -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x))  # l_{n,c}
        if w is not None:
            elements = elements * w  # w_c l_{n,c}
        per_sample = elements.sum(-1) / x.shape[-1]  # C_n
        return _reduce(per_sample, reduction, per_sample.numel())

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, w, ctx.reduction = inputs
        ctx.save_for_backward(x, y, w)
        ctx.save_for_forward(x, y, w)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, y, w = ctx.saved_tensors
        n_classes = x.shape[-1]
        g = _upstream(grad, ctx.reduction, math.prod(x.shape[:-1]))  # g / N
        g = (g.unsqueeze(-1) if ctx.reduction == "none" else g) / n_classes  # g / (N K), spread over classes
        w_g = g if w is None else w * g  # w_c · g / (N K)
        grad_x = w_g * (torch.sigmoid(x) - y) if ctx.needs_input_grad[0] else None  # ∂C/∂x = w (σ(x) − y) / K
        grad_y = -w_g * x if ctx.needs_input_grad[1] else None  # ∂C/∂y = −w x / K
        grad_w = None
        if ctx.needs_input_grad[2]:
            elements = -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x))  # l_{n,c}
            grad_w = (elements * g).sum_to_size(w.shape)  # ∂C/∂w_c = Σ_n l_{n,c} / K
        return grad_x, grad_y, grad_w, None

    @staticmethod
    def jvp(ctx, tangent_x, tangent_y, tangent_w, _):
        x, y, w = ctx.saved_tensors
        per_element = torch.zeros_like(x)
        if tangent_x is not None:
            per_element = per_element + (torch.sigmoid(x) - y) * tangent_x  # (σ(x) − y) ẋ
        if tangent_y is not None:
            per_element = per_element - x * tangent_y  # −x ẏ
        if w is not None:
            per_element = per_element * w  # w_c (∂l/∂x ẋ + ∂l/∂y ẏ)
        if tangent_w is not None:
            per_element = per_element - (y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x)) * tangent_w  # l ẇ
        per_sample = per_element.sum(-1) / x.shape[-1]
        return _reduce(per_sample, ctx.reduction, per_sample.numel())


def _cosine(x1: Tensor, x2: Tensor) -> Tensor:
    """cos = Σ_d x1 x2 / √(m1 m2) with m_k = Σ_d x_k² + ε."""
    m1 = (x1 * x1).sum(-1) + EPSILON
    m2 = (x2 * x2).sum(-1) + EPSILON
    return (x1 * x2).sum(-1) / torch.sqrt(m1 * m2)


def _cosine_gradients(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """cos and its gradients ∂cos/∂x1 = x2/√(m1 m2) − cos x1/m1 and ∂cos/∂x2 = x1/√(m1 m2) − cos x2/m2."""
    m1 = (x1 * x1).sum(-1, keepdim=True) + EPSILON  # m1 = Σ x1² + ε
    m2 = (x2 * x2).sum(-1, keepdim=True) + EPSILON  # m2 = Σ x2² + ε
    root = torch.sqrt(m1 * m2)  # √(m1 m2)
    cos = (x1 * x2).sum(-1, keepdim=True) / root
    return cos.squeeze(-1), x2 / root - cos * x1 / m1, x1 / root - cos * x2 / m2


class CosineEmbedding(ManualFunction):
    """Pull pairs together (y = 1) or push them below a cosine margin (y = −1):

    cos_n = Σ_d x1 x2 / √(m1 m2),  m_k = Σ_d x_k² + ε       (ε = 1e-12, as in torch)
    l_n = 1 − cos_n  where y_n = 1;   max(0, cos_n − margin)  where y_n = −1;   0 otherwise
    Indices: n sample, d feature (the last dimension).
    ∂l/∂cos = −[y = 1] + [y = −1][cos − margin ≥ 0]
    ∂cos/∂x1 = x2 / √(m1 m2) − cos · x1 / m1,    ∂cos/∂x2 = x1 / √(m1 m2) − cos · x2 / m2
    The target enters only through comparisons and gets no gradient (it comes in detached).
    """

    @staticmethod
    def forward(x1: Tensor, x2: Tensor, y: Tensor, margin: float, reduction: str) -> Tensor:
        cos = _cosine(x1, x2)
        loss = torch.where(y == 1, 1 - cos, 0.0) + torch.where(y == -1, (cos - margin).clamp(min=0), 0.0)
        return _reduce(loss, reduction, loss.numel())

    @staticmethod
    def setup_context(ctx, inputs, output):
        x1, x2, y, ctx.margin, ctx.reduction = inputs
        ctx.save_for_backward(x1, x2, y)
        ctx.save_for_forward(x1, x2, y)

    @staticmethod
    def _dl_dcos(y: Tensor, cos: Tensor, margin: float) -> Tensor:
        pushed = (y == -1) & (cos - margin >= 0)  # max(0, cos − margin)′ = 1 there
        return pushed.to(cos.dtype) - (y == 1).to(cos.dtype)  # ∂l/∂cos

    @staticmethod
    def backward(ctx, grad: Tensor):
        x1, x2, y = ctx.saved_tensors
        cos, dcos_dx1, dcos_dx2 = _cosine_gradients(x1, x2)
        g = _upstream(grad, ctx.reduction, cos.numel())  # g / N
        g_cos = (g * CosineEmbedding._dl_dcos(y, cos, ctx.margin)).unsqueeze(-1)  # ∂C/∂cos = g ∂l/∂cos / N
        grad_x1 = g_cos * dcos_dx1 if ctx.needs_input_grad[0] else None  # ∂C/∂x1 = ∂C/∂cos · ∂cos/∂x1
        grad_x2 = g_cos * dcos_dx2 if ctx.needs_input_grad[1] else None  # ∂C/∂x2 = ∂C/∂cos · ∂cos/∂x2
        return grad_x1, grad_x2, None, None, None

    @staticmethod
    def jvp(ctx, tangent_x1, tangent_x2, *_):
        x1, x2, y = ctx.saved_tensors
        cos, dcos_dx1, dcos_dx2 = _cosine_gradients(x1, x2)
        tangent_cos = torch.zeros_like(cos)
        if tangent_x1 is not None:
            tangent_cos = tangent_cos + (dcos_dx1 * tangent_x1).sum(-1)  # ∂cos/∂x1 · ẋ1
        if tangent_x2 is not None:
            tangent_cos = tangent_cos + (dcos_dx2 * tangent_x2).sum(-1)  # ∂cos/∂x2 · ẋ2
        tangent = CosineEmbedding._dl_dcos(y, cos, ctx.margin) * tangent_cos  # ∂l/∂cos · ċos
        return _reduce(tangent, ctx.reduction, tangent.numel())


def _one_hot_rows(x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """x as rows (n, c) and the one-hot target (n, c), built by comparison (so vmap can batch it)."""
    n_classes = x.shape[-1] if x.dim() > 0 else 1
    rows = x.reshape(-1, n_classes)
    classes = torch.arange(n_classes, device=x.device)
    return rows, target.reshape(-1, 1) == classes


class MultiMargin(ManualFunction):
    """Multi-class hinge loss of sample n with class y_n among K classes (p = 1 or 2):

    z_{n,c} = margin − x_{n,y_n} + x_{n,c},   h_{n,c} = [z_{n,c} > 0][c ≠ y_n]
    l_n = w_{y_n} Σ_c h_{n,c} z_{n,c}^p / K
    Indices: n sample, c class.
    ∂l_n/∂x_{n,c}   = w_{y_n} h_{n,c} p z_{n,c}^(p−1) / K       for c ≠ y_n
    ∂l_n/∂x_{n,y_n} = −Σ_{c ≠ y_n} ∂l_n/∂x_{n,c}                (x_{n,y_n} is in every z_{n,c})
    'mean' divides by the number of samples.
    """

    @staticmethod
    def _margins(x: Tensor, target: Tensor, weight: Tensor | None, margin: float):
        rows, onehot = _one_hot_rows(x, target)
        x_y = torch.where(onehot, rows, 0.0).sum(-1, keepdim=True)  # x_{n,y_n}
        z = margin - x_y + rows  # z_{n,c}
        active = (z > 0) & ~onehot  # h_{n,c}
        w_y = 1 if weight is None else torch.where(onehot, weight, 0.0).sum(-1, keepdim=True)  # w_{y_n}
        return z, active, onehot, w_y

    @staticmethod
    def forward(x: Tensor, target: Tensor, weight: Tensor | None, p: int, margin: float, reduction: str) -> Tensor:
        z, active, _, w_y = MultiMargin._margins(x, target, weight, margin)
        hinge = torch.where(active, z if p == 1 else z * z, 0.0)  # h z^p
        loss = (w_y * hinge).sum(-1) / z.shape[-1]  # l_n
        return _reduce(loss.reshape(target.shape), reduction, loss.numel())

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, target, weight, ctx.p, ctx.margin, ctx.reduction = inputs
        ctx.save_for_backward(x, target, weight)
        ctx.save_for_forward(x, target, weight)

    @staticmethod
    def _dl_dx(x: Tensor, target: Tensor, weight: Tensor | None, p: int, margin: float) -> Tensor:
        z, active, onehot, w_y = MultiMargin._margins(x, target, weight, margin)
        dh = active.to(z.dtype) if p == 1 else torch.where(active, 2 * z, 0.0)  # ∂(h z^p)/∂z = h p z^(p−1)
        dh = w_y * dh / z.shape[-1]  # ∂l_n/∂x_{n,c}, c ≠ y_n
        return dh - torch.where(onehot, dh.sum(-1, keepdim=True), 0.0)  # ∂l_n/∂x_{n,y_n} = −Σ_c ∂l_n/∂x_{n,c}

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, target, weight = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        dl_dx = MultiMargin._dl_dx(x, target, weight, ctx.p, ctx.margin)  # ∂l_n/∂x_{n,c}
        g = _upstream(grad, ctx.reduction, dl_dx.shape[0])  # g / N
        g = g.reshape(-1, 1) if ctx.reduction == "none" else g  # one g_n per sample, over its classes
        return (dl_dx * g).reshape(x.shape), None, None, None, None, None  # ∂C/∂x = ∂l_n/∂x · g / N

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        x, target, weight = ctx.saved_tensors
        dl_dx = MultiMargin._dl_dx(x, target, weight, ctx.p, ctx.margin)
        tangent = (dl_dx * tangent_x.reshape(dl_dx.shape)).sum(-1)  # l̇_n = Σ_c ∂l_n/∂x_{n,c} ẋ_{n,c}
        return _reduce(tangent.reshape(target.shape), ctx.reduction, tangent.numel())


def _norm_grad(u: Tensor, norm: Tensor, p: float) -> Tensor:
    """∂‖u‖_p/∂u over the last dimension: sign(u) |u|^(p−1) / ‖u‖^(p−1), 0 where ‖u‖ = 0, with torch's
    conventions for p = 0 (0), p = 1 (sign u), p = 2 (u / ‖u‖) and p = ±∞ (sign u on the entries with
    |u| = ‖u‖, shared among ties)."""
    norm = norm.unsqueeze(-1)
    if p == 0:
        return torch.zeros_like(u)
    if p == 1:
        return torch.sign(u)
    if math.isinf(p):
        at_extreme = (u.abs() == norm).to(u.dtype)  # the entries max |u| (or min) picks
        return torch.sign(u) * at_extreme / at_extreme.sum(-1, keepdim=True)
    safe_norm = torch.where(norm == 0, 1.0, norm)
    if p == 2:
        return torch.where(norm == 0, 0.0, u / safe_norm)
    if p < 1:  # |u|^(p−1) is infinite at u = 0, where torch takes 0
        scaled = torch.where(u == 0, 0.0, torch.sign(u) * torch.where(u == 0, 1.0, u.abs()).pow(p - 1))
        return scaled * norm.pow(1 - p)
    return torch.where(norm == 0, 0.0, torch.sign(u) * u.abs().pow(p - 1) / safe_norm.pow(p - 1))


def _distances(anchor, positive, negative, p: float, eps: float, swap: bool):
    """The three differences u (each + ε, as torch's pairwise_distance) and their p-norms."""
    u_ap, u_an = anchor - positive + eps, anchor - negative + eps
    u_pn = positive - negative + eps if swap else None
    norms = [None if u is None else torch.linalg.vector_norm(u, p, dim=-1) for u in (u_ap, u_an, u_pn)]
    return (u_ap, u_an, u_pn), norms


class TripletMargin(ManualFunction):
    """The anchor a should be nearer its positive p than its negative n by a margin:

    d(u, v) = ‖u − v + ε‖_p over the last dimension;   d⁺ = d(a, p),   d⁻ = d(a, n)
    (with ``swap``: d⁻ = min(d(a, n), d(p, n)), the harder of the two negatives)
    l = max(0, margin + d⁺ − d⁻);   h = [margin + d⁺ − d⁻ ≥ 0]   (torch passes the gradient at 0)
    Indices: n sample (every leading dimension), d feature (the last dimension).
    ∂l/∂d⁺ = h,   ∂l/∂d⁻ = −h;   swap: ∂d⁻/∂d(a, n) = [d(a, n) < d(p, n)] (½ at a tie), likewise d(p, n)
    ∂d(u, v)/∂u = −∂d(u, v)/∂v = ∂‖w‖_p/∂w at w = u − v + ε  (see :func:`_norm_grad`)
    """

    @staticmethod
    def forward(anchor, positive, negative, margin: float, p: float, eps: float, swap: bool, reduction: str):
        _, (d_ap, d_an, d_pn) = _distances(anchor, positive, negative, p, eps, swap)
        d_neg = d_an if d_pn is None else torch.minimum(d_an, d_pn)
        loss = (margin + d_ap - d_neg).clamp(min=0)
        return _reduce(loss, reduction, loss.numel())

    @staticmethod
    def setup_context(ctx, inputs, output):
        anchor, positive, negative, ctx.margin, ctx.p, ctx.eps, ctx.swap, ctx.reduction = inputs
        ctx.save_for_backward(anchor, positive, negative)
        ctx.save_for_forward(anchor, positive, negative)

    @staticmethod
    def _blame(ctx, anchor, positive, negative, g):
        """∂C/∂d(a, p), ∂C/∂d(a, n), ∂C/∂d(p, n) and the unit directions ∂d/∂u, given g = ∂C/∂l."""
        (u_ap, u_an, u_pn), (d_ap, d_an, d_pn) = _distances(anchor, positive, negative, ctx.p, ctx.eps, ctx.swap)
        d_neg = d_an if d_pn is None else torch.minimum(d_an, d_pn)
        g_l = g * (ctx.margin + d_ap - d_neg >= 0).to(d_ap.dtype)  # ∂C/∂l · ∂max(0, ·)/∂(margin + d⁺ − d⁻)
        g_an, g_pn = -g_l, None  # ∂C/∂d⁻ = −h g
        if d_pn is not None:
            tie = (d_an == d_pn).to(d_an.dtype) / 2
            g_an = -g_l * ((d_an < d_pn).to(d_an.dtype) + tie)  # · ∂min/∂d(a, n)
            g_pn = -g_l * ((d_pn < d_an).to(d_an.dtype) + tie)  # · ∂min/∂d(p, n)
        directions = [None if u is None else _norm_grad(u, d, ctx.p)  # ∂d/∂u
                      for u, d in ((u_ap, d_ap), (u_an, d_an), (u_pn, d_pn))]
        return (g_l, g_an, g_pn), directions

    @staticmethod
    def backward(ctx, grad: Tensor):
        anchor, positive, negative = ctx.saved_tensors
        g = _upstream(grad, ctx.reduction, math.prod(anchor.shape[:-1]))  # g / N
        if ctx.reduction != "none":
            g = g.expand(anchor.shape[:-1])  # the same g / N for every sample
        (g_ap, g_an, g_pn), (dir_ap, dir_an, dir_pn) = TripletMargin._blame(ctx, anchor, positive, negative, g)
        grad_ap = g_ap.unsqueeze(-1) * dir_ap  # ∂C/∂d(a, p) · ∂d(a, p)/∂u_ap
        grad_an = g_an.unsqueeze(-1) * dir_an  # ∂C/∂d(a, n) · ∂d(a, n)/∂u_an
        grad_pn = 0 if g_pn is None else g_pn.unsqueeze(-1) * dir_pn  # ∂C/∂d(p, n) · ∂d(p, n)/∂u_pn
        grad_anchor = grad_ap + grad_an if ctx.needs_input_grad[0] else None  # u_ap = a − p, u_an = a − n
        grad_positive = grad_pn - grad_ap if ctx.needs_input_grad[1] else None  # u_ap = a − p, u_pn = p − n
        grad_negative = -grad_an - grad_pn if ctx.needs_input_grad[2] else None  # u_an = a − n, u_pn = p − n
        return grad_anchor, grad_positive, grad_negative, None, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_anchor, tangent_positive, tangent_negative, *_):
        anchor, positive, negative = ctx.saved_tensors
        tangents = [torch.zeros_like(t) if dt is None else dt
                    for t, dt in ((anchor, tangent_anchor), (positive, tangent_positive), (negative, tangent_negative))]
        (g_ap, g_an, g_pn), (dir_ap, dir_an, dir_pn) = TripletMargin._blame(
            ctx, anchor, positive, negative, anchor.new_ones(anchor.shape[:-1]))
        tangent = g_ap * (dir_ap * (tangents[0] - tangents[1])).sum(-1)  # h ḋ(a, p)
        tangent = tangent + g_an * (dir_an * (tangents[0] - tangents[2])).sum(-1)  # − h ḋ(a, n)
        if g_pn is not None:
            tangent = tangent + g_pn * (dir_pn * (tangents[1] - tangents[2])).sum(-1)  # − h ḋ(p, n)
        return _reduce(tangent, ctx.reduction, tangent.numel())


# -- the functional entries: torch's signatures, torch's checks as LayerInputError ----------------


def _check_input(name: str, input: Tensor, what: str = "input") -> None:
    if not input.is_floating_point():
        raise LayerInputError(f"{name}: {what} must be a floating-point tensor, got {input.dtype}")


def _check_same_shape(name: str, input: Tensor, other: Tensor, what: str = "target", of: str = "input") -> None:
    if shape(other) != shape(input):
        raise LayerInputError(
            f"{name}: {what} shape {shape(other)} differs from {of} shape {shape(input)}; reshape one of them "
            "(torch would broadcast them, which is almost always a bug)"
        )


def _check_constant(name: str, t: Tensor | None, what: str) -> None:
    if t is not None and t.requires_grad:
        raise LayerInputError(f"{name}: torch does not differentiate {what}; pass {what}.detach()")


def _broadcast_weight(name: str, input: Tensor, weight: Tensor | None, what: str = "weight") -> Tensor | None:
    """A constant weight that broadcasts to the input's shape, in the input's dtype (as torch casts it)."""
    if weight is None:
        return None
    _check_constant(name, weight, what)
    try:
        broadcast = torch.broadcast_shapes(weight.shape, input.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != input.shape:
        raise LayerInputError(f"{name}: {what} shape {shape(weight)} does not broadcast to input shape {shape(input)}")
    return weight.to(input.dtype)


def _check_elementwise(name: str, input: Tensor, target: Tensor, weight: Tensor | None = None) -> None:
    _check_input(name, input)
    _check_same_shape(name, input, target)
    if target.dtype == torch.bool or target.is_complex():
        raise LayerInputError(f"{name}: target must be a real number tensor, got {target.dtype}")
    if weight is not None and shape(weight) != shape(input):
        raise LayerInputError(f"{name}: weight shape {shape(weight)} differs from input shape {shape(input)}")


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    """Like ``torch.nn.functional.l1_loss``; backward ∂C/∂a = w sign(a − y) / D (D = N, or Σ w)."""
    reduction = _reduction_of("l1_loss", size_average, reduce, reduction)
    _check_elementwise("l1_loss", input, target, weight)
    return L1Loss.call(input, target, weight, reduction, "elements" if weight is None else "weight")


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    """Like ``torch.nn.functional.smooth_l1_loss``; backward ∂C/∂a = clamp((a − y)/β, −1, 1) / N."""
    reduction = _reduction_of("smooth_l1_loss", size_average, reduce, reduction)
    _check_elementwise("smooth_l1_loss", input, target)
    if beta < 0:
        raise LayerInputError(f"smooth_l1_loss: beta must be ≥ 0, got {beta}")
    return SmoothL1Loss.call(input, target, None, reduction, "elements", float(beta))


def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    """Like ``torch.nn.functional.huber_loss``; backward ∂C/∂a = w clamp(a − y, −δ, δ) / N."""
    reduction = _reduction_of("huber_loss", None, None, reduction)
    _check_elementwise("huber_loss", input, target, weight)
    if delta <= 0:
        raise LayerInputError(f"huber_loss: delta must be > 0, got {delta}")
    return HuberLoss.call(input, target, weight, reduction, "elements", float(delta))


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.binary_cross_entropy``; backward ∂C/∂a = w (a − y) / (a (1 − a) N)."""
    name = "binary_cross_entropy"
    reduction = _reduction_of(name, size_average, reduce, reduction)
    _check_elementwise(name, input, target)
    if target.dtype != input.dtype:
        raise LayerInputError(f"{name}: target dtype {target.dtype} differs from input dtype {input.dtype}")
    weight = _broadcast_weight(name, input, weight)
    for t, what in ((input, "input"), (target, "target")):
        if _can_inspect_values(t) and not ((t >= 0) & (t <= 1)).all():
            raise LayerInputError(f"{name}: every {what} value must be a probability in [0, 1]; "
                                  f"found {what} values from {t.min().item():g} to {t.max().item():g}")
    return BinaryCrossEntropy.call(input, target, weight, reduction, "elements")


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """Like ``torch.nn.functional.binary_cross_entropy_with_logits``; backward ∂C/∂x = w (σ(x) − y) / N
    (with a positive-class weight p_w: w ((1 + (p_w − 1) y) σ(x) − p_w y) / N)."""
    name = "binary_cross_entropy_with_logits"
    reduction = _reduction_of(name, size_average, reduce, reduction)
    _check_elementwise(name, input, target)
    _check_input(name, target, "target")
    weight = _broadcast_weight(name, input, weight)
    pos_weight = _broadcast_weight(name, input, pos_weight, "pos_weight")
    return BinaryCrossEntropyWithLogits.call(input, target, pos_weight, weight, reduction, "elements")


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.nll_loss``; backward ∂C/∂z = −w_y onehot(y) / Σ w_y.

    Inputs (C,), (N, C) or (N, C, d1, d2, ...) of log-probabilities, class weights, ``ignore_index``.
    """
    reduction = _reduction_of("nll_loss", size_average, reduce, reduction)
    if input.dim() == 0:
        raise LayerInputError("nll_loss: input must have a class dimension, got a scalar")
    _check_input("nll_loss", input)
    _check_class_weight("nll_loss", weight, input.shape[_class_dim(input)])
    if weight is not None and weight.dtype != input.dtype:
        raise LayerInputError(f"nll_loss: weight dtype {weight.dtype} differs from input dtype {input.dtype}")
    dtypes = (torch.int64, torch.uint8) if input.dim() <= 2 else (torch.int64,)  # as torch's kernels take them
    if target.dtype not in dtypes:
        raise LayerInputError(f"nll_loss: target must hold class indices as {' or '.join(map(str, dtypes))} for "
                              f"input shape {shape(input)}, got {target.dtype}")
    every_target_a_class = _check_class_index_target("nll_loss", input, target, ignore_index, dtypes)
    if every_target_a_class and weight is None:
        return ClassIndexNLLLoss.call(input, target.long(), reduction)  # the textbook case, without q
    return NLLLoss.call(input, target.long(), weight, ignore_index, reduction)


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """Like ``torch.nn.functional.kl_div`` (input: log-probabilities); backward ∂C/∂x = −y / D, with D
    = N ('mean'), the batch size ('batchmean') or 1 ('sum')."""
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    elif reduction not in (*REDUCTIONS, "batchmean"):
        raise LayerInputError(f"kl_div: reduction must be one of {(*REDUCTIONS, 'batchmean')}, got {reduction!r}")
    elif reduction == "mean":
        warnings.warn(
            "reduction: 'mean' divides the total loss by both the batch size and the support size."
            "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
            "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
            stacklevel=2,
        )
    _check_elementwise("kl_div", input, target)
    _check_input("kl_div", target, "target")
    mean_over = "elements"
    if reduction == "batchmean":
        reduction, mean_over = ("mean", input.shape[0]) if input.dim() > 0 else ("sum", "elements")
    return KLDiv.call(input, target, None, reduction, mean_over, bool(log_target))


def poisson_nll_loss(
    input: Tensor,
    target: Tensor,
    log_input: bool = True,
    full: bool = False,
    size_average: bool | None = None,
    eps: float = 1e-8,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.poisson_nll_loss``; backward ∂C/∂x = (e^x − y) / N (log_input) or
    (1 − y/(x + ε)) / N."""
    reduction = _reduction_of("poisson_nll_loss", size_average, reduce, reduction)
    _check_elementwise("poisson_nll_loss", input, target)
    return PoissonNLL.call(input, target, None, reduction, "elements", bool(log_input), bool(full), float(eps))


def _align_variance(input: Tensor, var: Tensor) -> bool:
    """Whether var has one entry per sample (input's shape without its last dimension); raises if var
    fits the input in none of torch's ways (the same shape, that, or a size-1 dimension)."""
    if shape(var) == shape(input):
        return False
    if shape(var) == shape(input)[:-1]:
        return True
    if var.dim() == input.dim() and sum(v for i, v in zip(input.shape, var.shape) if i != v) == 1:
        return False  # one dimension of size 1, broadcast
    raise LayerInputError(
        f"gaussian_nll_loss: var shape {shape(var)} does not fit input shape {shape(input)}; give the same shape, "
        "the shape without the last dimension, or the same shape with one dimension of size 1"
    )


def gaussian_nll_loss(
    input: Tensor,
    target: Tensor,
    var: Tensor | float,
    full: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.gaussian_nll_loss``; backward ∂C/∂x = (x − y) / (v N),
    ∂C/∂var = ½ (1/v − (x − y)²/v²) / N with v = max(var, ε)."""
    name = "gaussian_nll_loss"
    _check_input(name, input)
    if isinstance(var, float):
        if var < 0:
            raise LayerInputError(f"{name}: var must be ≥ 0, got {var}")
        var, var_per_sample = torch.full((), var, dtype=input.dtype, device=input.device), False
    elif isinstance(var, Tensor):
        if _can_inspect_values(var) and (var < 0).any():
            raise LayerInputError(f"{name}: var holds negative entries (down to {var.min().item():g})")
        var_per_sample = _align_variance(input, var)
    else:
        raise LayerInputError(f"{name}: var must be a tensor or a float, got {type(var).__name__}")
    if reduction not in REDUCTIONS:
        raise LayerInputError(f"{name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    try:
        torch.broadcast_shapes(input.shape, target.shape, var.shape + ((1,) if var_per_sample else ()))
    except RuntimeError:
        raise LayerInputError(
            f"{name}: input shape {shape(input)}, target shape {shape(target)} and var shape {shape(var)} "
            "do not broadcast together"
        ) from None
    return GaussianNLL.call(input, target, var, None, reduction, "elements", bool(full), float(eps), var_per_sample)


def soft_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.soft_margin_loss``; backward ∂C/∂x = −y σ(−y x) / N."""
    reduction = _reduction_of("soft_margin_loss", size_average, reduce, reduction)
    _check_elementwise("soft_margin_loss", input, target)
    _check_constant("soft_margin_loss", target, "target")
    return SoftMargin.call(input, target, None, reduction, "elements")


def multilabel_soft_margin_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.multilabel_soft_margin_loss``; backward ∂C/∂x = w (σ(x) − y) / (K N)."""
    name = "multilabel_soft_margin_loss"
    reduction = _reduction_of(name, size_average, reduce, reduction)
    if input.dim() == 0:
        raise LayerInputError(f"{name}: input must have a class dimension (the last), got a scalar")
    _check_elementwise(name, input, target)
    if weight is not None:
        try:
            broadcast = torch.broadcast_shapes(weight.shape, input.shape)
        except RuntimeError:
            broadcast = None
        if broadcast != input.shape:
            raise LayerInputError(f"{name}: weight shape {shape(weight)} does not broadcast to input shape "
                                  f"{shape(input)}; give one weight per class, shape ({input.shape[-1]},)")
    return MultiLabelSoftMargin.call(input, target, weight, reduction)


def margin_ranking_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.margin_ranking_loss``; backward ∂C/∂x1 = −y [−y (x1 − x2) + margin ≥ 0] / N."""
    name = "margin_ranking_loss"
    reduction = _reduction_of(name, size_average, reduce, reduction)
    _check_input(name, input1, "input1")
    _check_same_shape(name, input1, input2, "input2", "input1")
    _check_same_shape(name, input1, target, "target", "input1")
    return MarginRanking.call(input1, input2, target, None, reduction, "elements", float(margin))


def hinge_embedding_loss(
    input: Tensor,
    target: Tensor,
    margin: float = 1.0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.hinge_embedding_loss``; backward ∂C/∂x = ([y ≠ −1] − [y ≠ 1][x ≤ margin]) / N.

    The target only selects a term (torch leaves it out of the graph), so it gets no gradient.
    """
    reduction = _reduction_of("hinge_embedding_loss", size_average, reduce, reduction)
    _check_elementwise("hinge_embedding_loss", input, target)
    return HingeEmbedding.call(input, target.detach(), None, reduction, "elements", float(margin))


def cosine_embedding_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.cosine_embedding_loss``; backward ∂C/∂x1 = ∂l/∂cos · (x2/(|x1||x2|) −
    cos x1/|x1|²) / N.  The target only selects a term, so it gets no gradient (as in torch)."""
    name = "cosine_embedding_loss"
    reduction = _reduction_of(name, size_average, reduce, reduction)
    _check_input(name, input1, "input1")
    _check_same_shape(name, input1, input2, "input2", "input1")
    if target.dim() not in (0, 1) or input1.dim() != target.dim() + 1:
        raise LayerInputError(
            f"{name}: expected inputs (N, D) with a target (N,), or inputs (D,) with a scalar target; got inputs "
            f"{shape(input1)} and target {shape(target)}"
        )
    _check_same_shape(name, input1[..., 0], target, "target", "the inputs without their last dimension, shape")
    return CosineEmbedding.call(input1, input2, target.detach(), float(margin), reduction)


def multi_margin_loss(
    input: Tensor,
    target: Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.multi_margin_loss``; backward ∂C/∂x_c = w_y p z_c^(p−1) / (K N) for each
    class c ≠ y with z_c = margin − x_y + x_c > 0, and ∂C/∂x_y = −Σ of those."""
    name = "multi_margin_loss"
    reduction = _reduction_of(name, size_average, reduce, reduction)
    if p not in (1, 2):
        raise LayerInputError(f"{name}: only p = 1 and p = 2 are supported, got p={p}")
    _check_input(name, input)
    if input.dim() > 2 or (input.numel() == 0 and not (input.dim() == 2 and input.shape[1] > 0)):
        raise LayerInputError(f"{name}: input must be (C,) or (N, C) with C > 0, got shape {shape(input)}")
    n_samples = input.shape[0] if input.dim() == 2 else 1
    n_classes = input.shape[-1] if input.dim() > 0 else 1
    if target.dim() > 1 or target.numel() != n_samples:
        raise LayerInputError(f"{name}: target shape {shape(target)} does not hold one class per sample; "
                              f"expected ({n_samples},) for input shape {shape(input)}")
    if target.dtype != torch.int64:
        raise LayerInputError(f"{name}: target must hold class indices as int64, got {target.dtype}")
    if weight is not None:
        _check_constant(name, weight, "weight")
        if weight.dim() != 1 or weight.numel() != n_classes:
            raise LayerInputError(f"{name}: weight shape {shape(weight)} is not ({n_classes},), one per class")
        if weight.dtype != input.dtype:
            raise LayerInputError(f"{name}: weight dtype {weight.dtype} differs from input dtype {input.dtype}")
    if _can_inspect_values(target):
        bad = (target < 0) | (target >= n_classes)
        if bad.any():
            raise LayerInputError(f"{name}: target holds class indices {sorted(set(target[bad].tolist()))[:10]} "
                                  f"outside [0, {n_classes})")
    return MultiMargin.call(input, target, weight, int(p), float(margin), reduction)


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-6,
    swap: bool = False,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Like ``torch.nn.functional.triplet_margin_loss``; backward ∂C/∂a = h (∂‖a − p‖/∂a − ∂‖a − n‖/∂a) / N
    with h = [margin + d(a, p) − d(a, n) ≥ 0] (p = 2: ∂‖u‖/∂u = u/‖u‖)."""
    name = "triplet_margin_loss"
    reduction = _reduction_of(name, size_average, reduce, reduction)
    if margin <= 0:
        raise LayerInputError(f"{name}: margin must be > 0, got {margin}")
    _check_input(name, anchor, "anchor")
    if anchor.dim() == 0:
        raise LayerInputError(f"{name}: anchor must be (N, D) or (D,), got a scalar")
    _check_same_shape(name, anchor, positive, "positive", "anchor")
    _check_same_shape(name, anchor, negative, "negative", "anchor")
    return TripletMargin.call(anchor, positive, negative, float(margin), float(p), float(eps), bool(swap), reduction)


# torch's autocast computes every loss but the Gaussian NLL in float32; so do these
float32_under_autocast(
    MSELoss, CrossEntropy, ClassIndexCrossEntropy, ClassIndexNLLLoss, L1Loss, SmoothL1Loss, HuberLoss,
    BinaryCrossEntropy, BinaryCrossEntropyWithLogits, KLDiv,
    PoissonNLL, SoftMargin, MarginRanking, HingeEmbedding, NLLLoss, MultiLabelSoftMargin, CosineEmbedding, MultiMargin,
    TripletMargin,
)
