"""Tokenized language-model corpora and their on-disk cache."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rnnlab.data.vocab import Vocabulary
from rnnlab.files import atomic_torch_save

log = logging.getLogger(__name__)


@dataclass
class TokenCorpus:
    """A vocabulary and one 1-D id tensor per split ("train", "valid", "test")."""

    vocab: Vocabulary
    splits: dict[str, Tensor]

    def state_dict(self) -> dict:
        return {"vocab": self.vocab.state_dict(), "splits": self.splits}

    @classmethod
    def from_state_dict(cls, state: dict) -> TokenCorpus:
        return cls(Vocabulary.from_state_dict(state["vocab"]), state["splits"])


def cache_key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def cached_corpus(cache_dir: str | Path | None, name: str, key: str, build: Callable[[], TokenCorpus]) -> TokenCorpus:
    """Load `name-key.pt` from `cache_dir`, else `build()` it and store it atomically."""
    if cache_dir is None:
        return build()
    path = Path(cache_dir).expanduser() / f"{name}-{key}.pt"
    if path.exists():
        try:
            return TokenCorpus.from_state_dict(torch.load(path, weights_only=True))
        except Exception as e:  # a damaged cache entry is rebuilt, never trusted
            log.warning("ignoring unreadable cache file %s (%s)", path, e)
    corpus = build()
    try:
        atomic_torch_save(corpus.state_dict(), path)
    except OSError as e:
        log.warning("could not write cache file %s (%s)", path, e)
    return corpus


def encode_ids(vocab: Vocabulary, symbols: list[str]) -> Tensor:
    return torch.tensor(vocab.encode(symbols), dtype=torch.long)
