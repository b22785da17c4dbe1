"""Property-based tests (hypothesis): the stream, the bucket sampler and the vocabulary, for any sizes."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.data.streams import BPTTStream
from rnnlab.data.text import BucketBatchSampler
from rnnlab.data.vocab import Vocabulary


@settings(max_examples=150, deadline=None)
@given(tokens=st.integers(4, 600), batch=st.integers(1, 6), bptt=st.integers(1, 40), vary=st.booleans(),
       epoch=st.integers(0, 5), world=st.integers(1, 3))
def test_every_token_is_a_target_once_per_epoch_in_order_per_row(tokens, batch, bptt, vary, epoch, world):
    stream = torch.arange(tokens)
    if tokens // (batch * world) < 2:
        return  # too short for that many rows: refused elsewhere
    rows = []
    for rank in range(world):
        data = BPTTStream(stream, batch, bptt, rank, world, vary_length=vary, seed=7)
        data.set_epoch(epoch)
        windows = list(data)
        assert len(windows) == len(data)
        targets = torch.cat([y for _, y in windows], 1)
        inputs = torch.cat([x for x, _ in windows], 1)
        torch.testing.assert_close(targets[:, :-1], inputs[:, 1:])  # targets are the inputs shifted by one
        rows.append(torch.cat([inputs[:, :1], targets], 1))  # each row: its contiguous piece of the stream
    whole = torch.cat(rows)
    width = tokens // (batch * world)
    torch.testing.assert_close(whole.flatten(), stream[: batch * world * width])  # every token once, in order


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(1, 50), min_size=1, max_size=120), batch=st.integers(1, 9),
       chunk=st.integers(1, 5), world=st.integers(1, 4), epoch=st.integers(0, 3), shuffle=st.booleans())
def test_bucket_batches_hold_every_example_once_across_ranks(lengths, batch, chunk, world, epoch, shuffle):
    per_rank = []
    for rank in range(world):
        sampler = BucketBatchSampler(lengths, batch, chunk, shuffle=shuffle, seed=3, rank=rank, world_size=world)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
        assert len(per_rank[-1]) == len(sampler)
    assert len({len(b) for b in per_rank}) == 1  # every rank takes the same number of batches
    first = BucketBatchSampler(lengths, batch, chunk, shuffle=shuffle, seed=3)
    first.set_epoch(epoch)
    batches = first.all_batches()
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each example exactly once
    assert all(len(b) <= batch for b in batches)
    taken = [b for rank_batches in per_rank for b in rank_batches]
    assert {tuple(b) for b in taken} == {tuple(b) for b in batches}  # the ranks split the batches, padded by repeats
    assert len(taken) - len(batches) < world


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=60), min_freq=st.integers(1, 3))
def test_vocabulary_round_trips(words, min_freq):
    vocab = Vocabulary.build(words, specials=["<pad>", "<unk>"], min_freq=min_freq, unk="<unk>")
    kept = [w for w in words if w in vocab]
    assert vocab.decode(vocab.encode(kept)) == kept
    assert all(vocab.decode(vocab.encode([w]))[0] in (w, "<unk>") for w in words)
    assert Vocabulary.from_state_dict(vocab.state_dict()) == vocab
