"""The DataModules: shapes and tasks, seeded splits, epoch-seeded order, resumable loaders, the user's own files."""

import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, random_split

from lightning_modules import (
    DigitsDataModule,
    EpochSampler,
    ManualBackpropModule,
    ResumableDataLoader,
    SigmoidMLP,
    SplitDataModule,
    TabularDataModule,
    TwoSpiralsDataModule,
    XORDataModule,
)

ROOT = Path(__file__).resolve().parents[1]


class Numbered(SplitDataModule):
    """The base on its own: examples 0..n−1 (feature = target = the example's number)."""

    num_features, num_classes, task = 1, None, "regression"

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def examples(self):
        return torch.arange(self.n, dtype=torch.float32)[:, None], torch.arange(self.n, dtype=torch.float32)


def _write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- every DataModule: shapes, dtypes, task --------------------------------------------------------
@pytest.fixture
def datamodules(tmp_path):
    rows = "\n".join(f"{i},{i % 3},{'cat' if i % 2 else 'dog'},{0.5 * i}" for i in range(20))
    csv_path = _write(tmp_path, f"a,b,label,value\n{rows}\n")
    npz_path = tmp_path / "data.npz"
    np.savez(npz_path, x=np.random.default_rng(0).normal(size=(30, 3)), y=np.random.default_rng(1).normal(size=(30, 2)))
    return {
        "digits": (DigitsDataModule(batch_size=16), 64, 10, "classification", (1438, 359)),
        "xor": (XORDataModule(copies=8, batch_size=16), 2, 2, "classification", (32, 4)),
        "spirals": (TwoSpiralsDataModule(batch_size=16), 2, 2, "classification", (155, 39)),
        "csv classification": (TabularDataModule(csv_path, target="label", features=["a", "b"], batch_size=16),
                               2, 2, "classification", (16, 4)),
        "csv regression": (TabularDataModule(csv_path, target="value", features=["a", "b"], task="regression",
                                             batch_size=16), 2, None, "regression", (16, 4)),
        "npz regression (N, T)": (TabularDataModule(npz_path, target="y", task="regression", batch_size=16),
                                  3, None, "regression", (24, 6)),
    }


@pytest.mark.parametrize("name", ["digits", "xor", "spirals", "csv classification", "csv regression",
                                  "npz regression (N, T)"])
def test_every_datamodule_gives_float32_features_and_the_targets_of_its_task(datamodules, name):
    dm, num_features, num_classes, task, sizes = datamodules[name]
    assert (dm.num_features, dm.num_classes, dm.task) == (num_features, num_classes, task)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == sizes
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        x, y = next(iter(loader))
        assert x.dtype == torch.float32 and x.shape[1:] == (num_features,)
        if task == "classification":
            assert y.dtype == torch.int64 and y.shape == (len(x),) and 0 <= y.min() and y.max() < num_classes
        else:
            assert y.dtype == torch.float32 and y.shape[0] == len(x) and y.dim() in (1, 2)
    assert isinstance(dm.train_dataloader(), ResumableDataLoader)
    assert isinstance(dm.train_dataloader().sampler, EpochSampler)


# -- the digits ------------------------------------------------------------------------------------
def test_digits_split_is_seeded_and_complete():
    a, b = DigitsDataModule(seed=3), DigitsDataModule(seed=3)
    a.setup("fit")
    b.setup("fit")
    assert len(a.train_set) + len(a.val_set) == 1797 and len(a.val_set) == 359
    assert a.val_set.indices == b.val_set.indices
    assert sorted(a.train_set.indices + a.val_set.indices) == list(range(1797))
    x, y = a.train_set[0]
    assert x.shape == (64,) and 0 <= x.min() and x.max() <= 1 and 0 <= y < 10


