"""Operations that only move numbers (view, transpose, indexing, cat, split, casts, in-place writes),
each a hand-written Function, so that a model's backward graph holds manual_backprop nodes only.

No calculus happens here: every output number is one input number, put somewhere else. So every
backward is "δ goes back to the place its number came from": laid out back (reshape, permute),
summed where one input number went to several places (expand, repeat, an index that reads an entry
twice), zero where an input number went nowhere (a slice, the entries a write overwrote).

Notation: z is the input, a the output, δ = ∂C/∂a the gradient arriving from above.

**Views or copies? (decided by experiment; measured).** Torch returns a *view* from view, reshape (when
it can), transpose, permute, expand, squeeze, a basic index ``x[:, -1]``, select, narrow, split, ...:
the output shares the input's memory. A custom Function may return a view too, but torch then refuses
any in-place write to that output, and any use of it after its input was written in place::

    y = ViewFunction.apply(h); y.relu_()   # RuntimeError: Output 0 of ... is a view and is being
                                           # modified inplace. This view was created inside a custom
                                           # Function ... This behavior is forbidden.

``x = x.view(b, -1); x += r`` and ``ReLU(inplace=True)`` after a reshape are ordinary model code, so
views would break converted models. Hence the rule here:

- **Nothing records a gradient** (grad mode off, or no input requires grad, and no forward-mode or
  ``torch.func`` transform is active): torch's own operation runs and its own result comes back,
  views included. No graph node is built in this case anyway, and code that writes through views
  (``w.view(-1).uniform_()`` under ``no_grad``) keeps working.
- **A gradient is recorded**: the output is a *copy* (``clone``, torch's strides kept for dense
  layouts) with a manual node. Where torch returns the input itself (``contiguous()`` of a contiguous
  tensor, ``to()`` that changes nothing) that is returned, with no node.
- **Writes through a view reach its base.** A copy that stands for a view remembers (weakly) the
  tensor it views and how; :func:`copy_` and :func:`setitem` (where the router sends every in-place
  operation: ``y.relu_()``, ``y += 1``, ``y[0] = v``) write the new values back into that base with
  the manual :func:`setitem` / :func:`copy_`, up a chain of views (``x[0][1:3].zero_()``), rebuilding
  a view in the chain whose tensor is gone. So ``x[:, 0].mul_(2)`` changes ``x`` with a correct
  gradient, as in torch. The pieces of split, chunk and unbind need no such link: torch refuses
  in-place writes to them while a gradient is recorded. What a copy cannot do: show a later in-place
  write to its base (``y = x.view(-1); x.add_(1)``: ``y`` keeps the old numbers, where torch's view
  would show the new ones and a view made by a Function would raise), and see writes made by torch's
  own in-place ops outside the router (say under ``no_grad``). And a write into torch's own view of a
  tensor that records no gradient (``buf[:, t].copy_(h)``, ``buf[:, t]`` made without a gradient)
  gets torch's CopySlices node on ``buf`` around the manual one: write ``buf[:, t] = h`` instead.
- **In-place writes under torch.func** run as torch's own ``copy_`` / ``setitem`` (a Function that
  marks its input dirty cannot be batched), as the in-place activations do; so do they under
  torch.compile before torch 2.13, whose dynamo loses the gradient of such a Function.
- **Under torch.compile** the copies carry no link to their base (dynamo cannot trace the write back
  through chained in-place Functions), so a write through a view (``x.transpose(0, 1)[0] = v``)
  changes the copy only, unlike eager: write into the base itself (``x[:, 0] = v``).
- **Exception: expand.** An expanded output (more elements than its input) is returned as torch's view:
  it can never be written in place (torch forbids writes to memory that several elements share),
  and copying it could cost far more memory than the input (``mask.expand(b, h, t, t)``).

Measured, a float32 tensor of 64×512×768 requiring grad, ms per call (torch's view: ~0.004)::

                                         CPU (2 shared cores)    H100
    view(b·t, c), manual (a copy)             ~100                0.09
    transpose(1, 2), manual                    ~95                0.07
    x + 1, for scale                           ~90                0.07
    attention-like block, forward + backward,
      torch's views → manual copies        3700 → 3720        5.4 → 6.3

A copy is one pass over the memory, as an elementwise op; in a block with matrix products it costs
little on the CPU and ~15 % on the GPU (the copies, and ~0.1 ms of Python per Function call). It is
the price of in-place writes that torch allows and a graph with no native node, paid only while a
gradient is recorded.

Backward of an index: a basic index (ints, slices, None, ...) reads each entry at most once, so δ is
written into zeros at the window the index selects. An advanced index (tensors, lists, masks) may read
an entry several times: torch's own parsing is mirrored (:func:`_split_index`) to get the view part
and the list of index tensors, and δ is added back with ``index_put(..., accumulate=True)``, saving
only the index tensors (as torch does), never a map as large as the input.
"""

from __future__ import annotations

import functools
import inspect
import operator
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Number

import torch
import torch.autograd.forward_ad as forward_ad
from torch import Tensor
from torch._C._functorch import is_batchedtensor, is_functorch_wrapped_tensor, peek_interpreter_stack

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction
from manual_backprop.functional.linear import Reshape
from manual_backprop.functional.linear import flatten as _flatten_copy
from manual_backprop.functional.linear import unflatten as _unflatten_copy
from manual_backprop.functional.ops import _unbroadcast

_MASKS = (torch.bool, torch.uint8)


# -- when a Function node is needed, and errors --------------------------------------------------
def _tracked(*tensors) -> bool:
    """Whether this call must build a Function node: grad mode on and some input requiring grad, or a
    forward-mode / torch.func transform watching. Otherwise torch's own op runs (no node, torch's views)."""
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors):
        return True
    if torch.compiler.is_compiling():
        return False
    return forward_ad._current_level >= 0 or peek_interpreter_stack() is not None


class _LayerIndexError(LayerInputError, IndexError):
    """An index out of range: a LayerInputError that ``except IndexError`` also catches, as torch's does."""


class _LayerTypeError(LayerInputError, TypeError):
    """An argument of the wrong type, as torch's TypeError."""


_AS_LAYER_ERROR = {RuntimeError: LayerInputError, ValueError: LayerInputError, IndexError: _LayerIndexError,
                   TypeError: _LayerTypeError}


def _describe(fn: Callable, args, kwargs) -> str:
    """'input shape (2, 3), index shape (4,)': the tensors of a call, by parameter name."""
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs).arguments
    except TypeError:
        bound = {f"argument {i}": a for i, a in enumerate(args)}
    parts = []
    for name, value in bound.items():
        if isinstance(value, Tensor):
            parts.append(f"{name} shape {shape(value)}")
        elif isinstance(value, list | tuple) and value and all(isinstance(v, Tensor) for v in value):
            parts.append(f"{name} shapes {[shape(v) for v in value]}")
    return ", ".join(parts)


def _named_errors(name: str) -> Callable:
    """Torch's own complaint about the arguments (shape, dim, index out of range), raised as a
    LayerInputError naming the function and the shapes; other errors pass unchanged."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def checked(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except LayerInputError:
                raise
            except (RuntimeError, ValueError, IndexError, TypeError) as err:
                kind = _AS_LAYER_ERROR.get(type(err))
                if kind is None:  # out of memory, NotImplementedError, ...: not about the arguments
                    raise
                described = _describe(fn, args, kwargs)
                raise kind(f"{name}: {err}" + (f" ({described})" if described else "")) from None

        return checked

    return wrap


def _check_tensor(name: str, what: str, x) -> None:
    if not isinstance(x, Tensor):
        raise _LayerTypeError(f"{name}: {what} must be a Tensor, got {type(x).__name__}")


def _sizes(name: str, key: str, args: tuple, kwargs: dict) -> tuple[int, ...]:
    """Sizes given as ints, as one sequence (tuple, list, torch.Size) or as ``key=``: torch's calling forms."""
    if kwargs:
        if args or set(kwargs) != {key}:
            raise TypeError(f"{name}() got unexpected arguments {sorted(kwargs)}; expected ints, one sequence "
                            f"or {key}=")
        args = (kwargs[key],)
    if len(args) == 1 and not isinstance(args[0], int | Tensor) and hasattr(args[0], "__len__"):
        args = tuple(args[0])
    return tuple(operator.index(a) for a in args)


