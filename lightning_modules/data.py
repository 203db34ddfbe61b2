"""Data: scikit-learn's handwritten digits (8×8 images, 10 classes), shipped inside the package."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset, random_split


class DigitsDataModule(pl.LightningDataModule):
    """1,797 handwritten digits as 64 pixel intensities scaled to [0, 1]; a seeded train/val split."""

    def __init__(self, batch_size: int = 32, val_fraction: float = 0.2, seed: int = 0):
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"DigitsDataModule: val_fraction must be between 0 and 1, got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"DigitsDataModule: batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.num_features, self.num_classes = 64, 10

    def setup(self, stage: str | None = None) -> None:
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # pixel intensities are 0..16
        y = torch.tensor(digits.target, dtype=torch.long)
        n_val = round(len(y) * self.val_fraction)
        self.train_set, self.val_set = random_split(
            TensorDataset(x, y), [len(y) - n_val, n_val], generator=torch.Generator().manual_seed(self.seed)
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)
