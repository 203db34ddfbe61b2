"""The base of every hand-written Function: what they all need, written once.

- ``generate_vmap_rule = True``: ``torch.func.vmap`` batches forward and backward, so
  ``vmap(grad(...))`` gives per-sample gradients.
- **Autocast.** Backward runs under the autocast state its forward ran under, so a δ in bfloat16
  meets weights in float32 as it did in the forward. (This is what ``torch.amp.custom_fwd`` /
  ``custom_bwd`` do; they do not work with ``setup_context``, pytorch issue 132388.)
- **Autocast to float32.** A Function marked with :func:`float32_under_autocast` (the losses:
  torch's autocast runs them in float32 too) gets its float16/bfloat16 inputs cast to float32 by
  :class:`Cast` and runs with autocast off, when autocast is on; its gradients go back in the
  inputs' own dtypes.
- **Forward mode and torch.compile.** A Function may define ``jvp`` (the forward-mode derivative,
  for ``torch.func.jvp`` / ``jacfwd``). Dynamo cannot trace a Function with a custom ``jvp``, so
  the ``jvp`` moves to a twin subclass, ``cls.with_jvp``, and the class itself keeps none.
  :meth:`ManualFunction.call` applies the twin in eager mode and the class itself while
  compiling. Public wrappers call ``SomeFunction.call(...)``.
- **Per-call cost.** ``Function.apply`` binds its arguments to ``forward``'s signature with
  ``inspect.signature`` on every call (to fill in defaults for ``setup_context``). ``call`` passes
  every argument already, so in eager mode it goes straight to the C++ ``apply`` when the count
  matches; the binding was a third of a small layer's Python time.
"""

from __future__ import annotations

import inspect

import torch
from torch._functorch.utils import unwrap_dead_wrappers


def _positional_arity(forward) -> tuple[int, bool]:
    """(number of positional parameters, whether ``*args`` follows) of a ``forward``."""
    kinds = [p.kind for p in inspect.signature(forward).parameters.values()]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(k in positional for k in kinds), inspect.Parameter.VAR_POSITIONAL in kinds


def _apply(function: type[torch.autograd.Function], args: tuple):
    """``function.apply(*args)``; with every parameter of ``forward`` given (nothing to bind) and no
    ``torch.func`` transform active, torch's own ``apply`` would only unwrap dead functorch wrappers
    and call the C++ ``apply``, so this does just that."""
    arity, varargs = function._arity
    if (len(args) == arity or (varargs and len(args) > arity)) and not torch._C._are_functorch_transforms_active():
        return super(torch.autograd.Function, function).apply(*unwrap_dead_wrappers(args))
    return function.apply(*args)


def may_write_in_place(*operands) -> bool:
    """Whether a backward may reuse a buffer it made itself in place (one full-size tensor less): not while
    a second derivative is being built (grad mode on: autograd would need the buffer as it was), nor when
    a vmap batches one of ``operands`` that is to be written into an unbatched buffer."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():  # (compiled, inductor plans the memory itself)
        return False
    functorch = torch._C._functorch
    return not any(functorch.is_functorch_wrapped_tensor(t) or functorch.is_legacy_batchedtensor(t) for t in operands)


def _device_type(inputs) -> str:
    return next((t.device.type for t in inputs if isinstance(t, torch.Tensor)), "cpu")


def _autocast_state(inputs) -> tuple[str, torch.dtype] | None:
    if not torch._C._is_any_autocast_enabled():
        return None
    device = _device_type(inputs)
    return (device, torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else None


def _low_precision(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16)


class ManualFunction(torch.autograd.Function):
    """Subclass this, define ``forward``, ``setup_context``, ``backward`` (and ``jvp``)."""

    generate_vmap_rule = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._arity = _positional_arity(cls.forward)
        if cls.__dict__.get("_twin") or "backward" not in cls.__dict__:
            return  # a base class with no backward of its own, or a twin already wrapped
        setup_context, backward = cls.setup_context, cls.backward

        def setup_context_remembering_autocast(ctx, inputs, output):
            ctx.autocast = _autocast_state(inputs)
            setup_context(ctx, inputs, output)

        def backward_under_forward_autocast(ctx, *grads):
            if ctx.autocast is None:
                return backward(ctx, *grads)
            device, dtype = ctx.autocast
            with torch.autocast(device, dtype=dtype):
                return backward(ctx, *grads)

        cls.setup_context = staticmethod(setup_context_remembering_autocast)
        cls.backward = staticmethod(backward_under_forward_autocast)
        cls.with_jvp = cls
        if "jvp" in cls.__dict__:
            twin_body = {"_twin": True, "__module__": cls.__module__, "__doc__": cls.__doc__,
                         "jvp": cls.__dict__["jvp"]}
            cls.jvp = torch.autograd.Function.jvp
            cls.with_jvp = type(cls.__name__, (cls,), twin_body)

    @classmethod
    def call(cls, *args):
        """Apply the Function: with its ``jvp`` in eager mode, without it inside ``torch.compile``."""
        return _call(cls, args)


def _call(cls: type[ManualFunction], args: tuple):
    """What ``ManualFunction.call`` does, for the overrides of ``call`` below to share."""
    return cls.apply(*args) if torch.compiler.is_compiling() else _apply(cls.with_jvp, args)


def _call_in_float32(cls, *args):
    """``call``, with half-precision inputs cast to float32 and autocast off while autocast is on."""
    if not torch._C._is_any_autocast_enabled():  # the usual case, without looking for the device
        return _call(cls, args)
    device = _device_type(args)
    if torch.is_autocast_enabled(device):
        args = tuple(Cast.call(a, torch.float32) if _low_precision(a) else a for a in args)
        with torch.autocast(device, enabled=False):
            return _call(cls, args)
    return _call(cls, args)


def float32_under_autocast(*functions: type[ManualFunction]) -> None:
    """Make these Functions run in float32 under autocast, as torch runs the same operations."""
    for function in functions:
        function.call = classmethod(_call_in_float32)


class Cast(ManualFunction):
    """a = z in another dtype:  ∂C/∂z = ∂C/∂a, back in z's dtype (what autocast's own casts do)."""

    @staticmethod
    def forward(z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return z.to(dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.z_dtype, ctx.dtype_out = inputs[0].dtype, inputs[1]

    @staticmethod
    def backward(ctx, grad_a: torch.Tensor):
        return grad_a.to(ctx.z_dtype), None  # the identity, in z's precision

    @staticmethod
    def jvp(ctx, tangent_z: torch.Tensor, _):
        return tangent_z.to(ctx.dtype_out)
