"""Routing: inside a converted model's forward, torch's own calls go to the hand-written Functions.

Real models do not only call layers: their ``forward`` says ``F.relu(x)``, ``x @ w``, ``x + h``,
``x.view(b, -1)``, ``q.transpose(1, 2)``, ``F.scaled_dot_product_attention(q, k, v)``. ``convert``
wraps the forward of every module that computes with code of its own (the root, the user's modules,
torch modules without a drop-in such as ``nn.TransformerEncoderLayer``). While such a forward runs,
a ``TorchFunctionMode`` sees every call of torch, and

- a call that needs a gradient (grad mode on, some tensor argument requires grad) and has a
  hand-written rule in :data:`RULES` runs that rule: ``x + h`` becomes ``functional.ops.add(x, h)``;
- anything else runs as torch runs it. If it builds a native gradient node (an operation without a
  hand-written rule, say ``F.interpolate``), that node is named by :func:`manual_backprop.coverage`,
  a warning names it once, and with ``convert(model, strict=True)`` it is an error naming the
  operation and the module path.

Calls outside a converted forward are never touched; ``restore(model)`` removes the wrappers.
Drop-in modules need no routing (their forward is hand-written), so they get no wrapper; and when a
routed forward calls one, the mode is set aside while the drop-in's forward runs (:func:`set_aside`,
applied by every drop-in's ``forward``), so that its shape checks and its Functions' own torch calls
do not each pass through the mode's handler, a Python call each (a tenth of a small MLP's step).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._C import _pop_torch_function_stack, _push_on_torch_function_stack
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor
from torch.overrides import TorchFunctionMode

import manual_backprop.functional as MF
from manual_backprop.audit import _is_manual_node
from manual_backprop.errors import LayerInputError, UnsupportedOperationError
from manual_backprop.functional import ops, packing, shape


# -- the rules -------------------------------------------------------------------------------------
def _in_place(rule: Callable, needs_old_value: bool = True) -> Callable:
    """``x.op_(...)``: computed by ``rule`` out of place, then written over ``x`` by the manual ``copy_``
    (whose backward gives the overwritten value no gradient). A rule whose backward reads ``x`` gets a
    manual clone of it, since ``x`` is about to change."""

    def in_place(x: Tensor, *args, **kwargs) -> Tensor:
        result = rule(shape.clone(x) if needs_old_value else x, *args, **kwargs)
        return shape.copy_(x, result)

    return in_place


def _reverse(rule: Callable) -> Callable:
    """``other ∘ x`` reached as ``x.__rop__(other)``."""
    return lambda x, other: rule(other, x)


def _rsub(x: Tensor, other, *, alpha=1) -> Tensor:
    return ops.sub(other, x, alpha=alpha) if isinstance(other, Tensor) else ops.add(ops.mul(x, -alpha), other)


def _rdiv(x: Tensor, other) -> Tensor:
    """``other / x``: torch computes it as reciprocal(x) · other, and so does this."""
    return ops.mul(ops.reciprocal(x), other)


def _tensor_split(self: Tensor, split_size, dim: int = 0) -> tuple[Tensor, ...]:
    """``Tensor.split`` names its size ``split_size`` where ``torch.split`` says ``split_size_or_sections``."""
    return shape.split(self, split_size, dim)


def _softmax_method(rule: Callable) -> Callable:
    """torch.softmax(input, dim, dtype) and Tensor.softmax(dim, dtype): dtype comes third, where
    ``F.softmax`` has ``_stacklevel``."""
    return lambda input, dim=None, dtype=None, **kwargs: rule(input, dim, dtype=dtype, **kwargs)


def _build_rules() -> dict[Callable, Callable]:
    """torch callable → the hand-written function that computes it (same arguments, same result)."""
    table: dict[Callable, Callable] = {}

    def route(rule: Callable, *callables) -> None:
        for c in callables:
            table[c] = rule

    T = torch.Tensor
    # every torch.nn.functional twin takes the same arguments (tests/test_functional.py holds them to it)
    for name in MF.__all__:
        if hasattr(F, name):
            route(getattr(MF, name), getattr(F, name))
    route(MF.relu, torch.relu, T.relu)
    route(functools.partial(MF.relu, inplace=True), torch.relu_, T.relu_, F.relu_)
    route(MF.sigmoid, torch.sigmoid, T.sigmoid)
    route(MF.tanh, torch.tanh, T.tanh)
    route(_softmax_method(MF.softmax), torch.softmax, T.softmax)
    route(_softmax_method(MF.log_softmax), torch.log_softmax, T.log_softmax)
    route(MF.dropout, torch.dropout)

    # arithmetic: x + y reaches the mode as Tensor.add, 2 - x as Tensor.__rsub__
    route(ops.add, torch.add, T.add, T.__add__, T.__radd__)
    route(ops.sub, torch.sub, torch.subtract, T.sub, T.subtract, T.__sub__)
    route(_rsub, torch.rsub, T.__rsub__)
    route(ops.mul, torch.mul, torch.multiply, T.mul, T.multiply, T.__mul__, T.__rmul__)
    route(ops.div, torch.div, torch.divide, torch.true_divide, T.div, T.divide, T.true_divide, T.__truediv__)
    route(_rdiv, T.__rdiv__, T.__rtruediv__)
    route(ops.pow, torch.pow, T.pow, T.__pow__)
    route(_reverse(ops.pow), T.__rpow__)
    route(ops.matmul, torch.matmul, T.matmul, T.__matmul__)
    route(_reverse(ops.matmul), T.__rmatmul__)
    route(ops.mm, torch.mm, T.mm)
    route(ops.bmm, torch.bmm, T.bmm)
    route(ops.addmm, torch.addmm, T.addmm)
    route(ops.baddbmm, torch.baddbmm, T.baddbmm)
    route(ops.einsum, torch.einsum)
    route(ops.where, torch.where, T.where)
    for name in ("exp", "log", "sqrt", "rsqrt", "square", "sin", "cos", "abs", "neg", "reciprocal", "sign", "erf",
                 "log1p", "expm1", "clamp", "clamp_min", "clamp_max", "sum", "mean", "var", "std", "amax", "amin",
                 "max", "min", "maximum", "minimum", "logsumexp", "prod", "cumsum", "norm"):
        route(getattr(ops, name), getattr(torch, name), getattr(T, name))
    route(ops.abs, torch.absolute, T.absolute, T.__abs__)
    route(ops.neg, torch.negative, T.negative, T.__neg__)
    route(ops.clamp, torch.clip, T.clip)
    route(ops.vector_norm, torch.linalg.vector_norm)
    route(ops.normalize, F.normalize)
    route(ops.cosine_similarity, F.cosine_similarity)

    # in place: x += y reaches the mode as Tensor.add_
    for name, rule, reads_x in (("add", ops.add, False), ("sub", ops.sub, False), ("mul", ops.mul, True),
                                ("div", ops.div, True), ("pow", ops.pow, True), ("clamp", ops.clamp, True),
                                ("clamp_min", ops.clamp_min, True), ("clamp_max", ops.clamp_max, True),
                                ("exp", ops.exp, True), ("sqrt", ops.sqrt, True), ("neg", ops.neg, False),
                                ("masked_fill", shape.masked_fill, False)):
        route(_in_place(rule, reads_x), getattr(T, f"{name}_"))
    route(_in_place(ops.add, False), T.__iadd__)
    route(_in_place(ops.sub, False), T.__isub__)
    route(_in_place(ops.mul), T.__imul__)
    route(_in_place(ops.div), T.__itruediv__)
    route(_in_place(MF.sigmoid), T.sigmoid_)
    route(_in_place(MF.tanh), T.tanh_)
    route(shape.copy_, T.copy_)
    route(shape.setitem, T.__setitem__)

    # moving numbers: shapes, indexing, joining and splitting, casts
    route(shape.getitem, T.__getitem__)
    route(shape.view, T.view)
    route(shape.reshape, torch.reshape, T.reshape)
    route(shape.view_as, T.view_as)
    route(shape.reshape_as, T.reshape_as)
    route(shape.flatten, torch.flatten, T.flatten)
    route(shape.unflatten, torch.unflatten, T.unflatten)
    route(shape.squeeze, torch.squeeze, T.squeeze)
    route(shape.unsqueeze, torch.unsqueeze, T.unsqueeze)
    route(shape.transpose, torch.transpose, T.transpose)
    route(shape.swapaxes, torch.swapaxes, T.swapaxes)
    route(shape.swapdims, torch.swapdims, T.swapdims)
    route(shape.t, torch.t, T.t)
    route(shape.permute, torch.permute, T.permute)
    route(shape.movedim, torch.movedim, T.movedim, torch.moveaxis, T.moveaxis)
    route(lambda x: shape.permute(x, tuple(reversed(range(x.dim())))), T.T.__get__)
    route(lambda x: shape.transpose(x, -2, -1), T.mT.__get__)
    route(shape.expand, T.expand)
    route(shape.expand_as, T.expand_as)
    route(shape.repeat, T.repeat)
    route(shape.contiguous, T.contiguous)
    route(shape.clone, torch.clone, T.clone)
    route(shape.select, torch.select, T.select)
    route(shape.narrow, torch.narrow, T.narrow)
    route(shape.cat, torch.cat, torch.concat)
    route(shape.concatenate, torch.concatenate)
    route(shape.stack, torch.stack)
    route(shape.split, torch.split)
    route(_tensor_split, T.split)
    route(shape.chunk, torch.chunk, T.chunk)
    route(shape.unbind, torch.unbind, T.unbind)
    route(shape.gather, torch.gather, T.gather)
    route(shape.index_select, torch.index_select, T.index_select)
    route(shape.flip, torch.flip, T.flip)
    route(shape.roll, torch.roll, T.roll)
    route(shape.tril, torch.tril, T.tril)
    route(shape.triu, torch.triu, T.triu)
    route(shape.masked_fill, torch.masked_fill, T.masked_fill)
    route(shape.to, T.to)
    route(shape.type_as, T.type_as)
    for name in ("float", "double", "half", "bfloat16"):
        route(getattr(shape, name), getattr(T, name))
    # packed sequences: torch.nn.utils.rnn.pack_padded_sequence / pad_packed_sequence call these
    route(packing._pack_padded_sequence, torch._pack_padded_sequence)
    route(packing._pad_packed_sequence, torch._pad_packed_sequence)
    return table


#: torch callable → the hand-written function that computes it (same arguments, same result)
RULES: dict[Callable, Callable] = _build_rules()


# -- the mode --------------------------------------------------------------------------------------
@dataclass
class _Frame:
    path: str
    type_name: str
    strict: bool
    warned: set


class _State(threading.local):
    def __init__(self) -> None:
        self.frames: list[_Frame] = []
        self.routing = False  # the mode is on (entered by a routed forward, not set aside by a drop-in)


_state = _State()


def _needs_grad(args, kwargs) -> bool:
    """Grad mode is on and some tensor argument (or a tensor in a list argument) requires grad.

    Plain loops, no generator expressions: torch.compile traces this function without a graph break."""
    if not torch.is_grad_enabled():
        return False
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor):
            if a.requires_grad:
                return True
        elif isinstance(a, list | tuple):
            for t in a:
                if isinstance(t, Tensor) and t.requires_grad:
                    return True
    return False


def op_name(func: Callable) -> str:
    """``torch.nn.functional.interpolate``, ``Tensor.cumsum``, ``torch.sort``: how a user wrote the call."""
    name = getattr(func, "__name__", None) or repr(func)
    qualname = getattr(func, "__qualname__", name)
    module = getattr(func, "__module__", None)
    if qualname.startswith(("TensorBase.", "Tensor.")) or module == "torch._tensor":
        return f"Tensor.{name}"
    if qualname.startswith("getset_descriptor"):
        return f"Tensor.{getattr(getattr(func, '__self__', None), '__name__', name)}"
    if module in ("torch._C._nn", "torch.nn.functional"):
        return f"torch.nn.functional.{name}"
    if module in ("torch._C._linalg",):
        return f"torch.linalg.{name.removeprefix('linalg_')}"
    if module in (None, "torch", "torch.functional") or qualname.startswith("_VariableFunctionsClass"):
        return f"torch.{name}"
    return f"{module}.{name}"


def _native_nodes(output) -> list[str]:
    outputs = output if isinstance(output, list | tuple) else (output,)
    return [type(t.grad_fn).__name__ for t in outputs
            if isinstance(t, Tensor) and t.grad_fn is not None and not _is_manual_node(t.grad_fn)]


def _lowering(args) -> bool:
    """Whether these are the fake or functional tensors of torch.compile lowering a captured graph.

    (Dynamo sees plain tensors while it captures, so it routes; ``torch.compiler.is_compiling()``
    must not be asked here: in this handler it makes dynamo's eager fallback after a graph break
    return wrong values, e.g. ``x.size()`` giving ``x.device``, in torch 2.13.)"""
    for a in args:
        if isinstance(a, FakeTensor | FunctionalTensor):
            return True
    return False


class _Router(TorchFunctionMode):
    """Sends each call that needs a gradient to its hand-written rule; see the module doc."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)  # no gradient is recorded (inside a Function's forward, say): nothing to do
        if _lowering(args):
            return func(*args, **kwargs)  # torch.compile is lowering a graph it captured already: leave it be
        rule = RULES.get(func)
        if rule is not None and _needs_grad(args, kwargs):
            try:
                return rule(*args, **kwargs)
            except TypeError:  # a calling form torch accepts and the rule does not: torch computes it,
                rule = None    # and the check below names the native node it makes
        output = func(*args, **kwargs)
        if rule is None and _state.frames and _needs_grad(args, kwargs):
            natives = _native_nodes(output)
            if natives:
                _native_call(func, natives[0])
        return output