def test_digits_split_is_the_one_the_readme_numbers_were_made_with():
    """random_split with Generator().manual_seed(seed), as before the epoch-seeded sampler came."""
    dm = DigitsDataModule()
    dm.setup("fit")
    assert dm.val_set.indices[:6] == [909, 1253, 225, 895, 1261, 1295]
    expected = random_split(range(1797), [1438, 359], generator=torch.Generator().manual_seed(0))
    assert dm.train_set.indices == expected[0].indices and dm.val_set.indices == expected[1].indices


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"val_fraction": 1.5}, "val_fraction must be a number strictly between 0 and 1, got 1.5"),
     ({"val_fraction": 0}, "val_fraction must be a number strictly between 0 and 1, got 0"),
     ({"val_fraction": "0.2"}, "val_fraction must be a number strictly between 0 and 1, got '0.2'"),
     ({"batch_size": 0}, "batch_size must be an integer of at least 1, got 0"),
     ({"batch_size": 2.5}, "batch_size must be an integer of at least 1, got 2.5"),
     ({"batch_size": True}, "batch_size must be an integer of at least 1, got True"),
     ({"seed": -1}, "seed must be an integer of at least 0, got -1"),
     ({"shuffle": "yes"}, "shuffle must be True or False, got 'yes'")],
)
def test_digits_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(f"DigitsDataModule: {message}")):
        DigitsDataModule(**kwargs)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 300), val_fraction=st.floats(0.01, 0.99))
def test_split_sizes_add_up_or_the_error_says_what_is_left(n, val_fraction):
    dm = Numbered(n, val_fraction=val_fraction)
    n_val = round(n * val_fraction)
    if not 0 < n_val < n:
        with pytest.raises(ValueError, match=rf"Numbered: val_fraction {val_fraction} of {n} examples leaves "
                                             rf"{n - n_val} for training and {n_val} for validation"):
            dm.setup("fit")
        return
    dm.setup("fit")
    train = [int(y) for _, y in dm.train_set]
    val = [int(y) for _, y in dm.val_set]
    assert len(val) == n_val and sorted(train + val) == list(range(n))


# -- the epoch-seeded order ------------------------------------------------------------------------
def test_the_order_of_an_epoch_depends_only_on_the_seed_and_the_epoch():
    walked = EpochSampler(100, seed=7)
    orders = []
    for epoch in range(4):  # a sampler that went through epochs 0..3 in turn
        walked.set_epoch(epoch)
        orders.append(list(walked))
    jumped = EpochSampler(100, seed=7)
    jumped.set_epoch(3)  # a fresh one set straight to epoch 3: a resumed run
    assert list(jumped) == orders[3] == list(jumped)  # iterating again gives the same order
    assert len({tuple(order) for order in orders}) == 4  # every epoch its own order
    assert all(sorted(order) == list(range(100)) for order in orders)
    other = EpochSampler(100, seed=8)
    other.set_epoch(3)
    assert list(other) != orders[3]
    # (seed, epoch) pairs, not their sum: (0, 1) and (1, 0) differ
    assert EpochSampler(100, seed=0).global_order(1) != EpochSampler(100, seed=1).global_order(0)
    plain = EpochSampler(10, seed=7, shuffle=False)
    plain.set_epoch(5)
    assert list(plain) == list(range(10))


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 120), world_size=st.integers(1, 4), batch_size=st.integers(1, 9), seed=st.integers(0, 2**32),
       epoch=st.integers(0, 20), shuffle=st.booleans())
def test_the_ranks_together_train_the_batch_of_one_process_with_a_batch_w_times_larger(
        n, world_size, batch_size, seed, epoch, shuffle):
    single = EpochSampler(n, seed=seed, shuffle=shuffle)
    single.set_epoch(epoch)
    single_batches = list(DataLoader(range(n), batch_size=world_size * batch_size, sampler=single))
    ranks = []
    for rank in range(world_size):
        sampler = EpochSampler(n, seed=seed, shuffle=shuffle, num_replicas=world_size, rank=rank)
        sampler.set_epoch(epoch)
        ranks.append(list(DataLoader(range(n), batch_size=batch_size, sampler=sampler)))
    assert len({len(batches) for batches in ranks}) == 1  # every rank takes as many steps: none waits
    padded = sampler.global_order()
    assert padded[:n] == single.global_order()  # the global order is the single process's, padded
    assert len(padded) == math.ceil(n / world_size) * world_size
    step_size = world_size * batch_size
    for step, rank_batches in enumerate(zip(*ranks)):
        together = sorted(i for batch in rank_batches for i in batch.tolist())
        assert together == sorted(padded[step * step_size:(step + 1) * step_size])
        if n % world_size == 0:  # no padding: exactly the single process's batch
            assert together == sorted(single_batches[step].tolist())


