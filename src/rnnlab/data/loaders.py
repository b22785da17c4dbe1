"""Training loaders that continue an interrupted epoch exactly where it stopped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader


def process_rank(trainer) -> tuple[int, int]:
    """`(rank, world_size)` of this process under `trainer`, `(0, 1)` without one."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def fit_position(trainer) -> tuple[int, int] | None:
    """`(epoch, batches of it already trained)` from Lightning's fit loop, None outside `trainer.fit`.

    Read when an epoch's first batch is fetched, it is right after any restart: at a step, at an
    epoch's end, or after a batch that failed (Lightning's progress counts only completed batches).
    """
    if trainer is None or not trainer.training:
        return None
    loop = trainer.fit_loop
    return loop.epoch_progress.current.processed, loop.epoch_loop.batch_progress.current.ready


class ResumableLoader(DataLoader):
    """A `DataLoader` for training whose epochs can stop at any batch and continue there.

    Every epoch's order is a function of the seed and the epoch number alone: the epoch is given to
    the dataset, sampler or batch sampler (`set_epoch`) before it draws its order, and the loader has
    its own random generator, so iterating it never draws from the global RNG (which dropout uses).
    Under a Trainer the epoch and the batches to skip come from Lightning's loop state (`trainer`);
    otherwise epochs are counted from 0. `state_dict`/`load_state_dict` make it a stateful loader
    for Lightning, which then records where an epoch stopped.
    """

    def __init__(self, *args: Any, trainer=None, **kwargs: Any):
        kwargs.setdefault("generator", torch.Generator().manual_seed(0))
        super().__init__(*args, **kwargs)
        self.trainer = trainer
        self.epoch, self.batches = -1, 0

    def _parts(self) -> list:
        return [self.dataset, self.sampler, self.batch_sampler]

    def __iter__(self) -> Iterator:
        position = fit_position(self.trainer)
        self.epoch = position[0] if position is not None else self.epoch + 1
        for part in self._parts():  # before Lightning measures the epoch's length
            if callable(getattr(part, "set_epoch", None)):
                part.set_epoch(self.epoch)
        return self._batches()

    def _batches(self) -> Iterator:
        position = fit_position(self.trainer)  # at the first fetch: after Lightning's restart bookkeeping
        skip = position[1] if position is not None else 0
        self.batches = 0
        iterator = super().__iter__()
        for _ in range(skip):
            next(iterator)
            self.batches += 1
        for batch in iterator:
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Kept for the record: the position to continue from is read from the restored loop."""
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
