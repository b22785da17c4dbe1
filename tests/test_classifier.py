"""The classifier network and its padded layers on their own: defaults, padding, dropout placement, packing
only when asked, prefix batches within their memory cap."""

from __future__ import annotations

import pytest
import torch

from rnnlab.models import padded
from rnnlab.models.classifier import HeadNorm, RecurrentClassifier
from rnnlab.models.padded import PaddedRNN


def test_the_defaults_make_a_one_layer_lstm_128_reading_left_to_right():
    net = RecurrentClassifier(30)
    assert tuple(net.embedding.weight.shape) == (30, 128) and net.embedding.padding_idx == 0
    assert (net.rnn.cell, net.rnn.hidden_size, len(net.rnn.layers), net.rnn.directions) == ("lstm", 128, 1, 1)
    assert (net.dropout.p, net.embedding_dropout.p, net.pooling) == (0.5, 0.0, "last")
    assert tuple(net.head.weight.shape) == (2, 128) and net.num_outputs == 2
    deep = RecurrentClassifier(30, num_layers=2, bidirectional=True, dropout=0.3)
    assert (deep.rnn.directions, deep.rnn.dropout.p, len(deep.rnn.layers)) == (2, 0.3, 2)
    with pytest.raises(ValueError) as err:
        RecurrentClassifier(30, pooling="attention")
    assert str(err.value) == "model.net.pooling must be one of ('last', 'mean', 'max', 'concat'), got 'attention'"


def test_the_padding_row_is_zero_and_learns_nothing():
    net = RecurrentClassifier(10, embedding_dim=4, hidden_size=3).eval()  # eval: dropout could zero word 3's path
    assert torch.equal(net.embedding.weight[0], torch.zeros(4))
    net(torch.tensor([[3, 4, 0], [0, 2, 1]]), torch.tensor([2, 3])).sum().backward()
    assert torch.equal(net.embedding.weight.grad[0], torch.zeros(4)) and net.embedding.weight.grad[3].abs().sum() > 0


def test_dropout_acts_between_layers_only():
    """With p = 1 every input to the second layer is zero, so its outputs no longer depend on the text;
    a single layer's input is never dropped."""
    torch.manual_seed(0)
    two, one = PaddedRNN("lstm", 4, 3, num_layers=2, dropout=1.0).train(), PaddedRNN("lstm", 4, 3, dropout=1.0).train()
    a, b, lengths = torch.randn(2, 5, 4), torch.randn(2, 5, 4), torch.tensor([5, 5])
    torch.testing.assert_close(two(a, lengths)[0], two(b, lengths)[0])
    assert not torch.allclose(one(a, lengths)[0], one(b, lengths)[0])


