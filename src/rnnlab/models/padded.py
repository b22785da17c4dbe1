"""Stacked (bi)directional recurrent layers over right-padded batches, exact with or without packing."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.models.cells import recurrent_layer


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first `lengths[b]` steps of each row of `(batch, time, ...)`; the padding stays at the end."""
    time = torch.arange(x.size(1), device=x.device).unsqueeze(0)
    rev = lengths.to(x.device).unsqueeze(1) - 1 - time
    idx = torch.where(rev >= 0, rev, time)
    return x.gather(1, idx.view(*idx.shape, *(1,) * (x.dim() - 2)).expand_as(x))


def valid_mask(lengths: Tensor, time: int) -> Tensor:
    """`(batch, time)` True at the steps before each sequence's end."""
    return torch.arange(time, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class PaddedRNN(nn.Module):
    """`num_layers` of `cell`, each direction its own single-layer module.

    The backward direction reads each sequence reversed within its length, so it starts at the
    sequence's real end rather than at the padding: with right padding no output at a valid step
    ever sees a padded one, packed or not. That is what `nn.LSTM(bidirectional=True)` gives only on
    packed input, and on CPU PyTorch's packed kernels train several times slower than the unpacked
    (oneDNN) ones (docs/results.md). `pack=True` still skips the work past each end (worth it on a GPU).
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.cell = cell
        self.directions = 2 if bidirectional else 1
        self.hidden_size = hidden_size
        self.output_size = self.directions * hidden_size
        sizes = [input_size] + [self.output_size] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.ModuleList(recurrent_layer(cell, size, hidden_size) for _ in range(self.directions))
            for size in sizes
        )
        self.dropout = nn.Dropout(dropout)

    def _run(self, rnn: nn.Module, x: Tensor, lengths: Tensor, pack: bool) -> Tensor:
        if not pack or self.cell.startswith("naive"):  # the hand-written cells read padded batches only
            return rnn(x)[0]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=x.size(1))[0]

    def forward(self, x: Tensor, lengths: Tensor, pack: bool = False) -> tuple[Tensor, Tensor]:
        """Right-padded `(batch, time, input)` -> outputs `(batch, time, directions * hidden)`, zero past
        each end, and the final state of each sequence `(batch, directions * hidden)` (the forward
        direction at its last step, the backward one at its first)."""
        lengths = lengths.to(x.device)
        mask = valid_mask(lengths, x.size(1)).unsqueeze(-1)
        for i, directions in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x)
            outs = [self._run(directions[0], x, lengths, pack)]
            if self.directions == 2:
                backward = self._run(directions[1], reverse_padded(x, lengths), lengths, pack)
                outs.append(reverse_padded(backward, lengths))
            x = torch.cat(outs, -1).masked_fill(~mask, 0.0)
        last = x[torch.arange(x.size(0), device=x.device), lengths - 1]
        if self.directions == 1:
            return x, last
        return x, torch.cat([last[:, : self.hidden_size], x[:, 0, self.hidden_size :]], -1)
