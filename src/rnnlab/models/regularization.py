"""AWD-LSTM's regularizers (Merity et al. 2018), for any recurrent module with PyTorch's parameter names.

- `LockedDropout`: one dropout mask per sequence, shared by all its time steps (Gal & Ghahramani).
- `word_dropout`: drops whole words from the embedding matrix (the same word is dropped everywhere in a batch).
- `weight_dropped`: DropConnect on the hidden-to-hidden weights, one mask per call (one BPTT window), through
  `torch.func.functional_call`, so fused modules keep their kernel and their parameter names.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence: `(batch, time, features)` -> the same shape, every time step of a
    sequence multiplied by the same mask `(batch, 1, features)`. Identity in eval mode or at `p=0`."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def word_dropout(embedding: nn.Embedding, ids: Tensor, p: float, training: bool) -> Tensor:
    """Embeddings `(batch, time, dim)` of `ids` with whole rows of the embedding matrix dropped (probability `p`,
    the kept rows scaled by 1/(1-p)): a dropped word is zero wherever it occurs in the batch."""
    if not training or p == 0.0:
        return embedding(ids)
    weight = embedding.weight
    mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
    return F.embedding(ids, weight * mask, embedding.padding_idx, embedding.max_norm, embedding.norm_type,
                       embedding.scale_grad_by_freq, embedding.sparse)


def hidden_weight_names(module: nn.Module) -> list[str]:
    """The hidden-to-hidden weight names of a recurrent module (`weight_hh_l0`, `weight_hh_l1`, ...)."""
    return [name for name, _ in module.named_parameters(recurse=False) if name.startswith("weight_hh_l")]


def weight_dropped(module: nn.Module, p: float, training: bool, *args):
    """`module(*args)` with DropConnect (probability `p`) on its hidden-to-hidden weights: one mask per weight
    matrix for the whole call, so every time step of the window sees the same dropped weights, and the
    gradients flow back to the raw weights through the mask."""
    if not training or p == 0.0:
        return module(*args)
    dropped = {name: F.dropout(getattr(module, name), p, True) for name in hidden_weight_names(module)}
    return functional_call(module, dropped, args)
