"""The backward graph of a loss, drawn as a tree of the hand-written Functions, each with its formula.

``loss.backward()`` walks a graph that the forward pass built: every operation left a node
(``loss.grad_fn``, then its ``next_functions``, down to the parameters). In a converted model each
node is one of manual_backprop's Functions, whose backward is the chain rule written out; this
module shows that graph from the loss down, a node per line with the Function's formula under it
(taken from the Function's docstring, where its forward and its backward are stated)::

    tree = backward_tree(loss, model)          # or model_backward_tree(model, x, loss_fn, y)
    print(tree)                                # an indented tree
    tree.to_dot()                              # the same graph as Graphviz DOT text

Three kinds of node appear:

- **hand-written**: a manual_backprop Function (``LinearBackward`` is the backward node of
  :class:`~manual_backprop.functional.linear.Linear`), shown with its formula;
- **native**: a node of PyTorch's own autograd (``MulBackward0``), left by an operation that has
  no hand-written rule or ran outside the converted model; it has no formula here;
- **leaf**: ``AccumulateGrad``, which computes nothing: it adds the finished gradient ∂C/∂w into the
  ``.grad`` of a parameter (named by its path in the model) or of another leaf tensor.

A node that two others feed (a tensor used twice) is drawn once in full and referred to after.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from manual_backprop.audit import _is_manual_node
from manual_backprop.coverage import OUTSIDE, ROOT, _ModulePaths
from manual_backprop.functional._function import ManualFunction
from manual_backprop.functional.activations import Elementwise

#: The backward rule of Functions whose docstring states it in words rather than as a formula line.
BACKWARD_FORMULAS: dict[str, list[str]] = {
    "CrossEntropy": ["∂C/∂z = (softmax(z) − onehot(y)) / N   (one-hot targets, mean over N samples)"],
    "Softmax": ["δ_j = a_j (g_j − Σ_i g_i a_i),   g = ∂C/∂a"],
    "LogSoftmax": ["δ_j = g_j − softmax(z)_j · Σ_i g_i,   g = ∂C/∂a"],
    "NLLLoss": ["∂C/∂z_{n,c} = −w_c [c = y_n] / D"],
}

#: the rule every elementwise activation shares (written once in :class:`Elementwise`)
ELEMENTWISE_RULE = "δ = ∂C/∂z = ∂C/∂a ⊙ f′(z)"


@dataclass
class GraphNode:
    """One node of the backward graph."""

    name: str
    """the node's type name: ``LinearBackward``, ``MulBackward0``, ``AccumulateGrad``"""
    kind: str
    """``"hand-written"``, ``"native"`` or ``"leaf"`` (AccumulateGrad)"""
    function: str | None = None
    """the Function's class name (``Linear``) for a hand-written node"""
    formula: list[str] = field(default_factory=list)
    """what the Function computes and its backward, from its docstring (empty: none stated)"""
    where: str | None = None
    """the module path that made it, or the parameter path of a leaf"""
    shape: tuple[int, ...] | None = None
    """a leaf's tensor shape"""
    children: list[int] = field(default_factory=list)
    """indices (into :attr:`BackwardTree.nodes`) of the nodes it passes gradients on to"""

    def describe(self) -> str:
        """The node's line: name, where it came from, what kind it is."""
        if self.kind == "leaf":
            what = (f"parameter {self.where} {self.shape}: ∂C/∂({self.where}) is added into its .grad" if self.where
                    else f"a leaf tensor {self.shape} that requires grad (not a parameter of the model): ∂C/∂x is "
                    "added into its .grad")
            return f"{self.name}  ·  {what}"
        where = f"  ·  {self.where}" if self.where else ""
        if self.kind == "native":
            return f"{self.name}{where}  ·  native: PyTorch's own derivative, not hand-written"
        return f"{self.name}{where}  ·  hand-written ({self.function})"


