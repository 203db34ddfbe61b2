"""Recording error terms: δ = ∂C/∂(layer output) for chosen layers, captured during backward.

How: while recording, each chosen layer's output passes through :class:`Probe`, which adds a zero
tensor ``p`` that requires grad. Since ∂(a + p)/∂p = 1, backward leaves exactly δ = ∂C/∂a in
``p.grad``. Nothing runs inside backward but the Functions themselves (no hooks, no Python side
effects), so this also works under ``torch.compile``. Outside the context no probe exists.

Two kinds of layer output are told apart (``kind``): ``"z"``, the output of a layer that is not an
activation (Linear, Conv, norms, pooling, ...), whose error term is δ = ∂C/∂z; and ``"a"``, the
output of an activation module (ReLU, Tanh, Softmax, ...), whose error term is ∂C/∂a. Through an
activation a = f(z) the two are linked by δ = ∂C/∂a ⊙ f′(z).

Under ``torch.compile`` a probe cannot be made inside the compiled graph (dynamo does not create
tensors that require grad), so :func:`record_error_terms` given the compiled module makes them
before the graph runs, in a pre-hook of the compiled wrapper, shaped by a forward of the model on
fake tensors (``FakeTensorMode``: shapes only, no arithmetic, no random numbers, no buffer updates)
once per input signature; the graph then takes them as inputs, like the parameters.

:func:`per_sample_error_terms` gives each sample's own error terms and parameter gradients, through
``torch.func``: ``vmap`` over the batch of ``grad`` of ``loss_fn(model(x_n), y_n)`` with respect to
the probes (and the layers' parameters).
"""

from __future__ import annotations

import fnmatch
import functools
import math
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from manual_backprop import nn as manual_nn
from manual_backprop import routing
from manual_backprop.convert import is_manual
from manual_backprop.errors import NonFiniteError
from manual_backprop.functional._function import ManualFunction
from manual_backprop.functional.conv import _correlate
from manual_backprop.nn._base import SUPPORTED_MODULES

Kind = Literal["z", "a"]
#: one way to name layers: a module path, a glob pattern over module paths, or a module type
LayerSelector = str | type[nn.Module]
KINDS: tuple[Kind, ...] = ("z", "a")

# modules that are never called, so have no output: they cannot be recorded
_NEVER_CALLED = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)


class Probe(ManualFunction):
    """out = a + p with p = 0:  ∂C/∂a = ∂C/∂out · 1  and  ∂C/∂p = ∂C/∂out · 1 = δ."""

    @staticmethod
    def forward(a: Tensor, probe: Tensor) -> Tensor:
        return a + probe

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, delta: Tensor):
        return delta, delta  # the layer below gets δ unchanged; the probe keeps a copy of it

    @staticmethod
    def jvp(ctx, tangent_a: Tensor, tangent_probe: Tensor):
        return tangent_a + tangent_probe


# -- choosing layers -----------------------------------------------------------------------------
@functools.cache
def _activation_classes() -> tuple[type[nn.Module], ...]:
    """The native classes whose drop-ins live in ``manual_backprop.nn.activations`` (ReLU, Tanh, ...)."""
    return tuple(native for native, manual in SUPPORTED_MODULES.items()
                 if manual.__module__ == manual_nn.activations.__name__)


def kind_of(module: nn.Module) -> Kind:
    """``"a"`` for an activation module (its output is a = f(z)), ``"z"`` for every other layer."""
    return "a" if isinstance(module, _activation_classes()) else "z"


