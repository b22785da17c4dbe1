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


class TextSamples(L.Callback):
    """Writes a generated text sample to TensorBoard every `every_n_epochs` validation epochs."""

    def __init__(self, every_n_epochs: int = 1, length: int = 300, prime: str | None = None,
                 temperature: float = 0.8, seed: int = 0):
        self.every_n_epochs, self.length, self.prime = every_n_epochs, length, prime
        self.temperature, self.seed = temperature, seed

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        from rnnlab.sampling import default_prime, from_symbols, sample, to_symbols

        vocab = getattr(trainer.datamodule, "vocab", None)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not loggers or vocab is None or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        level = pl_module.symbol_level
        prime = [s for s in to_symbols(self.prime or default_prime(level), level) if s in vocab]
        prime = prime or [vocab.itos[0]]
        ids = sample(pl_module.net, vocab.encode(prime), self.length, self.temperature, seed=self.seed)
        text = from_symbols(prime + vocab.decode(ids[0]), level)
        for logger in loggers:  # two spaces before a newline keep line breaks in TensorBoard's markdown
            logger.experiment.add_text("samples", text.replace("\n", "  \n"), trainer.global_step)


class TrajectoryFigures(L.Callback):
    """Draws P(positive) after each word for the first `num_texts` validation texts, each validation epoch."""

    def __init__(self, num_texts: int = 3, max_words: int = 40):
        self.num_texts, self.max_words = num_texts, max_words

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not loggers or not trainer.is_global_zero:
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
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
