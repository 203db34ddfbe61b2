"""Lightning's training machinery around manual backprop: every piece works as it does with native autograd.

The reference is always a real run, not a formula: the same run with ``manual=False`` (the same
network trained by native autograd), or one process on the global batches that two DDP processes
share. Sections:

- gradient accumulation, gradient clipping (norm and value) and LR schedulers (StepLR,
  ReduceLROnPlateau): the same weights as native autograd, in float64 to 1e-12, in float32 to 1e-6;
- every loss name trains, and equals native; the metrics (``val_acc``, ``val_mae``) equal the
  ones computed by hand; ``predict_step`` returns class ids;
- checkpoints: ``torch.load(weights_only=True)``, manual → native and native → manual (resuming
  training), ``load_from_checkpoint`` of a CLI checkpoint with no arguments, a different
  architecture named key by key;
- bad input: unknown names list the valid choices; an output width that is not the number of classes;
- slow: a 2-process DDP run of the command line against one process; bf16-mixed, and float16 with
  a GradScaler, against fp32.

The CUDA runs (``16-mixed``, ``bf16-mixed``) are in tests/test_cuda.py.
"""

import csv
import itertools
import math
import os
import subprocess
import sys
from collections import OrderedDict
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader

import manual_backprop as mbp
from lightning_modules import (
    LOSSES,
    MLP,
    DigitsDataModule,
    ManualBackpropModule,
    SigmoidMLP,
    TabularDataModule,
    XORDataModule,
)
from lightning_modules.cli import main
from manual_backprop.audit import backward_graph

#: how close a manual run ends to the native run, by precision: rounding in a different order, nothing more
TOLERANCE = {"64-true": 1e-12, "32-true": 1e-6}


def _trainer(max_steps: int = 4, callbacks=(), **kwargs) -> pl.Trainer:
    """A quiet Trainer: no logger, no checkpoints, no validation unless asked for."""
    quiet = {"logger": False, "enable_checkpointing": False, "limit_val_batches": 0, "num_sanity_val_steps": 0,
             "enable_progress_bar": False, "enable_model_summary": False, **kwargs}
    return pl.Trainer(max_steps=max_steps, callbacks=list(callbacks), **quiet)


def _weights(module: ManualBackpropModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.network.named_parameters()}


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[name].double() - b[name].double()).abs().max().item() for name in a)


#: the one native node in a manual run's backward graph: Lightning divides the training step's loss by
#: accumulate_grad_batches (by 1 without accumulation) before backward, outside the network and the loss
LIGHTNING_LOSS_SCALING = {"DivBackward0 (native)"}


class BackwardSpy(pl.Callback):
    """The native nodes of every training step's backward graph, read from the loss Lightning backpropagates."""

    def __init__(self):
        self.native_nodes: list[set[str]] = []

    def on_before_backward(self, trainer, pl_module, loss):
        self.native_nodes.append({name for name in backward_graph(loss) if name.endswith("(native)")})


class GradientSpy(pl.Callback):
    """Each optimizer step's gradient norm and largest |∂C/∂w| before clipping (Lightning clips after this hook)."""

    def __init__(self):
        self.norms: list[float] = []
        self.largest: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = torch.cat([p.grad.flatten() for p in pl_module.parameters()])
        self.norms.append(grads.norm().item())
        self.largest.append(grads.abs().max().item())


class LearningRates(pl.Callback):
    """The learning rate of every training batch."""

    def __init__(self):
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def _fit_twins(make_module, make_data, callbacks=(), **trainer_kwargs):
    """The same seeded fit with manual backprop and with native autograd: (module, callbacks, trainer) of each."""
    runs = {}
    for manual in (True, False):
        pl.seed_everything(0)
        module = make_module(manual)
        spies = [make() for make in callbacks]
        trainer = _trainer(callbacks=spies, **trainer_kwargs)
        trainer.fit(module, make_data())
        runs[manual] = module, spies, trainer
    return runs[True], runs[False]