# -- the resumable loader --------------------------------------------------------------------------
def _loader(n, batch_size, seed=0, epoch=0, trained=0, world_size=1):
    """A loader at ``epoch`` whose fit has trained ``trained`` of its batches."""
    sampler = EpochSampler(n, seed=seed, num_replicas=world_size)
    sampler.set_epoch(epoch)
    loader = ResumableDataLoader(range(n), batch_size=batch_size, sampler=sampler)
    loader.progress = lambda: (trained, len(loader))
    return loader


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 100), batch_size=st.integers(1, 16), epoch=st.integers(0, 10), data=st.data())
def test_a_loader_resumed_mid_epoch_yields_the_rest_of_the_epoch_then_whole_epochs(n, batch_size, epoch, data):
    straight = _loader(n, batch_size)
    straight.sampler.set_epoch(epoch)
    batches = [b.tolist() for b in straight]
    trained = data.draw(st.integers(0, len(batches) - 1), label="batches trained")
    state = _loader(n, batch_size, epoch=epoch, trained=trained).state_dict()
    assert (state["epoch"], state["batches_trained"]) == (epoch, trained)
    resumed = _loader(n, batch_size)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(epoch)  # Lightning sets the epoch again after loading: no change
    assert len(resumed) == len(batches)  # the length stays the epoch's: Lightning counts on from `trained`
    assert [b.tolist() for b in resumed] == batches[trained:]
    # the skip was once: the next epoch is whole, and the same as the uninterrupted loader's
    resumed.sampler.set_epoch(epoch + 1)
    straight.sampler.set_epoch(epoch + 1)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in straight]


def test_resuming_mid_epoch_with_other_data_settings_names_what_changed():
    assert _loader(100, 8, epoch=2, trained=13).state_dict()["epoch"] == 3  # 13 of 13 batches: epoch 3 is next
    state = _loader(100, 8, seed=0, epoch=2, trained=5).state_dict()
    assert state == {"epoch": 2, "batches_trained": 5, "num_examples": 100, "seed": 0, "shuffle": True,
                     "global_batch_size": 8}
    with pytest.raises(ValueError, match=re.escape(
            "cannot resume in the middle of epoch 2 (after 5 batches): the training data differ from the "
            "checkpoint's: seed 0 in the checkpoint, 1 now; global_batch_size 8 in the checkpoint, 16 now")):
        _loader(100, 8, seed=1, world_size=2).load_state_dict(state)
    # the same global batch on two processes resumes; so does any setting at an epoch's start
    _loader(100, 4, world_size=2).load_state_dict(state)
    _loader(50, 3, seed=4).load_state_dict({**state, "batches_trained": 0})