def _unwrap(model: Any, who: str) -> tuple[nn.Module, nn.Module | None]:
    """(the module to hook, the ``torch.compile`` wrapper around it or None)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who} expects a torch.nn.Module, got {type(model).__name__}")
    dynamo = sys.modules.get("torch._dynamo.eval_frame")  # no OptimizedModule exists before dynamo is imported
    if dynamo is not None and isinstance(model, dynamo.OptimizedModule):
        return model._orig_mod, model
    return model, None


def _listing(modules: Mapping[str, nn.Module]) -> str:
    return ", ".join(f"{path!r} ({type(m).__name__})" for path, m in modules.items())


def _matches(selector: LayerSelector, selectable: Mapping[str, nn.Module]) -> list[str]:
    if isinstance(selector, type):
        if not issubclass(selector, nn.Module):
            raise TypeError(f"a layer type must be a torch.nn.Module subclass, got {selector.__name__}")
        twin = SUPPORTED_MODULES.get(selector)  # nn.Linear also names manual_backprop.nn.Linear
        types = (selector,) if twin is None else (selector, twin)
        return [path for path, m in selectable.items() if isinstance(m, types)]
    if isinstance(selector, str):
        if selector in selectable:
            return [selector]
        return [path for path in selectable if fnmatch.fnmatchcase(path, selector)]
    raise TypeError(f"a layer is named by a module path, a glob pattern or a module type, got "
                    f"{type(selector).__name__} {selector!r}")


def _kinds(kinds: str | Iterable[str], who: str) -> tuple[Kind, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"{who}: kinds must be some of 'z' (δ = ∂C/∂z at layer outputs) and 'a' "
                         f"(∂C/∂a at activation outputs), got {kinds!r}")
    return kinds


def _select(model: nn.Module, layers: LayerSelector | Iterable[LayerSelector] | None,
            kinds: tuple[Kind, ...], who: str) -> dict[str, nn.Module]:
    """The chosen layers by module path, in the model's order; see :func:`record_error_terms`."""
    modules = dict(model.named_modules())
    manual = {path: m for path, m in modules.items() if is_manual(m)}
    losses = {path for path, m in modules.items() if isinstance(m, nn.modules.loss._Loss)}
    if not manual and not any(routing.is_routed(m) for m in modules.values()):
        raise ValueError(f"{who}: {type(model).__name__} has no manual_backprop layers; call "
                         "manual_backprop.convert(model) first")
    selectable = {path: m for path, m in modules.items() if path not in losses and not isinstance(m, _NEVER_CALLED)}
    if layers is None:
        chosen = [path for path in selectable if path in manual]
        if not chosen:
            raise ValueError(
                f"{who}: {type(model).__name__} has no manual_backprop layers"
                + (" other than losses, which end the graph and have no error term of their own" if manual else
                   f" (its own code is routed); name the modules to record with layers=: {_listing(selectable)}")
            )
    else:
        selectors = [layers] if not isinstance(layers, Iterable) or isinstance(layers, str | type) else list(layers)
        chosen = set()
        for selector in selectors:
            found = _matches(selector, selectable)
            if not found:
                if isinstance(selector, str) and selector in losses:
                    raise ValueError(f"{who}: {selector!r} is a loss ({type(modules[selector]).__name__}); a loss "
                                     "ends the graph and has no error term of its own")
                what = selector.__name__ if isinstance(selector, type) else repr(selector)
                raise ValueError(f"{who}: {what} matches no module; the modules are {_listing(selectable)}")
            chosen.update(found)
        chosen = [path for path in selectable if path in chosen]
    of_kind = {path: selectable[path] for path in chosen if kind_of(selectable[path]) in kinds}
    if not of_kind:
        raise ValueError(f"{who}: none of the chosen layers is of kind {kinds} (chosen: "
                         f"{_listing({p: selectable[p] for p in chosen})}); 'a' is an activation's output")
    return of_kind


# -- shapes of layer outputs, without computing them ---------------------------------------------
#: model → {(recorded paths, input signature): output shapes by path, or None where not found}; the
#: recordings of one model share it, so that a new recording of a known input needs no fake forward
_SHAPES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, dict | None]] = weakref.WeakKeyDictionary()

class _StandAside:
    """While ``active``, the recordings' hooks do nothing (a forward on fake tensors, or per-sample)."""

    active = False


def _signature(model: nn.Module, args: tuple, kwargs: dict) -> tuple:
    def leaf(v):
        if isinstance(v, Tensor):
            return tuple(v.shape), v.dtype, v.device, v.requires_grad
        return v if isinstance(v, int | float | bool | str | type(None)) else type(v)

    autocast = tuple(torch.is_autocast_enabled(d) for d in ("cpu", "cuda"))
    return model.training, autocast, tuple(leaf(v) for v in pytree.tree_leaves((args, kwargs)))