def test_packing_happens_only_when_asked_and_changes_no_output(monkeypatch):
    calls = []
    real = padded.pack_padded_sequence
    monkeypatch.setattr(padded, "pack_padded_sequence", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    net = RecurrentClassifier(10, embedding_dim=4, hidden_size=3, bidirectional=True, pooling="mean").eval()
    ids, lengths = torch.tensor([[3, 4, 0, 0], [5, 2, 1, 7]]), torch.tensor([2, 4])
    plain = net(ids, lengths)
    assert calls == []
    torch.testing.assert_close(net(ids, lengths, pack=True), plain)
    assert len(calls) == 2  # one per direction
    out, final = net.encode(ids, lengths)
    assert len(calls) == 2 and out.shape == (2, 4, 6) and final.shape == (2, 6)
    torch.testing.assert_close(net.rnn(net.embedding(ids), lengths)[0], out)  # the layers on their own
    assert len(calls) == 2


def test_bidirectional_prefixes_are_read_in_batches_within_the_position_cap(monkeypatch):
    torch.manual_seed(0)
    net = RecurrentClassifier(10, embedding_dim=4, hidden_size=3, bidirectional=True).eval()
    ids, lengths = torch.tensor([1, 2, 3, 4, 5, 6]), torch.tensor([2, 4, 5, 6])
    expected = torch.cat([net(ids[None, :n], torch.tensor([n])) for n in lengths.tolist()])
    rows = []
    real = RecurrentClassifier.forward
    monkeypatch.setattr(RecurrentClassifier, "forward", lambda self, x, n, pack=False: rows.append(x.size(0))
                        or real(self, x, n, pack))
    torch.testing.assert_close(net.prefix_logits(ids, lengths, max_positions=4), expected)
    assert rows == [1, 1, 1, 1]  # fewer positions than one text: one prefix at a time
    del rows[:]
    torch.testing.assert_close(net.prefix_logits(ids, lengths, max_positions=12), expected)
    assert rows == [2, 2]


def test_concat_pooling_is_last_max_and_mean_side_by_side():
    torch.manual_seed(0)
    net = RecurrentClassifier(10, embedding_dim=4, hidden_size=3, bidirectional=True, pooling="concat").eval()
    assert tuple(net.head.weight.shape) == (2, 18)
    ids, lengths = torch.tensor([[3, 4, 0], [5, 2, 1]]), torch.tensor([2, 3])
    out, final = net.encode(ids, lengths)
    rep = net.pool(out, final, lengths)
    assert rep.shape == (2, 18)
    torch.testing.assert_close(rep[:, :6], final)
    torch.testing.assert_close(rep[0, 6:12], out[0, :2].max(0).values)
    torch.testing.assert_close(rep[0, 12:], out[0, :2].mean(0))
    torch.testing.assert_close(rep[1, 6:], torch.cat([out[1].max(0).values, out[1].mean(0)]))
    torch.testing.assert_close(net(ids, lengths), net.head(rep))


def test_ulmfits_head_is_batch_norm_dropout_linear_relu_batch_norm_dropout_linear():
    torch.manual_seed(0)
    net = RecurrentClassifier(10, embedding_dim=4, hidden_size=3, pooling="concat", dropout=0.4, head_hidden=5,
                              head_dropout=0.2).eval()
    kinds = [(type(m).__name__, getattr(m, "p", None)) for m in net.head]
    assert kinds == [("HeadNorm", None), ("Dropout", 0.4), ("Linear", None), ("ReLU", None),
                     ("HeadNorm", None), ("Dropout", 0.2), ("Linear", None)]
    assert (net.head[0].num_features, tuple(net.head[2].weight.shape), tuple(net.head[6].weight.shape)) == (
        9, (5, 9), (2, 5))
    ids, lengths = torch.tensor([[3, 4, 0], [5, 2, 1]]), torch.tensor([2, 3])
    for bn in (net.head[0], net.head[4]):  # running statistics away from (0, 1), so that they matter
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    out, final = net.encode(ids, lengths)
    rep = net.pool(out, final, lengths)
    first = (rep - net.head[0].running_mean) / (net.head[0].running_var + 1e-5).sqrt() * net.head[0].weight \
        + net.head[0].bias
    hidden = torch.relu(net.head[2](first))
    second = (hidden - net.head[4].running_mean) / (net.head[4].running_var + 1e-5).sqrt() * net.head[4].weight \
        + net.head[4].bias
    torch.testing.assert_close(net(ids, lengths), net.head[6](second))
    # every prefix's logits, in one pass, are those of the prefix read on its own
    prefixes = net.prefix_logits(torch.tensor([5, 2, 1]), torch.tensor([1, 2, 3]))
    alone = torch.cat([net(torch.tensor([[5, 2, 1][:n]]), torch.tensor([n])) for n in (1, 2, 3)])
    torch.testing.assert_close(prefixes, alone)


def test_head_norm_learns_from_a_batch_of_rows_and_normalizes_one_row_with_its_running_statistics():
    torch.manual_seed(0)
    norm = HeadNorm(3).train()
    rows = torch.randn(4, 3) * 2 + 1
    torch.testing.assert_close(norm(rows), (rows - rows.mean(0)) / (rows.var(0, unbiased=False) + 1e-5).sqrt())
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    assert not torch.equal(mean, torch.zeros(3))  # a batch of rows moves the running statistics
    one = torch.randn(1, 3)
    torch.testing.assert_close(norm(one), (one - mean) / (var + 1e-5).sqrt())
    assert torch.equal(norm.running_mean, mean) and torch.equal(norm.running_var, var)
    assert norm(one).requires_grad  # the affine weights still learn from it