def test_loaders_passed_without_their_datamodule_checkpoint_the_epoch_start_and_warn_once():
    """trainer.fit(model, dm.train_dataloader(), ...): the loader cannot read the fit loop's progress,
    so its checkpoint says "start of the epoch" (a resume repeats the epoch's first batches), with a
    warning; the run itself is not stopped."""
    dm = XORDataModule(copies=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    with pytest.warns(UserWarning, match=r"XORDataModule: .* not attached to the Trainer.*starts the epoch again"):
        state = loader.state_dict()
    assert state["batches_trained"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.state_dict()  # once


class BatchSpy(pl.Callback):
    def __init__(self):
        self.epochs: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.epochs.setdefault(trainer.current_epoch, []).append(batch[0].clone())


def test_lightning_keeps_the_sampler_and_sets_its_epoch(tmp_path):
    """A real fit: each epoch trains in EpochSampler's order for (seed, epoch); no "not resumable" loader."""
    dm = XORDataModule(copies=4, noise=0.1, batch_size=4, seed=3)  # noise: every training point differs
    spy = BatchSpy()
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[spy],
                         default_root_dir=tmp_path)
    trainer.fit(ManualBackpropModule(SigmoidMLP([2, 4, 2])), datamodule=dm)
    assert isinstance(trainer.train_dataloader, ResumableDataLoader)
    assert isinstance(trainer.train_dataloader.sampler, EpochSampler)  # not wrapped, not replaced
    x_train = dm.train_set.tensors[0]
    for epoch in range(3):
        order = EpochSampler(16, seed=3).global_order(epoch)
        assert torch.equal(torch.cat(spy.epochs[epoch]), x_train[order])
    assert trainer.train_dataloader.state_dict()["epoch"] == 3  # after the last batch: the next epoch's start


def test_overfit_batches_still_works_on_the_rebuilt_loader(tmp_path):
    trainer = pl.Trainer(max_steps=3, overfit_batches=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You requested to overfit")
        trainer.fit(ManualBackpropModule(SigmoidMLP([2, 4, 2])), datamodule=XORDataModule(copies=4, batch_size=4))
    assert isinstance(trainer.train_dataloader, ResumableDataLoader)
    assert trainer.train_dataloader.state_dict()["batches_trained"] == 1  # step 2 was the 1st batch of epoch 1


# -- XOR and the spirals ---------------------------------------------------------------------------
def test_xor_trains_on_copies_of_the_four_points_and_validates_on_them_exactly():
    dm = XORDataModule(copies=5, batch_size=4)
    dm.setup("fit")
    x, y = dm.train_set.tensors
    points = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert torch.equal(x, points.repeat(5, 1)) and y.tolist() == [0, 1, 1, 0] * 5
    assert torch.equal(dm.val_set.tensors[0], points) and dm.val_set.tensors[1].tolist() == [0, 1, 1, 0]
    assert len(dm.train_dataloader()) == 5  # 20 points in batches of 4
    default = XORDataModule()
    default.setup("fit")
    assert len(default.train_dataloader()) == 32  # 256 copies: 1,024 points in batches of 32


def test_xor_noise_moves_only_the_training_points_and_is_seeded():
    a, b, c = XORDataModule(copies=50, noise=0.1, seed=1), XORDataModule(copies=50, noise=0.1, seed=1), \
        XORDataModule(copies=50, noise=0.1, seed=2)
    for dm in (a, b, c):
        dm.setup("fit")
    assert torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])
    assert not torch.equal(a.train_set.tensors[0], c.train_set.tensors[0])
    moved = a.train_set.tensors[0] - XORDataModule.points.repeat(50, 1)
    assert 0.07 < moved.std().item() < 0.13
    assert torch.equal(a.val_set.tensors[0], XORDataModule.points)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"copies": 0}, "XORDataModule: copies must be an integer of at least 1, got 0"),
    ({"noise": -0.1}, "XORDataModule: noise (a standard deviation) must be a finite number of at least 0, got -0.1"),
    ({"noise": float("nan")}, "XORDataModule: noise (a standard deviation) must be a finite number"),
    ({"points_per_class": 1}, "TwoSpiralsDataModule: points_per_class must be an integer of at least 2, got 1"),
    ({"turns": 0}, "TwoSpiralsDataModule: turns must be a positive finite number, got 0"),
    ({"points_per_class": 2, "val_fraction": 0.1},
     "TwoSpiralsDataModule: val_fraction 0.1 of 4 examples leaves 4 for training and 0 for validation"),
])
def test_xor_and_spirals_reject_bad_settings(kwargs, message):
    cls = XORDataModule if message.startswith("XOR") else TwoSpiralsDataModule
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(**kwargs)


def test_two_spirals_are_lang_and_witbrocks_194_points_scaled_into_the_unit_square():
    x, y = TwoSpiralsDataModule().examples()
    i = np.arange(97)
    angle, radius = i * np.pi / 16, 6.5 * (104 - i) / 104  # the benchmark's own formula
    spiral = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1) / 6.5
    np.testing.assert_allclose(x.numpy(), np.concatenate([spiral, -spiral]), atol=1e-6)
    assert y.tolist() == [1] * 97 + [0] * 97
    assert x.abs().max() <= 1


