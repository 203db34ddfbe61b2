"""``manual-backprop``: the command line, built on LightningCLI.

``manual-backprop fit`` with no arguments trains the default sigmoid MLP on the digits with manual
backprop, logs the error terms (``ErrorTermLogger``: histograms, scalars, a custom-scalars chart, a
heatmap, update ratios) and the gradient parity with native autograd (``GradientParityCallback``)
to TensorBoard under ``lightning_logs/``, and prints the validation accuracy and the
``tensorboard`` command to look at the run. Both callbacks are set with ``--error_terms.*`` and
``--gradient_parity.*``. Every LightningCLI flag works (``--trainer.max_steps``,
``--print_config``, ``-c config.yaml``, ...).
"""

from __future__ import annotations

import os
import warnings

from jsonargparse import lazy_instance
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_modules.callbacks import ErrorTermLogger, GradientParityCallback
from lightning_modules.data import DigitsDataModule
from lightning_modules.models import SigmoidMLP
from lightning_modules.module import ManualBackpropModule


class ManualBackpropCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ErrorTermLogger, "error_terms")
        parser.add_lightning_class_args(GradientParityCallback, "gradient_parity")
        parser.set_defaults({"model.network": lazy_instance(SigmoidMLP)})

    def after_fit(self) -> None:
        results = self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        if not self.trainer.is_global_zero:
            return
        if results and "val_acc" in results[0]:
            print(f"\nvalidation accuracy: {results[0]['val_acc']:.1%}")
        else:
            print("\nno validation accuracy: validation did not run (limit_val_batches=0?)")
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                print(f"look at the error terms: tensorboard --logdir {os.path.relpath(logger.root_dir)}")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``manual-backprop`` console script."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    ManualBackpropCLI(
        ManualBackpropModule,
        DigitsDataModule,
        seed_everything_default=0,
        trainer_defaults={"max_epochs": 10, "enable_model_summary": False},
        args=args,
    )
