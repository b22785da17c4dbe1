"""Hand-written cells against PyTorch's fused modules: same weights -> same outputs and gradients."""

import pytest
import torch
from torch import nn

from rnnlab.models.cells import CELLS, NaiveGRU, NaiveLSTM, NaiveRNN
from rnnlab.models.lm import RNNLM

PAIRS = [
    (NaiveRNN, lambda i, h, n: nn.RNN(i, h, n, batch_first=True)),
    (NaiveGRU, lambda i, h, n: nn.GRU(i, h, n, batch_first=True)),
    (NaiveLSTM, lambda i, h, n: nn.LSTM(i, h, n, batch_first=True)),
]


@pytest.mark.parametrize("naive_cls, fused_factory", PAIRS, ids=["rnn", "gru", "lstm"])
@pytest.mark.parametrize("with_state", [False, True])
def test_naive_equals_fused_outputs_and_gradients(naive_cls, fused_factory, with_state):
    torch.manual_seed(0)
    fused = fused_factory(5, 7, 2).double()
    naive = naive_cls(5, 7, 2).double()
    naive.load_state_dict(fused.state_dict())  # same parameter names and shapes
    x = torch.randn(3, 6, 5, dtype=torch.double)
    state = None
    if with_state:
        h = torch.randn(2, 3, 7, dtype=torch.double)
        state = (h, torch.randn_like(h)) if naive_cls is NaiveLSTM else h
    out_f, state_f = fused(x, state)
    out_n, state_n = naive(x, state)
    torch.testing.assert_close(out_n, out_f, atol=1e-5, rtol=1e-5)
    for a, b in zip(state_n if isinstance(state_n, tuple) else [state_n],
                    state_f if isinstance(state_f, tuple) else [state_f]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(out_f)
    (out_f * weights).sum().backward()
    (out_n * weights).sum().backward()
    for (name, p_f), p_n in zip(fused.named_parameters(), naive.parameters()):
        torch.testing.assert_close(p_n.grad, p_f.grad, atol=1e-5, rtol=1e-5, msg=f"gradient of {name}")


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_naive_cells_drop_into_the_language_model(cell):
    torch.manual_seed(0)
    fused = RNNLM(11, [6, 6, 4], cell, embedding_dim=None, init_scale=0.3).double().eval()
    naive_name = {"rnn_tanh": "naive_rnn", "gru": "naive_gru", "lstm": "naive_lstm"}[cell]
    naive = RNNLM(11, [6, 6, 4], naive_name, embedding_dim=None, init_scale=0.3).double().eval()
    naive.load_state_dict(fused.state_dict())
    ids = torch.randint(0, 11, (2, 9))
    torch.testing.assert_close(naive(ids)[0], fused(ids)[0])


TORCH_CELLS = {"rnn_tanh": torch.rnn_tanh_cell, "rnn_relu": torch.rnn_relu_cell, "gru": torch.gru_cell,
               "lstm": torch.lstm_cell}


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("batch", [1, 4])
def test_every_cells_update_equals_torchs_cell_function(cell, batch):
    torch.manual_seed(0)
    kind = CELLS[cell]
    gates = 4 if kind.lstm else 3 if "gru" in cell else 1
    x, h, c = torch.randn(batch, 7), torch.randn(batch, 5), torch.randn(batch, 5)
    w_ih, w_hh, b_ih, b_hh = torch.randn(gates * 5, 7), torch.randn(gates * 5, 5), torch.randn(gates * 5), \
        torch.randn(gates * 5)
    torch_name = {"naive_rnn": "rnn_tanh", "naive_gru": "gru", "naive_lstm": "lstm"}.get(cell, cell)
    state = (h, c) if kind.lstm else h
    expected = TORCH_CELLS[torch_name](x, state, w_ih, w_hh, b_ih, b_hh)
    new = kind.update(x @ w_ih.T + b_ih, h @ w_hh.T + b_hh, state if kind.lstm else (h,))
    assert len(new) == len(expected if kind.lstm else (expected,))
    for a, b in zip(new, expected if kind.lstm else (expected,)):
        assert a.shape == (batch, 5)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
