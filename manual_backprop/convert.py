"""Swapping: ``convert`` turns a model's native layers into their manual twins, ``restore`` back.

A swap changes only the module's class (``module.__class__``): every manual module subclasses its
native twin and adds no state, so the very same ``Parameter`` objects, buffers, hooks and
``state_dict`` keys stay in place, and an optimizer built before the swap keeps working.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

from torch import nn

from manual_backprop.errors import UnsupportedModuleError
from manual_backprop.nn._base import PATH_ATTR, SUPPORTED_MODULES

M = TypeVar("M", bound=nn.Module)

#: modules that compute nothing themselves: containers
COMPUTES_NOTHING: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _computes_nothing(module: nn.Module) -> bool:
    """One of COMPUTES_NOTHING, or a subclass that keeps its ``forward`` (a new forward may compute)."""
    return any(isinstance(module, c) and type(module).forward is c.forward for c in COMPUTES_NOTHING)


def _manual_classes() -> dict[type[nn.Module], type[nn.Module]]:
    """manual class → native class."""
    return {manual: native for native, manual in SUPPORTED_MODULES.items()}


def is_manual(module: nn.Module) -> bool:
    """Whether ``module`` is one of manual_backprop's drop-in modules (or a subclass of one)."""
    return isinstance(module, tuple(_manual_classes()))


def unsupported_modules(model: nn.Module) -> list[tuple[str, str, str]]:
    """(module path, type, reason) for every module whose computation would stay native.

    Seen from module types alone: a leaf module with no manual twin, a subclass of a supported
    class (its forward may differ, so it is not swapped), and a custom module with parameters of
    its own (its forward uses them with native operations). Functional calls inside a custom
    ``forward`` are not visible here.
    """
    found = []
    for path, module in model.named_modules():
        cls = type(module)
        if cls in SUPPORTED_MODULES or is_manual(module) or _computes_nothing(module):
            continue
        label = path or "(root)"
        if any(isinstance(module, native) for native in SUPPORTED_MODULES):
            found.append((label, cls.__name__, "subclass of a supported layer; its forward may differ"))
        elif not any(True for _ in module.children()):
            found.append((label, cls.__name__, "no manual version yet"))
        elif any(True for _ in module.parameters(recurse=False)):
            found.append((label, cls.__name__, "uses parameters of its own in a native forward"))
    return found


def _table(rows: list[tuple[str, str, str]]) -> str:
    return "\n".join(f"  {path}: {type_name} ({reason})" for path, type_name, reason in rows)


def convert(model: M, strict: bool = False) -> M:
    """Swap every supported module of ``model`` (the root too) for its manual twin, in place.

    Returns ``model``. Converting twice changes nothing. With ``strict=True``, raises
    :class:`UnsupportedModuleError` listing every module whose computation would stay on native
    autograd, before anything is swapped; otherwise those stay native and a warning lists them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    left_native = unsupported_modules(model)
    if left_native and strict:
        raise UnsupportedModuleError(
            f"convert(strict=True): {len(left_native)} module(s) would keep native backward:\n{_table(left_native)}"
        )
    for path, module in model.named_modules():
        replacement = SUPPORTED_MODULES.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
        if is_manual(module):
            setattr(module, PATH_ATTR, path)
    if left_native:
        warnings.warn(
            f"convert: {len(left_native)} module(s) keep native backward:\n{_table(left_native)}",
            stacklevel=2,
        )
    return model


def restore(model: M) -> M:
    """Swap every manual module of ``model`` back to its native ``torch.nn`` class, in place.

    A user's own subclass of a manual module is the user's class, so it stays as it is."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"restore expects a torch.nn.Module, got {type(model).__name__}")
    native_of = _manual_classes()
    for module in model.modules():
        native = native_of.get(type(module))
        if native is not None:
            module.__class__ = native
            module.__dict__.pop(PATH_ATTR, None)
    return model
