"""The skip-gram network (Mikolov et al. 2013): input and output word vectors, negative-sampling loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SkipGram(nn.Module):
    """Centers `(batch,)`, contexts `(batch,)`, negatives `(batch, k)` -> mean loss
    -log s(u.v) - sum log s(-u.n). `in_vectors` are the word vectors.

    Both tables have sparse gradients: a batch touches a few thousand of the vocabulary's rows.
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 128):
        super().__init__()
        self.in_vectors = nn.Embedding(vocab_size, embedding_dim, sparse=True)
        self.out_vectors = nn.Embedding(vocab_size, embedding_dim, sparse=True)
        nn.init.uniform_(self.in_vectors.weight, -0.5 / embedding_dim, 0.5 / embedding_dim)
        nn.init.zeros_(self.out_vectors.weight)

    def forward(self, center: Tensor, context: Tensor, negatives: Tensor) -> Tensor:
        u = self.in_vectors(center)
        pos = F.logsigmoid((u * self.out_vectors(context)).sum(-1))
        neg = F.logsigmoid(-(self.out_vectors(negatives) @ u.unsqueeze(-1)).squeeze(-1)).sum(-1)
        return -(pos + neg).mean()