def _dim(name: str, dim: int, rank: int, what: str = "dim") -> int:
    """``dim`` wrapped into [0, rank) (a scalar takes 0 and −1), or a LayerInputError."""
    bound = max(rank, 1)
    if not -bound <= dim < bound:
        raise _LayerIndexError(f"{name}: {what} {dim} out of range for a tensor of {rank} dimensions "
                               f"(expected in [{-bound}, {bound - 1}])")
    return dim % bound


# -- copies that stand for views: writes reach the base ----------------------------------------------
@dataclass(frozen=True)
class _ViewOf:
    """What a copy stands for: the view of ``base`` torch would have returned.

    ``view(b)`` makes that view (a copy) of a base ``b`` again; ``place(b, v)`` writes new values ``v``
    of the view into ``b``, in place, with manual Functions; ``parent`` is the base's own tag when the
    base stands for a view too. The base is held weakly: once it is gone no one can see a write to it.
    """

    base: weakref.ref
    view: Callable[[Tensor], Tensor]
    place: Callable[[Tensor, Tensor], None]
    parent: _ViewOf | None


_TAG = "_manual_backprop_view_of"


def _stands_for_view(out: Tensor, base: Tensor, view: Callable, place: Callable) -> Tensor:
    if not torch.compiler.is_compiling():  # no link under torch.compile (module doc)
        setattr(out, _TAG, _ViewOf(weakref.ref(base), view, place, getattr(base, _TAG, None)))
    return out


def _live_base(tag: _ViewOf | None) -> Tensor | None:
    """The tensor ``tag`` views; if it is gone but was a view itself, made again from its own base."""
    if tag is None:
        return None
    base = tag.base()
    if base is None:
        grand = _live_base(tag.parent)
        base = None if grand is None else tag.parent.view(grand)
    return base


def _write_through(t: Tensor) -> None:
    """``t`` was written in place: if it stands for a view, write its numbers into the base too."""
    tag = getattr(t, _TAG, None)
    if tag is not None:
        base = _live_base(tag)
        if base is not None:
            tag.place(base, t)


def _reshape_tag(out: Tensor, base: Tensor) -> Tensor:
    """Tag a copy standing for a view with the same numbers in another shape."""
    out_shape = tuple(out.shape)
    return _stands_for_view(out, base, lambda b: reshape(b, out_shape),
                            lambda b, v: copy_(b, reshape(v, tuple(b.shape))))


def _index_tag(out: Tensor, base: Tensor, index) -> Tensor:
    """Tag a copy standing for the view ``base[index]`` (a basic index)."""
    return _stands_for_view(out, base, lambda b: getitem(b, index), lambda b, v: setitem(b, index, v))


# -- same numbers, another shape: view, reshape, squeeze, unsqueeze, flatten, unflatten --------------
def _detached(z: Tensor) -> Tensor:
    return z.detach() if z.requires_grad else z


def _reshaped(input: Tensor, out_shape: tuple[int, ...], is_view: bool) -> Tensor:
    """``input`` laid out in ``out_shape`` by :class:`Reshape` (a copy); tagged when torch's result is a view."""
    out = Reshape.call(input, out_shape)
    return _reshape_tag(out, input) if is_view else out


def _view_possible(input: Tensor, out_shape: tuple[int, ...]) -> bool:
    """Whether torch's reshape gives a view here (then the copy is linked to its base; not under compile)."""
    if torch.compiler.is_compiling():
        return False
    if input.is_contiguous():
        return True
    try:
        _detached(input).view(out_shape)
    except RuntimeError:
        return False
    return True


@_named_errors("reshape")
def reshape(input: Tensor, *shape: int | Sequence[int], **kwargs: Sequence[int]) -> Tensor:
    """Like ``torch.reshape`` / ``Tensor.reshape`` (ints, one sequence or ``shape=``; −1 inferred).
    Backward: δ laid out back in the input's shape."""
    _check_tensor("reshape", "input", input)
    sizes = _sizes("reshape", "shape", shape, kwargs)
    if not _tracked(input):
        return input.reshape(sizes)
    out_shape = tuple(_detached(input).reshape(sizes).shape)
    return _reshaped(input, out_shape, _view_possible(input, out_shape))


@_named_errors("view")
def view(input: Tensor, *shape: int | Sequence[int], **kwargs) -> Tensor:
    """Like ``Tensor.view(*shape)`` (ints, one sequence or ``size=``; −1 inferred); ``view(dtype)`` is not
    supported. Backward: δ laid out back in the input's shape."""
    _check_tensor("view", "input", input)
    if "dtype" in kwargs or (len(shape) == 1 and isinstance(shape[0], torch.dtype)):
        raise LayerInputError("view: view(dtype) is not supported (it reinterprets bits; no gradient flows "
                              "through it)")
    sizes = _sizes("view", "size", shape, kwargs)
    if not _tracked(input):
        return input.view(sizes)
    out_shape = tuple(_detached(input).view(sizes).shape)  # torch's checks: numel, −1, strides
    return _reshaped(input, out_shape, True)


def view_as(input: Tensor, other: Tensor) -> Tensor:
    """Like ``Tensor.view_as``: ``view(input, other.shape)``."""
    _check_tensor("view_as", "other", other)
    return view(input, other.shape)


def reshape_as(input: Tensor, other: Tensor) -> Tensor:
    """Like ``Tensor.reshape_as``: ``reshape(input, other.shape)``."""
    _check_tensor("reshape_as", "other", other)
    return reshape(input, other.shape)


@_named_errors("squeeze")
def squeeze(input: Tensor, dim: int | Sequence[int] | None = None) -> Tensor:
    """Like ``torch.squeeze`` (dim None, an int or a tuple). Backward: δ with the size-1 dims put back."""
    _check_tensor("squeeze", "input", input)
    if not _tracked(input):
        return input.squeeze() if dim is None else input.squeeze(dim)
    out = _detached(input).squeeze() if dim is None else _detached(input).squeeze(dim)
    return _reshaped(input, tuple(out.shape), True)


@_named_errors("unsqueeze")
def unsqueeze(input: Tensor, dim: int) -> Tensor:
    """Like ``torch.unsqueeze``. Backward: δ with the new size-1 dim taken out."""
    _check_tensor("unsqueeze", "input", input)
    if not _tracked(input):
        return input.unsqueeze(dim)
    return _reshaped(input, tuple(_detached(input).unsqueeze(dim).shape), True)


@_named_errors("flatten")
def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Like ``torch.flatten``; the Function is :func:`manual_backprop.functional.linear.flatten`'s
    (:class:`Reshape`). Backward: δ laid out back in the input's shape."""
    _check_tensor("flatten", "input", input)
    if not _tracked(input):
        return input.flatten(start_dim, end_dim)
    out_shape = tuple(_detached(input).flatten(start_dim, end_dim).shape)  # torch's checks of the dims
    if input.dim() > 0 and start_dim % input.dim() == end_dim % input.dim():
        return input  # torch returns the input itself
    out = _flatten_copy(input, start_dim % max(input.dim(), 1), end_dim % max(input.dim(), 1))
    return _reshape_tag(out, input) if _view_possible(input, out_shape) else out


@_named_errors("unflatten")
def unflatten(input: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    """Like ``torch.unflatten``; the Function is :func:`manual_backprop.functional.linear.unflatten`'s
    (:class:`Reshape`), always a view in torch. Backward: δ laid out back in the input's shape."""
    _check_tensor("unflatten", "input", input)
    if not _tracked(input):
        return input.unflatten(dim, sizes)
    _detached(input).unflatten(dim, sizes)  # torch's checks of dim and sizes
    return _reshape_tag(_unflatten_copy(input, dim, tuple(sizes)), input)


# -- the same numbers with the dimensions in another order -------------------------------------------
class Permute(ManualFunction):
    """a = z with its dimensions reordered: a[i_p0, i_p1, ...] = z[i_0, i_1, ...] (transpose, t, permute,
    movedim, swapaxes).

    ∂C/∂z = δ with the inverse order applied: each δ goes back to the entry its number came from.
    """

    @staticmethod
    def forward(z: Tensor, dims: tuple[int, ...]) -> Tensor:
        return z.permute(dims).clone()  # torch's strides kept: a copy, not a view (module doc)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dims = inputs[1]
        ctx.inverse = tuple(sorted(range(len(ctx.dims)), key=ctx.dims.__getitem__))

    @staticmethod
    def backward(ctx, delta: Tensor):
        return delta.permute(ctx.inverse), None  # ∂a/∂z: the permutation; its transpose is the inverse

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, _):
        return tangent_z.permute(ctx.dims)