@dataclass
class BackwardTree:
    """The backward graph from a loss, as :func:`backward_tree` found it; ``nodes[0]`` is the loss's node."""

    nodes: list[GraphNode]

    @property
    def hand_written(self) -> list[GraphNode]:
        return [n for n in self.nodes if n.kind == "hand-written"]

    @property
    def native(self) -> list[GraphNode]:
        return [n for n in self.nodes if n.kind == "native"]

    def summary(self) -> str:
        leaves = len(self.nodes) - len(self.hand_written) - len(self.native)
        return (f"backward graph of the loss: {len(self.hand_written)} hand-written Function node(s), "
                f"{len(self.native)} native, {leaves} leaf node(s) (AccumulateGrad)")

    def lines(self) -> list[str]:
        """The tree, one node per line, each hand-written node's formula indented under it."""
        out: list[str] = []
        shown: set[int] = set()

        def draw(index: int, lead: str, branch: str, below: str) -> None:
            node = self.nodes[index]
            if index in shown:
                out.append(f"{lead}{branch}{node.name} (#{index}, drawn above)")
                return
            shown.add(index)
            out.append(f"{lead}{branch}{node.name} (#{index})" + node.describe()[len(node.name):])
            pad = lead + below + ("│   " if node.children else "    ")
            if node.kind == "hand-written":
                out.extend(f"{pad}  {line}" for line in node.formula or ["(no formula stated in its docstring)"])
            for k, child in enumerate(node.children):
                last = k == len(node.children) - 1
                draw(child, lead + below, "└── " if last else "├── ", "    " if last else "│   ")

        draw(0, "", "", "")
        return out

    def __str__(self) -> str:
        return "\n".join([self.summary(), "", *self.lines()])

    def to_dot(self) -> str:
        """Graphviz DOT: one box per node (green: hand-written, red: native, blue: a parameter's leaf),
        an arrow for each gradient handed on, from the loss towards the parameters."""
        colors = {"hand-written": "#d9ead3", "native": "#f4cccc", "leaf": "#cfe2f3"}
        lines = ["digraph backward {", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", '
                 'fontname="Helvetica"];']
        for i, node in enumerate(self.nodes):
            label = [node.name]
            if node.kind == "leaf":
                label.append(f"{node.where or 'leaf tensor'} {node.shape}")
            else:
                if node.where:
                    label.append(node.where)
                label += node.formula if node.kind == "hand-written" else ["native: no hand-written formula"]
            text = "\\l".join(_dot_escape(part) for part in label) + "\\l"
            shape = ", shape=ellipse" if node.kind == "leaf" else ""
            lines.append(f'  n{i} [label="{text}", fillcolor="{colors[node.kind]}"{shape}];')
        for i, node in enumerate(self.nodes):
            lines.extend(f"  n{i} -> n{child};" for child in node.children)
        lines.append("}")
        return "\n".join(lines)


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# -- formulas from the Functions' docstrings -------------------------------------------------------
@functools.cache
def _inplace_bases() -> dict[type, type]:
    """The in-place twin of an elementwise activation (``ReLU_``) → the activation (``ReLU``)."""
    found, stack = {}, [Elementwise]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        inplace = cls.__dict__.get("Inplace")
        if inplace is not None:
            found[inplace] = cls
    return found


def formula_of(function: type[ManualFunction]) -> list[str]:
    """What a hand-written Function computes and how its backward goes, as its docstring states them.

    The first paragraph of the docstring (the forward, often with the derivative), then the lines
    that state a derivative (they start with ∂ or δ). An elementwise activation adds the rule all of
    them share, δ = ∂C/∂a ⊙ f′(z); a few Functions that state their backward in words get it from
    :data:`BACKWARD_FORMULAS`. Empty when the docstring states no formula."""
    function = _inplace_bases().get(function, function)
    doc = function.__doc__ or ""
    paragraphs = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)
    first = " ".join(paragraphs[0].split())
    rest = paragraphs[1].splitlines() if len(paragraphs) > 1 else []
    backward = []
    for k, line in enumerate(rest):
        stated = re.match(r"\s*([∂δ]\S*)\s*=\s*(.*)", line)  # "∂C/∂W      = δᵀ · a_prev   (o,n)·(n,i) ..."
        if stated:
            right_side, *comment = re.split(r"\s{3,}", stated[2])  # a comment follows after 3 spaces or more
            right_side = re.sub(r"\s+\([^()]*\)·\([^()]*\)\s*→\s*\([^()]*\)$", "", right_side)  # (n,o)·(o,i) → (n,i)
            right_side = right_side.rstrip(",;")
            following = rest[k + 1] if k + 1 < len(rest) else ""
            indent = len(line) - len(line.lstrip())
            goes_on = (following.strip() and not re.match(r"\s*([∂δ]|Forward mode)", following)
                       and len(following) - len(following.lstrip()) <= indent + 4)  # deeper: a comment column
            if goes_on and not comment:
                right_side += " …"  # the sentence goes on in the docstring
            backward.append(f"{stated[1]} = {right_side}")
    if issubclass(function, Elementwise):
        backward = [ELEMENTWISE_RULE]
    backward = BACKWARD_FORMULAS.get(function.__name__, backward)
    lines = ([first] if first else []) + backward
    return lines if any(symbol in " ".join(lines) for symbol in ("∂", "′", "δ")) else []


