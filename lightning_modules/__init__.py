"""Lightning training for manual_backprop models: module, data, callbacks and the command line."""

from lightning_modules.callbacks import ErrorTermLogger, GradientParityCallback
from lightning_modules.data import (
    DigitsDataModule,
    EpochSampler,
    ResumableDataLoader,
    SplitDataModule,
    TabularDataModule,
    TwoSpiralsDataModule,
    XORDataModule,
)
from lightning_modules.models import MLP, SigmoidMLP
from lightning_modules.module import LOSSES, OPTIMIZERS, ManualBackpropModule

__all__ = [
    "LOSSES",
    "MLP",
    "OPTIMIZERS",
    "DigitsDataModule",
    "EpochSampler",
    "ErrorTermLogger",
    "GradientParityCallback",
    "ManualBackpropModule",
    "ResumableDataLoader",
    "SigmoidMLP",
    "SplitDataModule",
    "TabularDataModule",
    "TwoSpiralsDataModule",
    "XORDataModule",
]
