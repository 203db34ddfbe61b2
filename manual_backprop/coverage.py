"""Coverage: how much of a model's backward pass is hand-written, and where the rest comes from.

    report = coverage(model, x)     # one forward and one backward on these inputs
    print(report)                   # one row per operation; native rows name their modules
    report.ok                       # True when no native gradient node is left

Every node of the backward graph is a manual_backprop Function (hand-written) or not (native, e.g.
``MulBackward0`` for a ``*`` in some forward). To say where a node came from, hooks on every module
tag the nodes each module's forward created with that module's path, the innermost module first.
"""

from __future__ import annotations

import functools
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from manual_backprop.audit import _is_manual_node, _node_name
from manual_backprop.routing import is_routed

#: module path of the model's own forward, and of the history its inputs came with
ROOT, OUTSIDE = "(root)", "(outside)"


@dataclass
class CoverageReport:
    """Which nodes of one backward graph are hand-written, counted by operation and module path.

    A node's operation is its Function's class name ("Linear"), or for a native node its type name
    ("MulBackward0"). Its module path is that of the innermost module whose forward created it;
    "(root)" is the model's own forward, "(outside)" the history the inputs brought along.
    ``AccumulateGrad`` nodes, which only store a finished gradient in a leaf's ``.grad``, compute
    nothing: they are counted apart in ``accumulate_grad`` and left out of every share and table row.
    """

    hand_written_by_module: Counter[tuple[str, str]]
    """(operation, module path) → number of hand-written nodes"""
    native_by_module: Counter[tuple[str, str]]
    """(operation, module path) → number of native nodes"""
    accumulate_grad: int = 0
    """number of AccumulateGrad nodes (not compute nodes)"""

    @property
    def hand_written(self) -> Counter[str]:
        """operation → number of hand-written nodes"""
        counts: Counter[str] = Counter()
        for (op, _), count in self.hand_written_by_module.items():
            counts[op] += count
        return counts

    @property
    def native(self) -> list[tuple[str, str, int]]:
        """(operation, module path, count) for every native compute node, by module (in the order of
        ``model.named_modules()``, "(outside)" first), then operation name."""
        return [(op, path, count) for (op, path), count in self.native_by_module.items()]

    @property
    def compute_nodes(self) -> int:
        return self.hand_written_by_module.total() + self.native_by_module.total()

    @property
    def hand_written_share(self) -> float:
        """hand-written compute nodes / all compute nodes, from 0 to 1 (1 for a graph without any)."""
        return self.hand_written_by_module.total() / self.compute_nodes if self.compute_nodes else 1.0

    @property
    def ok(self) -> bool:
        """True when no native compute node is left."""
        return not self.native_by_module

    def _rows(self, code: str = "") -> list[tuple[str, str, str, str]]:
        """(operation, backward, count, module paths): native rows first, then hand-written."""
        rows = []
        for kind, counts in (("native", self.native_by_module), ("hand-written", self.hand_written_by_module)):
            paths_of: dict[str, list[str]] = {}
            for (op, path), count in counts.items():
                paths_of.setdefault(op, []).append(f"{code}{path}{code}" + (f" ×{count}" if count > 1 else ""))
            for op in sorted(paths_of):
                total = sum(n for (o, _), n in counts.items() if o == op)
                rows.append((f"{code}{op}{code}", kind, str(total), ", ".join(paths_of[op])))
        return rows

    def _summary(self) -> list[str]:
        share = f"{self.hand_written_share:.1%}".replace(".0%", "%")
        return [
            f"{self.hand_written_by_module.total()} of {self.compute_nodes} compute nodes hand-written ({share})",
            f"(not counted: {self.accumulate_grad} AccumulateGrad nodes, which store finished gradients in .grad)",
        ]

    def __str__(self) -> str:
        table = [("operation", "backward", "count", "module path(s)"), *self._rows()]
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        table.insert(1, tuple("-" * width for width in widths))
        lines = [
            f"{op:<{widths[0]}}  {kind:<{widths[1]}}  {count:>{widths[2]}}  {paths}".rstrip()
            for op, kind, count, paths in table
        ]
        return "\n".join(lines + self._summary())

    def to_markdown(self) -> str:
        """The table of ``str(report)`` as GitHub markdown, then the totals."""
        lines = ["| operation | backward | count | module path(s) |", "| --- | --- | ---: | --- |"]
        lines += [f"| {' | '.join(row)} |" for row in self._rows(code="`")]
        return "\n".join([*lines, "", *self._summary()])


def _grad_fns(tree) -> set:
    return {t.grad_fn for t in tree_leaves(tree) if isinstance(t, torch.Tensor) and t.grad_fn is not None}


