"""Swap manual backprop into a model you already have, train it with Lightning, look at it in TensorBoard.

    python examples/swap_into_your_model.py                  # 5 epochs on the digits, about 96 %
    python examples/swap_into_your_model.py --small          # 30 steps: seconds
    python examples/swap_into_your_model.py --tensorboard    # then serve the run on http://localhost:6006
    tensorboard --logdir runs/swap_into_your_model           # or open it yourself, any time

``SmallCNN`` below is written the way a PyTorch user writes a model: ``nn.Conv2d``, ``nn.Linear``,
``F.relu`` and ``view`` calls in ``forward``; nothing in it knows about this project. Three steps
make it learn by hand-written backprop:

1. ``manual_backprop.coverage(model, x)`` runs one forward and backward and counts, per module,
   which backward nodes are native autograd and which hand-written: before converting, all native;
2. ``manual_backprop.convert(model, strict=True)`` swaps, in place, the layers for their manual
   twins (same parameters, names, ``state_dict``) and routes the functional calls in ``forward``
   (``F.relu``, ``view``, ``flatten``) to hand-written Functions too; ``strict=True`` raises for any
   operation without one. Coverage is now 100 %;
3. ``ManualBackpropModule(model)`` trains it with a plain ``pytorch_lightning.Trainer``, with
   :class:`~lightning_modules.ErrorTermLogger` logging each layer's error term δ = ∂C/∂z and
   :class:`~lightning_modules.GradientParityCallback` checking the hand-written gradients against
   native autograd on the same batch, both every ``--every_n_steps`` steps.

The same model from the command line, if it lives in an importable module ``mymodels``:
``manual-backprop fit --model.network=mymodels.SmallCNN --model.optimizer=Adam --model.optimizer.lr=0.01``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

import manual_backprop
from lightning_modules import DigitsDataModule, ErrorTermLogger, GradientParityCallback, ManualBackpropModule


class SmallCNN(nn.Module):
    """Your model: two 3×3 convolutions with ReLU and 2×2 max pooling, then a linear classifier.

    Input: 8×8 digit images as rows of 64 pixels (N, 64); output: 10 logits.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)  # 1×8×8 → 8×8×8
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)  # 8×4×4 → 16×4×4
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 8, 8)
        x = self.pool(F.relu(self.conv1(x)))  # 8×4×4
        x = self.pool(F.relu(self.conv2(x)))  # 16×2×2
        return self.fc(torch.flatten(x, 1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of 45 steps (default 5)")
    parser.add_argument("--max_steps", type=int, default=-1, help="stop after this many steps (default: no limit)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate (default 0.01)")
    parser.add_argument("--every_n_steps", type=int, default=25, help="log δ and check parity every n steps")
    parser.add_argument("--logdir", default="runs/swap_into_your_model", help="the TensorBoard logdir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="30 steps, δ logged every 10: seconds")
    parser.add_argument("--tensorboard", action="store_true", help="serve the logdir with TensorBoard at the end")
    args = parser.parse_args(argv)
    if args.small:
        args.epochs, args.max_steps, args.every_n_steps = 1, 30, 10
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is deprecated, use.*")  # Lightning's own, about torch's pytree
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no banners: the script prints what matters

    pl.seed_everything(args.seed, verbose=False)
    model = SmallCNN()
    x = torch.rand(4, 64)  # any batch of the right shape: coverage runs one forward and backward on it
    before = manual_backprop.coverage(model, x)
    print(f"before convert, the backward graph:\n{before}\n")

    manual_backprop.convert(model, strict=True)
    after = manual_backprop.coverage(model, x)
    print(f"after manual_backprop.convert(model, strict=True):\n{after}\n")

    datamodule = DigitsDataModule(batch_size=32, seed=args.seed)
    module = ManualBackpropModule(model, loss="cross_entropy",
                                  optimizer=functools.partial(torch.optim.Adam, lr=args.lr))
    logger = TensorBoardLogger(args.logdir, name="")
    trainer = pl.Trainer(
        max_epochs=args.epochs, max_steps=args.max_steps, logger=logger, log_every_n_steps=args.every_n_steps,
        callbacks=[ErrorTermLogger(every_n_steps=args.every_n_steps),
                   GradientParityCallback(every_n_steps=args.every_n_steps)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    accuracy = trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val_acc"]

    print(f"trained SmallCNN {trainer.global_step} steps with manual backprop: validation accuracy {accuracy:.1%}")
    print(f"its error terms (error_terms/conv1, conv2, fc) and gradient parity are in {logger.log_dir}")
    print(f"look at them: tensorboard --logdir {args.logdir}")
    if args.tensorboard:  # blocks until Ctrl-C
        subprocess.run([sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir], check=False)
    return {"coverage_before": before, "coverage_after": after, "accuracy": accuracy,
            "run_dir": Path(logger.log_dir)}


if __name__ == "__main__":
    main(sys.argv[1:])