# -- walking the graph -----------------------------------------------------------------------------
def backward_tree(loss: Tensor, model: nn.Module | None = None, *,
                  where: Callable[[torch.autograd.graph.Node], str | None] | None = None) -> BackwardTree:
    """The backward graph of ``loss`` as a tree, from ``loss.grad_fn`` down to the leaves.

    ``model`` names the parameters at the leaves (``fc1.weight``) and, without ``where``, each
    hand-written node that uses a parameter directly by that parameter's module (``fc1``).
    ``where(node)`` may name the module that made any node (:func:`model_backward_tree` does).
    Nothing runs: the graph is only read, and ``loss.backward()`` may still be called after.
    """
    if not isinstance(loss, Tensor):
        raise TypeError(f"backward_tree expects the loss tensor, got {type(loss).__name__}")
    if loss.grad_fn is None:
        raise ValueError("backward_tree: the loss has no backward graph (nothing it was computed from requires "
                         "grad, or it was computed under torch.no_grad())")
    names = {id(p): name for name, p in model.named_parameters()} if model is not None else {}
    nodes: list[GraphNode] = []
    index: dict[torch.autograd.graph.Node, int] = {}

    def visit(node) -> int:
        if node in index:
            return index[node]
        index[node] = len(nodes)
        entry = _entry(node, names)
        nodes.append(entry)
        if where is not None and entry.kind != "leaf":
            entry.where = where(node)
        entry.children = [visit(child) for child, _ in node.next_functions if child is not None]
        if where is None and entry.kind == "hand-written":
            modules = {nodes[c].where.rsplit(".", 1)[0] for c in entry.children
                       if nodes[c].kind == "leaf" and nodes[c].where and "." in nodes[c].where}
            entry.where = modules.pop() if len(modules) == 1 else None
        return index[node]

    visit(loss.grad_fn)
    return BackwardTree(nodes)


def _entry(node, names: dict[int, str]) -> GraphNode:
    name = type(node).__name__
    if name == "AccumulateGrad":
        variable = node.variable
        return GraphNode(name, "leaf", where=names.get(id(variable)), shape=tuple(variable.shape))
    if _is_manual_node(node):
        function = node._forward_cls
        return GraphNode(name, "hand-written", function=function.__qualname__, formula=formula_of(function))
    return GraphNode(name, "native")


def model_backward_tree(model: nn.Module, *inputs, loss_fn: Callable[..., Tensor] | None = None,
                        target=None) -> BackwardTree:
    """Run ``loss_fn(model(*inputs), target)`` (or take the model's output, which must be a single
    number, as the loss) and return its :func:`backward_tree`, each node named by the module whose
    forward made it (the loss's node: ``loss``)."""
    paths = _ModulePaths(inputs)
    with paths.hooked(model):
        output = model(*inputs)
    if loss_fn is not None:
        loss = loss_fn(output, target) if target is not None else loss_fn(output)
    elif isinstance(output, Tensor) and output.numel() == 1:
        loss = output
    else:
        raise ValueError("model_backward_tree: give loss_fn (and target): the model's output is not a single number"
                         + (f" (shape {tuple(output.shape)})" if isinstance(output, Tensor) else ""))

    def where(node) -> str | None:
        path = paths.path(node)
        if node is loss.grad_fn and (path == OUTSIDE or loss is not output):
            return "loss"
        return {ROOT: "(root)", OUTSIDE: None}.get(path, path)

    return backward_tree(loss, model, where=where)
