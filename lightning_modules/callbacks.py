"""Callbacks that show manual backprop at work during a Lightning run.

- :class:`ErrorTermLogger`: where the blame goes. Every N steps, each layer's error term
  δ = ∂C/∂z (z: the layer's output) to TensorBoard as histograms, scalars, a custom-scalars chart and
  a heatmap, and each parameter's update-to-weight ratio η·‖∂C/∂w‖ / ‖w‖.
- :class:`GradientParityCallback`: whether the hand-written gradients are right, during the real run.
  Every N steps the same batch's gradients from native autograd on a native twin of the model,
  compared per layer.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import math
import struct
import warnings
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw, ImageFont
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.loggers.logger import DummyLogger
from pytorch_lightning.utilities import rank_zero_warn
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
from torch import Tensor, nn

import manual_backprop
from manual_backprop import routing

ROOT_TAG = "(root)"  # how the root module (a network that is a single layer) is named in tags
HEATMAP_TAG = "error_terms_heatmap"
LAYOUT_CATEGORY = "error terms"  # the custom-scalars layout: its category and charts
RMS_CHART = "δ RMS per layer (the speed of learning: switch on the log scale)"
RATIO_CHART = "δ RMS / the next layer's δ RMS (below 1 vanishing, above 1 exploding)"
UPDATE_RATIO_CHART = "update-to-weight ratio η·‖∂C/∂w‖ / ‖w‖"


def _model_of(pl_module: pl.LightningModule) -> nn.Module:
    """The network inside the LightningModule (``.network`` when it has one), so tags read ``fc1``."""
    network = getattr(pl_module, "network", None)
    return network if isinstance(network, nn.Module) else pl_module


def _tag(path: str) -> str:
    return path or ROOT_TAG


def _real_loggers(trainer: pl.Trainer) -> list[Logger]:
    return [lg for lg in trainer.loggers if not isinstance(lg, DummyLogger)]


def _check_interval(owner: str, every_n_steps: int) -> None:
    if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
        raise ValueError(f"{owner}: every_n_steps must be an integer of at least 1, got {every_n_steps!r}")


class ErrorTermLogger(pl.Callback):
    """Every ``every_n_steps`` training steps, log each layer's error term δ = ∂C/∂z to TensorBoard.

    z is the layer's output; δ is what backpropagation hands the layer: the blame for the loss. At
    the current global step, on global rank 0, for each recorded layer (default: every manual layer
    that holds parameters, ``fc1``, ...; the root module is tagged ``(root)``):

    - ``error_terms/<path>`` (``histograms``): histogram of δ over the batch (finite entries only);
    - (``scalars``) ``error_terms_rms/<path>``: RMS of δ, √(mean δ²), how much blame reaches the
      layer; ``error_terms_mean_abs/<path>``: mean |δ|; ``error_terms_max_abs/<path>``: max |δ|;
      ``error_terms_zero_share/<path>``: the share of entries with δ exactly 0 (dead units: a ReLU
      that is off passes no blame); ``error_terms_ratio/<path>``: RMS δ of this layer / RMS δ of
      the next layer in forward order (the last layer has none). Below 1 the blame shrinks on its
      way back (vanishing), above 1 it grows (exploding);
    - ``error_terms_heatmap`` (``heatmap``): an image, layers (rows, in forward order) × logged
      steps (columns), colour = log10 of δ's RMS (viridis: dark = small); the colour bar gives the
      range. Redrawn at every logged step; at most ``_HEATMAP_COLUMNS`` columns, evenly sampled
      from the run so far. Missing or zero values are grey;
    - ``update_ratio/<parameter name>`` (``update_ratios``): η·‖∂C/∂w‖ / ‖w‖ (Frobenius norms;
      η the learning rate of the parameter's optimizer group, ∂C/∂w its gradient just before the
      optimizer step, after gradient accumulation and AMP unscaling, before clipping). That is the
      size of a plain gradient step relative to the weights. With momentum or Adam the optimizer's
      real step differs (Adam moves each weight by about η, whatever the gradient's size): the
      logged value is still η·‖∂C/∂w‖ / ‖w‖;
    - (``custom_scalars``) once per run, a TensorBoard custom-scalars layout, category
      ``error terms``: one chart with every layer's δ RMS, one with the ratios (with ``scalars``),
      one with the update ratios (with ``update_ratios``). The layout format has no axis setting:
      switch the δ RMS chart to a log axis with its "log scale" button.

    δ is that of the loss the training step returned, a mean over the batch (so δ includes 1/N).
    With ``accumulate_grad_batches=k`` it is the first micro-batch's δ of the loss Lightning
    backpropagates, which Lightning has divided by k. A layer called more than once per forward
    contributes all its calls' δ together. Between logged steps nothing is recorded.

    Under DDP every rank records on the logged steps, its δ divided by ``trainer.world_size``
    (``record_error_terms(..., scale=1 / world_size)``), and the ranks' δ are gathered: DDP averages
    the ranks' gradients, so the loss it trains is the mean of the ranks' losses, and a sample's δ of
    that global loss is its local δ / world_size. What rank 0 logs is then the δ of the global loss
    over the global batch, the same numbers a single process logs for that batch with the
    batch-mean loss.

    ``check_finite=True``: every training batch (not only the logged ones) is recorded with
    ``record_error_terms(..., check_finite=True)``, which costs a probe and one reduction per layer
    in forward and in backward, and right after backward, before the optimizer step,
    :class:`manual_backprop.NonFiniteError` is raised naming where a NaN or infinity was born: the
    first recorded layer whose output was non-finite in the forward, else the first in backward
    order whose δ is, with the step, the count of bad entries and the layer's input and output
    ranges. Under DDP every rank raises the error of the first rank that found one (prefixed
    ``rank r:``), so that none is left waiting for the others. This works without a logger too.

    ``layers`` picks the layers to record, as ``record_error_terms`` takes them: module paths, glob
    patterns (``"fc*"``), module types. Layers that match nothing raise when the fit starts.
    Without any logger (``logger=False``, ``fast_dev_run``) it warns once and logs nothing; with
    loggers of which none is a ``TensorBoardLogger`` it raises.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        layers: list[str | type[nn.Module]] | None = None,
        histograms: bool = True,
        scalars: bool = True,
        heatmap: bool = True,
        update_ratios: bool = True,
        custom_scalars: bool = True,
        check_finite: bool = False,
    ):
        super().__init__()
        _check_interval("ErrorTermLogger", every_n_steps)
        self.every_n_steps = every_n_steps
        self.layers = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
        self.histograms = histograms
        self.scalars = scalars
        self.heatmap = heatmap
        self.update_ratios = update_ratios
        self.custom_scalars = custom_scalars
        self.check_finite = check_finite
        self._recording: manual_backprop.ErrorTerms | None = None
        self._logging = False  # whether the open recording is of a logged step
        self._forward_order: list[str] = []
        self._order_hooks: list = []
        self._last_step: int | None = None
        self._enabled = True
        self._layout_written_to: str | None = None
        self._history: dict[str, dict[int, float]] = {}  # layer → step → δ RMS, for the heatmap
        self._history_steps: list[int] = []
        self._layer_cache: tuple[nn.Module, list[str] | None, list[tuple[str, nn.Module]]] | None = None

    # -- whether and where to log --------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._enabled = True
        self._layer_cache = None
        self._last_step = None
        self._history, self._history_steps = {}, []  # a new run, a new heatmap
        if self._tensorboard(trainer) is not None:
            return
        real_loggers = _real_loggers(trainer)
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

    def _layers_of(self, model: nn.Module) -> tuple[list[str] | None, list[tuple[str, nn.Module]]]:
        """What to pass ``record_error_terms`` as ``layers``, and the modules whose calls give the forward
        order; found once per model."""
        if self._layer_cache is None or self._layer_cache[0] is not model:
            modules = list(model.named_modules())
            chosen = self.layers if self.layers is not None else [
                path for path, m in modules
                if manual_backprop.is_manual(m) and any(True for _ in m.parameters(recurse=False))
            ] or None  # no manual layer holds parameters: record_error_terms's default, every manual layer
            self._layer_cache = (model, chosen, modules)
        return self._layer_cache[1], self._layer_cache[2]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the module's setup, which converts its network: bad layers raise now, not mid-run.
        model = _model_of(pl_module)
        if self._enabled and not any(manual_backprop.is_manual(m) or routing.is_routed(m) for m in model.modules()):
            rank_zero_warn("ErrorTermLogger: the model is native (not converted, e.g. manual=False), "
                           "so it has no hand-written error terms to log")
            self._enabled = False
        if self._enabled:
            layers, _ = self._layers_of(model)
            manual_backprop.record_error_terms(model, layers=layers)
        if not (self._enabled and self.custom_scalars and trainer.is_global_zero):
            return
        logger = self._tensorboard(trainer)
        if self._layout_written_to == logger.log_dir:
            return  # once per run
        self._layout_written_to = logger.log_dir
        # A chart's tags are regular expressions (matched at the start of a tag): one per kind catches
        # every layer's tag, whatever the layers are.
        charts = {}
        if self.scalars:
            charts[RMS_CHART] = ["Multiline", ["error_terms_rms/"]]
            charts[RATIO_CHART] = ["Multiline", ["error_terms_ratio/"]]
        if self.update_ratios:
            charts[UPDATE_RATIO_CHART] = ["Multiline", ["update_ratio/"]]
        if charts:
            logger.experiment.add_custom_scalars({LAYOUT_CATEGORY: charts})

    # -- recording one step --------------------------------------------------------------------
    def _logs_now(self, trainer: pl.Trainer) -> bool:
        return self._enabled and trainer.global_step % self.every_n_steps == 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._recording is not None:
            return
        step = trainer.global_step
        # the first micro-batch of a logged step (later ones of an accumulated step are not logged again)
        logs = self._logs_now(trainer) and step != self._last_step
        if logs:
            self._last_step = step
        # rank 0 logs; under DDP every rank's δ is needed. With check_finite every rank checks every batch.
        self._logging = logs and (trainer.is_global_zero or trainer.world_size > 1)
        if not (self._logging or self.check_finite):
            return
        model = _model_of(pl_module)
        layers, modules = self._layers_of(model)
        if self._logging:
            self._forward_order = []
            for path, module in modules:
                self._order_hooks.append(module.register_forward_hook(self._note_call(path)))
        # With 16-mixed precision the loss is multiplied by the grad scaler's factor before backward,
        # and so is every δ: divide it out, as the scaler does for the gradients before the step.
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        loss_scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        self._recording = manual_backprop.record_error_terms(
            model, layers=layers, check_finite=self.check_finite, step=step,
            scale=1.0 / (trainer.world_size * loss_scale),
        ).__enter__()

    def _note_call(self, path: str):
        def note(module, args, output):
            if path not in self._forward_order:
                self._forward_order.append(path)

        return note

    def _stop(self, exception: BaseException | None = None) -> manual_backprop.ErrorTerms | None:
        """Close the recording; with ``check_finite`` (and no ``exception`` on its way) that checks it."""
        recording, self._recording = self._recording, None
        for handle in self._order_hooks:
            handle.remove()
        self._order_hooks.clear()
        if recording is not None:
            recording.__exit__(None if exception is None else type(exception), exception, None)
        return recording

    def on_after_backward(self, trainer, pl_module) -> None:
        if self._recording is None:
            return
        error = None
        try:
            recording = self._stop()
        except manual_backprop.NonFiniteError as found:
            error = found
        if self.check_finite and trainer.world_size > 1:
            error = _first_error_of_all_ranks(error, trainer)
        if error is not None:
            raise error
        if not self._logging:
            return
        step = trainer.global_step
        paths = _paths_of_all_ranks(list(recording), trainer)
        local = [_flat_deltas(recording, path) for path in paths]
        deltas = _global_deltas(local, trainer.world_size)
        if not trainer.is_global_zero:
            return
        order = {path: i for i, path in enumerate(self._forward_order)}
        present = sorted((p for p, d in zip(paths, deltas, strict=True) if d.numel()),
                         key=lambda p: order.get(p, len(order)))
        by_path = dict(zip(paths, deltas, strict=True))
        stats = _delta_stats([by_path[p] for p in present])
        values: list[Summary.Value] = []
        if self.histograms:
            for path, histogram in zip(present, _histograms([by_path[p] for p in present], stats), strict=True):
                if histogram is not None:
                    values.append(Summary.Value(tag=f"error_terms/{_tag(path)}", histo=histogram))
        if self.scalars:
            for path, row in zip(present, stats, strict=True):
                tag = _tag(path)
                values += [Summary.Value(tag=f"error_terms_rms/{tag}", simple_value=row.rms),
                           Summary.Value(tag=f"error_terms_mean_abs/{tag}", simple_value=row.mean_abs),
                           Summary.Value(tag=f"error_terms_max_abs/{tag}", simple_value=row.max_abs),
                           Summary.Value(tag=f"error_terms_zero_share/{tag}", simple_value=row.zero_share)]
            for (path, row), (_, next_row) in itertools.pairwise(zip(present, stats, strict=True)):
                ratio = row.rms / next_row.rms if next_row.rms > 0 else math.inf
                values.append(Summary.Value(tag=f"error_terms_ratio/{_tag(path)}", simple_value=ratio))
        if self.heatmap:
            for path, row in zip(present, stats, strict=True):
                self._history.setdefault(path, {})[step] = row.rms
            if step not in self._history_steps:
                self._history_steps.append(step)
            values.append(Summary.Value(tag=HEATMAP_TAG, image=_png(_heatmap_image(*self._heatmap_table()))))
        if values:  # one event for the step: a queue entry and a write, not one per value
            self._tensorboard(trainer).experiment._get_file_writer().add_summary(Summary(value=values), step)

    def _heatmap_table(self) -> tuple[list[str], list[int], np.ndarray]:
        """Layers (in forward order), the logged steps shown, and their δ RMS (NaN: not recorded)."""
        steps = self._history_steps
        if len(steps) > _HEATMAP_COLUMNS:
            picks = np.unique(np.linspace(0, len(steps) - 1, _HEATMAP_COLUMNS).round().astype(int))
            steps = [steps[i] for i in picks]
        paths = list(self._history)
        table = np.array([[self._history[p].get(s, np.nan) for s in steps] for p in paths], dtype=np.float64)
        return [_tag(p) for p in paths], steps, table

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not (self.update_ratios and self._logs_now(trainer) and trainer.is_global_zero):
            return
        lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        named = [(name, p) for name, p in _named_parameters(pl_module) if id(p) in lr_of and p.grad is not None]
        if not named:
            return
        tensors = [p.grad.detach() for _, p in named] + [p.detach() for _, p in named]
        norms = torch.stack(torch._foreach_norm(tensors)).float().cpu().tolist()  # one kernel for all, one sync
        norms = list(zip(norms[: len(named)], norms[len(named):], strict=True))
        values = [
            Summary.Value(tag=f"update_ratio/{name}", simple_value=float(lr_of[id(p)]) * grad_norm / weight_norm)
            for (name, p), (grad_norm, weight_norm) in zip(named, norms, strict=True) if weight_norm > 0
        ]
        if values:
            self._tensorboard(trainer).experiment._get_file_writer().add_summary(Summary(value=values),
                                                                                  trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._recording is not None:  # the backward did not run (training_step returned None): no δ
            self._stop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop(exception)


# -- helpers of ErrorTermLogger --------------------------------------------------------------------
def _named_parameters(pl_module: pl.LightningModule) -> list[tuple[str, nn.Parameter]]:
    """Parameters named as in the network (``fc1.weight``), then the LightningModule's others."""
    network = _model_of(pl_module)
    named = list(network.named_parameters())
    seen = {id(p) for _, p in named}
    return named + [(name, p) for name, p in pl_module.named_parameters() if id(p) not in seen]


def _flat_deltas(recording: manual_backprop.ErrorTerms, path: str) -> Tensor:
    """All of one layer's δ in the last forward, flattened (empty when the layer did not run)."""
    try:
        deltas = recording.all(path)
    except KeyError:
        return torch.zeros(0)
    return torch.cat([d.detach().float().reshape(-1) for d in deltas])


def _distributed(trainer: pl.Trainer) -> bool:
    return trainer.world_size > 1 and dist.is_available() and dist.is_initialized()


def _paths_of_all_ranks(paths: list[str], trainer: pl.Trainer) -> list[str]:
    """The recorded layers of every rank, rank 0's first: the same list everywhere, to gather by."""
    if not _distributed(trainer):
        return paths
    every = [None] * trainer.world_size
    dist.all_gather_object(every, paths)
    return list(dict.fromkeys(path for rank in every for path in rank))


def _global_deltas(local: list[Tensor], world_size: int) -> list[Tensor]:
    """Under DDP, every rank's δ of each layer, gathered (already scaled by 1 / world_size).

    DDP averages the ranks' gradients, so it trains C = (1/W) Σ_r C_r, and ∂C/∂z = (1/W) ∂C_r/∂z for
    the samples of rank r: the recording's ``scale``. Every rank gets the result.
    """
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return local
    device = next((d.device for d in local if d.numel()), torch.device("cpu"))
    if dist.get_backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    sizes = torch.tensor([d.numel() for d in local], device=device)
    all_sizes = [torch.empty_like(sizes) for _ in range(world_size)]
    dist.all_gather(all_sizes, sizes)
    all_sizes = [s.tolist() for s in all_sizes]
    longest = max(sum(s) for s in all_sizes)
    flat = torch.cat([d.to(device) for d in local]) if local else torch.zeros(0, device=device)
    padded = torch.cat([flat, flat.new_zeros(longest - flat.numel())])
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    per_rank = [list(g[: sum(s)].split(s)) for g, s in zip(gathered, all_sizes, strict=True)]
    return [torch.cat([rank[i] for rank in per_rank]) for i in range(len(local))]


def _first_error_of_all_ranks(error: manual_backprop.NonFiniteError | None,
                              trainer: pl.Trainer) -> manual_backprop.NonFiniteError | None:
    """Under DDP, the first rank's :class:`NonFiniteError` on every rank, so that all of them stop.

    One rank raising alone would leave the others waiting in DDP's next collective.
    """
    if not _distributed(trainer):
        return error
    failed = torch.tensor([0 if error is None else 1], device=trainer.strategy.root_device)
    dist.all_reduce(failed, op=dist.ReduceOp.MAX)
    if not failed.item():
        return None
    mine = None if error is None else (str(error), {name: getattr(error, name) for name in _ERROR_FIELDS})
    every = [None] * trainer.world_size
    dist.all_gather_object(every, mine)
    rank, (message, fields) = next((r, e) for r, e in enumerate(every) if e is not None)
    return manual_backprop.NonFiniteError(f"rank {rank}: {message}", **fields)


_ERROR_FIELDS = ("layer", "step", "phase", "bad_count", "numel", "input_range", "output_range")


class _Stats(NamedTuple):
    rms: float
    mean_abs: float
    max_abs: float
    zero_share: float
    low: float  # smallest finite δ
    high: float  # largest finite δ
    total: float  # Σ δ over the finite entries
    squares: float  # Σ δ² over the finite entries
    finite: int  # how many entries are finite


def _delta_stats(deltas: list[Tensor]) -> list[_Stats]:
    """Per layer: RMS √(mean δ²), mean |δ|, max |δ|, share of δ = 0, and the histogram's summary numbers.

    Computed where δ lives, read back in one transfer.
    """
    if not deltas:
        return []
    rows = []
    for delta in deltas:
        magnitude = delta.abs()
        finite = torch.isfinite(delta)
        kept = torch.where(finite, delta, 0.0)
        big = torch.finfo(delta.dtype).max
        rows.append(torch.stack([
            delta.pow(2).mean().sqrt(), magnitude.mean(), magnitude.max(), (delta == 0).float().mean(),
            torch.where(finite, delta, big).min(), torch.where(finite, delta, -big).max(),
            kept.sum(), kept.pow(2).sum(), finite.sum().float(),
        ]))
    return [_Stats(*row[:8], int(row[8])) for row in torch.stack(rows).cpu().double().tolist()]


_HISTOGRAM_BINS = 64


def _histograms(deltas: list[Tensor], stats: list[_Stats]) -> list[HistogramProto | None]:
    """TensorBoard histograms of the finite δ: equal-width bins between the smallest and largest."""
    counts = []
    for delta, row in zip(deltas, stats, strict=True):
        finite = delta if row.finite == delta.numel() else delta[torch.isfinite(delta)]
        if row.finite == 0 or row.low == row.high:
            counts.append(None)
        else:
            counts.append(torch.histc(finite, bins=_HISTOGRAM_BINS, min=row.low, max=row.high))
    computed = [c for c in counts if c is not None]
    read = iter(torch.stack(computed).cpu().tolist() if computed else [])
    histograms: list[HistogramProto | None] = []
    for bins, row in zip(counts, stats, strict=True):
        if row.finite == 0:
            histograms.append(None)
            continue
        if bins is None:  # every finite δ is the same number: one bucket
            limits, buckets = [row.high], [float(row.finite)]
        else:
            limits = np.linspace(row.low, row.high, _HISTOGRAM_BINS + 1)[1:].tolist()
            buckets = next(read)
        histograms.append(HistogramProto(min=row.low, max=row.high, num=row.finite, sum=row.total,
                                         sum_squares=row.squares, bucket_limit=limits, bucket=buckets))
    return histograms


# -- the heatmap, drawn without matplotlib ---------------------------------------------------------
_HEATMAP_COLUMNS = 120  # at most this many logged steps are shown, evenly sampled from the run
_CELL_HEIGHT = 16
_LINE = 13  # the height of a line of text
_MARGIN = 6
_BAR_WIDTH = 12
# viridis, from dark violet (small) to yellow (large), at 0, 1/8, ..., 1
_VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 82, 139), (44, 113, 142), (33, 145, 140),
                     (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float64)
