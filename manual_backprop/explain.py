"""Explain one weight's gradient: the chain rule for ∂C/∂w, number by number.

For a weight w_ji of a Linear layer (row j = the unit it feeds, column i = the input it multiplies),
with z_j = Σ_i w_ji · a_prev_i + b_j and a_j = f(z_j):

    ∂C/∂w_ji = ∂z_j/∂w_ji · ∂a_j/∂z_j · ∂C/∂a_j  =  a_prev_i · f′(z_j) · ∂C/∂a_j  =  a_prev_i · δ_j

∂C/∂a_j comes from the loss at an output unit (2(a − y)/D for the mean squared error) and, at a
hidden unit, from the units it feeds in the next Linear layer:  ∂C/∂a_j = Σ_k δ_k · w_kj,  so
δ_j = f′(z_j) · Σ_k δ_k · w_kj. Plain gradient descent then moves the weight by
Δw_ji = −η · ∂C/∂w_ji = −η · a_prev_i · δ_j. With a batch of N samples ∂C/∂w_ji is the sum of the
per-sample products (a mean-reduced loss carries its 1/N inside ∂C/∂a).

:func:`explain` computes every one of these numbers by plain tensor arithmetic (no autograd), then
checks their product against the hand-written backward (``.grad`` of a converted copy) and against
native autograd (on a restored copy). It traces chains: ``nn.Sequential`` (nested, or converted)
of Linear layers and elementwise activations.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manual_backprop import functional as MF
from manual_backprop.convert import convert, restore
from manual_backprop.functional import activations as A
from manual_backprop.nn._base import CONTAINERS, SUPPORTED_MODULES

#: the elementwise activations explain traces: native class → (the Function whose f and f′ it uses,
#: the module's own arguments to them). Subclasses (the converted twins) are found through the MRO.
ACTIVATIONS: dict[type[nn.Module], tuple[type[A.Elementwise] | None, Callable[[nn.Module], tuple]]] = {
    nn.Identity: (None, lambda m: ()),
    nn.Sigmoid: (A.Sigmoid, lambda m: ()),
    nn.Tanh: (A.Tanh, lambda m: ()),
    nn.ReLU: (A.ReLU, lambda m: ()),
    nn.LeakyReLU: (A.LeakyReLU, lambda m: (m.negative_slope,)),
    nn.ReLU6: (A.Hardtanh, lambda m: (m.min_val, m.max_val)),
    nn.Hardtanh: (A.Hardtanh, lambda m: (m.min_val, m.max_val)),
    nn.ELU: (A.ELU, lambda m: (m.alpha,)),
    nn.SELU: (A.SELU, lambda m: ()),
    nn.CELU: (A.CELU, lambda m: (m.alpha,)),
    nn.GELU: (A.GELU, lambda m: (m.approximate,)),
    nn.SiLU: (A.SiLU, lambda m: ()),
    nn.Mish: (A.Mish, lambda m: ()),
    nn.Softplus: (A.Softplus, lambda m: (m.beta, m.threshold)),
    nn.Softsign: (A.Softsign, lambda m: ()),
    nn.Hardsigmoid: (A.Hardsigmoid, lambda m: ()),
    nn.Hardswish: (A.Hardswish, lambda m: ()),
    nn.LogSigmoid: (A.LogSigmoid, lambda m: ()),
    nn.Tanhshrink: (A.Tanhshrink, lambda m: ()),
    nn.Softshrink: (A.Softshrink, lambda m: (m.lambd,)),
    nn.Hardshrink: (A.Hardshrink, lambda m: (m.lambd,)),
    nn.Threshold: (A.Threshold, lambda m: (m.threshold, m.value)),
}

LOSSES = ("mse", "sse", "half_sse", "cross_entropy")

#: how many samples the tables show one by one before they skip to the sum
SAMPLES_SHOWN = 4
#: how many numbers of a vector (z, a, δ of a layer) the tables show
VALUES_SHOWN = 8


#: activations whose derivative torch computes as a difference that cancels (tanhshrink′ = 1 − (1 − tanh²z)):
#: it rounds to eps of 1 rather than of f′, which the tolerance allows for
_DIFFERENCE_DERIVATIVES = (A.Tanhshrink,)


# -- the chain: Linear layers, each with the activations that follow it ----------------------------
@dataclass(frozen=True)
class _Activation:
    path: str
    name: str  # "Sigmoid", "LeakyReLU(0.1)"
    function: type[A.Elementwise] | None  # None: the identity
    args: tuple

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """a = f(z) and f′(z), by the Function's own f and f′ (f′ from a where it saves the output)."""
        if self.function is None:
            return z, torch.ones_like(z)  # a = z, f′ = 1
        a = self.function.f(z, *self.args)
        return a, self.function.df(a if self.function.saves == "output" else z, *self.args)

    @property
    def derivative(self) -> str:
        """f′ as the Function's docstring states it, e.g. ``σ′(z) = a(1 − a)``."""
        if self.function is None:
            return "f′(z) = 1"
        first_line = self.function.__doc__.strip().splitlines()[0]
        return first_line.split(";  ", 1)[-1].split(",  ")[0].removesuffix(".")