# -- gradient accumulation, clipping, schedulers: as with native autograd --------------------------
ACCUMULATION_AND_CLIPPING = {
    "accumulate_3": {"accumulate_grad_batches": 3},
    "clip_norm": {"gradient_clip_val": 0.1, "gradient_clip_algorithm": "norm"},
    "clip_value": {"gradient_clip_val": 0.01, "gradient_clip_algorithm": "value"},
    "accumulate_2_clip_norm": {"accumulate_grad_batches": 2, "gradient_clip_val": 0.1},
    "accumulate_2_clip_value": {"accumulate_grad_batches": 2, "gradient_clip_val": 0.01,
                                "gradient_clip_algorithm": "value"},
}


@pytest.mark.parametrize("precision", list(TOLERANCE))
@pytest.mark.parametrize("options", list(ACCUMULATION_AND_CLIPPING.values()), ids=list(ACCUMULATION_AND_CLIPPING))
def test_accumulation_and_clipping_end_with_the_weights_of_native_autograd(options, precision):
    """6 optimizer steps (18 batches with k = 3): the clipped or accumulated gradient is the native one.

    The gradients before clipping exceed the limit at every step, so the clipping changes every
    update; the manual run's backward graphs hold no native node but Lightning's 1/k.
    """
    (manual, (m_backward, m_grads), _), (native, (n_backward, n_grads), _) = _fit_twins(
        lambda manual: ManualBackpropModule(SigmoidMLP([64, 16, 10]), manual=manual),
        partial(DigitsDataModule, batch_size=8), callbacks=[BackwardSpy, GradientSpy], max_steps=6,
        precision=precision, **options)
    assert _max_difference(_weights(manual), _weights(native)) < TOLERANCE[precision]
    assert m_grads.norms == pytest.approx(n_grads.norms, rel=1e-5)
    k = options.get("accumulate_grad_batches", 1)
    assert len(m_backward.native_nodes) == 6 * k
    assert all(nodes == LIGHTNING_LOSS_SCALING for nodes in m_backward.native_nodes)
    assert all("AddmmBackward0 (native)" in nodes for nodes in n_backward.native_nodes)  # the baseline is native
    limit = options.get("gradient_clip_val")
    if limit is not None:
        measured = m_grads.norms if options.get("gradient_clip_algorithm", "norm") == "norm" else m_grads.largest
        assert min(measured) > limit


@settings(max_examples=5, deadline=None)
@given(k=st.integers(1, 4), batch_size=st.integers(2, 12), clip=st.sampled_from([None, "norm", "value"]),
       limit=st.floats(1e-3, 0.5), width=st.integers(1, 12))
def test_any_accumulation_and_clipping_match_native_autograd(k, batch_size, clip, limit, width):
    """Hypothesis varies k, the batch size, the hidden width and the clipping: float64 weights agree to 1e-12."""
    options = {"accumulate_grad_batches": k}
    if clip is not None:
        options |= {"gradient_clip_val": limit, "gradient_clip_algorithm": clip}
    (manual, _, _), (native, _, _) = _fit_twins(
        lambda manual: ManualBackpropModule(SigmoidMLP([64, width, 10]), manual=manual),
        partial(DigitsDataModule, batch_size=batch_size), max_steps=3, precision="64-true", **options)
    assert _max_difference(_weights(manual), _weights(native)) < TOLERANCE["64-true"]


