"""Train a task: compose the config, instantiate data, model, callbacks, loggers and Trainer, fit, test."""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from rnnlab import CONF_DIR
from rnnlab.callbacks import ExactResume, LineProgress, MonitoredMetrics, RunArtifacts, TrainingDiverged
from rnnlab.checkpoint import AtomicCheckpointIO, init_weights, read_checkpoint, run_folder
from rnnlab.checks import check_accelerator, check_run, check_trainer
from rnnlab.cli import (
    check_added_keys,
    keep_freed_memory,
    log_to_files,
    one_line_errors,
    print_config_tree,
    set_threads,
    silence_known_warnings,
)
from rnnlab.files import FolderLock, atomic_write, read_metrics, write_metrics
from rnnlab.lr_finder import check_lr_find, find_lr
from rnnlab.transfer import copy_encoder, new_words, read_lm_encoder, use_encoder, use_lm_checkpoint

log = logging.getLogger(__name__)

EXIT_SIGINT, EXIT_SIGTERM = 130, 143


class RunDirectoryError(ValueError):
    """Training into a folder that already holds another run's checkpoints without asking to resume, or resuming
    from a checkpoint of another task or network."""


class TrainingStopped(SystemExit):
    """Training was stopped by a signal after saving `last.ckpt`; the exit status says which."""


def instantiate_all(group: DictConfig | None) -> dict[str, object]:
    """One object per entry of a config group such as `callbacks` or `logger`, by key (a factory may return
    None: off)."""
    built = {key: instantiate(c) for key, c in (group or {}).items() if c is not None and "_target_" in c}
    return {key: obj for key, obj in built.items() if obj is not None}


def monitored(callbacks: Mapping[str, object], optimized_metric: str | None) -> dict[str, str]:
    """Each config key that names a metric to watch, with that name: the callbacks' `monitor`s and
    `optimized_metric`."""
    names = {f"callbacks.{key}.monitor": c.monitor for key, c in callbacks.items()
             if isinstance(getattr(c, "monitor", None), str)}
    return {**names, **({"optimized_metric": optimized_metric} if optimized_metric else {})}


def saved_hydra_settings() -> dict:
    """The Hydra settings of train.py's config (`conf/hydra/default.yaml`, `hydra.output_subdir: null`), saved in
    a run's config.yaml: a run started from it (`--config-path <run>/.hydra --config-name config`) writes its folder
    where train.py's runs go and leaves `.hydra/` to rnnlab, which writes it after the resume checks."""
    settings = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "hydra" / "default.yaml")) | {"output_subdir": None}
    settings["sweep"].pop("subdir", None)  # Hydra's default, ${hydra.job.num}, which resolves only under Hydra
    return settings


@rank_zero_only
def save_config(cfg: DictConfig) -> int | None:
    """The run's `.hydra/config.yaml` and, under Hydra, its `overrides.yaml` and `hydra.yaml`, in
    `paths.output_dir`. rnnlab writes them after the resume checks, not Hydra (`hydra.output_subdir: null`):
    Hydra writes them before the job starts, so a refused resume used to overwrite the run's files. The saved
    config leaves `ckpt_path` out (null), so that it retrains the run from the start; a resume whose config
    differs keeps the earlier files as `config.1.yaml`, `overrides.1.yaml`, ... Returns that number, if any."""
    folder = Path(cfg.paths.output_dir) / ".hydra"
    saved = cfg.copy()
    with open_dict(saved):
        saved.ckpt_path = None
    files = {"config.yaml": OmegaConf.to_yaml(saved) + OmegaConf.to_yaml({"hydra": saved_hydra_settings()})}
    if HydraConfig.initialized():
        files["overrides.yaml"] = OmegaConf.to_yaml(HydraConfig.get().overrides.task)
        files["hydra.yaml"] = OmegaConf.to_yaml({"hydra": HydraConfig.get()})
    earlier, n = folder / "config.yaml", None
    settings = OmegaConf.to_container(saved)
    theirs = OmegaConf.to_container(OmegaConf.load(earlier)) if earlier.is_file() else None
    if theirs is not None:
        theirs.pop("hydra", None)  # compared without it: the runs of before saved none
    if theirs is not None and theirs != settings:
        n = next(k for k in itertools.count(1) if not (folder / f"config.{k}.yaml").exists())
        changed = differences(theirs, settings)
        more = f"; and {len(changed) - 8} more" if len(changed) > 8 else ""
        log.warning("%s holds a run made with other settings (its files are kept as .hydra/*.%d.yaml): %s%s",
                    folder.parent, n, "; ".join(changed[:8]), more)
        for name in HYDRA_FILES:
            if (folder / name).is_file():
                (folder / name).replace(folder / f"{Path(name).stem}.{n}.yaml")
    for name, text in files.items():
        atomic_write(folder / name, lambda tmp, text=text: Path(tmp).write_text(text))
    return n