@dataclass(frozen=True)
class _Layer:
    path: str
    linear: nn.Linear
    activations: tuple[_Activation, ...]

    @property
    def activation(self) -> str:
        shown = [act.name for act in self.activations if act.function is not None]
        return " → ".join(shown) or "none"

    @property
    def derivative(self) -> str:
        shown = [act.derivative for act in self.activations if act.function is not None]
        return "; ".join(shown) if shown else "f′(z) = 1"


def _supported() -> str:
    return "Linear, " + ", ".join(cls.__name__ for cls in ACTIVATIONS)


def _native_class(module: nn.Module, table: Sequence[type[nn.Module]]) -> type[nn.Module] | None:
    """The class of ``table`` that ``module`` is, if it keeps that class's forward (or its manual twin's)."""
    native = next((cls for cls in type(module).__mro__ if cls in table), None)
    if native is None:
        return None
    twin = SUPPORTED_MODULES.get(native)
    forwards = {native.forward} | ({twin.forward} if twin is not None else set())
    return native if type(module).forward in forwards else None


def _leaves(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """The modules a chain applies in order: an ``nn.Sequential`` (that keeps its forward) is opened up."""
    if isinstance(module, nn.Sequential) and type(module).forward in (nn.Sequential.forward,
                                                                      CONTAINERS[nn.Sequential].forward):
        # _modules, not named_children(): a module used twice must show up twice (named_children skips it)
        return [leaf for name, child in module._modules.items() if child is not None
                for leaf in _leaves(child, f"{path}.{name}" if path else name)]
    return [(path, module)]


def _chain(model: nn.Module, who: str, supported: str | None = None
           ) -> tuple[tuple[_Activation, ...], tuple[_Layer, ...]]:
    """(activations before the first Linear, the Linear layers with the activations after each).

    ``supported`` describes the chains the caller takes, for the error about a layer it cannot trace."""
    supported = supported or f"chains (nn.Sequential, nested or converted) of these layers: {_supported()}"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who} expects a torch.nn.Module, got {type(model).__name__}")
    first: list[_Activation] = []
    layers: list[tuple[str, nn.Linear, list[_Activation]]] = []
    seen: dict[int, str] = {}
    for path, module in _leaves(model, ""):
        if id(module) in seen and any(True for _ in module.parameters()):
            raise TypeError(
                f"{who}: layer {_name(path)} ({type(module).__name__}) is the same module as layer "
                f"{_name(seen[id(module)])}: its weights are used twice, and a trace follows each weight through "
                f"one use; it takes {supported}"
            )
        seen.setdefault(id(module), path)
        if _native_class(module, (nn.Linear,)) is nn.Linear:
            layers.append((path, module, []))
            continue
        native = _native_class(module, tuple(ACTIVATIONS))
        if native is None:
            custom = ""
            if isinstance(module, (nn.Linear, *ACTIVATIONS)):
                custom = ", with a forward of its own"
            elif type(module).__module__.split(".")[0] not in ("torch", "manual_backprop"):
                custom = ", a module with a forward of its own"
            raise TypeError(
                f"{who}: cannot trace layer {_name(path)} ({type(module).__name__}{custom}); it takes {supported}"
            )
        function, args = ACTIVATIONS[native]
        arguments = args(module)
        name = native.__name__ + (f"({', '.join(map(str, arguments))})" if arguments else "")
        (layers[-1][2] if layers else first).append(_Activation(path, name, function, arguments))
    if not layers:
        raise TypeError(f"{who}: {type(model).__name__} holds no Linear layer; it takes {supported}")
    return tuple(first), tuple(_Layer(path, linear, tuple(acts)) for path, linear, acts in layers)


