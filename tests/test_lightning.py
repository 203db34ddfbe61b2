"""Training with a real Lightning Trainer; the error terms read back from real event files."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

import manual_backprop as mbp
from lightning_modules import DigitsDataModule, ErrorTermLogger, ManualBackpropModule, SigmoidMLP

from tb import read_events


def _trainer(tmp_path, every_n_steps=2, max_steps=4, logger=None):
    return pl.Trainer(
        max_steps=max_steps,
        logger=logger or TensorBoardLogger(tmp_path, name="run"),
        callbacks=[ErrorTermLogger(every_n_steps=every_n_steps)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )


def test_fit_logs_an_error_term_histogram_for_every_parametrized_layer(tmp_path):
    pl.seed_everything(0)
    module = ManualBackpropModule(SigmoidMLP([64, 16, 12, 10]))
    trainer = _trainer(tmp_path)
    trainer.fit(module, DigitsDataModule(batch_size=8))
    events = read_events(trainer.logger.log_dir)
    tags = events.Tags()
    assert sorted(t for t in tags["histograms"] if t.startswith("error_terms/")) == [
        "error_terms/fc1", "error_terms/fc2", "error_terms/fc3",
    ]
    for layer, width in [("fc1", 16), ("fc2", 12), ("fc3", 10)]:
        histograms = events.Histograms(f"error_terms/{layer}")
        assert [h.step for h in histograms] == [0, 2]
        assert histograms[0].histogram_value.num == 8 * width  # one δ per sample and unit
        rms = events.Scalars(f"error_terms_rms/{layer}")
        assert [s.step for s in rms] == [0, 2] and all(s.value > 0 for s in rms)
        assert len(events.Scalars(f"error_terms_max_abs/{layer}")) == 2
    # recording stopped after each logged step: no hooks are left on the network
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.network.modules())


def test_gradient_accumulation_logs_each_step_once(tmp_path):
    trainer = pl.Trainer(max_steps=4, accumulate_grad_batches=2, logger=TensorBoardLogger(tmp_path, name="run"),
                         callbacks=[ErrorTermLogger(every_n_steps=2)], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(ManualBackpropModule(), DigitsDataModule(batch_size=8))
    events = read_events(trainer.logger.log_dir)
    assert [h.step for h in events.Histograms("error_terms/fc1")] == [0, 2]


def test_a_single_layer_network_is_tagged_root(tmp_path):
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(ManualBackpropModule(torch.nn.Linear(64, 10)), DigitsDataModule(batch_size=8))
    assert "error_terms/(root)" in read_events(trainer.logger.log_dir).Tags()["histograms"]


def test_without_any_logger_it_warns_and_training_goes_on(tmp_path):
    trainer = pl.Trainer(max_steps=2, logger=False, callbacks=[ErrorTermLogger(every_n_steps=1)],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         num_sanity_val_steps=0, default_root_dir=tmp_path)
    with pytest.warns(UserWarning, match="no logger, so no error terms are logged"):
        trainer.fit(ManualBackpropModule(), DigitsDataModule(batch_size=8))
    assert trainer.global_step == 2


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_uses_the_hand_written_backward():
    module = ManualBackpropModule(SigmoidMLP([64, 8, 10]), loss="mse", optimizer="adam", lr=0.01)
    assert all(mbp.is_manual(m) for m in module.network.children())
    x, y = torch.rand(4, 64), torch.tensor([1, 2, 3, 4])
    audit = mbp.audit_backward(module.training_step((x, y), 0))
    assert audit.ok, str(audit)


def test_error_term_logger_needs_tensorboard(tmp_path):
    trainer = _trainer(tmp_path, logger=CSVLogger(tmp_path))
    with pytest.raises(ValueError, match=r"needs a TensorBoardLogger.*CSVLogger"):
        trainer.fit(ManualBackpropModule(), DigitsDataModule())


def test_error_term_logger_rejects_a_bad_interval():
    with pytest.raises(ValueError, match="every_n_steps must be at least 1, got 0"):
        ErrorTermLogger(every_n_steps=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"loss": "hinge"}, r"unknown loss 'hinge'; choose one of \['cross_entropy', 'mse'\]"),
     ({"optimizer": "lbfgs"}, r"unknown optimizer 'lbfgs'; choose one of \['adam', 'sgd'\]")],
)
def test_unknown_names_list_the_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ManualBackpropModule(**kwargs)


def test_digits_split_is_seeded_and_complete():
    a, b = DigitsDataModule(seed=3), DigitsDataModule(seed=3)
    a.setup("fit")
    b.setup("fit")
    assert len(a.train_set) + len(a.val_set) == 1797 and len(a.val_set) == 359
    assert a.val_set.indices == b.val_set.indices
    x, y = a.train_set[0]
    assert x.shape == (64,) and 0 <= x.min() and x.max() <= 1 and 0 <= y < 10


@pytest.mark.parametrize("kwargs", [{"val_fraction": 1.5}, {"batch_size": 0}])
def test_digits_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="DigitsDataModule"):
        DigitsDataModule(**kwargs)
