"""``nn.Sequential``, which runs a Linear and the Sigmoid, Tanh or ReLU after it as one Function.

A Sequential computes nothing of its own: it passes each layer's output to the next. Its drop-in
does the same, except that where a Linear is followed by one of those activations it calls the
fused Function a = f(a_prev · Wᵀ + b) (:mod:`manual_backprop.functional.fused`): the same numbers
from the same kernels, with one Function's fixed cost instead of two, forward and backward.

Fusing skips the two modules' ``__call__``, so it happens only where that changes nothing: neither
module has a hook (a recording's probe or layer hooks, ``register_forward_hook``, a backward hook)
and no global module hook is set. Inside :func:`layer_by_layer`, nothing is fused: every layer is
its own node in the backward graph, as the teaching tools draw it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from torch import nn
from torch.nn.modules import module as torch_module

from manual_backprop.functional import fused
from manual_backprop.nn import activations
from manual_backprop.nn._base import register_container
from manual_backprop.nn.linear import Linear
from manual_backprop.routing import set_aside

#: activation module after a Linear → the fused Function of the pair
FUSED_AFTER_LINEAR = {
    activations.Sigmoid: fused.LinearSigmoid,
    activations.Tanh: fused.LinearTanh,
    activations.ReLU: fused.LinearReLU,
}


class _Fusing(threading.local):
    on = True


_fusing = _Fusing()


@contextlib.contextmanager
def layer_by_layer() -> Iterator[None]:
    """Within it, a converted ``nn.Sequential`` fuses nothing: each layer is one Function, one backward node."""
    before, _fusing.on = _fusing.on, False
    try:
        yield
    finally:
        _fusing.on = before


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _any_global_hook() -> bool:
    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
                or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks)


@register_container(nn.Sequential)
class Sequential(nn.Sequential):
    """Runs its layers in order, like ``nn.Sequential``; Linear → Sigmoid / Tanh / ReLU as one Function."""

    @set_aside
    def forward(self, input):
        layers = list(self._modules.values())
        fusing = _fusing.on and not _any_global_hook()
        i = 0
        while i < len(layers):
            layer = layers[i]
            pair = (FUSED_AFTER_LINEAR.get(type(layers[i + 1])) if fusing and type(layer) is Linear
                    and i + 1 < len(layers) else None)
            if pair is not None and not _hooked(layer) and not _hooked(layers[i + 1]):
                input = layer.forward_then(input, pair)  # a = f(a_prev · Wᵀ + b), one Function
                i += 2
            else:
                input = layer(input)
                i += 1
        return input