# -- the losses: C, and ∂C/∂(output) -----------------------------------------------------------------
@dataclass(frozen=True)
class _LossRule:
    name: str
    formula: str
    derivative: str
    value: Callable[[Tensor, Tensor], Tensor]  # C, by plain arithmetic
    gradient: Callable[[Tensor, Tensor], Tensor]  # ∂C/∂(output), by plain arithmetic
    native: Callable[[Tensor, Tensor], Tensor]  # C through torch's own functions, for autograd's check
    manual: Callable[[Tensor, Tensor], Tensor]  # C through the hand-written Functions
    classes: bool = False  # targets are class indices


def _squared_error(name: str) -> _LossRule:
    """mse: C = Σ (a − y)² / D;  sse: C = Σ (a − y)²;  half_sse: C = ½ Σ (a − y)²."""
    if name == "mse":
        return _LossRule(
            "mse", "C = Σ (a − y)² / D, the mean over all D = N·K outputs", "∂C/∂a = 2(a − y)/D",
            lambda a, y: ((a - y) ** 2).sum() / a.numel(),
            lambda a, y: 2 * (a - y) / a.numel(),  # ∂C/∂a = 2(a − y)/D
            F.mse_loss, MF.mse_loss)
    if name == "sse":
        return _LossRule(
            "sse", "C = Σ (a − y)², summed over samples and outputs", "∂C/∂a = 2(a − y)",
            lambda a, y: ((a - y) ** 2).sum(),
            lambda a, y: 2 * (a - y),  # ∂C/∂a = 2(a − y)
            lambda a, y: F.mse_loss(a, y, reduction="sum"), lambda a, y: MF.mse_loss(a, y, reduction="sum"))
    return _LossRule(
        "half_sse", "C = ½ Σ (a − y)², summed over samples and outputs (the textbook's)", "∂C/∂a = a − y",
        lambda a, y: ((a - y) ** 2).sum() / 2,
        lambda a, y: a - y,  # ∂C/∂a = a − y: the ½ cancels the 2 of the square
        lambda a, y: F.mse_loss(a, y, reduction="sum") / 2, lambda a, y: MF.mse_loss(a, y, reduction="sum") / 2)


def _cross_entropy(reduction: str) -> _LossRule:
    """C = −Σ_n log softmax(out_n)_{y_n} (/ N):  ∂C/∂out = (softmax(out) − onehot(y)) (/ N)."""
    per = "/N" if reduction == "mean" else ""

    def gradient(out: Tensor, y: Tensor) -> Tensor:
        softmax = torch.exp(out - out.logsumexp(1, keepdim=True))
        onehot = F.one_hot(y, out.shape[1]).to(out.dtype)
        return (softmax - onehot) / (len(out) if reduction == "mean" else 1)  # (softmax − onehot)/N

    def value(out: Tensor, y: Tensor) -> Tensor:
        nll = out.logsumexp(1) - out.gather(1, y[:, None])[:, 0]  # −log softmax(out)_y
        return nll.mean() if reduction == "mean" else nll.sum()

    return _LossRule(
        "cross_entropy" + ("" if reduction == "mean" else " (sum)"),
        f"C = −Σ_n log softmax(out_n)_(y_n){' / N' if per else ''}, softmax and NLL on the network's output",
        f"∂C/∂out = (softmax(out) − onehot(y)){per}", value, gradient,
        lambda a, y: F.cross_entropy(a, y, reduction=reduction),
        lambda a, y: MF.cross_entropy(a, y, reduction=reduction), classes=True)