def test_two_spirals_noise_and_split_are_seeded():
    a, b = TwoSpiralsDataModule(points_per_class=50, turns=1.5, noise=0.05, seed=4), \
        TwoSpiralsDataModule(points_per_class=50, turns=1.5, noise=0.05, seed=4)
    for dm in (a, b):
        dm.setup("fit")
    assert a.val_set.indices == b.val_set.indices and len(a.val_set) == 20
    assert torch.equal(a.examples()[0], b.examples()[0])
    exact = TwoSpiralsDataModule(points_per_class=50, turns=1.5).examples()[0]
    assert 0.03 < (a.examples()[0] - exact).std().item() < 0.07


# -- the user's own table --------------------------------------------------------------------------
def test_csv_classification_sorts_the_labels_into_class_ids(tmp_path):
    path = _write(tmp_path, "x1, x2 ,species\n1,2,versicolor\n3,4,setosa\n5,6,virginica\n7,8,setosa\n"
                            "9,10,virginica\n\n")  # spaces around names and a trailing blank line
    dm = TabularDataModule(path, target="species", standardize=False, val_fraction=0.4)
    assert dm.class_names == ["setosa", "versicolor", "virginica"] and dm.num_classes == 3
    assert dm.feature_names == ["x1", "x2"] and dm.num_features == 2
    x, y = dm.examples()
    assert y.tolist() == [1, 0, 2, 0, 2]
    assert x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]


def test_numeric_labels_sort_as_numbers_and_features_keep_the_order_asked(tmp_path):
    path = _write(tmp_path, "label,a,b,c\n10,1,2,3\n9,4,5,6\n2,7,8,9\n10,1,1,1\n")
    dm = TabularDataModule(path, target="label", features=["c", "a"], val_fraction=0.25)
    assert dm.class_names == [2, 9, 10]
    assert dm.examples()[1].tolist() == [2, 1, 0, 2]
    assert dm.feature_names == ["c", "a"] and dm.examples()[0][:, 0].tolist() == [3, 6, 9, 1]


def test_standardization_uses_the_training_split_only(tmp_path):
    rng = np.random.default_rng(0)
    raw = np.stack([np.arange(40) ** 2, rng.normal(3, 2, 40), np.full(40, 5.0)], axis=1)  # the last is constant
    rows = "\n".join(f"{i},{a},{b},{c}" for i, (a, b, c) in enumerate(raw))
    dm = TabularDataModule(_write(tmp_path, f"id,square,normal,constant\n{rows}\n"), target="id",
                           task="regression", val_fraction=0.25, seed=1)
    dm.setup("fit")
    (x_train, id_train), (x_val, id_val) = dm.train_set.tensors, dm.val_set.tensors
    train_raw = torch.tensor(raw[id_train.long().numpy()], dtype=torch.float32)
    val_raw = torch.tensor(raw[id_val.long().numpy()], dtype=torch.float32)
    torch.testing.assert_close(dm.feature_mean, train_raw.mean(0))
    torch.testing.assert_close(dm.feature_std[:2], train_raw[:, :2].std(0, unbiased=False))
    assert dm.feature_std[2] == 1  # constant: only centred, not divided by 0
    torch.testing.assert_close(x_train.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_train[:, :2].std(0, unbiased=False), torch.ones(2))
    assert torch.equal(x_train[:, 2], torch.zeros(30)) and torch.equal(x_val[:, 2], torch.zeros(10))
    torch.testing.assert_close(x_val, (val_raw - dm.feature_mean) / dm.feature_std)
    # the validation rows did not shape the statistics
    assert not torch.allclose(dm.feature_mean[0], torch.tensor(raw[:, 0].mean(), dtype=torch.float32))


def test_without_standardization_the_features_are_the_files(tmp_path):
    path = _write(tmp_path, "a,y\n1,0\n2,1\n3,0\n4,1\n5,1\n")
    dm = TabularDataModule(path, target="y", standardize=False, val_fraction=0.4)
    dm.setup("fit")
    assert sorted(dm.train_set.tensors[0][:, 0].tolist() + dm.val_set.tensors[0][:, 0].tolist()) == [1, 2, 3, 4, 5]
    assert dm.feature_mean is None and dm.feature_std is None