_MISSING = (128, 128, 128)
_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)
_TITLE = "delta RMS per layer and step (log color scale)"
_TEXTS: dict[str, Image.Image] = {}  # labels rendered once (drawing text is most of the image's cost)


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _text(text: str) -> Image.Image:
    """``text`` in PIL's default font, as a mask to paste the ink through."""
    mask = _TEXTS.get(text)
    if mask is None:
        if len(_TEXTS) > 1024:
            _TEXTS.clear()
        mask = Image.new("L", (max(1, math.ceil(_font().getlength(text))), _LINE))
        ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=_font())
        _TEXTS[text] = mask
    return mask


def _put_text(canvas: Image.Image, x: int, y: int, text: str) -> None:
    mask = _text(text)
    canvas.paste(_INK, (x, y, x + mask.width, y + mask.height), mask)


_ANCHORS = np.linspace(0.0, 1.0, len(_VIRIDIS))


def _viridis(t: np.ndarray) -> np.ndarray:
    """Colours for values in [0, 1] (NaN: grey), shape (..., 3) uint8."""
    clipped = np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0)
    rgb = np.stack([np.interp(clipped, _ANCHORS, _VIRIDIS[:, c]) for c in range(3)], axis=-1)
    rgb = np.rint(rgb).astype(np.uint8)
    rgb[np.isnan(t)] = _MISSING
    return rgb