def _loss_rule(loss: str | nn.Module) -> _LossRule:
    choices = f"one of {LOSSES}, or an nn.MSELoss / nn.CrossEntropyLoss with reduction 'mean' or 'sum'"
    if isinstance(loss, str):
        if loss == "cross_entropy":
            return _cross_entropy("mean")
        if loss in LOSSES:
            return _squared_error(loss)
        raise ValueError(f"explain: unknown loss {loss!r}; the loss is {choices}")
    if isinstance(loss, nn.MSELoss) and loss.reduction in ("mean", "sum"):
        return _squared_error("mse" if loss.reduction == "mean" else "sse")
    if isinstance(loss, nn.CrossEntropyLoss) and loss.reduction in ("mean", "sum"):
        if loss.weight is not None or loss.label_smoothing != 0:
            raise ValueError("explain: CrossEntropyLoss with class weights or label smoothing is not traced; use "
                             "nn.CrossEntropyLoss() or loss='cross_entropy'")
        return _cross_entropy(loss.reduction)
    what = f"{type(loss).__name__}(reduction={loss.reduction!r})" if hasattr(loss, "reduction") else repr(loss)
    raise ValueError(f"explain: cannot trace the loss {what}; the loss is {choices}")


# -- the trace -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerTrace:
    """One Linear layer with the activations after it, for every sample n (rows):

    z = a_prev · Wᵀ + b,  a = f(z),  f′(z),  ∂C/∂a,  δ = ∂C/∂z = f′(z) ⊙ ∂C/∂a.

    ``dC_da_from`` says where ∂C/∂a came from: the loss at the output layer, ``δ · W`` of the
    next Linear layer (Σ_k δ_k · w_kj) below it.
    """

    path: str
    activation: str
    derivative: str
    a_prev: Tensor
    z: Tensor
    a: Tensor
    fprime: Tensor
    dC_da: Tensor
    delta: Tensor
    dC_da_from: str


@dataclass(frozen=True)
class DownstreamTerm:
    """One term δ_k · w_kj of ∂C/∂a_j = Σ_k δ_k · w_kj: unit k of the next Linear layer, per sample."""

    k: int
    delta_k: Tensor
    w_kj: float
    product: Tensor