SCHEDULERS = {
    "StepLR": (partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5), [0.5, 0.25, 0.125, 0.0625]),
    # val_loss must fall by 30 % a round or the rate halves: it falls fast at first, then does not
    "ReduceLROnPlateau": (partial(torch.optim.lr_scheduler.ReduceLROnPlateau, factor=0.5, patience=0, threshold=0.3),
                          None),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_lr_schedulers_step_the_same_way_as_with_native_autograd(name):
    """Four epochs of 3 batches: the rate of every batch and the final weights equal the native run's."""
    make_scheduler, expected_rates = SCHEDULERS[name]
    (manual, (m_rates,), _), (native, (n_rates,), _) = _fit_twins(
        lambda manual: ManualBackpropModule(SigmoidMLP([64, 16, 10]), lr_scheduler=make_scheduler, manual=manual),
        partial(DigitsDataModule, batch_size=16), callbacks=[LearningRates], max_steps=-1, max_epochs=4,
        limit_train_batches=3, limit_val_batches=2, precision="64-true")
    assert m_rates.rates == n_rates.rates
    per_epoch = m_rates.rates[::3]
    assert m_rates.rates == [rate for rate in per_epoch for _ in range(3)]
    if expected_rates is not None:
        assert per_epoch == expected_rates
    else:  # the plateau scheduler reduced the rate at least once, and not at every epoch
        assert per_epoch[0] == 0.5 and 1 <= sum(b < a for a, b in itertools.pairwise(per_epoch)) < 3
    assert _max_difference(_weights(manual), _weights(native)) < TOLERANCE["64-true"]


# -- the module: every loss, the metrics, predictions ----------------------------------------------
def _nll_network() -> nn.Module:
    return nn.Sequential(OrderedDict(fc1=nn.Linear(64, 16), sigmoid1=nn.Sigmoid(), fc2=nn.Linear(16, 10),
                                     log_softmax=nn.LogSoftmax(dim=1)))


DIGITS = partial(DigitsDataModule, batch_size=16)
XOR = partial(XORDataModule, copies=8, batch_size=8)
#: loss name → (network, data): class ids for cross_entropy and nll, one-hot rows for the losses on the
#: outputs, a column for the binary losses on a one-output network
LOSS_SETUPS = {
    "cross_entropy": (lambda: SigmoidMLP([64, 16, 10]), DIGITS),
    "nll": (_nll_network, DIGITS),
    "mse": (lambda: MLP([64, 16, 10], output_activation="sigmoid"), DIGITS),
    "l1": (lambda: MLP([64, 16, 10], output_activation="sigmoid"), DIGITS),
    "smooth_l1": (lambda: SigmoidMLP([64, 16, 10]), DIGITS),
    "huber": (lambda: SigmoidMLP([64, 16, 10]), DIGITS),
    "bce": (lambda: MLP([2, 8, 1], activation="tanh", output_activation="sigmoid"), XOR),
    "bce_with_logits": (lambda: MLP([2, 8, 1], activation="tanh"), XOR),
}


def test_every_loss_name_has_a_setup_here():
    assert sorted(LOSS_SETUPS) == sorted(LOSSES)


@pytest.mark.parametrize("loss", list(LOSS_SETUPS))
def test_every_loss_trains_with_the_hand_written_backward_and_equals_native(loss):
    make_network, make_data = LOSS_SETUPS[loss]
    pl.seed_everything(0)
    initial = _weights(ManualBackpropModule(make_network()))
    (manual, (m_backward,), m_trainer), (native, _, _) = _fit_twins(
        lambda manual: ManualBackpropModule(make_network(), loss=loss, manual=manual), make_data,
        callbacks=[BackwardSpy], max_steps=3, precision="64-true", limit_val_batches=1.0)
    assert mbp.is_manual(manual.loss_fn) and not mbp.is_manual(native.loss_fn)
    assert m_backward.native_nodes == [LIGHTNING_LOSS_SCALING] * 3  # the network's and the loss's hand-written
    assert math.isfinite(m_trainer.callback_metrics["train_loss"])
    (results,) = m_trainer.validate(manual, m_trainer.datamodule, verbose=False)
    assert math.isfinite(results["val_loss"]) and 0 <= results["val_acc"] <= 1
    assert _max_difference(_weights(manual), initial) > 1e-4  # it trained
    assert _max_difference(_weights(manual), _weights(native)) < TOLERANCE["64-true"]