def _native_call(func: Callable, node: str) -> None:
    """A native gradient node was just built inside a converted forward: an error or a warning, once."""
    frame = _state.frames[-1]
    where = f"layer {frame.path!r} ({frame.type_name})"
    name = op_name(func)
    if frame.strict:
        raise UnsupportedOperationError(
            f"{where}: {name} has no hand-written backward (its gradient would come from native {node}); "
            "convert(strict=True) allows none. Run manual_backprop.coverage(model, *inputs) for every such call."
        )
    if (name, frame.path) not in frame.warned:
        frame.warned.add((name, frame.path))
        warnings.warn(
            f"{where}: {name} has no hand-written backward, so its gradient comes from native {node}. "
            "manual_backprop.coverage(model, *inputs) lists every such call; convert(strict=True) makes it an error.",
            stacklevel=3,
        )


_ROUTER = _Router()
# Under torch.compile, a graph break (torch's own ``bool((mask == causal).all())`` in nn.TransformerEncoder, say)
# leaves the rest of that module to run eagerly, where every torch call enters the handler as a frame of its own.
# Dynamo would then compile each such frame and the rules it calls (ops.add, a Function's call, ...) one by one,
# tiny graphs with guards of their own (the zoo transformer: 13 graphs, native 4). Entered from eager code, the
# handler and all it calls run eagerly, as torch's own modules do there (10 graphs; the step as fast); where dynamo
# traces a routed forward, it still inlines the handler (the strategy is read when a frame is entered, not inlined).
try:
    from torch._dynamo.eval_frame import FrameAction, FrameExecStrategy, set_code_exec_strategy
