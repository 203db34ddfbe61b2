"""Recording error terms: δ = ∂C/∂(layer output) for every manual layer, captured during backward.

How: while recording, each chosen layer's output passes through :class:`Probe`, which adds a zero
tensor ``p`` that requires grad. Since ∂(a + p)/∂p = 1, backward leaves exactly δ = ∂C/∂a in
``p.grad``. Nothing runs inside backward but the Functions themselves (no hooks, no Python side
effects), so this also works under ``torch.compile``. Outside the context no probe exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from manual_backprop.convert import is_manual
from manual_backprop.functional._function import ManualFunction


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


class ErrorTerms(Mapping[str, Tensor]):
    """Error terms by module path, filled by :func:`record_error_terms`.

    ``rec[path]`` is δ = ∂C/∂(output of that layer) for the last forward of the model, with the
    output's shape (one row per sample). For a mean-reduced loss that δ includes the 1/N of the
    mean. If backward runs more than once through that forward (``retain_graph=True``), the δ add
    up, as ``.grad`` does. Only ``.backward()`` fills them: ``torch.autograd.grad`` leaves the
    probes' ``.grad`` alone. After the ``with`` block the values stay readable. The root module's
    path is ``""``.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str] | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"record_error_terms expects a torch.nn.Module, got {type(model).__name__}")
        manual = {path: module for path, module in model.named_modules() if is_manual(module)}
        candidates = {path: m for path, m in manual.items() if not isinstance(m, nn.modules.loss._Loss)}
        if not candidates:
            raise ValueError(
                f"record_error_terms: {type(model).__name__} has no manual_backprop layers"
                + (" other than losses, which end the graph and have no error term of their own"
                   if manual else "; call manual_backprop.convert(model) first")
            )
        if layers is not None:
            layers = [layers] if isinstance(layers, str) else list(layers)
            unknown = [p for p in layers if p not in candidates]
            if unknown:
                raise KeyError(f"record_error_terms: no manual layer at {unknown}; layers are {sorted(candidates)}")
            candidates = {p: candidates[p] for p in layers}
        self._model = model
        self._layers = candidates
        self._probes: dict[str, list[Tensor]] = {}
        self._deltas: dict[str, list[Tensor]] | None = None
        self._handles: list = []

    # -- the context ---------------------------------------------------------------------------
    def __enter__(self) -> ErrorTerms:
        if self._handles:
            raise RuntimeError("record_error_terms: this recording is already open; it cannot be entered twice")
        self._deltas = None
        self._probes = {path: [] for path in self._layers}
        self._handles.append(self._model.register_forward_pre_hook(self._new_forward))
        for path, module in self._layers.items():
            self._handles.append(module.register_forward_hook(self._probe_hook(path)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._deltas = self._collect()
        self._probes = {}

    def _new_forward(self, module, args) -> None:
        for probes in self._probes.values():
            probes.clear()  # a new forward of the model: the last step's δ are no longer wanted

    def _probe_hook(self, path: str):
        def add_probe(module, args, output):
            if not isinstance(output, Tensor) or not output.requires_grad:
                return None  # no_grad / inference: nothing will flow back
            probe = torch.zeros_like(output, requires_grad=True)
            self._probes[path].append(probe)
            return Probe.call(output, probe)

        return add_probe

    def _collect(self) -> dict[str, list[Tensor]]:
        return {
            path: [p.grad.detach() for p in probes]
            for path, probes in self._probes.items()
            if probes and all(p.grad is not None for p in probes)
        }

    # -- reading -------------------------------------------------------------------------------
    def _current(self) -> dict[str, list[Tensor]]:
        return self._deltas if self._deltas is not None else self._collect()

    def all(self, path: str) -> list[Tensor]:
        """δ for every call of the layer at ``path`` in the last forward (a layer used twice has two)."""
        current = self._current()
        if path not in current:
            if path not in self._layers:
                raise KeyError(f"{path!r} is not a recorded layer; recorded layers are {sorted(self._layers)}")
            raise KeyError(f"no error term for {path!r} yet: run the forward and loss.backward() inside the context")
        return current[path]

    def __getitem__(self, path: str) -> Tensor:
        deltas = self.all(path)
        if len(deltas) > 1:
            raise KeyError(f"layer {path!r} ran {len(deltas)} times in the last forward; use .all({path!r})")
        return deltas[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __repr__(self) -> str:
        return f"ErrorTerms({', '.join(f'{p}: {tuple(d[0].shape)}' for p, d in self._current().items())})"


def record_error_terms(model: nn.Module, layers: Iterable[str] | None = None) -> ErrorTerms:
    """Capture each manual layer's error term δ = ∂C/∂(layer output) during backward.

    ::

        with record_error_terms(model) as rec:
            loss_fn(model(x), y).backward()
        rec["0"]            # δ of the layer at path "0", shape of its output

    ``layers`` picks module paths, one string or several (default: every manual layer except
    losses). The model must have been converted; raises ``ValueError`` otherwise.
    """
    return ErrorTerms(model, layers)
