"""Evaluate a checkpoint on the test (or validation) split, with nothing but the checkpoint file."""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from rnnlab import CONF_DIR
from rnnlab.checkpoint import load_run
from rnnlab.cli import one_line_errors, set_threads, silence_known_warnings

SPLITS = ("test", "valid")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    set_threads(cfg.get("threads"))
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    silence_known_warnings()
    run = load_run(cfg.ckpt_path)
    overrides = {"data_dir": cfg.paths.data_dir, "cache_dir": cfg.paths.cache_dir}
    if cfg.get("batch_size"):
        overrides["eval_batch_size"] = cfg.batch_size
    datamodule = instantiate(run.config.data, **overrides)
    datamodule.vocab = run.vocab
    trainer = instantiate(cfg.trainer)
    run_split = trainer.test if cfg.split == "test" else trainer.validate
    results = run_split(run.model, datamodule=datamodule)
    return dict(results[0]) if results else {}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    with one_line_errors("eval.py"):
        evaluate(cfg)


if __name__ == "__main__":
    main()
