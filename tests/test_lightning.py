"""Training with a real Lightning Trainer; what the callbacks log, read back from real event files."""

import io
import itertools
import math
import os
import re
import subprocess
import sys
import warnings
from collections import OrderedDict
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.plugins.custom_scalar import layout_pb2
from torch import nn

import manual_backprop as mbp
from lightning_modules import (
    DigitsDataModule,
    ErrorTermLogger,
    GradientParityCallback,
    ManualBackpropModule,
    SigmoidMLP,
)
from lightning_modules.callbacks import (
    LAYOUT_CATEGORY,
    RATIO_CHART,
    RMS_CHART,
    UPDATE_RATIO_CHART,
    _heatmap_geometry,
    _heatmap_image,
    _viridis,
)

from tb import read_events

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [("fc1", 16), ("fc2", 12), ("fc3", 10)]  # SigmoidMLP([64, 16, 12, 10]): path, output width


def _trainer(tmp_path, callbacks, max_steps=4, logger=None, **kwargs):
    return pl.Trainer(
        max_steps=max_steps,
        logger=TensorBoardLogger(tmp_path, name="run") if logger is None else logger,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **kwargs,
    )


class DeltaSpy(pl.Callback):
    """Records δ itself with ``record_error_terms`` at every step: the values the logger must show."""

    def __init__(self, layers):
        self.layers = layers
        self.deltas: dict[int, dict[str, torch.Tensor]] = {}
        self._recording = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._recording = mbp.record_error_terms(pl_module.network, layers=self.layers).__enter__()

    def on_after_backward(self, trainer, pl_module):
        self._recording.__exit__(None, None, None)
        self.deltas[trainer.global_step] = {path: self._recording[path].clone() for path in self.layers}


class StepSpy(pl.Callback):
    """Each step's parameters and gradients just before the optimizer step, and the parameters after it."""

    def __init__(self):
        self.before: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before[trainer.global_step] = {
            name: (p.detach().clone(), p.grad.detach().clone()) for name, p in pl_module.network.named_parameters()
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step - 1] = {
            name: p.detach().clone() for name, p in pl_module.network.named_parameters()
        }


def _scalars(events, tag):
    return {s.step: s.value for s in events.Scalars(tag)}


def _rms(t):
    return t.double().pow(2).mean().sqrt().item()


# -- ErrorTermLogger -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One short run with every kind of output on, and the δ recorded independently at every step."""
    tmp_path = tmp_path_factory.mktemp("logged")
    pl.seed_everything(0)
    module = ManualBackpropModule(SigmoidMLP([64, 16, 12, 10]), optimizer=partial(torch.optim.SGD, lr=0.5))
    spy, steps = DeltaSpy([path for path, _ in LAYERS]), StepSpy()
    trainer = _trainer(tmp_path, [spy, steps, ErrorTermLogger(every_n_steps=2)], max_steps=5)
    trainer.fit(module, DigitsDataModule(batch_size=8))
    return module, spy, steps, read_events(trainer.logger.log_dir)


def test_every_tag_kind_is_logged_for_every_parametrized_layer_at_the_logged_steps(logged_run):
    module, _, _, events = logged_run
    tags = events.Tags()
    paths = [path for path, _ in LAYERS]
    assert sorted(t for t in tags["histograms"] if t.startswith("error_terms/")) == [f"error_terms/{p}" for p in paths]
    expected = {f"error_terms_{kind}/{p}" for kind in ("rms", "mean_abs", "max_abs", "zero_share") for p in paths}
    expected |= {"error_terms_ratio/fc1", "error_terms_ratio/fc2"}  # the last layer has no next layer
    expected |= {f"update_ratio/{name}" for name, _ in module.network.named_parameters()}
    assert {t for t in tags["scalars"] if t.startswith(("error_terms", "update_ratio"))} == expected
    assert tags["images"] == ["error_terms_heatmap"]
    assert tags["tensors"] == ["custom_scalars__config__"]
    for tag in expected:
        assert sorted(_scalars(events, tag)) == [0, 2, 4], tag
    for path, width in LAYERS:
        histograms = events.Histograms(f"error_terms/{path}")
        assert [h.step for h in histograms] == [0, 2, 4]
        assert all(h.histogram_value.num == 8 * width for h in histograms)  # one δ per sample and unit
    assert [image.step for image in events.Images("error_terms_heatmap")] == [0, 2, 4]
    # recording stopped after each logged step: no hooks are left on the network
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.network.modules())


