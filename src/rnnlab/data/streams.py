"""Truncated-BPTT batching over one continuous token stream."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import IterableDataset


def batchify(tokens: Tensor, rows: int) -> Tensor:
    """Cut a 1-D stream into `rows` contiguous rows, dropping the tail: (rows, len // rows)."""
    if tokens.dim() != 1:
        raise ValueError(f"expected a 1-D token stream, got shape {tuple(tokens.shape)}")
    width = tokens.numel() // rows
    if width < 2:
        raise ValueError(f"a stream of {tokens.numel()} tokens is too short for {rows} rows")
    return tokens[: rows * width].view(rows, width)


def shard_rows(tokens: Tensor, batch_size: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """The `batch_size` rows of process `rank`: (batch_size, width).

    The stream is cut into `world_size * batch_size` contiguous rows and each rank takes a
    consecutive block of them, so every rank reads its own contiguous part of the text and
    all ranks get the same number of windows.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    rows = batchify(tokens, batch_size * world_size)
    return rows[rank * batch_size : (rank + 1) * batch_size]


def window_lengths(width: int, bptt: int, vary: bool = False, generator: torch.Generator | None = None) -> list[int]:
    """Lengths of consecutive windows covering `width - 1` input positions.

    Fixed: `bptt` each, the last one shorter. Varied (AWD-LSTM): `bptt` with probability
    0.95 else `bptt / 2`, then drawn from N(that, 5), at least 5 steps.
    """
    span, lengths = width - 1, []
    while span > 0:
        n = bptt
        if vary:
            base = bptt if torch.rand(1, generator=generator).item() < 0.95 else bptt / 2
            n = max(5, int(torch.normal(float(base), 5.0, (1,), generator=generator).item()))
        n = min(n, span)
        lengths.append(n)
        span -= n
    return lengths


class BPTTStream(IterableDataset):
    """Consecutive `(inputs, targets)` windows, each `(batch_size, time)`; targets are inputs shifted by one.

    Windows are never shuffled: row `b` of window `i + 1` continues row `b` of window `i`,
    so a model may carry its hidden state from one window to the next. With `vary_length`
    each epoch draws its window lengths from `seed` and the epoch number (`set_epoch`), identically
    on every rank.
    """

    def __init__(
        self,
        tokens: Tensor,
        batch_size: int,
        bptt: int,
        rank: int = 0,
        world_size: int = 1,
        vary_length: bool = False,
        seed: int = 0,
    ):
        if bptt < 1:
            raise ValueError(f"bptt must be >= 1, got {bptt}")
        self.data = shard_rows(tokens, batch_size, rank, world_size)
        self.bptt = bptt
        self.vary_length = vary_length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def lengths(self, epoch: int | None = None) -> list[int]:
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return window_lengths(self.data.size(1), self.bptt, self.vary_length, generator)

    def __len__(self) -> int:
        """Windows in the current epoch (`set_epoch`); with varied lengths the count changes by epoch."""
        if self.vary_length:
            return len(self.lengths())
        return math.ceil((self.data.size(1) - 1) / self.bptt)

    def __iter__(self):
        lengths = self.lengths()
        start = 0
        for n in lengths:
            yield self.data[:, start : start + n], self.data[:, start + 1 : start + 1 + n]
            start += n