def _output_specs(model: nn.Module, paths: Iterable[str], args: tuple, kwargs: dict
                  ) -> dict[str, list[tuple[torch.Size, torch.dtype, torch.device]]]:
    """Shape, dtype and device of each output of the layers at ``paths`` for this input: one forward
    on fake tensors (parameters, buffers and inputs), so no arithmetic, no random number and no
    buffer update happens. Raises what the fake forward raises (e.g. for data-dependent shapes)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    specs: dict[str, list] = {path: [] for path in paths}
    modules = dict(model.named_modules())

    def remember(path):
        def hook(module, inputs, output):
            if isinstance(output, Tensor):
                specs[path].append((output.shape, output.dtype, output.device))

        return hook

    handles = [modules[path].register_forward_hook(remember(path)) for path in specs]
    stand_aside, _StandAside.active = _StandAside.active, True
    try:
        with FakeTensorMode() as mode:
            def fake(v):
                return mode.from_tensor(v) if isinstance(v, Tensor) else v

            tensors = {name: fake(t) for name, t in [*model.named_parameters(), *model.named_buffers()]}
            fake_args, fake_kwargs = pytree.tree_map(fake, (args, kwargs))
            torch.func.functional_call(model, tensors, fake_args, fake_kwargs)
    finally:
        _StandAside.active = stand_aside
        for handle in handles:
            handle.remove()
    return specs


# -- weight gradients from δ and a_prev ----------------------------------------------------------
def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and not module.transposed


def _has_weight_grad(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or _is_conv(module)


def _weight_grad(module: nn.Module, a_prev: Tensor, delta: Tensor) -> Tensor:
    """∂C/∂W of one call. Linear: δᵀ · a_prev (every leading dimension one more sample).
    Conv: ∂C/∂W[o,c′,k] = Σ_{n,l} δ[n,o,l] · ã_prev[n, g·C_g + c′, l·s + k·d], with ã_prev the input
    padded as the layer pads it (see :func:`manual_backprop.functional.conv._correlate`)."""
    if isinstance(module, nn.Linear):
        return delta.reshape(-1, delta.shape[-1]).T @ a_prev.reshape(-1, a_prev.shape[-1])  # δᵀ · a_prev
    n = len(module.kernel_size)
    if a_prev.dim() == n + 1:  # an unbatched input is one sample
        a_prev, delta = a_prev.unsqueeze(0), delta.unsqueeze(0)
    padding = module.padding
    if module.padding_mode != "zeros":
        a_prev, padding = F.pad(a_prev, module._reversed_padding_repeated_twice, mode=module.padding_mode), 0
    elif padding == "valid":
        padding = 0
    elif padding == "same":  # torch pads r // 2 before and r − r // 2 after each spatial dimension
        reach = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
        odd = [0, 0] * n
        for axis, r in enumerate(reach):
            odd[2 * (n - 1 - axis) + 1] = r % 2  # F.pad order: last dimension first
        a_prev, padding = F.pad(a_prev, odd), tuple(r // 2 for r in reach)
    padding = (padding,) * n if isinstance(padding, int) else tuple(padding)
    return _correlate(a_prev.conj(), delta, module.stride, padding, module.dilation, module.groups,
                      module.kernel_size)  # Σ_{n,l} δ · ã_prev


def _bias_grad(module: nn.Module, delta: Tensor) -> Tensor:
    """∂C/∂b = Σ δ over every sample and position: a bias multiplies a constant 1."""
    if isinstance(module, nn.Linear):
        return delta.reshape(-1, delta.shape[-1]).sum(0)
    n = len(module.kernel_size)
    channel = 0 if delta.dim() == n + 1 else 1
    return delta.sum([d for d in range(delta.dim()) if d != channel])


# -- reading -------------------------------------------------------------------------------------
class _Readings(Mapping[str, Tensor]):
    """What both recordings share: ``rec[path]``, ``rec.all(path)``, ``rec.kind(path)``."""

    _layers: dict[str, nn.Module]

    def _current(self) -> dict[str, list[Tensor]]:
        raise NotImplementedError

    def _missing(self, path: str) -> str:
        return f"no error term for {path!r}"

    def all(self, path: str) -> list[Tensor]:
        """δ for every call of the layer at ``path`` in the last forward (a layer used twice has two)."""
        current = self._current()
        if path not in current:
            if path not in self._layers:
                raise KeyError(f"{path!r} is not a recorded layer; recorded layers are {sorted(self._layers)}")
            raise KeyError(self._missing(path))
        return current[path]

    def __getitem__(self, path: str) -> Tensor:
        deltas = self.all(path)
        if len(deltas) > 1:
            raise KeyError(f"layer {path!r} ran {len(deltas)} times in the last forward; use .all({path!r})")
        return deltas[0]

    def kind(self, path: str) -> Kind:
        """``"z"``: ``self[path]`` is δ = ∂C/∂z at a layer's output; ``"a"``: it is ∂C/∂a at an
        activation's output."""
        if path not in self._layers:
            raise KeyError(f"{path!r} is not a recorded layer; recorded layers are {sorted(self._layers)}")
        return kind_of(self._layers[path])

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}("
                f"{', '.join(f'{p}: {tuple(d[0].shape)}' for p, d in self._current().items())})")