def test_scalars_and_histograms_are_those_of_the_recorded_deltas(logged_run):
    _, spy, _, events = logged_run
    for step in (0, 2, 4):
        for path, _ in LAYERS:
            delta = spy.deltas[step][path].double()
            assert _scalars(events, f"error_terms_rms/{path}")[step] == pytest.approx(_rms(delta), rel=1e-5)
            assert _scalars(events, f"error_terms_mean_abs/{path}")[step] == pytest.approx(
                delta.abs().mean().item(), rel=1e-5)
            assert _scalars(events, f"error_terms_max_abs/{path}")[step] == pytest.approx(
                delta.abs().max().item(), rel=1e-6)
            assert _scalars(events, f"error_terms_zero_share/{path}")[step] == (delta == 0).double().mean().item()
            h = next(h.histogram_value for h in events.Histograms(f"error_terms/{path}") if h.step == step)
            assert h.num == delta.numel() and sum(h.bucket) == delta.numel()
            assert (h.min, h.max) == pytest.approx((delta.min().item(), delta.max().item()), rel=1e-6)
            assert h.sum == pytest.approx(delta.sum().item(), abs=1e-6 * delta.abs().sum().item())
            assert h.sum_squares == pytest.approx(delta.pow(2).sum().item(), rel=1e-5)
            assert list(h.bucket_limit) == sorted(h.bucket_limit) and h.bucket_limit[-1] == pytest.approx(h.max)
            # each bucket holds the δ between the previous limit and its own
            edges = [-math.inf, *h.bucket_limit]
            inside = [((delta > lo) & (delta <= hi)).sum().item() for lo, hi in itertools.pairwise(edges)]
            assert all(abs(a - b) <= 1 for a, b in zip(h.bucket, inside, strict=True))


def test_ratio_is_rms_of_a_layer_over_rms_of_the_next(logged_run):
    _, spy, _, events = logged_run
    for step in (0, 2, 4):
        rms = {path: _scalars(events, f"error_terms_rms/{path}")[step] for path, _ in LAYERS}
        for path, next_path in [("fc1", "fc2"), ("fc2", "fc3")]:
            ratio = _scalars(events, f"error_terms_ratio/{path}")[step]
            assert ratio == pytest.approx(rms[path] / rms[next_path], rel=1e-6)
            recorded = _rms(spy.deltas[step][path]) / _rms(spy.deltas[step][next_path])
            assert ratio == pytest.approx(recorded, rel=1e-5)
        # the sigmoid network's blame shrinks on the way back: vanishing
        assert rms["fc1"] < rms["fc2"] < rms["fc3"]


def test_update_ratio_is_the_plain_sgd_step_over_the_weights(logged_run):
    """With SGD without momentum the step is Δw = −η·∂C/∂w: the logged ratio is ‖Δw‖ / ‖w‖."""
    module, _, steps, events = logged_run
    lr = module.trainer.optimizers[0].param_groups[0]["lr"]
    for step in (0, 2, 4):
        for name, (w, grad) in steps.before[step].items():
            logged = _scalars(events, f"update_ratio/{name}")[step]
            assert logged == pytest.approx(lr * grad.norm().item() / w.norm().item(), rel=1e-5)
            moved = (steps.after[step][name] - w).norm().item()
            assert logged == pytest.approx(moved / w.norm().item(), rel=1e-3)


def test_update_ratio_with_adam_is_still_lr_times_gradient_norm_over_weight_norm(tmp_path):
    pl.seed_everything(0)
    module = ManualBackpropModule(SigmoidMLP([64, 8, 10]), optimizer=partial(torch.optim.Adam, lr=0.01))
    steps = StepSpy()
    trainer = _trainer(tmp_path, [steps, ErrorTermLogger(every_n_steps=1, histograms=False, heatmap=False)],
                       max_steps=2)
    trainer.fit(module, DigitsDataModule(batch_size=8))
    events = read_events(trainer.logger.log_dir)
    for step in (0, 1):
        for name, (w, grad) in steps.before[step].items():
            assert _scalars(events, f"update_ratio/{name}")[step] == pytest.approx(
                0.01 * grad.norm().item() / w.norm().item(), rel=1e-5)


