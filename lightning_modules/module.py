"""A LightningModule that trains any model with manual backprop."""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

import manual_backprop
from lightning_modules.models import SigmoidMLP

LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": manual_backprop.nn.CrossEntropyLoss,
    "mse": manual_backprop.nn.MSELoss,
}
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


class ManualBackpropModule(pl.LightningModule):
    """Trains ``network`` for classification; ``network`` is converted to manual backprop here.

    ``network`` defaults to a fresh :class:`SigmoidMLP` for the digits (64-32-10).

    ``loss`` is ``"cross_entropy"`` (network outputs logits) or ``"mse"`` (squared error against
    one-hot targets, the classic sigmoid-network setup). ``optimizer`` is ``"sgd"`` (with
    ``momentum``) or ``"adam"``. Logs ``train_loss``, ``val_loss`` and ``val_acc``.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        loss: Literal["cross_entropy", "mse"] = "cross_entropy",
        optimizer: Literal["sgd", "adam"] = "sgd",
        lr: float = 0.5,
        momentum: float = 0.9,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        self.save_hyperparameters(ignore=["network"])
        self.network = manual_backprop.convert(network if network is not None else SigmoidMLP(), strict=True)
        self.loss_fn = LOSSES[loss]()

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def _loss(self, logits: Tensor, y: Tensor) -> Tensor:
        if self.hparams.loss == "mse":
            y = nn.functional.one_hot(y, logits.shape[-1]).to(logits.dtype)
        return self.loss_fn(logits, y)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        loss = self._loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", self._loss(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        options = {"momentum": self.hparams.momentum} if self.hparams.optimizer == "sgd" else {}
        return OPTIMIZERS[self.hparams.optimizer](self.parameters(), lr=self.hparams.lr, **options)
