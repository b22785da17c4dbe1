"""The sine-regression DataModule over the reference lab sheet's windows."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DistributedSampler, TensorDataset

from rnnlab.checks import check_count, check_range
from rnnlab.data.loaders import ResumableLoader, process_rank
from rnnlab.data.series import make_windows, read_series, sine_series, split_windows


class SineDataModule(L.LightningDataModule):
    """Windows of a sine series (or of `series_file`): `(batch, seq_len, 1)` -> `(batch, horizon)`."""

    def __init__(self, length: int = 200, step: float = 1.0, waves: Sequence[dict] | None = None,
                 noise_std: float = 0.0, seq_len: int = 50, horizon: int = 1, val_windows: int = 50,
                 series_file: str | None = None, batch_size: int = 16, seed: int = 0):
        super().__init__()
        for name, value in (("seq_len", seq_len), ("horizon", horizon), ("batch_size", batch_size)):
            check_count(f"data.{name}", value)
        check_range("data.noise_std", noise_std, 0)
        self.save_hyperparameters(logger=False)  # the loggers get the whole run config (train.build)
        self.series: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.series is not None:
            return
        h = self.hparams
        if h.series_file:
            self.series = read_series(h.series_file)
        else:
            self.series = sine_series(h.length, h.step, h.waves, h.noise_std, h.seed)
        x, y = make_windows(self.series, h.seq_len, h.horizon)
        (self.x_train, self.y_train), (self.x_val, self.y_val) = split_windows(x, y, h.val_windows)

    def model_kwargs(self) -> dict:
        """What the model (`net` for its network) must know about the data to be built."""
        return {"net": {"horizon": self.hparams.horizon}}

    def _dataset(self, x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))

    def train_dataloader(self) -> ResumableLoader:
        self.setup()
        dataset = self._dataset(self.x_train, self.y_train)
        rank, world = process_rank(self.trainer)
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=self.hparams.seed)
        return ResumableLoader(dataset, self.hparams.batch_size, sampler=sampler, trainer=self.trainer)

    def val_dataloader(self) -> ResumableLoader:
        self.setup()
        return ResumableLoader(self._dataset(self.x_val, self.y_val), self.hparams.batch_size)

    test_dataloader = val_dataloader