def _range(t: Tensor | None) -> Tensor | None:
    """(min, max) of a floating-point tensor as one tensor of 2 (nan if it holds a nan), else None."""
    if not isinstance(t, Tensor) or not t.is_floating_point() or t.numel() == 0:
        return None
    return torch.stack(torch.aminmax(t.detach()))


def _all_true(flags: list[Tensor]) -> list[bool]:
    """Many 0-d bool tensors as Python bools, with one device synchronisation where they share a device."""
    if len({f.device for f in flags}) == 1:
        return torch.stack(flags).tolist()
    return [bool(f) for f in flags]


def _first_tensor(args: tuple, kwargs: dict) -> Tensor | None:
    return next((v for v in (*args, *kwargs.values()) if isinstance(v, Tensor)), None)


class ErrorTerms(_Readings):
    """Error terms by module path, filled by :func:`record_error_terms` (see there for the options).

    ``rec[path]`` is δ = ∂C/∂(output of that layer) for the last forward of the model, with the
    output's shape (one row per sample), times ``scale``. For a mean-reduced loss that δ includes
    the 1/N of the mean. If backward runs more than once through that forward
    (``retain_graph=True``), the δ add up, as ``.grad`` does. Only ``.backward()`` fills them:
    ``torch.autograd.grad`` leaves the probes' ``.grad`` alone. After the ``with`` block the values
    stay readable. The root module's path is ``""``. ``rec.kind(path)`` says whether it is ∂C/∂z or
    ∂C/∂a; ``rec.weight_grad(path)`` and ``rec.bias_grad(path)`` give ∂C/∂W and ∂C/∂b of a Linear or
    Conv layer (with ``weight_grads=True``); ``rec.check()`` looks for non-finite values (with
    ``check_finite=True``); ``rec.step`` is the step of the last forward.
    """

    def __init__(self, model: nn.Module, layers: LayerSelector | Iterable[LayerSelector] | None = None, *,
                 kinds: str | Iterable[str] = KINDS, weight_grads: bool = False, check_finite: bool = False,
                 step: int | None = None, scale: float = 1.0):
        who = "record_error_terms"
        self._model, self._compiled = _unwrap(model, who)
        self._layers = _select(self._model, layers, _kinds(kinds, who), who)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"{who}: scale must be a finite number above 0 (1 / world_size under DDP), got {scale!r}")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise TypeError(f"{who}: step must be an int (the training step of the first forward), got {step!r}")
        self._scale = float(scale)
        self._first_step = 0 if step is None else step
        self._check_finite = check_finite
        self._with_inputs = {path for path, m in self._layers.items() if weight_grads and _has_weight_grad(m)}
        self._forwards = 0
        self._via_wrapper = False
        self._probes: dict[str, list[Tensor]] = {}
        self._inputs: dict[str, list[Tensor]] = {}
        self._seen: list[tuple] = []  # forward order: (path, call, input range, output range, output)
        self._ready: dict[str, list[Tensor]] = {}  # probes made before a compiled forward
        self._specs = _SHAPES.setdefault(self._model, {})
        self._last_signature: tuple | None = None  # (paths, input signature) of the last compiled forward
        self._warned = False
        self._deltas: dict[str, list[Tensor]] | None = None
        self._handles: list = []

    # -- the context ---------------------------------------------------------------------------
    def __enter__(self) -> ErrorTerms:
        if self._handles:
            raise RuntimeError("record_error_terms: this recording is already open; it cannot be entered twice")
        self._deltas = None
        self._forwards = 0
        self._last_signature = None
        self._clear()
        if self._compiled is not None:
            self._handles.append(self._compiled.register_forward_pre_hook(self._before_compiled_forward,
                                                                          with_kwargs=True))
        self._handles.append(self._model.register_forward_pre_hook(self._new_forward))
        for path, module in self._layers.items():
            self._handles.append(module.register_forward_hook(self._probe_hook(path), with_kwargs=True))
        return self

    def __exit__(self, exc_type, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._learn_shapes()
        self._ready = {}
        self._deltas = self._collect()
        if self._check_finite and exc_type is None:
            self.check()

    def _clear(self) -> None:
        self._probes = {path: [] for path in self._layers}
        self._inputs = {path: [] for path in self._with_inputs}
        self._seen = []

    def _new_forward(self, module, args) -> None:
        if _StandAside.active:
            return
        if self._via_wrapper:  # the compiled wrapper's pre-hook did the work just now
            self._via_wrapper = False
            return
        if not torch.compiler.is_compiling():  # a Python counter read inside a graph would recompile it
            self._forwards += 1
        for values in (*self._probes.values(), *self._inputs.values()):
            values.clear()  # a new forward of the model: the last step's δ are no longer wanted
        self._seen.clear()

    def _before_compiled_forward(self, module, args, kwargs) -> None:
        """Runs eagerly before the compiled graph: count the forward and make its probes."""
        self._learn_shapes()
        self._forwards += 1
        self._clear()
        self._ready = {}
        self._via_wrapper = True
        signature = None
        if torch.is_grad_enabled():
            signature = (tuple(self._layers), _signature(self._model, args, kwargs))
        self._last_signature = signature
        if signature is None:
            return
        if signature not in self._specs:
            try:
                self._specs[signature] = _output_specs(self._model, self._layers, args, kwargs)
            except Exception as err:  # whatever the fake forward cannot do (data-dependent shapes), a real one does
                self._specs[signature] = None
                if not self._warned:
                    self._warned = True
                    warnings.warn(f"record_error_terms: a forward on fake tensors could not find the layers' "
                                  f"output shapes ahead of the compiled forward ({type(err).__name__}: {err}); until "
                                  "a forward of the same input shapes has run, the probes are made inside the "
                                  "compiled forward, which breaks its graph at every recorded layer", stacklevel=2)
        specs = self._specs[signature]
        if specs is not None:
            self._ready = {path: [torch.zeros(s, dtype=d, device=dev, requires_grad=True) for s, d, dev in found]
                           for path, found in specs.items()}

    def _learn_shapes(self) -> None:
        """The shapes a fake forward could not find (data-dependent ones), the last real forward showed."""
        last = self._last_signature
        if last is not None and self._specs.get(last) is None and any(self._probes.values()):
            self._specs[last] = {path: [(p.shape, p.dtype, p.device) for p in probes]
                                 for path, probes in self._probes.items()}

    def _probe(self, path: str, call: int, output: Tensor) -> Tensor:
        ready = self._ready.get(path)
        if ready is not None and call < len(ready):
            probe = ready[call]
            if probe.shape == output.shape and probe.dtype == output.dtype and probe.device == output.device:
                return probe
        return torch.zeros_like(output, requires_grad=True)

    def _probe_hook(self, path: str) -> Callable:
        def add_probe(module, args, kwargs, output):
            if _StandAside.active or not isinstance(output, Tensor) or not output.requires_grad:
                return None  # no_grad / inference: nothing will flow back
            probes = self._probes[path]
            probe = self._probe(path, len(probes), output)
            probes.append(probe)
            a_prev = _first_tensor(args, kwargs)
            if path in self._inputs:
                self._inputs[path].append(a_prev.detach())
            if self._check_finite:
                self._seen.append((path, len(probes) - 1, _range(a_prev), _range(output), output.detach()))
            return Probe.call(output, probe)

        return add_probe

    def _collect(self) -> dict[str, list[Tensor]]:
        scale = self._scale
        return {
            path: [p.grad.detach() if scale == 1.0 else p.grad.detach() * scale for p in probes]
            for path, probes in self._probes.items()
            if probes and all(p.grad is not None for p in probes)
        }

    # -- reading -------------------------------------------------------------------------------
    def _current(self) -> dict[str, list[Tensor]]:
        return self._deltas if self._deltas is not None else self._collect()

    def _missing(self, path: str) -> str:
        return f"no error term for {path!r} yet: run the forward and loss.backward() inside the context"

    @property
    def step(self) -> int:
        """The step of the last forward: ``step`` (0 unless given) for the first, one more for each next."""
        return self._first_step + max(self._forwards - 1, 0)

    def _calls(self, path: str, what: str) -> list[tuple[Tensor, Tensor]]:
        deltas = self.all(path)
        if path not in self._inputs:
            module = self._layers[path]
            if not _has_weight_grad(module):
                raise KeyError(f"no {what} for {path!r}: it is computed for Linear and Conv1d/2d/3d layers, and "
                               f"{path!r} is {type(module).__name__}")
            raise KeyError(f"no {what} for {path!r}: open the recording with record_error_terms(..., "
                           "weight_grads=True)")
        return list(zip(self._inputs[path], deltas))

    def weight_grad(self, path: str) -> Tensor:
        """∂C/∂W of the Linear or Conv layer at ``path``, from the recorded δ and the layer's input:
        Σ over its calls of δᵀ · a_prev (Linear) or Σ_{n,l} δ · ã_prev (Conv). Equals ``weight.grad``
        of that backward (times ``scale``); under DDP it is this rank's share, see :func:`record_error_terms`."""
        return sum(_weight_grad(self._layers[path], a, d) for a, d in self._calls(path, "weight gradient"))

    def bias_grad(self, path: str) -> Tensor | None:
        """∂C/∂b = Σ δ of the Linear or Conv layer at ``path`` (None when it has no bias)."""
        calls = self._calls(path, "bias gradient")
        if self._layers[path].bias is None:
            return None
        return sum(_bias_grad(self._layers[path], d) for _, d in calls)

    # -- where did the nan come from -----------------------------------------------------------
    def check(self, step: int | None = None) -> None:
        """Raise :class:`~manual_backprop.NonFiniteError` if the last forward or backward made a nan or inf.

        First the forward: the first recorded layer, in forward order, whose output holds a
        non-finite value is the origin. Otherwise the backward: the layers in backward order (the
        reverse of the forward, closest to the loss first), and the first whose error term is
        non-finite, one ``isfinite(δ).all()`` each. ``step`` defaults to :attr:`step`. Runs by itself
        at the end of the ``with`` block (unless an exception is on its way out); call it after
        ``loss.backward()`` and before ``optimizer.step()`` to stop before the weights change.
        """
        if not self._check_finite:
            raise RuntimeError("record_error_terms: check() needs the ranges recorded by check_finite=True")
        step = self.step if step is None else step
        seen = self._seen
        if not seen:
            return
        with_output = [s for s in seen if s[3] is not None]
        if with_output:
            for finite, record in zip(_all_true([r[3].isfinite().all() for r in with_output]), with_output):
                if not finite:
                    raise self._error("forward", step, *record, bad=record[4])
        current = self._current()
        backward = [s for s in reversed(seen) if s[1] < len(current.get(s[0], ()))]
        if backward:
            deltas = [current[path][call] for path, call, *_ in backward]
            for finite, record, delta in zip(_all_true([d.isfinite().all() for d in deltas]), backward, deltas):
                if not finite:
                    raise self._error("backward", step, *record, bad=delta)

    def _error(self, phase: str, step: int, path: str, call: int, input_range, output_range, output: Tensor, *,
               bad: Tensor) -> NonFiniteError:
        module = self._layers[path]
        calls = len(self._probes.get(path, ())) or call + 1
        where = f"layer {path!r} ({type(module).__name__})" + (f", call {call + 1} of {calls}," if calls > 1 else "")
        count, total = int((~bad.isfinite()).sum()), bad.numel()
        in_range = None if input_range is None else tuple(input_range.tolist())
        out_range = None if output_range is None else tuple(output_range.tolist())

        def show(r):
            return "not floating-point" if r is None else f"[{r[0]:.4g}, {r[1]:.4g}]"

        if phase == "forward":
            if in_range is not None and not all(math.isfinite(v) for v in in_range):
                origin = ("its input was already non-finite, so the value came from before it: the model's input "
                          "or computation outside the recorded layers")
            else:
                origin = "its input was finite, so the value was born in this layer's forward"
            message = (f"step {step}: {where} is the first recorded layer whose output is non-finite in the "
                       f"forward: {count} of {total} output entries are nan or inf; input range {show(in_range)}, "
                       f"output range {show(out_range)}; {origin}")
        else:
            message = (f"step {step}: {where} is the first layer in backward order (closest to the loss first) "
                       f"whose error term is non-finite: {count} of {total} entries of δ = ∂C/∂(its output) are "
                       f"nan or inf, while every recorded layer after it had a finite δ. Its forward was finite "
                       f"(input range {show(in_range)}, output range {show(out_range)}), so the value was born in "
                       f"the backward of what uses this layer's output")
        return NonFiniteError(message, layer=path, step=step, phase=phase, bad_count=count, numel=total,
                              input_range=in_range, output_range=out_range)


def record_error_terms(model: nn.Module, layers: LayerSelector | Iterable[LayerSelector] | None = None, *,
                       kinds: str | Iterable[str] = KINDS, weight_grads: bool = False, check_finite: bool = False,
                       step: int | None = None, scale: float = 1.0) -> ErrorTerms:
    """Capture each chosen layer's error term δ = ∂C/∂(layer output) during backward.

    ::

        with record_error_terms(model) as rec:
            loss_fn(model(x), y).backward()
        rec["0"]            # δ of the layer at path "0", shape of its output

    The model must have been converted; raises ``ValueError`` otherwise. A model compiled with
    ``torch.compile`` is recorded by passing what ``torch.compile`` returned: the probes are then
    made before the graph runs, so ``fullgraph=True`` holds (recording the module inside a compiled
    one works too, but breaks the graph at every recorded layer).

    - ``layers``: one or a list of module paths (``"encoder.fc1"``), glob patterns over module paths
      (``"encoder.*"``, ``"fc?"``; ``*`` also crosses dots), and module types (``nn.Linear``, which also
      names its manual twin). Default: every manual layer except losses. A pattern or type that
      matches nothing raises ``ValueError`` listing the module paths and types there are. Any module
      that is called may be named (a residual block, a ``Sequential``), losses excepted.
    - ``kinds``: ``"z"`` keeps layer outputs, δ = ∂C/∂z; ``"a"`` keeps activation outputs, ∂C/∂a
      (ReLU, Tanh, Softmax, ...). Default both; ``rec.kind(path)`` says which a path is.
    - ``weight_grads``: also keep each Linear and Conv layer's input a_prev (in the forward hook), so
      that ``rec.weight_grad(path)`` = Σ δᵀ · a_prev and ``rec.bias_grad(path)`` = Σ δ, equal to the
      parameters' ``.grad`` from that backward.
    - ``check_finite``: record each layer's input and output range (min and max, one reduction per
      layer in the forward) and, at the end of the ``with`` block or on ``rec.check()``, raise
      :class:`~manual_backprop.NonFiniteError` naming the layer where a nan or inf was born: the
      first layer whose output is non-finite in the forward, else the first in backward order
      whose δ is non-finite (one ``isfinite(δ).all()`` per layer), with the step, the count of bad
      entries and the layer's input and output ranges. Each recorded output is kept until the
      next forward, to count the bad entries of the one that fails.
    - ``step``: the training step of the first forward (default 0); each further forward the
      recording sees counts one more (``rec.step``). Used in the error message.
    - ``scale``: every δ (and weight gradient) read is multiplied by it. Under DDP each rank's loss
      is its own batch's mean and DDP averages the gradients over the ``world_size`` ranks, so the
      loss being minimised is C = (1/world_size) Σ_r C_r and each rank's local δ = ∂C_r/∂z is
      world_size × the δ of that global loss. ``scale=1 / world_size`` gives the global loss's δ,
      and then ``weight_grad`` is this rank's share: their sum over ranks is the averaged ``.grad``.
    """
    return ErrorTerms(model, layers, kinds=kinds, weight_grads=weight_grads, check_finite=check_finite, step=step,
                      scale=scale)


# -- per sample, through torch.func --------------------------------------------------------------
class PerSampleErrorTerms(_Readings):
    """Each sample's own error terms, from :func:`per_sample_error_terms`.

    ``ps[path]`` has shape (N, *shape of the layer's output for one sample): ``ps[path][n]`` is the δ
    of ``loss_fn(model(x[n]), y[n])``. ``ps.weight_grad(path)`` / ``ps.bias_grad(path)``: (N, *W.shape)
    and (N, *b.shape), each sample's ∂C_n/∂W and ∂C_n/∂b (with ``weight_grads=True``), for any layer
    with such parameters. ``ps.losses``: the N losses.
    """

    def __init__(self, layers: dict[str, nn.Module], deltas: dict[str, list[Tensor]],
                 grads: dict[str, dict[str, Tensor]] | None, losses: Tensor):
        self._layers, self._deltas, self._grads, self.losses = layers, deltas, grads, losses

    def _current(self) -> dict[str, list[Tensor]]:
        return self._deltas

    def _missing(self, path: str) -> str:
        return f"no error term for {path!r}: the layer gave no tensor output in the forward"

    def _grad(self, path: str, name: str) -> Tensor | None:
        if path not in self._layers:
            raise KeyError(f"{path!r} is not a recorded layer; recorded layers are {sorted(self._layers)}")
        if self._grads is None:
            raise KeyError(f"no per-sample {name} gradient for {path!r}: call per_sample_error_terms(..., "
                           "weight_grads=True)")
        if name not in self._grads[path]:
            if getattr(self._layers[path], name, None) is None:
                return None
            raise KeyError(f"layer {path!r} ({type(self._layers[path]).__name__}) has no parameter {name!r}")
        return self._grads[path][name]

    def weight_grad(self, path: str) -> Tensor:
        """(N, *W.shape): ∂C_n/∂W of the layer at ``path`` for each sample n."""
        return self._grad(path, "weight")

    def bias_grad(self, path: str) -> Tensor | None:
        """(N, *b.shape): ∂C_n/∂b for each sample n (None when the layer has no bias)."""
        return self._grad(path, "bias")


def per_sample_error_terms(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                           targets: Tensor, layers: LayerSelector | Iterable[LayerSelector] | None = None, *,
                           kinds: str | Iterable[str] = KINDS, weight_grads: bool = False,
                           batch_of_one: bool = False, randomness: str = "error",
                           chunk_size: int | None = None) -> PerSampleErrorTerms:
    """Each sample's own error terms δ_n = ∂C_n/∂(layer output), with C_n = loss_fn(model(x_n), y_n).

    Computed by ``torch.func``: ``vmap`` over the batch (dimension 0 of ``inputs`` and ``targets``)
    of ``grad`` of C_n with respect to one zero probe per layer output (δ_n, see :class:`Probe`)
    and, with ``weight_grads=True``, to the chosen layers' own parameters (∂C_n/∂W, ∂C_n/∂b: each
    sample's gradient, whose sum over n is the gradient of the summed loss). The model runs one
    sample at a time, unbatched: x_n = ``inputs[n]``; with ``batch_of_one=True`` it gets the batch
    of one ``inputs[n:n+1]`` (and ``targets[n:n+1]``) instead. ``layers`` and ``kinds`` choose as in
    :func:`record_error_terms`; ``randomness`` (for dropout) and ``chunk_size`` go to ``vmap``. The
    model's parameters and ``.grad`` are left alone; a layer's buffers (BatchNorm's running
    statistics) are not updated.
    """
    who = "per_sample_error_terms"
    model, _ = _unwrap(model, who)
    chosen = _select(model, layers, _kinds(kinds, who), who)
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"{who}: inputs and targets must be tensors, got {type(inputs).__name__} and "
                        f"{type(targets).__name__}")
    if inputs.dim() == 0 or targets.dim() == 0 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"{who}: inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must have the "
                         "same number of samples along dimension 0")
    if inputs.shape[0] == 0:
        raise ValueError(f"{who}: the batch is empty (inputs {tuple(inputs.shape)})")

    def one(t: Tensor) -> Tensor:
        return t.unsqueeze(0) if batch_of_one else t

    specs = _output_specs(model, chosen, (one(inputs[0]),), {})
    probes = {path: [torch.zeros(s, dtype=d, device=dev) for s, d, dev in found] for path, found in specs.items()}
    params = {f"{path}.{name}" if path else name: p.detach()
              for path, m in chosen.items() if weight_grads for name, p in m.named_parameters(recurse=False)}
    calls: dict[str, int] = {}
    tracked: dict[str, list[Tensor]] = {}  # the probes as torch.func.grad tracks them, inside loss_of_one

    def add_probe(path: str) -> Callable:
        def hook(module, args, output):
            if not isinstance(output, Tensor):
                return None
            call = calls[path] = calls.get(path, -1) + 1
            if call >= len(tracked[path]):
                raise RuntimeError(f"{who}: layer {path!r} ran more often under vmap than in a forward of sample 0 "
                                   "alone; its calls depend on the data")
            return Probe.call(output, tracked[path][call])

        return hook

    def loss_of_one(params: dict[str, Tensor], probes: dict[str, list[Tensor]], x_n: Tensor, y_n: Tensor) -> Tensor:
        calls.clear()
        tracked.clear()
        tracked.update(probes)
        loss = loss_fn(torch.func.functional_call(model, params, (one(x_n),), strict=False), one(y_n))
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"{who}: loss_fn must return one number per sample, got shape "
                             f"{tuple(getattr(loss, 'shape', ()))}")
        return loss.reshape(())

    modules = dict(model.named_modules())
    handles = [modules[path].register_forward_hook(add_probe(path)) for path in chosen]
    stand_aside, _StandAside.active = _StandAside.active, True  # an open record_error_terms stays out of it
    try:
        with torch.no_grad():  # torch.func.grad differentiates all the same; no graph is kept for .backward()
            per_sample = torch.func.vmap(torch.func.grad_and_value(loss_of_one, argnums=(0, 1)),
                                         in_dims=(None, None, 0, 0), randomness=randomness, chunk_size=chunk_size)
            (param_grads, deltas), losses = per_sample(params, probes, inputs, targets)
    finally:
        _StandAside.active = stand_aside
        for handle in handles:
            handle.remove()
    grads = None
    if weight_grads:
        grads = {path: {name: param_grads[f"{path}.{name}" if path else name]
                        for name, _ in m.named_parameters(recurse=False)} for path, m in chosen.items()}
    return PerSampleErrorTerms(chosen, {path: d for path, d in deltas.items() if d}, grads, losses)
