"""Callbacks: run metadata in checkpoints, and stopping on a non-finite loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn


def batch_rows(batch: Any) -> int:
    """Sequences in a batch whose first element is `(batch, ...)`."""
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.size(0))


def batch_tokens(batch: Any) -> int:
    """Input positions in a batch whose first element is `(batch, time)`."""
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.numel())


class RunArtifacts(L.Callback):
    """Stores the run's composed config and the data's vocabulary in every checkpoint,
    so that evaluation and sampling need nothing but the checkpoint file."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        extra = {"config": self.config}
        vocab = getattr(trainer.datamodule, "vocab", None)
        if vocab is not None:
            extra["vocab"] = vocab.state_dict()
        checkpoint["rnnlab"] = extra


class StopOnNonFiniteLoss(L.Callback):
    """Stops training at the first NaN/inf training loss, naming the step."""

    def __init__(self):
        self.message: str | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = loss.detach().float() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
        if not bool(torch.isfinite(value)):
            self.message = (
                f"non-finite training loss ({value.item()}) at global step {trainer.global_step}, "
                f"epoch {trainer.current_epoch}, batch {batch_idx}: training stopped "
                "(lower the learning rate or clip gradients: trainer.gradient_clip_val)"
            )
            rank_zero_warn(self.message)
            trainer.should_stop = True
