"""Word-level LM corpora from plain documents: a text file, a folder of `.txt` files, IMDB's training reviews,
the sentence-polarity sentences outside the classifier's test part.

Documents are tokenized exactly as the sentiment classifier tokenizes its texts (`data/text.py`), each
followed by `<eos>`; whole documents go to train/valid/test (a seeded shuffle, then the fractions), and the
vocabulary (PAD = 0, UNK = 1, `<eos>`, words by training frequency) is the training documents' own, so a
classifier can take the LM's vocabulary and weights as they are; or, to fine-tune an LM on new text, the
vocabulary given (its checkpoint's), words outside it read as `<unk>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rnnlab.checks import check_fractions
from rnnlab.data.corpus import TokenCorpus, cache_key, cached_corpus, read_text
from rnnlab.data.download import DataFileError, fetch_tree
from rnnlab.data.sentiment import SentimentDataModule, read_acl_imdb
from rnnlab.data.text import build_vocab
from rnnlab.data.vocab import Vocabulary

EOS = "<eos>"


def document_files(path: Path) -> list[Path]:
    """The files of `path`: itself, or a folder's `.txt` files (sorted, recursive)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return [path]
    files = sorted(path.rglob("*.txt"))
    if not files:
        raise DataFileError(f"{path} holds no .txt file")
    return files


def text_documents(path: Path) -> list[str]:
    """A file is one document per non-empty line; a folder, one document per `.txt` file (sorted, recursive)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return [read_text(f) for f in document_files(path)]
    return [line for line in read_text(path).splitlines() if line.strip()]


def split_documents(documents: Sequence[str], fractions: Sequence[float], seed: int,
                    source: str = "the corpus") -> dict[str, list[str]]:
    """Whole documents to train/valid/test in a seeded random order, by `fractions` (valid and test get at
    least one document each); `source` names where they came from in an error."""
    check_fractions("data.split", fractions)
    if len(documents) < 3:
        raise DataFileError(f"{source} holds {len(documents)} document(s); a corpus needs at least 3 (one per split)")
    order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(seed)).tolist()
    n_valid = max(1, round(fractions[1] * len(documents)))
    n_test = max(1, round(fractions[2] * len(documents)))
    n_train = len(documents) - n_valid - n_test
    if n_train < 1:
        raise DataFileError(f"{source}: {len(documents)} documents leave none for training with data.split="
                            f"{list(fractions)}")
    parts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    return {name: [documents[i] for i in idx] for name, idx in parts.items()}


def document_corpus(splits: dict[str, list[str]], tokenize: Callable[[str], list[str]], min_freq: int = 1,
                    max_size: int | None = None, vocab: Vocabulary | None = None) -> TokenCorpus:
    """Each split's documents as one id stream, `<eos>` after every document; the vocabulary from training,
    or `vocab` (words outside it become its unknown symbol)."""
    tokens = {name: [[*tokenize(doc), EOS] for doc in docs] for name, docs in splits.items()}
    if vocab is None:
        vocab = build_vocab(tokens["train"], min_freq, max_size)
        if EOS not in vocab:
            raise DataFileError("the training documents are empty")
    elif EOS not in vocab or vocab.unk is None:
        raise ValueError(f"the vocabulary given has no {EOS} or no unknown symbol: not a document LM's")
    return TokenCorpus(vocab, {name: torch.tensor([i for doc in docs for i in vocab.encode(doc)], dtype=torch.long)
                               for name, docs in tokens.items()})


def load_text_corpus(source: str, path: str | None, data_dir: Path, cache_dir: Path | None,
                     tokenize: Callable[[str], list[str]], options: tuple, split: Sequence[float], seed: int,
                     min_freq: int = 1, max_size: int | None = None, download: bool = True,
                     vocab: Vocabulary | None = None, folds: int | None = None, fold: int = 0,
                     sentiment_split: Sequence[float] = (0.8, 0.1, 0.1)) -> TokenCorpus:
    """`source="imdb"`: IMDB's 25,000 training reviews (never the test reviews); `source="mr"`: the
    sentence-polarity sentences that `data=mr` (with the same `folds`, `fold`, `sentiment_split` and seed) trains
    and validates on, never its test part; `source="files"`: `path`."""
    if source == "imdb":
        def documents() -> list[str]:
            return read_acl_imdb(fetch_tree("imdb", data_dir, cache_dir, download), "train").texts
        identity: tuple = ("imdb-train",)
        name = "IMDB's training reviews"
    elif source == "files":
        if not path:
            raise ValueError("data.source=files needs data.path (a text file or a folder of .txt files)")
        where = Path(path).expanduser()
        if not where.exists():
            raise DataFileError(f"data.path: {where} does not exist")
        identity = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in document_files(where))
        name = f"data.path {where} ({'a document a .txt file' if where.is_dir() else 'a document a non-empty line'})"

        def documents() -> list[str]:
            return text_documents(where)
    elif source == "mr":
        classifier = SentimentDataModule("mr", str(data_dir), str(cache_dir or data_dir), download,
                                         split=tuple(sentiment_split), folds=folds, fold=fold, seed=seed)
        identity = ("mr-not-test", folds, fold if folds else None, tuple(sentiment_split))
        name = "sentence polarity's training and validation sentences"

        def documents() -> list[str]:
            parts = classifier.read_splits()
            return parts["train"].texts + parts["valid"].texts
    else:
        raise ValueError(f"data.source must be 'imdb', 'mr' or 'files', got {source!r}")
    given = (vocab.itos, vocab.unk) if vocab is not None else None
    key = cache_key(identity, options, tuple(split), seed, min_freq, max_size, given)
    return cached_corpus(cache_dir, f"text-{source}", key,
                         lambda: document_corpus(split_documents(documents(), split, seed, name), tokenize, min_freq,
                                                 max_size, vocab))