def test_custom_scalars_layout_charts_every_layers_rms_once(logged_run):
    module, _, _, events = logged_run
    written = events.Tensors("custom_scalars__config__")
    assert len(written) == 1  # once per run
    assert events.SummaryMetadata("custom_scalars__config__").plugin_data.plugin_name == "custom_scalars"
    layout = layout_pb2.Layout.FromString(written[0].tensor_proto.string_val[0])
    (category,) = layout.category
    assert category.title == LAYOUT_CATEGORY
    charts = {chart.title: list(chart.multiline.tag) for chart in category.chart}
    assert list(charts) == [RMS_CHART, RATIO_CHART, UPDATE_RATIO_CHART]
    scalar_tags = events.Tags()["scalars"]

    def charted(title):  # the tags a chart shows: its patterns matched as TensorBoard's plugin does, re.match
        return sorted(t for t in scalar_tags if any(re.match(p, t) for p in charts[title]))

    assert charted(RMS_CHART) == [f"error_terms_rms/{path}" for path, _ in LAYERS]
    assert charted(RATIO_CHART) == ["error_terms_ratio/fc1", "error_terms_ratio/fc2"]
    assert charted(UPDATE_RATIO_CHART) == sorted(f"update_ratio/{n}" for n, _ in module.network.named_parameters())


def _decode(image_event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image_event.encoded_image_string)).convert("RGB"))


