"""``manual-backprop explain`` and ``manual-backprop graph``: the commands that teach rather than train.

``manual-backprop explain --example han-kamber`` (or ``--example mazur``, or ``explain my_net.yaml``)
runs one step of backpropagation on a small network given in a file and prints the forward pass,
every error term (δ_j = ∂C/∂z_j and the textbooks' Err_j = −δ_j) and every weight update, next to
the numbers the source published (:mod:`manual_backprop.worked_example`).

``manual-backprop graph`` prints the backward graph of a converted model as a tree of the
hand-written Functions, each with its formula, or as Graphviz DOT with ``--dot``
(:mod:`manual_backprop.graph`). The model is the default ``SigmoidMLP`` on a digits-shaped input
with cross-entropy, any ``nn.Module`` by class path (``--network``, ``--init_args``,
``--input_shape``), or the ``model.network`` of a fit config (``-c config.yaml``, the format
``manual-backprop fit --print_config`` prints).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import lightning_modules
import manual_backprop
from lightning_modules.module import CLASS_INDEX_LOSSES, LOSSES
from manual_backprop.graph import model_backward_tree
from manual_backprop.worked_example import WORKED_EXAMPLES, WorkedExampleError, load_worked_example

DEFAULT_NETWORK = "lightning_modules.SigmoidMLP"


# -- explain ---------------------------------------------------------------------------------------
def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manual-backprop explain",
        description="One step of backpropagation on a small network from a YAML/JSON file, every number shown: "
                    "the forward pass, each error term δ_j = ∂C/∂z_j (and the textbooks' Err_j = −δ_j), each "
                    "weight and bias update, computed with manual backprop and compared with the numbers the "
                    "source published.")
    parser.add_argument("file", nargs="?", help="a YAML or JSON file describing the network (see the module "
                        "manual_backprop.worked_example for the keys)")
    parser.add_argument("--example", help=f"a shipped worked example: {', '.join(sorted(WORKED_EXAMPLES))}")
    parser.add_argument("--list", action="store_true", help="list the shipped examples and exit")
    parser.add_argument("--check", action="store_true",
                        help="also show what native autograd gives on a native copy of the network")
    parser.add_argument("--steps", type=int, default=1,
                        help="run this many steps of gradient descent (the first is shown in detail; the loss is "
                             "shown at steps 1, 10, 100, ...); default 1")
    parser.add_argument("--digits", type=int, help="decimals to print (default: the file's, else 6)")
    parser.add_argument("--json", action="store_true", help="print every number as JSON instead of tables")
    return parser


def explain(args: list[str]) -> None:
    parser = _explain_parser()
    options = parser.parse_args(args)
    if options.list:
        for name, path in sorted(WORKED_EXAMPLES.items()):
            print(f"{name:12s} {load_worked_example(path).title}")
        return
    if (options.file is None) == (options.example is None):
        parser.error("give either a file or --example NAME (one of: " + ", ".join(sorted(WORKED_EXAMPLES)) + ")")
    if options.example is not None and options.example not in WORKED_EXAMPLES:
        parser.error(f"unknown example {options.example!r}; the shipped examples are: "
                     + ", ".join(sorted(WORKED_EXAMPLES)) + " (or give the path of your own YAML/JSON file)")
    if options.steps < 1:
        parser.error(f"--steps must be at least 1, got {options.steps}")
    if options.digits is not None and not 1 <= options.digits <= 15:
        parser.error(f"--digits must be from 1 to 15, got {options.digits}")
    try:
        example = load_worked_example(options.example or options.file)
    except WorkedExampleError as error:
        parser.error(str(error))
    if options.digits is not None:
        example.digits = options.digits
    step = example.step(steps=options.steps, check=options.check)
    if options.json:
        print(json.dumps(step.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(step)


# -- graph -----------------------------------------------------------------------------------------
def _graph_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manual-backprop graph",
        description="The backward graph of a converted model's loss, as a tree of the hand-written Functions, each "
                    "with its formula (--dot: Graphviz DOT). Default: the SigmoidMLP on a digits-shaped input "
                    "(1, 64) with cross-entropy.")
    parser.add_argument("-c", "--config", help="a fit config (manual-backprop fit --print_config): its "
                        "model.network, model.loss and data are used; flags given here override them")
    parser.add_argument("--network", help=f"class path of any torch.nn.Module (default {DEFAULT_NETWORK})")
    parser.add_argument("--init_args", help='the network\'s init arguments as JSON, e.g. \'{"sizes": [64, 16, 10]}\'')
    parser.add_argument("--input_shape", help="the input's shape, e.g. 1,64 (default: from the network's first "
                        "Linear layer, or the config's datamodule)")
    parser.add_argument("--loss", help=f"a loss name ({', '.join(sorted(LOSSES))}) or the class path of a loss "
                        "module (default cross_entropy)")
    parser.add_argument("--dot", action="store_true", help="print Graphviz DOT (pipe it to: dot -Tsvg > graph.svg)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network's initial weights and the input")
    return parser


def _import_class(path: str, parser: argparse.ArgumentParser, what: str) -> type:
    """A class by import path (``torch.nn.Linear``), or by name from lightning_modules or torch.nn."""
    module_name, _, name = path.rpartition(".")
    candidates = [(module_name, name)] if module_name else [("lightning_modules", name), ("torch.nn", name)]
    for module_name, name in candidates:
        try:
            found = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            found = None
        if isinstance(found, type):
            return found
    models = sorted(n for n, c in vars(lightning_modules.models).items()
                    if isinstance(c, type) and issubclass(c, nn.Module) and c.__module__ == "lightning_modules.models")
    parser.error(f"{what}: cannot import {path!r}; give the import path of a class: the project's models "
                 f"{', '.join(f'lightning_modules.{m}' for m in models)}, or any torch.nn.Module subclass "
                 "(e.g. torch.nn.Linear, mypackage.MyNet)")
    raise AssertionError  # parser.error exits


def _class_and_args(value: Any, where: str, parser: argparse.ArgumentParser) -> tuple[str, dict]:
    """(class path, init args) from a config entry: a string, or {class_path, init_args}."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        init_args = value.get("init_args") or {}
        if not isinstance(init_args, dict):
            parser.error(f"{where}.init_args must be a mapping, got {init_args!r}")
        return value["class_path"], dict(init_args)
    parser.error(f"{where} must be a class path or a mapping with class_path (and init_args), got {value!r}")
    raise AssertionError


