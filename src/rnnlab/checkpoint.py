"""Writing checkpoints atomically and loading a trained run back from one file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from rnnlab.data.download import atomic_torch_save
from rnnlab.data.vocab import Vocabulary


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` to a temporary file beside the target, then rename: an interrupted save
    never leaves a truncated checkpoint under the real name."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, Path(path))


class CheckpointError(RuntimeError):
    """A path that is missing or is not an rnnlab checkpoint."""


@dataclass
class TrainedRun:
    """What a checkpoint holds: the module, the run's config and its vocabulary (if any)."""

    model: L.LightningModule
    config: DictConfig
    vocab: Vocabulary | None
    path: Path


def read_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "rnnlab" not in checkpoint:
        raise CheckpointError(f"{path} is not an rnnlab checkpoint (no 'state_dict' and 'rnnlab' entries)")
    return checkpoint


def load_run(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainedRun:
    """Rebuild the trained module from `path` alone, in eval mode."""
    checkpoint = read_checkpoint(path)
    extra = checkpoint["rnnlab"]
    config = OmegaConf.create(extra["config"])
    model = get_class(config.model._target_)(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    model.to(map_location).eval()
    vocab = Vocabulary.from_state_dict(extra["vocab"]) if "vocab" in extra else None
    return TrainedRun(model, config, vocab, Path(path))
