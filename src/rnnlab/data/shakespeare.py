"""Character-level corpora (Tiny Shakespeare): one contiguous stream split into train/valid/test."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rnnlab.checks import check_fractions
from rnnlab.data.corpus import TokenCorpus, cache_key, cached_corpus, encode_ids, read_text
from rnnlab.data.download import DataFileError, corpus_files, fetch
from rnnlab.data.vocab import Vocabulary

UNK_CHAR = "\ufffd"  # U+FFFD REPLACEMENT CHARACTER stands for characters unseen in training
SPLITS = ("train", "valid", "test")


def split_text(text: str, fractions: Sequence[float]) -> dict[str, str]:
    """Contiguous train/valid/test parts of `text` by `fractions` (which must sum to 1)."""
    check_fractions("data.split", fractions)
    a = int(len(text) * fractions[0])
    b = a + int(len(text) * fractions[1])
    return dict(zip(SPLITS, (text[:a], text[a:b], text[b:])))


def char_corpus(text: str, fractions: Sequence[float], on_unknown: str = "unk", where: str = "") -> TokenCorpus:
    """Vocabulary of the training part's characters (plus `UNK_CHAR` with `on_unknown="unk"`)."""
    parts = split_text(text, fractions)
    specials = [UNK_CHAR] if on_unknown == "unk" else []
    vocab = Vocabulary(specials + sorted(set(parts["train"])), specials[0] if specials else None, on_unknown)
    if not parts["train"]:
        raise DataFileError(f"{where or 'the text'}: the training part is empty (data.split={list(fractions)})")
    return TokenCorpus(vocab, {split: encode_ids(vocab, list(part), f"{where or 'the text'} ({split} part)")
                               for split, part in parts.items()})


def load_chars(
    path: Path, fractions: Sequence[float], on_unknown: str = "unk", cache_dir: str | Path | None = None,
    sha256: str | None = None,
) -> TokenCorpus:
    text = read_text(path)
    if not text:
        raise DataFileError(f"{path} is empty: expected text")
    if cache_dir is None or sha256 is None:
        return char_corpus(text, fractions, on_unknown, str(path))
    key = cache_key("chars-v1", sha256, tuple(fractions), on_unknown)
    return cached_corpus(cache_dir, Path(path).stem, key, lambda: char_corpus(text, fractions, on_unknown, str(path)))


def load_tinyshakespeare(
    data_dir: str | Path, fractions: Sequence[float] = (0.9, 0.05, 0.05), on_unknown: str = "unk",
    cache_dir: str | Path | None = None, download: bool = True, url: str | None = None, sha256: str | None = None,
) -> TokenCorpus:
    remote = corpus_files("tinyshakespeare", url, sha256)["input"]
    path = fetch(remote, data_dir, download)
    return load_chars(path, fractions, on_unknown, cache_dir, remote.sha256)