def test_heatmap_image_grows_a_column_per_logged_step_coloured_by_log_rms(logged_run):
    _, _, _, events = logged_run
    images = events.Images("error_terms_heatmap")
    rows = [path for path, _ in LAYERS]
    rms = np.array([[_scalars(events, f"error_terms_rms/{path}")[s] for s in (0, 2, 4)] for path in rows])
    for n, image in enumerate(images, start=1):
        decoded = _decode(image)
        assert (image.height, image.width) == decoded.shape[:2]
        # the image is the heatmap of the logged RMS values so far (float32 in the event file: ±1 in a colour)
        expected = _heatmap_image(rows, [0, 2, 4][:n], rms[:, :n])
        assert decoded.shape == expected.shape
        assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1
    left, top, cell_w, cell_h = _heatmap_geometry(rows, 3)
    decoded = _decode(images[-1])
    centres = np.array([[decoded[top + i * cell_h + cell_h // 2, left + j * cell_w + cell_w // 2]
                         for j in range(3)] for i in range(3)])
    logs = np.log10(rms)
    expected = _viridis((logs - logs.min()) / (logs.max() - logs.min()))
    assert np.abs(centres.astype(int) - expected.astype(int)).max() <= 1
    # fc3 (largest δ) is at the bright end of the colour scale, fc1 (smallest) at the dark end
    assert centres[2].sum(axis=-1).min() > centres[0].sum(axis=-1).max()


class OutputFirst(nn.Module):
    """Defines its output layer first: the forward order (hidden, out) is not the definition order."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(16, 10)
        self.hidden = nn.Linear(64, 16)

    def forward(self, x):
        return self.out(torch.sigmoid(self.hidden(x)))


def test_next_layer_and_heatmap_rows_follow_the_forward_order(tmp_path):
    trainer = _trainer(tmp_path, [ErrorTermLogger(every_n_steps=1)], max_steps=1)
    trainer.fit(ManualBackpropModule(OutputFirst()), DigitsDataModule(batch_size=8))
    events = read_events(trainer.logger.log_dir)
    ratios = [t for t in events.Tags()["scalars"] if t.startswith("error_terms_ratio/")]
    assert ratios == ["error_terms_ratio/hidden"]
    rms = {path: _scalars(events, f"error_terms_rms/{path}")[0] for path in ("hidden", "out")}
    assert _scalars(events, "error_terms_ratio/hidden")[0] == pytest.approx(rms["hidden"] / rms["out"], rel=1e-6)
    (image,) = events.Images("error_terms_heatmap")
    expected = _heatmap_image(["hidden", "out"], [0], np.array([[rms["hidden"]], [rms["out"]]]))
    assert np.abs(_decode(image).astype(int) - expected.astype(int)).max() <= 1


def test_heatmap_marks_missing_and_zero_values_grey_and_samples_long_runs():
    table = np.array([[1e-3, np.nan, 1e-1], [0.0, 1e-2, 1e-2]])
    image = _heatmap_image(["a", "bb"], [0, 10, 20], table)
    left, top, cell_w, cell_h = _heatmap_geometry(["a", "bb"], 3)

    def cell(i, j):
        return tuple(image[top + i * cell_h + 1, left + j * cell_w + 1])

    assert cell(0, 1) == cell(1, 0) == (128, 128, 128)
    assert cell(0, 0) == tuple(_viridis(np.array([0.0]))[0])  # 1e-3, the smallest: the dark end
    assert cell(0, 2) == tuple(_viridis(np.array([1.0]))[0])  # 1e-1, the largest: the bright end
    assert cell(1, 1) == tuple(_viridis(np.array([0.5]))[0])  # 1e-2 lies half way on the log scale
    logger = ErrorTermLogger()
    for step in range(0, 1000, 2):
        logger._history.setdefault("fc1", {})[step] = 1.0 + step
        logger._history_steps.append(step)
    rows, steps, table = logger._heatmap_table()
    assert rows == ["fc1"] and len(steps) == table.shape[1] <= 120
    assert steps[0] == 0 and steps[-1] == 998 and steps == sorted(steps)


def test_zero_share_counts_the_dead_units_of_a_relu_layer(tmp_path):
    pl.seed_everything(0)
    network = nn.Sequential(OrderedDict(fc1=nn.Linear(64, 8), relu=nn.ReLU(), fc2=nn.Linear(8, 10)))
    with torch.no_grad():
        network.fc1.bias[:3] = -100.0  # three units never switch on: their δ is exactly 0
    spy = DeltaSpy(["fc1", "fc2"])
    trainer = _trainer(tmp_path, [spy, ErrorTermLogger(every_n_steps=1)], max_steps=2)
    module = ManualBackpropModule(network, optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.9))
    trainer.fit(module, DigitsDataModule(batch_size=8))
    events = read_events(trainer.logger.log_dir)
    for step in (0, 1):
        delta = spy.deltas[step]["fc1"]
        share = _scalars(events, "error_terms_zero_share/fc1")[step]
        assert share == pytest.approx((delta == 0).double().mean().item())
        assert 3 / 8 <= share < 1
        assert (delta[:, :3] == 0).all()
        assert _scalars(events, "error_terms_zero_share/fc2")[step] == 0.0


def test_constructor_arguments_choose_what_is_logged(tmp_path):
    logger = ErrorTermLogger(every_n_steps=1, layers=["fc2"], histograms=False, heatmap=False, update_ratios=False,
                             custom_scalars=False)
    trainer = _trainer(tmp_path, [logger], max_steps=2)
    trainer.fit(ManualBackpropModule(SigmoidMLP([64, 16, 12, 10])), DigitsDataModule(batch_size=8))
    tags = read_events(trainer.logger.log_dir).Tags()
    assert tags["histograms"] == [] and tags["images"] == [] and tags["tensors"] == []
    assert sorted(t for t in tags["scalars"] if t != "hp_metric") == [
        "error_terms_max_abs/fc2", "error_terms_mean_abs/fc2", "error_terms_rms/fc2", "error_terms_zero_share/fc2",
    ]
    trainer = _trainer(tmp_path, [ErrorTermLogger(every_n_steps=1, scalars=False, heatmap=False)], max_steps=1)
    trainer.fit(ManualBackpropModule(SigmoidMLP([64, 16, 10])), DigitsDataModule(batch_size=8))
    tags = read_events(trainer.logger.log_dir).Tags()
    assert tags["histograms"] == ["error_terms/fc1", "error_terms/fc2"]
    assert not any(t.startswith("error_terms") for t in tags["scalars"])


def test_non_finite_error_terms_are_logged_without_crashing_the_histogram(tmp_path):
    class PoisonFirstSample(pl.Callback):  # a NaN pixel: that sample's row of every δ is NaN, the rest finite
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            batch[0][0, 0] = float("nan")

    trainer = _trainer(tmp_path, [PoisonFirstSample(), ErrorTermLogger(every_n_steps=1)], max_steps=1)
    trainer.fit(ManualBackpropModule(SigmoidMLP([64, 16, 12, 10])), DigitsDataModule(batch_size=8))
    events = read_events(trainer.logger.log_dir)
    for path, width in LAYERS:
        assert math.isnan(_scalars(events, f"error_terms_rms/{path}")[0])
        (histogram,) = events.Histograms(f"error_terms/{path}")
        assert histogram.histogram_value.num == 7 * width  # the finite entries


class SqrtAbs(nn.Module):
    """√|z|: finite forward, but at z = 0 its derivative is infinite (and |z|'s is 0): δ below it is NaN."""

    def forward(self, z):
        return torch.sqrt(z.abs())


class AtStep(pl.Callback):
    """Runs ``change(pl_module, batch)`` before the batch of one step."""

    def __init__(self, step, change):
        self.step, self.change = step, change

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                self.change(pl_module, batch)


def _zero_unit(pl_module, batch):  # fc1's unit 0 outputs exactly 0 for every sample
    pl_module.network.fc1.weight[0] = 0.0
    pl_module.network.fc1.bias[0] = 0.0


def test_check_finite_names_the_layer_whose_delta_turned_non_finite_in_backward(tmp_path):
    network = nn.Sequential(OrderedDict(fc1=nn.Linear(64, 8), root=SqrtAbs(), fc2=nn.Linear(8, 8), act=nn.Tanh(),
                                        fc3=nn.Linear(8, 10)))
    module = ManualBackpropModule(network, optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.9))
    trainer = _trainer(tmp_path, [AtStep(2, _zero_unit), ErrorTermLogger(every_n_steps=50, check_finite=True)],
                       max_steps=4)
    with pytest.raises(mbp.NonFiniteError, match=r"step 2: layer 'fc1' \(Linear\) is the first layer in backward "
                                                 r"order .* 8 of 64 entries of δ") as raised:
        trainer.fit(module, DigitsDataModule(batch_size=8))
    error = raised.value
    assert (error.layer, error.phase, error.step, error.bad_count) == ("fc1", "backward", 2, 8)
    # checked at every step, not only the logged ones, and raised before the optimizer step
    assert trainer.global_step == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.network.modules())