except ImportError:  # an older torch has no per-code strategy: those frames are compiled one by one there
    pass
else:
    set_code_exec_strategy(_Router.__torch_function__.__code__, FrameExecStrategy(FrameAction.SKIP, FrameAction.SKIP))


class RoutedForward:
    """A converted module's ``forward``: the module's own forward, with its torch calls routed.

    Set on the module instance by ``convert`` (``module.forward``), removed by ``restore``. The
    outermost routed forward (or the first one inside a drop-in, which sets the mode aside) enters
    the mode; inner ones only record their module path, for errors.
    """

    def __init__(self, module: nn.Module, path: str, strict: bool) -> None:
        self.module, self.path, self.strict = module, path, strict
        self.warned: set = set()

    @property
    def __wrapped__(self) -> Callable:
        """The module's own forward (``inspect.signature(model.forward)`` reads it)."""
        return type(self.module).forward.__get__(self.module)

    def __call__(self, *args, **kwargs):
        frame = _Frame(self.path or "(root)", type(self.module).__name__, self.strict, self.warned)
        if isinstance(self.module, nn.TransformerEncoder) and len(args) < 4 and kwargs.get("is_causal") is None \
                and torch.compiler.is_compiling():
            # is_causal=None makes nn.TransformerEncoder ask bool((mask == causal).all()), a value dynamo cannot
            # trace: the graph breaks there and the whole encoder runs eagerly. False is torch's own documented
            # safe answer (the mask is applied as given, the same numbers), and the encoder compiles with the rest.
            kwargs = {**kwargs, "is_causal": False}
        _state.frames.append(frame)
        try:
            if not _state.routing:
                with _routing_on():
                    return type(self.module).forward(self.module, *args, **kwargs)
            return type(self.module).forward(self.module, *args, **kwargs)
        except LayerInputError as err:
            if getattr(err, "layer", None) is not None:
                raise
            named = LayerInputError(f"layer {frame.path!r} ({frame.type_name}): {err}")
            named.layer = frame.path
            raise named from None
        finally:
            _state.frames.pop()

    def __getstate__(self):
        return {"module": self.module, "path": self.path, "strict": self.strict}

    def __setstate__(self, state) -> None:
        self.__dict__.update(state, warned=set())

    def __repr__(self) -> str:
        return f"<routed forward of {self.path or '(root)'!r} ({type(self.module).__name__})>"