@dataclass(frozen=True)
class WeightTrace:
    """Everything :func:`explain` found for one weight w_ji (or bias b_j), per sample n (1-D tensors):

    ``dz_dw`` = ∂z_j/∂w_ji = a_prev_i (1 for a bias), ``da_dz`` = ∂a_j/∂z_j = f′(z_j),
    ``dC_da`` = ∂C/∂a_j, ``delta`` = δ_j = f′(z_j) · ∂C/∂a_j, ``products`` = ∂z_j/∂w_ji · δ_j,
    and their sum ``grad`` = ∂C/∂w_ji. ``layers`` runs from the weight's layer (``layers[0]``) to the
    output (``layers[-1]``); ``downstream`` (hidden weights only) is ∂C/∂a_j = Σ_k δ_k · w_kj term
    by term. ``manual_grad`` is ``.grad`` from the hand-written backward, ``autograd_grad`` native
    autograd's; ``agrees`` when all three lie within ``tolerance``. The update is plain SGD:
    ``new = old + step``, ``step = −lr · grad``.

    ``str(trace)`` is a text table, :meth:`to_markdown` the same as Markdown.
    """

    weight: str
    index: tuple[int, ...]
    layer: str
    unit: int
    input: int | None
    loss: str
    loss_formula: str
    loss_derivative: str
    loss_value: float
    note: str | None
    layers: tuple[LayerTrace, ...]
    dz_dw: Tensor
    da_dz: Tensor
    dC_da: Tensor
    delta: Tensor
    products: Tensor
    downstream: tuple[DownstreamTerm, ...]
    grad: float
    manual_grad: float
    autograd_grad: float
    tolerance: float
    lr: float
    old: float
    step: float
    new: float

    @property
    def is_bias(self) -> bool:
        return self.input is None

    @property
    def is_output(self) -> bool:
        """Whether the weight feeds the output layer (no Linear layer above it)."""
        return len(self.layers) == 1

    @property
    def n_samples(self) -> int:
        return len(self.products)

    @property
    def agrees(self) -> bool:
        values = (self.grad, self.manual_grad, self.autograd_grad)
        return max(values) - min(values) <= self.tolerance

    def __str__(self) -> str:
        return self.to_text()

    def to_text(self, digits: int = 4) -> str:
        """A readable text table, numbers to ``digits`` significant digits (the check to 12)."""
        lines = []
        for title, headers, rows in self._sections(digits):
            lines += ["", title] if lines else [title]
            if headers:
                widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
                lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                          for row in (headers, *rows)]
            else:
                lines += ["  " + "  ".join(row).rstrip() for row in rows]
        return "\n".join(lines)

    def to_markdown(self, digits: int = 4) -> str:
        """The same tables in Markdown (for docs and TensorBoard's text plugin)."""
        blocks = []
        for title, headers, rows in self._sections(digits):
            block = [f"**{_md(title)}**", ""]
            if headers:
                block += [_md_row(headers), "|" + "---|" * len(headers)] + [_md_row(row) for row in rows]
            else:
                block += [_md("  ".join(row).rstrip()) + "  " for row in rows]
            blocks.append("\n".join(block).rstrip())
        return "\n\n".join(blocks) + "\n"

    # -- the sections both renderings share: (title, column headers or None, rows) ----------------
    def _sections(self, digits: int) -> list[tuple[str, list[str] | None, list[list[str]]]]:
        def num(x) -> str:
            return _num(x, digits)

        def vec(t: Tensor) -> str:
            values = [num(x) for x in t.tolist()]
            if len(values) > VALUES_SHOWN:
                values = [*values[: VALUES_SHOWN - 1], f"… {len(values) - VALUES_SHOWN + 1} more"]
            return "[" + ", ".join(values) + "]"

        def per_sample(rows_of: Callable[[int], list[list[str]]], columns: int) -> list[list[str]]:
            rows = [row for n in range(min(self.n_samples, SAMPLES_SHOWN)) for row in rows_of(n)]
            return rows + ([["…"] + [""] * (columns - 1)] if self.n_samples > SAMPLES_SHOWN else [])

        j, top = self.unit, self.layers[0]
        w, dz = ("b_j", "1") if self.is_bias else ("w_ji", "a_prev_i")
        where = (f"j = {j}: unit of layer {_name(top.path)}"
                 + ("" if self.is_bias else f"; i = {self.input}: its input")
                 + f"; {'output' if self.is_output else 'hidden'} layer")
        header = [f"explain: ∂C/∂{w} for {self.weight}[{', '.join(map(str, self.index))}]  ({where})",
                  f"loss: {self.loss}   {self.loss_formula};   {self.loss_derivative};   C = {num(self.loss_value)}",
                  f"batch: N = {self.n_samples}" + (" (the textbook case)" if self.n_samples == 1 else
                                                     ": ∂C/∂w is the sum of the per-sample products")
                  + (f"; the tables show samples 0 to {SAMPLES_SHOWN - 1}" if self.n_samples > SAMPLES_SHOWN else "")]
        sections = [("\n".join(header), None, [])]
        if self.note:
            sections.append((f"note: {self.note}", None, []))

        forward = [row for layer in self.layers for row in per_sample(lambda n, layer=layer: [[
            _name(layer.path), layer.activation, str(n), vec(layer.a_prev[n]), vec(layer.z[n]), vec(layer.a[n])]], 6)]
        sections.append(("forward pass, from the weight's layer to the output: z = a_prev · Wᵀ + b, a = f(z)",
                         ["layer", "activation", "n", "a_prev", "z", "a"], forward))

        chain = per_sample(lambda n: [[str(n), num(self.dz_dw[n]), num(top.z[n, j]), num(top.a[n, j]),
                                       num(self.da_dz[n]), num(self.dC_da[n]), num(self.delta[n]),
                                       num(self.products[n])]], 8)
        chain.append(["Σ", "", "", "", "", "", "", num(self.grad)])
        sections.append((f"chain rule: ∂C/∂{w} = ∂z_j/∂{w} · ∂a_j/∂z_j · ∂C/∂a_j = {dz} · f′(z_j) · ∂C/∂a_j"
                         f" = {dz} · δ_j   (f′: {top.derivative})",
                         ["n", f"∂z_j/∂{w} = {dz}", "z_j", "a_j", "∂a_j/∂z_j", "∂C/∂a_j", "δ_j", "product"], chain))

        if not self.is_output:
            below = self.layers[1]
            terms = per_sample(lambda n: [[str(n), str(t.k), num(t.delta_k[n]), num(t.w_kj), num(t.product[n])]
                                          for t in self.downstream] + [[str(n), "Σ", "", "", num(self.dC_da[n])]], 5)
            sections.append((f"hidden unit: ∂C/∂a_j = Σ_k δ_k · w_kj, k over the {len(self.downstream)} unit(s) of "
                             f"layer {_name(below.path)} (w_kj = {below.path}.weight[k, {j}])",
                             ["n", "k", "δ_k", "w_kj", "δ_k · w_kj"], terms))
            deltas = [row for layer in reversed(self.layers) for row in per_sample(lambda n, layer=layer: [[
                _name(layer.path), layer.dC_da_from, str(n), vec(layer.dC_da[n]), vec(layer.fprime[n]),
                vec(layer.delta[n])]], 6)]
            sections.append(("error terms δ = ∂C/∂z = f′(z) ⊙ ∂C/∂a, from the output down",
                             ["layer", "∂C/∂a from", "n", "∂C/∂a", "f′(z)", "δ"], deltas))

        sections.append((f"check: ∂C/∂{w}", None, [
            ["this trace (plain arithmetic)", f"{self.grad:.12g}"],
            ["manual backprop (.grad)      ", f"{self.manual_grad:.12g}"],
            ["autograd (native copy)       ", f"{self.autograd_grad:.12g}"],
            [f"agree within {self.tolerance:.1e}: " + ("yes" if self.agrees else "NO")],
        ]))
        sections.append((f"update (SGD, η = {self.lr:g}): {w} ← {w} − η · ∂C/∂{w} = {w} − η · Σ_n {dz} · δ_j"
                         f"   (the delta rule's  + η · Σ_n {dz} · Error_j,  Error_j = −δ_j)", None, [
            ["old ", num(self.old)],
            ["step", num(self.step)],
            ["new ", num(self.new)],
        ]))
        return sections


