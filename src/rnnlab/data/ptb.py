"""Penn Treebank (Mikolov's split): word tokens with `<eos>` at each line end."""

from __future__ import annotations

from pathlib import Path

from rnnlab.data.corpus import TokenCorpus, cache_key, cached_corpus, encode_ids, read_text
from rnnlab.data.download import DataFileError, corpus_files, fetch
from rnnlab.data.vocab import Vocabulary

EOS, UNK = "<eos>", "<unk>"
NO_UNK_HINT = (f" (the training file has no {UNK}: write rare words as {UNK} in every file, as PTB does, or train "
               "on raw documents with task=lm data.path=<file or folder>, which keeps a vocabulary of its own)")


def read_words(path: Path) -> list[str]:
    """Whitespace tokens of each line followed by `<eos>`; an empty file is an error naming it."""
    words: list[str] = []
    for line in read_text(path).splitlines():
        words.extend(line.split())
        words.append(EOS)
    if len(words) == words.count(EOS):
        raise DataFileError(f"{path} has no words: expected text, one sentence a line")
    return words


def tokenize_files(files: dict[str, Path], vocab: Vocabulary | None = None) -> TokenCorpus:
    """Vocabulary from `files["train"]` (unless given) and ids of every split.

    Without `<unk>` in the training text, a word of another split that training never saw is an error."""
    words = {split: read_words(path) for split, path in files.items()}
    if vocab is None:
        unk = UNK if UNK in set(words["train"]) else None
        vocab = Vocabulary.build(words["train"], specials=[EOS], unk=unk)
    return TokenCorpus(vocab, {split: encode_ids(vocab, w, str(files[split]), NO_UNK_HINT)
                               for split, w in words.items()})


def load_ptb(data_dir: str | Path, cache_dir: str | Path | None = None, download: bool = True,
             url: str | None = None, sha256: dict | None = None) -> TokenCorpus:
    """The three PTB files (from `url`, a folder, when given), checked against `sha256` (per split)."""
    remotes = corpus_files("ptb", url, sha256)
    files = {split: fetch(remote, data_dir, download) for split, remote in remotes.items()}
    key = cache_key("ptb-v1", *(r.sha256 for r in remotes.values()))
    return cached_corpus(cache_dir, "ptb", key, lambda: tokenize_files(files))
