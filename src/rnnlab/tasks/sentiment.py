"""SentimentLSTM: embedding -> (bi)directional recurrent layers over padded batches -> classifier."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score

from rnnlab.models.padded import PaddedRNN, valid_mask
from rnnlab.optim import configure_optimizers

log = logging.getLogger(__name__)

LOSSES = ("ce", "bce", "mse")
POOLINGS = ("last", "mean", "max")


def packs(pack: bool | str, device: torch.device) -> bool:
    """Whether to run on packed sequences: `pack="auto"` packs only on a GPU (slower than unpacked on CPU)."""
    return device.type == "cuda" if pack == "auto" else bool(pack)


def right_align(ids: Tensor, lengths: Tensor) -> Tensor:
    """Left-padded ids `(batch, time)` moved to the right-padded layout the recurrent layers read."""
    time = ids.size(1)
    shift = (time - lengths).unsqueeze(1)
    idx = (torch.arange(time, device=ids.device).unsqueeze(0) + shift) % time
    return ids.gather(1, idx)


class SentimentLSTM(L.LightningModule):
    """P(positive) of a text `(batch, time)` ids with `lengths`.

    Texts are read right-aligned (left-padded batches are realigned) by a `PaddedRNN`, whose
    backward direction starts at each text's real end, so padding never changes a prediction,
    packed or not. `pack=true` runs the recurrent layers on packed sequences (no work past each
    text's end); on CPU PyTorch's packed kernels train several times slower than the unpacked
    (oneDNN) ones, so `pack="auto"` packs only on a GPU. The text's representation is the final
    state of each sequence (`pooling="last"`, both directions when bidirectional) or the mean/max
    of the outputs over its valid steps.
    Losses: `ce` (softmax cross-entropy over two classes), `bce` (sigmoid BCE on one-hot targets,
    as the reference post), `mse` (a sigmoid output against 0/1, as the reference notebook).
    """

    # pragma: no mutate start (save_hyperparameters reads the constructor's frame, which mutmut would wrap)
    def __init__(
        self, vocab_size: int, padding_side: str = "right", cell: str = "lstm", embedding_dim: int = 128,
        hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.5,
        embedding_dropout: float = 0.0, pooling: str = "last", loss: str = "ce", pack: bool | str = "auto",
        pretrained_embeddings: str | None = None, freeze_embeddings: bool = False,
        optimizer: Callable | None = None, scheduler: Callable | None = None, vocab=None,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"model.loss must be one of {LOSSES}, got {loss!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        if pack not in (True, False, "auto"):
            raise ValueError(f"model.pack must be true, false or auto, got {pack!r}")
        self.save_hyperparameters(logger=False, ignore=["vocab"])
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        if pretrained_embeddings and vocab is not None:  # at training time; a checkpoint already holds them
            from rnnlab.tasks.skipgram import load_vectors_into

            found = load_vectors_into(self.embedding, vocab, pretrained_embeddings)
            log.info("initialized %d of %d word vectors from %s", found, vocab_size, pretrained_embeddings)
        self.embedding.weight.requires_grad_(not freeze_embeddings)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.rnn = PaddedRNN(cell, embedding_dim, hidden_size, num_layers, bidirectional, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.rnn.output_size, 1 if loss == "mse" else 2)
        metrics = MetricCollection({"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "auroc": BinaryAUROC()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    # pragma: no mutate end
    def encode(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs `(batch, time, directions * hidden)` (right-aligned, zero past each end) and the final state."""
        if self.hparams.padding_side == "left":
            ids = right_align(ids, lengths)
        x = self.embedding_dropout(self.embedding(ids))
        return self.rnn(x, lengths, packs(self.hparams.pack, x.device))

    def pool(self, out: Tensor, final: Tensor, lengths: Tensor) -> Tensor:
        if self.hparams.pooling == "last":
            return final
        mask = valid_mask(lengths.to(out.device), out.size(1)).unsqueeze(-1)
        if self.hparams.pooling == "mean":
            return (out * mask).sum(1) / lengths[:, None].to(out.dtype)
        return out.masked_fill(~mask, float("-inf")).max(1).values

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Logits `(batch, 2)` (`(batch, 1)` for the mse loss)."""
        out, final = self.encode(ids, lengths)
        return self.head(self.dropout(self.pool(out, final, lengths)))

    def prob_positive(self, logits: Tensor) -> Tensor:
        if self.hparams.loss == "ce":
            return logits.softmax(-1)[..., 1]
        return torch.sigmoid(logits[..., -1])

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.hparams.loss == "ce":
            return F.cross_entropy(logits, labels)
        if self.hparams.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, 2).to(logits.dtype))
        return F.mse_loss(torch.sigmoid(logits[:, 0]), labels.to(logits.dtype))

    @torch.no_grad()
    def trajectory(self, ids: Tensor, lengths: Tensor | None = None, max_positions: int = 1 << 16) -> Tensor:
        """P(positive) after each word of one text `(time,)` -> `(time,)`; or only after the prefixes of
        the given `lengths` `(points,)` -> `(points,)`.

        Unidirectional: one pass, the classifier applied to the representation after every step
        (the output, or the running mean/max of the outputs). A bidirectional model reads the
        future too: it classifies every prefix, in batches of prefixes of at most `max_positions`
        word positions, so memory stays linear in the text's length (time grows with length x points).
        """
        n = ids.size(0)
        if lengths is None:
            lengths = torch.arange(1, n + 1, device=ids.device)
        if self.rnn.directions == 2:
            probs = []
            rows = max(1, max_positions // n)
            for chunk in lengths.split(rows):
                end = int(chunk.max())
                probs.append(self.prob_positive(self(ids[:end].expand(len(chunk), end), chunk)))
            return torch.cat(probs)
        ids = ids[None]
        out, _ = self.encode(ids, torch.tensor([n], device=ids.device))
        if self.hparams.pooling == "mean":
            out = out.cumsum(1) / torch.arange(1, n + 1, device=out.device)[None, :, None]
        elif self.hparams.pooling == "max":
            out = out.cummax(1).values
        return self.prob_positive(self.head(out))[0][lengths - 1]

    def training_step(self, batch, batch_idx: int) -> Tensor:
        ids, lengths, labels = batch
        loss = self.loss(self(ids, lengths), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=ids.size(0))
        return loss

    def _eval_step(self, batch, metrics: MetricCollection, stage: str) -> None:
        ids, lengths, labels = batch
        logits = self(ids, lengths)
        self.log(f"{stage}/loss", self.loss(logits, labels), batch_size=ids.size(0), sync_dist=True)
        metrics.update(self.prob_positive(logits), labels)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)