def _num(x, digits: int) -> str:
    x = float(x)
    return "0" if x == 0 else f"{x:.{digits}g}"


def _name(path: str) -> str:
    """A layer's path as the tables show it; the root module has the empty path."""
    return repr(path) if path else "(root)"


def _md(text: str) -> str:
    for special in ("\\", "*", "_", "|", "["):
        text = text.replace(special, "\\" + special)
    return text.replace("\n", "  \n")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(_md(cell) for cell in cells) + " |"


# -- explain ---------------------------------------------------------------------------------------
def _parameter(model: nn.Module, weight: str, index, layers: tuple[_Layer, ...]) -> tuple[int, tuple[int, ...]]:
    """(position of the weight's layer in the chain, the index as non-negative ints); a clear error otherwise."""
    params = dict(model.named_parameters())
    width = max((len(path) for path in params), default=0)
    listing = "\n".join(f"  {path.ljust(width)}  {tuple(p.shape)}" for path, p in params.items())
    if weight not in params:
        raise ValueError(f"explain: {type(model).__name__} has no parameter {weight!r}; its parameters are:\n"
                         f"{listing}")
    shape = tuple(params[weight].shape)
    index = (index,) if isinstance(index, int) else tuple(index)
    fits = len(index) == len(shape) and all(isinstance(x, int) and -s <= x < s for x, s in zip(index, shape))
    if not fits:
        meaning = "(j, i): unit j, input i" if len(shape) == 2 else "(j,): unit j"
        raise ValueError(f"explain: index {index} does not exist in {weight} of shape {shape}; give {meaning}, "
                         f"within the shape. The parameters are:\n{listing}")
    index = tuple(x % s for x, s in zip(index, shape))
    for position, layer in enumerate(layers):
        if params[weight] is layer.linear.weight or params[weight] is layer.linear.bias:
            return position, index
    raise ValueError(f"explain: {weight} is not a Linear layer's weight or bias; the parameters are:\n{listing}")


def _as_inputs(inputs, targets, rule: _LossRule, dtype: torch.dtype, device: torch.device,
               n_in: int) -> tuple[Tensor, Tensor]:
    x = torch.as_tensor(inputs, dtype=dtype, device=device)
    x = x[None] if x.dim() == 1 else x
    if x.dim() != 2 or x.shape[1] != n_in:
        raise ValueError(f"explain: inputs of shape {tuple(x.shape)}; expected (N, {n_in}) (N samples of the "
                         f"first Linear layer's {n_in} features), or ({n_in},) for one sample")
    if rule.classes:
        y = torch.as_tensor(targets, device=device)
        y = y.reshape(1) if y.dim() == 0 else y
        if y.is_floating_point() or y.shape != (len(x),):
            raise ValueError(f"explain: {rule.name} takes class indices, an integer tensor of shape ({len(x)},); got "
                             f"{'a float tensor' if y.is_floating_point() else 'shape'} {tuple(y.shape)}")
        return x, y.long()
    y = torch.as_tensor(targets, dtype=dtype, device=device)
    return x, (y[None] if y.dim() == 1 and x.shape[0] == 1 else y)


