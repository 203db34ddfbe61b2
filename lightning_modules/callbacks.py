"""Callbacks that show manual backprop at work during a Lightning run."""

from __future__ import annotations

import math

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.loggers.logger import DummyLogger
from pytorch_lightning.utilities import rank_zero_warn
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
    With ``accumulate_grad_batches=k`` it is the first micro-batch's δ of the loss Lightning
    backpropagates, which Lightning has divided by k. Between logged steps nothing is recorded.
    The root module (a network that is a single layer) is tagged ``(root)``.

    Without any logger (``logger=False``, ``fast_dev_run``) it warns and logs nothing; with loggers
    of which none is a ``TensorBoardLogger`` it raises.
    """

    def __init__(self, every_n_steps: int = 50):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"ErrorTermLogger: every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._recording: manual_backprop.ErrorTerms | None = None
        self._last_step: int | None = None
        self._enabled = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self._tensorboard(trainer) is not None:
            return
        real_loggers = [lg for lg in trainer.loggers if not isinstance(lg, DummyLogger)]
        if real_loggers:
            raise ValueError(
                "ErrorTermLogger needs a TensorBoardLogger among the trainer's loggers "
                f"(got {[type(lg).__name__ for lg in real_loggers]})"
            )
        rank_zero_warn("ErrorTermLogger: this run has no logger, so no error terms are logged")
        self._enabled = False

    @staticmethod
    def _tensorboard(trainer: pl.Trainer) -> TensorBoardLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if (self._enabled and trainer.is_global_zero and step % self.every_n_steps == 0
                and step != self._last_step and self._recording is None):
            self._last_step = step  # later micro-batches of an accumulated step are not logged again
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
            tag = path or "(root)"
            experiment.add_histogram(f"error_terms/{tag}", delta, step)
            experiment.add_scalar(f"error_terms_rms/{tag}", _rms(delta), step)
            experiment.add_scalar(f"error_terms_max_abs/{tag}", delta.abs().max().item(), step)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._recording is not None:
            self._recording.__exit__(None, None, None)
            self._recording = None


def _rms(delta: Tensor) -> float:
    return math.sqrt(delta.pow(2).mean().item()) if delta.numel() else 0.0