def _read_config(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """model.network, model.loss and the datamodule's class from a fit config."""
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        parser.error(f"config {path!r}: no such file")
    except yaml.YAMLError as error:
        parser.error(f"config {path!r} is not valid YAML: {error}")
    if not isinstance(config, dict):
        parser.error(f"config {path!r} must be a mapping (what manual-backprop fit --print_config prints)")
    model = config.get("model") or {}
    if isinstance(model, dict) and "network" not in model and isinstance(model.get("init_args"), dict):
        model = model["init_args"]  # written with the module's own class_path
    found: dict[str, Any] = {}
    if isinstance(model, dict) and model.get("network") is not None:
        found["network"] = _class_and_args(model["network"], "model.network", parser)
    if isinstance(model, dict) and model.get("loss") is not None:
        found["loss"] = model["loss"]
    if config.get("data") is not None:
        found["data"] = _class_and_args(config["data"], "data", parser)[0]
    return found


def _input_shape(options, network: nn.Module, data: str | None, parser: argparse.ArgumentParser) -> tuple[int, ...]:
    if options.input_shape:
        try:
            shape = tuple(int(s) for s in options.input_shape.split(","))
        except ValueError:
            shape = ()
        if not shape or any(s < 1 for s in shape):
            parser.error(f"--input_shape must be positive whole numbers separated by commas (e.g. 1,64), got "
                         f"{options.input_shape!r}")
        return shape
    first = next((m for m in network.modules() if isinstance(m, nn.Linear)), None)
    if first is not None and next((m for m in network.modules() if isinstance(m, nn.modules.conv._ConvNd)),
                                  None) is None:
        return (1, first.in_features)
    if data is not None:
        width = getattr(_import_class(data, parser, "data"), "num_features", None)
        if isinstance(width, int):
            return (1, width)
    parser.error(f"cannot tell the input's shape for {type(network).__name__}: give --input_shape (e.g. "
                 "--input_shape 1,3,32,32)")
    raise AssertionError


def _loss(value: Any, parser: argparse.ArgumentParser) -> nn.Module:
    if isinstance(value, str) and value in LOSSES:
        return LOSSES[value]()
    path, init_args = _class_and_args(value, "loss", parser)
    if "." not in path:
        parser.error(f"unknown loss {path!r}; choose one of {', '.join(sorted(LOSSES))}, or give the class path of "
                     "a loss module (e.g. torch.nn.L1Loss)")
    cls = _import_class(path, parser, "loss")
    try:
        loss = cls(**init_args)
    except (TypeError, ValueError) as error:
        parser.error(f"loss: {path}(**{init_args}) failed: {error}")
    if not isinstance(loss, nn.Module):
        parser.error(f"loss: {path} is not a torch.nn.Module")
    return manual_backprop.convert(loss)


def _target(loss: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """A target of the shape the loss wants: class 0 per sample, or zeros shaped like the output."""
    if isinstance(loss, CLASS_INDEX_LOSSES):
        return torch.zeros(output.shape[:-1] if output.dim() > 1 else (), dtype=torch.long)
    if isinstance(loss, nn.BCELoss):
        return torch.full_like(output, 0.5)
    return torch.zeros_like(output)


def graph(args: list[str]) -> None:
    parser = _graph_parser()
    options = parser.parse_args(args)
    config = _read_config(options.config, parser) if options.config else {}
    path, init_args = config.get("network", (DEFAULT_NETWORK, {}))
    if options.network:
        path, init_args = options.network, {}
    if options.init_args:
        try:
            init_args = json.loads(options.init_args)
        except json.JSONDecodeError as error:
            parser.error(f"--init_args is not valid JSON ({error}): {options.init_args!r}")
        if not isinstance(init_args, dict):
            parser.error(f"--init_args must be a JSON object of argument names and values, got {options.init_args!r}")
    cls = _import_class(path, parser, "network")
    if not issubclass(cls, nn.Module):
        parser.error(f"network: {path} is not a torch.nn.Module subclass")
    torch.manual_seed(options.seed)
    try:
        network = cls(**init_args)
    except (TypeError, ValueError) as error:
        parser.error(f"network: {path}(**{init_args}) failed: {error}")
    loss_name = options.loss or config.get("loss", "cross_entropy")
    loss = _loss(loss_name, parser)
    shape = _input_shape(options, network, config.get("data"), parser)

    manual_backprop.convert(network)
    x = torch.rand(shape)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* has no hand-written backward")  # the tree marks them native
        try:
            with torch.no_grad():
                output = network(x)  # to shape the target
            tree = model_backward_tree(network, x, loss_fn=loss, target=_target(loss, output))
        except (RuntimeError, ValueError) as error:
            parser.error(f"the forward or the loss failed on an input of shape {shape}: {error}")
    if options.dot:
        print(tree.to_dot())
        return
    shown_args = ", ".join(f"{k}={v!r}" for k, v in init_args.items())
    loss_shown = loss_name if isinstance(loss_name, str) else type(loss).__name__
    print(f"network: {path}({shown_args}), converted; input shape {shape}; loss {loss_shown}")
    print(tree)


def main(argv: list[str]) -> None:
    """``manual-backprop explain ...`` or ``manual-backprop graph ...``: ``argv[0]`` names the command."""
    commands = {"explain": explain, "graph": graph}
    if not argv or argv[0] not in commands:
        sys.exit(f"manual-backprop: the teaching commands are {', '.join(commands)}; got {argv[:1]}")
    commands[argv[0]](argv[1:])
