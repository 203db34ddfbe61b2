"""A LightningModule that trains any ``nn.Module`` with manual backprop.

The network, the loss, the optimizer and the learning-rate scheduler all come from arguments, so
LightningCLI can take each from a config file (``--model.network=...``, ``--model.optimizer=Adam``,
``--model.lr_scheduler=StepLR``); in Python they are an instance, a name or a callable. The network
is converted to hand-written backward passes in :meth:`ManualBackpropModule.setup`, the moment
Lightning hands it the data; ``manual=False`` trains the very same network with native autograd,
the baseline to compare against.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Literal

import pytorch_lightning as pl
import torch
import torchmetrics
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn

import manual_backprop
from lightning_modules.models import SigmoidMLP

#: Loss names → the hand-written loss module (its native twin is the ``torch.nn`` class it subclasses).
LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": manual_backprop.nn.CrossEntropyLoss,
    "nll": manual_backprop.nn.NLLLoss,
    "mse": manual_backprop.nn.MSELoss,
    "l1": manual_backprop.nn.L1Loss,
    "smooth_l1": manual_backprop.nn.SmoothL1Loss,
    "huber": manual_backprop.nn.HuberLoss,
    "bce": manual_backprop.nn.BCELoss,
    "bce_with_logits": manual_backprop.nn.BCEWithLogitsLoss,
}
LossName = Literal["cross_entropy", "nll", "mse", "l1", "smooth_l1", "huber", "bce", "bce_with_logits"]

#: Losses whose target is a class index per sample; every other loss takes targets shaped like the output.
CLASS_INDEX_LOSSES: tuple[type[nn.Module], ...] = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MultiMarginLoss)


def _optimizer_classes() -> dict[str, type[torch.optim.Optimizer]]:
    """Every optimizer class of ``torch.optim``, by its lower-case name (``"sgd"``, ``"adamw"``, ...)."""
    return {
        name.lower(): cls
        for name, cls in vars(torch.optim).items()
        if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer
    }


OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = _optimizer_classes()


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with η = 0.5 and momentum 0.9: trains the default sigmoid network on the digits in seconds."""
    return torch.optim.SGD(params, lr=0.5, momentum=0.9)