@contextlib.contextmanager
def _routing_on():
    _state.routing = True
    try:
        with _ROUTER:
            yield
    finally:
        _state.routing = False


def set_aside(forward: Callable) -> Callable:
    """Decorates a drop-in module's ``forward``, which calls hand-written Functions only: called from a
    routed forward, it runs with the mode set aside. (Not while compiling: dynamo traces the mode's
    handler and compiles it away. Nor under a mode entered above this one, by the user, say.)"""

    @functools.wraps(forward)
    def without_routing(*args, **kwargs):
        if not _state.routing or torch.compiler.is_compiling() or torch.overrides._get_current_function_mode() \
                is not _ROUTER:
            return forward(*args, **kwargs)
        _state.routing = False
        mode = _pop_torch_function_stack()  # what torch.overrides._pop_mode_temporarily does, without a generator
        try:
            return forward(*args, **kwargs)
        finally:
            _push_on_torch_function_stack(mode)
            _state.routing = True

    return without_routing


@contextlib.contextmanager
def _routed(frame: _Frame | None):
    if frame is None or _state.routing:
        yield  # not called from a converted forward, or routed already
        return
    _state.frames.append(frame)
    try:
        with _routing_on():
            yield
    finally:
        _state.frames.pop()


def checkpoint_context() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """``context_fn`` for ``torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, context_fn=...)``
    inside a converted forward, when ``fn`` is a plain function rather than a module.

    Checkpointing runs ``fn`` again during backward, outside the forward and so outside the routing;
    a converted module routes itself again, a plain function does not, and torch would find the
    recomputation different from the forward. With this ``context_fn`` the recomputation is routed
    as the forward was."""
    return contextlib.nullcontext(), _routed(_state.frames[-1] if _state.frames else None)


def is_routed(module: nn.Module) -> bool:
    return isinstance(module.__dict__.get("forward"), RoutedForward)


def install(module: nn.Module, path: str, strict: bool) -> None:
    """Route the torch calls of ``module``'s own forward (again, with a new path, when converted twice)."""
    own = module.__dict__.get("forward")
    if own is not None and not isinstance(own, RoutedForward):
        raise TypeError(
            f"convert: module {path or '(root)'!r} ({type(module).__name__}) has a forward set on the instance; "
            "manual_backprop routes a module's class forward only"
        )
    module.forward = RoutedForward(module, path, strict)


def uninstall(module: nn.Module) -> None:
    if is_routed(module):
        del module.__dict__["forward"]
