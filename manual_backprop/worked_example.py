"""Worked examples: one step of backpropagation on a small network given in a file, every number shown.

A textbook example is a handful of units with their weights written out, one input, a target, and
the learning rate η. This module loads such a network from a YAML or JSON file, runs one step of
gradient descent with manual backprop (the network is converted by :func:`manual_backprop.convert`,
its error terms recorded by :func:`manual_backprop.record_error_terms`), and lays out

- the forward pass: each unit's net input I_j = z_j = Σ_i w_ij·O_i + θ_j and output O_j = a_j = f(I_j);
- every error term in both notations: δ_j = ∂C/∂z_j (the chain rule's) and Err_j = −δ_j (the
  textbooks' delta rule: Err_j = O_j(1 − O_j)(T_j − O_j) at a sigmoid output unit with
  C = ½·Σ(T − O)², Err_j = O_j(1 − O_j)·Σ_k Err_k·w_jk at a hidden one);
- every weight and bias update: ∂C/∂w_ij = δ_j·O_i, and w_ij ← w_ij − η·∂C/∂w_ij = w_ij + η·Err_j·O_i;

next to the numbers the source published, each marked ✓ when it agrees at the printed precision.
``check=True`` adds the values native autograd gives on a native copy of the network.

    example = load_worked_example("han-kamber")     # or a path to your own file
    print(example.step(check=True))

The file (YAML or JSON)::

    title: My network                       # optional; also: source, notes
    activation: sigmoid                     # sigmoid (default), tanh, relu or identity
    loss: half_squared_error                # C = ½·Σ(T − O)² (default), squared_error, mean_squared_error
    learning_rate: 0.9                      # η
    update_biases: true                     # false: biases stay fixed (default true)
    inputs: [1, 0, 1]                       # one sample, or a list of samples
    targets: [1]                            # one target per output unit (per sample)
    layers:                                 # from the first hidden layer to the output layer
      - weights: [[0.2, 0.4, -0.5],         # one row per unit of this layer,
                  [-0.3, 0.1, 0.2]]         #   one column per unit of the layer below
        biases: [-0.4, 0.2]                 # one per unit, or one number shared by the layer's units
      - weights: [[-0.3, -0.2]]
        biases: [0.1]
        activation: sigmoid                 # optional, this layer only
    names:                                  # optional; default: units numbered 1, 2, ... from the input
      units: [[x1, x2, x3], [h1, h2], [o]]  # layer by layer, the input layer first
      weights: [[[w1, w2, w3], [w4, w5, w6]], [[w7, w8]]]
      biases: [[b1, b2], [b3]]              # a list per layer, or one name for a shared bias (default b1, b2, ...)
    published:                              # optional: what the source printed (quote "0.40" to keep a 0)
      net_input: {4: -0.7}                  # I_j by unit name; also: output (O_j), Err (Err_j), delta (δ_j)
      new: {w46: -0.261}                    # a weight or bias after the step, by its name
      loss: 0.298                           # C before the step
      loss_at_step: {10000: 0.0000351}      # C in the forward pass of step n (the weights after n − 1 steps)
      note: the book rounds to 3 decimals   # shown under the comparison
      label: book                           # the published columns' heading (default "published")
"""

from __future__ import annotations

import copy
import json
import math
import textwrap
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from manual_backprop import functional as manual_F
from manual_backprop.convert import convert, restore
from manual_backprop.recording import record_error_terms

#: the worked examples that ship with the package, by name
WORKED_EXAMPLES: dict[str, Path] = {
    "han-kamber": Path(__file__).parent / "worked_examples" / "han_kamber.yaml",
    "mazur": Path(__file__).parent / "worked_examples" / "mazur.yaml",
}

#: activation name → (module class or None for identity, f′ written with the unit's O_j and I_j)
ACTIVATIONS: dict[str, tuple[type[nn.Module] | None, str]] = {
    "sigmoid": (nn.Sigmoid, "O_j(1 − O_j)"),
    "tanh": (nn.Tanh, "(1 − O_j²)"),
    "relu": (nn.ReLU, "[I_j > 0]"),
    "identity": (None, "1"),
}


def _half_squared_error(output: Tensor, target: Tensor) -> Tensor:
    """C = ½·Σ (T − O)²: the hand-written mean-squared-error Function with weight ½ and reduction "sum",
    whose backward gives ∂C/∂O = 2·½·(O − T) = O − T: the ½ is there to cancel the square's 2."""
    return manual_F.mse_loss(output, target, reduction="sum", weight=torch.full_like(output, 0.5))


#: loss name → (the loss with manual backprop, the same loss for native autograd, its formula,
#: −∂C/∂O_j written out for the error-term formula)
LOSSES: dict[str, tuple[Callable, Callable, str, str]] = {
    "half_squared_error": (_half_squared_error, lambda o, t: ((t - o) ** 2).sum() / 2,
                           "C = ½·Σ_j (T_j − O_j)²", "(T_j − O_j)"),
    "squared_error": (partial(manual_F.mse_loss, reduction="sum"), lambda o, t: ((t - o) ** 2).sum(),
                      "C = Σ_j (T_j − O_j)²", "2(T_j − O_j)"),
    "mean_squared_error": (manual_F.mse_loss, lambda o, t: ((t - o) ** 2).mean(),
                           "C = mean over samples and units of (T_j − O_j)²", "2(T_j − O_j)/(N·K)"),
}

