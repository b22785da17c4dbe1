"""Stacked recurrent layers with per-layer hidden sizes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import groupby

import torch
from torch import Tensor, nn

from rnnlab.checks import check_count
from rnnlab.models.cells import cell_kind, recurrent_layer
from rnnlab.models.regularization import LockedDropout, weight_dropped

State = list  # one entry per fused group: a Tensor (RNN, GRU) or an (h, c) tuple (LSTM)
LAYER_PARAMETER = re.compile(r"^groups\.(\d+)\.((?:weight|bias)_(?:ih|hh))_l(\d+)$")


def layer_parameters(state: dict, prefix: str) -> dict[str, tuple[int, str, int]]:
    """The recurrent-layer weights of a state dict whose `RecurrentStack` sits under `prefix`:
    key -> (group, name, layer in the group), e.g. `rnn.groups.1.weight_hh_l0` -> (1, "weight_hh", 0)."""
    return {key: (int(match[1]), match[2], int(match[3])) for key in state
            if key.startswith(prefix) and (match := LAYER_PARAMETER.match(key[len(prefix):]))}


def detach_state(state):
    """The same state cut from the autograd graph (truncated BPTT)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


def move_state(state, device: torch.device | str):
    """The same state on `device`."""
    if isinstance(state, Tensor):
        return state.to(device)
    return type(state)(move_state(s, device) for s in state)


