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
    """A series `(length,)` from a `.npy` file of real numbers shaped `(n,)`, `(n, 1)` or `(1, n)`, or from a
    text file of numbers (whitespace or comma separated). Anything else is a `ValueError` naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.series_file: {path} does not exist")
    if path.suffix == ".npy":
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise ValueError(f"{path}: not a .npy file (no NumPy header)")
        try:
            values = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            reason = "it holds Python objects" if "pickle" in str(e) else e
            raise ValueError(f"{path}: not a NumPy array of numbers ({reason})") from None
        if values.dtype.kind not in "biuf":
            raise ValueError(f"{path}: expected real numbers, got dtype {values.dtype}")
        if sum(d > 1 for d in values.shape) > 1:
            raise ValueError(f"{path}: expected one series, shaped (n,), (n, 1) or (1, n); got {values.shape}")
    else:
        words = path.read_text(errors="replace").replace(",", " ").split()
        try:
            values = np.array(words, dtype=np.float64)
        except ValueError:
            i = next(i for i, w in enumerate(words) if not _is_number(w))
            raise ValueError(f"{path}: value {i} ({words[i]!r}) is not a number") from None
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(f"{path}: {bad.size} non-finite value(s), first at index {bad[0]} ({values[bad[0]]})")
    return values


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


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