def test_check_finite_names_the_layer_whose_output_turned_non_finite_in_a_deep_network(tmp_path):
    def poison_fc5(pl_module, batch):
        pl_module.network.fc5.weight[3, 2] = float("inf")

    module = ManualBackpropModule(SigmoidMLP([64, 32, 32, 32, 32, 32, 32, 32, 10]))
    trainer = _trainer(tmp_path, [AtStep(1, poison_fc5), ErrorTermLogger(every_n_steps=1, check_finite=True)],
                       max_steps=3)
    with pytest.raises(mbp.NonFiniteError, match=r"step 1: layer 'fc5' \(Linear\) is the first recorded layer "
                                                 r"whose output is non-finite in the forward") as raised:
        trainer.fit(module, DigitsDataModule(batch_size=8))
    assert (raised.value.layer, raised.value.phase, raised.value.step) == ("fc5", "forward", 1)
    assert raised.value.bad_count == 8  # unit 3 of every sample


def test_check_finite_works_without_a_logger(tmp_path):
    trainer = _trainer(tmp_path, [AtStep(0, lambda m, b: b[0].fill_(float("nan"))),
                                  ErrorTermLogger(check_finite=True)], logger=False, default_root_dir=tmp_path)
    with pytest.warns(UserWarning, match="no logger"), pytest.raises(mbp.NonFiniteError, match="layer 'fc1'"):
        trainer.fit(ManualBackpropModule(), DigitsDataModule(batch_size=8))


def test_layers_that_match_nothing_raise_before_training(tmp_path):
    trainer = _trainer(tmp_path, [ErrorTermLogger(layers=["fc9", "fc1"])])
    with pytest.raises(ValueError, match=r"'fc9' matches no module; the modules are .*'fc1' \(Linear\)"):
        trainer.fit(ManualBackpropModule(), DigitsDataModule(batch_size=8))
    assert trainer.global_step == 0


def test_layers_by_glob_pattern(tmp_path):
    trainer = _trainer(tmp_path, [ErrorTermLogger(every_n_steps=1, layers=["fc*", "sigmoid?"])], max_steps=1)
    trainer.fit(ManualBackpropModule(SigmoidMLP([64, 16, 12, 10])), DigitsDataModule(batch_size=8))
    tags = read_events(trainer.logger.log_dir).Tags()
    assert tags["histograms"] == ["error_terms/fc1", "error_terms/sigmoid1", "error_terms/fc2", "error_terms/sigmoid2",
                                  "error_terms/fc3"]  # in forward order


def test_gradient_accumulation_logs_each_step_once(tmp_path):
    trainer = _trainer(tmp_path, [ErrorTermLogger(every_n_steps=2)], accumulate_grad_batches=2)
    trainer.fit(ManualBackpropModule(), DigitsDataModule(batch_size=8))
    events = read_events(trainer.logger.log_dir)
    assert [h.step for h in events.Histograms("error_terms/fc1")] == [0, 2]
    assert sorted(_scalars(events, "update_ratio/fc1.weight")) == [0, 2]