def _heatmap_scale(table: np.ndarray) -> tuple[np.ndarray, float, float]:
    """log10 of the positive finite values scaled to [0, 1] (NaN elsewhere), and the log10 range."""
    usable = np.isfinite(table) & (table > 0)
    logs = np.full(table.shape, np.nan)
    logs[usable] = np.log10(table[usable])
    if not usable.any():
        return logs, 0.0, 0.0
    low, high = float(logs[usable].min()), float(logs[usable].max())
    return ((logs - low) / (high - low) if high > low else np.where(usable, 1.0, np.nan)), low, high


def _heatmap_geometry(rows: list[str], n_columns: int) -> tuple[int, int, int, int]:
    """(left, top, cell width, cell height): where the grid of the image starts, and its cells' size."""
    label_width = max((_text(row).width for row in rows), default=0)
    cell_width = max(3, min(24, 480 // max(n_columns, 1)))
    return _MARGIN + label_width + _MARGIN, _MARGIN + _LINE + _MARGIN, cell_width, _CELL_HEIGHT


def _heatmap_image(rows: list[str], steps: list[int], table: np.ndarray) -> np.ndarray:
    """The heatmap as an (H, W, 3) uint8 array: row i, column j coloured by log10 ``table[i, j]``.

    Labels: the layer of each row on the left, the first and last step under the grid, the RMS at
    either end of the colour bar on the right.
    """
    left, top, cell_w, cell_h = _heatmap_geometry(rows, len(steps))
    scaled, low, high = _heatmap_scale(table)
    grid = np.repeat(np.repeat(_viridis(scaled), cell_h, axis=0), cell_w, axis=1)
    grid_w, grid_h = cell_w * len(steps), cell_h * len(rows)
    bar_h = max(grid_h, 2 * _LINE)
    bar_left = left + grid_w + 2 * _MARGIN
    high_text, low_text = f"{10 ** high:.2g}", f"{10 ** low:.2g}"
    width = max(bar_left + _BAR_WIDTH + _MARGIN + max(_text(high_text).width, _text(low_text).width),
                left + _text(_TITLE).width) + _MARGIN
    height = top + bar_h + _MARGIN + _LINE + _MARGIN
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    canvas.paste(Image.fromarray(grid), (left, top))
    _put_text(canvas, left, _MARGIN, _TITLE)
    for i, row in enumerate(rows):
        _put_text(canvas, _MARGIN, top + i * cell_h + (cell_h - _LINE) // 2, row)
    if steps:
        first, last = f"step {steps[0]}", f"{steps[-1]}"
        _put_text(canvas, left, top + bar_h + _MARGIN, first)
        if len(steps) > 1:
            x = max(left + grid_w - _text(last).width, left + _text(first).width + _MARGIN)
            _put_text(canvas, x, top + bar_h + _MARGIN, last)
    canvas.paste(_colour_bar(bar_h), (bar_left, top))
    _put_text(canvas, bar_left + _BAR_WIDTH + _MARGIN, top, high_text)
    _put_text(canvas, bar_left + _BAR_WIDTH + _MARGIN, top + bar_h - _LINE, low_text)
    return np.asarray(canvas)


@functools.lru_cache(maxsize=8)
def _colour_bar(height: int) -> Image.Image:
    """The colour scale, largest at the top."""
    return Image.fromarray(np.repeat(_viridis(np.linspace(1.0, 0.0, height))[:, None, :], _BAR_WIDTH, axis=1))


def _png(image: np.ndarray) -> Summary.Image:
    """An image summary of an (H, W, 3) uint8 array, as a PNG written here (PIL's encoder is 5× slower).

    PNG: the signature, then chunks (length, type, data, CRC-32): IHDR (size, 8-bit RGB), IDAT (the
    rows, each led by filter byte 0, zlib-compressed), IEND.
    """
    height, width, _ = image.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + chunk(b"IEND", b""))
    return Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)


class GradientParityCallback(pl.Callback):
    """Every ``every_n_steps`` steps, check the hand-written gradients against native autograd.

    At a checked step the callback brings a native twin of the LightningModule (made once, at fit
    start: a deep copy with ``manual_backprop.restore`` applied, detached from the trainer) to the
    model's parameters, buffers and train/eval modes before the step, runs the twin's
    ``training_step`` on the same batch with the same random numbers (dropout draws the same masks)
    under the same precision context, and takes its gradients with native autograd. Per layer
    (module owning parameters, path as in the network, ``(root)`` for the root) it logs to every
    logger

    ``parity/<module path>`` = max|g_manual − g_native| / max|g_native|

    both maxima over every gradient entry of the layer's parameters: the largest difference,
    relative to the layer's largest native gradient entry. (Per layer rather than per parameter: a
    gradient that is 0 in exact arithmetic, like the bias of a layer followed by BatchNorm, holds
    only rounding noise.) It warns when that exceeds ``tolerance``; the default 1e-4 suits float32
    (the differences there are about 1e-7), reduced precision needs a larger one.

    g_manual is the gradient the real backward left in ``.grad`` (divided by the AMP scale when a
    grad scaler runs); with ``accumulate_grad_batches=k`` the first micro-batch's, and the twin's
    loss is divided by k as Lightning divides the real one. Under DDP the twin's gradients are
    averaged over the ranks, as DDP averages the real ones. The twin updates only its own BatchNorm
    statistics; the real model, its buffers and the random number stream of training are left as
    they were.

    Costs: one copy of the model kept for the run; on a checked step one native forward and
    backward. Needs automatic optimization (``training_step`` returning the loss). The twin's
    ``self.log`` calls are dropped (it has no trainer).
    """

    def __init__(self, every_n_steps: int = 50, tolerance: float = 1e-4):
        super().__init__()
        _check_interval("GradientParityCallback", every_n_steps)
        if not (isinstance(tolerance, int | float) and tolerance > 0 and math.isfinite(tolerance)):
            raise ValueError(f"GradientParityCallback: tolerance must be a positive number, got {tolerance!r}")
        self.every_n_steps = every_n_steps
        self.tolerance = float(tolerance)
        self._twin: pl.LightningModule | None = None
        self._pending: tuple | None = None  # (batch, batch_idx, rng states) of a step being checked
        self._last_step: int | None = None
        self.last_differences: dict[str, float] = {}  # the last checked step's parity/<path> values

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._last_step = None
        if not pl_module.automatic_optimization:
            raise ValueError("GradientParityCallback needs automatic optimization: with manual optimization "
                             "the training_step runs optimizer steps the twin cannot repeat")
        if not _real_loggers(trainer):
            rank_zero_warn("GradientParityCallback: this run has no logger, so no parity values are logged "
                           "(differences above the tolerance still warn)")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a deep copy that shares nothing with the trainer: its _trainer becomes None
        self._twin = manual_backprop.restore(copy.deepcopy(pl_module, {id(trainer): None}))
        for p in self._twin.parameters():
            p.grad = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._twin = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if self._twin is None or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step  # the first micro-batch of an accumulated step, whose .grad is its own
        with torch.no_grad():
            self._twin.load_state_dict(pl_module.state_dict())
        for real, native in zip(pl_module.modules(), self._twin.modules(), strict=True):
            native.training = real.training
        self._pending = (batch, batch_idx, _rng_states())

    def on_after_backward(self, trainer, pl_module) -> None:
        if self._pending is None:
            return
        batch, batch_idx, rng = self._pending
        self._pending = None
        named = _named_parameters(pl_module)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None else 1.0
        manual = [None if p.grad is None else p.grad.detach().double() / scale for _, p in named]
        native = self._native_gradients(trainer, batch, batch_idx, rng)
        differences = _parity(named, manual, native)
        self.last_differences = differences
        if not trainer.is_global_zero:
            return
        metrics = {f"parity/{path}": value for path, value in differences.items()}
        for logger in _real_loggers(trainer):
            logger.log_metrics(metrics, step=trainer.global_step)
        for path, value in differences.items():
            if not value <= self.tolerance:
                rank_zero_warn(
                    f"GradientParityCallback: at step {trainer.global_step}, layer {path!r}: the hand-written "
                    f"gradient differs from native autograd's by {value:.3g} (relative to the layer's largest "
                    f"native entry), above the tolerance {self.tolerance:.3g}"
                )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._pending = None  # the backward did not run (training_step returned None): nothing to compare

    def _native_gradients(self, trainer, batch, batch_idx, rng) -> list[Tensor | None]:
        twin = self._twin
        named = _named_parameters(twin)
        now = _rng_states()
        _set_rng_states(rng)
        try:
            with trainer.precision_plugin.train_step_context(), _no_log_warnings():
                output = twin.training_step(batch, batch_idx)
        finally:
            _set_rng_states(now)
        loss = output["loss"] if isinstance(output, dict) else output
        if not isinstance(loss, Tensor):
            raise ValueError("GradientParityCallback: training_step must return the loss (a tensor, or a dict "
                             f"with 'loss'), got {type(output).__name__}")
        loss = loss / trainer.accumulate_grad_batches
        wanted = [p for _, p in named if p.requires_grad]
        grads = iter(torch.autograd.grad(loss, wanted, allow_unused=True))
        native = [next(grads) if p.requires_grad else None for _, p in named]
        native = [None if g is None else g.detach().double() for g in native]
        if trainer.world_size > 1:
            native = _mean_over_ranks(native, trainer)
        return native


def _rng_states() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.random.get_rng_state(), cuda


def _set_rng_states(states: tuple[Tensor, list[Tensor] | None]) -> None:
    cpu, cuda = states
    torch.random.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def _no_log_warnings() -> Iterator[None]:
    """Silence Lightning's warning that ``self.log`` has no trainer (the twin has none on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"You are trying to `self.log\(\)`")
        yield


def _mean_over_ranks(grads: list[Tensor | None], trainer: pl.Trainer) -> list[Tensor | None]:
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    flat = trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in present]), reduce_op="mean")
    parts = iter(flat.split([g.numel() for g in present]))
    return [None if g is None else next(parts).view_as(g) for g in grads]


def _parity(named: list[tuple[str, nn.Parameter]], manual: list[Tensor | None],
            native: list[Tensor | None]) -> dict[str, float]:
    """Per layer: max|g_manual − g_native| / max|g_native|, both maxima over all the layer's parameters.

    Over the whole layer, not each parameter alone: a parameter whose gradient is 0 in exact
    arithmetic (the bias of a layer followed by BatchNorm) holds rounding noise in both, and noise
    over noise says nothing.
    """
    rows: list[tuple[str, Tensor]] = []
    for (name, _), g_manual, g_native in zip(named, manual, native, strict=True):
        if g_manual is None and g_native is None:
            continue
        if g_manual is None:
            g_manual = torch.zeros_like(g_native)
        if g_native is None:
            g_native = torch.zeros_like(g_manual)
        rows.append((_tag(name.rpartition(".")[0]),
                     torch.stack([(g_manual - g_native).abs().max(), g_native.abs().max()])))
    if not rows:
        return {}
    values = torch.stack([r for _, r in rows]).cpu().tolist()
    layers: dict[str, tuple[float, float]] = {}
    for (path, _), (difference, scale) in zip(rows, values, strict=True):
        seen_difference, seen_scale = layers.get(path, (0.0, 0.0))
        layers[path] = (max(seen_difference, difference), max(seen_scale, scale))
    return {path: difference / scale if scale > 0 else (0.0 if difference == 0 else math.inf)
            for path, (difference, scale) in layers.items()}
