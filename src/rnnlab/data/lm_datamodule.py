"""LightningDataModules for language modelling over a continuous token stream (PTB, Tiny Shakespeare)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch import Tensor

from rnnlab.checks import check_count, check_fractions, check_switches
from rnnlab.data.corpus import TokenCorpus, encode_ids, read_text
from rnnlab.data.loaders import ResumableLoader, fit_position, process_rank
from rnnlab.data.ptb import NO_UNK_HINT, load_ptb, read_words, tokenize_files
from rnnlab.data.shakespeare import load_chars, load_tinyshakespeare
from rnnlab.data.streams import BPTTStream
from rnnlab.data.text import document_words
from rnnlab.data.text_corpus import EOS, load_text_corpus, text_documents
from rnnlab.data.vocab import Vocabulary


class LMDataModule(L.LightningDataModule):
    """Train/valid/test `BPTTStream`s over a `TokenCorpus`.

    Each process reads its own contiguous shard (rank and world size come from the Trainer),
    so the loaders are iterable datasets and Lightning adds no distributed sampler.
    """

    def __init__(
        self,
        data_dir: str,
        cache_dir: str | None = None,
        download: bool = True,
        url: str | None = None,  # a mirror; None: the registry's source (data/download.py)
        sha256=None,  # its hash(es); None: the registry's
        batch_size: int = 20,
        eval_batch_size: int = 10,
        test_batch_size: int | None = None,  # None: eval_batch_size
        bptt: int = 35,
        eval_bptt: int | None = None,
        vary_bptt: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("bptt", bptt)):
            check_count(f"data.{name}", value)
        for name, value in (("test_batch_size", test_batch_size), ("eval_bptt", eval_bptt)):
            check_count(f"data.{name}", value, nullable=True)
        self.save_hyperparameters(logger=False)  # the loggers get the whole run config (train.build)
        self.data_dir = Path(data_dir).expanduser()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.corpus: TokenCorpus | None = None
        self.vocab: Vocabulary | None = None

    def load_corpus(self) -> TokenCorpus:
        raise NotImplementedError

    def encode_file(self, path: str | Path) -> Tensor:
        """The ids `(tokens,)` of another text file, read as this corpus reads its text (here: words, `<eos>` at
        each line end), with `vocab`: a trained model's perplexity on any text (`eval.py text_file=...`)."""
        return encode_ids(self.vocab, read_words(Path(path).expanduser()), str(path), NO_UNK_HINT)

    def prepare_data(self) -> None:
        if self.corpus is None:  # a corpus given (eval.py text_file=...) needs no files
            self.load_corpus()

    def setup(self, stage: str | None = None) -> None:
        if self.corpus is None:
            self.corpus = self.load_corpus()
            if self.vocab is not None and self.vocab != self.corpus.vocab:
                raise ValueError("the corpus vocabulary differs from the one given (e.g. from a checkpoint)")
            self.vocab = self.corpus.vocab

    def model_kwargs(self) -> dict:
        """What the model (`net` for its network) must know about the data to be built."""
        self.setup()
        return {"net": {"vocab_size": len(self.vocab)}}

    def stream(self, split: str, batch_size: int, vary: bool = False) -> BPTTStream:
        """Training windows of `bptt`; evaluation windows of `eval_bptt` (default `bptt`): the state is carried
        from window to window, so their length changes no number, only how many steps the loop takes."""
        self.setup()
        rank, world_size = process_rank(self.trainer)
        tokens = self.corpus.splits[split]
        bptt = self.hparams.bptt if split == "train" else (self.hparams.eval_bptt or self.hparams.bptt)
        try:
            return BPTTStream(tokens, batch_size, bptt, rank, world_size, vary_length=vary, seed=self.hparams.seed)
        except ValueError as e:
            key = {"train": "data.batch_size", "valid": "data.eval_batch_size"}.get(split, "data.test_batch_size")
            raise ValueError(f"the {split} split: {e} (lower {key}, or give the split more text)") from None

    def _loader(self, split: str, batch_size: int, train: bool = False) -> ResumableLoader:
        vary = train and self.hparams.vary_bptt
        stream = self.stream(split, batch_size, vary=vary)
        position = fit_position(self.trainer) if train else None
        if vary and position is not None:
            # Varied windows change the number of windows every epoch, and Lightning measures an epoch's length
            # when it loads the train loader: made once, that measure would cut longer epochs short and skip
            # the validation of shorter ones. So the loader is made again, at its epoch, for every epoch.
            stream.set_epoch(position[0])
            self.trainer.reload_dataloaders_every_n_epochs = 1
        return ResumableLoader(stream, batch_size=None, trainer=self.trainer if train else None)

    def train_dataloader(self) -> ResumableLoader:
        return self._loader("train", self.hparams.batch_size, train=True)

    def val_dataloader(self) -> ResumableLoader:
        return self._loader("valid", self.hparams.eval_batch_size)

    def test_dataloader(self) -> ResumableLoader:
        return self._loader("test", self.hparams.test_batch_size or self.hparams.eval_batch_size)


