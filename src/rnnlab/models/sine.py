"""The sine-regression network: recurrent layers over a window of values, a linear map of the last output."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from rnnlab.models.recurrent import RecurrentStack


class SeriesRegressor(nn.Module):
    """Windows `(batch, time, 1)` -> the next `horizon` values `(batch, horizon)`."""

    def __init__(self, horizon: int = 1, cell: str = "lstm", hidden_sizes: Sequence[int] = (100,),
                 dropout: float = 0.0):
        super().__init__()
        self.rnn = RecurrentStack(cell, 1, list(hidden_sizes), dropout)
        self.head = nn.Linear(self.rnn.output_size, horizon)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])
