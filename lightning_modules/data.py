"""DataModules: examples → a seeded train/val split → DataLoaders whose order a checkpoint can resume.

Every DataModule here has ``num_features``, ``num_classes`` (``None`` for regression) and ``task``
(``"classification"``: targets are int64 class ids 0..C−1; ``"regression"``: float32 targets
shaped (N,) or (N, T)). Features are float32, shaped (N, num_features).

The training order of epoch e is a function of (seed, e) alone (:class:`EpochSampler`), and the
training DataLoader saves where in the epoch the fit is (:class:`ResumableDataLoader`): a run resumed
from a checkpoint, even one written in the middle of an epoch, trains on exactly the batches the
uninterrupted run trained on.

- :class:`DigitsDataModule`: scikit-learn's 8×8 handwritten digits (shipped with it, no download).
- :class:`XORDataModule`: the four XOR points.
- :class:`TwoSpiralsDataModule`: Lang & Witbrock's two interleaved spirals.
- :class:`TabularDataModule`: the user's own table, a ``.csv`` or ``.npz`` file.
"""

from __future__ import annotations

import csv
import itertools
import math
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, TensorDataset, random_split

TASKS = ("classification", "regression")
Task = Literal["classification", "regression"]


class EpochSampler(DistributedSampler):
    """Indices of the training examples in an order that is a function of (seed, epoch) only.

    The *global order* of epoch e is a permutation of 0..n−1 drawn from numpy's generator seeded with
    the pair (seed, e) (a ``SeedSequence``: unlike seed + e, the pairs (0, 1) and (1, 0) give
    unrelated orders), or 0..n−1 itself with ``shuffle=False``. It does not depend on what earlier
    epochs drew, nor on the number of processes, so a fit resumed at epoch e draws what the
    uninterrupted fit drew. Lightning calls ``set_epoch(e)`` at the start of every epoch.

    Under data parallelism rank r of w yields positions r, r + w, r + 2w, ... of the global order.
    The invariant: with a per-process batch size B, the ranks' batches at step s of an epoch are,
    together, positions [s·w·B, (s+1)·w·B) of the global order, the very batch one process with
    batch size w·B trains on at step s. When w does not divide n, the global order is padded with
    its own first entries to a multiple of w, as ``DistributedSampler`` does, so that every rank has
    the same number of batches (then the last global batch of an epoch repeats a few examples).

    It subclasses ``DistributedSampler`` so that Lightning (``use_distributed_sampler=True``, its
    default) leaves it in place: Lightning wraps any other sampler in a ``DistributedSamplerWrapper``,
    which shuffles the sampler's output once more with its own seed (training loaders get
    ``shuffle=True``) before sharding, so the ranks' batches would no longer be the single process's.
    """

    def __init__(self, num_examples: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        super().__init__(range(num_examples), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)

    def global_order(self, epoch: int | None = None) -> list[int]:
        """Epoch ``epoch``'s (default: the current epoch's) order of all n examples, padded to a multiple of w."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, epoch]).permutation(n).tolist() if self.shuffle else list(range(n))
        padding = self.total_size - n
        return order + (order * math.ceil(padding / n))[:padding]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_order()[self.rank :: self.num_replicas])


class ResumableDataLoader(DataLoader):
    """A training DataLoader that checkpoints its place in the epoch, so that a fit resumes exactly.

    Lightning keeps the ``state_dict()`` of every training loader that has one in the checkpoint (the
    fit loop's ``combined_loader`` entry) and hands it to ``load_state_dict`` when a fit resumes,
    before the first batch is drawn; a loader with these two methods also counts as resumable, so
    Lightning does not warn about resuming mid-epoch.

    The state is the epoch (the sampler's, which Lightning sets at each epoch's start) and how many
    of its batches the fit loop has trained; ``progress()``, a function the DataModule gives, says
    that count and how many batches the epoch has, asking the trainer. A count that fills the epoch
    is saved as the start of the next epoch. Counting the batches this loader handed out instead
    would also count any that a consumer fetched ahead (Lightning's fetcher does, for loaders
    without a length). On resume the sampler is set to the epoch (the order of an
    :class:`EpochSampler` depends on nothing else) and the first iteration drops the batches
    already trained (it reads them and drops them: cheap for data in memory, and right for any
    sampler). Resuming in the middle of an epoch needs the same examples, seed, shuffling and
    global batch size (``batch_size`` × the number of processes); a difference raises
    ``ValueError``.

    The extra keyword arguments go to ``DataLoader``, so that Lightning can rebuild the loader with
    another sampler (``overfit_batches`` does).
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, sampler: Sampler | None = None,
                 progress: Callable[[], tuple[int, int]] | None = None, **kwargs: Any):
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self.progress = progress
        self._skip = 0  # batches the next iteration leaves out: those trained before the checkpoint

    def __iter__(self) -> Iterator:
        skip, self._skip = self._skip, 0
        batches = super().__iter__()
        return itertools.islice(batches, skip, None) if skip else batches

    def _settings(self) -> dict[str, Any]:
        sampler = self.sampler
        return {"num_examples": len(self.dataset), "seed": getattr(sampler, "seed", None),
                "shuffle": getattr(sampler, "shuffle", None),
                "global_batch_size": self.batch_size * getattr(sampler, "num_replicas", 1)}

    def state_dict(self) -> dict[str, Any]:
        if self.progress is None:
            raise RuntimeError("ResumableDataLoader: it was made without progress=, so it cannot tell how many "
                               "batches of the epoch were trained")
        epoch = getattr(self.sampler, "epoch", 0)  # a sampler Lightning put in (overfit_batches) has one order
        batches_trained, batches_per_epoch = self.progress()
        if batches_trained >= batches_per_epoch:  # the epoch is over: the fit goes on with the next one
            epoch, batches_trained = epoch + 1, 0
        return {"epoch": epoch, "batches_trained": batches_trained, **self._settings()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        batches_trained = state_dict["batches_trained"]
        if batches_trained > 0:
            changed = [f"{name} {state_dict.get(name)!r} in the checkpoint, {value!r} now"
                       for name, value in self._settings().items() if state_dict.get(name) != value]
            if changed:
                raise ValueError(
                    f"cannot resume in the middle of epoch {state_dict['epoch']} (after {batches_trained} batches): "
                    f"the training data differ from the checkpoint's: {'; '.join(changed)}. Resume with the same "
                    "settings, or from a checkpoint written at the end of an epoch")
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(state_dict["epoch"])
        self._skip = batches_trained


def _check_int(owner: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}: {name} must be an integer of at least {low}, got {value!r}")


def _check_fraction(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{owner}: {name} must be a number strictly between 0 and 1, got {value!r}")


def _check_noise(owner: str, noise: Any) -> None:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= noise < math.inf:
        raise ValueError(f"{owner}: noise (a standard deviation) must be a finite number of at least 0, got {noise!r}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class SplitDataModule(pl.LightningDataModule):
    """The shared base: all examples → a seeded train/val split → an epoch-seeded training loader.

    A subclass sets ``num_features``, ``num_classes`` and ``task`` and implements :meth:`examples`;
    ``setup`` splits them with ``random_split`` and a generator seeded with ``seed``, keeping a
    ``val_fraction`` share (rounded) for validation. A subclass that makes its own validation set
    passes ``val_fraction=None`` and overrides ``setup``. Training batches follow
    :class:`EpochSampler` (``shuffle=False``: the split's order every epoch), sharded over the
    processes Lightning runs; validation batches keep the split's order.
    """

    val_batch_size = 256  # validation has no gradients: larger batches cost little memory

    num_features: int
    num_classes: int | None
    task: Task

    def __init__(self, batch_size: int = 32, val_fraction: float | None = 0.2, seed: int = 0, shuffle: bool = True):
        super().__init__()
        owner = type(self).__name__
        _check_int(owner, "batch_size", batch_size, 1)
        if val_fraction is not None:
            _check_fraction(owner, "val_fraction", val_fraction)
        _check_int(owner, "seed", seed, 0)
        if not isinstance(shuffle, bool):
            raise ValueError(f"{owner}: shuffle must be True or False, got {shuffle!r}")
        self.batch_size, self.val_fraction, self.seed, self.shuffle = batch_size, val_fraction, seed, shuffle
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def examples(self) -> tuple[Tensor, Tensor]:
        """All examples: features (N, num_features) float32 and targets (int64 class ids, or float32)."""
        raise NotImplementedError(f"{type(self).__name__} must implement examples() or override setup()")

    def split_sizes(self, n: int) -> tuple[int, int]:
        """(training, validation) sizes for n examples; both must be at least 1."""
        n_val = round(n * self.val_fraction)
        if not 0 < n_val < n:
            raise ValueError(f"{type(self).__name__}: val_fraction {self.val_fraction} of {n} examples leaves "
                             f"{n - n_val} for training and {n_val} for validation; both need at least one")
        return n - n_val, n_val

    def setup(self, stage: str | None = None) -> None:
        x, y = self.examples()
        self.train_set, self.val_set = random_split(
            TensorDataset(x, y), list(self.split_sizes(len(y))), generator=torch.Generator().manual_seed(self.seed))

    def _progress(self) -> tuple[int, int]:
        """How many batches of the current epoch the fit loop has trained, and how many the epoch has.

        ``batch_progress.current.processed`` counts the batches whose training step has run; it is the
        count Lightning resumes its own loop from, so the data and the loop cannot disagree, wherever
        in the step the checkpoint is written. ``num_training_batches`` is the epoch's length, which
        ``limit_train_batches`` and ``overfit_batches`` may make shorter than the loader.
        """
        if self.trainer is None:  # its loaders were passed to trainer.fit themselves
            if not getattr(self, "_warned_detached", False):
                self._warned_detached = True
                rank_zero_warn(
                    f"{type(self).__name__}: its training loader is checkpointed, but the DataModule is not attached "
                    "to the Trainer, so it cannot tell how many batches of the epoch were trained: a run resumed "
                    "from this checkpoint starts the epoch again from its first batch. Pass it as "
                    "trainer.fit(model, datamodule=...) for an exact resume.")
            return 0, 1
        trained = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return trained, self.trainer.num_training_batches

    def train_dataloader(self) -> ResumableDataLoader:
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a DataLoader")
        shards = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        sampler = EpochSampler(len(self.train_set), seed=self.seed, shuffle=self.shuffle,
                               num_replicas=shards.get("num_replicas", 1), rank=shards.get("rank", 0))
        # keywords, not positions: Lightning rebuilds the loader with another sampler= for overfit_batches
        return ResumableDataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler,
                                   progress=self._progress)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a DataLoader")
        return DataLoader(self.val_set, batch_size=self.val_batch_size)


class DigitsDataModule(SplitDataModule):
    """1,797 handwritten digits as 64 pixel intensities scaled to [0, 1], 10 classes; a seeded train/val split.

    The data ship with scikit-learn (``load_digits``): 8×8 images, each pixel 0..16, divided by 16.
    ``random_split`` with ``Generator().manual_seed(seed)`` keeps 359 for validation (the split the
    README's numbers were made with).
    """

    num_features, num_classes, task = 64, 10, "classification"

    def __init__(self, batch_size: int = 32, val_fraction: float = 0.2, seed: int = 0, shuffle: bool = True):
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, seed=seed, shuffle=shuffle)

    def examples(self) -> tuple[Tensor, Tensor]:
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # pixel intensities are 0..16
        return x, torch.tensor(digits.target, dtype=torch.long)


class XORDataModule(SplitDataModule):
    """The four XOR points {(0,0)→0, (0,1)→1, (1,0)→1, (1,1)→0}: the smallest problem no line can solve.

    The training set is ``copies`` copies of the four points (so that an epoch is a number of steps,
    ``4·copies / batch_size``, rather than a single one), each copy moved by Gaussian noise of
    standard deviation ``noise`` (seeded with ``seed``; 0: the exact points). Validation is the four
    exact points.
    """

    num_features, num_classes, task = 2, 2, "classification"
    points = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])

    def __init__(self, copies: int = 256, noise: float = 0.0, batch_size: int = 32, seed: int = 0,
                 shuffle: bool = True):
        super().__init__(batch_size=batch_size, val_fraction=None, seed=seed, shuffle=shuffle)
        _check_int(type(self).__name__, "copies", copies, 1)
        _check_noise(type(self).__name__, noise)
        self.copies, self.noise = copies, noise

    def setup(self, stage: str | None = None) -> None:
        x = self.points.repeat(self.copies, 1)
        x = x + self.noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(self.seed))
        self.train_set = TensorDataset(x, self.labels.repeat(self.copies))
        self.val_set = TensorDataset(self.points.clone(), self.labels.clone())


