"""The errors manual_backprop raises for bad input."""

from __future__ import annotations


class LayerInputError(ValueError, RuntimeError):
    """Bad input to a layer: wrong shapes, dtypes or values.

    A ``ValueError`` and also a ``RuntimeError``, so code written for torch's own shape errors
    (which are ``RuntimeError``) still catches it. A drop-in module puts its module path in front
    of the message, e.g. ``layer 'encoder.fc1' (Linear): input has 5 features ...``, and sets
    ``layer`` to that path.
    """

    layer: str | None = None


class UnsupportedModuleError(TypeError):
    """``convert(model, strict=True)`` met computation that would stay on native autograd. Raised as
    its subclass :class:`UnsupportedOperationError`, which names the operation and module path."""


class UnsupportedOperationError(UnsupportedModuleError, RuntimeError):
    """In a model converted with ``strict=True``, an operation without a hand-written backward needed a
    gradient. The message names the operation and the module path it ran in."""


def shape(t) -> tuple[int, ...]:
    """A tensor's shape as a plain tuple, for error messages."""
    return tuple(t.shape)