@rank_zero_only
def restore_config(cfg: DictConfig, archived: int | None) -> None:
    """Undoes `save_config` for a resume refused once the data was read: the files it kept as `*.<archived>.yaml`
    go back in place."""
    if archived is None:
        return
    folder = Path(cfg.paths.output_dir) / ".hydra"
    for name in HYDRA_FILES:
        kept = folder / f"{Path(name).stem}.{archived}.yaml"
        if kept.is_file():
            kept.replace(folder / name)


HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: `ckpt_path=last` (this run folder's `last.ckpt`), a file, or none;
    `ckpt_path=auto`: `last` where the folder has a `last.ckpt`, else none (one command that starts a run and,
    rerun after a preemption or a crash, resumes it).

    Without `ckpt_path`, a run folder that already holds checkpoints is refused: it belongs to another run. A
    checkpoint of another task or model than this command's is refused, naming the run's own overrides.
    """
    out = Path(cfg.paths.output_dir)
    folder = out / "checkpoints"
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "auto":
        ckpt_path = "last" if (folder / "last.ckpt").is_file() else None
        log.info("ckpt_path=auto: %s", f"resuming from {folder / 'last.ckpt'}" if ckpt_path else "a new run")
    if ckpt_path == "last":
        if not (folder / "last.ckpt").is_file():
            raise RunDirectoryError(f"ckpt_path=last: there is no {folder / 'last.ckpt'} to resume from")
        ckpt_path = str(folder / "last.ckpt")
    elif ckpt_path and not Path(ckpt_path).expanduser().exists():
        raise RunDirectoryError(f"ckpt_path={ckpt_path}: no such file; it takes a .ckpt file, last (this run "
                                "folder's last.ckpt) or auto (last where there is one, else a new run)")
    if rank_zero_only.rank != 0:  # rank 0 has checked the file and the folder before the others started
        return ckpt_path or None
    if ckpt_path:
        check_resumable(read_checkpoint(ckpt_path, mmap=True), cfg, str(ckpt_path))  # before Lightning reads it
        return str(ckpt_path)
    existing = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    if existing:
        raise RunDirectoryError(
            f"{out} already holds checkpoints ({', '.join(existing)}): resume that run with the same overrides "
            "and ckpt_path=last, or train into a fresh folder (the default hydra.run.dir is new for every run)"
        )
    return None


def run_overrides(ckpt_path: str) -> str:
    """'resume with the run's own overrides: ...' from the checkpoint's run folder, where it has them."""
    path = run_folder(ckpt_path) / ".hydra" / "overrides.yaml"
    overrides = [o for o in OmegaConf.load(path) if not str(o).startswith("ckpt_path=")] if path.is_file() else None
    if overrides is None:
        return "resume with the overrides that run was trained with"
    return f"resume with the run's own overrides ({path}): {' '.join(overrides) or '(none)'}"


def check_resumable(checkpoint: dict, cfg: DictConfig, ckpt_path: str) -> None:
    """Refuses a checkpoint of another task or model, or whose network has other parameters or shapes than
    the one this config builds (with the data sizes the checkpoint's run had), before anything is written."""
    saved = checkpoint["rnnlab"].get("config", {})
    saved_config = OmegaConf.create(saved)
    for key in ("task_name", "model._target_"):
        theirs, ours = OmegaConf.select(saved_config, key), OmegaConf.select(cfg, key)
        if theirs != ours:
            raise RunDirectoryError(f"ckpt_path: {ckpt_path} was trained with {key}={theirs}, this command has "
                                    f"{key}={ours}; {run_overrides(ckpt_path)}")
    if (cfg.get("encoder") or {}).get("ckpt_path") or cfg.get("init_from"):
        return  # the network is taken from another checkpoint when built; fit() names a mismatch then
    net = instantiate(cfg.model.net, **checkpoint["rnnlab"].get("model_kwargs", {}).get("net", {}))
    theirs = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    misfits = shape_misfits(theirs, net.state_dict(), "net.")
    if misfits:
        raise_misfit(ckpt_path, saved, cfg, misfits[0])


def raise_misfit(ckpt_path: str, saved: dict, cfg: DictConfig, fallback: str) -> NoReturn:
    """A one-line error for a checkpoint whose weights do not fit this config's network: the `model.net`
    settings that differ (else `fallback`, e.g. the first parameter whose shape differs), and the run's overrides."""
    changed = differences(saved.get("model", {}).get("net", {}), OmegaConf.to_container(cfg.model.net, resolve=True),
                          "model.net.")
    raise RunDirectoryError(f"ckpt_path: the weights of {ckpt_path} do not fit this run's network "
                            f"({'; '.join(changed) or fallback}); {run_overrides(ckpt_path)}")


def shape_misfits(theirs: Mapping[str, torch.Tensor], ours: Mapping[str, torch.Tensor], prefix: str = "") -> list[str]:
    """`name: (shape) there, (shape) here` for every tensor of a checkpoint's state dict (`theirs`) and a network's
    (`ours`, its names given `prefix`) whose shapes differ, `absent` where only one of them has the name."""
    shapes = lambda state, p="": {p + k: tuple(v.shape) for k, v in state.items()}  # noqa: E731
    theirs, ours = shapes(theirs), shapes(ours, prefix)
    return [f"{k}: {theirs.get(k, 'absent')} there, {ours.get(k, 'absent')} here"
            for k in sorted(theirs.keys() | ours.keys()) if theirs.get(k) != ours.get(k)]


def differences(theirs: Mapping, ours: Mapping, prefix: str = "") -> list[str]:
    """`key: theirs there, ours here` for every setting (nested keys joined by dots) whose values differ."""
    changed = []
    for key in sorted(set(theirs) | set(ours), key=str):
        a, b = theirs.get(key), ours.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a!r} there, {b!r} here")
    return changed


def tag(logger, tags: list[str]) -> None:
    """Run tags where the logger has them (MLflow; W&B takes them from its config); all loggers also get them
    with the config."""
    if tags and isinstance(logger, MLFlowLogger):
        for name in tags:
            logger.experiment.set_tag(logger.run_id, str(name), "true")


def check_weights_fit(model: L.LightningModule, ckpt_path: str, cfg: DictConfig) -> None:
    """Refuses a checkpoint to resume from whose weights do not fit `model`, built from this run's data (its
    vocabulary, say), before any logger writes: one line naming the first tensor whose shape differs or that only
    one of them has (Lightning's strict load would refuse it only after the loggers wrote)."""
    checkpoint = read_checkpoint(ckpt_path, mmap=True)
    misfits = shape_misfits(checkpoint["state_dict"], model.state_dict())
    if misfits:
        raise_misfit(ckpt_path, checkpoint["rnnlab"].get("config", {}), cfg, misfits[0])


def build(cfg: DictConfig, extra_callbacks: list | None = None, resume_from: str | None = None):
    """(datamodule, model, trainer) for a composed run config; `resume_from`, a checkpoint its weights must fit."""
    check_trainer(cfg.trainer)
    encoder = vocab = init_checkpoint = None
    if cfg.get("encoder") and cfg.encoder.get("ckpt_path"):  # LM transfer: the LM's vocabulary, sizes, weights
        encoder = read_lm_encoder(cfg.encoder.ckpt_path)
        use_encoder(cfg, encoder)
        vocab = encoder.vocab
    elif cfg.get("init_from") and str(cfg.data.get("_target_")).endswith("TextCorpusDataModule"):
        vocab, init_checkpoint = use_lm_checkpoint(cfg, cfg.init_from)  # LM on new text: its vocabulary, sizes
    datamodule = instantiate(cfg.data)
    if vocab is not None:
        datamodule.vocab = vocab
    if encoder is not None:
        datamodule.new_words = new_words(cfg.encoder.get("new_words"))
    model_kwargs = datamodule.model_kwargs()
    model = instantiate(cfg.model, **model_kwargs)
    if encoder is not None:
        copy_encoder(model.net, encoder, bool(datamodule.new_words))
    if cfg.get("init_from"):
        init_weights(model, cfg.init_from, getattr(datamodule, "vocab", None), init_checkpoint)
    if resume_from:
        check_weights_fit(model, resume_from, cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    saved_kwargs = {k: v for k, v in model_kwargs.items() if k != "vocab"}  # the vocabulary is saved on its own
    loggers = list(instantiate_all(cfg.get("logger")).values())
    configured = instantiate_all(cfg.get("callbacks"))
    callbacks = list(configured.values())
    if not loggers:  # nothing to report the learning rate to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    callbacks += [RunArtifacts(config, saved_kwargs), ExactResume(),
                  MonitoredMetrics(monitored(configured, cfg.get("optimized_metric"))), *(extra_callbacks or [])]
    if cfg.trainer.get("enable_progress_bar", True):
        if not sys.stderr.isatty():  # a log file, CI, a scheduler: one line every N steps
            callbacks.append(LineProgress(max(1, cfg.trainer.get("log_every_n_steps") or 50)))
        else:  # Lightning would pick rich's bar whenever rich is installed; tqdm's stays the default
            callbacks.append(RichProgressBar() if cfg.get("extras", {}).get("rich_progress") else TQDMProgressBar())
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    for logger in loggers:  # hparams.yaml, TensorBoard's hparams tab, MLflow params: the run's resolved config
        logger.log_hyperparams(config)
        tag(logger, list(cfg.get("tags") or []))
    return datamodule, model, trainer


def fit(cfg: DictConfig, ckpt_path: str | None) -> tuple[L.Trainer, L.LightningModule, L.LightningDataModule]:
    """Seed, build and fit; a stop by signal becomes `TrainingStopped` once `last.ckpt` is written."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg, resume_from=ckpt_path)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except RuntimeError as e:  # the checkpoint's weights do not fit the network this config builds
        if ckpt_path and str(e).startswith("Error(s) in loading state_dict"):
            first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), "")
            raise_misfit(ckpt_path, read_checkpoint(ckpt_path, mmap=True)["rnnlab"].get("config", {}), cfg, first)
        raise
    except SIGTERMException:
        raise TrainingStopped(EXIT_SIGTERM) from None
    except SystemExit as e:  # Lightning exits with status 1 after a KeyboardInterrupt
        if trainer.interrupted:
            raise TrainingStopped(EXIT_SIGINT) from None
        raise e
    return trainer, model, datamodule


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured task in its own run folder; returns the final metrics."""
    if "hydra" in cfg:  # a run's config.yaml loaded by hand: the Hydra settings it carries are Hydra's, not the run's
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    check_run(cfg)
    check_lr_find(cfg)
    check_accelerator(cfg.trainer)
    set_threads(cfg.get("threads"))
    keep_freed_memory(cfg.get("keep_freed_memory", True))
    silence_known_warnings()
    out = Path(cfg.paths.output_dir)
    lock = FolderLock(out) if rank_zero_only.rank == 0 else None
    try:
        ckpt_path = resume_path(cfg)
        log.info("run folder: %s", out.resolve())
        config_yaml = f"config:\n{OmegaConf.to_yaml(cfg, resolve=True)}"
        if cfg.get("extras", {}).get("print_config") and rank_zero_only.rank == 0:
            print_config_tree(cfg)
        log_to_files(log, config_yaml)
        archived = save_config(cfg)
        if (cfg.get("lr_find") or {}).get("steps"):  # a range test in place of training
            L.seed_everything(cfg.seed, workers=True)
            datamodule, model, trainer = build(cfg)
            results = find_lr(trainer, model, datamodule, out, **cfg.lr_find)
            if rank_zero_only.rank == 0:
                write_metrics(out, results)
            return results
        try:
            trainer, model, datamodule = fit(cfg, ckpt_path)
        except RunDirectoryError:  # a checkpoint that does not fit: the run's own files go back in place
            restore_config(cfg, archived)
            raise
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if ckpt_path:  # a resumed run: its metrics of before, updated by those logged again (none if it was done)
            metrics = {**read_metrics(out), **metrics}
        if cfg.get("test"):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            results = trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics.update(results[0] if results else {})
            if best:
                log.info("best checkpoint: %s", best)
        log.info("final metrics:\n%s", "\n".join(f"  {k:28s} {v:.6g}" for k, v in sorted(metrics.items())))
        if rank_zero_only.rank == 0:  # for multirun summaries and scripts
            write_metrics(out, metrics)
        return metrics
    finally:
        if lock is not None:
            lock.release()


def objective(metrics: dict[str, float], name: str | None) -> float | None:
    """The value a sweeper optimizes (`optimized_metric`), None without one."""
    if not name:
        return None
    if name not in metrics:
        raise ValueError(f"optimized_metric={name!r} is not among the run's final metrics: {sorted(metrics)}")
    return metrics[name]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    with one_line_errors("train.py", extra=(TrainingDiverged, MisconfigurationException), outcomes=(TrainingDiverged,)):
        check_added_keys("train.py", read=("callbacks.", "logger.", "model.", "data.", "trainer.", "paths."))
        return objective(train(cfg), cfg.get("optimized_metric"))
    return None  # a multirun job that failed, the sweep going on: to Optuna, a failed trial


if __name__ == "__main__":
    main()
