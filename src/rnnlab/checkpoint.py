"""Checkpoints hold data, not code: writing them atomically, reading them weights-only, rebuilding a run."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from rnnlab.data.vocab import Vocabulary
from rnnlab.files import atomic_torch_save

# Model arguments that only initialize weights at training time; a checkpoint's weights replace them.
INIT_ONLY_ARGUMENTS = ("pretrained_embeddings",)


class CheckpointError(RuntimeError):
    """A path that is missing, unsafe or not an rnnlab checkpoint."""


def read_checkpoint(path: str | os.PathLike, require_rnnlab: bool = True, mmap: bool = False) -> dict:
    """The checkpoint's contents, read with `torch.load(weights_only=True)`: tensors and plain data only.

    A file holding anything else (a pickled object, which could run code when loaded) is refused
    before any of it runs. `mmap`: the tensors are mapped, not read, until their values are used (for checks
    of shapes and settings; a file in the legacy format is read).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        best = checkpoint_file(path)
        raise CheckpointError(f"checkpoint {path} is a folder; give a .ckpt file, such as {best}" if best != path else
                              f"checkpoint {path} is a folder with no best.ckpt in it or in its checkpoints/; give a "
                              ".ckpt file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True,
                                mmap=mmap and zipfile.is_zipfile(path))  # torch's own format, not the legacy one
    except pickle.UnpicklingError as e:
        named = re.search(r"GLOBAL (\S+)", str(e))
        if named:
            raise CheckpointError(f"{path} holds Python objects ({named.group(1)}), not only tensors and plain data; "
                                  "refusing to load it: loading it could run code") from None
        why = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))  # e.g. a text file: "Unsupported operand 110"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (UnpicklingError: "
                              f"{why.group(1) if why else e})") from None
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not an rnnlab checkpoint (no 'state_dict' entry)")
    if require_rnnlab and "rnnlab" not in checkpoint:
        raise CheckpointError(f"{path} is not an rnnlab checkpoint (no 'rnnlab' entry with the run's config)")
    return checkpoint


def non_finite(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of `state_dict` holding a NaN or an infinity."""
    return [k for k, t in state_dict.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made safe: a save goes to a temporary file beside the target and is
    renamed into place (an interrupted save never leaves a truncated checkpoint), a save of non-finite
    weights is refused, and every load is weights-only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        bad = non_finite(checkpoint["state_dict"])
        if bad:
            raise CheckpointError(f"refusing to write {path}: non-finite weights in {bad[:5]}")
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(path, require_rnnlab=False)


def init_weights(model: L.LightningModule, path: str | os.PathLike, vocab: Vocabulary | None = None,
                 checkpoint: dict | None = None) -> None:
    """Start `model` from the weights of the checkpoint `path` (weights-only; a run folder: its best; fine-tuning,
    `init_from=`), or of `checkpoint`, its contents when already read. It must come from the same kind of model over
    the same vocabulary."""
    checkpoint = read_checkpoint(checkpoint_file(path)) if checkpoint is None else checkpoint
    saved = checkpoint["rnnlab"].get("vocab")
    if vocab is not None and saved is not None and Vocabulary.from_state_dict(saved) != vocab:
        raise CheckpointError(f"init_from={path}: its vocabulary ({len(saved['itos'])} symbols) is not this "
                              f"data's ({len(vocab)} symbols)")
    state = checkpoint["state_dict"]
    for name, module in model.named_modules():  # recurrent layers saved under another grouping (RecurrentStack)
        if hasattr(module, "relayout"):  # a submodule: the LightningModule holds the networks
            module.relayout(state, f"{name}.")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    mismatched = [k for k, t in state.items() if k in own and own[k].shape != t.shape]
    if missing or mismatched:
        raise CheckpointError(f"init_from={path} does not fit this model: missing {missing[:3]}, "
                              f"other shapes {mismatched[:3]}")
    model.load_state_dict(state, strict=False)


def checkpoint_file(path: str | os.PathLike) -> Path:
    """`path`, or for a run folder its `checkpoints/best.ckpt` (for a `checkpoints/` folder, its `best.ckpt`)."""
    path = Path(path).expanduser()
    for best in (path / "checkpoints" / "best.ckpt", path / "best.ckpt"):
        if path.is_dir() and best.is_file():
            return best
    return path


def run_folder(ckpt_path: str | os.PathLike) -> Path:
    """The run folder a checkpoint belongs to: `<run>/checkpoints/x.ckpt` -> `<run>`, else the file's folder."""
    folder = Path(ckpt_path).expanduser().resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


@dataclass
class TrainedRun:
    """What a checkpoint holds: the module, the run's config and its vocabulary (if any)."""

    model: L.LightningModule
    config: DictConfig
    vocab: Vocabulary | None
    path: Path


def build_model(model_config: DictConfig, model_kwargs: dict) -> L.LightningModule:
    """The LightningModule of a saved run config, without its training-time weight initializers."""
    model_config = model_config.copy()
    for key in INIT_ONLY_ARGUMENTS:
        if key in model_config:
            model_config[key] = None
    return instantiate(model_config, **model_kwargs)


def load_run(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainedRun:
    """Rebuild the trained module from `path` (a checkpoint, or a run folder: its best) alone, in eval mode."""
    path = checkpoint_file(path)
    checkpoint = read_checkpoint(path)
    extra = checkpoint["rnnlab"]
    config = OmegaConf.create(extra["config"])
    model = build_model(config.model, extra.get("model_kwargs", {}))
    model.load_state_dict(checkpoint["state_dict"])
    model.to(map_location).eval()
    vocab = Vocabulary.from_state_dict(extra["vocab"]) if "vocab" in extra else None
    return TrainedRun(model, config, vocab, path)
