"""The arithmetic a model's own forward uses (x + y, x * w, x.sum(), a @ b, ...), with the chain rule
of each operation written out by hand.

Index letters: n, p, m for a matrix product z_np = Σ_m a_nm · b_mp (b… for batch dimensions in front).

Broadcasting: an operand smaller than the output was (virtually) copied along the broadcast
dimensions, and each copy sent its own gradient back, so the gradient of that operand is the output's
gradient summed over those dimensions (:func:`_unbroadcast`). Python numbers as operands are constants:
they get no gradient.

Several names here (``sum``, ``abs``, ``pow``, ``max``, ``min``) are also Python builtins; where this
module needs a builtin it says ``builtins.max``.
"""

from __future__ import annotations

import builtins
import math
import string
from numbers import Number

import torch
from torch import Tensor

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction
from manual_backprop.functional.activations import Elementwise

Operand = Tensor | Number


def _unbroadcast(grad: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Σ of ``grad`` over the dimensions broadcasting added (in front) or stretched (size 1 → k) to reach its shape."""
    extra = grad.dim() - len(shape)
    if extra > 0:
        grad = grad.sum(dim=tuple(range(extra)))  # each added leading dimension held copies of the operand
    stretched = tuple(d for d, n in enumerate(shape) if n == 1 and grad.shape[d] != 1)
    if stretched:
        grad = grad.sum(dim=stretched, keepdim=True)  # a size-1 dimension was repeated along the output
    return grad


def _to_output(tangent: Tensor, ctx) -> Tensor:
    """A tangent laid out like the output: broadcast to its shape, in its dtype."""
    return tangent.expand(ctx.out_shape).to(ctx.out_dtype)


def _shape_of(x: Operand) -> tuple[int, ...]:
    return tuple(x.shape) if isinstance(x, Tensor) else ()


def _tensors_or_none(*xs: Operand) -> tuple[Tensor | None, ...]:
    return tuple(x if isinstance(x, Tensor) else None for x in xs)


def _numbers_only(xs) -> tuple[Number | None, ...]:
    """The Python numbers among the operands, None for each tensor: what may be kept on ctx (a tensor kept
    there would outlive the graph and escape the in-place checks; tensors go through save_for_backward)."""
    return tuple(None if isinstance(x, Tensor) else x for x in xs)


# -- elementwise binary ----------------------------------------------------------------------------
class Add(ManualFunction):
    """z = x + α·y  (``sub`` is α → −α).

    ∂C/∂x = Σ_broadcast δ          ∂z/∂x = 1
    ∂C/∂y = Σ_broadcast α·δ        ∂z/∂y = α
    """

    @staticmethod
    def forward(x: Operand, y: Operand, alpha: Number) -> Tensor:
        return torch.add(x, y, alpha=alpha)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, alpha = inputs
        ctx.alpha, ctx.x_shape, ctx.y_shape = alpha, _shape_of(x), _shape_of(y)
        ctx.out_shape, ctx.out_dtype = output.shape, output.dtype

    @staticmethod
    def backward(ctx, delta: Tensor):
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = _unbroadcast(delta, ctx.x_shape)  # ∂z/∂x = 1
        if ctx.needs_input_grad[1]:
            grad_y = _unbroadcast(delta * ctx.alpha, ctx.y_shape)  # ∂z/∂y = α
        return grad_x, grad_y, None

    @staticmethod
    def jvp(ctx, tangent_x, tangent_y, _):
        tangent_z = torch.zeros((), dtype=ctx.out_dtype, device=(tangent_x if tangent_y is None else tangent_y).device)
        if tangent_x is not None:
            tangent_z = tangent_z + tangent_x  # ∂z/∂x · ẋ
        if tangent_y is not None:
            tangent_z = tangent_z + ctx.alpha * tangent_y  # ∂z/∂y · ẏ
        return _to_output(tangent_z, ctx)


class Mul(ManualFunction):
    """z = x ⊙ y.

    ∂C/∂x = Σ_broadcast δ ⊙ y
    ∂C/∂y = Σ_broadcast δ ⊙ x
    """

    @staticmethod
    def forward(x: Operand, y: Operand) -> Tensor:
        return torch.mul(x, y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y = inputs
        ctx.numbers = _numbers_only(inputs)  # the Python numbers; the tensors are saved below
        ctx.save_for_backward(*_tensors_or_none(x, y))
        ctx.save_for_forward(*_tensors_or_none(x, y))
        ctx.x_shape, ctx.y_shape, ctx.out_shape, ctx.out_dtype = _shape_of(x), _shape_of(y), output.shape, output.dtype

    @staticmethod
    def _operands(ctx):
        return tuple(n if t is None else t for t, n in zip(ctx.saved_tensors, ctx.numbers))

    @staticmethod
    def backward(ctx, delta: Tensor):
        x, y = Mul._operands(ctx)
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = _unbroadcast(delta * y, ctx.x_shape)  # ∂z/∂x = y
        if ctx.needs_input_grad[1]:
            grad_y = _unbroadcast(delta * x, ctx.y_shape)  # ∂z/∂y = x
        return grad_x, grad_y

    @staticmethod
    def jvp(ctx, tangent_x, tangent_y):
        x, y = Mul._operands(ctx)
        tangent_z = None
        if tangent_x is not None:
            tangent_z = tangent_x * y  # ∂z/∂x · ẋ
        if tangent_y is not None:
            tangent_z = x * tangent_y if tangent_z is None else tangent_z + x * tangent_y  # ∂z/∂y · ẏ
        return _to_output(tangent_z, ctx)


class Div(ManualFunction):
    """z = x / y.

    ∂C/∂x = Σ_broadcast δ / y
    ∂C/∂y = Σ_broadcast −δ ⊙ x / y² = Σ_broadcast −δ ⊙ z / y
    """

    @staticmethod
    def forward(x: Operand, y: Operand) -> Tensor:
        return torch.div(x, y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y = inputs
        ctx.numbers = _numbers_only(inputs)
        ctx.save_for_backward(*_tensors_or_none(x, y), output)
        ctx.save_for_forward(*_tensors_or_none(x, y), output)
        ctx.x_shape, ctx.y_shape, ctx.out_shape, ctx.out_dtype = _shape_of(x), _shape_of(y), output.shape, output.dtype

    @staticmethod
    def _operands(ctx):
        *xy, z = ctx.saved_tensors
        return (*(n if t is None else t for t, n in zip(xy, ctx.numbers)), z)

    @staticmethod
    def backward(ctx, delta: Tensor):
        _, y, z = Div._operands(ctx)
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = _unbroadcast(delta / y, ctx.x_shape)  # ∂z/∂x = 1/y
        if ctx.needs_input_grad[1]:
            grad_y = _unbroadcast(-delta * z / y, ctx.y_shape)  # ∂z/∂y = −x/y² = −z/y
        return grad_x, grad_y

    @staticmethod
    def jvp(ctx, tangent_x, tangent_y):
        _, y, z = Div._operands(ctx)
        tangent_z = None
        if tangent_x is not None:
            tangent_z = tangent_x / y  # ∂z/∂x · ẋ
        if tangent_y is not None:
            term = -tangent_y * z / y  # ∂z/∂y · ẏ
            tangent_z = term if tangent_z is None else tangent_z + term
        return _to_output(tangent_z, ctx)


class Pow(ManualFunction):
    """z = b^e  (b the base, e the exponent; either may be a Python number).

    ∂C/∂b = Σ_broadcast δ ⊙ e·b^(e−1)      (0 where e = 0, as torch: b⁰ = 1 is flat even at b = 0)
    ∂C/∂e = Σ_broadcast δ ⊙ b^e·log b       (0 where b = 0 and e ≥ 0, as torch: 0^e is flat there)
    """

    @staticmethod
    def forward(base: Operand, exponent: Operand) -> Tensor:
        return torch.pow(base, exponent)

    @staticmethod
    def setup_context(ctx, inputs, output):
        base, exponent = inputs
        ctx.numbers = _numbers_only(inputs)
        ctx.save_for_backward(*_tensors_or_none(base, exponent), output)
        ctx.save_for_forward(*_tensors_or_none(base, exponent), output)
        ctx.b_shape, ctx.e_shape = _shape_of(base), _shape_of(exponent)
        ctx.out_shape, ctx.out_dtype = output.shape, output.dtype

    @staticmethod
    def _operands(ctx):
        *be, z = ctx.saved_tensors
        return (*(n if t is None else t for t, n in zip(be, ctx.numbers)), z)

    @staticmethod
    def _dz_dbase(b, e, z):
        slope = e * torch.pow(b, e - 1)  # e·b^(e−1)
        if isinstance(e, Tensor):
            return torch.where(e == 0, torch.zeros_like(slope), slope)  # b⁰ = 1: no slope
        return torch.zeros_like(slope) if e == 0 else slope

    @staticmethod
    def _dz_dexponent(b, e, z):
        if not isinstance(b, Tensor):
            b = torch.tensor(b, dtype=z.dtype, device=z.device)
        slope = z * torch.log(b)  # b^e · log b
        return torch.where((b == 0) & (e >= 0), torch.zeros_like(slope), slope)  # 0^e = 0 (e > 0) or 1: flat

    @staticmethod
    def backward(ctx, delta: Tensor):
        b, e, z = Pow._operands(ctx)
        grad_b = grad_e = None
        if ctx.needs_input_grad[0]:
            grad_b = _unbroadcast(delta * Pow._dz_dbase(b, e, z), ctx.b_shape)  # ∂z/∂b = e·b^(e−1)
        if ctx.needs_input_grad[1]:
            grad_e = _unbroadcast(delta * Pow._dz_dexponent(b, e, z), ctx.e_shape)  # ∂z/∂e = b^e·log b
        return grad_b, grad_e

    @staticmethod
    def jvp(ctx, tangent_b, tangent_e):
        b, e, z = Pow._operands(ctx)
        tangent_z = None
        if tangent_b is not None:
            tangent_z = tangent_b * Pow._dz_dbase(b, e, z)  # ∂z/∂b · ḃ
        if tangent_e is not None:
            term = tangent_e * Pow._dz_dexponent(b, e, z)  # ∂z/∂e · ė
            tangent_z = term if tangent_z is None else tangent_z + term
        return _to_output(tangent_z, ctx)


class Where(ManualFunction):
    """z = c ? x : y  (c a boolean condition, not differentiable).

    ∂C/∂x = Σ_broadcast δ ⊙ [c]        ∂C/∂y = Σ_broadcast δ ⊙ [¬c]
    """

    @staticmethod
    def forward(condition: Tensor, x: Operand, y: Operand) -> Tensor:
        return torch.where(condition, x, y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        condition, x, y = inputs
        ctx.save_for_backward(condition)
        ctx.save_for_forward(condition)
        ctx.x_shape, ctx.y_shape, ctx.out_shape, ctx.out_dtype = _shape_of(x), _shape_of(y), output.shape, output.dtype

    @staticmethod
    def backward(ctx, delta: Tensor):
        (condition,) = ctx.saved_tensors
        grad_x = grad_y = None
        if ctx.needs_input_grad[1]:
            grad_x = _unbroadcast(torch.where(condition, delta, 0), ctx.x_shape)  # ∂z/∂x = [c]
        if ctx.needs_input_grad[2]:
            grad_y = _unbroadcast(torch.where(condition, 0, delta), ctx.y_shape)  # ∂z/∂y = [¬c]
        return None, grad_x, grad_y

    @staticmethod
    def jvp(ctx, _, tangent_x, tangent_y):
        (condition,) = ctx.saved_tensors
        tangent_z = None
        if tangent_x is not None:
            tangent_z = torch.where(condition, tangent_x, 0)  # ∂z/∂x · ẋ
        if tangent_y is not None:
            term = torch.where(condition, 0, tangent_y)  # ∂z/∂y · ẏ
            tangent_z = term if tangent_z is None else tangent_z + term
        return _to_output(tangent_z, ctx)


class PairExtremum(ManualFunction):
    """z = max(x, y) (``maximum``) or min(x, y) (``minimum``), entry by entry.

    ∂C/∂x = Σ_broadcast δ ⊙ s_x,   s_x = 1 where x wins, 0 where y wins, ½ on a tie (as torch)
    ∂C/∂y = Σ_broadcast δ ⊙ s_y,   s_y the same from y's side (a NaN wins on both sides, as torch)
    """

    @staticmethod
    def forward(x: Tensor, y: Tensor, largest: bool) -> Tensor:
        return (torch.maximum if largest else torch.minimum)(x, y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, ctx.largest = inputs
        ctx.save_for_backward(x, y)
        ctx.save_for_forward(x, y)
        ctx.x_shape, ctx.y_shape, ctx.out_shape, ctx.out_dtype = x.shape, y.shape, output.shape, output.dtype

    @staticmethod
    def _shares(ctx, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x_loses, y_loses = (x < y, x > y) if ctx.largest else (x > y, x < y)
        tie = x == y
        share_x = torch.where(tie, 0.5, (~x_loses).to(ctx.out_dtype))  # ∂z/∂x: 1, 0, or ½ on a tie
        share_y = torch.where(tie, 0.5, (~y_loses).to(ctx.out_dtype))  # ∂z/∂y: the same for y
        return share_x, share_y

    @staticmethod
    def backward(ctx, delta: Tensor):
        x, y = ctx.saved_tensors
        share_x, share_y = PairExtremum._shares(ctx, x, y)
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = _unbroadcast(delta * share_x, ctx.x_shape)  # ∂z/∂x = [x wins] (½ on a tie)
        if ctx.needs_input_grad[1]:
            grad_y = _unbroadcast(delta * share_y, ctx.y_shape)  # ∂z/∂y = [y wins] (½ on a tie)
        return grad_x, grad_y, None

    @staticmethod
    def jvp(ctx, tangent_x, tangent_y, _):
        x, y = ctx.saved_tensors
        share_x, share_y = PairExtremum._shares(ctx, x, y)
        tangent_z = torch.zeros((), dtype=ctx.out_dtype, device=x.device)
        if tangent_x is not None:
            tangent_z = tangent_z + share_x * tangent_x  # ∂z/∂x · ẋ
        if tangent_y is not None:
            tangent_z = tangent_z + share_y * tangent_y  # ∂z/∂y · ẏ
        return _to_output(tangent_z, ctx)


class Addc(ManualFunction):
    """z = c + v·t₁·t₂ (``addcmul``) or z = c + v·t₁/t₂ (``addcdiv``), v a number.

    addcmul:  ∂C/∂c = Σ_broadcast δ    ∂C/∂t₁ = Σ_broadcast v·δ ⊙ t₂     ∂C/∂t₂ = Σ_broadcast v·δ ⊙ t₁
    addcdiv:  ∂C/∂c = Σ_broadcast δ    ∂C/∂t₁ = Σ_broadcast v·δ / t₂     ∂C/∂t₂ = Σ_broadcast −v·δ ⊙ t₁/t₂²
    """

    @staticmethod
    def forward(c: Tensor, t1: Tensor, t2: Tensor, value: Number, divide: bool) -> Tensor:
        return (torch.addcdiv if divide else torch.addcmul)(c, t1, t2, value=value)

    @staticmethod
    def setup_context(ctx, inputs, output):
        c, t1, t2, ctx.value, ctx.divide = inputs
        ctx.save_for_backward(t1, t2)
        ctx.save_for_forward(t1, t2)
        ctx.c_shape, ctx.t1_shape, ctx.t2_shape = c.shape, t1.shape, t2.shape
        ctx.out_shape, ctx.out_dtype = output.shape, output.dtype

    @staticmethod
    def _slopes(ctx, t1: Tensor, t2: Tensor) -> tuple[Tensor, Tensor]:
        if ctx.divide:
            return ctx.value / t2, -ctx.value * t1 / (t2 * t2)  # ∂z/∂t₁ = v/t₂, ∂z/∂t₂ = −v·t₁/t₂²
        return ctx.value * t2, ctx.value * t1  # ∂z/∂t₁ = v·t₂, ∂z/∂t₂ = v·t₁

    @staticmethod
    def backward(ctx, delta: Tensor):
        t1, t2 = ctx.saved_tensors
        slope_t1, slope_t2 = Addc._slopes(ctx, t1, t2)
        grad_c = grad_t1 = grad_t2 = None
        if ctx.needs_input_grad[0]:
            grad_c = _unbroadcast(delta, ctx.c_shape)  # ∂z/∂c = 1
        if ctx.needs_input_grad[1]:
            grad_t1 = _unbroadcast(delta * slope_t1, ctx.t1_shape)  # ∂z/∂t₁
        if ctx.needs_input_grad[2]:
            grad_t2 = _unbroadcast(delta * slope_t2, ctx.t2_shape)  # ∂z/∂t₂
        return grad_c, grad_t1, grad_t2, None, None

    @staticmethod
    def jvp(ctx, tangent_c, tangent_t1, tangent_t2, *_):
        t1, t2 = ctx.saved_tensors
        slope_t1, slope_t2 = Addc._slopes(ctx, t1, t2)
        tangent_z = torch.zeros((), dtype=ctx.out_dtype, device=t1.device)
        if tangent_c is not None:
            tangent_z = tangent_z + tangent_c  # ∂z/∂c · ċ
        if tangent_t1 is not None:
            tangent_z = tangent_z + slope_t1 * tangent_t1  # ∂z/∂t₁ · ṫ₁
        if tangent_t2 is not None:
            tangent_z = tangent_z + slope_t2 * tangent_t2  # ∂z/∂t₂ · ṫ₂
        return _to_output(tangent_z, ctx)


class ClampByTensors(ManualFunction):
    """a = min(max(z, lo), hi) with tensor bounds (either may be None), broadcast together; where lo > hi,
    a = hi (as torch).

    ∂C/∂z  = Σ_broadcast δ ⊙ [lo ≤ z ≤ hi]          (the gradient passes at the bounds, as torch)
    ∂C/∂lo = Σ_broadcast δ ⊙ [z < lo and lo < hi]   (the floor binds)
    ∂C/∂hi = Σ_broadcast δ ⊙ [z > hi or hi < lo]    (the ceiling binds)
    """

    @staticmethod
    def forward(z: Tensor, lo: Tensor | None, hi: Tensor | None) -> Tensor:
        return torch.clamp(z, lo, hi)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, lo, hi = inputs
        ctx.save_for_backward(z, lo, hi)
        ctx.save_for_forward(z, lo, hi)
        ctx.shapes = tuple(None if t is None else t.shape for t in inputs)
        ctx.out_shape, ctx.out_dtype = output.shape, output.dtype

    @staticmethod
    def _routes(z: Tensor, lo: Tensor | None, hi: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Where the output came from: z itself, the floor, or the ceiling (as torch's backward decides)."""
        if lo is not None and hi is not None:
            return (z >= lo) & (z <= hi), (z < lo) & (lo < hi), (z > hi) | (hi < lo)
        if lo is not None:
            return z >= lo, z < lo, None
        return z <= hi, None, z > hi

    @staticmethod
    def backward(ctx, delta: Tensor):
        routes = ClampByTensors._routes(*ctx.saved_tensors)
        grads = [None, None, None]
        for k, (route, shape_k) in enumerate(zip(routes, ctx.shapes)):
            if route is not None and ctx.needs_input_grad[k]:
                grads[k] = _unbroadcast(torch.where(route, delta, 0), shape_k)  # ∂a/∂(z, lo, hi) = [it passed]
        return tuple(grads)

    @staticmethod
    def jvp(ctx, *tangents):
        routes = ClampByTensors._routes(*ctx.saved_tensors)
        tangent_a = torch.zeros((), dtype=ctx.out_dtype, device=ctx.saved_tensors[0].device)
        for route, tangent in zip(routes, tangents):
            if route is not None and tangent is not None:
                tangent_a = tangent_a + torch.where(route, tangent, 0)  # ∂a/∂(z, lo, hi) · its tangent
        return _to_output(tangent_a, ctx)


# -- elementwise unary -----------------------------------------------------------------------------
class Exp(Elementwise):
    """a = eᶻ;  ∂a/∂z = eᶻ = a."""

    saves = "output"

    @staticmethod
    def f(z):
        return torch.exp(z)

    @staticmethod
    def df(a):
        return a  # (eᶻ)′ = eᶻ


class Log(Elementwise):
    """a = log z;  ∂a/∂z = 1/z."""

    @staticmethod
    def f(z):
        return torch.log(z)

    @staticmethod
    def df(z):
        return z.reciprocal()  # (log z)′ = 1/z


class Sqrt(Elementwise):
    """a = √z;  ∂a/∂z = 1/(2√z) = 1/(2a)."""

    saves = "output"

    @staticmethod
    def f(z):
        return torch.sqrt(z)

    @staticmethod
    def df(a):
        return (2 * a).reciprocal()  # (√z)′ = 1/(2a)


class Abs(Elementwise):
    """a = |z|;  ∂a/∂z = sign(z) (0 at z = 0, as torch)."""

    @staticmethod
    def f(z):
        return torch.abs(z)

    @staticmethod
    def df(z):
        return torch.sign(z)  # |z|′ = sign(z)


class Neg(Elementwise):
    """a = −z;  ∂a/∂z = −1."""

    @staticmethod
    def f(z):
        return torch.neg(z)

    @staticmethod
    def df(z):
        return torch.full_like(z, -1)  # (−z)′ = −1


class Reciprocal(Elementwise):
    """a = 1/z;  ∂a/∂z = −1/z² = −a²."""

    saves = "output"

    @staticmethod
    def f(z):
        return torch.reciprocal(z)

    @staticmethod
    def df(a):
        return -(a * a)  # (1/z)′ = −a²


class Clamp(Elementwise):
    """a = min(max(z, lo), hi);  ∂a/∂z = [lo ≤ z ≤ hi] (as torch: the gradient passes at the bounds)."""

    @staticmethod
    def f(z, lo, hi):
        return torch.clamp(z, lo, hi)

    @staticmethod
    def df(z, lo, hi):
        inside = torch.ones_like(z, dtype=torch.bool)
        if lo is not None:
            inside = inside & (z >= lo)  # above the floor
        if hi is not None:
            inside = inside & (z <= hi)  # below the ceiling
        return inside.to(z.dtype)  # ∂a/∂z = 1 inside [lo, hi], 0 where a bound holds a constant


class Rsqrt(Elementwise):
    """a = 1/√z;  ∂a/∂z = −½ z^(−3/2) = −a³/2."""

    saves = "output"

    @staticmethod
    def f(z):
        return torch.rsqrt(z)

    @staticmethod
    def df(a):
        return -0.5 * a * a * a  # (z^(−½))′ = −½ a³


class Square(Elementwise):
    """a = z²;  ∂a/∂z = 2z."""

    @staticmethod
    def f(z):
        return torch.square(z)

    @staticmethod
    def df(z):
        return 2 * z  # (z²)′ = 2z


class Sin(Elementwise):
    """a = sin z;  ∂a/∂z = cos z."""

    @staticmethod
    def f(z):
        return torch.sin(z)

    @staticmethod
    def df(z):
        return torch.cos(z)  # (sin z)′ = cos z


class Cos(Elementwise):
    """a = cos z;  ∂a/∂z = −sin z."""

    @staticmethod
    def f(z):
        return torch.cos(z)

    @staticmethod
    def df(z):
        return -torch.sin(z)  # (cos z)′ = −sin z


class Log1p(Elementwise):
    """a = log(1 + z);  ∂a/∂z = 1/(1 + z)."""

    @staticmethod
    def f(z):
        return torch.log1p(z)

    @staticmethod
    def df(z):
        return (z + 1).reciprocal()  # (log(1 + z))′ = 1/(1 + z)


class Expm1(Elementwise):
    """a = eᶻ − 1;  ∂a/∂z = eᶻ = a + 1."""

    saves = "output"

    @staticmethod
    def f(z):
        return torch.expm1(z)

    @staticmethod
    def df(a):
        return a + 1  # (eᶻ − 1)′ = eᶻ = a + 1


class Log2(Elementwise):
    """a = log₂ z;  ∂a/∂z = 1/(z·ln 2)."""

    @staticmethod
    def f(z):
        return torch.log2(z)

    @staticmethod
    def df(z):
        return (z * math.log(2)).reciprocal()  # (ln z / ln 2)′ = 1/(z·ln 2)


class Sign(Elementwise):
    """a = sign z ∈ {−1, 0, 1};  ∂a/∂z = 0 (a step: flat everywhere but at 0, where torch takes 0 too)."""

    @staticmethod
    def f(z):
        return torch.sign(z)

    @staticmethod
    def df(z):
        return torch.zeros_like(z)  # sign′ = 0


class Erf(Elementwise):
    """a = erf z = (2/√π) ∫₀ᶻ e^(−t²) dt;  ∂a/∂z = (2/√π)·e^(−z²)."""

    @staticmethod
    def f(z):
        return torch.erf(z)

    @staticmethod
    def df(z):
        return 2 / math.sqrt(math.pi) * torch.exp(-(z * z))  # erf′(z) = (2/√π)·e^(−z²)


# -- reductions ------------------------------------------------------------------------------------
def _restore_reduced(grad: Tensor, dims: tuple[int, ...], keepdim: bool) -> Tensor:
    """Put back the reduced dimensions as size 1, so ``grad`` broadcasts against the input."""
    if not keepdim:
        for d in dims:  # ascending, so each index is already right
            grad = grad.unsqueeze(d)
    return grad


class Sum(ManualFunction):
    """z = Σ_{reduced dims} x;  ∂C/∂x = δ, copied to every x that was summed (∂z/∂x = 1)."""

    @staticmethod
    def forward(x: Tensor, dims: tuple[int, ...], keepdim: bool, dtype: torch.dtype | None) -> Tensor:
        return torch.sum(x, dim=dims, keepdim=keepdim, dtype=dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dims, ctx.keepdim, _ = inputs
        ctx.x_shape, ctx.x_dtype, ctx.out_dtype = x.shape, x.dtype, output.dtype

    @staticmethod
    def backward(ctx, delta: Tensor):
        grad_x = _restore_reduced(delta, ctx.dims, ctx.keepdim).expand(ctx.x_shape)  # ∂z/∂x = 1 for each term
        return grad_x.to(ctx.x_dtype), None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        return torch.sum(tangent_x, dim=ctx.dims, keepdim=ctx.keepdim, dtype=ctx.out_dtype)  # ż = Σ ẋ


class Mean(ManualFunction):
    """z = (1/N) Σ_{reduced dims} x  (N terms);  ∂C/∂x = δ / N for every x averaged."""

    @staticmethod
    def forward(x: Tensor, dims: tuple[int, ...], keepdim: bool, dtype: torch.dtype | None) -> Tensor:
        return torch.mean(x, dim=dims, keepdim=keepdim, dtype=dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dims, ctx.keepdim, _ = inputs
        ctx.x_shape, ctx.x_dtype, ctx.out_dtype = x.shape, x.dtype, output.dtype
        ctx.n = math.prod(x.shape[d] for d in ctx.dims)

    @staticmethod
    def backward(ctx, delta: Tensor):
        grad_x = _restore_reduced(delta, ctx.dims, ctx.keepdim).expand(ctx.x_shape) / ctx.n  # ∂z/∂x = 1/N
        return grad_x.to(ctx.x_dtype), None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        return torch.mean(tangent_x, dim=ctx.dims, keepdim=ctx.keepdim, dtype=ctx.out_dtype)  # ż = (1/N) Σ ẋ


class Var(ManualFunction):
    """z = Σ (x − μ)² / (N − c)  over the reduced dims (μ their mean, N terms, c the correction).

    ∂C/∂x = δ ⊙ 2(x − μ)/(N − c)   (the Σ_j ∂μ/∂x_i term vanishes: Σ_j (x_j − μ) = 0)
    """

    @staticmethod
    def forward(x: Tensor, dims: tuple[int, ...], correction: float, keepdim: bool) -> Tensor:
        return torch.var(x, dim=dims, correction=correction, keepdim=keepdim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dims, correction, ctx.keepdim = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        dof = math.prod(x.shape[d] for d in ctx.dims) - correction  # N − c
        ctx.scale = 2.0 / dof if dof != 0 else math.inf  # 2/(N − c), infinite like torch's when N = c

    @staticmethod
    def backward(ctx, delta: Tensor):
        (x,) = ctx.saved_tensors
        deviation = x - x.mean(dim=ctx.dims, keepdim=True)  # x − μ
        delta = _restore_reduced(delta, ctx.dims, ctx.keepdim)
        grad_x = delta * ctx.scale * deviation  # ∂z/∂x = 2(x − μ)/(N − c)
        return grad_x, None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        (x,) = ctx.saved_tensors
        deviation = x - x.mean(dim=ctx.dims, keepdim=True)  # x − μ
        return torch.sum(ctx.scale * deviation * tangent_x, dim=ctx.dims, keepdim=ctx.keepdim)  # Σ ∂z/∂x · ẋ


class Std(ManualFunction):
    """z = √(Σ (x − μ)² / (N − c))  over the reduced dims: the square root of :class:`Var`.

    ∂C/∂x = δ ⊙ (x − μ) / ((N − c)·z)   (∂√v/∂v = 1/(2z) times Var's 2(x − μ)/(N − c); 0 where z = 0, as torch)
    """

    @staticmethod
    def forward(x: Tensor, dims: tuple[int, ...], correction: float, keepdim: bool) -> Tensor:
        return torch.std(x, dim=dims, correction=correction, keepdim=keepdim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dims, correction, ctx.keepdim = inputs
        ctx.save_for_backward(x, output)
        ctx.save_for_forward(x, output)
        dof = math.prod(x.shape[d] for d in ctx.dims) - correction  # N − c
        ctx.scale = 1.0 / dof if dof != 0 else math.inf  # 1/(N − c), infinite like torch's when N = c

    @staticmethod
    def _slope(ctx, x: Tensor, z: Tensor) -> Tensor:
        z = _restore_reduced(z, ctx.dims, ctx.keepdim)
        deviation = x - x.mean(dim=ctx.dims, keepdim=True)  # x − μ
        return torch.where(z == 0, 0, ctx.scale * deviation / z)  # ∂z/∂x = (x − μ)/((N − c)·z)

    @staticmethod
    def backward(ctx, delta: Tensor):
        x, z = ctx.saved_tensors
        grad_x = _restore_reduced(delta, ctx.dims, ctx.keepdim) * Std._slope(ctx, x, z)  # δ ⊙ ∂z/∂x
        return grad_x, None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        x, z = ctx.saved_tensors
        return torch.sum(Std._slope(ctx, x, z) * tangent_x, dim=ctx.dims, keepdim=ctx.keepdim)  # Σ ∂z/∂x · ẋ


class Extremum(ManualFunction):
    """z = max (``amax``, ``max(input)``) or min (``amin``, ``min(input)``) of x over the reduced dims.

    ∂C/∂x = δ ⊙ [x = z] / #{x = z}: the gradient goes to the entries that hold the extremum, split
    evenly among ties (as torch does). With ``nan_wins`` (torch's ``max(input)``/``min(input)``), a NaN
    result counts as held by every NaN entry; ``amax``/``amin`` give such a slice a NaN gradient, as torch.
    """

    @staticmethod
    def forward(x: Tensor, dims: tuple[int, ...], keepdim: bool, largest: bool, nan_wins: bool) -> Tensor:
        return (torch.amax if largest else torch.amin)(x, dim=dims, keepdim=keepdim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dims, ctx.keepdim, _, ctx.nan_wins = inputs
        ctx.save_for_backward(x, output)
        ctx.save_for_forward(x, output)

    @staticmethod
    def _winners(ctx, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        z = _restore_reduced(z, ctx.dims, ctx.keepdim)
        won = x == z  # [x = z]
        if ctx.nan_wins:
            won = won | (x.isnan() & z.isnan())  # a NaN maximum is held by the NaNs
        won = won.to(x.dtype)
        return won, won.sum(dim=ctx.dims, keepdim=True)  # and how many tie for it

    @staticmethod
    def backward(ctx, delta: Tensor):
        x, z = ctx.saved_tensors
        won, ties = Extremum._winners(ctx, x, z)
        grad_x = _restore_reduced(delta, ctx.dims, ctx.keepdim) / ties * won  # ∂z/∂x = [x = z] / #ties
        return grad_x, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        x, z = ctx.saved_tensors
        won, ties = Extremum._winners(ctx, x, z)
        tangent_z = (tangent_x * won).sum(dim=ctx.dims, keepdim=True) / ties  # mean ẋ of the tied winners
        return tangent_z if ctx.keepdim else tangent_z.squeeze(ctx.dims)


class ExtremumAlongDim(ManualFunction):
    """(z, i) = the max (or min) of x along one dim and the index i it was taken from (``max(input, dim)``).

    ∂C/∂x_j = δ ⊙ [j = i]: each slice's δ goes to the one entry whose index was returned, even among ties
    (as torch). The indices are integers: no gradient.
    """

    @staticmethod
    def forward(x: Tensor, dim: int, keepdim: bool, largest: bool) -> tuple[Tensor, Tensor]:
        return tuple((torch.max if largest else torch.min)(x, dim, keepdim))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dim, ctx.keepdim, _ = inputs
        _, indices = output
        ctx.mark_non_differentiable(indices)
        ctx.save_for_backward(indices)
        ctx.save_for_forward(indices)
        ctx.x_shape, ctx.x_is_scalar = x.shape, x.dim() == 0

    @staticmethod
    def backward(ctx, delta: Tensor, _):
        (indices,) = ctx.saved_tensors
        if ctx.x_is_scalar:
            return delta, None, None, None  # the only entry: ∂z/∂x = 1
        if not ctx.keepdim:
            delta, indices = delta.unsqueeze(ctx.dim), indices.unsqueeze(ctx.dim)
        zeros = torch.zeros(ctx.x_shape, dtype=delta.dtype, device=delta.device)
        grad_x = zeros.scatter(ctx.dim, indices, delta)  # ∂z/∂x_j = [j = i]
        return grad_x, None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        (indices,) = ctx.saved_tensors
        if ctx.x_is_scalar:
            return tangent_x, None
        if ctx.keepdim:
            return tangent_x.gather(ctx.dim, indices), None  # ż = ẋ_i
        return tangent_x.gather(ctx.dim, indices.unsqueeze(ctx.dim)).squeeze(ctx.dim), None


class LogSumExp(ManualFunction):
    """z = log Σ eˣ over the reduced dims.

    ∂C/∂x = δ ⊙ e^(x − z): the softmax of x over those dims.
    """

    @staticmethod
    def forward(x: Tensor, dims: tuple[int, ...], keepdim: bool) -> Tensor:
        return torch.logsumexp(x, dims, keepdim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dims, ctx.keepdim = inputs
        ctx.save_for_backward(x, output)
        ctx.save_for_forward(x, output)

    @staticmethod
    def _softmax(ctx, x: Tensor, z: Tensor) -> Tensor:
        return torch.exp(x - _restore_reduced(z, ctx.dims, ctx.keepdim))  # e^(x − z)

    @staticmethod
    def backward(ctx, delta: Tensor):
        x, z = ctx.saved_tensors
        grad_x = _restore_reduced(delta, ctx.dims, ctx.keepdim) * LogSumExp._softmax(ctx, x, z)  # ∂z/∂x = e^(x−z)
        return grad_x, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        x, z = ctx.saved_tensors
        return torch.sum(LogSumExp._softmax(ctx, x, z) * tangent_x, dim=ctx.dims, keepdim=ctx.keepdim)  # Σ ∂z/∂x·ẋ


class Prod(ManualFunction):
    """z = Π x along one dim, or over every entry (``dim=None``).

    ∂C/∂x_i = δ ⊙ Π_{j≠i} x_j, the product of the others, taken as (Π of those before i)·(Π of those after
    i) so that no x_i = 0 is divided by: with one zero only that entry gets a gradient, with two none does
    (as torch).
    """

    @staticmethod
    def forward(x: Tensor, dim: int | None, keepdim: bool, dtype: torch.dtype | None) -> Tensor:
        return torch.prod(x, dtype=dtype) if dim is None else torch.prod(x, dim, keepdim, dtype=dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dim, ctx.keepdim, _ = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        ctx.x_dtype, ctx.out_dtype = x.dtype, output.dtype

    @staticmethod
    def _others(x: Tensor, dim: int) -> Tensor:
        """Π_{j≠i} x_j along ``dim``, for every i."""
        n = x.shape[dim]
        if n == 0:
            return x
        ones = torch.ones_like(x.narrow(dim, 0, 1))
        before = torch.cat([ones, x.narrow(dim, 0, n - 1)], dim).cumprod(dim)  # Π_{j<i} x_j
        after = torch.cat([ones, x.narrow(dim, 1, n - 1).flip(dim)], dim).cumprod(dim).flip(dim)  # Π_{j>i} x_j
        return before * after

    @staticmethod
    def _slope(ctx, x: Tensor) -> Tensor:
        x = x.to(ctx.out_dtype)
        if x.dim() == 0:
            return torch.ones_like(x)  # a single factor
        if ctx.dim is None:
            return Prod._others(x.reshape(-1), 0).reshape(x.shape)
        return Prod._others(x, ctx.dim)

    @staticmethod
    def backward(ctx, delta: Tensor):
        (x,) = ctx.saved_tensors
        if ctx.dim is not None and not ctx.keepdim and x.dim() > 0:
            delta = delta.unsqueeze(ctx.dim)
        grad_x = delta * Prod._slope(ctx, x)  # ∂z/∂x_i = Π_{j≠i} x_j
        return grad_x.to(ctx.x_dtype), None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        (x,) = ctx.saved_tensors
        terms = Prod._slope(ctx, x) * tangent_x  # ∂z/∂x_i · ẋ_i
        if ctx.dim is None or x.dim() == 0:
            return terms.sum()
        return terms.sum(ctx.dim, keepdim=ctx.keepdim)


class VectorNorm(ManualFunction):
    """z = ‖x‖_p = (Σ |x|^p)^(1/p) over the reduced dims (p = ±∞: max/min |x|; p = 0: the count of nonzeros).

    ∂C/∂x = δ ⊙ sign(x)·|x|^(p−1) / z^(p−1)   (p = 2: δ ⊙ x/z;  p = 1: δ ⊙ sign(x);
            p = ±∞: δ ⊙ sign(x) split evenly among the entries with |x| = z;  p = 0: 0),
    taken as 0 where z = 0 (and, for p < 1, where x = 0), as torch.
    """

    @staticmethod
    def forward(x: Tensor, ord: float, dims: tuple[int, ...], keepdim: bool, dtype: torch.dtype | None) -> Tensor:
        return torch.linalg.vector_norm(x, ord, dims or None, keepdim, dtype=dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.ord, ctx.dims, ctx.keepdim, _ = inputs
        ctx.save_for_backward(x, output)
        ctx.save_for_forward(x, output)
        ctx.x_dtype = x.dtype

    @staticmethod
    def _slope(ctx, x: Tensor, z: Tensor) -> Tensor:
        """∂z/∂x, laid out like x."""
        p, x = ctx.ord, x.to(z.dtype)
        z = _restore_reduced(z, ctx.dims, ctx.keepdim)
        if p == 0:
            return torch.zeros_like(x)  # a count: flat
        if p == 1:
            return torch.sign(x)  # ∂|x|/∂x
        if p == 2:
            return torch.where(z == 0, 0, x / z)  # x/‖x‖
        if math.isinf(p):
            held = (x.abs() == z) | x.abs().isnan()  # the entries holding the max (min) |x|
            return torch.sign(x) * held / held.sum(dim=ctx.dims, keepdim=True)
        if p < 1:
            return torch.sign(x) * torch.where(x == 0, 0, x.abs().pow(p - 1)) * z.pow(1 - p)
        per_z = torch.where(z == 0, 0, z.pow(p - 1).reciprocal())  # 1/z^(p−1)
        if p < 2:
            return torch.sign(x) * x.abs().pow(p - 1) * per_z
        return x * x.abs().pow(p - 2) * per_z  # sign(x)·|x|^(p−1) without a sign

    @staticmethod
    def backward(ctx, delta: Tensor):
        x, z = ctx.saved_tensors
        delta = _restore_reduced(delta, ctx.dims, ctx.keepdim)
        grad_x = delta * VectorNorm._slope(ctx, x, z)  # ∂z/∂x = sign(x)·|x|^(p−1)/z^(p−1)
        return grad_x.to(ctx.x_dtype), None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        x, z = ctx.saved_tensors
        return torch.sum(VectorNorm._slope(ctx, x, z) * tangent_x, dim=ctx.dims, keepdim=ctx.keepdim)  # Σ ∂z/∂x·ẋ


# -- scans -----------------------------------------------------------------------------------------
class Cumsum(ManualFunction):
    """z_j = Σ_{i ≤ j} x_i along one dim.

    ∂C/∂x_i = Σ_{j ≥ i} δ_j: a cumulative sum of δ run backwards (flip, cumsum, flip).
    """

    @staticmethod
    def forward(x: Tensor, dim: int, dtype: torch.dtype | None) -> Tensor:
        return torch.cumsum(x, dim, dtype=dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dim, _ = inputs
        ctx.x_dtype, ctx.out_dtype = x.dtype, output.dtype

    @staticmethod
    def backward(ctx, delta: Tensor):
        delta = delta.to(ctx.x_dtype)  # summed in the input's precision, as torch
        if delta.dim() == 0:
            return delta, None, None  # one entry: z = x
        grad_x = delta.flip(ctx.dim).cumsum(ctx.dim).flip(ctx.dim)  # ∂z_j/∂x_i = [i ≤ j]
        return grad_x, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        return torch.cumsum(tangent_x, ctx.dim, dtype=ctx.out_dtype)  # ż_j = Σ_{i ≤ j} ẋ_i


# -- matrix products -------------------------------------------------------------------------------
class Matmul(ManualFunction):
    """z = a @ b, as ``torch.matmul``: z_bnp = Σ_m a_bnm · b_bmp, batch dims b broadcast; a 1-D a is a
    row (1, m) and a 1-D b a column (m, 1), whose size-1 dimension is dropped from z.

    ∂C/∂a = Σ_broadcast δ · bᵀ     (b…,n,p)·(b…,p,m) → (b…,n,m)
    ∂C/∂b = Σ_broadcast aᵀ · δ     (b…,m,n)·(b…,n,p) → (b…,m,p)
    """

    @staticmethod
    def forward(a: Tensor, b: Tensor) -> Tensor:
        return torch.matmul(a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, b = inputs
        ctx.save_for_backward(a, b)
        ctx.save_for_forward(a, b)

    @staticmethod
    def backward(ctx, delta: Tensor):
        a, b = ctx.saved_tensors
        a2 = a.unsqueeze(0) if a.dim() == 1 else a  # a vector a is the row (1, m)
        b2 = b.unsqueeze(-1) if b.dim() == 1 else b  # a vector b is the column (m, 1)
        if b.dim() == 1:
            delta = delta.unsqueeze(-1)  # put back z's dropped column dimension
        if a.dim() == 1:
            delta = delta.unsqueeze(-2)  # and its dropped row dimension
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = _unbroadcast(delta @ b2.mT, a2.shape).reshape(a.shape)  # ∂C/∂a = δ · bᵀ
        if ctx.needs_input_grad[1]:
            grad_b = _unbroadcast(a2.mT @ delta, b2.shape).reshape(b.shape)  # ∂C/∂b = aᵀ · δ
        return grad_a, grad_b

    @staticmethod
    def jvp(ctx, tangent_a, tangent_b):
        a, b = ctx.saved_tensors
        tangent_z = None
        if tangent_a is not None:
            tangent_z = torch.matmul(tangent_a, b)  # ∂z/∂a · ȧ = ȧ · b
        if tangent_b is not None:
            term = torch.matmul(a, tangent_b)  # ∂z/∂b · ḃ = a · ḃ
            tangent_z = term if tangent_z is None else tangent_z + term
        return tangent_z


def _add_product_setup(ctx, inputs, output):
    c, a, b, ctx.beta, ctx.alpha = inputs
    ctx.save_for_backward(a, b)
    ctx.save_for_forward(a, b)
    ctx.c_shape, ctx.out_shape, ctx.out_dtype = c.shape, output.shape, output.dtype


def _add_product_backward(ctx, delta: Tensor):
    """The backward of z = β·c + α·(a · b), for matrices or batches of them (bᵀ: b's last two dims swapped)."""
    a, b = ctx.saved_tensors
    grad_c = grad_a = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_c = _unbroadcast(delta * ctx.beta, ctx.c_shape)  # ∂z/∂c = β
    if ctx.needs_input_grad[1]:
        grad_a = ctx.alpha * (delta @ b.mT)  # ∂C/∂a = α·δ · bᵀ
    if ctx.needs_input_grad[2]:
        grad_b = ctx.alpha * (a.mT @ delta)  # ∂C/∂b = α·aᵀ · δ
    return grad_c, grad_a, grad_b, None, None


def _add_product_jvp(ctx, tangent_c, tangent_a, tangent_b, *_):
    a, b = ctx.saved_tensors
    tangent_z = torch.zeros(ctx.out_shape, dtype=ctx.out_dtype, device=a.device)
    if tangent_c is not None:
        tangent_z = tangent_z + ctx.beta * tangent_c  # ∂z/∂c · ċ
    if tangent_a is not None:
        tangent_z = tangent_z + ctx.alpha * (tangent_a @ b)  # ∂z/∂a · ȧ
    if tangent_b is not None:
        tangent_z = tangent_z + ctx.alpha * (a @ tangent_b)  # ∂z/∂b · ḃ
    return tangent_z


class Addmm(ManualFunction):
    """z = β·c + α·(a · b)  with a (n, m), b (m, p), c broadcastable to (n, p).

    ∂C/∂c = Σ_broadcast β·δ      ∂C/∂a = α·δ · bᵀ      ∂C/∂b = α·aᵀ · δ
    """

    @staticmethod
    def forward(c: Tensor, a: Tensor, b: Tensor, beta: Number, alpha: Number) -> Tensor:
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)

    setup_context = staticmethod(_add_product_setup)
    backward = staticmethod(_add_product_backward)
    jvp = staticmethod(_add_product_jvp)


class Baddbmm(ManualFunction):
    """z = β·c + α·(a · b)  batch by batch: a (B, n, m), b (B, m, p), c broadcastable to (B, n, p).

    ∂C/∂c = Σ_broadcast β·δ      ∂C/∂a = α·δ · bᵀ      ∂C/∂b = α·aᵀ · δ    (each batch entry on its own)
    """

    @staticmethod
    def forward(c: Tensor, a: Tensor, b: Tensor, beta: Number, alpha: Number) -> Tensor:
        return torch.baddbmm(c, a, b, beta=beta, alpha=alpha)

    setup_context = staticmethod(_add_product_setup)
    backward = staticmethod(_add_product_backward)
    jvp = staticmethod(_add_product_jvp)


# -- einsum ----------------------------------------------------------------------------------------
LETTERS = string.ascii_uppercase + string.ascii_lowercase


def _sum_out(x: Tensor, letters: str, drop) -> tuple[Tensor, str]:
    """Σ of x over the dims whose letter ``drop`` picks, and the letters left."""
    dims = [d for d, c in enumerate(letters) if drop(c)]
    if not dims:
        return x, letters
    return x.sum(dims), "".join(c for c in letters if not drop(c))


def _diagonal(x: Tensor, letters: str) -> tuple[Tensor, str]:
    """x_ii… → x_i: the diagonal for each letter repeated within one operand (moved to the end)."""
    for c in dict.fromkeys(letters):
        while letters.count(c) > 1:
            i = letters.index(c)
            j = letters.index(c, i + 1)
            x = torch.diagonal(x, 0, i, j)
            letters = letters[:i] + letters[i + 1:j] + letters[j + 1:] + c
    return x, letters


def _product_pair(a: Tensor, sa: str, b: Tensor, sb: str, later: str) -> tuple[Tensor, str]:
    """Σ over the shared letters that ``later`` does not need of a ⊙ b, as one batched matrix product:
    a laid out (batch…, free in a, summed), b (batch…, summed, free in b)."""
    a, sa = _sum_out(a, sa, lambda c: c not in sb and c not in later)  # summed over a alone
    b, sb = _sum_out(b, sb, lambda c: c not in sa and c not in later)  # summed over b alone
    batch = [c for c in sa if c in sb and c in later]
    summed = [c for c in sa if c in sb and c not in later]
    for c in summed:  # broadcast on one side (size 1): that side is constant along c, so sum the other first
        if a.shape[sa.index(c)] == 1 and b.shape[sb.index(c)] != 1:
            b = b.sum(sb.index(c), keepdim=True)
        elif b.shape[sb.index(c)] == 1 and a.shape[sa.index(c)] != 1:
            a = a.sum(sa.index(c), keepdim=True)
    free_a = [c for c in sa if c not in sb]
    free_b = [c for c in sb if c not in sa]
    a = a.permute([sa.index(c) for c in batch + free_a + summed])
    b = b.permute([sb.index(c) for c in batch + summed + free_b])
    n, fa, s = len(batch), len(free_a), len(summed)
    sizes_a, sizes_b = a.shape[n:n + fa], b.shape[n + s:]
    a = a.reshape((*a.shape[:n], math.prod(sizes_a), math.prod(a.shape[n + fa:])))
    b = b.reshape((*b.shape[:n], math.prod(b.shape[n:n + s]), math.prod(sizes_b)))
    z = a @ b  # Σ_summed a · b, batch dims broadcast
    return z.reshape((*z.shape[:n], *sizes_a, *sizes_b)), "".join(batch + free_a + free_b)


def _contract(pieces: list[tuple[Tensor, str]], target: str) -> Tensor:
    """``einsum("s1,s2,…->target", …)`` written with diagonal, sum, permute, reshape and matmul (the pieces
    multiplied two at a time), every letter of target held by some piece. torch's own einsum takes a list
    of tensors, which torch's batched gradients (gradcheck's check_batched_grad) cannot batch."""
    pieces = [_diagonal(x, s) for x, s in pieces]
    z, sz = pieces[0]
    for k, (x, sx) in enumerate(pieces[1:], start=1):
        later = target + "".join(s for _, s in pieces[k + 1:])
        z, sz = _product_pair(z, sz, x, sx, later)
    z, sz = _sum_out(z, sz, lambda c: c not in target)
    return z.permute([sz.index(c) for c in target])


class Einsum(ManualFunction):
    """z = einsum(equation, A, B, …): the product of the operands, summed over every index the output
    lacks. The equation reaches this Function written out (:func:`_explicit_equation`): one letter per
    dimension, no ellipsis, an explicit output.

    ∂C/∂A_ij… = Σ over the indices not in A of δ · (the other operands): the gradient of one operand is
    the einsum of δ with the others, with A's subscripts as the output. Two corrections:

    - an index of A that appears nowhere else (A was summed over it) gets a factor of ones: every
      A_…j… received the same δ;
    - a repeated index of A (a diagonal, "ii->i") gets an identity matrix, since ∂A_ii/∂A_ij = [i = j];

    and a dimension A broadcast (size 1 against n) sums its gradient back, as :func:`_unbroadcast`. The
    einsum of the backward is :func:`_contract`, written out with matrix products.
    """

    @staticmethod
    def forward(equation: str, *operands: Tensor) -> Tensor:
        return torch.einsum(equation, *operands)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.equation, *operands = inputs
        ctx.save_for_backward(*operands)
        ctx.save_for_forward(*operands)

    @staticmethod
    def _gradient(equation: str, k: int, operands, delta: Tensor) -> Tensor:
        """∂C/∂(operand k): δ einsummed with the other operands, out to operand k's subscripts."""
        lhs, out = equation.split("->")
        terms = lhs.split(",")
        fresh = iter(c for c in LETTERS if c not in equation)
        pieces, subscripts = [delta], [out]
        for j, (term, operand) in enumerate(zip(terms, operands)):
            if j != k:
                pieces.append(operand)
                subscripts.append(term)
        present, a = set("".join(subscripts)), operands[k]
        like_a = {"dtype": delta.dtype, "device": delta.device}
        target = ""
        for d, c in enumerate(terms[k]):
            if c in target:  # a repeated index: ∂A_ii/∂A_ij = [i = j], an identity matrix
                twin = next(fresh)
                pieces.append(torch.eye(a.shape[d], **like_a))
                subscripts.append(c + twin)
                target += twin
                continue
            if c not in present:  # summed over A alone: every A_…j… got the same δ, a factor of ones
                pieces.append(torch.ones(a.shape[d], **like_a))
                subscripts.append(c)
            target += c
        grad = _contract(list(zip(pieces, subscripts)), target)  # Σ δ · (the other operands)
        return _unbroadcast(grad, a.shape).expand(a.shape)  # sum where A was broadcast, spread where others were

    @staticmethod
    def backward(ctx, delta: Tensor):
        operands = ctx.saved_tensors
        grads = tuple(Einsum._gradient(ctx.equation, k, operands, delta) if ctx.needs_input_grad[k + 1] else None
                      for k in range(len(operands)))
        return None, *grads

    @staticmethod
    def jvp(ctx, _, *tangents):
        operands = ctx.saved_tensors
        tangent_z = None
        for k, tangent in enumerate(tangents):
            if tangent is not None:  # multilinear: ż = Σ_k einsum(…, Ȧ_k, …)
                term = torch.einsum(ctx.equation, *operands[:k], tangent, *operands[k + 1:])
                tangent_z = term if tangent_z is None else tangent_z + term
        return tangent_z


# -- similarity ------------------------------------------------------------------------------------
class CosineSimilarity(ManualFunction):
    """z = Σ_d u ⊙ v,  u = x₁/n₁, v = x₂/n₂, nᵢ = max(‖xᵢ‖, ε), norms along d (x₁, x₂ broadcast first).

    ∂C/∂x₁ = Σ_broadcast δ ⊙ (v − z·x₁/‖x₁‖) / n₁      ∂C/∂x₂ = Σ_broadcast δ ⊙ (u − z·x₂/‖x₂‖) / n₂
    (∂u/∂x₁ = 1/n₁ − x₁·∂n₁/∂x₁ / n₁², and Σ_d x₁·v/n₁ = z). As torch, ε floors the value of n only:
    the gradient goes through ‖x‖ as if unfloored, with x/‖x‖ taken as 0 where ‖x‖ = 0.
    """

    @staticmethod
    def forward(x1: Tensor, x2: Tensor, dim: int, eps: float) -> Tensor:
        return torch.nn.functional.cosine_similarity(x1, x2, dim, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x1, x2, ctx.dim, ctx.eps = inputs
        ctx.save_for_backward(x1, x2, output)
        ctx.save_for_forward(x1, x2, output)
        ctx.x1_shape, ctx.x2_shape = x1.shape, x2.shape

    @staticmethod
    def _slopes(ctx, x1: Tensor, x2: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """∂z/∂x₁ and ∂z/∂x₂, laid out like the broadcast inputs."""
        x1, x2 = torch.broadcast_tensors(x1.to(z.dtype), x2.to(z.dtype))
        z = z.unsqueeze(ctx.dim)
        norm1 = torch.linalg.vector_norm(x1, 2, ctx.dim, keepdim=True)  # ‖x₁‖
        norm2 = torch.linalg.vector_norm(x2, 2, ctx.dim, keepdim=True)  # ‖x₂‖
        n1, n2 = norm1.clamp_min(ctx.eps), norm2.clamp_min(ctx.eps)  # n = max(‖x‖, ε)
        unit1 = torch.where(norm1 == 0, 0, x1 / norm1)  # ∂‖x₁‖/∂x₁
        unit2 = torch.where(norm2 == 0, 0, x2 / norm2)  # ∂‖x₂‖/∂x₂
        return (x2 / n2 - z * unit1) / n1, (x1 / n1 - z * unit2) / n2  # (v − z·x̂₁)/n₁, (u − z·x̂₂)/n₂

    @staticmethod
    def backward(ctx, delta: Tensor):
        x1, x2, z = ctx.saved_tensors
        slope1, slope2 = CosineSimilarity._slopes(ctx, x1, x2, z)
        delta = delta.unsqueeze(ctx.dim)
        grad_x1 = grad_x2 = None
        if ctx.needs_input_grad[0]:
            grad_x1 = _unbroadcast(delta * slope1, ctx.x1_shape)  # ∂z/∂x₁ = (v − z·x̂₁)/n₁
        if ctx.needs_input_grad[1]:
            grad_x2 = _unbroadcast(delta * slope2, ctx.x2_shape)  # ∂z/∂x₂ = (u − z·x̂₂)/n₂
        return grad_x1, grad_x2, None, None

    @staticmethod
    def jvp(ctx, tangent_x1, tangent_x2, *_):
        x1, x2, z = ctx.saved_tensors
        slope1, slope2 = CosineSimilarity._slopes(ctx, x1, x2, z)
        tangent_z = torch.zeros((), dtype=z.dtype, device=z.device)
        if tangent_x1 is not None:
            tangent_z = tangent_z + slope1 * tangent_x1  # ∂z/∂x₁ · ẋ₁
        if tangent_x2 is not None:
            tangent_z = tangent_z + slope2 * tangent_x2  # ∂z/∂x₂ · ẋ₂
        return tangent_z.sum(ctx.dim)  # Σ_d


# -- checks ----------------------------------------------------------------------------------------
def _check_tensor(name: str, what: str, x) -> None:
    if not isinstance(x, Tensor):
        raise LayerInputError(f"{name}: {what} must be a Tensor, got {type(x).__name__}")


def _check_operand(name: str, what: str, x) -> None:
    if not isinstance(x, Tensor | Number) or isinstance(x, complex):
        raise LayerInputError(f"{name}: {what} must be a Tensor or a real number, got {type(x).__name__}")


def _check_broadcast(name: str, **operands) -> None:
    shapes = {k: _shape_of(v) for k, v in operands.items()}
    try:
        torch.broadcast_shapes(*shapes.values())
    except RuntimeError:
        listed = ", ".join(f"{k} shape {s}" for k, s in shapes.items())
        raise LayerInputError(f"{name}: {listed} do not broadcast together") from None


def _binary(name: str, input, other) -> None:
    _check_tensor(name, "input", input)
    _check_operand(name, "other", other)
    _check_broadcast(name, input=input, other=other)


def _reduced_dims(name: str, input: Tensor, dim) -> tuple[int, ...]:
    """``dim`` (None, an int or a sequence; None or () for all) as sorted non-negative dims."""
    _check_tensor(name, "input", input)
    rank = input.dim()
    if dim is None or (isinstance(dim, tuple | list) and len(dim) == 0):
        return tuple(range(rank))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    bound = builtins.max(rank, 1)  # a scalar accepts dim 0 / -1, as torch does
    if any(not -bound <= d < bound for d in dims):
        raise LayerInputError(f"{name}: dim {dim} out of range for input shape {shape(input)} (rank {rank})")
    normal = tuple(sorted({d % bound for d in dims}))
    if len(normal) != len(dims):
        raise LayerInputError(f"{name}: dim {dim} names a dimension twice")
    return normal if rank else ()


def _one_dim(name: str, input: Tensor, dim) -> int:
    """``dim`` (one int) as a non-negative dim; a scalar accepts 0 and −1, as torch does."""
    _check_tensor(name, "input", input)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise LayerInputError(f"{name}: dim must be one int, got {dim!r}")
    bound = builtins.max(input.dim(), 1)
    if not -bound <= dim < bound:
        raise LayerInputError(f"{name}: dim {dim} out of range for input shape {shape(input)} (rank {input.dim()})")
    return dim % bound


def _correction(name: str, dim, unbiased: bool | None, correction: float | None) -> tuple:
    """torch's two forms of var/std: ``(dim, *, correction=1)`` and the older ``(dim, unbiased)`` or
    ``(unbiased)``; returns ``dim`` and the correction c (unbiased: c = 1, biased: c = 0)."""
    if isinstance(dim, bool):  # std(input, unbiased)
        if unbiased is not None:
            raise LayerInputError(f"{name}: got unbiased={dim} in the place of dim and unbiased={unbiased} too")
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise LayerInputError(f"{name}: pass unbiased={unbiased} or correction={correction}, not both")
    if unbiased is not None:
        return dim, 1 if unbiased else 0
    return dim, 1 if correction is None else correction


def _check_floating(name: str, what: str, x: Tensor) -> None:
    if not x.is_floating_point():
        raise LayerInputError(f"{name}: {what} dtype {x.dtype} is not floating point")


def _check_nonempty(name: str, input: Tensor, dims: tuple[int, ...], dim) -> None:
    if any(input.shape[d] == 0 for d in dims) or (input.dim() == 0 and input.numel() == 0):
        raise LayerInputError(f"{name}: cannot reduce an empty dimension (input shape {shape(input)}, dim {dim})")


def _sublist_equation(args: tuple) -> tuple[str, tuple]:
    """torch's other einsum form, ``einsum(A, [0, 1], B, [1, 2], [0, 2])``, as an equation: 0–25 are A–Z,
    26–51 a–z, ``...`` (Ellipsis) stays."""

    def letters(sublist) -> str:
        out = ""
        for n in sublist:
            if n is Ellipsis:
                out += "..."
            elif isinstance(n, int) and 0 <= n < len(LETTERS):
                out += LETTERS[n]
            else:
                raise LayerInputError(f"einsum: subscript {n!r} in sublist {sublist!r} is not within [0, 52)")
        return out

    operands, sublists = args[0::2], args[1::2]
    if len(args) % 2:  # an odd count: the last sublist is the output's
        operands, output = operands[:-1], "->" + letters(args[-1])
    else:
        output = ""
    return ",".join(letters(s) for s in sublists) + output, operands


def _explicit_equation(equation: str, operands: tuple[Tensor, ...]) -> str:
    """``equation`` checked against the operands and written out: one letter per dimension (each ``...``
    spelled in fresh letters, aligned from the right as broadcasting aligns), and the output made explicit
    where it was implied (the ``...`` dims, then the letters used once, in alphabetical order, as torch)."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise LayerInputError(f"einsum: equation {equation!r} has {len(terms)} operand term(s), got "
                              f"{len(operands)} operand(s)")
    for term in [*terms, out]:
        if any(c not in LETTERS for c in term.replace("...", "", 1)):
            raise LayerInputError(f"einsum: subscripts {term!r} in {equation!r} must be letters, with at most "
                                  "one '...'")
    widths = []  # how many dimensions each "..." stands for
    for term, x in zip(terms, operands):
        named = len(term.replace("...", ""))
        if named > x.dim() or ("..." not in term and named != x.dim()):
            raise LayerInputError(f"einsum: subscripts {term!r} do not fit operand shape {shape(x)}")
        widths.append(x.dim() - named)
    fresh = [c for c in LETTERS if c not in eq]
    width = builtins.max(widths, default=0)
    if width > len(fresh):
        raise LayerInputError(f"einsum: {equation!r} needs more than 52 letters once '...' is spelled out")
    ellipsis = "".join(fresh[:width])
    terms = [term.replace("...", ellipsis[width - w:]) for term, w in zip(terms, widths)]
    if arrow:
        out = out.replace("...", ellipsis)
    else:
        used = "".join(terms)
        out = ellipsis + "".join(sorted(c for c in set(used) if used.count(c) == 1 and c not in ellipsis))
    if len(set(out)) != len(out) or any(c not in "".join(terms) for c in out):
        raise LayerInputError(f"einsum: output subscripts of {equation!r} must be distinct letters of the operands")
    sizes: dict[str, int] = {}
    for term, x in zip(terms, operands):
        own: dict[str, int] = {}
        for c, n in zip(term, x.shape):
            if own.setdefault(c, n) != n:
                raise LayerInputError(f"einsum: index {c!r} repeats in {term!r} with sizes {own[c]} and {n} "
                                      f"(operand shape {shape(x)})")
            if n != 1 and sizes.setdefault(c, n) != n:
                raise LayerInputError(f"einsum: index {c!r} has size {sizes[c]} in one operand and {n} in another "
                                      f"(operand shapes {[shape(t) for t in operands]})")
    repeats = builtins.max((len(t) - len(set(t)) for t in terms), default=0)
    if repeats > len(fresh) - width:
        raise LayerInputError(f"einsum: {equation!r} leaves too few free letters for its backward")
    return ",".join(terms) + "->" + out


# -- public entries --------------------------------------------------------------------------------
def add(input: Tensor, other: Operand, *, alpha: Number = 1) -> Tensor:
    """Like ``torch.add``: z = input + α·other; ∂C/∂input = Σ δ, ∂C/∂other = Σ α·δ."""
    _binary("add", input, other)
    return Add.call(input, other, alpha)


def sub(input: Tensor, other: Operand, *, alpha: Number = 1) -> Tensor:
    """Like ``torch.sub``: z = input − α·other; ∂C/∂input = Σ δ, ∂C/∂other = −Σ α·δ."""
    _binary("sub", input, other)
    if isinstance(input, Tensor) and input.dtype == torch.bool:
        raise LayerInputError("sub: subtraction of bool tensors is not supported (use logical_xor)")
    return Add.call(input, other, -alpha)


def mul(input: Tensor, other: Operand) -> Tensor:
    """Like ``torch.mul``: z = input ⊙ other; ∂C/∂input = Σ δ ⊙ other, ∂C/∂other = Σ δ ⊙ input."""
    _binary("mul", input, other)
    return Mul.call(input, other)


def div(input: Tensor, other: Operand, *, rounding_mode: str | None = None) -> Tensor:
    """Like ``torch.div`` (true division only): ∂C/∂input = Σ δ/other, ∂C/∂other = −Σ δ ⊙ z/other."""
    if rounding_mode is not None:
        raise LayerInputError(
            f"div: rounding_mode={rounding_mode!r} gives a step function with no useful derivative; only "
            "rounding_mode=None (true division) is supported"
        )
    _binary("div", input, other)
    return Div.call(input, other)


def pow(input: Operand, exponent: Operand) -> Tensor:
    """Like ``torch.pow``: z = input^exponent; ∂/∂input = e·b^(e−1), ∂/∂exponent = b^e·log b."""
    if not isinstance(input, Tensor) and not isinstance(exponent, Tensor):
        raise LayerInputError("pow: input or exponent must be a Tensor, got two numbers")
    _check_operand("pow", "input", input)
    _check_operand("pow", "exponent", exponent)
    _check_broadcast("pow", input=input, exponent=exponent)
    return Pow.call(input, exponent)


def where(condition: Tensor, input: Operand, other: Operand) -> Tensor:
    """Like ``torch.where(condition, input, other)``: δ goes to input where condition holds, to other elsewhere."""
    _check_tensor("where", "condition", condition)
    if condition.dtype != torch.bool:
        raise LayerInputError(f"where: condition must be a bool tensor, got dtype {condition.dtype}")
    _check_operand("where", "input", input)
    _check_operand("where", "other", other)
    _check_broadcast("where", condition=condition, input=input, other=other)
    return Where.call(condition, input, other)


def exp(input: Tensor) -> Tensor:
    """Like ``torch.exp``; δ = ∂C/∂a ⊙ a."""
    _check_tensor("exp", "input", input)
    return Exp.call(input)


def log(input: Tensor) -> Tensor:
    """Like ``torch.log``; δ = ∂C/∂a / z."""
    _check_tensor("log", "input", input)
    return Log.call(input)


def sqrt(input: Tensor) -> Tensor:
    """Like ``torch.sqrt``; δ = ∂C/∂a / (2a)."""
    _check_tensor("sqrt", "input", input)
    return Sqrt.call(input)


def abs(input: Tensor) -> Tensor:
    """Like ``torch.abs``; δ = ∂C/∂a ⊙ sign(z) (0 at z = 0)."""
    _check_tensor("abs", "input", input)
    return Abs.call(input)


def neg(input: Tensor) -> Tensor:
    """Like ``torch.neg``; δ = −∂C/∂a."""
    _check_tensor("neg", "input", input)
    if input.dtype == torch.bool:
        raise LayerInputError("neg: negation of a bool tensor is not supported (use logical_not)")
    return Neg.call(input)


def reciprocal(input: Tensor) -> Tensor:
    """Like ``torch.reciprocal``; δ = −∂C/∂a ⊙ a²."""
    _check_tensor("reciprocal", "input", input)
    return Reciprocal.call(input)


def clamp(input: Tensor, min: Operand | None = None, max: Operand | None = None) -> Tensor:
    """Like ``torch.clamp`` (number or tensor bounds); δ = ∂C/∂a ⊙ [min ≤ z ≤ max], and a tensor bound gets δ
    where it binds."""
    _check_tensor("clamp", "input", input)
    if min is None and max is None:
        raise LayerInputError("clamp: at least one of min and max must not be None")
    for what, bound in (("min", min), ("max", max)):
        if bound is not None and not isinstance(bound, Tensor | Number):
            raise LayerInputError(f"clamp: {what} must be a number, a Tensor or None, got {type(bound).__name__}")
    tensors = [b for b in (min, max) if isinstance(b, Tensor)]
    if tensors and len(tensors) != len([b for b in (min, max) if b is not None]):
        raise LayerInputError(f"clamp: min ({type(min).__name__}) and max ({type(max).__name__}) must both be "
                              "Tensors or both numbers, as torch")
    if tensors:
        _check_broadcast("clamp", input=input, min=min, max=max)
        return ClampByTensors.call(input, min, max)
    return Clamp.call(input, min, max)


def clamp_min(input: Tensor, min: Operand) -> Tensor:
    """Like ``torch.clamp_min``: a = max(z, min); δ = ∂C/∂a ⊙ [z ≥ min] (a tensor min gets δ where z < min)."""
    if min is None:
        raise LayerInputError("clamp_min: min must be a number or a Tensor, got None")
    return clamp(input, min, None)


def clamp_max(input: Tensor, max: Operand) -> Tensor:
    """Like ``torch.clamp_max``: a = min(z, max); δ = ∂C/∂a ⊙ [z ≤ max] (a tensor max gets δ where z > max)."""
    if max is None:
        raise LayerInputError("clamp_max: max must be a number or a Tensor, got None")
    return clamp(input, None, max)


def rsqrt(input: Tensor) -> Tensor:
    """Like ``torch.rsqrt``: a = 1/√z; δ = −∂C/∂a ⊙ a³/2."""
    _check_tensor("rsqrt", "input", input)
    return Rsqrt.call(input)


def square(input: Tensor) -> Tensor:
    """Like ``torch.square``: a = z²; δ = ∂C/∂a ⊙ 2z."""
    _check_tensor("square", "input", input)
    return Square.call(input)


def sin(input: Tensor) -> Tensor:
    """Like ``torch.sin``; δ = ∂C/∂a ⊙ cos z."""
    _check_tensor("sin", "input", input)
    return Sin.call(input)


def cos(input: Tensor) -> Tensor:
    """Like ``torch.cos``; δ = −∂C/∂a ⊙ sin z."""
    _check_tensor("cos", "input", input)
    return Cos.call(input)


def log1p(input: Tensor) -> Tensor:
    """Like ``torch.log1p``: a = log(1 + z); δ = ∂C/∂a / (1 + z)."""
    _check_tensor("log1p", "input", input)
    return Log1p.call(input)


def expm1(input: Tensor) -> Tensor:
    """Like ``torch.expm1``: a = eᶻ − 1; δ = ∂C/∂a ⊙ (a + 1)."""
    _check_tensor("expm1", "input", input)
    return Expm1.call(input)


def log2(input: Tensor) -> Tensor:
    """Like ``torch.log2``; δ = ∂C/∂a / (z·ln 2)."""
    _check_tensor("log2", "input", input)
    return Log2.call(input)


def sign(input: Tensor) -> Tensor:
    """Like ``torch.sign``; δ = 0 (a step function), from a hand-written node all the same."""
    _check_tensor("sign", "input", input)
    return Sign.call(input)


def erf(input: Tensor) -> Tensor:
    """Like ``torch.erf``; δ = ∂C/∂a ⊙ (2/√π)·e^(−z²)."""
    _check_tensor("erf", "input", input)
    return Erf.call(input)


def sum(input: Tensor, dim=None, keepdim: bool = False, *, dtype: torch.dtype | None = None) -> Tensor:
    """Like ``torch.sum``; ∂C/∂input = δ copied to every summed entry."""
    return Sum.call(input, _reduced_dims("sum", input, dim), keepdim, dtype)


def mean(input: Tensor, dim=None, keepdim: bool = False, *, dtype: torch.dtype | None = None) -> Tensor:
    """Like ``torch.mean``; ∂C/∂input = δ / N for each of the N averaged entries."""
    dims = _reduced_dims("mean", input, dim)
    if not (input.is_floating_point() or input.is_complex()) and dtype is None:
        raise LayerInputError(f"mean: input dtype {input.dtype} is not floating point; pass dtype=")
    return Mean.call(input, dims, keepdim, dtype)


def var(input: Tensor, dim=None, unbiased: bool | None = None, keepdim: bool = False, *,
        correction: float | None = None) -> Tensor:
    """Like ``torch.var`` (also its ``unbiased`` form; correction 1 unless told); ∂C/∂input = δ ⊙ 2(x − μ)/(N − c)."""
    dim, correction = _correction("var", dim, unbiased, correction)
    dims = _reduced_dims("var", input, dim)
    _check_floating("var", "input", input)
    return Var.call(input, dims, correction, keepdim)


def std(input: Tensor, dim=None, unbiased: bool | None = None, keepdim: bool = False, *,
        correction: float | None = None) -> Tensor:
    """Like ``torch.std`` (also its ``unbiased`` form; correction 1 unless told);
    ∂C/∂input = δ ⊙ (x − μ)/((N − c)·z)."""
    dim, correction = _correction("std", dim, unbiased, correction)
    dims = _reduced_dims("std", input, dim)
    _check_floating("std", "input", input)
    return Std.call(input, dims, correction, keepdim)


def _extremum(name: str, input: Tensor, dim, keepdim: bool, largest: bool) -> Tensor:
    dims = _reduced_dims(name, input, dim)
    _check_nonempty(name, input, dims, dim)
    return Extremum.call(input, dims, keepdim, largest, False)


def amax(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Like ``torch.amax``; δ goes to the maxima, split evenly among ties."""
    return _extremum("amax", input, dim, keepdim, True)


def amin(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Like ``torch.amin``; δ goes to the minima, split evenly among ties."""
    return _extremum("amin", input, dim, keepdim, False)


def _pair_extremum(name: str, input: Tensor, other: Tensor, largest: bool) -> Tensor:
    _check_tensor(name, "input", input)
    _check_tensor(name, "other", other)
    _check_broadcast(name, input=input, other=other)
    return PairExtremum.call(input, other, largest)


def maximum(input: Tensor, other: Tensor) -> Tensor:
    """Like ``torch.maximum``; δ goes to the larger of the two, half to each on a tie (as torch)."""
    return _pair_extremum("maximum", input, other, True)


def minimum(input: Tensor, other: Tensor) -> Tensor:
    """Like ``torch.minimum``; δ goes to the smaller of the two, half to each on a tie (as torch)."""
    return _pair_extremum("minimum", input, other, False)


def _max_or_min(name: str, input: Tensor, dim, keepdim: bool, other: Tensor | None, largest: bool):
    """torch's three forms: ``max(input)``, ``max(input, dim, keepdim=False)`` and ``max(input, other)``."""
    _check_tensor(name, "input", input)
    if isinstance(dim, Tensor):  # max(input, other), other in the place of dim
        if other is not None:
            raise LayerInputError(f"{name}: got a Tensor in the place of dim and other= too")
        dim, other = None, dim
    if other is not None:
        if dim is not None or keepdim:
            raise LayerInputError(f"{name}: the form {name}(input, other) takes no dim or keepdim")
        return _pair_extremum(name, input, other, largest)
    if dim is None:
        if keepdim:
            raise LayerInputError(f"{name}: keepdim=True needs a dim")
        if input.numel() == 0:
            raise LayerInputError(f"{name}: input shape {shape(input)} is empty; specify a dim")
        return Extremum.call(input, tuple(range(input.dim())), False, largest, True)
    d = _one_dim(name, input, dim)
    if input.dim() > 0 and input.shape[d] == 0:
        raise LayerInputError(f"{name}: cannot reduce dim {dim} of size 0 (input shape {shape(input)})")
    values, indices = ExtremumAlongDim.call(input, d, keepdim, largest)
    return (torch.return_types.max if largest else torch.return_types.min)((values, indices))


def max(input: Tensor, dim: int | Tensor | None = None, keepdim: bool = False, *, other: Tensor | None = None):
    """Like ``torch.max`` / ``Tensor.max`` in all three forms: ``max(input)`` (δ split evenly among the tied
    maxima), ``max(input, dim, keepdim=False)`` → ``(values, indices)`` (δ to the returned index only) and
    ``max(input, other)`` (:func:`maximum`)."""
    return _max_or_min("max", input, dim, keepdim, other, True)


def min(input: Tensor, dim: int | Tensor | None = None, keepdim: bool = False, *, other: Tensor | None = None):
    """Like ``torch.min`` / ``Tensor.min`` in all three forms: ``min(input)`` (δ split evenly among the tied
    minima), ``min(input, dim, keepdim=False)`` → ``(values, indices)`` (δ to the returned index only) and
    ``min(input, other)`` (:func:`minimum`)."""
    return _max_or_min("min", input, dim, keepdim, other, False)


def logsumexp(input: Tensor, dim, keepdim: bool = False) -> Tensor:
    """Like ``torch.logsumexp``; ∂C/∂input = δ ⊙ e^(input − z), the softmax over dim."""
    _check_tensor("logsumexp", "input", input)
    if dim is None or (isinstance(dim, tuple | list) and len(dim) == 0 and input.dim() > 0):
        raise LayerInputError(f"logsumexp: dim must name the dimension(s) to reduce, got {dim!r}")
    return LogSumExp.call(input, _reduced_dims("logsumexp", input, dim), keepdim)


def prod(input: Tensor, dim: int | None = None, keepdim: bool = False, *, dtype: torch.dtype | None = None) -> Tensor:
    """Like ``torch.prod`` (all entries, or along one dim); ∂C/∂x_i = δ ⊙ Π_{j≠i} x_j (no division, so zeros
    are exact, as torch)."""
    if dim is None:
        _check_tensor("prod", "input", input)
        if keepdim:
            raise LayerInputError("prod: keepdim=True needs a dim")
        return Prod.call(input, None, False, dtype)
    return Prod.call(input, _one_dim("prod", input, dim), keepdim, dtype)


def cumsum(input: Tensor, dim: int, *, dtype: torch.dtype | None = None) -> Tensor:
    """Like ``torch.cumsum``; ∂C/∂x_i = Σ_{j ≥ i} δ_j, the cumulative sum of δ run backwards."""
    return Cumsum.call(input, _one_dim("cumsum", input, dim), dtype)


def _vector_norm(name: str, x: Tensor, ord, dim, keepdim: bool, dtype: torch.dtype | None) -> Tensor:
    _check_tensor(name, "input", x)
    if isinstance(ord, bool) or not isinstance(ord, int | float):
        raise LayerInputError(f"{name}: ord must be a real number (inf allowed), got {ord!r}")
    _check_floating(name, "input", x)
    if dtype is not None and torch.promote_types(x.dtype, dtype) != dtype:
        raise LayerInputError(f"{name}: input dtype {x.dtype} does not widen to dtype={dtype}")
    dims = _reduced_dims(name, x, dim)
    if ord < 0 or math.isinf(ord):
        _check_nonempty(name, x, dims, dim)
    return VectorNorm.call(x, ord, dims, keepdim, dtype)


def vector_norm(x: Tensor, ord: float = 2, dim=None, keepdim: bool = False, *,
                dtype: torch.dtype | None = None) -> Tensor:
    """Like ``torch.linalg.vector_norm``: z = (Σ |x|^p)^(1/p); ∂C/∂x = δ ⊙ sign(x)·|x|^(p−1)/z^(p−1) (x/z for
    p = 2, 0 where z = 0, as torch)."""
    return _vector_norm("vector_norm", x, ord, dim, keepdim, dtype)


def norm(input: Tensor, p: float | str | None = "fro", dim=None, keepdim: bool = False, out: Tensor | None = None,
         dtype: torch.dtype | None = None) -> Tensor:
    """Like ``torch.norm`` / ``Tensor.norm`` for vector norms (p a number, or 'fro' over at most two dims, which
    is the 2-norm of the entries); the backward of :func:`vector_norm`."""
    if isinstance(out, torch.dtype) and dtype is None:  # Tensor.norm(p, dim, keepdim, dtype): dtype comes fourth
        out, dtype = None, out
    if out is not None:
        raise LayerInputError("norm: out= writes in place and is not supported; use the returned tensor")
    if isinstance(p, str):
        if p != "fro" or not (dim is None or isinstance(dim, int) or len(dim) <= 2):
            raise LayerInputError(f"norm: p={p!r} over dim={dim!r} is a matrix norm; only vector norms (p a "
                                  "number, or 'fro') are supported")
        p = 2
    return _vector_norm("norm", input, 2 if p is None else p, dim, keepdim, dtype)


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Tensor | None = None) -> Tensor:
    """Like ``torch.nn.functional.normalize``: input / max(‖input‖_p, eps) along dim, from :class:`VectorNorm`,
    :class:`Clamp` and :class:`Div` (the chain rule through the three)."""
    if out is not None:
        raise LayerInputError("normalize: out= writes in place and is not supported; use the returned tensor")
    length = _vector_norm("normalize", input, p, dim, True, None)  # ‖x‖_p along dim
    return Div.call(input, Clamp.call(length, eps, None))  # x / max(‖x‖_p, eps)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Like ``torch.nn.functional.cosine_similarity``: Σ_d x₁/max(‖x₁‖, ε) ⊙ x₂/max(‖x₂‖, ε); ∂C/∂x₁ =
    δ ⊙ (v − z·x₁/‖x₁‖)/max(‖x₁‖, ε) with v the normalized x₂, and the same for x₂."""
    _check_tensor("cosine_similarity", "x1", x1)
    _check_tensor("cosine_similarity", "x2", x2)
    _check_broadcast("cosine_similarity", x1=x1, x2=x2)
    rank = len(torch.broadcast_shapes(x1.shape, x2.shape))
    if isinstance(dim, bool) or not isinstance(dim, int) or not -rank <= dim < rank:
        raise LayerInputError(f"cosine_similarity: dim {dim!r} out of range for x1 shape {shape(x1)} and x2 shape "
                              f"{shape(x2)} (broadcast rank {rank})")
    if not torch.result_type(x1, x2).is_floating_point:
        raise LayerInputError(f"cosine_similarity: x1 dtype {x1.dtype} and x2 dtype {x2.dtype} have no floating "
                              "point type in common")
    return CosineSimilarity.call(x1, x2, dim % rank, eps)


def _addc(name: str, input: Tensor, tensor1: Tensor, tensor2: Tensor, value: Number, divide: bool) -> Tensor:
    for what, t in (("input", input), ("tensor1", tensor1), ("tensor2", tensor2)):
        _check_tensor(name, what, t)
    _check_operand(name, "value", value)
    _check_broadcast(name, input=input, tensor1=tensor1, tensor2=tensor2)
    if divide and not (tensor1.is_floating_point() or tensor2.is_floating_point()):
        raise LayerInputError(f"{name}: integer division (tensor1 dtype {tensor1.dtype}, tensor2 dtype "
                              f"{tensor2.dtype}) is not supported, as torch")
    return Addc.call(input, tensor1, tensor2, value, divide)


def addcmul(input: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Number = 1) -> Tensor:
    """Like ``torch.addcmul``: z = input + v·t₁·t₂; ∂C/∂t₁ = Σ v·δ ⊙ t₂, ∂C/∂t₂ = Σ v·δ ⊙ t₁, ∂C/∂input = Σ δ."""
    return _addc("addcmul", input, tensor1, tensor2, value, False)


def addcdiv(input: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Number = 1) -> Tensor:
    """Like ``torch.addcdiv``: z = input + v·t₁/t₂; ∂C/∂t₁ = Σ v·δ/t₂, ∂C/∂t₂ = −Σ v·δ ⊙ t₁/t₂², ∂C/∂input = Σ δ."""
    return _addc("addcdiv", input, tensor1, tensor2, value, True)


def _check_same_dtype(name: str, **tensors: Tensor) -> None:
    if len({t.dtype for t in tensors.values()}) > 1:
        listed = ", ".join(f"{k} {t.dtype}" for k, t in tensors.items())
        raise LayerInputError(f"{name}: operands must have the same dtype, got {listed}")


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Like ``torch.matmul``; ∂C/∂input = Σ δ · otherᵀ, ∂C/∂other = Σ inputᵀ · δ."""
    _check_tensor("matmul", "input", input)
    _check_tensor("matmul", "other", other)
    if input.dim() == 0 or other.dim() == 0:
        raise LayerInputError(f"matmul: both arguments need at least 1 dimension, got shapes {shape(input)} "
                              f"and {shape(other)}")
    _check_same_dtype("matmul", input=input, other=other)
    m_in = input.shape[-1]
    m_other = other.shape[-2] if other.dim() > 1 else other.shape[0]
    if m_in != m_other:
        raise LayerInputError(f"matmul: input shape {shape(input)} and other shape {shape(other)} cannot be "
                              f"multiplied ({m_in} vs {m_other})")
    try:
        torch.broadcast_shapes(input.shape[:-2], other.shape[:-2])
    except RuntimeError:
        raise LayerInputError(f"matmul: batch dimensions of input shape {shape(input)} and other shape "
                              f"{shape(other)} do not broadcast") from None
    return Matmul.call(input, other)


def mm(input: Tensor, mat2: Tensor) -> Tensor:
    """Like ``torch.mm`` (2-D only); the backward of :class:`Matmul`."""
    _check_tensor("mm", "input", input)
    _check_tensor("mm", "mat2", mat2)
    if input.dim() != 2 or mat2.dim() != 2 or input.shape[1] != mat2.shape[0]:
        raise LayerInputError(f"mm: expected (n, m) and (m, p) matrices, got shapes {shape(input)} and {shape(mat2)}")
    _check_same_dtype("mm", input=input, mat2=mat2)
    return Matmul.call(input, mat2)


def bmm(input: Tensor, mat2: Tensor) -> Tensor:
    """Like ``torch.bmm`` (3-D, same batch); the backward of :class:`Matmul`."""
    _check_tensor("bmm", "input", input)
    _check_tensor("bmm", "mat2", mat2)
    if (input.dim() != 3 or mat2.dim() != 3 or input.shape[0] != mat2.shape[0]
            or input.shape[2] != mat2.shape[1]):
        raise LayerInputError(
            f"bmm: expected (b, n, m) and (b, m, p) batches, got shapes {shape(input)} and {shape(mat2)}"
        )
    _check_same_dtype("bmm", input=input, mat2=mat2)
    return Matmul.call(input, mat2)


def addmm(input: Tensor, mat1: Tensor, mat2: Tensor, *, beta: Number = 1, alpha: Number = 1) -> Tensor:
    """Like ``torch.addmm``: z = β·input + α·mat1·mat2; ∂C/∂mat1 = α·δ·mat2ᵀ, ∂C/∂mat2 = α·mat1ᵀ·δ."""
    for what, t in (("input", input), ("mat1", mat1), ("mat2", mat2)):
        _check_tensor("addmm", what, t)
    if mat1.dim() != 2 or mat2.dim() != 2 or mat1.shape[1] != mat2.shape[0]:
        raise LayerInputError(
            f"addmm: expected (n, m) and (m, p) matrices, got mat1 shape {shape(mat1)} and mat2 shape {shape(mat2)}"
        )
    _check_same_dtype("addmm", input=input, mat1=mat1, mat2=mat2)
    out_shape = (mat1.shape[0], mat2.shape[1])
    try:
        fits = torch.broadcast_shapes(input.shape, out_shape) == out_shape
    except RuntimeError:
        fits = False
    if not fits:
        raise LayerInputError(f"addmm: input shape {shape(input)} does not broadcast to the product shape {out_shape}")
    return Addmm.call(input, mat1, mat2, beta, alpha)


def baddbmm(input: Tensor, batch1: Tensor, batch2: Tensor, *, beta: Number = 1, alpha: Number = 1) -> Tensor:
    """Like ``torch.baddbmm``: z = β·input + α·batch1·batch2 per batch; ∂C/∂batch1 = α·δ·batch2ᵀ,
    ∂C/∂batch2 = α·batch1ᵀ·δ, ∂C/∂input = Σ β·δ."""
    for what, t in (("input", input), ("batch1", batch1), ("batch2", batch2)):
        _check_tensor("baddbmm", what, t)
    if (batch1.dim() != 3 or batch2.dim() != 3 or batch1.shape[0] != batch2.shape[0]
            or batch1.shape[2] != batch2.shape[1]):
        raise LayerInputError(f"baddbmm: expected (b, n, m) and (b, m, p) batches, got batch1 shape {shape(batch1)} "
                              f"and batch2 shape {shape(batch2)}")
    _check_same_dtype("baddbmm", input=input, batch1=batch1, batch2=batch2)
    out_shape = (batch1.shape[0], batch1.shape[1], batch2.shape[2])
    try:
        fits = torch.broadcast_shapes(input.shape, out_shape) == out_shape
    except RuntimeError:
        fits = False
    if not fits:
        raise LayerInputError(f"baddbmm: input shape {shape(input)} does not broadcast to the product shape "
                              f"{out_shape}")
    return Baddbmm.call(input, batch1, batch2, beta, alpha)


def einsum(*args) -> Tensor:
    """Like ``torch.einsum(equation, *operands)`` (also with one list of operands, and the sublist form);
    ∂C/∂A = einsum of δ with the other operands, out to A's subscripts (see :class:`Einsum`)."""
    if not args:
        raise LayerInputError("einsum: expected an equation and operands, got nothing")
    if isinstance(args[0], Tensor):
        equation, operands = _sublist_equation(args)
    else:
        equation, operands = args[0], args[1:]
    if len(operands) == 1 and isinstance(operands[0], list | tuple):
        operands = tuple(operands[0])
    if not isinstance(equation, str):
        raise LayerInputError(f"einsum: equation must be a str, got {type(equation).__name__}")
    for k, x in enumerate(operands):
        _check_tensor("einsum", f"operand {k}", x)
    if not operands:
        raise LayerInputError(f"einsum: equation {equation!r} got no operands")
    _check_same_dtype("einsum", **{f"operand {k}": x for k, x in enumerate(operands)})
    return Einsum.call(_explicit_equation(equation, operands), *operands)
