"""Vanishing gradients, shown: δ shrinks layer by layer in a deep sigmoid network, and not in a ReLU one.

    python examples/vanishing_gradients.py               # 8 hidden layers of 32 units, 10 epochs each
    python examples/vanishing_gradients.py --small       # a few steps: seconds
    tensorboard --logdir runs/vanishing_gradients        # runs "sigmoid" and "relu", side by side

Two deep networks, 64 → 8 hidden layers of 32 → 10, are trained on the digits with manual backprop
(Lightning, :class:`~lightning_modules.ErrorTermLogger` logging each layer's error term δ = ∂C/∂z
into one TensorBoard logdir, a run per network). The script prints each layer's δ RMS, √(mean δ²),
at initialisation and after training: in TensorBoard, the ``error_terms_rms`` charts (and the
custom-scalars chart "δ RMS by layer") show the same.

Why δ vanishes. Backprop hands δ down one layer at a time (the delta rule):

    δ_l = (δ_{l+1} · W_{l+1}) ⊙ f′(z_l)

so each layer multiplies δ's size by about √(fan_out · Var(w) · E[f′(z)²]). For the sigmoid,
f′(z) = σ(z)(1 − σ(z)) ≤ ¼, and near z = 0 it is ¼: even with the initialisation that suits it
(Glorot/Xavier, fan · Var(w) = 1) every sigmoid layer shrinks δ about 4 times, and eight of them
about 4⁸ ≈ 65,000 times. The first layers, which see the pixels, hardly learn.

For the ReLU, f′(z) = 1 where the unit is on and 0 where it is off: E[f′²] = ½. With He (Kaiming)
initialisation, Var(w) = 2 / fan_in, the factor is √(fan · 2/fan · ½) = 1: δ keeps its size.

Initialisation matters as much as the activation. PyTorch's default ``nn.Linear`` initialisation
draws w uniformly from ±1/√fan_in, Var(w) = 1 / (3·fan_in), so each ReLU layer multiplies δ by
√(⅓ · ½) = 1/√6 ≈ 0.41 and δ vanishes through a deep ReLU network too (by ~10³ over eight layers;
the table at initialisation measures it, in the columns "PyTorch default"). Hence He initialisation
for the ReLU network here (and Glorot for the sigmoid one, its best case).
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

import manual_backprop
from lightning_modules import MLP, DigitsDataModule, ErrorTermLogger, ManualBackpropModule

#: the two networks that are trained: activation → initialisation
TRAINED = {"sigmoid": "xavier", "relu": "he"}
#: what the table at initialisation also measures
AT_INIT = [("sigmoid", "xavier"), ("relu", "he"), ("sigmoid", "default"), ("relu", "default")]
INIT_NAMES = {"xavier": "Glorot", "he": "He", "default": "PyTorch default"}


def build_network(activation: str, init: str, depth: int = 8, width: int = 32, seed: int = 0) -> MLP:
    """64 → ``depth`` hidden layers of ``width`` → 10, converted to manual backprop.

    ``init``: ``"he"`` (Kaiming normal for ReLU: Var(w) = 2/fan_in), ``"xavier"`` (Glorot normal:
    Var(w) = 2/(fan_in + fan_out)), or ``"default"`` (PyTorch's, Var(w) = 1/(3·fan_in)); biases 0
    for the first two."""
    torch.manual_seed(seed)
    network = MLP([64, *[width] * depth, 10], activation=activation)
    for module in network.modules():
        if isinstance(module, nn.Linear) and init != "default":
            if init == "he":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif init == "xavier":
                nn.init.xavier_normal_(module.weight)
            else:
                raise ValueError(f"unknown init {init!r}; choose one of {sorted(INIT_NAMES)}")
            nn.init.zeros_(module.bias)
    return manual_backprop.convert(network)


def delta_rms(network: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """Each Linear layer's δ RMS, √(mean δ²), for the cross-entropy of the batch (x, y), by path,
    from the input side to the output (fc1, fc2, ...): what ErrorTermLogger logs as error_terms_rms."""
    with manual_backprop.record_error_terms(network, layers=nn.Linear) as rec:
        manual_backprop.functional.cross_entropy(network(x), y).backward()
    network.zero_grad()
    return {path: rec[path].pow(2).mean().sqrt().item() for path in rec}


def _table(columns: dict[str, dict[str, float]]) -> str:
    paths = list(next(iter(columns.values())))
    widths = [max(len(name), 9) for name in columns]
    lines = ["layer   " + "  ".join(f"{name:>{w}}" for name, w in zip(columns, widths))]
    for path in paths:
        lines.append(f"{path:<8}" + "  ".join(f"{columns[name][path]:>{w}.2e}" for name, w in zip(columns, widths)))
    ratios = [columns[name][paths[0]] / columns[name][paths[-1]] for name in columns]
    lines.append(f"{paths[0]}/{paths[-1]}".ljust(8)
                 + "  ".join(f"{r:>{w}.1e}" for r, w in zip(ratios, widths)))
    return "\n".join(lines)


def train(activation: str, init: str, args, logdir: Path) -> tuple[MLP, float | None]:
    """Train one network with Lightning, its error terms logged under ``logdir/<activation>``."""
    network = build_network(activation, init, args.depth, args.width, args.seed)
    module = ManualBackpropModule(network, loss="cross_entropy",
                                  optimizer=functools.partial(torch.optim.SGD, lr=args.lr, momentum=0.9))
    trainer = pl.Trainer(
        max_epochs=args.epochs, max_steps=args.max_steps, logger=TensorBoardLogger(logdir, name="", version=activation),
        callbacks=[ErrorTermLogger(every_n_steps=args.every_n_steps)], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=args.every_n_steps,
        num_sanity_val_steps=0,
    )
    pl.seed_everything(args.seed, verbose=False)
    datamodule = DigitsDataModule(batch_size=32, seed=args.seed)
    trainer.fit(module, datamodule=datamodule)
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    return network, (results[0].get("val_acc") if results else None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=8, help="hidden layers (default 8)")
    parser.add_argument("--width", type=int, default=32, help="units per hidden layer (default 32)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per network (default 10)")
    parser.add_argument("--max_steps", type=int, default=-1, help="stop after this many steps (default: no limit)")
    parser.add_argument("--lr", type=float, default=0.02, help="SGD learning rate η, momentum 0.9 (default 0.02)")
    parser.add_argument("--every_n_steps", type=int, default=10, help="log the error terms every n steps")
    parser.add_argument("--logdir", default="runs/vanishing_gradients", help="the TensorBoard logdir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="20 steps per network, δ logged every 5: seconds")
    args = parser.parse_args(argv)
    if args.small:
        args.epochs, args.max_steps, args.every_n_steps = 1, 20, 5
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is deprecated, use.*")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no banners between the tables
    logdir = Path(args.logdir)

    x, y = DigitsDataModule().examples()
    x, y = x[:256], y[:256]  # a fixed batch to measure δ on, before and after training
    at_init = {f"{activation} ({INIT_NAMES[init]})": delta_rms(build_network(activation, init, args.depth,
                                                                             args.width, args.seed), x, y)
               for activation, init in AT_INIT}
    print(f"δ RMS per layer at initialisation, {args.depth} hidden layers of {args.width}, cross-entropy on 256 "
          "digits\n(fc1 is next to the input; the last row: first layer / last layer)\n")
    print(_table(at_init))

    after, accuracy = {}, {}
    for activation, init in TRAINED.items():
        network, accuracy[activation] = train(activation, init, args, logdir)
        after[f"{activation} ({INIT_NAMES[init]})"] = delta_rms(network, x, y)
    print("\nδ RMS per layer after training\n")
    print(_table(after))
    print()
    for activation, acc in accuracy.items():
        print(f"{activation}: validation accuracy {acc:.1%}" if acc is not None and math.isfinite(acc)
              else f"{activation}: no validation accuracy")
    print(f"\nlook at the error terms: tensorboard --logdir {logdir}")
    return {"at_init": at_init, "after": after, "accuracy": accuracy, "logdir": logdir}


if __name__ == "__main__":
    main(sys.argv[1:])
