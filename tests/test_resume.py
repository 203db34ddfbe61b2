"""Resuming a fit from a checkpoint trains exactly what the uninterrupted fit trains.

One uninterrupted run of 100 steps on the digits (batch size 32: 45 steps per epoch, so it crosses
two epoch boundaries and epoch-seeded shuffling matters) checkpoints every 5 steps. Runs resumed
from its step-45 checkpoint (an epoch's end) and its step-50 checkpoint (5 batches into epoch 1)
train as many steps again. They end with the very same weights (``torch.equal``) as the straight
run at step 90 and 100, and log the very same error terms (scalars and histograms) at every step
after the checkpoint, read back from the event files with TensorBoard's reader.
"""

import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_modules import DigitsDataModule, ErrorTermLogger, ManualBackpropModule, SigmoidMLP

from tb import read_events

STEPS_PER_EPOCH = 45  # ⌈1,438 training digits / 32⌉
EVERY = 5  # checkpoint interval of the straight run
STRAIGHT = 100


def _fit(root: Path, name: str, max_steps: int, ckpt_path: str | None = None) -> tuple[pl.Trainer, pl.LightningModule]:
    pl.seed_everything(0)
    module = ManualBackpropModule(SigmoidMLP([64, 16, 10]))
    trainer = pl.Trainer(
        max_steps=max_steps,
        logger=TensorBoardLogger(root, name=name, version=0),
        callbacks=[ErrorTermLogger(every_n_steps=1),
                   ModelCheckpoint(dirpath=root / name / "checkpoints", every_n_train_steps=EVERY, save_top_k=-1)],
        log_every_n_steps=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return trainer, module


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    trainer, module = _fit(root, "straight", STRAIGHT)
    assert trainer.global_step == STRAIGHT
    return root, {name: p.detach().clone() for name, p in module.network.named_parameters()}


def _checkpoint(root: Path, step: int) -> Path:
    (path,) = (root / "straight" / "checkpoints").glob(f"*-step={step}.ckpt")
    return path


def _error_terms(events, first_step: int) -> dict:
    """Every error-term scalar and histogram from ``first_step`` on, by (tag, step)."""
    tags = events.Tags()
    logged = {(tag, s.step): s.value for tag in tags["scalars"] if tag.startswith(("error_terms", "update_ratio",
                                                                                   "train_loss"))
              for s in events.Scalars(tag) if s.step >= first_step}
    logged |= {(tag, h.step): h.histogram_value for tag in tags["histograms"] for h in events.Histograms(tag)
               if h.step >= first_step}
    return logged


@pytest.mark.parametrize(("resume_step", "where"), [(STEPS_PER_EPOCH, "epoch end"), (50, "mid-epoch")])
def test_resumed_run_trains_exactly_what_the_straight_run_trains(straight, resume_step, where):
    root, straight_final = straight
    checkpoint = _checkpoint(root, resume_step)
    state = torch.load(checkpoint, weights_only=True)
    # the training loader's place: 5 batches into epoch 1, or the start of epoch 1 after epoch 0's last batch
    (loader_state,) = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert (loader_state["epoch"], loader_state["batches_trained"]) == divmod(resume_step, STEPS_PER_EPOCH)

    end = 2 * resume_step
    name = f"resumed_from_{resume_step}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, module = _fit(root, name, end, ckpt_path=str(checkpoint))
    assert not [str(w.message) for w in caught if "not resumable" in str(w.message)]
    assert trainer.global_step == end

    expected = straight_final if end == STRAIGHT else {
        key.removeprefix("network."): value
        for key, value in torch.load(_checkpoint(root, end), weights_only=True)["state_dict"].items()}
    for param_name, p in module.network.named_parameters():
        assert torch.equal(p.detach(), expected[param_name]), (where, param_name)

    reference = _error_terms(read_events(root / "straight" / "version_0"), resume_step)
    resumed = _error_terms(read_events(root / name / "version_0"), resume_step)
    steps = sorted({step for _, step in resumed})
    assert steps == list(range(resume_step, end))
    reference = {key: value for key, value in reference.items() if key[1] < end}
    assert resumed.keys() == reference.keys()
    for key, value in resumed.items():
        assert value == reference[key], key  # floats and histogram protos: equal, bit for bit