class ManualBackpropModule(pl.LightningModule):
    """Trains ``network`` with hand-written backward passes (``manual=False``: with native autograd).

    Args:
        network: any ``nn.Module``; default a fresh :class:`SigmoidMLP` for the digits (64-32-10).
            From the command line: ``--model.network=<class path>`` and its ``init_args``.
            :meth:`setup` converts it with ``manual_backprop.convert(network, strict=strict)``.
        loss: a name from :data:`LOSSES` or a loss module (converted too); default ``cross_entropy``
            for classification, ``mse`` for regression (a class-index loss on a regression task is an
            error). A loss in
            :data:`CLASS_INDEX_LOSSES` gets the class ids; any other loss, given class ids, gets them
            one-hot (``mse`` on a sigmoid network is the classic setup), or as a column for a network
            with one output (``bce_with_logits`` on a binary problem).
        optimizer: a callable ``params -> Optimizer``, e.g. ``torch.optim.Adam`` or
            ``functools.partial(torch.optim.SGD, lr=0.1)`` (from the command line:
            ``--model.optimizer=Adam --model.optimizer.lr=0.01``), or the lower-case name of a
            ``torch.optim`` class (its default settings). Default: SGD, η = 0.5, momentum 0.9.
        lr_scheduler: a callable ``optimizer -> LRScheduler`` (``--model.lr_scheduler=StepLR
            --model.lr_scheduler.step_size=10``), stepped every epoch; ``ReduceLROnPlateau`` watches
            ``val_loss``.
        task: ``"classification"`` (logs ``val_acc``, torchmetrics' accuracy) or ``"regression"``
            (logs ``val_mae``). Default: the datamodule's ``task``, else classification.
        num_classes: for the accuracy; default the datamodule's ``num_classes``, else the network's
            output width (2 for a single output).
        manual: ``False`` leaves the network and the loss native: the same run with autograd.
        strict: passed to ``convert``: an operation with no hand-written backward raises
            :class:`manual_backprop.UnsupportedOperationError` at the first forward, instead of staying
            native with a warning.

    Logs ``train_loss``, ``val_loss`` and ``val_acc`` or ``val_mae``.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        loss: LossName | nn.Module | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        task: Literal["classification", "regression"] | None = None,
        num_classes: int | None = None,
        manual: bool = True,
        strict: bool = True,
    ):
        super().__init__()
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass a loss module")
        if loss is not None and not isinstance(loss, str | nn.Module):
            raise TypeError(f"loss must be a name from {sorted(LOSSES)} or an nn.Module, got {type(loss).__name__}")
        if isinstance(optimizer, str):
            if optimizer.lower() not in OPTIMIZERS:
                raise ValueError(
                    f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}, or pass a callable "
                    "params -> Optimizer such as functools.partial(torch.optim.SGD, lr=0.1)"
                )
        elif optimizer is not None and not callable(optimizer):
            raise TypeError(f"optimizer must be a callable params -> Optimizer or a name, got {optimizer!r}")
        if lr_scheduler is not None and not callable(lr_scheduler):
            raise TypeError(f"lr_scheduler must be a callable optimizer -> LRScheduler, got {lr_scheduler!r}")
        if task not in (None, "classification", "regression"):
            raise ValueError(f"unknown task {task!r}; choose one of ['classification', 'regression']")
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if network is not None and not isinstance(network, nn.Module):
            raise TypeError(f"network must be an nn.Module, got {type(network).__name__}")
        # Only plain values go into the checkpoint's hyper-parameters, so that it loads with
        # torch.load(weights_only=True); under LightningCLI the whole config (class paths and init
        # args, all plain) is saved instead, and load_from_checkpoint rebuilds the network from it.
        plain = (str, int, float, bool, type(None))
        given = {"network": network, "loss": loss, "optimizer": optimizer, "lr_scheduler": lr_scheduler}
        from_config = _given_hyperparameters.get() is not None
        ignore = [] if from_config else [name for name, value in given.items() if not isinstance(value, plain)]
        self.save_hyperparameters(ignore=ignore)
        self.network = network if network is not None else SigmoidMLP()
        self.loss_fn: nn.Module | None = LOSSES[loss]() if isinstance(loss, str) else loss  # None: set at setup
        self.make_optimizer, self.make_lr_scheduler = optimizer, lr_scheduler
        self.manual, self.strict = manual, strict
        self.task, self.num_classes = task, num_classes
        self.val_metric: torchmetrics.Metric | None = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Keep the config of a checkpoint written under LightningCLI in the hyper-parameters.

        ``load_from_checkpoint`` rebuilds such a module from the saved config (class paths and init
        args of the network, optimizer and scheduler), but the objects it passes are no plain values,
        so :meth:`__init__` would leave them out and the next checkpoint could not be rebuilt.
        """
        saved = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY) or {}
        for key in ("network", "loss", "optimizer", "lr_scheduler", "_instantiator"):
            if key not in self.hparams and key in saved and isinstance(saved[key], dict | str | type(None)):
                self.hparams[key] = saved[key]

    # -- setup: convert, choose the metric -------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Convert the network and the loss (or make them native with ``manual=False``); pick the metric."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.task is None:
            self.task = getattr(datamodule, "task", None) or "classification"
        if self.loss_fn is None:
            self.loss_fn = LOSSES["mse" if self.task == "regression" else "cross_entropy"]()
        if self.task == "regression" and isinstance(self.loss_fn, CLASS_INDEX_LOSSES):
            raise ValueError(
                f"the task is regression but the loss {type(self.loss_fn).__name__} takes class ids; choose a "
                f"regression loss ({', '.join(n for n in sorted(LOSSES) if n not in ('cross_entropy', 'nll'))}), "
                "or leave loss unset (mse)"
            )
        if self.manual:
            manual_backprop.convert(self.network, strict=self.strict)
            manual_backprop.convert(self.loss_fn)
        else:
            manual_backprop.restore(self.network)
            manual_backprop.restore(self.loss_fn)
        if self.num_classes is None and self.task == "classification":
            self.num_classes = getattr(datamodule, "num_classes", None)
        if self.val_metric is None:
            self.val_metric = self._make_metric()

    def _make_metric(self) -> torchmetrics.Metric | None:
        if self.task == "regression":
            return torchmetrics.MeanAbsoluteError()
        if self.num_classes is None:
            return None  # made at the first validation batch, from the output width
        return torchmetrics.classification.MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    # -- the steps ---------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def _targets_for_loss(self, output: Tensor, y: Tensor) -> Tensor:
        """Shape the targets as the loss expects: class ids, one-hot rows, or a column."""
        if isinstance(self.loss_fn, CLASS_INDEX_LOSSES) or (y.is_floating_point() and y.shape == output.shape):
            return y
        if y.shape == output.shape[:-1]:
            if output.shape[-1] == 1:  # one output unit: the target as a column (binary, or one regression value)
                return y.unsqueeze(-1).to(output.dtype)
            if not y.is_floating_point():  # class ids for a loss on the outputs themselves: one-hot targets
                return nn.functional.one_hot(y, output.shape[-1]).to(output.dtype)
        return y.to(output.dtype) if not y.is_floating_point() else y

    def _predicted_classes(self, output: Tensor) -> Tensor:
        """Class ids: the largest output, or for one output unit whether it passes ½ (a logit passes 0)."""
        if output.shape[-1] > 1:
            return output.argmax(-1)
        logits = isinstance(self.loss_fn, nn.BCEWithLogitsLoss)
        return (output.squeeze(-1) > (0.0 if logits else 0.5)).long()

    def _check_output(self, output: Tensor, y: Tensor) -> None:
        if self.task != "classification" or output.shape[-1] == 1 or self.num_classes is None:
            return
        if output.shape[-1] != self.num_classes:
            raise ValueError(
                f"the network's output has {output.shape[-1]} columns (shape {tuple(output.shape)}) but the data has "
                f"{self.num_classes} classes: make the last layer {self.num_classes} wide"
            )

    def _step_loss(self, batch) -> tuple[Tensor, Tensor, Tensor]:
        x, y = batch
        output = self(x)
        self._check_output(output, y)
        return self.loss_fn(output, self._targets_for_loss(output, y)), output, y

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss, _, _ = self._step_loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, output, y = self._step_loss(batch)
        self.log("val_loss", loss, prog_bar=True)
        if self.val_metric is None:  # classification with no num_classes given: the output width says it
            self.num_classes = max(2, output.shape[-1])
            self.val_metric = self._make_metric().to(self.device)
        if self.task == "regression":
            self.val_metric(output.reshape(y.shape) if output.numel() == y.numel() else output, y)
            self.log("val_mae", self.val_metric, prog_bar=True)
        else:
            self.val_metric(self._predicted_classes(output), y)
            self.log("val_acc", self.val_metric, prog_bar=True)

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        """The network's output; for classification, the predicted class ids."""
        x = batch[0] if isinstance(batch, tuple | list) else batch
        output = self(x)
        return self._predicted_classes(output) if self.task == "classification" else output

    # -- optimizer and scheduler -------------------------------------------------------------------------
    def configure_optimizers(self):
        make: Callable = self.make_optimizer if self.make_optimizer is not None else default_optimizer
        if isinstance(make, str):
            make = OPTIMIZERS[make.lower()]
        optimizer = make(self.parameters())
        if self.make_lr_scheduler is None:
            return optimizer
        scheduler = self.make_lr_scheduler(optimizer)
        config = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val_loss"
        return {"optimizer": optimizer, "lr_scheduler": config}