def test_val_acc_is_the_share_of_validation_digits_classified_right():
    pl.seed_everything(0)
    module, data = ManualBackpropModule(SigmoidMLP([64, 16, 10])), DigitsDataModule(batch_size=32)
    trainer = _trainer(max_steps=20, limit_val_batches=1.0)
    trainer.fit(module, data)
    (results,) = trainer.validate(module, data, verbose=False)
    x, y = (torch.stack(column) for column in zip(*data.val_set, strict=True))
    with torch.no_grad():
        by_hand = (module(x).argmax(dim=1) == y).double().mean().item()
    assert 0.3 < by_hand < 1  # learning, with some left wrong: a real test of the count
    assert results["val_acc"] == pytest.approx(by_hand, abs=1e-6)
    predicted = torch.cat(trainer.predict(module, DataLoader(data.val_set, batch_size=100)))
    assert predicted.dtype == torch.int64 and predicted.shape == y.shape
    with torch.no_grad():
        assert torch.equal(predicted, module(x).argmax(dim=1))


def test_predict_step_of_a_one_output_network_thresholds_the_logit_at_zero():
    pl.seed_everything(0)
    module = ManualBackpropModule(MLP([2, 8, 1], activation="tanh"), loss="bce_with_logits")
    data = XORDataModule(copies=8, batch_size=8)
    trainer = _trainer(max_steps=5)
    trainer.fit(module, data)
    points = XORDataModule.points
    predicted = torch.cat(trainer.predict(module, DataLoader(points, batch_size=4)))
    with torch.no_grad():
        logits = module(points).squeeze(1)
    assert torch.equal(predicted, (logits > 0).long())