def test_a_single_layer_network_is_tagged_root(tmp_path):
    trainer = _trainer(tmp_path, [ErrorTermLogger(every_n_steps=2)], max_steps=1)
    trainer.fit(ManualBackpropModule(torch.nn.Linear(64, 10)), DigitsDataModule(batch_size=8))
    tags = read_events(trainer.logger.log_dir).Tags()
    assert "error_terms/(root)" in tags["histograms"]
    assert {"update_ratio/weight", "update_ratio/bias"} <= set(tags["scalars"])


def test_without_any_logger_it_warns_once_and_training_goes_on(tmp_path):
    trainer = _trainer(tmp_path, [ErrorTermLogger(every_n_steps=1), GradientParityCallback(every_n_steps=1)],
                       max_steps=2, logger=False, default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(ManualBackpropModule(), DigitsDataModule(batch_size=8))
    messages = [str(w.message) for w in caught]
    assert sum("no logger, so no error terms are logged" in m for m in messages) == 1
    assert sum("no logger, so no parity values are logged" in m for m in messages) == 1
    assert trainer.global_step == 2


def test_fast_dev_run_warns_once_and_does_not_crash(tmp_path):
    trainer = pl.Trainer(fast_dev_run=2, callbacks=[ErrorTermLogger(every_n_steps=1),
                                                    GradientParityCallback(every_n_steps=1)],
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(ManualBackpropModule(), DigitsDataModule(batch_size=8))
    assert sum("no error terms are logged" in str(w.message) for w in caught) == 1
    assert trainer.global_step == 2


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_uses_the_hand_written_backward():
    module = ManualBackpropModule(SigmoidMLP([64, 8, 10]), loss="mse", optimizer=partial(torch.optim.Adam, lr=0.01))
    assert not any(mbp.is_manual(m) for m in module.network.children())  # the network is converted at setup
    module.setup("fit")
    assert all(mbp.is_manual(m) for m in module.network.children())
    x, y = torch.rand(4, 64), torch.tensor([1, 2, 3, 4])
    audit = mbp.audit_backward(module.training_step((x, y), 0))
    assert audit.ok, str(audit)


def test_error_term_logger_needs_tensorboard(tmp_path):
    trainer = _trainer(tmp_path, [ErrorTermLogger()], logger=CSVLogger(tmp_path))
    with pytest.raises(ValueError, match=r"needs a TensorBoardLogger.*CSVLogger"):
        trainer.fit(ManualBackpropModule(), DigitsDataModule())


@pytest.mark.parametrize("every_n_steps", [0, -3, 2.5, True])
def test_callbacks_reject_a_bad_interval(every_n_steps):
    with pytest.raises(ValueError, match=re.escape(f"every_n_steps must be an integer of at least 1, "
                                                   f"got {every_n_steps!r}")):
        ErrorTermLogger(every_n_steps=every_n_steps)
    with pytest.raises(ValueError, match="GradientParityCallback: every_n_steps"):
        GradientParityCallback(every_n_steps=every_n_steps)


@pytest.mark.parametrize("tolerance", [0, -1e-3, float("nan"), float("inf"), "1e-4"])
def test_gradient_parity_rejects_a_bad_tolerance(tolerance):
    with pytest.raises(ValueError, match=r"tolerance must be a positive number, got"):
        GradientParityCallback(tolerance=tolerance)


# -- GradientParityCallback ------------------------------------------------------------------------
class Recorder(pl.Callback):
    """Keeps what the parity callback found at each step."""

    def __init__(self, parity):
        self.parity = parity
        self.found: dict[int, dict[str, float]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.parity.last_differences:
            self.found[trainer.global_step] = dict(self.parity.last_differences)
            self.parity.last_differences = {}


def test_gradient_parity_logs_tiny_differences_per_layer_and_stays_quiet(tmp_path):
    parity = GradientParityCallback(every_n_steps=2)
    recorder = Recorder(parity)
    trainer = _trainer(tmp_path, [parity, recorder], max_steps=5)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="GradientParityCallback")
        trainer.fit(ManualBackpropModule(SigmoidMLP([64, 16, 12, 10])), DigitsDataModule(batch_size=8))
    events = read_events(trainer.logger.log_dir)
    assert sorted(t for t in events.Tags()["scalars"] if t.startswith("parity/")) == [
        "parity/fc1", "parity/fc2", "parity/fc3"]
    for path in ("fc1", "fc2", "fc3"):
        logged = _scalars(events, f"parity/{path}")
        assert sorted(logged) == [0, 2, 4]
        assert all(0 <= v < 1e-5 for v in logged.values())  # float32 rounding, nothing more
        assert [recorder.found[s][path] for s in (0, 2, 4)] == pytest.approx([logged[s] for s in (0, 2, 4)])


def test_a_wrong_gradient_is_caught_and_named(tmp_path):
    class SkewFc2(pl.Callback):  # runs before the parity check: fc2's gradients 1 % off
        def on_after_backward(self, trainer, pl_module):
            for p in pl_module.network.fc2.parameters():
                p.grad.mul_(1.01)

    parity = GradientParityCallback(every_n_steps=1, tolerance=1e-3)
    trainer = _trainer(tmp_path, [SkewFc2(), parity], max_steps=1)
    with pytest.warns(UserWarning, match=r"at step 0, layer 'fc2': the hand-written gradient differs from native "
                                         r"autograd's by 0\.01 .*above the tolerance 0\.001") as caught:
        trainer.fit(ManualBackpropModule(SigmoidMLP([64, 16, 12, 10])), DigitsDataModule(batch_size=8))
    assert sum("GradientParityCallback" in str(w.message) for w in caught) == 1  # fc1 and fc3 are fine
    events = read_events(trainer.logger.log_dir)
    assert _scalars(events, "parity/fc2")[0] == pytest.approx(0.01, rel=1e-3)
    assert _scalars(events, "parity/fc1")[0] < 1e-5


class DropoutBatchNormNet(nn.Sequential):
    def __init__(self):
        super().__init__(OrderedDict(fc1=nn.Linear(64, 32), bn=nn.BatchNorm1d(32), act=nn.ReLU(),
                                     drop=nn.Dropout(0.5), fc2=nn.Linear(32, 10)))


def _fit_dropout_batchnorm(tmp_path, callbacks):
    pl.seed_everything(0)
    module = ManualBackpropModule(DropoutBatchNormNet(), optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    trainer = _trainer(tmp_path, callbacks, max_steps=4)
    trainer.fit(module, DigitsDataModule(batch_size=16))
    return module, trainer


def test_gradient_parity_with_dropout_and_batchnorm_leaves_the_run_as_it_was(tmp_path):
    parity = GradientParityCallback(every_n_steps=1, tolerance=1e-5)
    recorder = Recorder(parity)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="GradientParityCallback")
        checked, _ = _fit_dropout_batchnorm(tmp_path / "checked", [parity, recorder])
    assert sorted(recorder.found) == [0, 1, 2, 3]
    for found in recorder.found.values():  # the twin drew the same dropout masks
        assert set(found) == {"fc1", "bn", "fc2"} and max(found.values()) < 1e-5
    plain, _ = _fit_dropout_batchnorm(tmp_path / "plain", [])
    # the twin's forward moved only its own running statistics and did not shift the random numbers
    for (name, a), b in zip(checked.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert checked.network.bn.num_batches_tracked.item() == 4


def test_gradient_parity_with_gradient_accumulation(tmp_path):
    parity = GradientParityCallback(every_n_steps=1)
    recorder = Recorder(parity)
    trainer = _trainer(tmp_path, [parity, recorder], max_steps=2, accumulate_grad_batches=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="GradientParityCallback")
        trainer.fit(ManualBackpropModule(SigmoidMLP([64, 16, 10])), DigitsDataModule(batch_size=8))
    assert sorted(recorder.found) == [0, 1] and max(recorder.found[1].values()) < 1e-5


def test_gradient_parity_needs_automatic_optimization(tmp_path):
    class Manual(ManualBackpropModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

    trainer = _trainer(tmp_path, [GradientParityCallback()], max_steps=1)
    with pytest.raises(ValueError, match="GradientParityCallback needs automatic optimization"):
        trainer.fit(Manual(), DigitsDataModule(batch_size=8))


# -- DDP -------------------------------------------------------------------------------------------
DDP_SCRIPT = '''
import sys

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Subset, TensorDataset

from lightning_modules import ErrorTermLogger, GradientParityCallback, ManualBackpropModule, SigmoidMLP

root, devices, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
poison = sys.argv[4:] == ["poison"]  # a NaN in rank 1's batch at step 1, and check_finite on
torch.set_num_threads(1)
digits = load_digits()
data = TensorDataset(torch.tensor(digits.data[:96], dtype=torch.float32) / 16, torch.tensor(digits.target[:96]))


class Shards(pl.LightningDataModule):
    """Rank r of w trains on samples r, r + w, ...: step s's global batch is the same for every w."""

    def train_dataloader(self):
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(Subset(data, range(rank, len(data), world)), batch_size=batch_size)


class Poison(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if poison and trainer.global_rank == 1 and trainer.global_step == 1:
            batch[0][0, 0] = float("nan")


pl.seed_everything(0)
module = ManualBackpropModule(SigmoidMLP([64, 16, 12, 10]))
trainer = pl.Trainer(
    max_steps=3, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
    logger=TensorBoardLogger(root, name="run", version=0), use_distributed_sampler=False,
    callbacks=[Poison(), ErrorTermLogger(every_n_steps=1, check_finite=poison),
               GradientParityCallback(every_n_steps=1, tolerance=1e-5)],
    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
)
trainer.fit(module, Shards())
if trainer.is_global_zero:
    torch.save(module.state_dict(), root + "/final.pt")
'''


@pytest.mark.slow
def test_under_ddp_rank_zero_logs_the_error_terms_of_the_global_loss(tmp_path):
    """Two gloo processes with 8 samples each log what one process logs for the same 16 samples.

    Every scalar (δ RMS, mean and max |δ|, zero share, ratio, update ratios) and every histogram's
    count, sum of squares and buckets agree at every step; parity holds on both ranks; the models end
    equal. One process is the reference, not a formula, so the 1/world_size of DDP's mean is checked.
    """
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    runs = {}
    for name, devices, batch_size in [("single", 1, 16), ("ddp", 2, 8)]:
        done = subprocess.run([sys.executable, str(script), str(tmp_path / name), str(devices), str(batch_size)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "GradientParityCallback" not in done.stderr
        runs[name] = read_events(tmp_path / name / "run" / "version_0")
    single, ddp = runs["single"], runs["ddp"]
    compared = [t for t in single.Tags()["scalars"] if t.startswith(("error_terms", "update_ratio"))]
    assert len(compared) == 4 * 3 + 2 + 6 and sorted(compared) == sorted(
        t for t in ddp.Tags()["scalars"] if t.startswith(("error_terms", "update_ratio")))
    for tag in compared:
        one, two = _scalars(single, tag), _scalars(ddp, tag)
        assert sorted(one) == sorted(two) == [0, 1, 2]
        assert [two[s] for s in range(3)] == pytest.approx([one[s] for s in range(3)], rel=1e-5), tag
    for tag in single.Tags()["histograms"]:
        for a, b in zip(single.Histograms(tag), ddp.Histograms(tag), strict=True):
            a, b = a.histogram_value, b.histogram_value
            assert a.num == b.num == 16 * dict(LAYERS)[tag.split("/")[1]]
            assert b.sum_squares == pytest.approx(a.sum_squares, rel=1e-5)
            assert sum(abs(x - y) for x, y in zip(a.bucket, b.bucket, strict=True)) <= 2
    for tag in ("parity/fc1", "parity/fc2", "parity/fc3"):
        assert max(_scalars(ddp, tag).values()) < 1e-5
    one, two = torch.load(tmp_path / "single" / "final.pt"), torch.load(tmp_path / "ddp" / "final.pt")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_under_ddp_a_non_finite_error_term_on_one_rank_stops_every_rank(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "ddp"), "2", "8", "poison"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    # both ranks raise rank 1's error (rank 0's data was finite): none is left waiting for the other
    assert done.stderr.count("NonFiniteError: rank 1: step 1: layer 'fc1' (Linear) is the first recorded layer whose "
                             "output is non-finite in the forward") == 2, done.stderr[-3000:]


# -- the module and the data -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"loss": "hinge"}, r"unknown loss 'hinge'; choose one of \['bce', 'bce_with_logits', 'cross_entropy', 'huber', "
                         r"'l1', 'mse', 'nll', 'smooth_l1'\] or pass a loss module"),
     ({"optimizer": "lbfgsx"}, r"unknown optimizer 'lbfgsx'; choose one of \['adadelta', .*'sgd', 'sparseadam'\]"),
     ({"task": "ranking"}, r"unknown task 'ranking'; choose one of \['classification', 'regression'\]"),
     ({"num_classes": 1}, r"num_classes must be at least 2, got 1")],
)
def test_unknown_names_list_the_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ManualBackpropModule(**kwargs)
