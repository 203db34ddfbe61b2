"""What every drop-in module shares: registration for ``convert``, and errors that name the layer."""

from __future__ import annotations

import functools

from torch import nn

from manual_backprop.errors import LayerInputError
from manual_backprop.routing import set_aside

#: native ``torch.nn`` class → its manual drop-in; filled by :func:`register` next to each module.
SUPPORTED_MODULES: dict[type[nn.Module], type[nn.Module]] = {}

#: native container class → its manual twin (``nn.Sequential``, which fuses Linear + activation); not a layer,
#: so not in SUPPORTED_MODULES; filled by :func:`register_container`.
CONTAINERS: dict[type[nn.Module], type[nn.Module]] = {}

#: attribute ``convert`` sets on each manual module: its path in the converted model.
PATH_ATTR = "_manual_backprop_path"


def _registers_in(table: dict[type[nn.Module], type[nn.Module]], native: type[nn.Module]):
    def decorate(manual: type[nn.Module]) -> type[nn.Module]:
        if not issubclass(manual, native):
            raise TypeError(f"{manual.__name__} must subclass {native.__name__} to replace it")
        table[native] = manual
        return manual

    return decorate


def register(native: type[nn.Module]):
    """Class decorator: ``@register(nn.Linear)`` makes ``convert`` swap nn.Linear for this class."""
    return _registers_in(SUPPORTED_MODULES, native)


def register_container(native: type[nn.Module]):
    """Class decorator: ``convert`` swaps the native container class for this one (not a layer)."""
    return _registers_in(CONTAINERS, native)


def layer_name(module: nn.Module) -> str:
    """``layer 'encoder.fc1' (Linear)`` once converted; the module's repr for one built by hand."""
    path = getattr(module, PATH_ATTR, None)
    if path is None:
        return f"layer {module!r}"
    return f"layer {path or '(root)'!r} ({type(module).__name__})"


def names_the_layer(forward):
    """Decorates a drop-in ``forward``: an error from the forward gets the layer's path in front.

    Ours (:class:`LayerInputError`) and torch's own plain ``RuntimeError`` (a dtype or device
    mismatch, say); other exception types pass through unchanged. The forward calls hand-written
    Functions only, so a converted model's routing is set aside while it runs (:func:`set_aside`).
    """
    forward = set_aside(forward)

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        try:
            return forward(self, *args, **kwargs)
        except LayerInputError as err:
            if err.layer is not None:
                raise  # named by an inner layer already
            named = LayerInputError(f"{layer_name(self)}: {err}")
            named.layer = getattr(self, PATH_ATTR, "")
            raise named from None
        except RuntimeError as err:
            if type(err) is not RuntimeError:
                raise
            raise RuntimeError(f"{layer_name(self)}: {err}") from err

    return wrapper