def _permuted(input: Tensor, dims: tuple[int, ...]) -> Tensor:
    inverse = tuple(sorted(range(len(dims)), key=dims.__getitem__))
    out = Permute.call(input, dims)
    return _stands_for_view(out, input, lambda b: permute(b, dims), lambda b, v: copy_(b, permute(v, inverse)))


@_named_errors("permute")
def permute(input: Tensor, *dims: int | Sequence[int], **kwargs: Sequence[int]) -> Tensor:
    """Like ``torch.permute`` / ``Tensor.permute`` (ints, one sequence or ``dims=``). Backward: δ permuted
    by the inverse order."""
    _check_tensor("permute", "input", input)
    order = _sizes("permute", "dims", dims, kwargs)
    if not _tracked(input):
        return input.permute(order)
    rank = input.dim()
    if len(order) != rank:
        raise LayerInputError(f"permute: dims {order} has {len(order)} entries for input shape {shape(input)} "
                              f"({rank} dimensions)")
    normal = tuple(_dim("permute", d, rank) for d in order) if rank else ()
    if len(set(normal)) != len(normal):
        raise LayerInputError(f"permute: dims {order} repeat a dimension (input shape {shape(input)})")
    return _permuted(input, normal)


def _swap(name: str, input: Tensor, dim0: int, dim1: int) -> Tensor:
    _check_tensor(name, "input", input)
    if not _tracked(input):
        return input.transpose(dim0, dim1)
    rank = input.dim()
    order = list(range(rank))
    if rank:
        d0, d1 = _dim(name, dim0, rank), _dim(name, dim1, rank)
        order[d0], order[d1] = order[d1], order[d0]
    else:
        _dim(name, dim0, rank), _dim(name, dim1, rank)
    return _permuted(input, tuple(order))


@_named_errors("transpose")
def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    """Like ``torch.transpose``: dims ``dim0`` and ``dim1`` swapped. Backward: δ swapped back."""
    return _swap("transpose", input, dim0, dim1)


@_named_errors("swapaxes")
def swapaxes(input: Tensor, axis0: int, axis1: int) -> Tensor:
    """Like ``torch.swapaxes`` (an alias of transpose)."""
    return _swap("swapaxes", input, axis0, axis1)


@_named_errors("swapdims")
def swapdims(input: Tensor, dim0: int, dim1: int) -> Tensor:
    """Like ``torch.swapdims`` (an alias of transpose)."""
    return _swap("swapdims", input, dim0, dim1)


@_named_errors("t")
def t(input: Tensor) -> Tensor:
    """Like ``torch.t``: a matrix transposed (0-d and 1-d tensors unchanged). Backward: δ transposed."""
    _check_tensor("t", "input", input)
    if input.dim() > 2:
        raise LayerInputError(f"t: expects a tensor with at most 2 dimensions, got input shape {shape(input)}")
    return _swap("t", input, 0, -1 if input.dim() else 0)


@_named_errors("movedim")
def movedim(input: Tensor, source: int | Sequence[int], destination: int | Sequence[int]) -> Tensor:
    """Like ``torch.movedim``: dims ``source`` moved to positions ``destination``, the others keeping their
    order. Backward: δ moved back."""
    _check_tensor("movedim", "input", input)
    if not _tracked(input):
        return input.movedim(source, destination)
    rank = input.dim()
    src = (source,) if isinstance(source, int) else tuple(source)
    dst = (destination,) if isinstance(destination, int) else tuple(destination)
    if len(src) != len(dst):
        raise LayerInputError(f"movedim: source {source} and destination {destination} differ in length")
    src = tuple(_dim("movedim", d, rank, "source dim") for d in src)
    dst = tuple(_dim("movedim", d, rank, "destination dim") for d in dst)
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise LayerInputError(f"movedim: source {source} or destination {destination} repeats a dimension")
    if not rank:
        return _permuted(input, ())
    order: list[int | None] = [None] * rank
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(d for d in range(rank) if d not in src)
    return _permuted(input, tuple(next(rest) if o is None else o for o in order))


# -- copies along dimensions: expand, repeat ---------------------------------------------------------
class Expand(ManualFunction):
    """a = z broadcast to a larger shape (new leading dims, size-1 dims stretched): many a entries read one z.

    ∂C/∂z = Σ δ over the copies: summed over the new leading dims and the stretched dims.
    """

    @staticmethod
    def forward(z: Tensor, sizes: tuple[int, ...]) -> Tensor:
        a = z.expand(sizes)
        return a if a.numel() > z.numel() else a.clone()  # a true broadcast stays torch's view (module doc)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.z_shape, ctx.a_shape = tuple(inputs[0].shape), tuple(output.shape)

    @staticmethod
    def backward(ctx, delta: Tensor):
        return _unbroadcast(delta, ctx.z_shape), None  # ∂a/∂z = 1 for every copy: Σ over the copies

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, _):
        return tangent_z.expand(ctx.a_shape)


@_named_errors("expand")
def expand(input: Tensor, *sizes: int | Sequence[int], implicit: bool = False, **kwargs: Sequence[int]) -> Tensor:
    """Like ``Tensor.expand`` (ints, one sequence or ``size=``; −1 keeps a size). Backward: δ summed over
    the copies (:func:`manual_backprop.functional.ops._unbroadcast`)."""
    _check_tensor("expand", "input", input)
    target = _sizes("expand", "size", sizes, kwargs)
    if not _tracked(input):
        return input.expand(target)
    out_shape = tuple(_detached(input).expand(target).shape)  # torch's checks, −1 resolved
    out = Expand.call(input, out_shape)
    return out if out.numel() > input.numel() else _reshape_tag(out, input)


def expand_as(input: Tensor, other: Tensor) -> Tensor:
    """Like ``Tensor.expand_as``: ``expand(input, other.shape)``."""
    _check_tensor("expand_as", "other", other)
    return expand(input, other.shape)


class Repeat(ManualFunction):
    """a = z tiled r_k times along each dim k (z first gets leading size-1 dims up to len(r)).

    ∂C/∂z = Σ over the tiles of δ: δ viewed as (r_0, s_0, r_1, s_1, ...), summed over every r_k.
    """

    @staticmethod
    def forward(z: Tensor, repeats: tuple[int, ...]) -> Tensor:
        return z.repeat(repeats)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, ctx.repeats = inputs
        ctx.z_shape = tuple(z.shape)
        ctx.padded = (1,) * (len(ctx.repeats) - z.dim()) + ctx.z_shape

    @staticmethod
    def backward(ctx, delta: Tensor):
        tiled = delta.reshape([n for pair in zip(ctx.repeats, ctx.padded) for n in pair])  # (r_0, s_0, r_1, ...)
        grad_z = tiled.sum(dim=tuple(range(0, 2 * len(ctx.repeats), 2)))  # ∂a/∂z = 1 in each tile: Σ tiles
        return grad_z.reshape(ctx.z_shape), None

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, _):
        return tangent_z.repeat(ctx.repeats)


@_named_errors("repeat")
def repeat(input: Tensor, *sizes: int | Sequence[int], **kwargs: Sequence[int]) -> Tensor:
    """Like ``Tensor.repeat`` (ints, one sequence or ``repeats=``). Backward: δ summed over the tiles."""
    _check_tensor("repeat", "input", input)
    repeats = _sizes("repeat", "repeats", sizes, kwargs)
    if len(repeats) < input.dim():
        raise LayerInputError(f"repeat: {len(repeats)} repeats {repeats} for input shape {shape(input)}; "
                              f"give at least one per dimension ({input.dim()})")
    if any(r < 0 for r in repeats):
        raise LayerInputError(f"repeat: repeats {repeats} must not be negative")
    if not _tracked(input):
        return input.repeat(repeats)
    return Repeat.call(input, repeats)


# -- plain copies: contiguous, clone -----------------------------------------------------------------
class Clone(ManualFunction):
    """a = z, copied (into another memory layout): ∂C/∂z = δ."""

    @staticmethod
    def forward(z: Tensor, memory_format: torch.memory_format) -> Tensor:
        return z.clone(memory_format=memory_format)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.memory_format = inputs[1]

    @staticmethod
    def backward(ctx, delta: Tensor):
        return delta, None  # ∂a/∂z = 1 entry by entry

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, _):
        return tangent_z.clone(memory_format=ctx.memory_format)