class _ModulePaths:
    """Tags each backward node made during a forward with the path of the module whose forward made it.

    On leaving a module's forward, a walk back from its outputs tags every node not tagged yet. It stops
    at the module's inputs (made by its caller, who tags them later) and at nodes tagged before the call
    began; it walks on through the nodes that inner modules tagged during the call, which keep their tag.
    Nodes reachable from the inputs before the forward are tagged OUTSIDE.
    """

    def __init__(self, inputs) -> None:
        self.tags: dict[torch.autograd.graph.Node, tuple[str, int]] = {}  # node → (path, stamp of the call)
        self.stamp = -1
        self.calls: list[tuple[int, set]] = []  # (first stamp, input nodes) of each forward running now
        self._tag(_grad_fns(inputs), OUTSIDE, since=0, stop=set())

    def path(self, node) -> str:
        return self.tags[node][0] if node in self.tags else OUTSIDE

    def _tag(self, roots: set, path: str, since: int, stop: set) -> None:
        stack, seen = list(roots), set()
        while stack:
            node = stack.pop()
            if node is None or node in seen or node in stop:
                continue
            seen.add(node)
            if node not in self.tags:
                self.tags[node] = (path, self.stamp)
            elif self.tags[node][1] < since:
                continue  # made before this call: neither ours nor on the way to ours
            stack.extend(next_node for next_node, _ in node.next_functions)

    def _enter(self, module, args, kwargs) -> None:
        self.calls.append((self.stamp + 1, _grad_fns((args, kwargs))))

    def _leave(self, path: str, module, args, output) -> None:
        since, inputs = self.calls.pop()
        self.stamp += 1
        self._tag(_grad_fns(output), path, since, stop=inputs)

    @contextmanager
    def hooked(self, model: nn.Module) -> Iterator[None]:
        handles = []
        try:
            for path, module in model.named_modules():
                handles.append(module.register_forward_pre_hook(self._enter, with_kwargs=True))
                leave = functools.partial(self._leave, path or ROOT)
                handles.append(module.register_forward_hook(leave, always_call=True))
            yield
        finally:
            for handle in handles:
                handle.remove()


def _graph(roots: set) -> list[torch.autograd.graph.Node]:
    nodes, stack, seen = [], list(roots), set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return nodes


def coverage(model: nn.Module, *example_inputs, **example_kwargs) -> CoverageReport:
    """Run ``model(*example_inputs, **example_kwargs)`` and one backward, and report the backward graph.

    Backward starts from every floating-point output tensor with a backward graph (outputs may be
    nested tuples, lists or dicts), with a gradient of ones. It runs as ``torch.autograd.grad``, so
    no ``.grad`` changes. The forward is an ordinary one, in the model's current mode: in training
    mode, dropout draws masks and batch norm updates its running statistics.
    ``AccumulateGrad`` nodes are counted apart, not in the shares (see :class:`CoverageReport`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"coverage expects a torch.nn.Module, got {type(model).__name__}")
    paths = _ModulePaths((example_inputs, example_kwargs))
    routed = [m.forward for m in model.modules() if is_routed(m)]
    warned_before = [set(forward.warned) for forward in routed]
    with paths.hooked(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* has no hand-written backward")  # the report names them
        output = model(*example_inputs, **example_kwargs)
    for forward, warned in zip(routed, warned_before, strict=True):
        forward.warned.intersection_update(warned)  # silenced here, so the model's next forward still warns
    outputs = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    outputs = [t for t in outputs if t.grad_fn is not None]
    if not outputs:
        raise ValueError(
            f"coverage: the output of {type(model).__name__} has no backward graph, since nothing in its forward "
            "requires grad (no parameters that require grad, or grad disabled). Pass inputs with "
            "requires_grad=True, e.g. coverage(model, x.requires_grad_()), and call it with grad enabled."
        )
    nodes = _graph(_grad_fns(outputs))
    leaves = [node.variable for node in nodes if _node_name(node) == "AccumulateGrad"]
    if leaves:
        torch.autograd.grad(outputs, leaves, [torch.ones_like(t) for t in outputs], allow_unused=True)

    order = {OUTSIDE: 0} | {path or ROOT: i for i, (path, _) in enumerate(model.named_modules(), 1)}
    hand_written, native, accumulate_grad = Counter(), Counter(), 0
    named = [(_node_name(node), paths.path(node), node) for node in nodes]
    for op, path, node in sorted(named, key=lambda row: (order[row[1]], row[0])):
        if op == "AccumulateGrad":
            accumulate_grad += 1
        elif _is_manual_node(node):
            hand_written[op, path] += 1
        else:
            native[op, path] += 1
    return CoverageReport(hand_written, native, accumulate_grad)
