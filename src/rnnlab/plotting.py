"""matplotlib, optional: figures are drawn only where it is installed (`pip install 'rnnlab[plot]'`)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

from rnnlab.files import atomic_write

log = logging.getLogger(__name__)


def pyplot() -> ModuleType | None:
    """`matplotlib.pyplot` on the file-only Agg backend, or None (said once in the log) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no figure (pip install 'rnnlab[plot]')")
        return None
    return plt


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """`fig` as the image file `path` (its suffix gives the format, png without one), written atomically."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png"))
    return path
