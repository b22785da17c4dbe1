"""A recurrent text classifier network over any cell: embedding -> (bi)directional layers -> pooling -> linear."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.checks import check_count
from rnnlab.models.padded import PaddedRNN, valid_mask

POOLINGS = ("last", "mean", "max", "concat")
CONCAT = ("last", "max", "mean")  # what pooling="concat" puts side by side


class HeadNorm(nn.BatchNorm1d):
    """Batch norm over `(batch, features)` that normalizes a training batch of one row (the last, short batch)
    with its running statistics, leaving them as they are: a batch's own variance needs two rows."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.size(0) == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class RecurrentClassifier(nn.Module):
    """Right-padded ids `(batch, time)` with `lengths` `(batch,)` -> logits `(batch, num_outputs)`.

    A `PaddedRNN` reads each text within its length (the backward direction from the text's real end),
    so padding never changes an output. The text's representation is the final state of each
    direction (`pooling="last"`), the mean/max of the outputs over the valid steps, or all three side by side
    (`pooling="concat"`, ULMFiT's concat pooling). The head is one linear layer after dropout, or with
    `head_hidden=N` ULMFiT's: batch norm, dropout, linear to N, ReLU, batch norm, `head_dropout`, linear.
    """

    def __init__(self, vocab_size: int, cell: str = "lstm", embedding_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.5,
                 embedding_dropout: float = 0.0, pooling: str = "last", num_outputs: int = 2,
                 head_hidden: int | None = None, head_dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"model.net.pooling must be one of {POOLINGS}, got {pooling!r}")
        for name, value in (("embedding_dim", embedding_dim), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            check_count(f"model.net.{name}", value)
        self.pooling, self.num_outputs = pooling, num_outputs
        self.parts = CONCAT if pooling == "concat" else (pooling,)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.rnn = PaddedRNN(cell, embedding_dim, hidden_size, num_layers, bidirectional, dropout)
        features = self.rnn.output_size * len(self.parts)
        if head_hidden:
            self.dropout = nn.Identity()
            self.head = nn.Sequential(HeadNorm(features), nn.Dropout(dropout), nn.Linear(features, head_hidden),
                                      nn.ReLU(), HeadNorm(head_hidden), nn.Dropout(head_dropout),
                                      nn.Linear(head_hidden, num_outputs))
        else:
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(features, num_outputs)

    @property
    def bidirectional(self) -> bool:
        return self.rnn.directions == 2

    def encode(self, ids: Tensor, lengths: Tensor, pack: bool = False) -> tuple[Tensor, Tensor]:
        """Outputs `(batch, time, directions * hidden)` (zero past each end) and the final state
        `(batch, directions * hidden)`."""
        return self.rnn(self.embedding_dropout(self.embedding(ids)), lengths, pack)

    def pool(self, out: Tensor, final: Tensor, lengths: Tensor) -> Tensor:
        """The text's representation `(batch, directions * hidden)`, `(batch, 3 * directions * hidden)` for concat."""
        if self.pooling == "last":
            return final
        mask = valid_mask(lengths.to(out.device), out.size(1)).unsqueeze(-1)
        pooled = {"last": lambda: final, "mean": lambda: (out * mask).sum(1) / lengths[:, None].to(out.dtype),
                  "max": lambda: out.masked_fill(~mask, float("-inf")).max(1).values}
        return torch.cat([pooled[part]() for part in self.parts], 1)

    def forward(self, ids: Tensor, lengths: Tensor, pack: bool = False) -> Tensor:
        out, final = self.encode(ids, lengths, pack)
        return self.head(self.dropout(self.pool(out, final, lengths)))

    def prefix_logits(self, ids: Tensor, lengths: Tensor, max_positions: int = 1 << 16) -> Tensor:
        """Logits after the prefixes of lengths `(points,)` of one text `(time,)` -> `(points, num_outputs)`.

        Unidirectional: one pass, the head applied to the representation after every step (the output,
        or the running mean/max of the outputs). Bidirectional: the backward direction of each prefix
        starts at its last word, so every prefix is read again, in batches of at most `max_positions`
        word positions: memory stays linear in the text's length (time grows with length x points).
        """
        n = ids.size(0)
        if self.bidirectional:
            logits, rows = [], max(1, max_positions // n)
            for chunk in lengths.split(rows):
                end = int(chunk.max())
                logits.append(self(ids[:end].expand(len(chunk), end), chunk))
            return torch.cat(logits)
        out, _ = self.encode(ids[None], torch.tensor([n], device=ids.device))
        running = {"last": lambda: out, "max": lambda: out.cummax(1).values,
                   "mean": lambda: out.cumsum(1) / torch.arange(1, n + 1, device=out.device)[None, :, None]}
        return self.head(torch.cat([running[part]() for part in self.parts], 2)[0][lengths - 1])
