"""Callbacks: run metadata and resume state in checkpoints, the latest-state checkpoint, stopping on divergence."""

from __future__ import annotations

import functools
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, ProgressBar, ThroughputMonitor, WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from rnnlab.checkpoint import non_finite
from rnnlab.checks import check_count, is_int
from rnnlab.data.text import never_sampled
from rnnlab.plotting import pyplot
from rnnlab.sampling import check_sampling_args, default_prime, from_symbols, reads_backward, sample, to_symbols


def batch_rows(batch: Any) -> int:
    """Sequences in a batch whose first element is `(batch, ...)`."""
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.size(0))


def batch_tokens(batch: Any) -> int:
    """Input positions in a batch whose first element is `(batch, time)`."""
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.numel())


class RunArtifacts(L.Callback):
    """Stores the run's composed config, the data's vocabulary and the model's data-given arguments
    (`model_kwargs`) in every checkpoint, as plain data, so that evaluation and sampling need nothing
    but the checkpoint file. Lightning's pickled hyperparameters are left out: the module is rebuilt
    from the config, and a checkpoint loads with `torch.load(weights_only=True)`."""

    def __init__(self, config: dict, model_kwargs: dict | None = None):
        self.config = config
        self.model_kwargs = dict(model_kwargs or {})

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        for key in [k for k in checkpoint if k.startswith(("hyper_parameters", "hparams_", "datamodule_hyper"))]:
            del checkpoint[key]
        extra = {"config": self.config, "model_kwargs": self.model_kwargs}
        vocab = getattr(trainer.datamodule, "vocab", None)
        if vocab is not None:
            extra["vocab"] = vocab.state_dict()
        checkpoint["rnnlab"] = extra


def rng_states() -> dict:
    """The torch, numpy and Python RNG states as tensors and plain containers."""
    states = _collect_rng_states(include_cuda=torch.cuda.is_available())
    name, keys, pos, has_gauss, gauss = states.pop("numpy")
    states["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    return states


def set_rng_states(states: dict) -> None:
    states = dict(states)
    name, keys, pos, has_gauss, gauss = states.pop("numpy")
    states["numpy"] = (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
    _set_rng_states(states)


class ExactResume(L.Callback):
    """Adds to every checkpoint what Lightning leaves out, so that a resumed run continues bit for bit:
    the torch, numpy and Python RNG states and the module's carried state (`carried_state()` /
    `load_carried_state()` where it has them, e.g. a language model's hidden state between windows).

    The position inside the epoch is the train loader's (`data.loaders.ResumableLoader`); the
    optimizer, lr schedule and loop counters are Lightning's. A checkpoint written while a batch was
    failing (a crash, a second Ctrl-C) holds the state from before that batch, which its weights still have.
    """

    def __init__(self):
        self._before_batch: dict | None = None
        self._to_restore: dict | None = None

    def _state(self, pl_module: L.LightningModule) -> dict:
        carried = getattr(pl_module, "carried_state", None)
        return {"rng": rng_states(), "carried": carried() if carried else None}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._before_batch = {**self._state(pl_module), "step": trainer.global_step}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._before_batch = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        failing = self._before_batch is not None and self._before_batch["step"] == trainer.global_step
        state = self._before_batch if failing else self._state(pl_module)
        checkpoint["resume"] = {"rng": state["rng"], "carried": state["carried"]}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._to_restore = checkpoint.get("resume")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._to_restore is None:
            return
        set_rng_states(self._to_restore["rng"])
        if self._to_restore["carried"] is not None and hasattr(pl_module, "load_carried_state"):
            pl_module.load_carried_state(self._to_restore["carried"])
        self._to_restore = None


class LastCheckpoint(Checkpoint):
    """Keeps `<dirpath>/last.ckpt` the latest state of training: every `every_n_train_steps` optimizer
    steps, after every epoch (once validated and the lr schedule stepped), at the end, on SIGTERM
    (Lightning stops after the batch), on Ctrl-C (the first stops after the batch, a second at once)
    and on a crash. Nothing is written before the first step, after a divergence, or while any
    weight is not finite."""

    def __init__(self, dirpath: str, every_n_train_steps: int | None = 100):
        if every_n_train_steps is not None and (not is_int(every_n_train_steps) or every_n_train_steps < 0):
            raise ValueError("every_n_train_steps must be an integer >= 0 or null (0 or null: only after epochs and "
                             f"when stopped), got {every_n_train_steps!r}")
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self._saved_step = -1
        self._stop_requested = False
        self._previous_sigint = None

    @property
    def path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step in (0, self._saved_step) or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if non_finite(pl_module.state_dict()):  # checked here too: a save inside on_exception must not raise
            rank_zero_warn(f"not writing {self.path}: the weights at step {trainer.global_step} are not finite")
            return
        trainer.save_checkpoint(self.path)
        self._saved_step = trainer.global_step

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        rank_zero_info("\nCtrl-C: stopping after this batch and saving last.ckpt (Ctrl-C again to stop at once)")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.every_n_train_steps
        if self._stop_requested or (every and trainer.global_step % every == 0):
            self.save(trainer, pl_module)
        if self._stop_requested:
            raise KeyboardInterrupt

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer, pl_module)  # the previous epoch complete: validated, lr schedule stepped

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, TrainingDiverged) and trainer.state.fn == "fit":
            self.save(trainer, pl_module)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def state_dict(self) -> dict:
        return {"every_n_train_steps": self.every_n_train_steps}


