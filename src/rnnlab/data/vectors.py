"""Word-vector files: `{"itos": [words], "vectors": (words, dim)}`, written atomically, read weights-only."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from rnnlab.data.vocab import Vocabulary
from rnnlab.files import atomic_torch_save, not_a_file


def whiten(vectors: Tensor) -> Tensor:
    """`(words, dim)` vectors centred and decorrelated (ZCA: times the inverse square root of their covariance
    over the words), then scaled back to their mean length: every direction carries the same variance."""
    x = vectors.detach().double()
    length = x.norm(dim=1).mean()
    x = x - x.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(x.T @ x / len(x))
    eigenvalues = eigenvalues.clamp_min(eigenvalues.max() * 1e-12)  # fewer words than dimensions: no division by 0
    white = x @ (eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T
    white *= length / white.norm(dim=1).mean()
    return white.to(vectors.dtype)


def save_vectors(vocab: Vocabulary, vectors: Tensor, path: Path) -> Path:
    """Write `vectors` `(words, dim)` of `vocab`'s words to `path`."""
    atomic_torch_save({"itos": list(vocab.itos), "vectors": vectors.detach().cpu()}, Path(path))
    return Path(path)


MISSING = ("keep", "scaled")


def check_missing(missing: str) -> None:
    if missing not in MISSING:
        raise ValueError(f"model.missing_vectors must be one of {MISSING}, got {missing!r}")


def read_vectors(path: str | Path, where: str = "model.pretrained_embeddings") -> dict:
    """A word-vector file's `{"itos", "vectors"}`, read weights-only; anything else is one line naming `where`."""
    path = Path(path).expanduser()
    if why := not_a_file(path):
        raise ValueError(f"{where}: {path} {why}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # text, another format, or pickled objects (refused unread)
        raise ValueError(f"{where}: {path} is not a word-vector file written by pretrain_embeddings.py "
                         f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    vectors = saved.get("vectors") if isinstance(saved, dict) else None
    if not (isinstance(vectors, Tensor) and vectors.dim() == 2 and isinstance(saved.get("itos"), list)
            and len(saved["itos"]) == len(vectors)):
        raise ValueError(f"{where}: {path} is not a word-vector file written by pretrain_embeddings.py (expected "
                         "'itos', a list of words, and 'vectors', a (words, dim) tensor)")
    return saved


def load_vectors_into(embedding: nn.Embedding, vocab: Vocabulary, path: str | Path, missing: str = "keep") -> int:
    """Copy the vectors of `path` into `embedding` for the words both share; returns how many.

    The other words (`<unk>` included, `<pad>` never) keep the embedding's initialization (`missing="keep"`) or
    are drawn again from N(0, s^2), s the standard deviation of the vectors copied (`"scaled"`: every row on
    the vectors' scale, as Kim 2014 draws the words word2vec lacks)."""
    check_missing(missing)
    saved = read_vectors(path)
    if saved["vectors"].size(1) != embedding.embedding_dim:
        raise ValueError(f"{path}: vectors of size {saved['vectors'].size(1)}, but model.net.embedding_dim is "
                         f"{embedding.embedding_dim}")
    index = {w: i for i, w in enumerate(saved["itos"])}
    found = [(vocab.stoi[w], index[w]) for w in vocab.itos[2:] if w in index]
    if found:
        ours, theirs = map(torch.tensor, zip(*found))
        with torch.no_grad():
            copied = saved["vectors"][theirs].to(embedding.weight.dtype)
            if missing == "scaled":
                others = torch.ones(len(vocab), dtype=torch.bool)
                others[ours] = False
                if embedding.padding_idx is not None:
                    others[embedding.padding_idx] = False
                embedding.weight[others] = torch.randn_like(embedding.weight[others]) * copied.std()
            embedding.weight[ours] = copied
    return len(found)