@_named_errors("contiguous")
def contiguous(input: Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """Like ``Tensor.contiguous``: ``input`` itself when already laid out so (as torch: no node), else a
    copy. Backward: δ."""
    _check_tensor("contiguous", "input", input)
    if input.is_contiguous(memory_format=memory_format):
        return input
    if not _tracked(input):
        return input.contiguous(memory_format=memory_format)
    return Clone.call(input, memory_format)


@_named_errors("clone")
def clone(input: Tensor, *, memory_format: torch.memory_format = torch.preserve_format) -> Tensor:
    """Like ``torch.clone``: a copy. Backward: δ."""
    _check_tensor("clone", "input", input)
    if not _tracked(input):
        return input.clone(memory_format=memory_format)
    return Clone.call(input, memory_format)


# -- indexing ----------------------------------------------------------------------------------------
def _is_sequence(x) -> bool:
    """What CPython calls a sequence (lists, tuples, numpy arrays), but no Tensor and no str."""
    return (not isinstance(x, Tensor | str | bytes | dict)) and hasattr(x, "__len__") and hasattr(x, "__getitem__")


def _sequence_is_tuple(index) -> bool:
    """torch's (and old numpy's) rule: a short list holding a slice, None, ..., a tensor or a sequence is
    read as a tuple of indices, ``x[[0, slice(None)]]`` as ``x[0, :]`` (deprecated by torch, still done)."""
    if isinstance(index, tuple):
        return True
    if isinstance(index, Tensor) or not _is_sequence(index) or len(index) >= 32:
        return False
    return any(isinstance(i, Tensor | slice) or i is None or i is Ellipsis or _is_sequence(i) for i in index)


def _index_item(item, device: torch.device):
    """One index entry as torch reads it: int, slice of ints, None, Ellipsis, bool or Tensor."""
    if item is None or item is Ellipsis or isinstance(item, bool):
        return item
    if isinstance(item, slice):
        return slice(*(None if s is None else operator.index(s) for s in (item.start, item.stop, item.step)))
    if isinstance(item, Tensor):
        if item.dim() == 0 and not is_batchedtensor(item) and not (item.is_floating_point() or item.is_complex()):
            return bool(item) if item.dtype in _MASKS else int(item)  # torch reads a 0-d index with .item()
        return item
    if _is_sequence(item):
        seq = torch.tensor(item, device=device)
        return seq if seq.dtype in _MASKS else seq.long()  # torch's indexing_tensor_from_data
    return operator.index(item)


def _index_items(index, device: torch.device) -> tuple:
    items = tuple(index) if _sequence_is_tuple(index) else (index,)
    return tuple(_index_item(i, device) for i in items)


def _is_basic(items: tuple) -> bool:
    return all(i is None or i is Ellipsis or isinstance(i, slice) or (isinstance(i, int) and not isinstance(i, bool))
               for i in items)


def _split_index(items: tuple, rank: int, device: torch.device) -> tuple[tuple, list[Tensor | None]]:
    """An index as torch applies it (``handleDimInMultiDimIndexing``): a basic part (ints, slices, None, ...)
    that makes a view v of z, and the list of index tensors, one slot per dim of v (None: the whole dim;
    a k-dim mask takes one slot for k dims), so that ``z[index] = aten.index(z[basic], advanced)``."""
    taken = sum((i.dim() if i.dtype in _MASKS else 1) if isinstance(i, Tensor)
                else int(not (i is None or i is Ellipsis or isinstance(i, bool))) for i in items)
    basic: list = []
    advanced: list[Tensor | None] = []
    dim = 0  # the dim of the view being built that the next entry indexes

    def record(t: Tensor) -> None:
        nonlocal advanced, dim
        if advanced:
            advanced.append(t)
        else:
            advanced = [None] * dim + [t]
        dim += t.dim() if t.dtype in _MASKS else 1

    for item in items:
        if isinstance(item, bool):  # a new size-1 dim, indexed by [0] (True) or [] (False)
            basic.append(None)
            record(torch.zeros(int(item), dtype=torch.long, device=device))
        elif isinstance(item, Tensor):
            basic.extend([slice(None)] * (item.dim() if item.dtype in _MASKS else 1))
            record(item)
        elif isinstance(item, int):  # select: the dim goes away
            basic.append(item)
        else:
            basic.append(item)
            n = rank - taken if item is Ellipsis else 1  # Ellipsis: every dim not indexed; None, slice: one
            dim += n
            if advanced:
                advanced.extend([None] * n)
    return tuple(basic), advanced


class Index(ManualFunction):
    """a = z[index]: each a entry is read from one z entry.

    ∂C/∂z = for each z entry, Σ of δ over the a entries read from it: δ written into zeros at the window
    of a basic index; added with ``index_put(accumulate=True)`` for tensor indices, which may read an
    entry several times (and none at all: zero).
    """

    @staticmethod
    def forward(z: Tensor, template: tuple, *tensors: Tensor) -> Tensor:
        a = z[_filled(template, tensors)]
        is_view = _is_basic(template) or (len(template) == 1 and template[0] is True)  # x[True]: unsqueeze(0)
        return a.clone() if is_view else a  # a view: copied (module doc)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, template, *tensors = inputs
        items = _filled(template, tensors)
        ctx.z_shape = tuple(z.shape)
        if _is_basic(items):
            ctx.basic, ctx.slots = items, None
            return
        ctx.basic, advanced = _split_index(items, z.dim(), z.device)
        with torch.no_grad():
            ctx.v_shape = tuple(z[ctx.basic].shape)
        ctx.slots = tuple(t is not None for t in advanced)
        ctx.save_for_backward(*(t for t in advanced if t is not None))
        ctx.save_for_forward(*(t for t in advanced if t is not None))

    @staticmethod
    def _advanced(ctx, saved) -> list[Tensor | None]:
        it = iter(saved)
        return [next(it) if slot else None for slot in ctx.slots]

    @staticmethod
    def backward(ctx, delta: Tensor):
        grads = [None] * len(ctx.needs_input_grad)
        if ctx.slots is None:
            grad_z = delta.new_zeros(ctx.z_shape)
            grad_z[ctx.basic] = delta  # ∂a/∂z = 1 at the window the index reads, 0 elsewhere
        else:
            advanced = Index._advanced(ctx, ctx.saved_tensors)
            grad_v = torch.ops.aten.index_put(delta.new_zeros(ctx.v_shape), advanced, delta, True)  # Σ over repeats
            if all(b == slice(None) or b is Ellipsis for b in ctx.basic):
                grad_z = grad_v.reshape(ctx.z_shape)
            else:
                grad_z = delta.new_zeros(ctx.z_shape)
                grad_z[ctx.basic] = grad_v  # the view v is a window of z: 1 there, 0 elsewhere
        grads[0] = grad_z
        return tuple(grads)

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        tangent_v = tangent_z[ctx.basic]
        if ctx.slots is None:
            return tangent_v.clone()
        return torch.ops.aten.index(tangent_v, Index._advanced(ctx, ctx.saved_tensors))


def _template(items: tuple) -> tuple[tuple, tuple[Tensor, ...]]:
    """The index with its tensors taken out (they go to the Function as inputs, so they are saved properly)."""
    tensors = tuple(i for i in items if isinstance(i, Tensor))
    return tuple(_SLOT if isinstance(i, Tensor) else i for i in items), tensors


def _filled(template: tuple, tensors) -> tuple:
    it = iter(tensors)
    return tuple(next(it) if i is _SLOT else i for i in template)


class _Slot:
    def __repr__(self) -> str:
        return "<tensor>"


_SLOT = _Slot()


@_named_errors("getitem")
def getitem(input: Tensor, index) -> Tensor:
    """Like ``input[index]``: ints, slices (with steps), None, Ellipsis, bools, masks, long tensors, lists
    and tuples mixing them. Backward: δ back to the entry each output entry was read from, summed where
    one entry was read several times."""
    _check_tensor("getitem", "input", input)
    if not _tracked(input):
        return input[index]
    items = _index_items(index, input.device)
    template, tensors = _template(items)
    out = Index.call(input, template, *tensors)
    return _index_tag(out, input, items) if _is_basic(items) else out


@_named_errors("select")
def select(input: Tensor, dim: int, index: int) -> Tensor:
    """Like ``torch.select``: the slice at ``index`` along ``dim``, that dim removed. Backward: δ into zeros
    at that slice."""
    _check_tensor("select", "input", input)
    if not _tracked(input):
        return input.select(dim, index)
    if input.dim() == 0:
        raise _LayerIndexError("select: cannot select from a 0-d tensor (input shape ())")
    d = _dim("select", dim, input.dim())
    i = operator.index(index)
    if not -input.shape[d] <= i < input.shape[d]:
        raise _LayerIndexError(f"select: index {index} out of range for dim {dim} of size {input.shape[d]} "
                               f"(input shape {shape(input)})")
    return getitem(input, (slice(None),) * d + (i,))


@_named_errors("narrow")
def narrow(input: Tensor, dim: int, start: int | Tensor, length: int) -> Tensor:
    """Like ``torch.narrow``: ``length`` entries from ``start`` along ``dim``. Backward: δ into zeros there."""
    _check_tensor("narrow", "input", input)
    if not _tracked(input):
        return input.narrow(dim, start, length)
    if input.dim() == 0:
        raise LayerInputError("narrow: cannot narrow a 0-d tensor (input shape ())")
    d = _dim("narrow", dim, input.dim())
    size, begin = input.shape[d], operator.index(start)
    if not -size <= begin <= size:
        raise _LayerIndexError(f"narrow: start {begin} out of range for dim {dim} of size {size} "
                               f"(input shape {shape(input)})")
    if begin < 0:
        begin += size
    if length < 0 or begin + length > size:
        raise LayerInputError(f"narrow: start {begin} + length {length} exceeds dim {dim} of size {size} "
                              f"(input shape {shape(input)})")
    return getitem(input, (slice(None),) * d + (slice(begin, begin + length),))


class Diagonal(ManualFunction):
    """a = the diagonal of z in the plane (dim1, dim2), shifted by ``offset``, as the last dim.

    ∂C/∂z = δ written on that diagonal of zeros (``diagonal_scatter``).
    """

    @staticmethod
    def forward(z: Tensor, offset: int, dim1: int, dim2: int) -> Tensor:
        return z.diagonal(offset, dim1, dim2).clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, ctx.offset, ctx.dim1, ctx.dim2 = inputs
        ctx.z_shape = tuple(z.shape)

    @staticmethod
    def backward(ctx, delta: Tensor):
        zeros = delta.new_zeros(ctx.z_shape)
        return torch.diagonal_scatter(zeros, delta, ctx.offset, ctx.dim1, ctx.dim2), None, None, None  # 1 there

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        return tangent_z.diagonal(ctx.offset, ctx.dim1, ctx.dim2)


@_named_errors("diagonal")
def diagonal(input: Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """Like ``torch.diagonal``. Backward: δ on the diagonal of zeros."""
    _check_tensor("diagonal", "input", input)
    if not _tracked(input):
        return input.diagonal(offset, dim1, dim2)
    if input.dim() < 2:
        raise LayerInputError(f"diagonal: input shape {shape(input)} needs at least 2 dimensions")
    d1, d2 = _dim("diagonal", dim1, input.dim(), "dim1"), _dim("diagonal", dim2, input.dim(), "dim2")
    if d1 == d2:
        raise LayerInputError(f"diagonal: dim1 {dim1} and dim2 {dim2} are the same dimension")
    out = Diagonal.call(input, offset, d1, d2)

    def place(b: Tensor, v: Tensor) -> None:
        steps = torch.arange(v.shape[-1], device=b.device)
        where: list = [slice(None)] * b.dim()
        where[d1], where[d2] = steps + max(-offset, 0), steps + max(offset, 0)
        # b[where] has the diagonal's dim where the two index tensors stood (side by side) or else in front
        setitem(b, tuple(where), movedim(v, -1, min(d1, d2) if abs(d1 - d2) == 1 else 0))

    return _stands_for_view(out, input, lambda b: diagonal(b, offset, d1, d2), place)


# -- joining and splitting -----------------------------------------------------------------------------
def _cast_back(grad: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A gradient in the dtype and on the device of the input it belongs to (real part for a real input)."""
    if grad.is_complex() and not (dtype.is_complex):
        grad = grad.real
    return grad.to(device=device, dtype=dtype)


def _distinct(tensors: tuple[Tensor, ...]) -> tuple[tuple[int, ...], tuple[Tensor, ...]]:
    """Each tensor once, and for each list entry which one it is: ``torch.cat([h, h])`` passes h to the
    Function once (torch.compile refuses a Function given one tensor twice)."""
    compiling = torch.compiler.is_compiling()  # dynamo before torch 2.13 takes no id() of a graph's tensor
    first: dict[int, int] = {}
    distinct: list[Tensor] = []
    slots = []
    for t in tensors:
        if compiling:
            slot = next((k for k, seen in enumerate(distinct) if seen is t), len(distinct))
        else:
            slot = first.setdefault(id(t), len(distinct))
        if slot == len(distinct):
            distinct.append(t)
        slots.append(slot)
    return tuple(slots), tuple(distinct)


def _gathered(ctx, pieces) -> tuple[Tensor | None, ...]:
    """The gradient of each distinct input: its pieces of δ summed (a tensor listed twice got two), cast back."""
    grads: list[Tensor | None] = [None] * len(ctx.metas)
    for piece, slot in zip(pieces, ctx.slots):
        if piece is not None and ctx.needs_input_grad[2 + slot]:
            grads[slot] = piece if grads[slot] is None else grads[slot] + piece  # used twice: Σ
    return tuple(None if g is None else _cast_back(g, *meta) for g, meta in zip(grads, ctx.metas))


class Cat(ManualFunction):
    """a = [z_1, z_2, ...] laid side by side along ``dim``.

    ∂C/∂z_k = the piece of δ where z_k was put (δ split by the sizes along dim), in z_k's dtype.
    """

    @staticmethod
    def forward(dim: int, slots: tuple[int, ...], *distinct: Tensor) -> Tensor:
        return torch.cat([distinct[k] for k in slots], dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        dim, ctx.slots, *distinct = inputs
        tensors = [distinct[k] for k in ctx.slots]
        ctx.dim = dim % output.dim()
        # torch's legacy rule: a 1-d empty tensor is skipped when the others have more dims
        ctx.skipped = tuple(t.dim() == 1 and t.numel() == 0 and output.dim() != 1 for t in tensors)
        ctx.sizes = tuple(0 if s else t.shape[ctx.dim] for t, s in zip(tensors, ctx.skipped))
        ctx.metas = tuple((t.dtype, t.device) for t in distinct)
        ctx.shapes, ctx.out_dtype = tuple(tuple(t.shape) for t in distinct), output.dtype

    @staticmethod
    def backward(ctx, delta: Tensor):
        pieces = delta.split(ctx.sizes, ctx.dim)  # ∂a/∂z_k = 1 where z_k was put, 0 elsewhere
        # a skipped 1-d empty tensor gets a gradient of its own shape (0,)
        pieces = [p.new_zeros((0,)) if skipped else p for p, skipped in zip(pieces, ctx.skipped)]
        return None, None, *_gathered(ctx, pieces)

    @staticmethod
    def jvp(ctx, _, __, *tangents):
        device = next(t.device for t in tangents if t is not None)
        filled = [torch.zeros(shape, dtype=ctx.out_dtype, device=device) if t is None else t.to(ctx.out_dtype)
                  for t, shape in zip(tangents, ctx.shapes)]
        return torch.cat([filled[k] for k, skipped in zip(ctx.slots, ctx.skipped) if not skipped], ctx.dim)


def _tensor_list(name: str, tensors) -> tuple[Tensor, ...]:
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise _LayerTypeError(f"{name}: tensors must be a tuple or list of Tensors, got {type(tensors).__name__}")
    for k, t in enumerate(tensors):
        _check_tensor(name, f"tensors[{k}]", t)
    if not tensors:
        raise LayerInputError(f"{name}: expected a non-empty list of Tensors")
    return tuple(tensors)


def _cat(name: str, tensors, dim: int) -> Tensor:
    tensors = _tensor_list(name, tensors)
    if not _tracked(*tensors):
        return torch.cat(tensors, dim)
    slots, distinct = _distinct(tensors)
    return Cat.call(dim, slots, *distinct)


@_named_errors("cat")
def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Like ``torch.cat``. Backward: δ split back into the pieces."""
    return _cat("cat", tensors, dim)


@_named_errors("concat")
def concat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Like ``torch.concat`` (an alias of cat)."""
    return _cat("concat", tensors, dim)


@_named_errors("concatenate")
def concatenate(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Like ``torch.concatenate`` (an alias of cat, with ``axis``)."""
    return _cat("concatenate", tensors, axis)


class Stack(ManualFunction):
    """a = [z_1, z_2, ...] stacked along a new dim: a.select(dim, k) = z_k.

    ∂C/∂z_k = δ.select(dim, k), in z_k's dtype.
    """

    @staticmethod
    def forward(dim: int, slots: tuple[int, ...], *distinct: Tensor) -> Tensor:
        return torch.stack([distinct[k] for k in slots], dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        dim, ctx.slots, *distinct = inputs
        ctx.dim = dim % output.dim()
        ctx.metas = tuple((t.dtype, t.device) for t in distinct)
        ctx.out_dtype = output.dtype

    @staticmethod
    def backward(ctx, delta: Tensor):
        return None, None, *_gathered(ctx, delta.unbind(ctx.dim))  # ∂a/∂z_k = 1 at the k-th entry of dim

    @staticmethod
    def jvp(ctx, _, __, *tangents):
        like = next(t for t in tangents if t is not None)
        filled = [torch.zeros_like(like, dtype=ctx.out_dtype) if t is None else t.to(ctx.out_dtype) for t in tangents]
        return torch.stack([filled[k] for k in ctx.slots], ctx.dim)


@_named_errors("stack")
def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Like ``torch.stack``. Backward: δ unbound along the new dim."""
    tensors = _tensor_list("stack", tensors)
    if not _tracked(*tensors):
        return torch.stack(tensors, dim)
    slots, distinct = _distinct(tensors)
    return Stack.call(dim, slots, *distinct)


class Split(ManualFunction):
    """(a_1, a_2, ...) = consecutive pieces of z along ``dim`` (split, chunk).

    ∂C/∂z = [δ_1, δ_2, ...] put side by side again (a piece that got no gradient gives zeros).
    """

    @staticmethod
    def forward(z: Tensor, method: str, how, dim: int) -> tuple[Tensor, ...]:
        return tuple(piece.clone() for piece in getattr(z, method)(how, dim))

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, ctx.method, ctx.how, dim = inputs
        ctx.dim = dim % max(z.dim(), 1)

    @staticmethod
    def backward(ctx, *deltas: Tensor):
        return torch.cat(deltas, ctx.dim), None, None, None  # ∂a_k/∂z = 1 on the k-th piece

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        return tuple(getattr(tangent_z, ctx.method)(ctx.how, ctx.dim))


@_named_errors("split")
def split(tensor: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """Like ``torch.split``: pieces of ``split_size_or_sections`` entries (an int: all but the last) along
    ``dim``, as one Function. Backward: the δs put side by side."""
    _check_tensor("split", "tensor", tensor)
    if not _tracked(tensor):
        return tensor.split(split_size_or_sections, dim)
    how = split_size_or_sections if isinstance(split_size_or_sections, int) else tuple(split_size_or_sections)
    _detached(tensor).split(how, dim)  # torch's checks
    return Split.call(tensor, "split", how, dim)


@_named_errors("chunk")
def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """Like ``torch.chunk``: ``chunks`` pieces of ceil(n / chunks) entries (maybe fewer) along ``dim``, as one
    Function. Backward: the δs put side by side."""
    _check_tensor("chunk", "input", input)
    if not _tracked(input):
        return input.chunk(chunks, dim)
    _detached(input).chunk(chunks, dim)  # torch's checks
    return Split.call(input, "chunk", chunks, dim)


class Unbind(ManualFunction):
    """(a_1, a_2, ...) = the slices of z along ``dim``, that dim removed.

    ∂C/∂z = stack(δ_1, δ_2, ...) along dim (a slice that got no gradient gives zeros).
    """

    @staticmethod
    def forward(z: Tensor, dim: int) -> tuple[Tensor, ...]:
        return tuple(piece.clone() for piece in z.unbind(dim))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dim = inputs[1] % inputs[0].dim()

    @staticmethod
    def backward(ctx, *deltas: Tensor):
        return torch.stack(deltas, ctx.dim), None  # ∂a_k/∂z = 1 on the k-th slice

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, _):
        return tuple(tangent_z.unbind(ctx.dim))


@_named_errors("unbind")
def unbind(input: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    """Like ``torch.unbind``, as one Function. Backward: the δs stacked."""
    _check_tensor("unbind", "input", input)
    if not _tracked(input):
        return input.unbind(dim)
    if input.dim() == 0:
        raise LayerInputError("unbind: cannot unbind a 0-d tensor (input shape ())")
    return Unbind.call(input, _dim("unbind", dim, input.dim()))


# -- gathering by index tensors ------------------------------------------------------------------------
class Gather(ManualFunction):
    """a[..i..] = z[..index[..i..]..] along ``dim``.

    ∂C/∂z = zeros with δ added at the entries read (``scatter_add``): an entry read k times gets k δs.
    """

    @staticmethod
    def forward(z: Tensor, dim: int, index: Tensor) -> Tensor:
        return torch.gather(z, dim, index)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, ctx.dim, index = inputs
        ctx.z_shape = tuple(z.shape)
        ctx.save_for_backward(index)
        ctx.save_for_forward(index)

    @staticmethod
    def backward(ctx, delta: Tensor):
        (index,) = ctx.saved_tensors
        grad_z = delta.new_zeros(ctx.z_shape).scatter_add(ctx.dim, index, delta)  # ∂a/∂z = 1 at each entry read
        return grad_z, None, None

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        (index,) = ctx.saved_tensors
        return torch.gather(tangent_z, ctx.dim, index)


@_named_errors("gather")
def gather(input: Tensor, dim: int, index: Tensor, *, sparse_grad: bool = False) -> Tensor:
    """Like ``torch.gather`` (dense gradients only). Backward: δ scatter-added at the entries read."""
    _check_tensor("gather", "input", input)
    _check_tensor("gather", "index", index)
    if sparse_grad:
        raise LayerInputError("gather: sparse_grad=True is not supported; the gradient is always dense")
    if not _tracked(input):
        return torch.gather(input, dim, index)
    if index.dtype != torch.long:
        raise LayerInputError(f"gather: index must be an int64 tensor, got dtype {index.dtype}")
    d = _dim("gather", dim, input.dim())
    return Gather.call(input, d, index)


class IndexSelect(ManualFunction):
    """a = the slices index[0], index[1], ... of z along ``dim``.

    ∂C/∂z = zeros with each δ slice added at the slice it was read from (``index_add``): repeats sum.
    """

    @staticmethod
    def forward(z: Tensor, dim: int, index: Tensor) -> Tensor:
        return torch.index_select(z, dim, index)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, ctx.dim, index = inputs
        ctx.z_shape = tuple(z.shape)
        ctx.save_for_backward(index)
        ctx.save_for_forward(index)

    @staticmethod
    def backward(ctx, delta: Tensor):
        (index,) = ctx.saved_tensors
        grad_z = delta.new_zeros(ctx.z_shape).index_add(ctx.dim, index.reshape(-1), delta)  # 1 at each slice read
        return grad_z, None, None

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        (index,) = ctx.saved_tensors
        return torch.index_select(tangent_z, ctx.dim, index)


@_named_errors("index_select")
def index_select(input: Tensor, dim: int, index: Tensor) -> Tensor:
    """Like ``torch.index_select``. Backward: δ index-added at the slices read."""
    _check_tensor("index_select", "input", input)
    _check_tensor("index_select", "index", index)
    if not _tracked(input):
        return torch.index_select(input, dim, index)
    if index.dim() > 1:
        raise LayerInputError(f"index_select: index must be 0-d or 1-d, got index shape {shape(index)}")
    return IndexSelect.call(input, _dim("index_select", dim, input.dim()), index)


# -- reordering and masking ----------------------------------------------------------------------------
class Flip(ManualFunction):
    """a = z reversed along ``dims``: ∂C/∂z = δ reversed along the same dims."""

    @staticmethod
    def forward(z: Tensor, dims: tuple[int, ...]) -> Tensor:
        return torch.flip(z, dims)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dims = inputs[1]

    @staticmethod
    def backward(ctx, delta: Tensor):
        return torch.flip(delta, ctx.dims), None  # a reversal is its own inverse

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, _):
        return torch.flip(tangent_z, ctx.dims)


@_named_errors("flip")
def flip(input: Tensor, *dims: int | Sequence[int], **kwargs: Sequence[int]) -> Tensor:
    """Like ``torch.flip`` / ``Tensor.flip`` (ints, one sequence or ``dims=``). Backward: δ flipped back."""
    _check_tensor("flip", "input", input)
    order = _sizes("flip", "dims", dims, kwargs)
    if not _tracked(input):
        return torch.flip(input, order)
    normal = tuple(_dim("flip", d, input.dim()) for d in order)
    if len(set(normal)) != len(normal):
        raise LayerInputError(f"flip: dims {order} repeat a dimension (input shape {shape(input)})")
    return Flip.call(input, normal)


class Roll(ManualFunction):
    """a = z shifted cyclically by ``shifts`` along ``dims`` (flattened when dims is None):
    ∂C/∂z = δ shifted back by −shifts."""

    @staticmethod
    def forward(z: Tensor, shifts, dims) -> Tensor:
        return torch.roll(z, shifts, dims)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.shifts, ctx.dims = inputs

    @staticmethod
    def backward(ctx, delta: Tensor):
        back = -ctx.shifts if isinstance(ctx.shifts, int) else tuple(-s for s in ctx.shifts)
        return torch.roll(delta, back, ctx.dims), None, None  # the inverse shift

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        return torch.roll(tangent_z, ctx.shifts, ctx.dims)


@_named_errors("roll")
def roll(input: Tensor, shifts: int | Sequence[int], dims: int | Sequence[int] | None = None) -> Tensor:
    """Like ``torch.roll``. Backward: δ rolled back."""
    _check_tensor("roll", "input", input)
    if not _tracked(input):
        return torch.roll(input, shifts, dims)
    shifts = shifts if isinstance(shifts, int) else tuple(operator.index(s) for s in shifts)
    dims = dims if dims is None or isinstance(dims, int) else tuple(operator.index(d) for d in dims)
    return Roll.call(input, shifts, dims)


class Triangle(ManualFunction):
    """a = z with the entries above (tril) or below (triu) the ``diagonal``-th diagonal set to 0.

    ∂C/∂z = δ with the same entries set to 0 (kept entries pass δ, zeroed ones pass nothing).
    """

    @staticmethod
    def forward(z: Tensor, diagonal: int, upper: bool) -> Tensor:
        return torch.triu(z, diagonal) if upper else torch.tril(z, diagonal)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.diagonal, ctx.upper = inputs

    @staticmethod
    def backward(ctx, delta: Tensor):
        keep = torch.triu if ctx.upper else torch.tril
        return keep(delta, ctx.diagonal), None, None  # ∂a/∂z = 1 on the kept triangle

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        return (torch.triu if ctx.upper else torch.tril)(tangent_z, ctx.diagonal)


def _triangle(name: str, input: Tensor, diagonal: int, upper: bool) -> Tensor:
    _check_tensor(name, "input", input)
    if input.dim() < 2:
        raise LayerInputError(f"{name}: input shape {shape(input)} needs at least 2 dimensions")
    if not _tracked(input):
        return torch.triu(input, diagonal) if upper else torch.tril(input, diagonal)
    return Triangle.call(input, operator.index(diagonal), upper)


@_named_errors("tril")
def tril(input: Tensor, diagonal: int = 0) -> Tensor:
    """Like ``torch.tril``. Backward: the lower triangle of δ."""
    return _triangle("tril", input, diagonal, False)


@_named_errors("triu")
def triu(input: Tensor, diagonal: int = 0) -> Tensor:
    """Like ``torch.triu``. Backward: the upper triangle of δ."""
    return _triangle("triu", input, diagonal, True)


class MaskedFill(ManualFunction):
    """a = value where mask, z elsewhere (z and mask broadcast together; value a number or a 0-d tensor).

    ∂C/∂z     = Σ_broadcast δ ⊙ [¬mask]
    ∂C/∂value = Σ δ ⊙ [mask]        (the one value was copied to every masked entry)
    """

    @staticmethod
    def forward(z: Tensor, mask: Tensor, value) -> Tensor:
        return torch.masked_fill(z, mask, value)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, mask, value = inputs
        ctx.save_for_backward(mask)
        ctx.save_for_forward(mask)
        ctx.z_shape, ctx.out_shape, ctx.out_dtype = tuple(z.shape), tuple(output.shape), output.dtype
        ctx.value_meta = (value.dtype, value.device) if isinstance(value, Tensor) else None

    @staticmethod
    def backward(ctx, delta: Tensor):
        (mask,) = ctx.saved_tensors
        grad_z = grad_value = None
        if ctx.needs_input_grad[0]:
            grad_z = _unbroadcast(delta.masked_fill(mask, 0), ctx.z_shape)  # ∂a/∂z = [¬mask]
        if ctx.needs_input_grad[2]:
            grad_value = _cast_back(torch.where(mask, delta, 0).sum(), *ctx.value_meta)  # ∂a/∂value = [mask]
        return grad_z, None, grad_value

    @staticmethod
    def jvp(ctx, tangent_z, _, tangent_value):
        (mask,) = ctx.saved_tensors
        tangent_a = torch.zeros(ctx.out_shape, dtype=ctx.out_dtype, device=mask.device)
        if tangent_z is not None:
            tangent_a = tangent_a + tangent_z.masked_fill(mask, 0)  # ∂a/∂z · ż
        if tangent_value is not None:
            tangent_a = tangent_a + torch.where(mask, tangent_value, 0)  # ∂a/∂value · v̇
        return tangent_a


@_named_errors("masked_fill")
def masked_fill(input: Tensor, mask: Tensor, value: Number | Tensor) -> Tensor:
    """Like ``torch.masked_fill``. Backward: δ where not masked to ``input``, Σ δ over the mask to a tensor
    ``value``."""
    _check_tensor("masked_fill", "input", input)
    _check_tensor("masked_fill", "mask", mask)
    if mask.dtype != torch.bool:
        raise LayerInputError(f"masked_fill: mask must be a bool tensor, got dtype {mask.dtype}")
    if isinstance(value, Tensor) and value.dim() != 0:
        raise LayerInputError(f"masked_fill: value must be a number or a 0-d tensor, got value shape {shape(value)}")
    if not _tracked(input, value):
        return torch.masked_fill(input, mask, value)
    torch.broadcast_shapes(input.shape, mask.shape)
    return MaskedFill.call(input, mask, value)


# -- casts -----------------------------------------------------------------------------------------------
class To(ManualFunction):
    """a = z in another dtype and/or on another device: ∂C/∂z = δ cast back to z's dtype and device."""

    @staticmethod
    def forward(z: Tensor, device: torch.device, dtype: torch.dtype, non_blocking: bool,
                memory_format: torch.memory_format) -> Tensor:
        return z.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=True, memory_format=memory_format)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, ctx.device, ctx.dtype, _, _ = inputs
        ctx.z_meta = (z.dtype, z.device)

    @staticmethod
    def backward(ctx, delta: Tensor):
        return _cast_back(delta, *ctx.z_meta), None, None, None, None  # the identity, back where z lives

    @staticmethod
    def jvp(ctx, tangent_z: Tensor, *_):
        return tangent_z.to(device=ctx.device, dtype=ctx.dtype)


def _same_device(have: torch.device, want: torch.device) -> bool:
    if have.type != want.type:
        return False
    if want.index is None and have.index is not None and have.type != "cpu":
        return have.index == torch.accelerator.current_device_index()
    return have.index == want.index or want.index is None


def _converted(input: Tensor, device, dtype, non_blocking: bool, copy: bool, memory_format) -> Tensor:
    device = input.device if device is None else torch.device(device)
    dtype = input.dtype if dtype is None else dtype
    memory_format = torch.preserve_format if memory_format is None else memory_format
    unchanged = (dtype == input.dtype and _same_device(input.device, device)
                 and (memory_format == torch.preserve_format or input.is_contiguous(memory_format=memory_format)))
    if unchanged and not copy:
        return input  # torch returns the input itself
    if not _tracked(input) or not (dtype.is_floating_point or dtype.is_complex):
        return input.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy, memory_format=memory_format)
    return To.call(input, device, dtype, non_blocking, memory_format)


@_named_errors("to")
def to(input: Tensor, *args, **kwargs) -> Tensor:
    """Like ``Tensor.to`` in all its forms: ``to(dtype)``, ``to(device, dtype)``, ``to(other)``, with
    ``non_blocking``, ``copy`` and ``memory_format``. ``input`` itself when nothing changes (as torch).
    Backward: δ cast back to the input's dtype and device."""
    _check_tensor("to", "input", input)
    args, copy = list(args), kwargs.pop("copy", False)
    copy_at = 2 if args and isinstance(args[0], Tensor | torch.dtype) else 3  # to(dtype|other, non_blocking, copy)
    if len(args) > copy_at:
        copy = args.pop(copy_at)
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    return _converted(input, device, dtype, non_blocking, copy, memory_format)


def _cast(name: str, dtype: torch.dtype) -> Callable:
    def cast(input: Tensor, memory_format: torch.memory_format = torch.preserve_format) -> Tensor:
        _check_tensor(name, "input", input)
        return _converted(input, None, dtype, False, False, memory_format)

    cast.__name__ = cast.__qualname__ = name
    cast.__doc__ = f"Like ``Tensor.{name}``: ``to(input, {dtype})``. Backward: δ cast back."
    return _named_errors(name)(cast)


float = _cast("float", torch.float32)  # torch's names, shadowing builtins here
double = _cast("double", torch.float64)
half = _cast("half", torch.float16)
bfloat16 = _cast("bfloat16", torch.bfloat16)


@_named_errors("type_as")
def type_as(input: Tensor, other: Tensor) -> Tensor:
    """Like ``Tensor.type_as``: ``to(input, other.dtype)`` on other's device. Backward: δ cast back."""
    _check_tensor("type_as", "input", input)
    _check_tensor("type_as", "other", other)
    return _converted(input, other.device, other.dtype, False, False, None)


# -- in-place writes ---------------------------------------------------------------------------------------
def _leaf_needing_grad(t: Tensor) -> bool:
    """A leaf that requires grad (or a view of one): torch refuses in-place writes to it while grad mode is on."""
    if not torch.is_grad_enabled() or not t.requires_grad:
        return False
    base = t if t._base is None else t._base
    return base.is_leaf and base.requires_grad


#: torch.compile of a Function that writes its input in place (mark_dirty) loses gradients before torch
#: 2.13 (seen with 2.11: the overwritten entries still pass δ); there such writes run as torch's own
_COMPILES_IN_PLACE_FUNCTIONS = torch.torch_version.TorchVersion(torch.__version__) >= (2, 13)


def _native_in_place(*tensors) -> bool:
    """Whether an in-place write runs as torch's own (it only moves numbers): under torch.func, which cannot
    batch a Function that marks its input dirty (as the in-place activations do), and under torch.compile
    before torch 2.13."""
    if torch.compiler.is_compiling():
        return not _COMPILES_IN_PLACE_FUNCTIONS
    return any(isinstance(t, Tensor) and is_functorch_wrapped_tensor(t) for t in tensors)


class CopyInto(ManualFunction):
    """z ← src (broadcast to z's shape, cast to its dtype and device), in place.

    ∂C/∂z_old = 0                          (every old number was overwritten)
    ∂C/∂src   = Σ_broadcast δ, cast back to src's dtype and device
    """

    @staticmethod
    def forward(z: Tensor, src: Tensor, non_blocking: bool) -> Tensor:
        z.copy_(src, non_blocking)
        return z

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, src, _ = inputs
        ctx.mark_dirty(z)
        ctx.src_shape, ctx.src_meta = tuple(src.shape), (src.dtype, src.device)
        ctx.z_shape, ctx.z_meta = tuple(z.shape), (z.dtype, z.device)

    @staticmethod
    def backward(ctx, delta: Tensor):
        grad_z = grad_src = None
        if ctx.needs_input_grad[0]:
            grad_z = torch.zeros_like(delta)  # ∂z_new/∂z_old = 0: every old number was overwritten
        if ctx.needs_input_grad[1]:
            # ∂z_new/∂src = 1 per copy: Σ over the copies, summed in src's dtype as torch does
            grad_src = _unbroadcast(_cast_back(delta, *ctx.src_meta), ctx.src_shape)
        return grad_z, grad_src, None

    @staticmethod
    def jvp(ctx, tangent_z, tangent_src, _):
        if tangent_z is None:
            dtype, device = ctx.z_meta
            return tangent_src.to(device=device, dtype=dtype).expand(ctx.z_shape).clone()
        return tangent_z.zero_() if tangent_src is None else tangent_z.copy_(tangent_src)


@_named_errors("copy_")
def _copy_into(input: Tensor, src: Tensor, non_blocking: bool) -> Tensor:
    if not _tracked(input, src) or _native_in_place(input, src):
        return input.copy_(src, non_blocking)
    try:
        fits = torch.broadcast_shapes(src.shape, input.shape) == input.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise LayerInputError(f"copy_: src shape {shape(src)} does not broadcast to input shape {shape(input)}")
    return CopyInto.call(input, src, non_blocking)


def copy_(input: Tensor, src: Tensor, non_blocking: bool = False) -> Tensor:
    """Like ``Tensor.copy_``: ``input`` overwritten with ``src`` (broadcast, cast), in place; returns ``input``.
    Backward: none to the old ``input``, Σ_broadcast δ to ``src``. Where ``input`` stands for a view
    (module doc), its base is written too."""
    _check_tensor("copy_", "input", input)
    _check_tensor("copy_", "src", src)
    if _leaf_needing_grad(input):
        return input.copy_(src, non_blocking)  # torch's own error for a leaf that requires grad
    _copy_into(input, src, non_blocking)
    _write_through(input)
    return input


class SetItem(ManualFunction):
    """z[index] ← value (broadcast to the indexed shape), in place.

    ∂C/∂z_old  = δ with the written entries set to 0 (they were overwritten)
    ∂C/∂value  = Σ_broadcast δ[index] (each written entry passes its δ to the value entry it copies)
    """

    @staticmethod
    def forward(z: Tensor, value, template: tuple, *tensors: Tensor) -> Tensor:
        z[_filled(template, tensors)] = value
        return z

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, value, ctx.template, *tensors = inputs
        ctx.mark_dirty(z)
        ctx.z_shape, ctx.z_dtype = tuple(z.shape), z.dtype
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)
        if isinstance(value, Tensor):
            ctx.value_shape, ctx.value_meta = tuple(value.shape), (value.dtype, value.device)
            kept = next((k for k, n in enumerate(value.shape) if n != 1), value.dim())
            ctx.value_stripped = tuple(value.shape[kept:])  # torch drops leading size-1 dims of value first

    @staticmethod
    def backward(ctx, delta: Tensor):
        index = _filled(ctx.template, ctx.saved_tensors)
        grads = [None] * len(ctx.needs_input_grad)
        if ctx.needs_input_grad[0]:
            grad_z = delta.clone()
            grad_z[index] = 0  # ∂z_new/∂z_old = 0 where written, 1 elsewhere
            grads[0] = grad_z
        if ctx.needs_input_grad[1]:
            written = _cast_back(delta[index], *ctx.value_meta)  # ∂z_new[index]/∂value = 1 per copy of an entry
            grads[1] = _unbroadcast(written, ctx.value_stripped).reshape(ctx.value_shape)
        return tuple(grads)

    @staticmethod
    def jvp(ctx, tangent_z, tangent_value, *_):
        index = _filled(ctx.template, ctx.saved_tensors)
        if tangent_z is None:
            tangent_z = torch.zeros(ctx.z_shape, dtype=ctx.z_dtype, device=tangent_value.device)
        tangent_z[index] = 0 if tangent_value is None else tangent_value
        return tangent_z


@_named_errors("setitem")
def _set_item(input: Tensor, index, value) -> None:
    if not _tracked(input, value) or _native_in_place(input, value):
        input[index] = value
        return
    if not isinstance(value, Tensor | Number) or (isinstance(value, complex) and not input.is_complex()):
        raise _LayerTypeError(f"setitem: value must be a Tensor or a real number, got {type(value).__name__}")
    items = _index_items(index, input.device)
    template, tensors = _template(items)
    SetItem.call(input, value, template, *tensors)


def setitem(input: Tensor, index, value: Tensor | Number) -> None:
    """Like ``input[index] = value`` (every index :func:`getitem` takes; value a tensor or a number), in
    place. Backward: δ with the written entries zeroed to the old ``input``, Σ_broadcast δ[index] to
    ``value``. Where ``input`` stands for a view (module doc), its base is written too."""
    _check_tensor("setitem", "input", input)
    if _leaf_needing_grad(input):
        input[index] = value  # torch's own error for a leaf that requires grad
        return
    _set_item(input, index, value)
    _write_through(input)
