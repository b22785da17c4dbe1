"""Train a task: compose the config, instantiate data, model, callbacks, loggers and Trainer, fit, test."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from rnnlab import CONF_DIR
from rnnlab.callbacks import RunArtifacts, StopOnNonFiniteLoss
from rnnlab.checkpoint import AtomicCheckpointIO
from rnnlab.data.download import atomic_write

log = logging.getLogger(__name__)

KNOWN_WARNINGS = (
    r".*IterableDataset. has .__len__. defined.*",  # our streams know their exact length
    r".*you need to define a .flops_per_batch.*",  # ThroughputMonitor: we report tokens/s, not FLOPs
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*does not have many workers.*",  # in-memory tensors: worker processes would only add overhead
)


def silence_known_warnings() -> None:
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def instantiate_all(group: DictConfig | None) -> list:
    """One object per entry of a config group such as `callbacks` or `logger`."""
    return [instantiate(c) for c in (group or {}).values() if c is not None and "_target_" in c]


@rank_zero_only
def save_config(cfg: DictConfig) -> None:
    """The composed config as `<paths.output_dir>/.hydra/config.yaml` where Hydra did not write it
    itself (`paths.output_dir=...`, or a config composed in Python), so every run keeps its config."""
    out = Path(cfg.paths.output_dir)
    if HydraConfig.initialized() and Path(HydraConfig.get().runtime.output_dir).resolve() == out.resolve():
        return
    atomic_write(out / ".hydra" / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp))


def build(cfg: DictConfig, extra_callbacks: list | None = None):
    """(datamodule, model, trainer) for a composed run config."""
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, **datamodule.model_kwargs())
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = instantiate_all(cfg.get("callbacks")) + [RunArtifacts(config)] + list(extra_callbacks or [])
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=instantiate_all(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO()],
    )
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured task; returns the final metrics."""
    silence_known_warnings()
    L.seed_everything(cfg.seed, workers=True)
    save_config(cfg)
    stop_on_nan = StopOnNonFiniteLoss()
    datamodule, model, trainer = build(cfg, [stop_on_nan])
    # Our checkpoints hold the run's config (partials, ListConfigs): they are not weights-only files.
    # With ckpt_path=null Lightning resumes from a checkpoint already in the run directory, if any.
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=False)
    if stop_on_nan.message:
        raise SystemExit(stop_on_nan.message)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test") and not trainer.interrupted:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
        metrics.update(results[0] if results else {})
        if best:
            log.info("best checkpoint: %s", best)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
