"""Word-vector files: `{"itos": [words], "vectors": (words, dim)}`, written atomically, read weights-only."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from rnnlab.data.vocab import Vocabulary
from rnnlab.files import atomic_torch_save


def save_vectors(vocab: Vocabulary, vectors: Tensor, path: Path) -> Path:
    atomic_torch_save({"itos": list(vocab.itos), "vectors": vectors.detach().cpu()}, Path(path))
    return Path(path)


def load_vectors_into(embedding: nn.Embedding, vocab: Vocabulary, path: str | Path) -> int:
    """Copy the vectors of `path` into `embedding` for the words both share; returns how many."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["vectors"].size(1) != embedding.embedding_dim:
        raise ValueError(f"{path}: vectors of size {saved['vectors'].size(1)}, but model.net.embedding_dim is "
                         f"{embedding.embedding_dim}")
    index = {w: i for i, w in enumerate(saved["itos"])}
    found = [(vocab.stoi[w], index[w]) for w in vocab.itos[2:] if w in index]
    if found:
        ours, theirs = map(torch.tensor, zip(*found))
        with torch.no_grad():
            embedding.weight[ours] = saved["vectors"][theirs].to(embedding.weight.dtype)
    return len(found)
