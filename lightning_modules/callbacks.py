"""Callbacks that show manual backprop at work during a Lightning run."""

from __future__ import annotations

import math

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

import manual_backprop


def _model_of(pl_module: pl.LightningModule) -> nn.Module:
    """The network inside the LightningModule (``.network`` when it has one), so tags read ``fc1``."""
    network = getattr(pl_module, "network", None)
    return network if isinstance(network, nn.Module) else pl_module


class ErrorTermLogger(pl.Callback):
    """Every ``every_n_steps`` training steps, log each parametrized layer's error term δ.

    For each manual layer that holds parameters (``fc1``, ...), on global rank 0, to the run's
    TensorBoard logger at the current global step:

    - ``error_terms/<module path>``: histogram of δ = ∂C/∂(layer output) over the batch;
    - ``error_terms_rms/<module path>``: RMS of δ, how much blame reaches the layer;
    - ``error_terms_max_abs/<module path>``: largest |δ|.

    δ is that of the loss the training step returned (a mean over the batch, so it includes 1/N).
    Between logged steps nothing is recorded.
    """

    def __init__(self, every_n_steps: int = 50):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"ErrorTermLogger: every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._recording: manual_backprop.ErrorTerms | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._tensorboard(trainer) is None:
            raise ValueError(
                "ErrorTermLogger needs a TensorBoardLogger among the trainer's loggers "
                f"(got {[type(lg).__name__ for lg in trainer.loggers] or 'no logger'})"
            )

    @staticmethod
    def _tensorboard(trainer: pl.Trainer) -> TensorBoardLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.is_global_zero and trainer.global_step % self.every_n_steps == 0 and self._recording is None:
            model = _model_of(pl_module)
            layers = [
                path for path, m in model.named_modules()
                if manual_backprop.is_manual(m) and any(True for _ in m.parameters(recurse=False))
            ]
            self._recording = manual_backprop.record_error_terms(model, layers=layers).__enter__()

    def on_after_backward(self, trainer, pl_module) -> None:
        if self._recording is None:
            return
        recording, self._recording = self._recording, None
        recording.__exit__(None, None, None)
        experiment = self._tensorboard(trainer).experiment
        step = trainer.global_step
        for path in recording:
            delta = recording.all(path)[-1].detach().float().cpu()
            experiment.add_histogram(f"error_terms/{path}", delta, step)
            experiment.add_scalar(f"error_terms_rms/{path}", _rms(delta), step)
            experiment.add_scalar(f"error_terms_max_abs/{path}", delta.abs().max().item(), step)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._recording is not None:
            self._recording.__exit__(None, None, None)
            self._recording = None


def _rms(delta: Tensor) -> float:
    return math.sqrt(delta.pow(2).mean().item()) if delta.numel() else 0.0