class PTBDataModule(LMDataModule):
    """Penn Treebank from `data_dir/ptb/ptb.{train,valid,test}.txt`, downloaded when missing."""

    def load_corpus(self) -> TokenCorpus:
        return load_ptb(self.data_dir, self.cache_dir, self.hparams.download, self.hparams.url,
                        self.hparams.sha256)


class TextFilesDataModule(LMDataModule):
    """A word-level corpus from your own `train`/`valid`/`test` files (PTB format: one sentence a line)."""

    def __init__(self, train: str, valid: str, test: str, **kwargs):
        super().__init__(**kwargs)
        self.files = {"train": Path(train), "valid": Path(valid), "test": Path(test)}

    def load_corpus(self) -> TokenCorpus:
        for split, path in self.files.items():
            if not path.is_file():
                raise FileNotFoundError(f"data.{split}: {path} does not exist")
        return tokenize_files(self.files)


class TextCorpusDataModule(LMDataModule):
    """Words of plain documents: IMDB's training reviews (`source="imdb"`), the sentence-polarity sentences
    outside the classifier's test part (`source="mr"`, with its `folds`, `fold`, `sentiment_split`) or `path`, a
    text file (a document a line) or a folder of `.txt` files (a document each), tokenized as the sentiment data
    tokenizes (`lower`, `strip_html`, `strip_punctuation`); whole documents split by `split`; `<eos>` after each.
    `reverse=True` reads every document from its last word to its first (a backward LM, for ULMFiT's
    forward + backward pair).

    A vocabulary set on `vocab` before `setup` (a checkpoint's, to fine-tune its LM on this text) is used
    as is; else it is built from the training documents."""

    def __init__(self, source: str = "files", path: str | None = None, split=(0.9, 0.05, 0.05), lower: bool = True,
                 strip_html: bool = True, strip_punctuation: bool = True, min_freq: int = 1,
                 max_size: int | None = None, folds: int | None = None, fold: int = 0,
                 sentiment_split=(0.8, 0.1, 0.1), reverse: bool = False, **kwargs):
        super().__init__(**kwargs)
        check_switches("data.", lower=lower, strip_html=strip_html, strip_punctuation=strip_punctuation,
                       reverse=reverse)
        check_count("data.min_freq", min_freq)
        check_count("data.max_size", max_size, nullable=True)
        check_fractions("data.split", split)

    def tokenize(self, text: str) -> list[str]:
        return document_words(text, self.hparams)

    def encode_file(self, path: str | Path) -> Tensor:
        """A file as documents (a document a non-empty line; a folder: a document a `.txt` file), tokenized as
        this corpus's, `<eos>` after each; words outside `vocab` are `<unk>`."""
        words = [w for doc in text_documents(Path(path)) for w in (*self.tokenize(doc), EOS)]
        return encode_ids(self.vocab, words, str(path))

    def load_corpus(self) -> TokenCorpus:
        h = self.hparams
        return load_text_corpus(h.source, h.path, self.data_dir, self.cache_dir, self.tokenize,
                                (h.lower, h.strip_html, h.strip_punctuation, h.reverse), h.split, h.seed, h.min_freq,
                                h.max_size, h.download, self.vocab, h.folds, h.fold, h.sentiment_split)


class CharDataModule(LMDataModule):
    """Characters of Tiny Shakespeare (default) or of your own text file `text_file`.

    The text is split contiguously by `split` (train/valid/test fractions); the vocabulary is the
    training part's characters. Characters unseen in training map to U+FFFD
    (`on_unknown="unk"`) or raise an error naming them (`on_unknown="error"`).
    """

    def __init__(self, text_file: str | None = None, split=(0.9, 0.05, 0.05), on_unknown: str = "unk", **kwargs):
        super().__init__(**kwargs)
        if on_unknown not in ("unk", "error"):
            raise ValueError(f"data.on_unknown must be 'unk' or 'error', got {on_unknown!r}")
        self.text_file = Path(text_file).expanduser() if text_file else None
        self.split = tuple(split)
        self.on_unknown = on_unknown

    def load_corpus(self) -> TokenCorpus:
        if self.text_file is None:
            h = self.hparams
            return load_tinyshakespeare(self.data_dir, self.split, self.on_unknown, self.cache_dir, h.download,
                                        h.url, h.sha256)
        if not self.text_file.is_file():
            raise FileNotFoundError(f"data.text_file: {self.text_file} does not exist")
        return load_chars(self.text_file, self.split, self.on_unknown)

    def encode_file(self, path: str | Path) -> Tensor:
        """A file's characters; those outside `vocab` are U+FFFD (or an error, as the run's `on_unknown` says)."""
        return encode_ids(self.vocab, list(read_text(Path(path).expanduser())), str(path))
