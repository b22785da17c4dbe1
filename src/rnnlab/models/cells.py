"""Hand-written recurrent layers: plain tensor ops and a Python loop over time.

Each mirrors its fused PyTorch twin (`nn.RNN`, `nn.GRU`, `nn.LSTM`, batch-first): the same
parameter names, shapes and gate order, so weights load from one into the other and the
outputs agree. They exist to be read; the fused modules exist to be fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn


class NaiveRecurrent(nn.Module):
    """Shared parameters and layer/time loops; subclasses define one `step`."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout = nn.Dropout(dropout)
        g = self.gates * hidden_size
        for k in range(num_layers):
            size_in = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(g, size_in)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(g, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(g)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(g)))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}"))

    def zeros(self, x: Tensor) -> Tensor:
        return x.new_zeros(self.num_layers, x.size(0), self.hidden_size)

    def forward(self, x: Tensor, state=None):
        """`x` `(batch, time, input)` -> `(batch, time, hidden)` and the state, `(layers, batch, hidden)` each."""
        state = self.init_state(x) if state is None else state
        layer_states = list(zip(*[s.unbind(0) for s in self.as_tuple(state)]))
        new_states = []
        for k in range(self.num_layers):
            if k > 0:
                x = self.dropout(x)
            w_ih, w_hh, b_ih, b_hh = self.layer_weights(k)
            x_proj = x @ w_ih.T + b_ih  # all time steps at once: (batch, time, gates * hidden)
            s, outputs = layer_states[k], []
            for t in range(x.size(1)):
                s = self.step(x_proj[:, t], s, w_hh, b_hh)
                outputs.append(s[0])
            x = torch.stack(outputs, 1)
            new_states.append(s)
        stacked = tuple(torch.stack(parts) for parts in zip(*new_states))
        return x, self.from_tuple(stacked)

    def init_state(self, x: Tensor):
        return self.zeros(x)

    def as_tuple(self, state) -> tuple[Tensor, ...]:
        return (state,)

    def from_tuple(self, parts: tuple[Tensor, ...]):
        return parts[0]

    def step(self, x_proj: Tensor, s: tuple[Tensor, ...], w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError


class NaiveRNN(NaiveRecurrent):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""

    def step(self, x_proj, s, w_hh, b_hh):
        (h,) = s
        return (torch.tanh(x_proj + h @ w_hh.T + b_hh),)


class NaiveGRU(NaiveRecurrent):
    """Gates r, z, n (PyTorch's order); h' = (1 - z) * n + z * h."""

    gates = 3

    def step(self, x_proj, s, w_hh, b_hh):
        (h,) = s
        xr, xz, xn = x_proj.chunk(3, -1)
        hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, -1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return ((1 - z) * n + z * h,)


def lstm_step(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM's update from its pre-activations `gates` `(batch, 4 * hidden)` (PyTorch's order i, f, g, o:
    `x W_ih^T + b_ih + h W_hh^T + b_hh`) and cell `c` `(batch, hidden)`: the new `(h, c)`, as `torch.lstm_cell`."""
    size = c.size(-1)
    s = gates.sigmoid()
    c = torch.addcmul(s[:, size : 2 * size] * c, s[:, :size], gates[:, 2 * size : 3 * size].tanh())
    return s[:, 3 * size :] * c.tanh(), c


class NaiveLSTM(NaiveRecurrent):
    """Gates i, f, g, o (PyTorch's order); c' = f * c + i * g, h' = o * tanh(c'). State `(h, c)`."""

    gates = 4

    def init_state(self, x):
        return self.zeros(x), self.zeros(x)

    def as_tuple(self, state):
        return tuple(state)

    def from_tuple(self, parts):
        return parts

    def step(self, x_proj, s, w_hh, b_hh):
        h, c = s
        return lstm_step(x_proj + h @ w_hh.T + b_hh, c)


class Cell(NamedTuple):
    """A kind of recurrent cell: `build(input_size, hidden_size, num_layers, dropout)` makes a batch-first
    module with PyTorch's parameter names; `step(x, state, w_ih, w_hh, b_ih, b_hh)` is one time step of one
    layer (PyTorch's fused single-step function; `RecurrentStack.stepper` steps LSTM layers through
    `lstm_step` instead, tested equal to it); `lstm`: the state is `(h, c)`."""

    build: Callable[[int, int, int, float], nn.Module]
    step: Callable
    lstm: bool = False


# The one registry of recurrent cells; every recurrent layer of rnnlab is built from it.
CELLS: dict[str, Cell] = {
    "rnn_tanh": Cell(lambda i, h, n, d: nn.RNN(i, h, n, nonlinearity="tanh", dropout=d, batch_first=True),
                     torch.rnn_tanh_cell),
    "rnn_relu": Cell(lambda i, h, n, d: nn.RNN(i, h, n, nonlinearity="relu", dropout=d, batch_first=True),
                     torch.rnn_relu_cell),
    "gru": Cell(lambda i, h, n, d: nn.GRU(i, h, n, dropout=d, batch_first=True), torch.gru_cell),
    "lstm": Cell(lambda i, h, n, d: nn.LSTM(i, h, n, dropout=d, batch_first=True), torch.lstm_cell, lstm=True),
    "naive_rnn": Cell(NaiveRNN, torch.rnn_tanh_cell),
    "naive_gru": Cell(NaiveGRU, torch.gru_cell),
    "naive_lstm": Cell(NaiveLSTM, torch.lstm_cell, lstm=True),
}


def cell_kind(cell: str) -> Cell:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(CELLS)}")
    return CELLS[cell]


def recurrent_layer(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                    dropout: float = 0.0) -> nn.Module:
    """A (possibly multi-layer) batch-first recurrent module of kind `cell` (a key of `CELLS`)."""
    return cell_kind(cell).build(input_size, hidden_size, num_layers, dropout if num_layers > 1 else 0.0)
