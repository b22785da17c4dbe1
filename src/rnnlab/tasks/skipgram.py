"""Skip-gram word vectors with negative sampling, pretrained on the sentiment task's training texts."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import ListConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from rnnlab.data.corpus import cache_key
from rnnlab.data.vocab import Vocabulary
from rnnlab.files import atomic_torch_save

log = logging.getLogger(__name__)


class SkipGramPairs(IterableDataset):
    """Batches of (center `(batch,)`, context `(batch,)`, negatives `(batch, k)`) from id sequences.

    Context words lie within `window` of the center; negatives are drawn from the unigram
    distribution raised to 0.75 (Mikolov et al. 2013). Padding and unknown ids (0, 1) are skipped.
    With `subsample` = t > 0, a word of frequency f is kept with probability min(1, sqrt(t/f) + t/f)
    (word2vec's rule, drawn once), which drops most "the"/"a" and widens the effective window.
    """

    def __init__(self, sequences: list[list[int]], vocab_size: int, window: int = 5, negatives: int = 5,
                 batch_size: int = 1024, seed: int = 0, subsample: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        seqs = [torch.tensor([i for i in seq if i > 1], dtype=torch.long) for seq in sequences]
        if subsample > 0 and seqs:
            freq = torch.bincount(torch.cat(seqs), minlength=vocab_size).double()
            freq = freq / freq.sum().clamp(min=1)
            ratio = subsample / freq.clamp(min=1e-12)
            keep = (ratio.sqrt() + ratio).clamp(max=1.0)
            seqs = [seq[torch.rand(len(seq), generator=g, dtype=torch.double) < keep[seq]] for seq in seqs]
        centers, contexts = [], []
        for seq in seqs:
            for offset in range(1, window + 1):
                if len(seq) > offset:
                    centers += [seq[:-offset], seq[offset:]]
                    contexts += [seq[offset:], seq[:-offset]]
        if not centers:
            raise ValueError(f"no skip-gram pairs: {len(sequences)} text(s) leave no two known words within a "
                             f"window (subsample={subsample} may have dropped them all; try a smaller one)")
        self.centers, self.contexts = torch.cat(centers), torch.cat(contexts)
        counts = torch.bincount(self.centers, minlength=vocab_size).float()
        self.noise = counts.pow(0.75) / counts.pow(0.75).sum()
        self.negatives, self.batch_size, self.seed, self.passes = negatives, batch_size, seed, 0

    def __len__(self) -> int:
        return -(-len(self.centers) // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.passes)
        self.passes += 1
        order = torch.randperm(len(self.centers), generator=g)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            neg = torch.multinomial(self.noise, len(idx) * self.negatives, replacement=True, generator=g)
            yield self.centers[idx], self.contexts[idx], neg.view(len(idx), self.negatives)


class SkipGram(L.LightningModule):
    """Input vectors `in_vectors` are the word vectors; loss -log s(u.v) - sum log s(-u.n).

    Both tables have sparse gradients: a batch touches a few thousand of the vocabulary's rows.
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 128, lr: float = 3e-3):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.in_vectors = nn.Embedding(vocab_size, embedding_dim, sparse=True)
        self.out_vectors = nn.Embedding(vocab_size, embedding_dim, sparse=True)
        nn.init.uniform_(self.in_vectors.weight, -0.5 / embedding_dim, 0.5 / embedding_dim)
        nn.init.zeros_(self.out_vectors.weight)

    def loss(self, center: Tensor, context: Tensor, negatives: Tensor) -> Tensor:
        u = self.in_vectors(center)
        pos = F.logsigmoid((u * self.out_vectors(context)).sum(-1))
        neg = F.logsigmoid(-(self.out_vectors(negatives) @ u.unsqueeze(-1)).squeeze(-1)).sum(-1)
        return -(pos + neg).mean()

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(*batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SparseAdam(self.parameters(), lr=self.hparams.lr)  # updates only the rows a batch used


def save_vectors(vocab: Vocabulary, vectors: Tensor, path: Path) -> Path:
    atomic_torch_save({"itos": list(vocab.itos), "vectors": vectors.detach().cpu()}, Path(path))
    return Path(path)


def load_vectors_into(embedding: nn.Embedding, vocab: Vocabulary, path: str | Path) -> int:
    """Copy the vectors of `path` into `embedding` for the words both share; returns how many."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["vectors"].size(1) != embedding.embedding_dim:
        raise ValueError(f"{path}: vectors of size {saved['vectors'].size(1)}, but model.embedding_dim is "
                         f"{embedding.embedding_dim}")
    index = {w: i for i, w in enumerate(saved["itos"])}
    found = [(vocab.stoi[w], index[w]) for w in vocab.itos[2:] if w in index]
    if found:
        ours, theirs = map(torch.tensor, zip(*found))
        with torch.no_grad():
            embedding.weight[ours] = saved["vectors"][theirs].to(embedding.weight.dtype)
    return len(found)


def pretrain(datamodule, embedding_dim: int, window: int, negatives: int, epochs: int, batch_size: int,
             lr: float, output: str | Path, seed: int = 0, subsample: float = 0.0,
             trainer_kwargs: dict | None = None) -> Path:
    """Train skip-gram vectors on `datamodule`'s training texts and write them to `output`."""
    datamodule.setup()
    pairs = SkipGramPairs(datamodule.datasets["train"].ids, len(datamodule.vocab), window, negatives,
                          batch_size, seed, subsample)
    model = SkipGram(len(datamodule.vocab), embedding_dim, lr)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, **(trainer_kwargs or {}))
    trainer.fit(model, DataLoader(pairs, batch_size=None))
    return save_vectors(datamodule.vocab, model.in_vectors.weight, Path(output))


LOADER_SETTINGS = ("data_dir", "cache_dir", "download", "batching", "padding_side", "batch_size", "eval_batch_size",
                   "chunk_batches")  # where the texts come from and how they are batched: not what they are


def cached_vectors(data, cache_dir: str | Path, embedding_dim: int = 128, window: int = 5, negatives: int = 5,
                   subsample: float = 1e-4, epochs: int = 3, batch_size: int = 4096, lr: float = 3e-3,
                   seed: int = 1234) -> str:
    """Path of the skip-gram vectors for these settings in `cache_dir/vectors/`, pretrained on first use.

    The file name holds a hash of every setting (the texts' too, not their folders or batching), so a
    changed setting pretrains anew and an unchanged one is reused. Pretraining draws from its own
    seed inside a forked RNG: the caller's random state is the same whether the file was cached.
    """
    settings = {k: list(v) if isinstance(v, (tuple, ListConfig)) else v
                for k, v in data.hparams.items() if k not in LOADER_SETTINGS}  # [0.8, 0.1] however it was given
    settings.update(embedding_dim=embedding_dim, window=window, negatives=negatives, subsample=subsample,
                    epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    key = cache_key(sorted(settings.items()))
    path = Path(cache_dir) / "vectors" / f"skipgram-{data.hparams.dataset}-{embedding_dim}d-{key}.pt"
    if path.is_file():
        log.info("skip-gram vectors: %s (cached)", path)
        return str(path)
    log.info("pretraining skip-gram vectors on the %s training texts, once; cached as %s",
             data.hparams.dataset, path)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pretrain(data, embedding_dim, window, negatives, epochs, batch_size, lr, path, seed, subsample)
    return str(path)
