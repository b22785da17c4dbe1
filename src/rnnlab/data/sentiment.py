"""Sentence polarity (rt-polarity) and IMDB reviews: reading, splitting, and the DataModule."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import Dataset

from rnnlab.checks import check_count, check_folds, check_fractions, check_switches
from rnnlab.data.download import DataFileError, fetch_tree
from rnnlab.data.loaders import ResumableLoader, process_rank
from rnnlab.data.text import BucketBatchSampler, build_vocab, pad_batch, reading, tokenize
from rnnlab.data.vocab import Vocabulary

log = logging.getLogger(__name__)

@dataclass
class LabelledTexts:
    texts: list[str]
    labels: list[int]  # 1 positive, 0 negative

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def subset(self, idx: Sequence[int]) -> LabelledTexts:
        return LabelledTexts([self.texts[i] for i in idx], [self.labels[i] for i in idx])


def read_lines_any_encoding(path: Path) -> list[str]:
    """Lines of a UTF-8 or Latin-1/Windows-1252 file (Cornell's originals are the latter)."""
    if not path.is_file():
        raise DataFileError(f"{path} is missing")
    data = path.read_bytes()
    if b"\0" in data:
        raise DataFileError(f"{path} is a binary file, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    return text.splitlines()


def load_mr(data_dir: Path, cache_dir: Path, download_missing: bool = True, url: str | None = None,
            sha256: str | None = None) -> LabelledTexts:
    """rt-polarity.pos / .neg from `data_dir/rt-polaritydata`, else from Cornell's archive (extracted in the cache)."""
    folder = fetch_tree("mr", data_dir, cache_dir, download_missing, url, sha256)
    pos = [s for s in read_lines_any_encoding(folder / "rt-polarity.pos") if s.strip()]
    neg = [s for s in read_lines_any_encoding(folder / "rt-polarity.neg") if s.strip()]
    for path, lines in ((folder / "rt-polarity.pos", pos), (folder / "rt-polarity.neg", neg)):
        if not lines:
            raise DataFileError(f"{path} has no sentences: expected one sentence a line")
    return LabelledTexts(pos + neg, [1] * len(pos) + [0] * len(neg))


def read_acl_imdb(root: Path, split: str) -> LabelledTexts:
    """`root/{split}/{pos,neg}/*.txt` of Stanford's aclImdb layout, in file-name order."""
    texts, labels = [], []
    for label, name in ((1, "pos"), (0, "neg")):
        folder = root / split / name
        if not folder.is_dir():
            raise DataFileError(f"{folder} is missing: not an aclImdb tree")
        for path in sorted(folder.glob("*.txt")):
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
            labels.append(label)
    return LabelledTexts(texts, labels)


def read_reviews_labels(reviews: Path, labels: Path) -> LabelledTexts:
    """The notebook's form: one review a line in `reviews`, `positive`/`negative` a line in `labels`."""
    texts = read_lines_any_encoding(reviews)
    names = [s.strip().lower() for s in read_lines_any_encoding(labels)]
    if len(texts) != len(names):
        raise DataFileError(f"{reviews} has {len(texts)} lines but {labels} has {len(names)}: they must match")
    mapping = {"positive": 1, "pos": 1, "1": 1, "negative": 0, "neg": 0, "0": 0}
    bad = sorted({n for n in names if n not in mapping})
    if bad:
        raise DataFileError(f"{labels}: unexpected label(s) {bad[:20]}{' ...' if len(bad) > 20 else ''} "
                            f"({len(bad)} distinct); expected positive/negative (or pos/neg, 1/0)")
    return LabelledTexts(texts, [mapping[n] for n in names])


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Index lists per fraction, each with the classes in the same proportions; seeded."""
    rng = random.Random(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for label in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(idx)
        bounds = [round(len(idx) * sum(fractions[: k + 1])) for k in range(len(fractions))]
        start = 0
        for k, end in enumerate(bounds):
            parts[k] += idx[start:end]
            start = end
    return [sorted(p) for p in parts]


def fold_split(labels: Sequence[int], folds: int, fold: int, val_fraction: float, seed: int) -> list[list[int]]:
    """k-fold cross-validation: fold `fold` is the test set; `val_fraction` of the rest is validation."""
    check_folds(folds, fold)
    parts = stratified_split(labels, [1 / folds] * folds, seed)
    test = parts[fold]
    rest = sorted(i for k, p in enumerate(parts) if k != fold for i in p)
    train_rel, val_rel = stratified_split([labels[i] for i in rest], [1 - val_fraction, val_fraction], seed + 1)
    return [[rest[i] for i in train_rel], [rest[i] for i in val_rel], test]


class EncodedTexts(Dataset):
    """Token ids and labels; `lengths` for the bucket sampler."""

    def __init__(self, ids: list[list[int]], labels: list[int]):
        self.ids, self.labels = ids, labels
        self.lengths = [len(s) for s in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.ids[i], self.labels[i]


class Collate:
    """`(ids (batch, time), lengths (batch,), labels (batch,))`, padded on `side` to `length` (None: the longest)."""

    def __init__(self, side: str = "right", length: int | None = None):
        self.side, self.length = side, length

    def __call__(self, items):
        seqs, labels = zip(*items)
        lengths = torch.tensor([min(len(s), self.length or len(s)) for s in seqs])
        return pad_batch(seqs, self.side, self.length), lengths, torch.tensor(labels)


class SentimentDataModule(L.LightningDataModule):
    """Labelled texts -> token ids with a training-only vocabulary -> padded or length-bucketed batches.

    Batches are `(ids (batch, time), lengths (batch,), labels (batch,))`. `batching="pad"` pads every
    text to `max_len` on `padding_side` (the notebook's way); `"bucket"` groups texts of similar
    length and pads only to the longest in each batch. Sharding under DDP is done here (set the
    Trainer's `use_distributed_sampler=false`, as the sentiment task does).
    """

    def __init__(
        self, dataset: str = "mr", data_dir: str = "data", cache_dir: str = ".cache", download: bool = True,
        url: str | None = None, sha256: str | None = None,
        imdb_layout: str = "acl", reviews_file: str | None = None, labels_file: str | None = None,
        split: Sequence[float] = (0.8, 0.1, 0.1), folds: int | None = None, fold: int = 0,
        lower: bool = True, strip_html: bool = True, strip_punctuation: bool = True, reverse: bool = False,
        min_freq: int = 1, max_size: int | None = None, max_len: int | None = None, truncate_keep: str = "start",
        batching: str = "bucket", padding_side: str = "right", batch_size: int = 64, eval_batch_size: int = 256,
        chunk_batches: int = 100, seed: int = 0,
    ):
        super().__init__()
        if dataset not in ("mr", "imdb"):
            raise ValueError(f"data.dataset must be 'mr' or 'imdb', got {dataset!r}")
        if batching not in ("pad", "bucket"):
            raise ValueError(f"data.batching must be 'pad' or 'bucket', got {batching!r}")
        if batching == "pad" and max_len is None:
            raise ValueError("data.batching=pad needs data.max_len (the length every text is padded to)")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                            ("chunk_batches", chunk_batches)):
            check_count(f"data.{name}", value)
        check_count("data.max_len", max_len, nullable=True)
        check_count("data.min_freq", min_freq)
        check_count("data.max_size", max_size, nullable=True)
        check_fractions("data.split", split)
        check_folds(folds, fold)
        check_switches("data.", lower=lower, strip_html=strip_html, strip_punctuation=strip_punctuation,
                       reverse=reverse)
        if truncate_keep not in ("start", "end"):
            raise ValueError(f"data.truncate_keep must be 'start' or 'end', got {truncate_keep!r}")
        self.save_hyperparameters(logger=False)  # the loggers get the whole run config (train.build)
        self.vocab: Vocabulary | None = None
        self.new_words: int | None = None  # with a given vocabulary: add the training words it lacks seen this often
        self.datasets: dict[str, EncodedTexts] = {}

    def tokenize(self, text: str) -> list[str]:
        h = self.hparams
        return tokenize(text, h.lower, h.strip_html, h.strip_punctuation)

    def source(self) -> str:
        """The files the texts come from, for error messages."""
        h = self.hparams
        if h.dataset == "imdb" and h.imdb_layout == "reviews_labels":
            return f"{h.reviews_file} (labels {h.labels_file})"
        return f"the {'IMDB' if h.dataset == 'imdb' else 'sentence-polarity'} files under {h.data_dir} / {h.cache_dir}"

    def read_splits(self) -> dict[str, LabelledTexts]:
        h = self.hparams
        if h.dataset == "imdb" and h.imdb_layout == "reviews_labels":
            if not (h.reviews_file and h.labels_file):
                raise ValueError("data.imdb_layout=reviews_labels needs data.reviews_file and data.labels_file")
            data = read_reviews_labels(Path(h.reviews_file), Path(h.labels_file))
        elif h.dataset == "imdb":
            root = fetch_tree("imdb", h.data_dir, h.cache_dir, h.download, h.url, h.sha256)
            train, test = read_acl_imdb(root, "train"), read_acl_imdb(root, "test")
            train_idx, val_idx = stratified_split(train.labels, [1 - h.split[1], h.split[1]], h.seed)
            return {"train": train.subset(train_idx), "valid": train.subset(val_idx), "test": test}
        else:
            data = load_mr(Path(h.data_dir), Path(h.cache_dir), h.download, h.url, h.sha256)
        if h.folds:
            parts = fold_split(data.labels, h.folds, h.fold, h.split[1] / (1 - 1 / h.folds), h.seed)
        else:
            parts = stratified_split(data.labels, h.split, h.seed)
        return {name: data.subset(idx) for name, idx in zip(("train", "valid", "test"), parts)}

    def encode(self, texts: LabelledTexts, split: str, words: list[list[str]] | None = None) -> EncodedTexts:
        """The texts as ids; `words`: the texts already tokenized."""
        h = self.hparams
        ids, labels, dropped, truncated = [], [], 0, 0
        for text_words, label in zip(words if words is not None else map(self.tokenize, texts.texts), texts.labels):
            tokens = self.vocab.encode(text_words)
            if not tokens:
                dropped += 1
                continue
            ids.append(reading(tokens, h.max_len, h.truncate_keep, h.reverse))
            truncated += len(ids[-1]) < len(tokens)
            labels.append(label)
        if dropped or truncated:
            log.info("%s: dropped %d empty text(s), truncated %d to max_len=%s", split, dropped, truncated, h.max_len)
        return EncodedTexts(ids, labels)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        splits = self.read_splits()
        # the training texts tokenized once, for the vocabulary and their ids, when the vocabulary needs them
        words = [self.tokenize(t) for t in splits["train"].texts] if self.vocab is None or self.new_words else None
        if self.vocab is None:  # else the vocabulary given (a checkpoint's, or a language model's) is used as is
            self.vocab = build_vocab(words, self.hparams.min_freq, self.hparams.max_size)
        elif self.new_words:  # or extended by the training split's words it lacks
            self.vocab = self.vocab.extended((w for text_words in words for w in text_words), self.new_words)
        self.datasets = {name: self.encode(texts, name, words if name == "train" else None)
                         for name, texts in splits.items()}
        if len(self.datasets["train"]) == 0:
            raise DataFileError(f"the training split is empty: no text with words in {self.source()}")

    def model_kwargs(self) -> dict:
        """What the model (`net` for its network) must know about the data to be built."""
        self.setup()
        return {"net": {"vocab_size": len(self.vocab)}, "padding_side": self.hparams.padding_side, "vocab": self.vocab}

    def _loader(self, split: str, train: bool) -> ResumableLoader:
        """Every epoch's order follows from the seed and the epoch alone, so a resumed run draws the same."""
        self.setup()
        h = self.hparams
        dataset = self.datasets[split]
        batch_size = h.batch_size if train else h.eval_batch_size
        rank, world = process_rank(self.trainer)
        trainer = self.trainer if train else None
        if h.batching == "bucket":
            sampler = BucketBatchSampler(dataset.lengths, batch_size, h.chunk_batches, shuffle=train, seed=h.seed,
                                         rank=rank, world_size=world)
            return ResumableLoader(dataset, batch_sampler=sampler, collate_fn=Collate(h.padding_side), trainer=trainer)
        sampler = torch.utils.data.DistributedSampler(dataset, world, rank, shuffle=train, seed=h.seed)
        return ResumableLoader(dataset, batch_size, sampler=sampler, collate_fn=Collate(h.padding_side, h.max_len),
                               trainer=trainer)

    def train_dataloader(self) -> ResumableLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> ResumableLoader:
        return self._loader("valid", False)

    def test_dataloader(self) -> ResumableLoader:
        return self._loader("test", False)
