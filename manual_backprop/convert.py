"""Swapping: ``convert`` turns a model's native layers into their manual twins, ``restore`` back.

Two things happen to each module of the model:

- a module with a drop-in twin (``nn.Linear`` → ``manual_backprop.nn.Linear``) changes its class
  (``module.__class__``): every manual module subclasses its native twin and adds no state, so the very
  same ``Parameter`` objects, buffers, hooks and ``state_dict`` keys stay in place, and an optimizer
  built before the swap keeps working;
- a module that computes with code of its own (the root, the user's modules, torch modules without a
  twin) gets its forward routed (:mod:`manual_backprop.routing`): its calls of ``F.relu``, ``x @ w``,
  ``x + h``, ``x.view(...)``, ... run hand-written Functions too.

Containers (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``) compute nothing and are not routed.
``nn.Sequential`` does become ``manual_backprop.nn.Sequential``, which runs a Linear and the Sigmoid, Tanh
or ReLU after it as one fused Function (:mod:`manual_backprop.nn.container`).
"""

from __future__ import annotations

import warnings
from typing import TypeVar

from torch import nn

from manual_backprop import routing
from manual_backprop.errors import UnsupportedOperationError
from manual_backprop.nn._base import CONTAINERS, PATH_ATTR, SUPPORTED_MODULES

M = TypeVar("M", bound=nn.Module)

#: modules that compute nothing themselves: containers
COMPUTES_NOTHING: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _computes_nothing(module: nn.Module) -> bool:
    """One of COMPUTES_NOTHING, or a subclass that keeps its ``forward`` (a new forward may compute)."""
    # manual_backprop's own Sequential only runs its layers (fusing Linear + activation pairs): nothing to route
    return any(isinstance(module, c) and type(module).forward is c.forward
               for c in (*COMPUTES_NOTHING, *CONTAINERS.values()))


def _manual_classes() -> dict[type[nn.Module], type[nn.Module]]:
    """manual class → native class."""
    return {manual: native for native, manual in SUPPORTED_MODULES.items()}


def is_manual(module: nn.Module) -> bool:
    """Whether ``module`` is one of manual_backprop's drop-in modules (or a subclass of one)."""
    return isinstance(module, tuple(_manual_classes()))


def convert(model: M, strict: bool = False, *, example_inputs: tuple = (), example_kwargs: dict | None = None) -> M:
    """Make every gradient of ``model`` hand-written, in place, and return ``model``.

    Swaps each module that has a drop-in twin for it (the root too) and routes the torch calls in the
    forward of every other module that computes (see the module doc). Converting twice changes nothing;
    converting a model that contains a converted one re-labels its module paths.

    An operation that has no hand-written rule stays native: :func:`manual_backprop.coverage` names it,
    and the first forward that meets it warns once. With ``strict=True`` such an operation raises
    :class:`UnsupportedOperationError` naming it and its module path instead. With ``example_inputs``
    (and ``example_kwargs``), ``strict=True`` checks right away: it runs one forward and backward on
    them (``coverage``), and raises with the list of every native node and its module path, after
    :func:`restore` has made the model native again.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"convert: example_inputs must be a tuple of the forward's arguments, got "
                        f"{type(example_inputs).__name__}; write example_inputs=(x,) for one input")
    check_now = strict and bool(example_inputs or example_kwargs)
    manual_classes = _manual_classes()
    for path, module in model.named_modules():
        replacement = SUPPORTED_MODULES.get(type(module)) or CONTAINERS.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
        if type(module) in manual_classes:
            setattr(module, PATH_ATTR, path)
            routing.uninstall(module)
        elif not _computes_nothing(module):
            routing.install(module, path, strict and not check_now)
    if check_now:
        from manual_backprop.coverage import coverage

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report below lists what the warnings would
            report = coverage(model, *example_inputs, **(example_kwargs or {}))
        if not report.ok:
            restore(model)
            rows = "\n".join(f"  {op} in {path}" + (f" (×{n})" if n > 1 else "") for op, path, n in report.native)
            raise UnsupportedOperationError(
                f"convert(strict=True): {len(report.native)} operation(s) would keep native backward; the model is "
                f"left native:\n{rows}"
            )
        for module in model.modules():
            if routing.is_routed(module):
                module.forward.strict = True
    return model


def restore(model: M) -> M:
    """Undo :func:`convert`, in place: drop-ins back to their ``torch.nn`` classes, forwards unrouted.

    A user's own subclass of a manual module is the user's class, so it stays as it is."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"restore expects a torch.nn.Module, got {type(model).__name__}")
    native_of = _manual_classes() | {manual: native for native, manual in CONTAINERS.items()}
    for module in model.modules():
        routing.uninstall(module)
        native = native_of.get(type(module))
        if native is not None:
            module.__class__ = native
            module.__dict__.pop(PATH_ATTR, None)
    return model
