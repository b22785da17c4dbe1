"""Text classification data: tokenizing, the vocabulary with PAD/UNK, encoding, padding, bucketing."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import Sampler

from rnnlab.data.vocab import Vocabulary

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1; words from 2 on
HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
PUNCTUATION = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


def never_sampled(vocab: Vocabulary) -> list[int]:
    """Ids a language model must never emit: the padding symbol's (a document LM's vocabulary has one, shared with
    the classifier it may start), which no text holds."""
    return [vocab.stoi[PAD]] if PAD in vocab else []


TOKENIZATION = ("lower", "strip_html", "strip_punctuation")  # a document corpus's settings of `tokenize`
READING = {"reverse": False}  # its reading order; checkpoints older than the setting read forward


def tokenization(data: Mapping) -> dict[str, bool]:
    """How a document corpus's data config turns text into its word stream (what a classifier started from its
    LM, or a prime for its LM, must do the same way)."""
    return {key: data[key] for key in TOKENIZATION} | {key: data.get(key, default) for key, default in READING.items()}


def is_document_corpus(data: Mapping) -> bool:
    """Whether the data config `data` tokenizes documents (`tokenize`) rather than splitting at whitespace."""
    return all(key in data for key in TOKENIZATION)


def document_words(text: str, data: Mapping) -> list[str]:
    """The words of `text` that a model over the document corpus `data` (a data config) reads, in its order."""
    t = tokenization(data)
    return reading(tokenize(text, t["lower"], t["strip_html"], t["strip_punctuation"]), reverse=t["reverse"])


def tokenize(text: str, lower: bool = True, strip_html: bool = True, strip_punctuation: bool = True) -> list[str]:
    """Words of `text`: optionally lower-cased, `<br />` removed and punctuation dropped (apostrophes inside
    words are kept: "don't")."""
    if strip_html:
        text = HTML_BREAK.sub(" ", text)
    if lower:
        text = text.lower()
    if strip_punctuation:
        text = PUNCTUATION.sub(" ", text)
    return text.split()


def build_vocab(token_lists: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> Vocabulary:
    """Vocabulary of the given (training) texts: PAD = 0, UNK = 1, then words by frequency."""
    return Vocabulary.build((w for tokens in token_lists for w in tokens), specials=[PAD, UNK],
                            min_freq=min_freq, max_size=max_size, unk=UNK)


def truncate(ids: list[int], max_len: int | None, keep: str = "start") -> list[int]:
    if keep not in ("start", "end"):
        raise ValueError(f"data.truncate_keep must be 'start' or 'end', got {keep!r}")
    if max_len is None or len(ids) <= max_len:
        return ids
    return ids[:max_len] if keep == "start" else ids[-max_len:]


def reading(words: list, max_len: int | None = None, keep: str = "start", reverse: bool = False) -> list:
    """What a model reads of `words`: cut to `max_len` (keeping the `keep` end), then in its reading order, as
    written or last word first (`reverse`, a backward model): both directions read the same words."""
    kept = truncate(words, max_len, keep)
    return kept[::-1] if reverse else kept


def pad_batch(sequences: Sequence[Sequence[int]], side: str = "right", length: int | None = None) -> Tensor:
    """Ids `(batch, length)` padded with 0 on `side`; `length` defaults to the longest sequence."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    length = length or max(len(s) for s in sequences)
    out = torch.zeros(len(sequences), length, dtype=torch.long)
    for i, s in enumerate(sequences):
        s = torch.as_tensor(list(s)[:length], dtype=torch.long)
        if side == "right":
            out[i, : len(s)] = s
        else:
            out[i, length - len(s) :] = s
    return out


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar lengths: shuffle, sort by length within chunks of `chunk_batches` batches,
    cut into batches, shuffle the batches. Each epoch differs (`set_epoch`); every example appears once.

    Under DDP (`world_size > 1`) every rank draws the same batches and takes every `world_size`-th one;
    the list is padded by repeating batches from its start so that all ranks get the same number.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, chunk_batches: int = 100, shuffle: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self.lengths = torch.as_tensor(list(lengths))
        self.batch_size, self.chunk_batches, self.shuffle = batch_size, chunk_batches, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def all_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.lengths)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        chunk = self.batch_size * self.chunk_batches
        batches = []
        for start in range(0, n, chunk):
            idx = order[start : start + chunk]
            idx = idx[torch.argsort(self.lengths[idx], stable=True)]
            batches += [idx[i : i + self.batch_size].tolist() for i in range(0, len(idx), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.all_batches()
        per_rank = math.ceil(len(batches) / self.world_size)
        batches = [batches[i % len(batches)] for i in range(per_rank * self.world_size)]  # equal counts per rank
        return iter(batches[self.rank :: self.world_size])

    def __len__(self) -> int:
        n = len(self.lengths)  # chunks hold whole batches, so only the very last batch can be short
        count = math.ceil(n / self.batch_size)
        return math.ceil(count / self.world_size)