def _check_targets(y: Tensor, out: Tensor, rule: _LossRule) -> None:
    if rule.classes:
        if ((y < 0) | (y >= out.shape[1])).any():
            raise ValueError(f"explain: class indices {y.tolist()} outside [0, {out.shape[1]}), the output's classes")
    elif y.shape != out.shape:
        raise ValueError(f"explain: targets of shape {tuple(y.shape)}; the network's output has shape "
                         f"{tuple(out.shape)}, and {rule.name} compares them element by element")


def _gradient_from(model: nn.Module, manual: bool, weight: str, x: Tensor, y: Tensor, rule: _LossRule) -> Tensor:
    """∂C/∂(weight) of a copy: converted (the hand-written backward, ``.grad``) or restored (native autograd)."""
    twin = copy.deepcopy(model)
    twin = convert(twin) if manual else restore(twin)
    for p in twin.parameters():
        p.grad = None
        p.requires_grad_(True)
    param = dict(twin.named_parameters())[weight]
    with torch.enable_grad():  # explain may be called under torch.no_grad()
        out = twin(x)
        if manual:
            rule.manual(out, y).backward()
            return param.grad
        return torch.autograd.grad(rule.native(out, y), param)[0]


def _tolerance(dtype: torch.dtype, grad: float, manual: float, autograd: float, magnitude: Tensor) -> float:
    """Relative: √eps of the gradient's size, plus the rounding its sums can pick up: a few eps of
    ``magnitude``, the gradient computed again with every factor and weight taken in absolute value
    (the size of the terms that the sums over samples and over the units k of each δ·W add up, which
    may cancel to far less). So a vanishing gradient of 1e-9 is not waved through by an absolute bound,
    nor one that cancels to 1e-15 held to a bound its own rounding exceeds."""
    eps = torch.finfo(dtype).eps
    return math.sqrt(eps) * max(abs(grad), abs(manual), abs(autograd)) + 64 * eps * float(magnitude)


