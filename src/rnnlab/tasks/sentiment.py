"""The sentiment task: a recurrent classifier network trained on labelled texts, with its losses and metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score

from rnnlab.data.vectors import check_missing, load_vectors_into
from rnnlab.models.classifier import RecurrentClassifier
from rnnlab.optim import configure_optimizers

log = logging.getLogger(__name__)

LOSSES = ("ce", "bce", "mse")


def packs(pack: bool | str, device: torch.device) -> bool:
    """Whether to run on packed sequences: `pack="auto"` packs only on a GPU (slower than unpacked on CPU)."""
    return device.type == "cuda" if pack == "auto" else bool(pack)


def right_align(ids: Tensor, lengths: Tensor) -> Tensor:
    """Left-padded ids `(batch, time)` moved to the right-padded layout the recurrent layers read."""
    time = ids.size(1)
    shift = (time - lengths).unsqueeze(1)
    idx = (torch.arange(time, device=ids.device).unsqueeze(0) + shift) % time
    return ids.gather(1, idx)


class SentimentClassifier(L.LightningModule):
    """Text polarity with a classifier network `net` (`models.classifier.RecurrentClassifier`, any cell):
    P(positive) of texts `(batch, time)` with `lengths`.

    Left-padded batches are realigned to the right-padded layout the network reads. `pack=true` runs
    the recurrent layers on packed sequences (no work past each text's end); `pack="auto"` packs only
    on a GPU (on a CPU the packed kernels are slower). Losses: `ce` (softmax cross-entropy over two
    classes), `bce` (sigmoid BCE on one-hot targets, as the reference post), `mse` (a sigmoid output
    against 0/1, as the reference notebook; the network then has one output). `label_smoothing` (ce and bce)
    trains against targets of 1 - smoothing / 2 and smoothing / 2.
    """

    # pragma: no mutate start (save_hyperparameters reads the constructor's frame, which mutmut would wrap)
    def __init__(self, net: RecurrentClassifier, padding_side: str = "right", loss: str = "ce",
                 pack: bool | str = "auto", pretrained_embeddings: str | None = None, freeze_embeddings: bool = False,
                 optimizer: Callable | None = None, scheduler: Callable | None = None, vocab=None,
                 unfreeze: int | None = None, lr_decay_per_layer: float | None = None, missing_vectors: str = "keep",
                 label_smoothing: float = 0.0):
        super().__init__()
        if not 0 <= label_smoothing < 1 or (label_smoothing and loss == "mse"):
            raise ValueError(f"model.label_smoothing must be in [0, 1) with the ce or bce loss, got {label_smoothing} "
                             f"with model.loss={loss}")
        if unfreeze is not None and unfreeze < 1:
            raise ValueError(f"model.unfreeze must be >= 1 (epochs per layer) or null, got {unfreeze}")
        if lr_decay_per_layer is not None and lr_decay_per_layer <= 0:
            raise ValueError(f"model.lr_decay_per_layer must be > 0 or null, got {lr_decay_per_layer}")
        if loss not in LOSSES:
            raise ValueError(f"model.loss must be one of {LOSSES}, got {loss!r}")
        check_missing(missing_vectors)
        if pack not in (True, False, "auto"):
            raise ValueError(f"model.pack must be true, false or auto, got {pack!r}")
        if net.num_outputs != (1 if loss == "mse" else 2):
            raise ValueError(f"model.loss={loss} needs model.net.num_outputs={1 if loss == 'mse' else 2}, "
                             f"got {net.num_outputs}")
        self.save_hyperparameters(logger=False, ignore=["net", "vocab"])
        self.net = net
        if pretrained_embeddings and vocab is not None:  # at training time; a checkpoint already holds them
            found = load_vectors_into(net.embedding, vocab, pretrained_embeddings, missing_vectors)
            log.info("initialized %d of %d word vectors from %s", found, len(vocab), pretrained_embeddings)
        net.embedding.weight.requires_grad_(not freeze_embeddings)
        metrics = MetricCollection({"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "auroc": BinaryAUROC()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    # pragma: no mutate end
    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Logits `(batch, 2)` (`(batch, 1)` for the mse loss)."""
        if self.hparams.padding_side == "left":
            ids = right_align(ids, lengths)
        return self.net(ids, lengths, packs(self.hparams.pack, ids.device))

    def prob_positive(self, logits: Tensor) -> Tensor:
        if self.hparams.loss == "ce":
            return logits.softmax(-1)[..., 1]
        return torch.sigmoid(logits[..., -1])

    def loss(self, logits: Tensor, labels: Tensor, smoothing: float = 0.0) -> Tensor:
        """The loss of logits `(batch, outputs)` against labels `(batch,)`; `smoothing` moves that much of each
        target's probability to the two classes evenly (training only: validation and test report the plain loss)."""
        if self.hparams.loss == "ce":
            return F.cross_entropy(logits, labels, label_smoothing=smoothing)
        if self.hparams.loss == "bce":
            targets = F.one_hot(labels, 2).to(logits.dtype) * (1 - smoothing) + smoothing / 2
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.mse_loss(torch.sigmoid(logits[:, 0]), labels.to(logits.dtype))

    @torch.no_grad()
    def trajectory(self, ids: Tensor, lengths: Tensor | None = None, max_positions: int = 1 << 16) -> Tensor:
        """P(positive) after each word of one text `(time,)` -> `(time,)`; or only after the prefixes of
        the given `lengths` `(points,)` -> `(points,)` (see `RecurrentClassifier.prefix_logits`)."""
        if lengths is None:
            lengths = torch.arange(1, ids.size(0) + 1, device=ids.device)
        return self.prob_positive(self.net.prefix_logits(ids, lengths, max_positions))

    def training_step(self, batch, batch_idx: int) -> Tensor:
        ids, lengths, labels = batch
        loss = self.loss(self(ids, lengths), labels, self.hparams.label_smoothing)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=ids.size(0))
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=ids.size(0))
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

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The network's parameters by depth, top first: the head, the recurrent layers from the top down,
        the embedding."""
        net = self.net
        return [list(net.head.parameters()), *([p for direction in layer for p in direction.parameters()]
                                               for layer in reversed(net.rnn.layers)),
                list(net.embedding.parameters())]

    def on_train_epoch_start(self) -> None:
        """Gradual unfreezing: the head alone for the first `unfreeze` epochs, then one more layer from the top
        every `unfreeze` epochs; frozen layers get no gradient, so no optimizer step changes them."""
        if not self.hparams.unfreeze:
            return
        trainable = 1 + self.current_epoch // self.hparams.unfreeze
        groups = self.layer_groups()
        for depth, group in enumerate(groups):
            embedding = group is groups[-1]
            for p in group:
                p.requires_grad_(depth < trainable and not (embedding and self.hparams.freeze_embeddings))

    def configure_optimizers(self):
        params = None
        if self.hparams.lr_decay_per_layer:  # discriminative learning rates: lr / decay^depth below the head
            params = [{"params": group, "lr_scale": self.hparams.lr_decay_per_layer ** -depth}
                      for depth, group in enumerate(self.layer_groups())]
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler, params=params)
