"""The arithmetic a model's own forward uses (x + y, x * w, x.sum(), a @ b, ...), with the chain rule
of each operation written out by hand.

Index letters: n, p, m for a matrix product z_np = Σ_m a_nm · b_mp (b… for batch dimensions in front).

Broadcasting: an operand smaller than the output was (virtually) copied along the broadcast
dimensions, and each copy sent its own gradient back, so the gradient of that operand is the output's
gradient summed over those dimensions (:func:`_unbroadcast`). Python numbers as operands are constants:
they get no gradient.

Several names here (``sum``, ``abs``, ``pow``) are also Python builtins; this module does not use the
builtins.
"""

from __future__ import annotations

import math
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
        ctx.numbers = inputs  # the Python numbers among them; the tensors are saved below
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
        ctx.numbers = inputs
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
        ctx.numbers = inputs
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


class Extremum(ManualFunction):
    """z = max (``amax``) or min (``amin``) of x over the reduced dims.

    ∂C/∂x = δ ⊙ [x = z] / #{x = z}: the gradient goes to the entries that hold the extremum, split
    evenly among ties (as torch does).
    """

    @staticmethod
    def forward(x: Tensor, dims: tuple[int, ...], keepdim: bool, largest: bool) -> Tensor:
        return (torch.amax if largest else torch.amin)(x, dim=dims, keepdim=keepdim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dims, ctx.keepdim, _ = inputs
        ctx.save_for_backward(x, output)
        ctx.save_for_forward(x, output)

    @staticmethod
    def _winners(ctx, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        won = (x == _restore_reduced(z, ctx.dims, ctx.keepdim)).to(x.dtype)  # [x = z]
        return won, won.sum(dim=ctx.dims, keepdim=True)  # and how many tie for it

    @staticmethod
    def backward(ctx, delta: Tensor):
        x, z = ctx.saved_tensors
        won, ties = Extremum._winners(ctx, x, z)
        grad_x = _restore_reduced(delta, ctx.dims, ctx.keepdim) / ties * won  # ∂z/∂x = [x = z] / #ties
        return grad_x, None, None, None

    @staticmethod
    def jvp(ctx, tangent_x, *_):
        x, z = ctx.saved_tensors
        won, ties = Extremum._winners(ctx, x, z)
        tangent_z = (tangent_x * won).sum(dim=ctx.dims, keepdim=True) / ties  # mean ẋ of the tied winners
        return tangent_z if ctx.keepdim else tangent_z.squeeze(ctx.dims)


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


class Addmm(ManualFunction):
    """z = β·c + α·(a · b)  with a (n, m), b (m, p), c broadcastable to (n, p).

    ∂C/∂c = Σ_broadcast β·δ      ∂C/∂a = α·δ · bᵀ      ∂C/∂b = α·aᵀ · δ
    """

    @staticmethod
    def forward(c: Tensor, a: Tensor, b: Tensor, beta: Number, alpha: Number) -> Tensor:
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)

    @staticmethod
    def setup_context(ctx, inputs, output):
        c, a, b, ctx.beta, ctx.alpha = inputs
        ctx.save_for_backward(a, b)
        ctx.save_for_forward(a, b)
        ctx.c_shape, ctx.out_shape, ctx.out_dtype = c.shape, output.shape, output.dtype

    @staticmethod
    def backward(ctx, delta: Tensor):
        a, b = ctx.saved_tensors
        grad_c = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_c = _unbroadcast(delta * ctx.beta, ctx.c_shape)  # ∂z/∂c = β
        if ctx.needs_input_grad[1]:
            grad_a = ctx.alpha * (delta @ b.T)  # ∂C/∂a = α·δ · bᵀ
        if ctx.needs_input_grad[2]:
            grad_b = ctx.alpha * (a.T @ delta)  # ∂C/∂b = α·aᵀ · δ
        return grad_c, grad_a, grad_b, None, None

    @staticmethod
    def jvp(ctx, tangent_c, tangent_a, tangent_b, *_):
        a, b = ctx.saved_tensors
        tangent_z = torch.zeros(ctx.out_shape, dtype=ctx.out_dtype, device=a.device)
        if tangent_c is not None:
            tangent_z = tangent_z + ctx.beta * tangent_c  # ∂z/∂c · ċ
        if tangent_a is not None:
            tangent_z = tangent_z + ctx.alpha * (tangent_a @ b)  # ∂z/∂a · ȧ
        if tangent_b is not None:
            tangent_z = tangent_z + ctx.alpha * (a @ tangent_b)  # ∂z/∂b · ḃ
        return tangent_z


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
    bound = max(rank, 1)  # a scalar accepts dim 0 / -1, as torch does
    if any(not -bound <= d < bound for d in dims):
        raise LayerInputError(f"{name}: dim {dim} out of range for input shape {shape(input)} (rank {rank})")
    normal = tuple(sorted({d % bound for d in dims}))
    if len(normal) != len(dims):
        raise LayerInputError(f"{name}: dim {dim} names a dimension twice")
    return normal if rank else ()


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


def clamp(input: Tensor, min: Number | None = None, max: Number | None = None) -> Tensor:
    """Like ``torch.clamp`` with number bounds; δ = ∂C/∂a ⊙ [min ≤ z ≤ max]."""
    _check_tensor("clamp", "input", input)
    if min is None and max is None:
        raise LayerInputError("clamp: at least one of min and max must not be None")
    for what, bound in (("min", min), ("max", max)):
        if isinstance(bound, Tensor):
            raise LayerInputError(f"clamp: {what} as a Tensor (shape {shape(bound)}) is not supported; pass a number")
        if bound is not None and not isinstance(bound, Number):
            raise LayerInputError(f"clamp: {what} must be a number or None, got {type(bound).__name__}")
    return Clamp.call(input, min, max)


def sum(input: Tensor, dim=None, keepdim: bool = False, *, dtype: torch.dtype | None = None) -> Tensor:
    """Like ``torch.sum``; ∂C/∂input = δ copied to every summed entry."""
    return Sum.call(input, _reduced_dims("sum", input, dim), keepdim, dtype)


def mean(input: Tensor, dim=None, keepdim: bool = False, *, dtype: torch.dtype | None = None) -> Tensor:
    """Like ``torch.mean``; ∂C/∂input = δ / N for each of the N averaged entries."""
    dims = _reduced_dims("mean", input, dim)
    if not (input.is_floating_point() or input.is_complex()) and dtype is None:
        raise LayerInputError(f"mean: input dtype {input.dtype} is not floating point; pass dtype=")
    return Mean.call(input, dims, keepdim, dtype)


def var(input: Tensor, dim=None, *, correction: float = 1, keepdim: bool = False) -> Tensor:
    """Like ``torch.var``; ∂C/∂input = δ ⊙ 2(x − μ)/(N − correction)."""
    dims = _reduced_dims("var", input, dim)
    if not input.is_floating_point():
        raise LayerInputError(f"var: input dtype {input.dtype} is not floating point")
    return Var.call(input, dims, correction, keepdim)


def _extremum(name: str, input: Tensor, dim, keepdim: bool, largest: bool) -> Tensor:
    dims = _reduced_dims(name, input, dim)
    if any(input.shape[d] == 0 for d in dims) or (input.dim() == 0 and input.numel() == 0):
        raise LayerInputError(f"{name}: cannot reduce an empty dimension (input shape {shape(input)}, dim {dim})")
    return Extremum.call(input, dims, keepdim, largest)


def amax(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Like ``torch.amax``; δ goes to the maxima, split evenly among ties."""
    return _extremum("amax", input, dim, keepdim, True)


def amin(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Like ``torch.amin``; δ goes to the minima, split evenly among ties."""
    return _extremum("amin", input, dim, keepdim, False)


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