_KEYS = {
    "title": "a line naming the example",
    "source": "where the numbers come from",
    "notes": "anything a reader should know",
    "sizes": "the layer widths, input first (checked against the weights)",
    "activation": f"one of {sorted(ACTIVATIONS)}",
    "loss": f"one of {sorted(LOSSES)}",
    "learning_rate": "η",
    "update_biases": "true or false",
    "inputs": "one sample (a list of numbers) or several",
    "targets": "one target per output unit, per sample",
    "layers": "a list of {weights, biases, activation}",
    "names": "{units, weights, biases}",
    "published": "the numbers the source printed",
    "digits": "decimals to print",
}
_REQUIRED = ("learning_rate", "inputs", "targets", "layers")
#: published per unit: key → (the symbol in the tables, what it is)
_PUBLISHED_UNIT_KEYS = {"net_input": ("I", "net input I_j = z_j"), "output": ("O", "output O_j = a_j"),
                        "Err": ("Err", "Err_j = −δ_j"), "delta": ("δ", "δ_j = ∂C/∂z_j")}
_PUBLISHED_KEYS = (*_PUBLISHED_UNIT_KEYS, "new", "loss", "loss_at_step", "note", "label")


class WorkedExampleError(ValueError):
    """A worked-example file that cannot be read: a missing key, a wrong shape, an unknown name."""


