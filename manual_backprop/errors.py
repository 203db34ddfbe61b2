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


class NonFiniteError(FloatingPointError, RuntimeError):
    """A nan or inf was born while error terms were recorded with ``check_finite=True``.

    Names the layer where it appeared: the first recorded layer whose output was non-finite in the
    forward, or else the first layer in backward order (closest to the loss first) whose error term
    δ was non-finite. Attributes: ``layer`` (its module path), ``step``, ``phase`` (``"forward"`` or
    ``"backward"``), ``bad_count`` of ``numel`` entries non-finite (of its output, or of δ), and the
    layer's ``input_range`` and ``output_range`` in that forward, as (min, max) or None when the
    tensor is not floating-point.
    """

    def __init__(self, message: str, *, layer: str | None = None, step: int | None = None, phase: str | None = None,
                 bad_count: int | None = None, numel: int | None = None, input_range: tuple[float, float] | None = None,
                 output_range: tuple[float, float] | None = None):  # defaults: pickle rebuilds it from the message
        super().__init__(message)
        self.layer, self.step, self.phase = layer, step, phase
        self.bad_count, self.numel = bad_count, numel
        self.input_range, self.output_range = input_range, output_range


def shape(t) -> tuple[int, ...]:
    """A tensor's shape as a plain tuple, for error messages."""
    return tuple(t.shape)