def _regression_csv(path: Path, rows: int = 80) -> Path:
    """y = 2·x1 − x2 + 0.5·x3 + noise."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 3, generator=generator)
    y = x @ torch.tensor([2.0, -1.0, 0.5]) + 0.1 * torch.randn(rows, generator=generator)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["x1", "x2", "x3", "y"])
        writer.writerows([*map(float, features), float(target)] for features, target in zip(x, y, strict=True))
    return path


def test_regression_logs_val_mae_the_mean_absolute_error_by_hand(tmp_path):
    data = TabularDataModule(_regression_csv(tmp_path / "table.csv"), target="y", task="regression", batch_size=16)
    pl.seed_everything(0)
    module = ManualBackpropModule(MLP([3, 8, 1], activation="tanh"), loss="mse",
                                  optimizer=partial(torch.optim.SGD, lr=0.05))
    trainer = _trainer(max_steps=8, limit_val_batches=1.0)
    trainer.fit(module, data)
    assert module.task == "regression"  # from the datamodule
    (results,) = trainer.validate(module, data, verbose=False)
    assert "val_acc" not in results
    x, y = data.val_set.tensors
    with torch.no_grad():
        by_hand = (module(x).squeeze(1) - y).abs().mean().item()
    assert results["val_mae"] == pytest.approx(by_hand, rel=1e-6)
    predicted = torch.cat(trainer.predict(module, DataLoader(x, batch_size=8)))
    with torch.no_grad():
        assert torch.equal(predicted, module(x))  # regression predicts the outputs themselves


# -- checkpoints ------------------------------------------------------------------------------------
def _fit_with_checkpoints(root: Path, module: ManualBackpropModule, max_steps: int, ckpt_path=None,
                          spies=()) -> pl.Trainer:
    """A fit that writes a checkpoint every 2 steps into ``root``."""
    checkpoints = ModelCheckpoint(dirpath=root, every_n_train_steps=2, save_top_k=-1)
    trainer = _trainer(max_steps=max_steps, callbacks=[checkpoints, *spies], enable_checkpointing=True)
    trainer.fit(module, DigitsDataModule(batch_size=16), ckpt_path=ckpt_path)
    return trainer


def _checkpoint(root: Path, step: int) -> Path:
    (path,) = root.glob(f"*-step={step}.ckpt")
    return path


@pytest.fixture(scope="module")
def manual_checkpoint(tmp_path_factory) -> tuple[Path, ManualBackpropModule]:
    """A manual run of SigmoidMLP([64, 16, 10]), 4 steps, its checkpoints at steps 2 and 4."""
    root = tmp_path_factory.mktemp("manual_checkpoints")
    pl.seed_everything(0)
    module = ManualBackpropModule(SigmoidMLP([64, 16, 10]))
    _fit_with_checkpoints(root, module, 4)
    return _checkpoint(root, 4), module


def test_a_manual_checkpoint_loads_with_weights_only(manual_checkpoint):
    path, module = manual_checkpoint
    state = torch.load(path, weights_only=True)
    assert list(state["state_dict"]) == ["network.fc1.weight", "network.fc1.bias", "network.fc2.weight",
                                         "network.fc2.bias"]
    for name, p in module.named_parameters():
        assert torch.equal(state["state_dict"][name], p.detach()), name
    assert state["global_step"] == 4 and state["optimizer_states"][0]["state"]  # SGD's momentum buffers
    # the network instance is not among the hyper-parameters: only plain values, which weights_only allows
    assert state["hyper_parameters"]["manual"] is True and state["hyper_parameters"]["loss"] is None
    assert all(isinstance(value, str | int | float | bool | None) for value in state["hyper_parameters"].values())


def test_a_manual_checkpoint_loads_into_a_native_module_and_a_plain_network(manual_checkpoint):
    path, trained = manual_checkpoint
    native = ManualBackpropModule.load_from_checkpoint(path, network=SigmoidMLP([64, 16, 10]), manual=False,
                                                       weights_only=True)
    native.setup("predict")
    assert not native.manual and not any(mbp.is_manual(m) for m in native.network.modules())
    state = torch.load(path, weights_only=True)["state_dict"]
    plain = SigmoidMLP([64, 16, 10])
    plain.load_state_dict({name.removeprefix("network."): value for name, value in state.items()})
    x = torch.rand(20, 64)
    with torch.no_grad():
        expected = trained(x)
        assert torch.equal(native(x), expected)
        assert torch.equal(plain(x), expected)


def test_a_native_checkpoint_resumes_training_with_manual_backprop(tmp_path):
    """Native to step 2, manual from its checkpoint to step 4: the weights of native straight to step 4.

    The checkpoint carries the optimizer (SGD's momentum) and the place in the data; the resumed run
    is manual throughout.
    """
    pl.seed_everything(0)
    straight = ManualBackpropModule(SigmoidMLP([64, 16, 10]), manual=False)
    _fit_with_checkpoints(tmp_path / "native", straight, 4)
    resumed, spy = ManualBackpropModule(SigmoidMLP([64, 16, 10])), BackwardSpy()
    trainer = _fit_with_checkpoints(tmp_path / "resumed", resumed, 4, ckpt_path=_checkpoint(tmp_path / "native", 2),
                                    spies=[spy])
    assert trainer.global_step == 4 and spy.native_nodes == [LIGHTNING_LOSS_SCALING] * 2  # two steps, manual
    assert all(mbp.is_manual(m) for m in resumed.network.children())
    assert _max_difference(_weights(resumed), _weights(straight)) < TOLERANCE["32-true"]
    # and back: the resumed manual run's checkpoint is the native run's, key for key
    manual_state = torch.load(_checkpoint(tmp_path / "resumed", 4), weights_only=True)["state_dict"]
    native_state = torch.load(_checkpoint(tmp_path / "native", 4), weights_only=True)["state_dict"]
    assert list(manual_state) == list(native_state)


CLI_RUN = ["--trainer.max_steps=3", "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=1",
           "--error_terms.every_n_steps=1", "--gradient_parity.every_n_steps=1",
           "--model.network.sizes=[64, 12, 10]", "--model.optimizer=Adam", "--model.optimizer.lr=0.01",
           "--model.lr_scheduler=StepLR", "--model.lr_scheduler.step_size=3", "--model.lr_scheduler.gamma=0.5"]


@pytest.fixture(scope="module")
def cli_checkpoint(tmp_path_factory) -> Path:
    """The checkpoint of a 3-step ``manual-backprop fit`` of SigmoidMLP([64, 12, 10]) with Adam and StepLR."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        main(["fit", *CLI_RUN])
    (path,) = (root / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")
    return path


@pytest.mark.parametrize("weights_only", [None, True])
def test_a_cli_checkpoint_loads_with_no_arguments(cli_checkpoint, weights_only):
    """The CLI saves its config as the hyper-parameters: network, optimizer and scheduler are rebuilt from it."""
    state = torch.load(cli_checkpoint, weights_only=True)
    module = ManualBackpropModule.load_from_checkpoint(cli_checkpoint, weights_only=weights_only)
    assert isinstance(module.network, SigmoidMLP) and module.network.fc1.out_features == 12
    for name, p in module.named_parameters():
        assert torch.equal(p.detach(), state["state_dict"][name]), name
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert type(optimizer) is torch.optim.Adam and optimizer.param_groups[0]["lr"] == 0.01
    assert type(scheduler) is torch.optim.lr_scheduler.StepLR and (scheduler.step_size, scheduler.gamma) == (3, 0.5)
    assert module.manual and module.strict
    # and it trains on from the checkpoint, the optimizer's state restored into the rebuilt Adam
    trainer = _trainer(max_steps=5)
    trainer.fit(module, DigitsDataModule(), ckpt_path=cli_checkpoint)
    assert trainer.global_step == 5 and trainer.optimizers[0].state_dict()["state"][0]["step"] == 5


def _other_names() -> nn.Module:
    return nn.Sequential(OrderedDict(hidden=nn.Linear(64, 16), act=nn.Sigmoid(), out=nn.Linear(16, 10)))


ARCHITECTURE_MISMATCHES = {
    "other sizes": (lambda: SigmoidMLP([64, 12, 10]), [
        "size mismatch for network.fc1.weight: copying a param with shape torch.Size([16, 64]) from checkpoint, "
        "the shape in current model is torch.Size([12, 64])",
        "size mismatch for network.fc1.bias: copying a param with shape torch.Size([16]) from checkpoint, "
        "the shape in current model is torch.Size([12])",
        "size mismatch for network.fc2.weight: copying a param with shape torch.Size([10, 16]) from checkpoint, "
        "the shape in current model is torch.Size([10, 12])"]),
    "other names": (_other_names, [
        'Missing key(s) in state_dict: "network.hidden.weight", "network.hidden.bias", "network.out.weight", '
        '"network.out.bias"',
        'Unexpected key(s) in state_dict: "network.fc1.weight", "network.fc1.bias", "network.fc2.weight", '
        '"network.fc2.bias"']),
}


@pytest.mark.parametrize("how", ["load_from_checkpoint", "fit ckpt_path"])
@pytest.mark.parametrize("mismatch", list(ARCHITECTURE_MISMATCHES))
def test_a_checkpoint_of_another_architecture_names_the_mismatching_keys(manual_checkpoint, mismatch, how):
    path, _ = manual_checkpoint
    make_network, lines = ARCHITECTURE_MISMATCHES[mismatch]
    with pytest.raises(RuntimeError, match="Error\\(s\\) in loading state_dict for ManualBackpropModule") as raised:
        if how == "load_from_checkpoint":
            ManualBackpropModule.load_from_checkpoint(path, network=make_network())
        else:
            _trainer(max_steps=6).fit(ManualBackpropModule(make_network()), DigitsDataModule(), ckpt_path=path)
    for line in lines:
        assert line in str(raised.value)


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "names"),
    [({"loss": "hinge"}, ["'hinge'", "'cross_entropy'", "'nll'", "'mse'", "'bce_with_logits'", "'huber'"]),
     ({"optimizer": "nope"}, ["'nope'", "'sgd'", "'adam'", "'adamw'", "'rmsprop'", "functools.partial"])],
)
def test_an_unknown_loss_or_optimizer_name_lists_the_choices(kwargs, names):
    with pytest.raises(ValueError, match="unknown") as raised:
        ManualBackpropModule(**kwargs)
    assert all(name in str(raised.value) for name in names), str(raised.value)