# -- reading the file ------------------------------------------------------------------------------
def _numbers(value: Any, where: str) -> list:
    """A nested list of numbers, checked to be rectangular; bools are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float | list):
        raise WorkedExampleError(f"{where} must be a number or a list of numbers, got {value!r}")
    if isinstance(value, list):
        items = [_numbers(v, f"{where}[{i}]") for i, v in enumerate(value)]
        shapes = {_shape(v) for v in items}
        if len(shapes) > 1:
            raise WorkedExampleError(f"{where} is ragged: its entries have shapes {[_shape(v) for v in items]}")
        return items
    return value


def _shape(value) -> tuple[int, ...]:
    return (len(value), *(_shape(value[0]) if value else ())) if isinstance(value, list) else ()


def _show_shape(shape: tuple[int, ...]) -> str:
    return "a number" if not shape else "×".join(map(str, shape))


@dataclass
class Published:
    """One number the source printed, with its printed precision."""

    text: str
    value: float
    decimals: int

    @classmethod
    def parse(cls, value: Any, where: str) -> Published:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise WorkedExampleError(f"{where} must be a number, got {value!r}")
        text = value.strip() if isinstance(value, str) else repr(value)
        try:
            exact = Decimal(text)
        except InvalidOperation:
            raise WorkedExampleError(f"{where} must be a number, got {value!r}") from None
        if not exact.is_finite():
            raise WorkedExampleError(f"{where} must be a finite number, got {value!r}")
        decimals = max(-exact.as_tuple().exponent, 0)
        return cls(text if isinstance(value, str) else f"{float(exact):.{decimals}f}", float(exact), decimals)

    def mark(self, computed: float) -> str:
        """✓ when ``computed`` rounds to the printed value; ≈ within one unit of its last decimal; else ✗."""
        unit = 10.0 ** -self.decimals
        difference = abs(computed - self.value)
        if difference <= unit / 2 * (1 + 1e-9):
            return "✓"
        return "≈" if difference <= unit * (1 + 1e-9) else "✗"


@dataclass
class WorkedExample:
    """A small fully-connected network, one input batch and its targets, and how to take a step.

    Read one with :func:`load_worked_example`; :meth:`step` runs it. ``weights[k]`` has one row per
    unit of layer k + 1 and one column per unit of layer k (layer 0 is the input); ``biases[k]`` has
    one entry per unit of layer k + 1, the same number for every unit where ``shared_bias[k]``.
    """

    weights: list[Tensor]
    biases: list[Tensor]
    shared_bias: list[bool]
    activations: list[str]
    inputs: Tensor
    targets: Tensor
    learning_rate: float
    loss: str = "half_squared_error"
    update_biases: bool = True
    unit_names: list[list[str]] = field(default_factory=list)
    weight_names: list[list[list[str]]] = field(default_factory=list)
    bias_names: list[list[str]] = field(default_factory=list)
    published: dict[str, Any] = field(default_factory=dict)
    title: str = "worked example"
    source: str | None = None
    notes: str | None = None
    digits: int = 6

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[1], *(w.shape[0] for w in self.weights)]

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], where: str = "the example") -> WorkedExample:
        """Build one from the parsed file; every error names the key, and the shapes where they disagree."""
        if not isinstance(spec, Mapping):
            raise WorkedExampleError(f"{where}: the file must hold a mapping of keys ({', '.join(_KEYS)}), "
                                     f"got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(_KEYS))
        if unknown:
            raise WorkedExampleError(f"{where}: unknown key(s) {unknown}; the keys are: "
                                     + "; ".join(f"{k} ({v})" for k, v in _KEYS.items()))
        missing = [k for k in _REQUIRED if k not in spec]
        if missing:
            raise WorkedExampleError(f"{where}: missing key(s) {missing}: " + "; ".join(
                f"{k} ({_KEYS[k]})" for k in missing))
        activation = spec.get("activation", "sigmoid")
        _choice(activation, ACTIVATIONS, f"{where}: activation")
        loss = spec.get("loss", "half_squared_error")
        _choice(loss, LOSSES, f"{where}: loss")
        eta = spec["learning_rate"]
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not math.isfinite(eta) or eta <= 0:
            raise WorkedExampleError(f"{where}: learning_rate (η) must be a number above 0, got {eta!r}")
        update_biases = spec.get("update_biases", True)
        if not isinstance(update_biases, bool):
            raise WorkedExampleError(f"{where}: update_biases must be true or false, got {update_biases!r}")
        digits = spec.get("digits", 6)
        if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 15:
            raise WorkedExampleError(f"{where}: digits must be a whole number from 1 to 15, got {digits!r}")

        layers = spec["layers"]
        if not isinstance(layers, list) or not layers:
            raise WorkedExampleError(f"{where}: layers must be a non-empty list of {{weights, biases}}, one per layer "
                                     f"after the input, got {layers!r}")
        weights, biases, shared, activations = [], [], [], []
        for li, layer in enumerate(layers):
            at = f"{where}: layers[{li}]"
            if not isinstance(layer, Mapping):
                raise WorkedExampleError(f"{at} must be a mapping with keys weights, biases (and activation)")
            bad = sorted(set(layer) - {"weights", "biases", "activation"})
            if bad or "weights" not in layer:
                raise WorkedExampleError(f"{at}: " + (f"unknown key(s) {bad}" if bad else "missing key 'weights'")
                                         + "; a layer has weights (one row per unit), biases (one per unit, or one "
                                         "number shared by the units) and optionally activation")
            w = _numbers(layer["weights"], f"{at}.weights")
            if len(_shape(w)) != 2 or 0 in _shape(w):
                raise WorkedExampleError(f"{at}.weights must be a matrix, one row per unit of this layer and one "
                                         f"column per unit of the layer below; got {_show_shape(_shape(w))}")
            w = torch.tensor(w, dtype=torch.float64)
            if weights and w.shape[1] != weights[-1].shape[0]:
                raise WorkedExampleError(
                    f"{at}.weights is {_show_shape(tuple(w.shape))}, so its units take {w.shape[1]} inputs, but "
                    f"layer {li - 1} has {weights[-1].shape[0]} units (layers[{li - 1}].weights is "
                    f"{_show_shape(tuple(weights[-1].shape))}); each row needs one weight per unit of the layer below")
            b = _numbers(layer.get("biases", 0.0), f"{at}.biases")
            if isinstance(b, list) and _shape(b) != (w.shape[0],):
                raise WorkedExampleError(f"{at}.biases is {_show_shape(_shape(b))} but the layer has {w.shape[0]} "
                                         f"units ({at}.weights is {_show_shape(tuple(w.shape))}); give one bias per "
                                         "unit, or one number shared by all")
            shared.append(not isinstance(b, list) and w.shape[0] > 1)  # one unit: its own bias
            biases.append(torch.full((w.shape[0],), float(b), dtype=torch.float64) if shared[-1]
                          else torch.tensor(b, dtype=torch.float64))
            layer_activation = layer.get("activation", activation)
            _choice(layer_activation, ACTIVATIONS, f"{at}.activation")
            weights.append(w)
            activations.append(layer_activation)

        inputs = _samples(spec["inputs"], weights[0].shape[1], f"{where}: inputs",
                          f"layers[0].weights is {_show_shape(tuple(weights[0].shape))}: one column per input")
        targets = _samples(spec["targets"], weights[-1].shape[0], f"{where}: targets",
                           f"layers[{len(weights) - 1}].weights is {_show_shape(tuple(weights[-1].shape))}: one row "
                           "per output unit")
        if inputs.shape[0] != targets.shape[0]:
            raise WorkedExampleError(f"{where}: {inputs.shape[0]} input sample(s) but {targets.shape[0]} target(s)")
        sizes = [weights[0].shape[1], *(w.shape[0] for w in weights)]
        if "sizes" in spec and spec["sizes"] != sizes:
            raise WorkedExampleError(f"{where}: sizes says {spec['sizes']} but the weights make {sizes} (input first; "
                                     "layers[li].weights is units × inputs)")

        example = cls(weights, biases, shared, activations, inputs, targets, float(eta), loss, update_biases,
                      title=str(spec.get("title", cls.title)), source=spec.get("source"), notes=spec.get("notes"),
                      digits=digits)
        example._name(spec.get("names", {}), where)
        example.published = _published(spec.get("published", {}), example, where)
        return example

    def _name(self, names: Any, where: str) -> None:
        """Unit, weight and bias names: the file's, else the textbook's units 1, 2, ... and w_ij, θ_j."""
        if not isinstance(names, Mapping) or set(names) - {"units", "weights", "biases"}:
            raise WorkedExampleError(f"{where}: names must be a mapping with keys units, weights, biases; "
                                     f"got {names!r}")
        sizes = self.sizes
        if "units" in names:
            units = names["units"]
            if not isinstance(units, list) or [len(u) if isinstance(u, list) else None for u in units] != sizes:
                raise WorkedExampleError(f"{where}: names.units must list the units layer by layer, input first, "
                                         f"{sizes} of them; got {units!r}")
            self.unit_names = [[str(u) for u in layer] for layer in units]
        else:
            first = 1
            self.unit_names = []
            for size in sizes:
                self.unit_names.append([str(n) for n in range(first, first + size)])
                first += size
        comma = "," if any(len(u) > 1 for layer in self.unit_names for u in layer) else ""
        if "weights" in names:
            given = names["weights"]
            if not isinstance(given, list) or len(given) != len(self.weights) or any(
                    _shape(g) != tuple(w.shape) for g, w in zip(given, self.weights)):
                raise WorkedExampleError(f"{where}: names.weights must have the weights' shapes "
                                         f"{[_show_shape(tuple(w.shape)) for w in self.weights]}; got {given!r}")
            self.weight_names = [[[str(n) for n in row] for row in layer] for layer in given]
        else:
            self.weight_names = [[[f"w{i}{comma}{j}" for i in self.unit_names[li]] for j in self.unit_names[li + 1]]
                                 for li in range(len(self.weights))]
        if "biases" in names:
            given = names["biases"]
            if not isinstance(given, list) or len(given) != len(self.weights):
                raise WorkedExampleError(f"{where}: names.biases must have one entry per layer ({len(self.weights)}); "
                                         f"got {given!r}")
            self.bias_names = []
            for li, entry in enumerate(given):
                if isinstance(entry, list):
                    if len(entry) != len(self.biases[li]) or self.shared_bias[li]:
                        raise WorkedExampleError(
                            f"{where}: names.biases[{li}] must be " + ("one name, the layer's bias is shared" if
                                                                      self.shared_bias[li] else
                                                                      f"{len(self.biases[li])} names, one per unit"))
                    self.bias_names.append([str(n) for n in entry])
                else:
                    self.bias_names.append([str(entry)] * len(self.biases[li]))
        else:
            self.bias_names = [[f"θ{j}" for j in self.unit_names[li + 1]] if not self.shared_bias[li] else
                               [f"b{li + 1}"] * len(self.biases[li]) for li in range(len(self.weights))]

    # -- the network ---------------------------------------------------------------------------------
    def network(self) -> nn.Sequential:
        """A native ``nn.Sequential`` (fc1, sigmoid1, fc2, ...) holding the file's weights, in float64."""
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for li, (w, b, activation) in enumerate(zip(self.weights, self.biases, self.activations), start=1):
            linear = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
            with torch.no_grad():
                linear.weight.copy_(w)
                linear.bias.copy_(b)
            linear.bias.requires_grad_(self.update_biases)
            layers[f"fc{li}"] = linear
            module = ACTIVATIONS[activation][0]
            if module is not None:
                layers[f"{activation}{li}"] = module()
        return nn.Sequential(layers)

    def step(self, steps: int = 1, check: bool = False) -> WorkedStep:
        """Run ``steps`` steps of gradient descent with manual backprop; the first one in detail.

        Every number of the first step comes from the converted network: its forward pass (hooks
        on the layers), δ from :func:`record_error_terms`, ∂C/∂w from the hand-written backward in
        ``.grad``, the update w ← w − η·∂C/∂w. ``check=True`` also runs the same step on a native
        copy (``restore(copy.deepcopy(model))``) and keeps what autograd gives for δ and ∂C/∂w.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a whole number ≥ 1, got {steps!r}")
        model, loss_fn = convert(self.network()), LOSSES[self.loss][0]
        linears = [m for m in model if isinstance(m, nn.Linear)]
        native = _autograd_step(model, LOSSES[self.loss][1], self.inputs, self.targets) if check else None

        z, a = _forward_values(model, self.inputs)
        with record_error_terms(model, layers=[f"fc{li}" for li in range(1, len(linears) + 1)]) as rec:
            output = model(self.inputs)
            loss = loss_fn(output, self.targets)
            loss.backward()
        deltas = [rec[f"fc{li}"].detach().clone() for li in range(1, len(linears) + 1)]
        old = [(m.weight.detach().clone(), m.bias.detach().clone()) for m in linears]
        grads = [(m.weight.grad.clone(), None if m.bias.grad is None else m.bias.grad.clone()) for m in linears]
        self._update(linears)
        new = [(m.weight.detach().clone(), m.bias.detach().clone()) for m in linears]
        losses = {1: loss.item()}
        for n in range(2, steps + 1):
            loss = loss_fn(model(self.inputs), self.targets)
            loss.backward()
            self._update(linears)
            losses[n] = loss.item()
        with torch.no_grad():
            final_output = model(self.inputs)
            loss_after = loss_fn(final_output, self.targets).item()
        return WorkedStep(self, z, a, deltas, old, grads, new, losses, loss_after, final_output.detach(), native)

    def _update(self, linears: list[nn.Linear]) -> None:
        """w ← w − η·∂C/∂w; a shared bias moves by η·Σ_j ∂C/∂θ_j, the sum over the units that share it."""
        with torch.no_grad():
            for li, linear in enumerate(linears):
                linear.weight -= self.learning_rate * linear.weight.grad
                if linear.bias.grad is not None:
                    grad_bias = linear.bias.grad
                    if self.shared_bias[li]:
                        grad_bias = grad_bias.sum().expand_as(grad_bias)  # one parameter used by every unit
                    linear.bias -= self.learning_rate * grad_bias
                linear.weight.grad = linear.bias.grad = None


def _choice(value: Any, choices: Mapping[str, Any], what: str) -> None:
    if value not in choices:
        raise WorkedExampleError(f"{what}: unknown {value!r}; choose one of {sorted(choices)}")


def _samples(value: Any, width: int, what: str, why: str) -> Tensor:
    numbers = _numbers(value, what)
    shape = _shape(numbers)
    if len(shape) == 1:
        numbers, shape = [numbers], (1, *shape)
    if len(shape) != 2 or shape[1] != width:
        raise WorkedExampleError(f"{what} is {_show_shape(_shape(value))} but the network needs {width} per sample "
                                 f"({why}); give a list of {width} numbers, or a list of such lists")
    return torch.tensor(numbers, dtype=torch.float64)


def _published(spec: Any, example: WorkedExample, where: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping) or set(spec) - set(_PUBLISHED_KEYS):
        raise WorkedExampleError(f"{where}: published must be a mapping with keys {list(_PUBLISHED_KEYS)}; got "
                                 f"{sorted(spec) if isinstance(spec, Mapping) else spec!r}")
    units = {u for layer in example.unit_names for u in layer}
    computing = {u for layer in example.unit_names[1:] for u in layer}  # an input unit has no I_j, δ_j, Err_j
    params = {n for layer in example.weight_names for row in layer for n in row} | {
        n for layer in example.bias_names for n in layer}
    out: dict[str, Any] = {}
    for key, value in spec.items():
        at = f"{where}: published.{key}"
        if key in ("note", "label"):
            out[key] = str(value)
        elif key == "loss":
            out[key] = Published.parse(value, at)
        else:
            if not isinstance(value, Mapping):
                raise WorkedExampleError(f"{at} must be a mapping of names to numbers, got {value!r}")
            if key in _PUBLISHED_UNIT_KEYS and example.inputs.shape[0] != 1:
                raise WorkedExampleError(f"{at}: published values per unit need one sample; the file has "
                                         f"{example.inputs.shape[0]}")
            valid = (units if key == "output" else computing if key in _PUBLISHED_UNIT_KEYS
                     else params if key == "new" else None)
            entries = {}
            for name, number in value.items():
                if key == "loss_at_step":
                    if isinstance(name, bool) or not isinstance(name, int) or name < 1:
                        raise WorkedExampleError(f"{at}: steps are whole numbers ≥ 1, got {name!r}")
                elif str(name) not in valid:
                    raise WorkedExampleError(f"{at}: no {'unit' if key != 'new' else 'weight or bias'} named "
                                             f"{name!r}; the names are {sorted(valid)}")
                entries[name if key == "loss_at_step" else str(name)] = Published.parse(number, f"{at}.{name}")
            out[key] = entries
    return out


def load_worked_example(name_or_path: str | Path) -> WorkedExample:
    """A shipped example by name (:data:`WORKED_EXAMPLES`: ``"han-kamber"``, ``"mazur"``), or a YAML/JSON file."""
    path = WORKED_EXAMPLES.get(str(name_or_path), Path(name_or_path))
    if not path.is_file():
        raise WorkedExampleError(f"no worked example {str(name_or_path)!r}: not a file, nor one of the shipped "
                                 f"examples {sorted(WORKED_EXAMPLES)}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise WorkedExampleError(f"{path}: not valid JSON: {error}") from error
    else:
        import yaml  # a dependency of jsonargparse; only YAML files need it

        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise WorkedExampleError(f"{path}: not valid YAML: {error}") from error
    return WorkedExample.from_dict(spec, where=path.name)


# -- running it ------------------------------------------------------------------------------------
def _forward_values(model: nn.Sequential, inputs: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Each layer's net input z (the Linear's output) and output a (after the activation), by hooks."""
    z: list[Tensor] = []
    a: list[Tensor] = []
    handles = []
    modules = list(model)
    for i, module in enumerate(modules):
        last_of_layer = i + 1 == len(modules) or isinstance(modules[i + 1], nn.Linear)
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(lambda m, args, out: z.append(out.detach().clone())))
        if last_of_layer:
            handles.append(module.register_forward_hook(lambda m, args, out: a.append(out.detach().clone())))
    with torch.no_grad():
        model(inputs)
    for handle in handles:
        handle.remove()
    return z, a