def test_npz_features_as_1d_arrays_or_one_2d_array_and_text_labels(tmp_path):
    x = np.arange(20.0).reshape(10, 2)
    labels = np.array(["b", "a"] * 5)
    np.savez(tmp_path / "columns.npz", u=x[:, 0], v=x[:, 1].astype(np.int32), label=labels)
    np.savez(tmp_path / "matrix.npz", X=x, label=labels)
    columns = TabularDataModule(tmp_path / "columns.npz", target="label")
    matrix = TabularDataModule(tmp_path / "matrix.npz", target="label")
    assert columns.feature_names == ["u", "v"] and matrix.feature_names == ["X[:, 0]", "X[:, 1]"]
    for dm in (columns, matrix):
        assert dm.class_names == ["a", "b"] and dm.examples()[1].tolist() == [1, 0] * 5
        assert torch.equal(dm.examples()[0], torch.tensor(x, dtype=torch.float32))


def test_the_same_seed_gives_the_same_split_of_a_table(tmp_path):
    path = _write(tmp_path, "a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))
    first, second = TabularDataModule(path, target="y", seed=5), TabularDataModule(path, target="y", seed=5)
    for dm in (first, second):
        dm.setup("fit")
    assert torch.equal(first.val_set.tensors[0], second.val_set.tensors[0])
    other = TabularDataModule(path, target="y", seed=6)
    other.setup("fit")
    assert not torch.equal(first.val_set.tensors[0], other.val_set.tensors[0])


BAD_CSV = [
    ("", "the file is empty; it needs a header row and at least one data row"),
    ("a,b,y\n", "no data rows after the header ['a', 'b', 'y']"),
    ("a,b,y\n1,2,0\n3,4\n", "line 3 has 2 values, the header has 3 columns ['a', 'b', 'y']"),
    ("a,b,y\n1,2,0\n3,4,1,9\n", "line 3 has 4 values, the header has 3 columns"),
    ("a,b,a\n1,2,0\n", "the header names columns ['a'] more than once"),
    ("a,b,label\n1,2,0\n", "no target column 'y'; the columns are ['a', 'b', 'label']"),
    ("a,b,y\n1,2,0\n3,seven,1\n", "column 'b', row 2 (line 3): 'seven' is not a number"),
    ("a,b,y\n1,2,0\n3,,1\n", "column 'b', row 2 (line 3): is empty"),
    ("a,b,y\n1,2,0\n3,4,1\nnan,5,0\n", "column 'a', row 3 (line 4): 'nan' is not finite (NaN and infinity are not "
                                       "allowed)"),
    ("a,b,y\n1,2,0\n3,-inf,1\n", "column 'b', row 2 (line 3): '-inf' is not finite"),
    ("a,b,y\n1,2,0\n3,4,0\n", "the target 'y' has a single class 0; classification needs at least two"),
    ("a,b,y\n1,2,cat\n3,4,cat\n", "the target 'y' has a single class 'cat'"),
    ("a,b,y\n1,2,cat\n3,4,\n", "column 'y', row 2 (line 3): is empty"),
    ("a,b,y\n1,2,1\n3,4,inf\n", "column 'y', row 2 (line 3): 'inf' is not finite"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CSV)
def test_a_bad_csv_is_refused_naming_the_file_and_what_is_wrong(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(f"TabularDataModule: {path}: {message}")):
        TabularDataModule(path, target="y")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"features": ["a", "z"]}, "TabularDataModule: {path}: no column 'z'; the columns are ['a', 'b', 'y']"),
    ({"features": ["a", "y"]}, "TabularDataModule: {path}: the target 'y' is also listed as a feature"),
    ({"task": "regression"}, "TabularDataModule: {path}: column 'y', row 1 (line 2): 'dog' is not a number"),
    ({"features": ["a", "b", "a"]}, "TabularDataModule: features lists ['a'] more than once"),
    ({"standardize": "no"}, "TabularDataModule: standardize must be True or False, got 'no'"),
])
def test_bad_choices_of_columns_are_refused(tmp_path, kwargs, message):
    path = _write(tmp_path, "a,b,y\n1,2,dog\n3,4,cat\n5,6,dog\n")
    with pytest.raises(ValueError, match=re.escape(message.format(path=path))):
        TabularDataModule(path, target="y", **kwargs)


