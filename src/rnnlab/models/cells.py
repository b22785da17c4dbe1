"""Hand-written recurrent layers: plain tensor ops and a Python loop over time.

Each mirrors its fused PyTorch twin (`nn.RNN`, `nn.GRU`, `nn.LSTM`, batch-first): the same
parameter names, shapes and gate order, so weights load from one into the other and the
outputs agree. They exist to be read; the fused modules exist to be fast. Their update
functions (`rnn_tanh_update`, `gru_update`, `lstm_update`, ...) are also every cell kind's
single step (`CELLS`), which sampling loops over.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn


class NaiveRecurrent(nn.Module):
    """Shared parameters and layer/time loops; subclasses define one `update`."""

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
            s, outputs, w_hh_t = layer_states[k], [], w_hh.T
            for t in range(x.size(1)):
                s = self.update(x_proj[:, t], torch.addmm(b_hh, s[0], w_hh_t), s)
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

    update: Callable  # one time step: `(x W_ih^T + b_ih, h W_hh^T + b_hh, state tuple) -> state tuple`


def rnn_tanh_update(x_proj: Tensor, h_proj: Tensor, s: tuple[Tensor]) -> tuple[Tensor]:
    """One step of a tanh RNN layer from its input product `x_proj = x W_ih^T + b_ih` and hidden product
    `h_proj = h W_hh^T + b_hh`, `(batch, hidden)` each; state `(h,)`. As `torch.rnn_tanh_cell`."""
    return (torch.tanh(x_proj + h_proj),)


def rnn_relu_update(x_proj: Tensor, h_proj: Tensor, s: tuple[Tensor]) -> tuple[Tensor]:
    """`rnn_tanh_update` with ReLU; as `torch.rnn_relu_cell`."""
    return (torch.relu(x_proj + h_proj),)


def gru_update(x_proj: Tensor, h_proj: Tensor, s: tuple[Tensor]) -> tuple[Tensor]:
    """One step of a GRU layer, gates r, z, n (PyTorch's order), products `(batch, 3 * hidden)`;
    n = tanh(x_n + r * h_n), h' = (1 - z) * n + z * h. As `torch.gru_cell`."""
    (h,) = s
    size = h.size(-1)
    rz = torch.sigmoid(x_proj[:, : 2 * size] + h_proj[:, : 2 * size])
    n = torch.tanh(torch.addcmul(x_proj[:, 2 * size :], rz[:, :size], h_proj[:, 2 * size :]))
    return (torch.lerp(n, h, rz[:, size:]),)


def lstm_update(x_proj: Tensor, h_proj: Tensor, s: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """One step of an LSTM layer, gates i, f, g, o (PyTorch's order), products `(batch, 4 * hidden)`, state
    `(h, c)`: c' = f * c + i * g, h' = o * tanh(c'). As `torch.lstm_cell`."""
    c = s[1]
    size = c.size(-1)
    gates = x_proj + h_proj
    g = gates.sigmoid()
    c = torch.addcmul(g[:, size : 2 * size] * c, g[:, :size], gates[:, 2 * size : 3 * size].tanh())
    return g[:, 3 * size :] * c.tanh(), c


class NaiveRNN(NaiveRecurrent):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""

    update = staticmethod(rnn_tanh_update)


class NaiveGRU(NaiveRecurrent):
    """Gates r, z, n (PyTorch's order); h' = (1 - z) * n + z * h."""

    gates = 3
    update = staticmethod(gru_update)


class NaiveLSTM(NaiveRecurrent):
    """Gates i, f, g, o (PyTorch's order); c' = f * c + i * g, h' = o * tanh(c'). State `(h, c)`."""

    gates = 4
    update = staticmethod(lstm_update)

    def init_state(self, x):
        return self.zeros(x), self.zeros(x)

    def as_tuple(self, state):
        return tuple(state)

    def from_tuple(self, parts):
        return parts


class Cell(NamedTuple):
    """A kind of recurrent cell: `build(input_size, hidden_size, num_layers, dropout)` makes a batch-first
    module with PyTorch's parameter names; `update(x_proj, h_proj, state) -> state` is one time step of one
    layer from its input product `x W_ih^T + b_ih` and hidden product `h W_hh^T + b_hh` (state a tuple: `(h,)`,
    or `(h, c)` when `lstm`); the hand-written modules loop over it, `RecurrentStack.stepper` calls it for
    single steps."""

    build: Callable[[int, int, int, float], nn.Module]
    update: Callable
    lstm: bool = False


# The one registry of recurrent cells; every recurrent layer of rnnlab is built from it.
CELLS: dict[str, Cell] = {
    "rnn_tanh": Cell(lambda i, h, n, d: nn.RNN(i, h, n, nonlinearity="tanh", dropout=d, batch_first=True),
                     rnn_tanh_update),
    "rnn_relu": Cell(lambda i, h, n, d: nn.RNN(i, h, n, nonlinearity="relu", dropout=d, batch_first=True),
                     rnn_relu_update),
    "gru": Cell(lambda i, h, n, d: nn.GRU(i, h, n, dropout=d, batch_first=True), gru_update),
    "lstm": Cell(lambda i, h, n, d: nn.LSTM(i, h, n, dropout=d, batch_first=True), lstm_update, lstm=True),
    "naive_rnn": Cell(NaiveRNN, rnn_tanh_update),
    "naive_gru": Cell(NaiveGRU, gru_update),
    "naive_lstm": Cell(NaiveLSTM, lstm_update, lstm=True),
}


def cell_kind(cell: str) -> Cell:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(CELLS)}")
    return CELLS[cell]


def recurrent_layer(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                    dropout: float = 0.0) -> nn.Module:
    """A (possibly multi-layer) batch-first recurrent module of kind `cell` (a key of `CELLS`)."""
    return cell_kind(cell).build(input_size, hidden_size, num_layers, dropout if num_layers > 1 else 0.0)