@dataclass
class _Autograd:
    """What native autograd gives for the same step: δ per layer, ∂C/∂W and ∂C/∂b."""

    deltas: list[Tensor]
    grads: list[tuple[Tensor, Tensor | None]]


def _autograd_step(model: nn.Module, loss_fn: Callable, inputs: Tensor, targets: Tensor) -> _Autograd:
    twin = restore(copy.deepcopy(model))
    linears = [m for m in twin if isinstance(m, nn.Linear)]
    z: list[Tensor] = []

    def keep(module, args, out):
        out.retain_grad()
        z.append(out)

    handles = [m.register_forward_hook(keep) for m in linears]
    loss_fn(twin(inputs), targets).backward()  # autograd's own derivatives: the check
    for handle in handles:
        handle.remove()
    return _Autograd([t.grad for t in z], [(m.weight.grad, m.bias.grad) for m in linears])


@dataclass
class WorkedStep:
    """One step of a :class:`WorkedExample`, every number kept; ``str()`` lays it out, :meth:`to_dict` for JSON."""

    example: WorkedExample
    z: list[Tensor]
    """net input I_j = z_j of every layer after the input, (samples, units)"""
    a: list[Tensor]
    """output O_j = a_j of every layer after the input"""
    deltas: list[Tensor]
    """δ_j = ∂C/∂z_j of every layer after the input (Err_j = −δ_j)"""
    old: list[tuple[Tensor, Tensor]]
    grads: list[tuple[Tensor, Tensor | None]]
    """∂C/∂W, ∂C/∂b of every layer from the hand-written backward (∂C/∂b None when biases stay fixed)"""
    new: list[tuple[Tensor, Tensor]]
    losses: dict[int, float]
    """C in the forward pass of step n (n = 1: the starting weights)"""
    loss_after: float
    """C with the weights after the last step (same input)"""
    final_output: Tensor
    autograd: _Autograd | None = None

    # -- rows ----------------------------------------------------------------------------------------
    def _O(self, layer: int) -> Tensor:
        """Outputs of layer ``layer`` (0: the inputs)."""
        return self.example.inputs if layer == 0 else self.a[layer - 1]

    def forward_rows(self) -> list[dict[str, Any]]:
        ex = self.example
        rows = []
        for n in range(ex.inputs.shape[0]):
            for j, unit in enumerate(ex.unit_names[0]):
                rows.append({"sample": n, "layer": 0, "unit": unit, "z": None, "a": ex.inputs[n, j].item()})
            for li in range(1, len(ex.unit_names)):
                for j, unit in enumerate(ex.unit_names[li]):
                    rows.append({"sample": n, "layer": li, "unit": unit, "z": self.z[li - 1][n, j].item(),
                                 "a": self.a[li - 1][n, j].item()})
        return rows

    def error_rows(self) -> list[dict[str, Any]]:
        ex = self.example
        rows = []
        for n in range(ex.inputs.shape[0]):
            for li in range(len(ex.weights), 0, -1):  # backward order: the output layer first
                for j, unit in enumerate(ex.unit_names[li]):
                    delta = self.deltas[li - 1][n, j].item()
                    row = {"sample": n, "layer": li, "unit": unit, "delta": delta, "Err": -delta,
                           "formula": self._err_formula(n, li, j)}
                    if self.autograd is not None:
                        row["autograd_delta"] = self.autograd.deltas[li - 1][n, j].item()
                    rows.append(row)
        return rows

    def update_rows(self) -> list[dict[str, Any]]:
        ex = self.example
        eta = ex.learning_rate
        rows = []
        for li in range(len(ex.weights), 0, -1):
            (w_old, b_old), (g_w, g_b), (w_new, b_new) = self.old[li - 1], self.grads[li - 1], self.new[li - 1]
            for j, unit in enumerate(ex.unit_names[li]):
                for i, below in enumerate(ex.unit_names[li - 1]):
                    row = {"kind": "weight", "name": ex.weight_names[li - 1][j][i], "from": below, "to": unit,
                           "old": w_old[j, i].item(), "grad": g_w[j, i].item(), "step": -eta * g_w[j, i].item(),
                           "new": w_new[j, i].item(), "formula": self._w_formula(li, i, j)}
                    if self.autograd is not None:
                        row["autograd_grad"] = self.autograd.grads[li - 1][0][j, i].item()
                    rows.append(row)
            if ex.shared_bias[li - 1]:
                units = [ex.unit_names[li]]
                indices = [list(range(len(ex.unit_names[li])))]
            else:
                units = [[u] for u in ex.unit_names[li]]
                indices = [[j] for j in range(len(ex.unit_names[li]))]
            for unit_group, js in zip(units, indices):
                grad = None if g_b is None else sum(g_b[j].item() for j in js)
                row = {"kind": "bias", "name": ex.bias_names[li - 1][js[0]], "from": None,
                       "to": ", ".join(unit_group), "old": b_old[js[0]].item(), "grad": grad,
                       "step": None if grad is None else -eta * grad, "new": b_new[js[0]].item(),
                       "formula": None if grad is None else self._b_formula(li, js)}
                if self.autograd is not None and self.autograd.grads[li - 1][1] is not None:
                    row["autograd_grad"] = sum(self.autograd.grads[li - 1][1][j].item() for j in js)
                rows.append(row)
        return rows

    # -- the textbook formulas, with this step's numbers in them -------------------------------------
    def _fmt(self, v: float) -> str:
        """A number inside a formula: trailing zeros dropped, a negative one in parentheses."""
        text = f"{v:.{self.example.digits}f}".rstrip("0").rstrip(".")
        if text in ("-0", ""):
            text = "0"
        return f"(−{text[1:]})" if text.startswith("-") else text

    def _err_formula(self, n: int, li: int, j: int) -> str | None:
        """Err_j written out with the numbers, for one sample: f′ times the error coming back."""
        ex = self.example
        if ex.inputs.shape[0] != 1:
            return None
        O, I = self.a[li - 1][n, j].item(), self.z[li - 1][n, j].item()  # noqa: E741 - the book's I_j
        derivative = {"sigmoid": f"{self._fmt(O)}(1 − {self._fmt(O)})", "tanh": f"(1 − {self._fmt(O)}²)",
                      "relu": f"[{self._fmt(I)} > 0]", "identity": "1"}[ex.activations[li - 1]]
        if li == len(ex.weights):
            T = ex.targets[n, j].item()
            back = {"half_squared_error": f"({self._fmt(T)} − {self._fmt(O)})",
                    "squared_error": f"2({self._fmt(T)} − {self._fmt(O)})",
                    "mean_squared_error": f"2({self._fmt(T)} − {self._fmt(O)})/{ex.targets.numel()}"}[ex.loss]
            return f"{derivative}·{back}"
        above = ex.unit_names[li + 1]
        terms = " + ".join(f"{self._fmt(-self.deltas[li][n, k].item())}·{self._fmt(ex.weights[li][k, j].item())}"
                           for k in range(len(above)))
        return f"{derivative}·({terms})"

    def _w_formula(self, li: int, i: int, j: int) -> str | None:
        """η·Err_j·O_i with the numbers (one sample)."""
        if self.example.inputs.shape[0] != 1:
            return None
        return (f"{self._fmt(self.example.learning_rate)}·{self._fmt(-self.deltas[li - 1][0, j].item())}"
                f"·{self._fmt(self._O(li - 1)[0, i].item())}")

    def _b_formula(self, li: int, js: list[int]) -> str | None:
        ex = self.example
        if ex.inputs.shape[0] != 1:
            return None
        errs = " + ".join(self._fmt(-self.deltas[li - 1][0, j].item()) for j in js)
        return f"{self._fmt(ex.learning_rate)}·" + (f"({errs})" if len(js) > 1 else errs)

    # -- comparing with the source -------------------------------------------------------------------
    def comparisons(self) -> list[dict[str, Any]]:
        """Every published number next to the computed one: quantity, name, published, computed, mark."""
        pub = self.example.published
        unit_values: dict[str, dict[str, float]] = {"net_input": {}, "output": {}, "Err": {}, "delta": {}}
        for row in self.forward_rows():
            if row["z"] is not None:
                unit_values["net_input"][row["unit"]] = row["z"]
            unit_values["output"][row["unit"]] = row["a"]
        for row in self.error_rows():
            unit_values["Err"][row["unit"]] = row["Err"]
            unit_values["delta"][row["unit"]] = row["delta"]
        new = {row["name"]: row["new"] for row in self.update_rows()}
        found = []
        for key, (symbol, what) in _PUBLISHED_UNIT_KEYS.items():
            for name, published in pub.get(key, {}).items():
                if name not in unit_values[key]:
                    raise WorkedExampleError(f"published.{key}: unit {name!r} has no {what}: it is an input unit")
                found.append((symbol, name, published, unit_values[key][name]))
        for name, published in pub.get("new", {}).items():
            found.append(("new", name, published, new[name]))
        if "loss" in pub:
            found.append(("C", "before the step", pub["loss"], self.losses[1]))
        for n, published in pub.get("loss_at_step", {}).items():
            if n in self.losses:
                found.append(("C", f"at step {n}", published, self.losses[n]))
        return [{"quantity": q, "name": name, "published": p.text, "computed": c, "mark": p.mark(c),
                 "decimals": p.decimals} for q, name, p, c in found]

    def missing_steps(self) -> list[int]:
        """Published losses at steps beyond the ones run (``--steps`` to reach them)."""
        return sorted(n for n in self.example.published.get("loss_at_step", {}) if n not in self.losses)

    # -- output --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        ex = self.example
        return {
            "title": ex.title, "source": ex.source, "sizes": ex.sizes, "activations": ex.activations,
            "loss_function": LOSSES[ex.loss][2], "learning_rate": ex.learning_rate,
            "update_biases": ex.update_biases, "inputs": ex.inputs.tolist(), "targets": ex.targets.tolist(),
            "loss": self.losses[1], "losses": {str(n): c for n, c in self.losses.items()},
            "loss_after": self.loss_after,
            "final_output": self.final_output.tolist(), "forward": self.forward_rows(),
            "error_terms": self.error_rows(), "updates": self.update_rows(), "published": self.comparisons(),
        }

    def __str__(self) -> str:
        ex = self.example
        d = ex.digits
        label = ex.published.get("label", "published")
        comparisons = {(c["quantity"], c["name"]): c for c in self.comparisons()}

        def num(v: float | None) -> str:
            text = "" if v is None else f"{v:.{d}f}"
            return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.0000"

        def pub(quantity: str, name: str) -> str:
            c = comparisons.get((quantity, name))
            return "" if c is None else f"{c['published']} {c['mark']}"

        one = ex.inputs.shape[0] == 1
        activations = sorted(set(ex.activations), key=ex.activations.index)
        lines = [ex.title, "=" * len(ex.title)]
        if ex.source:
            lines.append(_wrap(f"Source: {ex.source}"))
        lines += [
            f"Network: {'-'.join(map(str, ex.sizes))}, {' / '.join(activations)} units; {LOSSES[ex.loss][2]}; "
            f"η = {ex.learning_rate:g}; biases {'updated' if ex.update_biases else 'fixed (not updated)'}"
            + ("; a shared bias per layer" if all(ex.shared_bias) else ""),
            f"Input {_vector(ex.inputs)}, target T = {_vector(ex.targets)}",
            "Computed with manual backprop: the network converted by manual_backprop.convert, δ read by "
            "manual_backprop.record_error_terms, ∂C/∂w from the hand-written backward."
            + (" Column 'autograd': native autograd on a native copy, the check." if self.autograd else ""),
        ]
        lines[-1] = _wrap(lines[-1])
        if ex.notes:
            lines.append(_wrap(f"Note: {ex.notes}"))

        lines += ["", "Forward pass: net input I_j = z_j = Σ_i w_ij·O_i + θ_j, output O_j = a_j = f(I_j)"]
        header = [*(["sample"] if not one else []), "unit", "I_j = z_j", f"{label} I_j", "O_j = a_j", f"{label} O_j"]
        rows = [[*([str(r["sample"])] if not one else []), r["unit"] + (" (input)" if r["layer"] == 0 else ""),
                 num(r["z"]), pub("I", r["unit"]) if one else "", num(r["a"]), pub("O", r["unit"]) if one else ""]
                for r in self.forward_rows()]
        lines += _table(header, rows, left=1 if one else 2)
        lines.append(f"C = {self.losses[1]:.{max(d, _decimals(comparisons, 'before the step'))}f}"
                     + (f"   ({label}: {pub('C', 'before the step')})" if ("C", "before the step") in comparisons
                        else ""))

        derivative = {a: ACTIVATIONS[a][1] for a in activations}
        back = LOSSES[ex.loss][3]
        lines += ["", "Error terms, in both notations: δ_j = ∂C/∂z_j (the chain rule) and Err_j = −δ_j (the textbook):",
                  "  output unit:  δ_j = f′(I_j)·∂C/∂O_j,   Err_j = f′(I_j)·" + back,
                  "  hidden unit:  δ_j = f′(I_j)·Σ_k δ_k·w_jk,   Err_j = f′(I_j)·Σ_k Err_k·w_jk",
                  "  with f′(I_j) = " + "; ".join(f"{derivative[a]} for {a}" for a in activations)]
        header = [*(["sample"] if not one else []), "unit", "δ_j = ∂C/∂z_j",
                  *(["autograd δ_j"] if self.autograd else []), "Err_j = −δ_j", f"{label} Err_j",
                  *(["Err_j written out"] if one else [])]
        rows = [[*([str(r["sample"])] if not one else []), r["unit"], num(r["delta"]),
                 *([num(r["autograd_delta"])] if self.autograd else []), num(r["Err"]),
                 " ".join(x for x in (pub("Err", r["unit"]), "δ " + pub("δ", r["unit"]) if pub("δ", r["unit"]) else "")
                          if x), *([r["formula"] or ""] if one else [])]
                for r in self.error_rows()]
        lines += _table(header, rows, left=1 if one else 2)

        lines += ["", "Updates: ∂C/∂w_ij = Σ_n δ_j·O_i,  w_ij ← w_ij − η·∂C/∂w_ij = w_ij + η·Err_j·O_i  "
                  "(a bias θ_j: O_i = 1" + ("; a shared bias: Σ over the units that share it" if any(ex.shared_bias)
                                             else "") + ")"]
        header = ["", "from → to", "old", "∂C/∂w", *(["autograd ∂C/∂w"] if self.autograd else []), "step −η·∂C/∂w",
                  *(["η·Err_j·O_i written out"] if one else []), "new", f"{label} new"]
        rows = []
        for r in self.update_rows():
            fixed = r["grad"] is None
            rows.append([r["name"], f"{r['from']} → {r['to']}" if r["kind"] == "weight" else f"bias of {r['to']}",
                         num(r["old"]), "fixed" if fixed else num(r["grad"]),
                         *([num(r.get("autograd_grad"))] if self.autograd else []),
                         "" if fixed else num(r["step"]), *([r["formula"] or ""] if one else []),
                         num(r["new"]), pub("new", r["name"])])
        lines += _table(header, rows)
        if self.autograd is not None:
            lines.append(f"largest difference from autograd: {self.autograd_difference():.2e}")

        if len(self.losses) == 1:
            lines += ["", f"C after the step (same input, new weights): {self.loss_after:.{d}f}"]
        else:
            n_last = max(self.losses)
            shown = sorted({n for n in self.losses if n == 1 or n == n_last or math.log10(n).is_integer()}
                           | {n for (q, name) in comparisons if q == "C" and name.startswith("at step ")
                              for n in [int(name.split()[-1])]})
            lines += ["", f"Loss over {n_last} steps: C in the forward pass of step n (the weights after n − 1 "
                      "updates)"]
            width = max(d, max((c["decimals"] for c in comparisons.values() if c["quantity"] == "C"), default=0))
            lines += _table(["step n", "C", f"{label} C"],
                            [[str(n), f"{self.losses[n]:.{width}f}", pub("C", f"at step {n}")] for n in shown])
            lines.append(f"after step {n_last}: C = {self.loss_after:.{width}f}, output O = "
                         f"{_vector(self.final_output, d)}")
        if self.missing_steps():
            lines.append(f"({label} losses at steps {self.missing_steps()}: run with --steps "
                         f"{max(self.missing_steps())} to compare)")

        if comparisons:
            marks = [c["mark"] for c in comparisons.values()]
            lines += ["", f"Against the {label} numbers: {marks.count('✓')} of {len(marks)} agree at the printed "
                      "precision (✓)"
                      + (f", {marks.count('≈')} within one unit of the last printed decimal (≈)" if "≈" in marks
                         else "")
                      + (f", {marks.count('✗')} differ (✗)" if "✗" in marks else "")]
            if ex.published.get("note"):
                lines.append(_wrap(ex.published["note"], indent="  "))
        return "\n".join(lines)

    def autograd_difference(self) -> float:
        """The largest |manual − autograd| over every δ and every gradient (``check=True`` only)."""
        if self.autograd is None:
            raise ValueError("no autograd values: run step(check=True)")
        differences = [(m - a).abs().max().item() for m, a in zip(self.deltas, self.autograd.deltas)]
        for (gw, gb), (aw, ab) in zip(self.grads, self.autograd.grads):
            differences.append((gw - aw).abs().max().item())
            if gb is not None:
                differences.append((gb - ab).abs().max().item())
        return max(differences)


def _wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(text, 110, initial_indent=indent, subsequent_indent=indent + "  ")


def _decimals(comparisons: dict, name: str) -> int:
    return comparisons[("C", name)]["decimals"] if ("C", name) in comparisons else 0


def _vector(t: Tensor, digits: int | None = None) -> str:
    def show(v: float) -> str:
        return f"{v:g}" if digits is None else f"{v:.{digits}f}"

    rows = ["(" + ", ".join(show(v) for v in row) + ")" for row in t.tolist()]
    return rows[0] if len(rows) == 1 else "[" + ", ".join(rows) + "]"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """The first ``left`` columns (names) and text left-aligned, numbers right-aligned; empty columns dropped."""
    keep = [i for i in range(len(header)) if header[i] == "" or any(row[i] for row in rows)]
    header, rows = [header[i] for i in keep], [[row[i] for i in keep] for row in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]

    def numeric(text: str) -> bool:
        try:
            float(text)
            return True
        except ValueError:
            return False

    def line(cells: list[str]) -> str:
        return "  " + "  ".join(c.rjust(w) if i >= left and numeric(c) else c.ljust(w)
                                for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