CLI_BAD_NAMES = {
    "model class path": (["--model.network=mypackage.NoSuchNet"],
                         ["mypackage.NoSuchNet", "lightning_modules.SigmoidMLP", "lightning_modules.MLP",
                          "torch.nn.Module"]),
    "model class in the project": (["--model.network=lightning_modules.SigmoidMLPP"],
                                   ["lightning_modules.SigmoidMLP", "lightning_modules.MLP"]),
    "loss": (["--model.loss=hinge"], ["hinge", "cross_entropy", "nll", "mse", "bce_with_logits"]),
    "optimizer": (["--model.optimizer=Nope"], ["Nope", "SGD", "Adam", "AdamW", "RMSprop", "LBFGS"]),
    "lr_scheduler": (["--model.lr_scheduler=Nope"], ["Nope", "StepLR", "ReduceLROnPlateau", "CosineAnnealingLR",
                                                     "OneCycleLR"]),
    "data class path": (["--data=Nope"], ["Nope", "lightning_modules.DigitsDataModule",
                                          "lightning_modules.XORDataModule", "lightning_modules.TwoSpiralsDataModule",
                                          "lightning_modules.TabularDataModule"]),
}


@pytest.mark.parametrize("what", list(CLI_BAD_NAMES))
def test_an_unknown_name_on_the_command_line_lists_the_valid_choices(what, capsys):
    flags, names = CLI_BAD_NAMES[what]
    with pytest.raises(SystemExit) as done:
        main(["fit", *flags])
    assert done.value.code != 0
    err = capsys.readouterr().err
    assert "Valid choices for --" in err
    assert [name for name in names if name not in err] == [], err[-2000:]


