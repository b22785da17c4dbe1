"""The skip-gram LightningModule: trains a `models.skipgram.SkipGram` network on skip-gram pairs."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from rnnlab.models.skipgram import SkipGram


class SkipGramTask(L.LightningModule):
    """Trains a `SkipGram` network with SparseAdam (it updates only the rows a batch used)."""

    def __init__(self, net: SkipGram, lr: float = 3e-3):
        super().__init__()
        self.net, self.lr = net, lr

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.net(*batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SparseAdam(self.parameters(), lr=self.lr)
