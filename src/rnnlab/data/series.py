"""Time series and their sliding windows, in plain NumPy (the NumPy RNN uses these too, without torch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def sine_series(length: int = 200, step: float = 1.0, waves: Sequence[dict] | None = None,
                noise_std: float = 0.0, seed: int = 0) -> np.ndarray:
    """`sum_k amplitude_k * sin(frequency_k * x + phase_k)` at x = 0, step, ..., plus Gaussian noise: (length,)."""
    if length < 2:
        raise ValueError(f"data.length must be >= 2, got {length}")
    x = np.arange(length) * step
    waves = waves or [{"frequency": 1.0, "phase": 0.0, "amplitude": 1.0}]
    y = sum(w.get("amplitude", 1.0) * np.sin(w.get("frequency", 1.0) * x + w.get("phase", 0.0)) for w in waves)
    if noise_std > 0:
        y = y + np.random.default_rng(seed).normal(0.0, noise_std, size=length)
    return np.asarray(y, dtype=np.float64)


def read_series(path: str | Path) -> np.ndarray:
    """A 1-D series from a `.npy` file or a text file of numbers (whitespace or comma separated)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.series_file: {path} does not exist")
    if path.suffix == ".npy":
        values = np.load(path)
    else:
        values = np.array(path.read_text().replace(",", " ").split(), dtype=np.float64)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(f"{path}: {bad.size} non-finite value(s), first at index {bad[0]} ({values[bad[0]]})")
    return values


def make_windows(series: np.ndarray, seq_len: int = 50, horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Inputs `(records, seq_len, 1)` and the next `horizon` values `(records, horizon)`.

    Window i reads series[i : i + seq_len] and predicts series[i + seq_len : i + seq_len + horizon].
    With the sheet's series of 200 values and seq_len 50 there are 150 windows.
    """
    if seq_len < 1 or horizon < 1:
        raise ValueError(f"seq_len and horizon must be >= 1, got {seq_len} and {horizon}")
    records = len(series) - seq_len - horizon + 1
    if records < 1:
        raise ValueError(f"seq_len {seq_len} + horizon {horizon} is longer than the series ({len(series)} values)")
    idx = np.arange(records)[:, None]
    x = series[idx + np.arange(seq_len)][..., None]
    y = series[idx + seq_len + np.arange(horizon)]
    return x, y


def split_windows(x: np.ndarray, y: np.ndarray, val_windows: int = 50):
    """The last `val_windows` windows are validation, the rest training (as in the sheet)."""
    if not 0 < val_windows < len(x):
        raise ValueError(
            f"{len(x)} windows leave no training windows with val_windows={val_windows} "
            "(lengthen the series or shorten seq_len / horizon)"
        )
    return (x[:-val_windows], y[:-val_windows]), (x[-val_windows:], y[-val_windows:])
