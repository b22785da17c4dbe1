import pytest
import torch

from rnnlab.data import ptb
from rnnlab.data.lm_datamodule import PTBDataModule


def test_real_ptb_counts_and_vocabulary(data_dir, tmp_path):
    corpus = ptb.load_ptb(data_dir, tmp_path / "cache", download=False)
    assert len(corpus.vocab) == 10_000
    assert "<unk>" in corpus.vocab and corpus.vocab.itos[0] == "<eos>"
    assert {k: v.numel() for k, v in corpus.splits.items()} == {"train": 929_589, "valid": 73_760, "test": 82_430}
    first = (data_dir / "ptb" / "ptb.train.txt").read_text().split("\n")[0].split()
    assert corpus.vocab.decode(corpus.splits["train"][: len(first) + 1]) == first + ["<eos>"]


def test_tokenized_ids_are_cached_and_reused(data_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = ptb.load_ptb(data_dir, cache, download=False)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.startswith("ptb-") and files[0].suffix == ".pt"

    def fail(*args, **kwargs):
        raise AssertionError("re-tokenized although a cache entry exists")

    monkeypatch.setattr(ptb, "tokenize_files", fail)
    second = ptb.load_ptb(data_dir, cache, download=False)
    assert second.vocab == first.vocab
    assert torch.equal(second.splits["test"], first.splits["test"])


def test_datamodule_streams_and_vocab_check(data_dir, tmp_path):
    dm = PTBDataModule(str(data_dir), str(tmp_path / "cache"), download=False, batch_size=20, bptt=20)
    assert dm.model_kwargs() == {"net": {"vocab_size": 10_000}}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (20, 20)
    assert len(dm.train_dataloader()) == 2324  # 929589 // 20 = 46479 columns, ceil(46478 / 20)
    other = PTBDataModule(str(data_dir), str(tmp_path / "cache"), download=False)
    other.vocab = dm.vocab.__class__(["a", "b"])
    with pytest.raises(ValueError, match="vocabulary differs"):
        other.setup()
