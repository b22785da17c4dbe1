"""matplotlib, optional: figures are drawn only where it is installed (`pip install 'rnnlab[plot]'`)."""

from __future__ import annotations

import logging
from types import ModuleType

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