def test_bad_arguments_are_refused_before_the_file_is_read(tmp_path):
    path = _write(tmp_path, "a,y\n1,0\n2,1\n")
    with pytest.raises(ValueError, match=re.escape("TabularDataModule: unknown task 'ranking'; choose one of "
                                                   "['classification', 'regression']")):
        TabularDataModule(path, target="y", task="ranking")
    with pytest.raises(ValueError, match="TabularDataModule: features must be a non-empty list of column names, "
                                         "got 'a'"):
        TabularDataModule(path, target="y", features="a")
    target_only = _write(tmp_path, "y\n1\n0\n", name="target_only.csv")
    with pytest.raises(ValueError, match=re.escape(f"TabularDataModule: {target_only}: no feature columns besides "
                                                   "the target 'y'")):
        TabularDataModule(target_only, target="y")
    with pytest.raises(ValueError, match=r"val_fraction 0.2 of 2 examples leaves 2 for training and 0 for"):
        TabularDataModule(path, target="y")


def test_a_spreadsheets_csv_with_a_byte_order_mark_and_crlf_lines_reads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffa,y\r\n1,yes\r\n2,no\r\n3,yes\r\n4,no\r\n5,no\r\n".encode())
    dm = TabularDataModule(path, target="y", val_fraction=0.4)
    assert dm.feature_names == ["a"] and dm.class_names == ["no", "yes"]
    assert dm.examples()[1].tolist() == [1, 0, 1, 0, 0]


def test_a_file_that_is_not_utf8_text_is_refused(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,y\n1,café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"TabularDataModule: {path}: not a readable CSV text file")):
        TabularDataModule(path, target="y")


def test_a_missing_file_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"TabularDataModule: no such file: {tmp_path}/nowhere.csv")):
        TabularDataModule("nowhere.csv", target="y")


def test_an_unsupported_suffix_lists_the_ones_there_are(tmp_path):
    path = _write(tmp_path, "a,y\n1,0\n", name="data.xlsx")
    with pytest.raises(ValueError, match=re.escape(f"{path}: unsupported file type '.xlsx'; choose one of "
                                                   "['.csv', '.npz']")):
        TabularDataModule(path, target="y")


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("arrays", "message"), [
    ({"a": np.ones(3), "label": np.arange(3)}, "no target column 'y'; the columns are ['a', 'label']"),
    ({"a": np.ones(3), "y": np.arange(4)}, "the arrays have different numbers of rows: {'a': 3, 'y': 4}"),
    ({"a": np.ones((3, 2, 2)), "y": np.arange(3)}, "array 'a' has shape (3, 2, 2); arrays must be 1-D (N,) or 2-D"),
    ({"a": np.array([1.0, np.nan, 3.0]), "y": np.arange(3)},
     "column 'a', row 1: nan is not finite"),
    ({"X": np.array([[1.0, 2.0], [3.0, np.inf]]), "y": np.arange(2)}, "column 'X[:, 1]', row 1: inf is not finite"),
    ({"a": np.array(["1", "x", "3"]), "y": np.arange(3)}, "column 'a', row 1: 'x' is not a number"),
    ({"a": np.ones(3), "y": np.zeros(3)}, "the target 'y' has a single class 0"),
    ({"a": np.ones((0,)), "y": np.zeros(0)}, "the arrays have no rows"),
    ({"a": np.array([1 + 2j, 3]), "y": np.arange(2)}, "column 'a' holds complex128 values, not real numbers"),
    ({"a": np.ones(3), "y": np.zeros((3, 2))}, "the classification target 'y' must be 1-D, got shape (3, 2)"),
])
def test_a_bad_npz_is_refused_naming_the_array_and_what_is_wrong(tmp_path, arrays, message):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(ValueError, match=re.escape(f"TabularDataModule: {path}: {message}")):
        TabularDataModule(path, target="y")