class LineProgress(ProgressBar):
    """Progress for logs, CI and schedulers (output that is not a terminal): one plain line every
    `every_n_steps` training steps and one per validation, instead of a bar's carriage-return frames."""

    def __init__(self, every_n_steps: int = 100):
        super().__init__()
        self.every_n_steps, self._enabled, self._start = every_n_steps, True, 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _line(self, trainer: L.Trainer, pl_module: L.LightningModule, what: str) -> None:
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        print(f"epoch {trainer.current_epoch} {what} ({time.perf_counter() - self._start:.0f} s)  {shown}", flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._enabled and trainer.is_global_zero and (batch_idx + 1) % self.every_n_steps == 0:
            self._line(trainer, pl_module, f"step {batch_idx + 1}/{self.total_train_batches}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero and not trainer.sanity_checking:
            self._line(trainer, pl_module, "validated")


class TokenThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor under names a user looks for: `train/tokens_per_sec` (its items: the
    `length_fn` count), `train/sequences_per_sec`, `train/batches_per_sec`; evaluation throughput only
    with `log_eval=True`."""

    NAMES = {"items_per_sec": "tokens_per_sec", "samples_per_sec": "sequences_per_sec",
             "batches_per_sec": "batches_per_sec"}

    def __init__(self, *args: Any, log_eval: bool = False, **kwargs: Any):
        window = kwargs.get("window_size", 100)
        if not is_int(window) or window < 2:  # Lightning asserts it: throughput is over a window's first and last
            raise ValueError(f"window_size must be an integer >= 2, got {window!r}")
        for name in ("batch_size_fn", "length_fn"):  # called every batch: the config's partials' functions
            fn = kwargs.get(name)
            if isinstance(fn, functools.partial) and not fn.args and not fn.keywords:
                kwargs[name] = fn.func  # Hydra's partial (1.3.8) checks its target policy at every call: 80 us
        super().__init__(*args, **kwargs)
        self.log_eval = log_eval

    def _compute(self, trainer: L.Trainer, iter_num: int | None = None) -> None:
        stage = trainer.state.stage
        if not trainer._logger_connector.should_update_logs or (stage != RunningStage.TRAINING and not self.log_eval):
            return
        metrics = self._throughputs[stage].compute()
        if trainer.world_size == 1:  # one device: Lightning reports only the per-device rates, which are the totals
            metrics = {k.removeprefix("device/"): v for k, v in metrics.items()}
        named = {f"{stage.value}/{self.NAMES[k]}": v for k, v in metrics.items() if k in self.NAMES}
        trainer._logger_connector.log_metrics(named, step=iter_num)


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite or exceeded its bound."""


class GradientNorm(L.Callback):
    """Logs `train/grad_norm`, the 2-norm of all gradients before clipping, every `every_n_steps` optimizer steps
    (null: the Trainer's `log_every_n_steps`, so it costs one norm per logged step), and, when the Trainer clips by
    norm, `train/clip_fraction`: the share of those steps whose norm was above `gradient_clip_val`, per epoch."""

    def __init__(self, every_n_steps: int | None = None):
        check_count("callbacks.grad_norm.every_n_steps", every_n_steps, nullable=True)
        self.every_n_steps = every_n_steps

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        every = self.every_n_steps or trainer.log_every_n_steps or 1
        if (trainer.global_step + 1) % every:  # the steps Lightning's loggers write
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)
        pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        clip = trainer.gradient_clip_val
        if clip and trainer.gradient_clip_algorithm in (None, "norm"):
            pl_module.log("train/clip_fraction", (norm > clip).float(), on_step=False, on_epoch=True)


class StopOnDivergence(L.Callback):
    """Stops training at the first training loss that is NaN, infinite or above `max_loss` (per token,
    as logged in `train/loss`), naming the step. No checkpoint is written from the diverged weights."""

    def __init__(self, max_loss: float | None = 100.0):
        if max_loss is not None and not max_loss > 0:
            raise ValueError(f"max_loss must be > 0 (nats per token) or null, got {max_loss}")
        self.max_loss = max_loss

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        if loss is None:
            return
        value = float(loss)
        if math.isfinite(value) and (self.max_loss is None or value <= self.max_loss):
            return
        bound = "" if not math.isfinite(value) else f" above callbacks.stop_on_divergence.max_loss={self.max_loss}"
        raise TrainingDiverged(
            f"training loss {value:.4g}{bound} at global step {trainer.global_step}, epoch {trainer.current_epoch}, "
            f"batch {batch_idx}: training stopped (lower the learning rate or clip gradients: "
            "trainer.gradient_clip_val); last.ckpt keeps the last finite state"
        )


class TextSamples(L.Callback):
    """Writes a generated text sample to TensorBoard every `every_n_epochs` validation epochs (drawn as
    `generate.py` draws, with `temperature`, `top_k` and `top_p`)."""

    def __init__(self, every_n_epochs: int = 1, length: int = 300, prime: str | None = None,
                 temperature: float = 0.8, seed: int = 0, top_k: int | None = None, top_p: float | None = None):
        check_count("every_n_epochs", every_n_epochs)
        check_sampling_args(length, temperature, "multinomial", top_k, top_p)  # at the start, not after an epoch
        self.every_n_epochs, self.length, self.prime = every_n_epochs, length, prime
        self.temperature, self.seed, self.top_k, self.top_p = temperature, seed, top_k, top_p

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        vocab = getattr(trainer.datamodule, "vocab", None)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not loggers or vocab is None or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        level, data = pl_module.symbol_level, getattr(trainer.datamodule, "hparams", None)
        banned = never_sampled(vocab)
        symbols = to_symbols(self.prime, level, data) if self.prime else to_symbols(default_prime(level), level)
        prime = [s for s in symbols if s in vocab] or [vocab.itos[min(set(range(len(vocab))) - set(banned))]]
        ids = sample(pl_module.net, vocab.encode(prime), self.length, self.temperature, top_k=self.top_k,
                     seed=self.seed, banned=banned, top_p=self.top_p)
        symbols = prime + vocab.decode(ids[0])
        text = from_symbols(symbols[::-1] if reads_backward(level, data) else symbols, level)
        for logger in loggers:  # two spaces before a newline keep line breaks in TensorBoard's markdown
            logger.experiment.add_text("samples", text.replace("\n", "  \n"), trainer.global_step)


class TrajectoryFigures(L.Callback):
    """Draws P(positive) after each word for the first `num_texts` validation texts, each validation epoch."""

    def __init__(self, num_texts: int = 3, max_words: int = 40):
        check_count("num_texts", num_texts)
        check_count("max_words", max_words)
        self.num_texts, self.max_words = num_texts, max_words

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not loggers or not trainer.is_global_zero:
            return
        plt = pyplot()
        if plt is None:
            return
        dataset, vocab = trainer.datamodule.datasets["valid"], trainer.datamodule.vocab
        fig, axes = plt.subplots(self.num_texts, 1, figsize=(10, 2.6 * self.num_texts), squeeze=False)
        for ax, i in zip(axes[:, 0], range(min(self.num_texts, len(dataset)))):
            ids, label = dataset[i]
            ids = ids[: self.max_words]
            traj = pl_module.trajectory(torch.tensor(ids, device=pl_module.device)).cpu()
            ax.plot(traj.numpy(), marker=".")
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            ax.set_ylim(0, 1)
            ax.set_xticks(range(len(ids)), vocab.decode(ids), rotation=60, ha="right", fontsize=7)
            ax.set_title(f"validation text {i} (label {'positive' if label else 'negative'})", fontsize=9)
        fig.tight_layout()
        for logger in loggers:
            logger.experiment.add_figure("per_word_prediction", fig, trainer.global_step)
        plt.close(fig)


class NTASGD(WeightAveraging):
    """Non-monotonically triggered averaged SGD (Merity et al. 2018), on Lightning's `WeightAveraging`
    (`torch.optim.swa_utils.AveragedModel`).

    Training runs plain until a validation's `monitor` is worse than the best of all checks but the last
    `nonmono` (`len(history) > nonmono and value > min(history[:-nonmono])`, AWD-LSTM's test); from the next
    optimizer step on, the weights are averaged after every step. From the first average on, validation,
    checkpoints (`state_dict`) and the final weights are the average; the raw weights stay in the checkpoint
    for resuming. `start="now"` averages from the first step: the fine-tuning stage (`init_from=`).
    """

    def __init__(self, monitor: str = "val/loss", nonmono: int = 5, start: str = "trigger"):
        if start not in ("trigger", "now"):
            raise ValueError(f"callbacks.nt_asgd.start must be 'trigger' or 'now', got {start!r}")
        if nonmono < 1:
            raise ValueError(f"callbacks.nt_asgd.nonmono must be at least 1, got {nonmono}")
        super().__init__(use_buffers=True)
        self.monitor, self.nonmono = monitor, nonmono
        self.triggered = start == "now"
        self.history: list[float] = []
        self.triggered_at: int | None = 0 if self.triggered else None
        self._raw: dict | None = None

    @property
    def averaging(self) -> bool:
        """Whether the average holds at least one step's weights (before that it is a stale copy)."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return self.triggered and step_idx is not None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.triggered or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if len(self.history) > self.nonmono and value > min(self.history[: -self.nonmono]):
            self.triggered, self.triggered_at = True, trainer.global_step
            rank_zero_info(f"NT-ASGD: {self.monitor} {value:.4f} has not improved for {self.nonmono} checks; "
                           f"averaging the weights from step {trainer.global_step} on")
        self.history.append(value)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaging:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaging:
            self._swap_models(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaging:  # the raw weights stay what the final last.ckpt resumes from
            self._raw = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            self._copy_average_to_current(pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.averaging:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            if self._raw is not None:
                checkpoint["current_model_state"] = self._raw

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # resuming a fit restores both weights; testing a checkpoint uses its state_dict (the average) alone
        if "current_model_state" in checkpoint and trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "triggered": self.triggered, "triggered_at": self.triggered_at,
                "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.triggered, self.triggered_at = state_dict["triggered"], state_dict["triggered_at"]
        self.history = list(state_dict["history"])


LATER = ("train/", "test/", "lr-")  # logged after the first validation (or only when testing): checked then


class MonitoredMetrics(L.Callback):
    """Refuses a monitored metric the task does not log, at the first validation (the sanity check's when there is
    one), before a run spends an epoch (a checkpoint's or early stopping's monitor) or all of training
    (`optimized_metric`) on it, or silently never acts on it (NT-ASGD's). `monitored` maps each config key to the
    name it holds; names of training, test and learning-rate metrics are left to the end of the run."""

    def __init__(self, monitored: dict[str, str]):
        self.monitored = {key: name for key, name in monitored.items() if not str(name).startswith(LATER)}
        self.checked = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.checked:
            return
        self.checked = True
        logged = set(trainer.callback_metrics)
        for key, name in self.monitored.items():
            if name not in logged:
                names = ", ".join(sorted(k for k in logged if not k.startswith(LATER) and k not in ("epoch", "step")))
                raise ValueError(f"{key}={name!r} is not a metric this task logs; at validation it logs {names}")


def early_stopping(patience: int | None = None, **kwargs: Any) -> EarlyStopping | None:
    """Lightning's `EarlyStopping` (`kwargs`: its monitor, mode, min_delta, ...) once `patience`, the validations
    without improvement it waits, is set; None, no callback, while it is null."""
    if patience is None:
        return None
    check_count("patience", patience)
    return EarlyStopping(patience=patience, **kwargs)
