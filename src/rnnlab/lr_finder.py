"""The learning-rate range test (Smith 2017; Lightning's `Tuner.lr_find`): the lr raised step by step over a short
stretch of training, the loss recorded at each, and an lr suggested from the curve."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.tuner import Tuner

from rnnlab.checks import check_count, is_number
from rnnlab.files import atomic_write
from rnnlab.plotting import pyplot, save_figure

log = logging.getLogger(__name__)

SKIP_BEGIN, SKIP_END = 10, 1  # the points the suggestion leaves out at each end of the curve
MIN_POINTS = SKIP_BEGIN + SKIP_END + 2  # the fewest a suggestion can come from (a gradient needs two)


def check_lr_find(cfg: Mapping) -> None:
    """The run's `lr_find` settings, when `lr_find.steps` asks for the test."""
    settings = cfg.get("lr_find") or {}
    steps, min_lr, max_lr = settings.get("steps"), settings.get("min_lr"), settings.get("max_lr")
    if steps is None:
        return
    if cfg.get("ckpt_path"):
        raise ValueError("lr_find tests learning rates from the initial weights: not with ckpt_path")
    if (cfg.get("trainer") or {}).get("fast_dev_run"):
        raise ValueError("lr_find does not run under trainer.fast_dev_run (debug=fdr): Lightning skips the range test")
    check_count("lr_find.steps", steps)
    if steps < MIN_POINTS:
        raise ValueError(f"lr_find.steps must be at least {MIN_POINTS} (the suggestion leaves out the "
                         f"first {SKIP_BEGIN} and the last {SKIP_END}), got {steps}")
    for key, value in (("lr_find.min_lr", min_lr), ("lr_find.max_lr", max_lr)):
        if not is_number(value) or not 0 < value < math.inf:
            raise ValueError(f"{key} must be a number > 0, got {value!r}")
    if max_lr <= min_lr:
        raise ValueError(f"lr_find.max_lr must be above lr_find.min_lr, got {max_lr} and {min_lr}")


def smoothed(losses: list[float], beta: float = 0.98) -> list[float]:
    """The exponential moving average of `losses` with its start-up bias removed (Adam's correction): point k is
    `avg_k / (1 - beta^(k+1))`. Lightning's range test divides by `1 - beta^(k+2)`, which pulls its first points
    down (by half at the first) and bends the start of every curve upwards; so the losses are recorded here."""
    out, avg = [], 0.0
    for k, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (k + 1)))
    return out


def suggest(lrs: list[float], losses: list[float]) -> tuple[float | None, float | None]:
    """(suggested lr, lr of the lowest loss) from a range test's smoothed `losses` at `lrs`. The suggestion is the
    steepest fall of the loss per decade of lr, leaving out the first SKIP_BEGIN and the last SKIP_END points; None
    with fewer than two points left, or when it comes after the lowest loss (the loss never fell)."""
    finite = [(loss, lr) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
    lowest = min(finite)[1] if finite else None
    kept = [(lr, loss) for lr, loss in zip(lrs[SKIP_BEGIN:-SKIP_END], losses[SKIP_BEGIN:-SKIP_END])
            if math.isfinite(loss)]
    if len(kept) < 2:
        return None, lowest
    x, y = torch.tensor(kept, dtype=torch.float64).T
    steepest = kept[int(torch.gradient(y, spacing=[x.log10()])[0].argmin())][0]
    return (steepest if steepest <= lowest else None), lowest


def find_lr(trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule, out: Path,
            steps: int, min_lr: float, max_lr: float) -> dict[str, float]:
    """Runs the range test from the model's initial weights (Lightning's `Tuner.lr_find`): `steps` training steps
    with the lr raised exponentially towards `max_lr` from `min_lr`, each parameter group at its own share of it
    (`lr_scale`), stopping early once the loss is far past its lowest. Writes `out/lr_find.csv` (lr, loss and
    smoothed loss per step) and `out/lr_find.png`; returns `lr_find/steps`, `lr_find/min_loss_lr` (the lr of the
    lowest smoothed loss) and `lr_find/suggested_lr` (`suggest`; left out when there is none)."""
    losses: list[float] = []
    module_start, module_end = model.on_train_batch_start, model.on_train_batch_end

    def scale(batch, batch_idx: int):
        """Each parameter group at its share (`lr_scale`, e.g. `model.lr_decay_per_layer`) of the swept lr, which
        Lightning's schedule gives every group alike: the swept lr is then `model.optimizer.lr`'s."""
        swept = trainer.lr_scheduler_configs[0].scheduler.get_last_lr()
        for group, lr in zip(trainer.optimizers[0].param_groups, swept):
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return module_start(batch, batch_idx)

    def record(outputs, batch, batch_idx: int) -> None:
        losses.append(float(outputs["loss"]) if outputs else math.nan)
        module_end(outputs, batch, batch_idx)

    model.on_train_batch_start, model.on_train_batch_end = scale, record  # the range test swaps the callbacks out;
    try:                                                                   # the module's own hooks stay
        finder = Tuner(trainer).lr_find(model, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr,
                                        num_training=steps, early_stop_threshold=4.0, update_attr=False)
    finally:
        del model.on_train_batch_start, model.on_train_batch_end
    every = trainer.accumulate_grad_batches  # one point per optimizer step
    lrs = finder.results["lr"][:len(losses) // every]
    losses = [sum(losses[i * every:(i + 1) * every]) / every for i in range(len(lrs))]
    finder.results = {"lr": lrs, "loss": smoothed(losses)}
    rows = "".join(f"{i},{lr!r},{loss!r},{smooth!r}\n"
                   for i, (lr, loss, smooth) in enumerate(zip(lrs, losses, finder.results["loss"])))
    atomic_write(out / "lr_find.csv", lambda tmp: Path(tmp).write_text("step,lr,loss,smoothed_loss\n" + rows))
    suggested, lowest = suggest(lrs, finder.results["loss"])
    results = {"lr_find/steps": float(len(lrs))}
    if lowest is not None:
        results["lr_find/min_loss_lr"] = lowest
    if suggested is not None:
        results["lr_find/suggested_lr"] = suggested
    plt = pyplot()
    if plt is not None:
        fig = finder.plot()
        ax = fig.axes[0]
        ax.set_ylabel("training loss (smoothed)")
        if suggested is not None:
            ax.plot(suggested, finder.results["loss"][lrs.index(suggested)], "o", color="red", markersize=10)
        save_figure(fig, out / "lr_find.png")
        plt.close(fig)
    if len(lrs) < steps:
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else math.inf
        ran_out = len(lrs) >= trainer.num_training_batches * epochs // every
        log.info("the range test stopped after %d of %d steps: %s", len(lrs), steps,
                 "trainer.max_epochs ran out (raise it)" if ran_out else "the loss was far past its lowest")
    if len(lrs) < MIN_POINTS:
        log.info("too few points for a suggestion: raise lr_find.steps, or widen lr_find.min_lr..max_lr")
    elif suggested is None:
        log.info("the loss did not fall before it rose (its steepest fall comes after its lowest point): no lr is "
                 "suggested; lower lr_find.min_lr or raise lr_find.steps")
    else:
        log.info("suggested lr %.3g (the steepest fall of the loss per decade of lr); the loss was lowest at lr "
                 "%.3g. Train with model.optimizer.lr=%.3g. The curve: %s", suggested, lowest, suggested,
                 out / "lr_find.png")
    return results
