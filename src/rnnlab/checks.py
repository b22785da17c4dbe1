"""Checks of the settings a user gives: one ValueError naming the setting and what it must be."""

from __future__ import annotations


def check_count(name: str, value: int | None, nullable: bool = False) -> None:
    """A count (a batch size, a window length): an int >= 1, or None where `nullable` (the default it stands for)."""
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1{' or null' if nullable else ''}, got {value!r}")


def check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    """A number >= `low`, and <= `high` when one is given."""
    if value < low or (high is not None and value > high):
        expected = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {expected}, got {value}")