def test_an_npz_of_python_objects_or_not_an_archive_is_refused(tmp_path):
    path = _npz(tmp_path, a=np.ones(2), y=np.array([1, "x"], dtype=object))
    with pytest.raises(ValueError, match=re.escape(f"{path}: Object arrays cannot be loaded when allow_pickle=False; "
                                                   "save text as a string array")):
        TabularDataModule(path, target="y")
    broken = _write(tmp_path, "not a zip archive", name="broken.npz")
    with pytest.raises(ValueError, match=re.escape(f"{broken}: not a readable .npz archive (an .npz file is a zip")):
        TabularDataModule(broken, target="y")


def test_a_table_trains_with_lightning(tmp_path):
    rows = "".join(f"{i % 7},{(i * 3) % 5},{'odd' if i % 2 else 'even'}\n" for i in range(40))
    dm = TabularDataModule(_write(tmp_path, f"a,b,parity\n{rows}"), target="parity", batch_size=8)
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(ManualBackpropModule(SigmoidMLP([dm.num_features, 4, dm.num_classes])), datamodule=dm)
    assert trainer.global_step == 3


# -- DDP -------------------------------------------------------------------------------------------
DDP_SCRIPT = '''
import os
import sys

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_modules import DigitsDataModule

root, devices, batch_size, max_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ckpt_path = sys.argv[5] if len(sys.argv) > 5 else None
torch.set_num_threads(1)


class Probe(pl.LightningModule):
    """A linear classifier that keeps the batch of every step."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(64, 10)
        self.seen = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen[self.global_step] = x.clone()
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


pl.seed_everything(0)
module = Probe()
trainer = pl.Trainer(
    max_steps=max_steps, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
    logger=False, limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
    callbacks=[ModelCheckpoint(dirpath=root + "/checkpoints", every_n_train_steps=48, save_top_k=-1)],
)
trainer.fit(module, datamodule=DigitsDataModule(batch_size=batch_size), ckpt_path=ckpt_path)
os.makedirs(root, exist_ok=True)
torch.save(module.seen, f"{root}/rank{trainer.global_rank}.pt")
'''


def _rows(x: torch.Tensor) -> list[tuple]:
    return sorted(tuple(row) for row in x.tolist())


@pytest.mark.slow
def test_under_ddp_two_ranks_train_the_global_batch_of_one_process_and_resume_mid_epoch(tmp_path):
    """Two gloo processes with batch 16 each train, step by step, the examples one process trains with batch 32
    (EpochSampler's global order: the order a single-process fit follows, as the fit test above shows): through
    epoch 0 and into epoch 1 (45 steps an epoch). Resumed from the step-48 checkpoint (3 batches into epoch 1),
    each rank trains the batches it trained in the uninterrupted run."""
    script = tmp_path / "ddp_data.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, extra in [("ddp", []), ("resumed", [str(tmp_path / "ddp" / "checkpoints" / "epoch=1-step=48.ckpt")])]:
        done = subprocess.run([sys.executable, str(script), str(tmp_path / name), "2", "16", "55", *extra],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "not resumable" not in done.stderr
    ddp = [torch.load(tmp_path / "ddp" / f"rank{rank}.pt") for rank in (0, 1)]
    resumed = [torch.load(tmp_path / "resumed" / f"rank{rank}.pt") for rank in (0, 1)]
    dm = DigitsDataModule()
    dm.setup("fit")
    x_train = torch.stack([x for x, _ in dm.train_set])
    assert sorted(ddp[0]) == sorted(ddp[1]) == list(range(55))
    for step in range(55):
        epoch, position = divmod(step, 45)
        one_process = EpochSampler(len(x_train)).global_order(epoch)[32 * position:32 * (position + 1)]
        assert _rows(torch.cat([ddp[0][step], ddp[1][step]])) == _rows(x_train[one_process]), step
    for rank in (0, 1):
        assert sorted(resumed[rank]) == list(range(48, 55))
        for step in range(48, 55):
            assert torch.equal(resumed[rank][step], ddp[rank][step]), (rank, step)
