"""``manual-backprop``: the command line, built on LightningCLI.

``manual-backprop fit`` with no arguments trains the default sigmoid MLP on the digits with manual
backprop, logs the error terms (``ErrorTermLogger``: histograms, scalars, a custom-scalars chart, a
heatmap, update ratios) and the gradient parity with native autograd (``GradientParityCallback``)
to TensorBoard under ``lightning_logs/``, and prints the validation accuracy and the
``tensorboard`` command to look at the run.

Everything is chosen by flags or a config file (``-c configs/<name>.yaml``):

- ``--model.network``: any ``nn.Module`` by class path, with ``--model.network.<init arg>``;
- ``--model.loss``, ``--model.optimizer`` (a ``torch.optim`` class and its arguments),
  ``--model.lr_scheduler`` (a ``torch.optim.lr_scheduler`` class and its arguments);
- ``--data``: any LightningDataModule by class path (default the digits);
- ``--error_terms.*`` and ``--gradient_parity.*``: the two callbacks;
- every LightningCLI flag (``--trainer.max_steps``, ``--trainer.strategy=ddp``,
  ``--trainer.precision=bf16-mixed``, ``--ckpt_path``, ``--print_config``, ...).

A name that does not resolve (a model class path, a loss, an optimizer, a scheduler, a datamodule)
is reported with the valid choices.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger

import lightning_modules
from lightning_modules.callbacks import ErrorTermLogger, GradientParityCallback
from lightning_modules.module import LOSSES, ManualBackpropModule


def _names(base: type, module) -> list[str]:
    return sorted(name for name, cls in vars(module).items()
                  if inspect.isclass(cls) and issubclass(cls, base) and cls is not base and not name.startswith("_"))


def _choices(key: str) -> str | None:
    """The valid choices for the argument ``key`` (e.g. ``"model.optimizer"``), as one line."""
    if key == "model.network":
        models = _names(torch.nn.Module, lightning_modules.models)
        return (f"the project's models: {', '.join(f'lightning_modules.{m}' for m in models)}; or the import path "
                "of any torch.nn.Module subclass (e.g. torch.nn.Linear, mypackage.MyNet) with its init_args")
    if key == "model.loss":
        return f"the losses: {', '.join(sorted(LOSSES))}; or the import path of a loss module (e.g. torch.nn.L1Loss)"
    if key == "model.optimizer":
        classes = _names(torch.optim.Optimizer, torch.optim)
        return (f"the optimizers: {', '.join(classes)} (torch.optim; a short name works: --model.optimizer=Adam "
                "--model.optimizer.lr=0.01), or the import path of a torch.optim.Optimizer subclass")
    if key == "model.lr_scheduler":
        classes = _names(torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler)
        return (f"the schedulers: {', '.join(classes)} (torch.optim.lr_scheduler), or the "
                "import path of a scheduler class")
    if key == "data":
        datamodules = [d for d in _names(pl.LightningDataModule, lightning_modules.data) if d != "SplitDataModule"]
        return (f"the datamodules: {', '.join(f'lightning_modules.{d}' for d in datamodules)}; or the import path "
                "of any LightningDataModule")
    return None


class _Parser(LightningArgumentParser):
    """LightningCLI's parser, whose errors about a name that does not resolve list the valid choices."""

    def error(self, message: str, ex: Exception | None = None):
        # jsonargparse reports a class that refused its arguments as one of a union's failed subtypes;
        # the class's own message (a missing file, a bad column, ...) goes first, its wording after it
        reasons = [m.group(1) for line in message.splitlines()
                   if (m := re.match(r"\s+- ([A-Z]\w*: .+)$", line)) and not m.group(1).split(":")[0].endswith("Error")]
        if "Does not validate against any of the Union subtypes" in message and reasons:
            message = f"{reasons[0]}\n\n  (jsonargparse: {message.strip()})"
        match = re.search(r'Parser key "(?:\w+\.)?(model\.network|model\.loss|model\.optimizer|model\.lr_scheduler|'
                          r'data)[".]', message)
        choices = _choices(match.group(1)) if match else None
        if choices:
            message = f"{message.rstrip()}\n\n  Valid choices for --{match.group(1)}: {choices}\n"
        super().error(message, ex)


class ManualBackpropCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ErrorTermLogger, "error_terms")
        parser.add_lightning_class_args(GradientParityCallback, "gradient_parity")
        parser.set_defaults({
            "model.network": {"class_path": "lightning_modules.SigmoidMLP"},
            "model.optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.5, "momentum": 0.9}},
            "data": {"class_path": "lightning_modules.DigitsDataModule"},
        })

    def instantiate_classes(self) -> None:
        """Our own checks of names and values (an unknown loss, a bad split) read as parser errors."""
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError) as error:
            self.parser.error(f"{type(error).__name__}: {error}")

    def after_fit(self) -> None:
        results = self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        if not self.trainer.is_global_zero:
            return
        metric = next((name for name in ("val_acc", "val_mae") if results and name in results[0]), None)
        if metric == "val_acc":
            print(f"\nvalidation accuracy: {results[0]['val_acc']:.1%}")
        elif metric == "val_mae":
            print(f"\nvalidation mean absolute error: {results[0]['val_mae']:.4g}")
        else:
            print("\nno validation metric: validation did not run (limit_val_batches=0?)")
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                print(f"look at the error terms: tensorboard --logdir {os.path.relpath(logger.root_dir)}")


#: Subcommands that teach rather than train; they live in ``lightning_modules/teaching_cli.py``.
TEACHING_COMMANDS = ("explain", "graph")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``manual-backprop`` console script: ``fit`` (and LightningCLI's other
    subcommands), or one of :data:`TEACHING_COMMANDS`."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in TEACHING_COMMANDS:
        from lightning_modules.teaching_cli import main as teaching_main

        teaching_main(argv)
        return
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    ManualBackpropCLI(
        ManualBackpropModule,
        pl.LightningDataModule,
        subclass_mode_data=True,
        parser_class=_Parser,
        seed_everything_default=0,
        trainer_defaults={"max_epochs": 10, "enable_model_summary": False},
        auto_configure_optimizers=False,  # the optimizer and scheduler are the model's: --model.optimizer=...
        args=args,
    )


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
