"""Sine-wave regression: a window of values in, the next `horizon` values out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanSquaredError

from rnnlab.models.sine import SeriesRegressor
from rnnlab.optim import configure_optimizers
from rnnlab.plotting import pyplot, save_figure

log = logging.getLogger(__name__)


class SineRegressor(L.LightningModule):
    """Regression of the next values of a series with `net` (`models.sine.SeriesRegressor`):
    windows `(batch, time, 1)` -> `(batch, horizon)`, MSE loss.

    Logs val/mse next to val/baseline_mse, the error of repeating the last input value.
    At the end of training it plots predictions and a free-running forecast against the truth
    (PNG in the run directory and a TensorBoard figure).
    """

    def __init__(self, net: SeriesRegressor, optimizer: Callable | None = None, scheduler: Callable | None = None,
                 forecast_steps: int = 50, plot: bool = True):
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
        self.val_mse, self.baseline_mse, self.test_mse = MeanSquaredError(), MeanSquaredError(), MeanSquaredError()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=x.size(0))
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=x.size(0))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_mse.update(self(x), y)
        self.baseline_mse.update(x[:, -1, :].expand_as(y).contiguous(), y)

    def on_validation_epoch_end(self) -> None:
        self.log_dict({"val/mse": self.val_mse.compute(), "val/baseline_mse": self.baseline_mse.compute()},
                      prog_bar=True)
        self.val_mse.reset()
        self.baseline_mse.reset()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_mse.update(self(x), y)

    def on_test_epoch_end(self) -> None:
        self.log("test/mse", self.test_mse.compute())
        self.test_mse.reset()

    @torch.no_grad()
    def forecast(self, window: Tensor, steps: int) -> Tensor:
        """Free-running: predict, append the first prediction to the window, repeat: `(seq_len, 1)` -> `(steps,)`."""
        window = window.clone().to(self.device)
        out = []
        for _ in range(steps):
            nxt = self(window[None])[0, :1]
            out.append(nxt)
            window = torch.cat([window[1:], nxt[None]], 0)
        return torch.cat(out)

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)

    def on_fit_end(self) -> None:  # not after a learning-rate range test, which ends inside fit
        if self.hparams.plot and self.trainer.is_global_zero:
            plot_predictions(self, self.trainer)


def plot_predictions(model: SineRegressor, trainer: L.Trainer) -> Path | None:
    """Validation predictions and a free-running forecast against the truth; returns the PNG path."""
    plt = pyplot()
    if plt is None:
        return None
    dm = trainer.datamodule
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x_val = torch.tensor(dm.x_val, dtype=torch.float32, device=model.device)
        pred = model(x_val)[:, 0].cpu().numpy()
        steps = min(model.hparams.forecast_steps, len(dm.x_val))
        free = model.forecast(x_val[0], steps).cpu().numpy()
    model.train(was_training)
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    truth = dm.y_val[:, 0]
    axes[0].plot(truth, label="true")
    axes[0].plot(pred, "--", label="predicted (one step ahead)")
    axes[0].set_title(f"validation windows: MSE {np.mean((pred - truth) ** 2):.2e}")
    axes[1].plot(truth[:steps], label="true")
    axes[1].plot(free, "--", label="free-running forecast")
    axes[1].set_title(f"free-running for {steps} steps from the first validation window")
    for ax in axes:
        ax.legend(loc="upper right")
    axes[1].set_xlabel("validation window")
    fig.tight_layout()
    path = save_figure(fig, Path(trainer.default_root_dir) / "sine_predictions.png")
    for logger in trainer.loggers:
        if hasattr(logger.experiment, "add_figure"):
            logger.experiment.add_figure("predictions", fig, trainer.global_step)
    plt.close(fig)
    log.info("prediction plot: %s", path)
    return path
