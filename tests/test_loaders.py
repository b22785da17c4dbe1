"""ResumableLoader on its own: epochs numbered and announced, an interrupted epoch continued at its batch."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.utils.data import Dataset

from rnnlab.data.loaders import ResumableLoader, fit_position, process_rank


class Numbers(Dataset):
    """0..n-1, shuffled by epoch through `set_epoch` (which it records)."""

    def __init__(self, n: int):
        self.n, self.epochs = n, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return (i + 3 * self.epochs[-1]) % self.n


def fake_trainer(epoch: int, done: int, training: bool = True, rank: int = 0, world: int = 1):
    """What ResumableLoader reads of Lightning's Trainer: the fit loop's epoch and completed batches."""
    loop = SimpleNamespace(epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=epoch)),
                           epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=SimpleNamespace(
                               ready=done))))
    return SimpleNamespace(training=training, fit_loop=loop, global_rank=rank, world_size=world)


def test_rank_and_world_size_come_from_the_trainer():
    assert process_rank(None) == (0, 1)
    assert process_rank(fake_trainer(0, 0, rank=1, world=4)) == (1, 4)
    assert fit_position(None) is None and fit_position(fake_trainer(2, 5, training=False)) is None
    assert fit_position(fake_trainer(2, 5)) == (2, 5)


def test_epochs_are_counted_and_announced_to_the_dataset_before_each_pass():
    data = Numbers(6)
    loader = ResumableLoader(data, batch_size=2)
    first, second = [torch.cat(list(loader)).tolist() for _ in range(2)]
    assert data.epochs == [0, 1] and loader.state_dict() == {"epoch": 1, "batches": 3}
    assert first == [0, 1, 2, 3, 4, 5] and second == [3, 4, 5, 0, 1, 2]


def test_an_interrupted_epoch_continues_at_the_batch_after_the_last_completed_one():
    data = Numbers(10)
    loader = ResumableLoader(data, batch_size=2, trainer=fake_trainer(epoch=4, done=3))
    batches = iter(loader)
    assert data.epochs == [4]  # announced when the epoch starts, before its first batch
    assert loader.state_dict() == {"epoch": 4, "batches": 0}
    first = next(batches)
    assert first.tolist() == [(6 + 12) % 10, (7 + 12) % 10] and loader.state_dict() == {"epoch": 4, "batches": 4}
    assert len(list(batches)) == 1 and loader.state_dict() == {"epoch": 4, "batches": 5}
    loader.load_state_dict({"epoch": 7, "batches": 2})
    assert loader.state_dict() == {"epoch": 7, "batches": 2}
