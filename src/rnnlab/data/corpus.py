"""Tokenized language-model corpora and their on-disk cache."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rnnlab.data.download import DataFileError
from rnnlab.data.vocab import UnknownSymbolError, Vocabulary
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


def encode_ids(vocab: Vocabulary, symbols: list[str], where: str = "", hint: str = "") -> Tensor:
    """Ids of `symbols`; an unknown symbol is an error naming `where` (the file) when the vocabulary has no unk."""
    try:
        return torch.tensor(vocab.encode(symbols), dtype=torch.long)
    except UnknownSymbolError as e:
        raise UnknownSymbolError(e.symbols, where, hint) from None


def read_text(path: Path) -> str:
    """The UTF-8 text of `path`; a missing, binary or non-UTF-8 file is a `DataFileError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path} is a folder, not a text file" if path.is_dir() else f"{path} does not exist")
    data = path.read_bytes()
    if b"\0" in data[:1 << 16]:
        raise DataFileError(f"{path} is a binary file, not UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFileError(f"{path} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None