def explain(model: nn.Module, inputs, targets, loss: str | nn.Module = "mse", *, weight: str,
            index: int | Sequence[int], lr: float = 0.1) -> WeightTrace:
    """The chain rule for one weight, number by number: see the module doc and :class:`WeightTrace`.

    ``model``: a chain (``nn.Sequential``, nested or converted) of ``nn.Linear`` layers and elementwise
    activations (Sigmoid, Tanh, ReLU, LeakyReLU, Identity, ...). ``inputs``: (N, features) or one
    sample (features,). ``targets``: like the output for the squared errors; class indices (N,) for
    cross-entropy. ``loss``: ``"mse"`` (Σ (a − y)² / D), ``"sse"`` (Σ (a − y)²), ``"half_sse"``
    (½ Σ (a − y)², the textbook's), ``"cross_entropy"`` (softmax and NLL on the output, mean over
    N), or an ``nn.MSELoss`` / ``nn.CrossEntropyLoss`` with reduction ``"mean"`` or ``"sum"``.
    ``weight``: a parameter path (``"2.weight"``, ``"0.bias"``); ``index``: (j, i) for a weight w_ji,
    (j,) for a bias b_j. ``lr``: η of the SGD step shown. The model itself is left unchanged.
    """
    pre, layers = _chain(model, "explain")
    rule = _loss_rule(loss)
    position, index = _parameter(model, weight, index, layers)
    is_bias = len(index) == 1
    dtype, device = layers[0].linear.weight.dtype, layers[0].linear.weight.device
    x, y = _as_inputs(inputs, targets, rule, dtype, device, layers[0].linear.in_features)

    with torch.no_grad():
        # forward: z = a_prev · Wᵀ + b, a = f(z), and f′(z) while z is at hand
        a = x
        for act in pre:
            a = act(a)[0]
        values = []
        for layer in layers:
            w, b = layer.linear.weight, layer.linear.bias
            a_prev = a
            z = a_prev @ w.T + (0 if b is None else b)  # z = a_prev · Wᵀ + b
            a, fprime = z, torch.ones_like(z)
            size = fprime  # |f′| for the tolerance, at least 1 for an activation torch differentiates as a difference
            for act in layer.activations:
                a, f_prime_here = act(a)
                fprime = fprime * f_prime_here  # activations in a row: their f′ multiply (chain rule)
                size = size * (f_prime_here.abs().clamp(min=1) if act.function in _DIFFERENCE_DERIVATIVES
                               else f_prime_here.abs())
            values.append((a_prev, z, a, fprime, size))
        _check_targets(y, a, rule)

        # backward: ∂C/∂a at the output from the loss; δ = f′(z) ⊙ ∂C/∂a; the layer below gets δ · W
        dC_da = rule.gradient(a, y)
        dC_da_from = f"loss: {rule.derivative.split(' = ', 1)[1]}"
        traced: list[LayerTrace] = []
        # the same chain in absolute values: how large the terms the sums add are (for the tolerance)
        scale = dC_da.abs()
        scales = []
        for layer, (a_prev, z, a_layer, fprime, size) in zip(reversed(layers), reversed(values)):
            delta = fprime * dC_da  # δ = ∂C/∂z = f′(z) ⊙ ∂C/∂a
            traced.append(LayerTrace(layer.path, layer.activation, layer.derivative, a_prev, z, a_layer, fprime,
                                     dC_da, delta, dC_da_from))
            scales.append(scale)
            dC_da = delta @ layer.linear.weight  # ∂C/∂a_prev,j = Σ_k δ_k · w_kj
            scale = (size * scale) @ layer.linear.weight.abs()
            dC_da_from = f"δ · W of {_name(layer.path)}"
        traced.reverse()
        scales.reverse()
        loss_value = rule.value(a, y).item()

        # the one weight: ∂C/∂w_ji = a_prev_i · f′(z_j) · ∂C/∂a_j, per sample, and the sum
        mine = traced[position]
        j = index[0]
        dz_dw = torch.ones_like(mine.z[:, j]) if is_bias else mine.a_prev[:, index[1]]
        da_dz, dC_da_j, delta_j = mine.fprime[:, j], mine.dC_da[:, j], mine.delta[:, j]
        products = dz_dw * da_dz * dC_da_j
        grad = products.sum().item()
        magnitude = (dz_dw.abs() * values[position][4][:, j] * scales[position][:, j]).sum()  # the terms' size
        downstream = ()
        if position + 1 < len(traced):
            below, w_below = traced[position + 1], layers[position + 1].linear.weight
            downstream = tuple(DownstreamTerm(k, below.delta[:, k], w_below[k, j].item(),
                                              below.delta[:, k] * w_below[k, j])  # δ_k · w_kj
                               for k in range(w_below.shape[0]))
        old = dict(model.named_parameters())[weight][index].item()

    manual_grad = _gradient_from(model, True, weight, x, y, rule)[index].item()
    autograd_grad = _gradient_from(model, False, weight, x, y, rule)[index].item()
    note = None
    if rule.classes and layers[-1].activation == "none":
        per = "/N" if rule.name == "cross_entropy" else ""
        note = (f"cross-entropy on the last z: ∂C/∂z = (softmax(z) − onehot(y)){per} directly (the softmax's "
                "Jacobian times −log's derivative collapses to it), so ∂a/∂z = 1 at the output")
    step = -lr * grad
    formula = rule.formula + (f" (D = {a.numel()})" if rule.name == "mse" else "")
    return WeightTrace(
        weight=weight, index=index, layer=mine.path, unit=j, input=None if is_bias else index[1],
        loss=rule.name, loss_formula=formula, loss_derivative=rule.derivative, loss_value=loss_value,
        note=note, layers=tuple(traced[position:]), dz_dw=dz_dw, da_dz=da_dz, dC_da=dC_da_j, delta=delta_j,
        products=products, downstream=downstream, grad=grad, manual_grad=manual_grad, autograd_grad=autograd_grad,
        tolerance=_tolerance(dtype, grad, manual_grad, autograd_grad, magnitude), lr=lr, old=old, step=step,
        new=old + step,
    )
