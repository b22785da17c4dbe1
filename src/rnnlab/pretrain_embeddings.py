"""Pretrain word vectors on the sentiment training texts (for model.pretrained_embeddings): gensim's CBOW or
skip-gram, or rnnlab's PyTorch skip-gram trainer; and the cache of vectors by their settings that
`model/embeddings=cbow_imdb|skipgram_imdb` reads."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig
from torch import Tensor
from torch.utils.data import DataLoader

from rnnlab import CONF_DIR
from rnnlab.checks import check_count, check_seed, check_switch, is_number
from rnnlab.cli import check_added_keys, one_line_errors
from rnnlab.data.corpus import cache_key
from rnnlab.data.download import DataFileError
from rnnlab.data.sentiment import SentimentDataModule
from rnnlab.data.skipgram import SkipGramPairs
from rnnlab.data.vectors import save_vectors, whiten
from rnnlab.models.skipgram import SkipGram
from rnnlab.sweeps import check_own_output
from rnnlab.tasks.skipgram import SkipGramTask

log = logging.getLogger(__name__)


def pretrain(datamodule, embedding_dim: int, window: int, negatives: int, epochs: int, batch_size: int,
             lr: float, seed: int = 0, subsample: float = 0.0) -> Tensor:
    """Skip-gram vectors `(words, embedding_dim)` of `datamodule`'s vocabulary, trained by rnnlab's PyTorch
    trainer on its training texts."""
    datamodule.setup()
    pairs = SkipGramPairs(datamodule.datasets["train"].ids, len(datamodule.vocab), window, negatives,
                          batch_size, seed, subsample)
    task = SkipGramTask(SkipGram(len(datamodule.vocab), embedding_dim), lr)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False)
    trainer.fit(task, DataLoader(pairs, batch_size=None))
    return task.net.in_vectors.weight.detach()


def pretrain_gensim(datamodule, embedding_dim: int, window: int, negatives: int, epochs: int, seed: int = 0,
                    subsample: float = 0.0, workers: int = 2, cbow: bool = False) -> Tensor:
    """The same skip-gram vectors `(words, embedding_dim)` (negative sampling, frequent-word subsampling) trained
    by gensim's `Word2Vec` (multi-threaded C) on the same encoded training texts; `cbow`: its CBOW instead (each
    word from the mean of its window's vectors; about 5x faster). Words of the vocabulary that gensim never saw
    keep small random vectors. `workers=1` makes a run repeatable."""
    from gensim.models import Word2Vec

    datamodule.setup()
    vocab = datamodule.vocab
    texts = [vocab.decode(ids) for ids in datamodule.datasets["train"].ids]
    gensim_log = logging.getLogger("gensim")
    level, start = gensim_log.level, time.perf_counter()
    gensim_log.setLevel(logging.WARNING)  # its INFO lines are a dozen dumps of its settings
    try:
        model = Word2Vec(texts, vector_size=embedding_dim, window=window, negative=negatives, sg=int(not cbow),
                         min_count=1, sample=subsample, epochs=epochs, seed=seed, workers=workers, shrink_windows=False)
    finally:
        gensim_log.setLevel(level)
    log.info("gensim %s: %d epochs over %d texts of %d words in %.1f s", "CBOW" if cbow else "skip-gram", epochs,
             len(texts), model.corpus_total_words, time.perf_counter() - start)
    generator = torch.Generator().manual_seed(seed)
    vectors = (torch.rand(len(vocab), embedding_dim, generator=generator) - 0.5) / embedding_dim
    for i, word in enumerate(vocab.itos):
        if word in model.wv.key_to_index:
            vectors[i] = torch.from_numpy(model.wv[word].copy())
    return vectors


# each method's model and its time on IMDB on a 2-core CPU: rnnlab's PyTorch skip-gram trainer, gensim's
# Word2Vec skip-gram, its CBOW
METHODS = {"torch": ("skip-gram", "about 15 min"), "gensim": ("skip-gram", "a few minutes"),
           "gensim_cbow": ("CBOW", "about a minute")}


def check_settings(method: str, embedding_dim: int, window: int, negatives: int, epochs: int, batch_size: int,
                   workers: int, subsample: float, lr: float, whitened: bool) -> None:
    """One line naming the first setting out of range or of the wrong type, before any text is read."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    for name, value in (("embedding_dim", embedding_dim), ("window", window), ("negatives", negatives),
                        ("epochs", epochs), ("batch_size", batch_size), ("workers", workers)):
        check_count(name, value)
    if not is_number(subsample) or not 0 <= subsample < 1:
        raise ValueError(f"subsample must be a number in [0, 1) (0: keep every word), got {subsample!r}")
    if not is_number(lr) or not lr > 0:
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    check_switch("whitened", whitened)