class TwoSpiralsDataModule(SplitDataModule):
    """Two interleaved spirals in the plane, one per class: Lang & Witbrock's benchmark.

    K. J. Lang and M. J. Witbrock, "Learning to tell two spirals apart", Proceedings of the 1988
    Connectionist Models Summer School. Point i = 0..n−1 of spiral 1 lies at angle φᵢ = 2π·turns·i/(n−1)
    and radius rᵢ = 1 − (12/13)·i/(n−1), at (rᵢ sin φᵢ, rᵢ cos φᵢ), class 1; spiral 2 is spiral 1
    turned by half a turn, (−x, −y), class 0. With the defaults (97 points, 3 turns) these are the
    benchmark's 194 points (φᵢ = i·π/16, rᵢ = 6.5·(104 − i)/104) divided by 6.5, so that they lie in
    [−1, 1]². ``noise``: Gaussian noise of that standard deviation on every point (seeded).

    Why it is hard for a small network: the boundary between the classes winds around the origin
    ``turns`` times, and the nearest points of the two classes are close together and alternate
    along every ray from the centre. Each hidden sigmoid unit draws one straight edge, so a net with
    one small hidden layer cannot follow the spiral; Lang & Witbrock used three hidden layers of five
    units with shortcut connections (2-5-5-5-1) and some 20,000 epochs of backprop.
    """

    num_features, num_classes, task = 2, 2, "classification"

    def __init__(self, points_per_class: int = 97, turns: float = 3.0, noise: float = 0.0, val_fraction: float = 0.2,
                 batch_size: int = 32, seed: int = 0, shuffle: bool = True):
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, seed=seed, shuffle=shuffle)
        owner = type(self).__name__
        _check_int(owner, "points_per_class", points_per_class, 2)
        if isinstance(turns, bool) or not isinstance(turns, (int, float)) or not 0.0 < turns < math.inf:
            raise ValueError(f"{owner}: turns must be a positive finite number, got {turns!r}")
        _check_noise(owner, noise)
        self.points_per_class, self.turns, self.noise = points_per_class, turns, noise
        self.split_sizes(2 * points_per_class)  # a bad split fails now, not when the fit starts

    def examples(self) -> tuple[Tensor, Tensor]:
        t = torch.linspace(0.0, 1.0, self.points_per_class, dtype=torch.float64)  # i / (n − 1)
        phi = 2 * math.pi * self.turns * t
        r = 1 - (12 / 13) * t
        spiral = torch.stack([r * torch.sin(phi), r * torch.cos(phi)], dim=1)
        x = torch.cat([spiral, -spiral]).float()
        x = x + self.noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(self.seed))
        y = torch.cat([torch.ones(self.points_per_class), torch.zeros(self.points_per_class)]).long()
        return x, y


