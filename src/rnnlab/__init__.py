"""rnnlab: Lightning + Hydra toolkit for the classic recurrent-network tasks.

From Python: `load_run` (a checkpoint or run folder: module, config, vocabulary), `sample` (a language model's
continuations), `score_run` (a language model's surprisal of every symbol of some lines) and `Predictor`
(a sentiment classifier's P(positive)); imported on first use, so `import rnnlab` stays light."""

from importlib import import_module
from pathlib import Path

__version__ = "0.1.0"

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

API = {"load_run": "rnnlab.checkpoint", "sample": "rnnlab.sampling", "score_run": "rnnlab.scoring",
       "Predictor": "rnnlab.predictor"}
__all__ = ["CONF_DIR", "__version__", *API]


def __getattr__(name: str):
    if name in API:
        return getattr(import_module(API[name]), name)
    raise AttributeError(f"module 'rnnlab' has no attribute {name!r}")