def pretrain_vectors(method: str, datamodule, output: str | Path, embedding_dim: int, window: int, negatives: int,
                     epochs: int, batch_size: int, lr: float, seed: int, subsample: float, workers: int,
                     whitened: bool = False) -> Path:
    """Word vectors of `datamodule`'s training texts by `method` (`batch_size` and `lr`: the PyTorch
    trainer's; `workers`: gensim's), written to `output`; `whitened`: through `rnnlab.data.vectors.whiten`
    (CBOW's vectors crowd into a few directions, and whitened they classify better)."""
    check_settings(method, embedding_dim, window, negatives, epochs, batch_size, workers, subsample, lr, whitened)
    if not isinstance(datamodule, SentimentDataModule):
        raise ValueError(f"data: word vectors are made from a sentiment dataset's training texts (data=imdb or "
                         f"data=mr), not from {type(datamodule).__name__}")
    if method == "torch":
        vectors = pretrain(datamodule, embedding_dim, window, negatives, epochs, batch_size, lr, seed, subsample)
    else:
        vectors = pretrain_gensim(datamodule, embedding_dim, window, negatives, epochs, seed, subsample, workers,
                                  cbow=method == "gensim_cbow")
    return save_vectors(datamodule.vocab, whiten(vectors) if whitened else vectors, Path(output))


LOADER_SETTINGS = ("data_dir", "cache_dir", "download", "batching", "padding_side", "batch_size", "eval_batch_size",
                   "chunk_batches")  # where the texts come from and how they are batched: not what they are


def cached_vectors(data, cache_dir: str | Path, embedding_dim: int = 128, window: int = 5, negatives: int = 5,
                   subsample: float = 1e-4, epochs: int = 10, batch_size: int = 4096, lr: float = 3e-3,
                   seed: int = 1234, method: str = "gensim_cbow", workers: int = 1, whitened: bool = True,
                   pretrain_if_missing: bool = False) -> str:
    """Path of the word vectors for these settings in `cache_dir/vectors/` (the defaults: `cbow_imdb`'s).

    The file name holds a hash of every setting that shapes the vectors (the texts' too, not their folders or
    batching; a gensim method adds itself and drops the PyTorch trainer's `batch_size` and `lr`; `workers` is
    gensim's speed only; `whitened` only when true, so the files of before keep their names), so a changed setting
    needs new vectors and an unchanged one is reused. Missing vectors are an error saying how to make them, unless
    `pretrain_if_missing`: pretraining is a step of its own (minutes to an hour on a CPU), never a silent side
    effect. It draws from its own seed inside a forked RNG: the caller's random state is the same whether the file
    was cached.
    """
    check_settings(method, embedding_dim, window, negatives, epochs, batch_size, workers, subsample, lr, whitened)
    settings = {k: list(v) if isinstance(v, (tuple, ListConfig)) else v
                for k, v in data.hparams.items() if k not in LOADER_SETTINGS}  # [0.8, 0.1] however it was given
    settings.update(embedding_dim=embedding_dim, window=window, negatives=negatives, subsample=subsample,
                    epochs=epochs, seed=seed)
    if method == "torch":
        settings.update(batch_size=batch_size, lr=lr)
    else:
        settings.update(method=method)
    if whitened:
        settings.update(whitened=True)
    key = cache_key(sorted(settings.items()))
    model, minutes = METHODS[method]
    prefix = model.replace("-", "").lower()  # skipgram, cbow
    path = Path(cache_dir) / "vectors" / f"{prefix}-{data.hparams.dataset}-{embedding_dim}d-{key}.pt"
    if path.is_file():
        log.info("%s vectors: %s (cached)", model, path)
        return str(path)
    if not pretrain_if_missing:
        raise DataFileError(
            f"the {model} vectors for these settings are not in {path.parent} yet: make them with the same "
            f"command plus model.pretrained_embeddings.pretrain_if_missing=true ({minutes} on a 2-core CPU), "
            "or train without them: model/embeddings=none"
        )
    log.info("pretraining %s vectors (%s) on the %s training texts first (%s on a 2-core CPU, %d epochs%s), "
             "cached as %s", model, method, data.hparams.dataset, minutes, epochs,
             "; the progress bar below is this pretraining" if method == "torch" else "", path)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pretrain_vectors(method, data, path, embedding_dim, window, negatives, epochs, batch_size, lr, seed, subsample,
                         workers, whitened)
    return str(path)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="pretrain_embeddings")
def main(cfg: DictConfig) -> None:
    with one_line_errors("pretrain_embeddings.py"):
        check_added_keys("pretrain_embeddings.py", read=("data.",))
        check_seed("seed", cfg.seed)
        check_own_output("output", cfg.output)
        L.seed_everything(cfg.seed, workers=True)
        path = pretrain_vectors(cfg.method, instantiate(cfg.data), cfg.output, cfg.embedding_dim, cfg.window,
                                cfg.negatives, cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed, cfg.subsample, cfg.workers,
                                cfg.whitened)
        log.info("word vectors written to %s", path)


if __name__ == "__main__":
    main()