class TabularDataModule(SplitDataModule):
    """The user's own table: a ``.csv`` file with a header row, or an ``.npz`` file of named arrays.

    ``target`` names the column (CSV) or array (NPZ) to predict; ``features`` the inputs (default:
    every other column or array, in file order). In an NPZ file each feature is a 1-D array of N
    values, or a 2-D array (N, k) of k features (named ``X[:, j]`` in messages).

    ``task="classification"``: the distinct target values, sorted (numerically when all are numbers,
    else as text), become the class ids 0..C−1; ``class_names[c]`` is class c's value. At least two
    classes are needed. ``task="regression"``: the target is a number, float32 (N,), or (N, T) for a
    2-D NPZ array.

    ``standardize=True``: every feature becomes (x − mean) / std with the mean and (population)
    standard deviation of the *training* split only, so that nothing about the validation rows leaks
    into training; both splits use them (``feature_mean``, ``feature_std``, also for new inputs). A
    constant feature has std 0 and is only centred.

    The file is read and checked when the DataModule is made, so bad input stops before any
    training: a missing file (its absolute path), an unsupported suffix, no rows, a row of the wrong
    length, a missing column (the columns there are listed), a feature value that is not a number,
    NaN or infinity (column, row and value), a target with a single class. Errors are
    ``FileNotFoundError`` or ``ValueError``.
    """

    SUFFIXES = (".csv", ".npz")

    def __init__(self, path: str | Path, target: str, features: list[str] | None = None,
                 task: Task = "classification", standardize: bool = True, val_fraction: float = 0.2,
                 batch_size: int = 32, seed: int = 0, shuffle: bool = True):
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, seed=seed, shuffle=shuffle)
        owner = type(self).__name__
        if task not in TASKS:
            raise ValueError(f"{owner}: unknown task {task!r}; choose one of {list(TASKS)}")
        if features is not None and (isinstance(features, str) or not features
                                     or not all(isinstance(f, str) for f in features)):
            raise ValueError(f"{owner}: features must be a non-empty list of column names, got {features!r}")
        if features is not None and (twice := sorted({f for f in features if features.count(f) > 1})):
            raise ValueError(f"{owner}: features lists {twice} more than once")
        if not isinstance(standardize, bool):
            raise ValueError(f"{owner}: standardize must be True or False, got {standardize!r}")
        self.path, self.target, self.task, self.standardize = Path(path), target, task, standardize
        self._where = f"{owner}: {self.path}"
        self._lines: list[int] | None = None  # a CSV's data rows' line numbers, for messages
        columns = self._read()
        x, self.feature_names = self._features(columns, features)
        y = self._targets(columns[target])
        self._x, self._y = torch.from_numpy(x), y
        self.num_features = x.shape[1]
        self.split_sizes(len(y))  # a bad split fails now, not when the fit starts
        self.feature_mean: Tensor | None = None
        self.feature_std: Tensor | None = None

    # -- reading ------------------------------------------------------------------------------------
    def _row(self, i: int) -> str:
        """Data row i as messages name it: counted from 1 with its line in a CSV file, an index in an NPZ array."""
        return f"row {i}" if self._lines is None else f"row {i + 1} (line {self._lines[i]})"

    def _read(self) -> dict[str, np.ndarray]:
        """The file's columns by name: each N values, or (N, k) for a 2-D NPZ array."""
        if not self.path.exists():
            raise FileNotFoundError(f"{type(self).__name__}: no such file: {self.path.resolve()}")
        suffix = self.path.suffix.lower()
        if suffix not in self.SUFFIXES:
            raise ValueError(f"{self._where}: unsupported file type {self.path.suffix!r}; "
                             f"choose one of {list(self.SUFFIXES)}")
        columns = self._read_csv() if suffix == ".csv" else self._read_npz()
        if self.target not in columns:
            raise ValueError(f"{self._where}: no target column {self.target!r}; the columns are {list(columns)}")
        return columns

    def _read_csv(self) -> dict[str, np.ndarray]:
        rows, self._lines = [], []
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as file:
                reader = csv.reader(file)
                header = next((values for values in reader if values), None)  # the first line that is not blank
                for values in reader:
                    if not values:  # a blank line
                        continue
                    if len(values) != len(header):
                        raise ValueError(f"{self._where}: line {reader.line_num} has {len(values)} values, the "
                                         f"header has {len(header)} columns {header}")
                    rows.append(values)
                    self._lines.append(reader.line_num)
        except (UnicodeDecodeError, csv.Error) as error:
            raise ValueError(f"{self._where}: not a readable CSV text file ({error})") from error
        if not header:
            raise ValueError(f"{self._where}: the file is empty; it needs a header row and at least one data row")
        header = [name.strip() for name in header]
        if duplicates := sorted({name for name in header if header.count(name) > 1}):
            raise ValueError(f"{self._where}: the header names columns {duplicates} more than once")
        if not rows:
            raise ValueError(f"{self._where}: no data rows after the header {header}")
        table = np.array(rows, dtype=object)
        return {name: table[:, j] for j, name in enumerate(header)}

    def _read_npz(self) -> dict[str, np.ndarray]:
        if not zipfile.is_zipfile(self.path):  # np.load would take it for a pickle or a single .npy array
            raise ValueError(f"{self._where}: not a readable .npz archive (an .npz file is a zip archive of arrays)")
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                columns = {name: archive[name] for name in archive.files}
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise ValueError(f"{self._where}: not a readable .npz archive ({error})") from error
        except ValueError as error:  # an array of Python objects needs pickle
            raise ValueError(f"{self._where}: {error}; save text as a string array (numpy dtype 'U')") from error
        if not columns:
            raise ValueError(f"{self._where}: the archive holds no arrays")
        lengths = {}
        for name, values in columns.items():
            if values.ndim not in (1, 2):
                raise ValueError(f"{self._where}: array {name!r} has shape {values.shape}; arrays must be 1-D (N,) "
                                 "or 2-D (N, k)")
            lengths[name] = len(values)
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{self._where}: the arrays have different numbers of rows: {lengths}")
        if next(iter(lengths.values())) == 0:
            raise ValueError(f"{self._where}: the arrays have no rows")
        return columns

    # -- checking and converting --------------------------------------------------------------------
    def _numbers(self, name: str, values: np.ndarray) -> np.ndarray:
        """``values`` (1-D) as float64; the first that is not a finite number raises, naming column and row."""
        if values.dtype.kind not in "biufUSO":  # complex numbers, dates, records: no real number for each
            raise ValueError(f"{self._where}: column {name!r} holds {values.dtype} values, not real numbers")
        try:  # numbers and text of numbers at once; on a failure find the culprit one by one
            numbers = values.astype(np.float64)
        except (TypeError, ValueError):
            numbers = np.empty(len(values))
            for i, value in enumerate(values):
                text = value.decode() if isinstance(value, bytes) else str(value)
                try:
                    numbers[i] = float(text)
                except (TypeError, ValueError):
                    what = "is empty" if str(text).strip() == "" else f"{text!r} is not a number"
                    raise ValueError(f"{self._where}: column {name!r}, {self._row(i)}: {what}") from None
        if not (finite := np.isfinite(numbers)).all():
            i = int(np.flatnonzero(~finite)[0])
            value = values[i].item() if isinstance(values[i], np.generic) else values[i]  # as the file has it
            raise ValueError(f"{self._where}: column {name!r}, {self._row(i)}: {value!r} is not finite "
                             "(NaN and infinity are not allowed)")
        return numbers

    def _features(self, columns: dict[str, np.ndarray], features: list[str] | None) -> tuple[np.ndarray, list[str]]:
        if features is None:
            features = [name for name in columns if name != self.target]
            if not features:
                raise ValueError(f"{self._where}: no feature columns besides the target {self.target!r}")
        elif missing := [name for name in features if name not in columns]:
            raise ValueError(f"{self._where}: no column {missing[0]!r}; the columns are {list(columns)}")
        elif self.target in features:
            raise ValueError(f"{self._where}: the target {self.target!r} is also listed as a feature")
        names, values = [], []
        for name in features:
            block = columns[name]
            for j, column in enumerate(block.T if block.ndim == 2 else [block]):
                label = f"{name}[:, {j}]" if block.ndim == 2 else name
                names.append(label)
                values.append(self._numbers(label, column))
        return np.stack(values, axis=1).astype(np.float32), names

    def _targets(self, values: np.ndarray) -> Tensor:
        if self.task == "regression":
            columns = values.T if values.ndim == 2 else [values]
            numbers = [self._numbers(f"{self.target}[:, {j}]" if values.ndim == 2 else self.target, column)
                       for j, column in enumerate(columns)]
            y = np.stack(numbers, axis=1) if values.ndim == 2 else numbers[0]
            self.num_classes, self.class_names = None, None
            return torch.from_numpy(y.astype(np.float32))
        if values.ndim != 1:
            raise ValueError(f"{self._where}: the classification target {self.target!r} must be 1-D, "
                             f"got shape {values.shape}")
        labels = self._labels(values)
        classes, ids = np.unique(labels, return_inverse=True)  # sorted distinct values; each row's index in them
        if len(classes) < 2:
            raise ValueError(f"{self._where}: the target {self.target!r} has a single class {classes[0].item()!r}; "
                             "classification needs at least two")
        self.class_names = [value.item() for value in classes]
        self.num_classes = len(classes)
        return torch.from_numpy(ids.reshape(-1).astype(np.int64))

    def _labels(self, values: np.ndarray) -> np.ndarray:
        """Class labels: numbers when every value is one (integers where all are whole), else text."""
        if values.dtype.kind in "biu":
            return values.astype(np.int64)
        if values.dtype.kind == "f":
            numbers = self._numbers(self.target, values)
        else:
            text = [(value.decode() if isinstance(value, bytes) else str(value)).strip() for value in values]
            if not all(map(_is_number, text)):
                if "" in text:
                    raise ValueError(f"{self._where}: column {self.target!r}, {self._row(text.index(''))}: is empty")
                return np.array(text)
            numbers = self._numbers(self.target, np.array(text, dtype=object))
        return numbers.astype(np.int64) if (numbers == np.round(numbers)).all() else numbers

    # -- splitting ----------------------------------------------------------------------------------
    def examples(self) -> tuple[Tensor, Tensor]:
        return self._x, self._y

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        (x_train, y_train), (x_val, y_val) = (self._tensors(part) for part in (self.train_set, self.val_set))
        if self.standardize:
            self.feature_mean = x_train.mean(dim=0)
            std = x_train.std(dim=0, unbiased=False)
            self.feature_std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column: only centred
            x_train = (x_train - self.feature_mean) / self.feature_std
            x_val = (x_val - self.feature_mean) / self.feature_std
        self.train_set, self.val_set = TensorDataset(x_train, y_train), TensorDataset(x_val, y_val)

    @staticmethod
    def _tensors(subset: Subset) -> tuple[Tensor, Tensor]:
        indices = torch.tensor(subset.indices, dtype=torch.long)
        x, y = subset.dataset.tensors
        return x[indices], y[indices]
