"""rnnlab: Lightning + Hydra toolkit for the classic recurrent-network tasks."""

from pathlib import Path

__version__ = "0.1.0"

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
