"""The audit: proof that a backward pass ran only hand-written chain rules.

Two independent checks on one ``loss.backward()``:

1. the backward graph, walked from ``loss.grad_fn``, holds only manual_backprop Functions (plus
   ``AccumulateGrad``, which adds a finished gradient into a leaf's ``.grad`` and computes nothing);
2. no ATen ``*_backward`` kernel is dispatched while backward runs (recorded with a
   ``TorchDispatchMode``), so no Function handed its work to a built-in gradient.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from manual_backprop.functional._function import ManualFunction

#: graph nodes that compute no derivative
NEUTRAL_NODES = frozenset({"AccumulateGrad"})


def _is_manual_node(node) -> bool:
    forward_cls = getattr(node, "_forward_cls", None)
    return isinstance(forward_cls, type) and issubclass(forward_cls, ManualFunction)


def _node_name(node) -> str:
    forward_cls = getattr(node, "_forward_cls", None)
    return forward_cls.__qualname__ if forward_cls is not None else type(node).__name__


def backward_graph(outputs: torch.Tensor | Sequence[torch.Tensor]) -> Counter[str]:
    """Every node of the backward graph of ``outputs`` (a loss, or several tensors), counted by name."""
    roots = [t.grad_fn for t in _as_list(outputs)]
    if not roots or any(root is None for root in roots):
        raise ValueError("audit: the loss has no backward graph (does it require grad?)")
    seen, stack, names = set(), roots, Counter()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = _node_name(node)
        if not _is_manual_node(node):
            name += " (no calculus)" if name in NEUTRAL_NODES else " (native)"
        names[name] += 1
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


@dataclass
class BackwardAudit:
    """What one audited ``loss.backward()`` ran."""

    graph: Counter[str]
    """every node of the backward graph by name; native ones end in ' (native)', the ones that only
    store a finished gradient (``AccumulateGrad``) in ' (no calculus)'"""
    dispatched: Counter[str]
    """every ATen op dispatched during backward"""
    native_nodes: list[str] = field(init=False)
    backward_kernels: list[str] = field(init=False)

    def __post_init__(self):
        self.native_nodes = sorted(n for n in self.graph if n.endswith(" (native)"))
        self.backward_kernels = sorted(op for op in self.dispatched if "backward" in op)

    @property
    def ok(self) -> bool:
        """True when the backward was hand-written through and through."""
        return not self.native_nodes and not self.backward_kernels

    def __str__(self) -> str:
        lines = ["backward graph:"] + [f"  {count:3d} × {name}" for name, count in sorted(self.graph.items())]
        ops = textwrap.fill(", ".join(sorted(self.dispatched)) or "(none)", 100, initial_indent="  ",
                            subsequent_indent="  ")
        lines.append(f"ops dispatched during backward:\n{ops}")
        if self.ok:
            lines.append("verdict: every derivative came from manual_backprop's hand-written backward")
        else:
            lines.append(
                f"verdict: native gradient nodes {self.native_nodes}, backward kernels {self.backward_kernels}"
            )
        return "\n".join(lines)


def _as_list(outputs) -> list[torch.Tensor]:
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


def audit_backward(
    loss: torch.Tensor | Sequence[torch.Tensor],
    gradient: torch.Tensor | Sequence[torch.Tensor] | None = None,
    **backward_kwargs,
) -> BackwardAudit:
    """Run ``torch.autograd.backward(loss, gradient, **backward_kwargs)`` and report which
    gradients it ran (see module doc). ``loss`` may be several output tensors, each with its
    ``gradient``."""
    graph = backward_graph(loss)
    with _RecordOps() as recorder:
        torch.autograd.backward(loss, gradient, **backward_kwargs)
    return BackwardAudit(graph, recorder.ops)
