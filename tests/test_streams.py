import torch

from rnnlab.data.streams import BPTTStream, batchify, shard_rows, window_lengths


def test_batchify_cuts_contiguous_rows_and_drops_tail():
    rows = batchify(torch.arange(23), 4)
    assert rows.shape == (4, 5)
    assert rows[1].tolist() == [5, 6, 7, 8, 9]


def test_windows_shapes_targets_shifted_and_rows_continue():
    tokens = torch.arange(1000)
    stream = BPTTStream(tokens, batch_size=4, bptt=7)
    windows = list(stream)
    assert len(windows) == len(stream) == 36  # 250 columns -> 249 input positions -> ceil(249 / 7)
    for x, y in windows:
        assert x.shape == y.shape and x.size(0) == 4
        assert torch.equal(y, x + 1)  # targets are the inputs shifted by one
    assert [x.size(1) for x, _ in windows[-2:]] == [7, 4]  # only the last window is shorter
    # row b of window i+1 starts where row b of window i ended: no shuffling
    for (x0, _), (x1, _) in zip(windows, windows[1:]):
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)
    covered = torch.cat([x for x, _ in windows], 1)
    assert torch.equal(covered, stream.data[:, :-1])


def test_ddp_shards_are_contiguous_disjoint_and_equally_long():
    tokens = torch.arange(10_000)
    shards = [shard_rows(tokens, batch_size=3, rank=r, world_size=2) for r in range(2)]
    assert shards[0].shape == shards[1].shape == (3, 1666)
    for shard in shards:  # each row is a contiguous span of the text
        assert torch.equal(shard[:, 1:] - shard[:, :-1], torch.ones(3, 1665, dtype=torch.long))
    flat = torch.cat([s.reshape(-1) for s in shards])
    assert flat.unique().numel() == flat.numel()  # no token read by two ranks
    assert shards[0].max() < shards[1].min()  # rank 0 reads the first half, rank 1 the second
    lengths = [len(BPTTStream(tokens, 3, 20, rank=r, world_size=2)) for r in range(2)]
    assert lengths[0] == lengths[1]


def test_varied_lengths_same_on_every_rank_and_change_each_pass():
    tokens = torch.arange(20_000)
    a = BPTTStream(tokens, 4, 35, rank=0, world_size=2, vary_length=True, seed=3)
    b = BPTTStream(tokens, 4, 35, rank=1, world_size=2, vary_length=True, seed=3)
    first_a = [x.size(1) for x, _ in a]
    first_b = [x.size(1) for x, _ in b]
    assert first_a == first_b
    assert sum(first_a) == a.data.size(1) - 1 and len(set(first_a)) > 3
    a.set_epoch(1)
    second = [x.size(1) for x, _ in a]
    assert second != first_a
    a.set_epoch(0)
    assert [x.size(1) for x, _ in a] == first_a  # an epoch's windows follow from the seed and the epoch alone


def test_len_announces_the_coming_pass_when_varied():
    stream = BPTTStream(torch.arange(5000), 2, 20, vary_length=True, seed=1)
    for _ in range(3):
        expected = len(stream)
        assert sum(1 for _ in stream) == expected


def test_window_lengths_fixed():
    assert window_lengths(11, 4) == [4, 4, 2]


def test_stream_errors_name_the_shape_the_length_and_the_rank():
    import pytest

    with pytest.raises(ValueError, match=r"^expected a 1-D token stream, got shape \(2, 3\)$"):
        batchify(torch.zeros(2, 3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"^a stream of 7 tokens is too short for 4 rows$"):
        batchify(torch.arange(7), 4)
    assert batchify(torch.arange(8), 4).shape == (4, 2)  # two tokens a row is enough
    with pytest.raises(ValueError, match=r"^rank 2 is outside world_size 2$"):
        shard_rows(torch.arange(100), 2, rank=2, world_size=2)
    torch.testing.assert_close(shard_rows(torch.arange(12), 2), torch.arange(12).view(2, 6))  # rank 0 of 1


def test_varied_windows_are_bptt_long_95_percent_of_the_time_else_half():
    """AWD-LSTM's draw: around bptt (sd 5) with probability 0.95, around bptt / 2 otherwise."""
    lengths = torch.tensor(window_lengths(200_001, 70, vary=True, generator=torch.Generator().manual_seed(0)))
    short = (lengths < 52).float().mean().item()  # 52 is 3.6 sd below 70 and 3.4 sd above 35
    assert 0.035 < short < 0.065
    assert abs(lengths[lengths >= 52].float().mean().item() - 69.5) < 0.5  # int() of N(70, 5)
    assert abs(lengths[lengths < 52].float().mean().item() - 34.5) < 1.5  # int() of N(35, 5)
    assert abs(lengths[lengths >= 52][:-1].float().std().item() - 5.0) < 0.25
    tiny = window_lengths(10_001, 3, vary=True, generator=torch.Generator().manual_seed(0))
    assert min(tiny[:-1]) == 5 and tiny.count(5) > len(tiny) / 2  # N(3, 5) is mostly below the floor of 5 steps


def test_an_epochs_lengths_can_be_asked_for_any_epoch_and_bptt_is_checked():
    import pytest

    stream = BPTTStream(torch.arange(5000), 2, 20, vary_length=True, seed=1)
    stream.set_epoch(3)
    at_three = stream.lengths()
    stream.set_epoch(0)
    assert stream.lengths(epoch=3) == at_three and stream.lengths() != at_three
    with pytest.raises(ValueError, match=r"^bptt must be >= 1, got 0$"):
        BPTTStream(torch.arange(50), 2, 0)
