"""Train the digits in Python: what ``manual-backprop fit`` does, written out with Lightning's own parts.

    python examples/train_digits.py              # 10 epochs, about 97 % validation accuracy
    python examples/train_digits.py --small      # 30 steps: seconds
    tensorboard --logdir runs/train_digits       # the error terms δ = ∂C/∂z of fc1 and fc2

The four pieces, each one line below:

- the data: :class:`~lightning_modules.DigitsDataModule`, scikit-learn's 1,797 8×8 handwritten
  digits as 64 intensities in [0, 1], 20 % held out for validation;
- the model: :class:`~lightning_modules.ManualBackpropModule` around the classic sigmoid network
  64-32-10 (:class:`~lightning_modules.SigmoidMLP`); it converts the network to hand-written
  backward passes when the fit starts, trains it with cross-entropy and SGD (η = 0.5, momentum
  0.9), and logs ``train_loss``, ``val_loss`` and ``val_acc``;
- the callback: :class:`~lightning_modules.ErrorTermLogger`, every ``--every_n_steps`` steps each
  layer's δ to TensorBoard (histograms, RMS and friends, a heatmap, update-to-weight ratios);
- the trainer: a plain ``pytorch_lightning.Trainer`` with a ``TensorBoardLogger``.

The same run from the command line: ``manual-backprop fit -c configs/digits.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_modules import DigitsDataModule, ErrorTermLogger, ManualBackpropModule, SigmoidMLP


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of 45 steps (default 10)")
    parser.add_argument("--max_steps", type=int, default=-1, help="stop after this many steps (default: no limit)")
    parser.add_argument("--hidden", type=int, default=32, help="sigmoid units in the hidden layer (default 32)")
    parser.add_argument("--every_n_steps", type=int, default=50, help="log the error terms every n steps")
    parser.add_argument("--logdir", default="runs/train_digits", help="the TensorBoard logdir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="30 steps, δ logged every 10: seconds")
    args = parser.parse_args(argv)
    if args.small:
        args.epochs, args.max_steps, args.every_n_steps = 1, 30, 10
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is deprecated, use.*")  # Lightning's own, about torch's pytree
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no banners: the script prints what matters

    pl.seed_everything(args.seed, verbose=False)  # the same initial weights and batches every run
    datamodule = DigitsDataModule(batch_size=32, seed=args.seed)
    model = ManualBackpropModule(SigmoidMLP([64, args.hidden, 10]), loss="cross_entropy")  # SGD η=0.5, momentum 0.9
    logger = TensorBoardLogger(args.logdir, name="")  # a new version_<n> per run
    trainer = pl.Trainer(
        max_epochs=args.epochs, max_steps=args.max_steps, logger=logger, log_every_n_steps=args.every_n_steps,
        callbacks=[ErrorTermLogger(every_n_steps=args.every_n_steps)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    accuracy = trainer.validate(model, datamodule=datamodule, verbose=False)[0]["val_acc"]

    print(f"trained {trainer.global_step} steps with manual backprop: validation accuracy {accuracy:.1%}")
    print(f"its error terms (error_terms/fc1, fc2) are in {logger.log_dir}")
    print(f"look at them: tensorboard --logdir {args.logdir}")
    return {"accuracy": accuracy, "steps": trainer.global_step, "run_dir": Path(logger.log_dir)}


if __name__ == "__main__":
    main(sys.argv[1:])
