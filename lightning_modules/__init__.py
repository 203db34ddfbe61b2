"""Lightning training for manual_backprop models: module, data, callbacks and the command line."""

from lightning_modules.callbacks import ErrorTermLogger, GradientParityCallback
from lightning_modules.data import DigitsDataModule
from lightning_modules.models import SigmoidMLP
from lightning_modules.module import LOSSES, OPTIMIZERS, ManualBackpropModule

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "DigitsDataModule",
    "ErrorTermLogger",
    "GradientParityCallback",
    "ManualBackpropModule",
    "SigmoidMLP",
]