class RecurrentStack(nn.Module):
    """Recurrent layers of sizes `hidden_sizes`; runs of equal sizes share one fused module.

    `hidden_sizes=[256, 128]` gives two modules, `[650, 650]` one two-layer module, so the
    fast fused kernels are used wherever the sizes allow. Dropout `dropout` is applied between
    layers (inside fused modules by PyTorch, between them here). With `locked=True` it is locked dropout
    (one mask per sequence), and every layer is its own module so that the mask can be applied between them.
    `weight_drop`: DropConnect on the hidden-to-hidden weights in training, one mask per call (AWD-LSTM).
    Input `(batch, time, input_size)` -> output `(batch, time, hidden_sizes[-1])` and the new state.
    """

    def __init__(self, cell: str, input_size: int, hidden_sizes: Sequence[int], dropout: float = 0.0,
                 locked: bool = False, weight_drop: float = 0.0):
        super().__init__()
        if not isinstance(hidden_sizes, Sequence) or isinstance(hidden_sizes, str):
            raise ValueError(f"hidden_sizes must be a list of layer sizes, e.g. [200, 200], got {hidden_sizes!r}")
        if not hidden_sizes:
            raise ValueError("hidden_sizes must name at least one layer")
        for i, size in enumerate(hidden_sizes):
            check_count(f"hidden_sizes[{i}]", size)
        if not 0.0 <= weight_drop < 1.0:
            raise ValueError(f"weight_drop must be in [0, 1), got {weight_drop}")
        self.cell = cell
        self.hidden_sizes = list(hidden_sizes)
        self.weight_drop = weight_drop
        self.groups = nn.ModuleList()
        size_in = input_size
        runs = [(size, 1) for size in self.hidden_sizes] if locked else \
            [(size, len(list(run))) for size, run in groupby(self.hidden_sizes)]
        for size, n in runs:
            self.groups.append(recurrent_layer(cell, size_in, size, n, dropout))
            size_in = size
        self.dropout = LockedDropout(dropout) if locked else nn.Dropout(dropout)
        self.register_load_state_dict_pre_hook(lambda module, state, prefix, *_: module.relayout(state, prefix))

    @property
    def output_size(self) -> int:
        return self.hidden_sizes[-1]

    def relayout(self, state: dict, prefix: str) -> None:
        """Rename, in place, the layer weights of `state` (under `prefix`) saved under another grouping of the
        same layers (locked dropout gives every layer its own module; otherwise equal sizes share one) to this
        one's: the k-th saved layer, bottom first, loads into layer k. A state that does not fit layer by layer
        is left as it is."""
        found = layer_parameters(state, prefix)
        saved = sorted({(group, layer) for group, _, layer in found.values()})
        own = [(group, k) for group, rnn in enumerate(self.groups) for k in range(rnn.num_layers)]
        if len(saved) != len(own) or saved == own:
            return
        to = dict(zip(saved, own))
        renamed = {key: f"groups.{to[group, layer][0]}.{name}_l{to[group, layer][1]}"
                   for key, (group, name, layer) in found.items()}
        params = dict(self.named_parameters())
        if any(renamed[key] not in params or params[renamed[key]].shape != state[key].shape for key in found):
            return
        moved = {key: state.pop(key) for key in found}
        for key, name in renamed.items():
            state[prefix + name] = moved[key]

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        state = state if state is not None else [None] * len(self.groups)
        new_state = []
        for i, (rnn, s) in enumerate(zip(self.groups, state)):
            if i > 0:
                x = self.dropout(x)
            x, s = weight_dropped(rnn, self.weight_drop, self.training, x, s)
            new_state.append(s)
        return x, new_state

    def step(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step without dropout (for inference): `(batch, input)` -> `(batch, hidden)` and the state,
        in `forward`'s format, computed layer by layer with the cell's single-step function."""
        step = self.stepper()
        x, layers = step(x, self.to_layers(state, x.size(0)))
        return x, self.from_layers(layers)

    def stepper(self, one_hot: bool = False):
        """`step(x (batch, input), layers) -> (batch, hidden), layers`: one time step over per-layer states
        (`to_layers`: the cells' own state tuples, `(h,)` or `(h, c)`) through the cell's `update` (cells.py), the
        weights transposed once, not at every step; for loops of single steps, such as sampling. Every layer's
        hidden product `h W_hh^T + b_hh` reads last step's state only, so when the layers are of one size they
        are taken in one batched product `(layers, batch, gates * hidden)`. With `one_hot`, `x` is ids `(batch,)`
        of one-hot inputs, and the first layer looks its input product up (a row of `W_ih^T + b_ih`) instead of
        multiplying."""
        update = cell_kind(self.cell).update
        layers = [[getattr(rnn, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                  for rnn in self.groups for k in range(rnn.num_layers)]
        inputs = [(w_ih.T.contiguous(), b_ih) for w_ih, _, b_ih, _ in layers]
        table = inputs[0][0] + inputs[0][1] if one_hot else None
        if len(layers) > 1 and len({w_hh.shape for _, w_hh, _, _ in layers}) == 1:
            w_hh_t = torch.stack([w_hh.T for _, w_hh, _, _ in layers])  # (layers, hidden, gates * hidden)
            b_hh = torch.stack([b for *_, b in layers])[:, None]

            def hidden_products(states: list) -> Sequence[Tensor]:
                return torch.baddbmm(b_hh, torch.stack([s[0] for s in states]), w_hh_t).unbind(0)
        else:
            hidden = [(w_hh.T.contiguous(), b_hh) for _, w_hh, _, b_hh in layers]

            def hidden_products(states: list) -> Sequence[Tensor]:
                return [torch.addmm(b, s[0], w) for (w, b), s in zip(hidden, states)]

        def step(x: Tensor, states: list) -> tuple[Tensor, list]:
            new = []
            for k, ((w_ih_t, b_ih), h_proj, s) in enumerate(zip(inputs, hidden_products(states), states)):
                x_proj = table.index_select(0, x) if k == 0 and table is not None else torch.addmm(b_ih, x, w_ih_t)
                s = update(x_proj, h_proj, s)
                new.append(s)
                x = s[0]
            return x, new

        return step

    def to_layers(self, state: State | None, batch: int) -> list[tuple[Tensor, ...]]:
        """`forward`'s state (one entry per group, layers stacked; `None`: zeros for `batch` rows) as one state
        tuple per layer, `(h,)` or `(h, c)` of `(batch, hidden)`."""
        kind, layers = cell_kind(self.cell), []
        for rnn, s in zip(self.groups, state if state is not None else [None] * len(self.groups)):
            if s is None:
                zeros = rnn.weight_hh_l0.new_zeros(rnn.num_layers, batch, rnn.hidden_size)
                s = (zeros, zeros) if kind.lstm else zeros
            layers += zip(*(s if kind.lstm else (s,)))
        return layers

    def from_layers(self, layers: list[tuple[Tensor, ...]]) -> State:
        """Per-layer state tuples back in `forward`'s format."""
        kind, state, i = cell_kind(self.cell), [], 0
        for rnn in self.groups:
            part, i = layers[i : i + rnn.num_layers], i + rnn.num_layers
            stacked = tuple(torch.stack(t) for t in zip(*part))
            state.append(stacked if kind.lstm else stacked[0])
        return state

    @torch.no_grad()
    def set_bias(self, value: float) -> None:
        """Every gate's bias to `value`: the input-side bias holds it, the hidden-side one is zeroed."""
        for name, p in self.named_parameters():
            kind = name.split(".")[-1]
            if kind.startswith("bias_ih"):
                p.fill_(value)
            elif kind.startswith("bias_hh"):
                p.zero_()

    @torch.no_grad()
    def set_forget_bias(self, value: float) -> None:
        """LSTM only: forget-gate bias `value` (input-side bias; the hidden-side one is zeroed)."""
        if "lstm" not in self.cell:
            raise ValueError(f"forget_bias applies to LSTM cells, not {self.cell!r}")
        for name, p in self.named_parameters():
            if name.split(".")[-1].startswith("bias_"):
                h = p.numel() // 4
                p[h : 2 * h] = value if "bias_ih" in name else 0.0