def test_an_output_width_other_than_the_number_of_classes_names_both():
    trainer = _trainer(max_steps=1)
    with pytest.raises(ValueError, match=r"the network's output has 5 columns \(shape \(16, 5\)\) but the data has "
                                         r"10 classes: make the last layer 10 wide"):
        trainer.fit(ManualBackpropModule(SigmoidMLP([64, 16, 5])), DigitsDataModule(batch_size=16))
    assert trainer.global_step == 0


# -- distributed data parallel (slow: two gloo processes) -------------------------------------------
DDP_STEPS = 5
DDP_FLAGS = [f"--trainer.max_steps={DDP_STEPS}", "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=2"]


@pytest.mark.slow
def test_cli_ddp_on_two_processes_ends_with_the_weights_of_one_process_on_the_global_batches(tmp_path, monkeypatch):
    """``manual-backprop fit --trainer.strategy=ddp --trainer.devices=2 --trainer.accelerator=cpu``, as a user runs it.

    Two gloo processes with 8 digits each per step against one process with 16: the DataModule's
    epoch-seeded sampler hands rank r positions r, r + 2, ... of the epoch's shuffled order, so step
    s's two batches together are the single run's batch s. After 5 steps the weights agree within
    1e-6 (rounding: the mean over 16 is summed in another order). Rank 0 alone prints the accuracy.
    """
    script = Path(sys.executable).parent / "manual-backprop"
    ddp = subprocess.run(
        [str(script), "fit", *DDP_FLAGS, "--data.batch_size=8", "--trainer.strategy=ddp", "--trainer.devices=2",
         "--trainer.accelerator=cpu", "--trainer.default_root_dir=ddp"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("validation accuracy:") == 1, ddp.stdout
    assert "Starting with 2 processes" in ddp.stderr and "distributed_backend=gloo" in ddp.stderr
    monkeypatch.chdir(tmp_path)
    main(["fit", *DDP_FLAGS, "--data.batch_size=16", "--trainer.default_root_dir=single"])

    def final_weights(run: str) -> dict[str, torch.Tensor]:
        (path,) = (tmp_path / run / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")
        state = torch.load(path, weights_only=True)
        assert state["global_step"] == DDP_STEPS
        return state["state_dict"]

    two, one = final_weights("ddp"), final_weights("single")
    pl.seed_everything(0)  # what the CLI does before it builds the network: the weights both runs started from
    initial = {f"network.{name}": p.detach() for name, p in SigmoidMLP().named_parameters()}
    difference = _max_difference(two, one)
    print(f"\nDDP (2 × 8) vs one process (16), {DDP_STEPS} steps: largest weight difference {difference:.3g}")
    assert difference < 1e-6
    assert _max_difference(one, initial) > 1e-3  # they trained: the agreement is not that of untouched weights


# -- mixed precision (slow: 3 epochs of the digits, three times) -------------------------------------
class PrecisionSpy(BackwardSpy):
    """Also the dtypes of the network's output: what autocast made of the forward."""

    def __init__(self):
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def on_fit_start(self, trainer, pl_module):
        pl_module.network.register_forward_hook(lambda module, inputs, output: self.dtypes.add(output.dtype))


#: precision → (Trainer settings, the network output's dtype, the native nodes of each backward graph).
#: On CPU Lightning runs ``precision="16-mixed"`` as bf16 without a scaler, so float16 with a GradScaler
#: (what 16-mixed is on CUDA) is asked for with the plugin; the scaler's C·s is one more native node.
MIXED_PRECISION = {
    "32-true": ({"precision": "32-true"}, torch.float32, LIGHTNING_LOSS_SCALING),
    "bf16-mixed": ({"precision": "bf16-mixed"}, torch.bfloat16, LIGHTNING_LOSS_SCALING),
    "16-mixed with GradScaler": ({"plugins": [MixedPrecision("16-mixed", "cpu")]}, torch.float16,
                                 LIGHTNING_LOSS_SCALING | {"MulBackward0 (native)"}),
}


@pytest.mark.slow
def test_mixed_precision_on_cpu_learns_the_digits_like_fp32():
    """The default network, 3 epochs (135 steps) at each precision, same seed: within 2 points of fp32, over 85 %.

    autocast ran (the network's output has the low-precision dtype) and every backward graph is
    hand-written but for Lightning's scaling of the loss (the casts are hand-written Functions too).
    """
    accuracy = {}
    for name, (options, dtype, native_nodes) in MIXED_PRECISION.items():
        pl.seed_everything(0)
        module, data, spy = ManualBackpropModule(), DigitsDataModule(), PrecisionSpy()
        trainer = _trainer(max_steps=-1, max_epochs=3, callbacks=[spy], limit_val_batches=1.0, **options)
        trainer.fit(module, data)
        (results,) = trainer.validate(module, data, verbose=False)
        accuracy[name] = results["val_acc"]
        assert spy.dtypes == {dtype}, name
        assert spy.native_nodes == [native_nodes] * (3 * 45), name
    print("\ndigits, 3 epochs: " + ", ".join(f"{name} {value:.1%}" for name, value in accuracy.items()))
    for name, value in accuracy.items():
        assert value > 0.85 and abs(value - accuracy["32-true"]) <= 0.02, name


def test_a_training_step_under_bf16_autocast_is_hand_written_through_and_through():
    module = ManualBackpropModule()
    module.setup("fit")
    x, y = torch.rand(8, 64), torch.randint(0, 10, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module(x).dtype == torch.bfloat16
        loss = module.loss_fn(module(x), y)
    audit = mbp.audit_backward(loss)
    assert audit.ok, str(audit)
    assert all(p.grad.dtype == torch.float32 for p in module.parameters())


def test_the_default_loss_follows_the_task_and_a_class_index_loss_on_regression_is_refused():
    """Unset, the loss is cross-entropy for classification and mse for regression; cross-entropy or
    NLL on a regression task would read float targets as class probabilities: refused at setup."""
    classify, regress = ManualBackpropModule(MLP([4, 8, 3])), ManualBackpropModule(MLP([4, 8, 1]), task="regression")
    classify.setup("fit")
    regress.setup("fit")
    assert isinstance(classify.loss_fn, nn.CrossEntropyLoss) and isinstance(regress.loss_fn, nn.MSELoss)
    for loss in ("cross_entropy", "nll"):
        with pytest.raises(ValueError, match=r"the task is regression but the loss .* takes class ids; choose a "
                                             r"regression loss \(bce, bce_with_logits, huber, l1, mse, smooth_l1\)"):
            ManualBackpropModule(MLP([4, 8, 2]), loss=loss, task="regression").setup("fit")
