"""Language-model LightningModules with truncated BPTT over any network `net` (word level; CharRNN for characters)."""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from rnnlab.checks import check_range
from rnnlab.losses import cross_entropy
from rnnlab.models.lm import RNNLM, AdaptiveSoftmax
from rnnlab.models.recurrent import detach_state, move_state
from rnnlab.optim import configure_optimizers

LOSS_REDUCTIONS = ("sum_time", "mean")
# Perplexity is reported as exp(min(NLL, this)): a diverged run shows a huge but finite number, in float32 too.
MAX_LOG_PPL = 80.0


def perplexity(nll: float) -> float:
    """exp of a mean NLL per token, capped at exp(MAX_LOG_PPL)."""
    return math.exp(min(nll, MAX_LOG_PPL))


class LanguageModel(L.LightningModule):
    """Next-symbol prediction with `net` (ids `(batch, time)` -> logits `(batch, time, vocab)` and a state)
    over BPTT windows, carrying the hidden state between windows; reports perplexity.

    The state is detached after every window, reset to zeros at the start of each training
    epoch and of each validation/test pass (train and eval states are kept apart, so a
    mid-epoch validation does not disturb training).

    Loss convention (`loss_reduction`):
      - "sum_time": cross-entropy summed over the time steps and averaged over the batch,
        as Zaremba et al. and the TensorFlow PTB tutorial do; their lr 1 and clip 5 apply as is.
      - "mean": averaged over all tokens (pytorch/examples); the same optimisation then needs
        lr x bptt and clip / bptt (lr 20, clip 0.25 for bptt 20).
    Either way the reported loss is the mean NLL per token (nats) and perplexity is
    exp(total NLL / total tokens) over the whole split.

    Activation regularization (AWD-LSTM, training only; `net.outputs` must give the last layer's outputs):
    `ar` x mean square of the dropped outputs, `tar` x mean square of the change of the undropped outputs
    from one time step to the next; both are added to the training loss, never to the reported NLL.
    """

    symbol_level = "word"  # how generate.py splits a prime and joins symbols: "word" or "char"

    # pragma: no mutate start (save_hyperparameters reads the constructor's frame, which mutmut would wrap)
    def __init__(
        self,
        net: RNNLM,
        loss_reduction: str = "sum_time",
        bptt: int = 20,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        compile: bool = False,
        ar: float = 0.0,
        tar: float = 0.0,
    ):
        super().__init__()
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"model.loss_reduction must be one of {LOSS_REDUCTIONS}, got {loss_reduction!r}")
        check_range("model.ar", ar, 0)
        check_range("model.tar", tar, 0)
        if (ar or tar) and not hasattr(net, "outputs"):
            raise ValueError(f"model.ar/model.tar need a network with `outputs()`; {type(net).__name__} has none")
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
        if compile:
            self.net.compile()  # in place: parameter names, hence checkpoints, stay the same
        self.nll = torch.nn.ModuleDict({f"{stage}_nll": MeanMetric() for stage in ("train", "val", "test")})
        self.nll["train_nll"].persistent(True)  # a resumed epoch reports the whole epoch's training loss
        self.states: dict[str, object] = {}

    # pragma: no mutate end
    def forward(self, ids: Tensor, state=None) -> tuple[Tensor, object]:
        return self.net(ids, state)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        """Mean NLL per token of one window and its activation regularization (0 outside training);
        updates the stage's state and token-weighted metric."""
        inputs, targets = batch
        state = detach_state(self.states.get(stage))
        penalty = torch.zeros((), device=inputs.device)
        regularized = stage == "train" and bool(self.hparams.ar or self.hparams.tar)
        adaptive = stage == "train" and isinstance(getattr(self.net, "decoder", None), AdaptiveSoftmax)
        if regularized or adaptive:
            logits, state, hidden, dropped = self.net.outputs(inputs, state, decode=not adaptive)
            if regularized:
                penalty = self.hparams.ar * dropped.pow(2).mean()
                if hidden.size(1) > 1:
                    penalty = penalty + self.hparams.tar * (hidden[:, 1:] - hidden[:, :-1]).pow(2).mean()
        else:
            logits, state = self(inputs, state)
        self.states[stage] = state
        if adaptive:  # the clusters a window's targets need, not the whole distribution
            nll = self.net.decoder.nll(dropped, targets)
        else:
            nll = cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        self.nll[f"{stage}_nll"].update(nll.detach(), targets.numel())
        return nll, penalty

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        nll, penalty = self._step(batch, "train")
        self.log("train/loss", nll, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/ppl", torch.exp(nll.detach().clamp(max=MAX_LOG_PPL)), on_step=True, on_epoch=False,
                 prog_bar=True)
        loss, steps = nll + penalty, batch[0].size(1)
        if self.hparams.loss_reduction == "sum_time":
            return loss * steps
        return loss * (steps / self.hparams.bptt)  # variable windows: AWD-LSTM's lr rescaling

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def carried_state(self):
        """The hidden state the next training window starts from (None at an epoch's start)."""
        return detach_state(self.states.get("train"))

    def load_carried_state(self, state) -> None:
        self.states["train"] = None if state is None else move_state(state, self.device)

    def on_train_epoch_start(self) -> None:
        self.states.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self.states.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self.states.pop("test", None)

    def epoch_metrics(self, nll: float) -> dict[str, float]:
        """Metrics derived from the mean NLL per token of a whole split."""
        return {"ppl": perplexity(nll)}

    def _log_epoch(self, stage: str) -> None:
        metric = self.nll[f"{stage}_nll"]
        nll = metric.compute()
        metric.reset()
        metrics = {"loss": nll.item(), **self.epoch_metrics(nll.item())}
        suffix = "_epoch" if stage == "train" else ""  # train/loss is the per-step value
        self.log_dict({f"{stage}/{k}{suffix}": v for k, v in metrics.items()}, prog_bar=stage != "train",
                      sync_dist=False)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler, default_lr=1.0)


class CharRNN(LanguageModel):
    """Character-level language model; adds bits per character to the metrics."""

    symbol_level = "char"

    def epoch_metrics(self, nll: float) -> dict[str, float]:
        return {**super().epoch_metrics(nll), "bpc": nll / math.log(2)}
