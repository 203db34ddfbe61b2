"""``nn.Sequential``, which runs a chain of Linear layers and their activations as one Function.

A Sequential computes nothing of its own: it passes each layer's output to the next. Its drop-in
does the same, except that where it meets Linear layers, each followed by a Sigmoid, Tanh, ReLU or
nothing, it runs that run of layers as one :class:`~manual_backprop.functional.fused.LinearChain`:
the same numbers from the same kernels, with one Function's fixed cost instead of one per layer,
forward and backward, and a backward that is backpropagation through the whole chain.

Fusing skips the layers' ``__call__``, so it happens only where that changes nothing: no layer of the
run has a hook (a recording's probes, ``model_backward_tree`` and ``coverage`` hook the layers they
look at; so do ``register_forward_hook`` and backward hooks), no global module hook is set, and the
layers' shapes, dtypes and devices follow on from each other (otherwise each layer runs, and the one
at fault raises its own error). Inside :func:`layer_by_layer`, nothing is fused: every layer is its own
node in the backward graph.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from torch import nn
from torch.nn.modules import module as torch_module

from manual_backprop.nn import activations
from manual_backprop.nn._base import register_container
from manual_backprop.nn.linear import Linear
from manual_backprop.routing import set_aside

#: activation module after a Linear → its name in :data:`manual_backprop.functional.fused.ACTIVATIONS`
CHAIN_ACTIVATIONS = {activations.Sigmoid: "sigmoid", activations.Tanh: "tanh", activations.ReLU: "relu"}


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


def _chain_at(layers: list[nn.Module], start: int) -> tuple[int, tuple, list] | None:
    """The run of Linear layers (each with an optional activation after it) that starts at ``start``:
    (the index after it, the activation names, W_1, b_1, W_2, b_2, …), or None when there is nothing to
    fuse (not a Linear, or a Linear alone)."""
    kinds, params, i = [], [], start
    while i < len(layers) and type(layers[i]) is Linear and not _hooked(layers[i]):
        weight = layers[i].weight
        if params and (weight.shape[1] != params[-2].shape[0] or weight.dtype != params[-2].dtype
                       or weight.device != params[-2].device):
            break  # does not follow on: left to run (and raise) as itself
        kind = CHAIN_ACTIVATIONS.get(type(layers[i + 1])) if i + 1 < len(layers) else None
        if kind is not None and _hooked(layers[i + 1]):
            kind = None
        kinds.append(kind)
        params += [weight, layers[i].bias]
        i += 2 if kind is not None else 1
    if not kinds or (len(kinds) == 1 and kinds[0] is None):
        return None
    return i, tuple(kinds), params


@register_container(nn.Sequential)
class Sequential(nn.Sequential):
    """Runs its layers in order, like ``nn.Sequential``; Linear (+ Sigmoid / Tanh / ReLU) runs as one Function."""

    @set_aside
    def forward(self, input):
        layers = list(self._modules.values())
        fusing = _fusing.on and not _any_global_hook()
        i = 0
        while i < len(layers):
            chain = _chain_at(layers, i) if fusing else None
            if chain is None:
                input = layers[i](input)
                i += 1
                continue
            end, kinds, params = chain
            input = layers[i].forward_chain(input, kinds, params)  # a_L of the run, one Function
            i = end
        return input
