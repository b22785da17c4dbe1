"""Pretrain skip-gram word vectors on the sentiment training texts (for model.pretrained_embeddings)."""

from __future__ import annotations

import logging

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from rnnlab import CONF_DIR
from rnnlab.cli import one_line_errors
from rnnlab.tasks.skipgram import pretrain

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="pretrain_embeddings")
def main(cfg: DictConfig) -> None:
    L.seed_everything(cfg.seed, workers=True)
    with one_line_errors("pretrain_embeddings.py"):
        path = pretrain(instantiate(cfg.data), cfg.embedding_dim, cfg.window, cfg.negatives, cfg.epochs,
                        cfg.batch_size, cfg.lr, cfg.output, cfg.seed, cfg.subsample)
    log.info("word vectors written to %s", path)


if __name__ == "__main__":
    main()
