import random
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from rnnlab.data.download import DataFileError
from rnnlab.data.skipgram import SkipGramPairs
from rnnlab.data.text import build_vocab
from rnnlab.data.vectors import load_vectors_into, save_vectors, whiten
from rnnlab.models.classifier import RecurrentClassifier
from rnnlab.models.skipgram import SkipGram
from rnnlab.tasks.sentiment import SentimentClassifier
from rnnlab.tasks.skipgram import SkipGramTask
from tests.conftest import compose_config


def test_pairs_lie_within_the_window_and_skip_pad_and_unk():
    pairs = SkipGramPairs([[2, 3, 0, 4], [1, 5, 6]], vocab_size=7, window=1, negatives=3, batch_size=100)
    center, context, neg = next(iter(pairs))
    got = sorted(zip(center.tolist(), context.tolist()))
    assert got == sorted([(2, 3), (3, 2), (3, 4), (4, 3), (5, 6), (6, 5)])
    assert neg.shape == (6, 3) and neg.min() >= 2  # negatives follow the word counts: never PAD or UNK


def test_training_separates_co_occurring_words():
    torch.manual_seed(0)
    seqs = [[2, 3, 2, 3, 2, 3]] * 50 + [[4, 5, 4, 5, 4, 5]] * 50
    pairs = SkipGramPairs(seqs, 6, window=1, negatives=2, batch_size=64)
    task = SkipGramTask(SkipGram(6, 8), lr=0.05)
    model = task.net
    opt = task.configure_optimizers()
    for _ in range(5):
        for batch in pairs:
            loss = model(*batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    v = model.in_vectors.weight.detach()
    score = lambda a, b: (v[a] @ model.out_vectors.weight.detach()[b]).item()  # noqa: E731
    assert score(2, 3) > score(2, 5) and score(4, 5) > score(4, 3)


def test_vectors_load_into_the_sentiment_model_by_word(tmp_path):
    source = build_vocab([["good", "bad", "fine"]])
    vectors = torch.arange(len(source) * 4, dtype=torch.float).view(len(source), 4)
    path = save_vectors(source, vectors, tmp_path / "vectors.pt")
    target = build_vocab([["bad", "new", "good"]])
    model = SentimentClassifier(RecurrentClassifier(len(target), embedding_dim=4, hidden_size=3),
                                pretrained_embeddings=str(path), vocab=target, freeze_embeddings=True)
    emb = model.net.embedding.weight
    assert torch.equal(emb[target.stoi["bad"]], vectors[source.stoi["bad"]])
    assert torch.equal(emb[target.stoi["good"]], vectors[source.stoi["good"]])
    assert not emb.requires_grad
    assert load_vectors_into(nn.Embedding(len(target), 4), target, path) == 2


def test_words_without_a_vector_can_start_on_the_vectors_scale(tmp_path):
    source = build_vocab([[f"w{i}" for i in range(50)]])
    torch.manual_seed(0)
    vectors = torch.randn(len(source), 8) * 0.2
    path = save_vectors(source, vectors, tmp_path / "vectors.pt")
    target = build_vocab([[f"w{i}" for i in range(25)] + [f"new{i}" for i in range(3000)]])
    kept, scaled = (nn.Embedding(len(target), 8, padding_idx=0) for _ in range(2))
    scaled.load_state_dict(kept.state_dict())
    assert load_vectors_into(kept, target, path) == load_vectors_into(scaled, target, path, missing="scaled") == 25
    shared = [target.stoi[f"w{i}"] for i in range(25)]
    new = torch.tensor([target.stoi[f"new{i}"] for i in range(3000)])
    assert torch.equal(scaled.weight[shared], vectors[[source.stoi[f"w{i}"] for i in range(25)]])
    assert torch.equal(kept.weight[shared], scaled.weight[shared])
    expected = vectors[[source.stoi[f"w{i}"] for i in range(25)]].std()
    assert scaled.weight[new].std().item() == pytest.approx(expected.item(), rel=0.05)
    assert kept.weight[new].std().item() == pytest.approx(1.0, rel=0.05)  # nn.Embedding's N(0, 1), kept
    assert not scaled.weight[0].any()  # <pad> stays zero
    with pytest.raises(ValueError, match=r"model.missing_vectors must be one of \('keep', 'scaled'\), got 'zero'"):
        load_vectors_into(kept, target, path, missing="zero")


def test_a_file_that_is_not_word_vectors_is_one_line_naming_it(tmp_path):
    target = build_vocab([["bad", "good"]])
    embedding = nn.Embedding(len(target), 4)
    (tmp_path / "words.txt").write_text("good 0.1 0.2\n")
    torch.save({"vectors": torch.zeros(3, 4)}, tmp_path / "other.pt")
    torch.save({"itos": ["a", "b"], "vectors": torch.zeros(3, 4)}, tmp_path / "uneven.pt")
    for name, why in (("missing.pt", "does not exist"), ("", "is a folder, not a file"),
                      ("words.txt", "is not a word-vector file written by pretrain_embeddings.py (UnpicklingError"),
                      ("other.pt", "is not a word-vector file written by pretrain_embeddings.py (expected 'itos', a "
                                   "list of words, and 'vectors', a (words, dim) tensor)"),
                      ("uneven.pt", "is not a word-vector file")):
        path = tmp_path / name
        with pytest.raises(ValueError, match=rf"^model.pretrained_embeddings: {re.escape(str(path))} {re.escape(why)}"):
            load_vectors_into(embedding, target, path)  # before: "model: 101", a KeyError's bare key
    with pytest.raises(ValueError, match=r"^model.missing_vectors must be one of \('keep', 'scaled'\), got 'zero'$"):
        SentimentClassifier(RecurrentClassifier(len(target), embedding_dim=4, hidden_size=3), missing_vectors="zero")


def test_whitened_vectors_are_centred_decorrelated_and_keep_their_mean_length():
    torch.manual_seed(0)
    mixing = torch.randn(8, 8) * torch.logspace(-2, 1, 8)  # directions with 1e-4 to 100 times the variance
    vectors = torch.randn(2000, 8) @ mixing + 3.0
    white = whiten(vectors)
    covariance = torch.cov(white.T.double())
    assert white.shape == vectors.shape and white.dtype == vectors.dtype
    assert white.mean(0).abs().max() < 1e-4
    identity = covariance[0, 0] * torch.eye(8, dtype=torch.float64)
    assert torch.allclose(covariance, identity, atol=1e-4 * covariance[0, 0])
    assert torch.isclose(white.norm(dim=1).mean(), vectors.norm(dim=1).mean(), rtol=1e-5)
    orthogonal, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    vectors = vectors.double()  # float32's rounding, magnified along the directions of 1e-4 times the variance
    assert torch.allclose(whiten(vectors @ orthogonal), whiten(vectors) @ orthogonal, atol=1e-4)  # ZCA: no rotation
    assert torch.isfinite(whiten(torch.randn(3, 8))).all()  # fewer words than dimensions


def test_whitened_vectors_are_cached_under_their_own_key(tmp_path, monkeypatch):
    import rnnlab.pretrain_embeddings as skipgram

    keyed = []
    real = skipgram.cache_key
    monkeypatch.setattr(skipgram, "cache_key", lambda items: keyed.append(dict(items)) or real(items))
    settings = {"embedding_dim": 4, "epochs": 1, "batch_size": 16, "subsample": 0.0, "pretrain_if_missing": True,
                "method": "torch"}
    plain = skipgram.cached_vectors(synthetic_reviews(tmp_path), tmp_path, whitened=False, **settings)
    assert "whitened" not in keyed[-1]  # unwhitened vectors keep the key they had before the setting existed
    white = skipgram.cached_vectors(synthetic_reviews(tmp_path), tmp_path, whitened=True, **settings)
    assert keyed[-1] == {**keyed[0], "whitened": True}
    assert white != plain and Path(white).name.startswith("skipgram-imdb-4d-")
    vectors = [torch.load(path, weights_only=True)["vectors"] for path in (plain, white)]
    assert torch.allclose(vectors[1], whiten(vectors[0]), atol=1e-6)  # the same seeded training, whitened


def test_no_pairs_is_a_clear_error():
    with pytest.raises(ValueError, match="no skip-gram pairs: 2 text"):
        SkipGramPairs([[2], [0, 3]], vocab_size=4)


def test_subsampling_drops_frequent_words_and_keeps_rare_ones():
    seqs = [[2] * 90 + list(range(3, 13))] * 20  # word 2 is 90% of the corpus, words 3..12 1% each
    full = SkipGramPairs(seqs, 13, window=1, batch_size=10_000)
    thin = SkipGramPairs(seqs, 13, window=1, batch_size=10_000, subsample=1e-2)
    kept = torch.bincount(thin.centers, minlength=13).float() / torch.bincount(full.centers, minlength=13)
    assert kept[2] < 0.3  # sqrt(0.01/0.9) + 0.01/0.9 ~ 0.12
    assert torch.allclose(kept[3:12], torch.ones(9), atol=0.25)  # sqrt(1) + 1 > 1: all kept (pairs shift a little)
    assert len(thin.centers) < len(full.centers) / 3


def synthetic_reviews(tmp_path, **kw):
    from rnnlab.data.sentiment import SentimentDataModule

    reviews, labels = tmp_path / "reviews.txt", tmp_path / "labels.txt"
    reviews.write_text("\n".join(["a good fine film", "a bad awful film", "good fine acting", "bad awful plot"] * 10))
    labels.write_text("\n".join(["positive", "negative"] * 20))
    return SentimentDataModule("imdb", imdb_layout="reviews_labels", reviews_file=str(reviews),
                               labels_file=str(labels), cache_dir=str(tmp_path), **kw)


def test_cached_vectors_pretrain_once_per_setting_and_leave_the_callers_rng_alone(tmp_path, monkeypatch):
    import rnnlab.pretrain_embeddings as skipgram

    calls = []
    real = skipgram.pretrain
    monkeypatch.setattr(skipgram, "pretrain", lambda *a, **k: calls.append(a) or real(*a, **k))
    settings = {"embedding_dim": 4, "epochs": 1, "batch_size": 16, "subsample": 0.0, "method": "torch",
                "whitened": False}
    missing = r"vectors for these settings are not in .*vectors yet: make them .*pretrain_if_missing=true"
    with pytest.raises(DataFileError, match=missing):
        skipgram.cached_vectors(synthetic_reviews(tmp_path), tmp_path, **settings)  # never a silent pretraining
    assert calls == []
    settings["pretrain_if_missing"] = True
    torch.manual_seed(5)
    first = skipgram.cached_vectors(synthetic_reviews(tmp_path), tmp_path, **settings)
    after_miss = torch.rand(3)
    torch.manual_seed(5)
    again = skipgram.cached_vectors(synthetic_reviews(tmp_path, batch_size=7), tmp_path, **settings)
    after_hit = torch.rand(3)
    assert first == again and len(calls) == 1  # loader settings are not part of the key
    assert torch.equal(after_miss, after_hit)
    saved = torch.load(first, weights_only=True)
    assert saved["vectors"].shape == (len(saved["itos"]), 4) and "good" in saved["itos"]
    as_config = synthetic_reviews(tmp_path, split=OmegaConf.create([0.8, 0.1, 0.1]))  # as Hydra passes it
    assert skipgram.cached_vectors(as_config, tmp_path, **settings) == first and len(calls) == 1
    other = skipgram.cached_vectors(synthetic_reviews(tmp_path, min_freq=2), tmp_path, **settings)
    assert other != first and len(calls) == 2
    assert Path(first).name.startswith("skipgram-imdb-4d-")


def test_cached_vectors_by_gensim_are_keyed_apart_from_the_torch_trainers(tmp_path, monkeypatch):
    import rnnlab.pretrain_embeddings as skipgram

    calls = []
    real = skipgram.pretrain_gensim
    monkeypatch.setattr(skipgram, "pretrain_gensim", lambda *a, **k: calls.append(a) or real(*a, **k))
    settings = {"embedding_dim": 4, "epochs": 2, "subsample": 0.0, "pretrain_if_missing": True}
    torch_key = Path(skipgram.cached_vectors(synthetic_reviews(tmp_path), tmp_path, batch_size=16, method="torch",
                                             whitened=False, **settings)).name
    assert torch_key.startswith("skipgram-imdb-4d-") and calls == []
    first = skipgram.cached_vectors(synthetic_reviews(tmp_path), tmp_path, method="gensim", **settings)
    assert Path(first).name != torch_key and len(calls) == 1
    again = skipgram.cached_vectors(synthetic_reviews(tmp_path), tmp_path, method="gensim", batch_size=7, lr=1.0,
                                    workers=2, **settings)
    assert again == first and len(calls) == 1  # batch_size, lr: the PyTorch trainer's; workers: speed
    saved = torch.load(first, weights_only=True)
    assert saved["vectors"].shape == (len(saved["itos"]), 4) and "good" in saved["itos"]
    cbow = skipgram.cached_vectors(synthetic_reviews(tmp_path), tmp_path, method="gensim_cbow", **settings)
    assert Path(cbow).name.startswith("cbow-imdb-4d-") and Path(cbow).name[4:] != Path(first).name[8:]
    assert len(calls) == 2 and not torch.equal(torch.load(cbow, weights_only=True)["vectors"], saved["vectors"])
    with pytest.raises(ValueError, match="method must be one of \\('torch', 'gensim', 'gensim_cbow'\\), got 'glove'"):
        skipgram.cached_vectors(synthetic_reviews(tmp_path), tmp_path, method="glove", **settings)


@pytest.mark.parametrize(("setting", "message"), [
    ({"workers": 0}, "workers must be an integer >= 1, got 0"),  # gensim would write its untrained start
    ({"negatives": -1}, "negatives must be an integer >= 1, got -1"),
    ({"window": 0}, "window must be an integer >= 1, got 0"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"embedding_dim": 0}, "embedding_dim must be an integer >= 1, got 0"),
    ({"subsample": 1.5}, "subsample must be a number in [0, 1) (0: keep every word), got 1.5"),
    ({"subsample": "abc"}, "subsample must be a number in [0, 1) (0: keep every word), got 'abc'"),  # a traceback
    ({"lr": "abc"}, "lr must be a number > 0, got 'abc'"),  # before: unread by gensim, a traceback in torch's
    ({"lr": 0}, "lr must be a number > 0, got 0"),
    ({"whitened": "maybe"}, "whitened must be true or false, got 'maybe'"),  # before: taken as true
])
def test_pretraining_settings_out_of_range_are_named_before_any_text_is_read(tmp_path, monkeypatch, setting, message):
    import re

    import rnnlab.pretrain_embeddings as skipgram

    data = synthetic_reviews(tmp_path)
    monkeypatch.setattr(data, "setup", lambda *a: pytest.fail("read the texts first"))
    settings = {"embedding_dim": 4, "window": 2, "negatives": 2, "epochs": 1, "batch_size": 16, "lr": 0.01, "seed": 0,
                "subsample": 0.0, "workers": 1, **setting}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        skipgram.pretrain_vectors("gensim_cbow", data, tmp_path / "v.pt", **settings)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        skipgram.cached_vectors(data, tmp_path, **settings)
    assert not (tmp_path / "v.pt").exists()


@pytest.mark.parametrize("cbow", [False, True])
def test_gensim_vectors_are_repeatable_and_learn_cooccurrence(tmp_path, cbow):
    from types import SimpleNamespace

    from rnnlab.data.vocab import Vocabulary
    from rnnlab.pretrain_embeddings import pretrain_gensim

    rng = random.Random(0)
    groups = [["good", "great", "superb", "fine"], ["bad", "awful", "poor", "dull"]]
    texts = [[rng.choice(g) for _ in range(8)] for g in groups for _ in range(150)]  # each text within a group
    vocab = Vocabulary(["<pad>", "<unk>", *sorted({w for g in groups for w in g}), "never"])
    datamodule = SimpleNamespace(vocab=vocab, setup=lambda: None,
                                 datasets={"train": SimpleNamespace(ids=[vocab.encode(t) for t in texts])})
    first, second = (pretrain_gensim(datamodule, 16, 3, 5, 20, seed=3, workers=1, cbow=cbow) for _ in (1, 2))
    other = pretrain_gensim(datamodule, 16, 3, 5, 20, seed=3, workers=1, cbow=not cbow)
    assert not torch.equal(other, first)  # sg=0 vs sg=1
    assert first.shape == (len(vocab), 16) and first.dtype == torch.float32
    assert torch.equal(first, second)  # one worker: repeatable
    v = torch.nn.functional.normalize(first, dim=1)
    same = v[vocab.encode(["good"])[0]] @ v[vocab.encode(["great"])[0]]
    other = v[vocab.encode(["good"])[0]] @ v[vocab.encode(["awful"])[0]]
    assert same > other + 0.2  # words of one group end up closer
    assert first[vocab.encode(["never"])[0]].abs().max() < 0.1  # unseen: a small random vector


@pytest.mark.parametrize(("preset", "name"), [("cbow_imdb", "cbow-imdb-128d-451a255b0d4689f1.pt"),
                                              ("skipgram_imdb", "skipgram-imdb-128d-59f47b9c6b9460b3.pt")])
def test_the_presets_cache_names_stay_those_users_have_on_disk(tmp_path, monkeypatch, preset, name):
    import rnnlab.pretrain_embeddings as skipgram

    written = []
    monkeypatch.setattr(skipgram, "pretrain_vectors", lambda method, data, path, *a: written.append((method, path)))
    overrides = ["task=sentiment", f"model/embeddings={preset}", "model.pretrained_embeddings.pretrain_if_missing=true"]
    cfg = compose_config(overrides, tmp_path).model.pretrained_embeddings
    path = Path(instantiate(cfg))  # the names the cached vectors had when each preset was measured
    assert path == tmp_path / "cache" / "vectors" / name and written == [(cfg.method, path)]


def test_vectors_come_from_sentiment_texts_only_and_gensim_says_one_line(tmp_path, caplog):
    import logging

    import rnnlab.pretrain_embeddings as skipgram
    from rnnlab.data.sine import SineDataModule

    settings = dict(embedding_dim=4, window=2, negatives=2, epochs=2, batch_size=16, lr=1e-3, seed=0, subsample=0.0,
                    workers=1)
    with pytest.raises(ValueError, match=r"^data: word vectors are made from a sentiment dataset's training texts "
                                         r"\(data=imdb or data=mr\), not from SineDataModule$"):
        skipgram.pretrain_vectors("gensim_cbow", SineDataModule(), tmp_path / "v.pt", **settings)
    assert not (tmp_path / "v.pt").exists()
    with caplog.at_level(logging.INFO):
        skipgram.pretrain_vectors("gensim_cbow", synthetic_reviews(tmp_path), tmp_path / "v.pt", **settings)
    assert [r.name for r in caplog.records if r.name.startswith("gensim")] == []
    assert [r.getMessage() for r in caplog.records if r.name == skipgram.log.name][0].startswith(
        "gensim CBOW: 2 epochs over 32 texts of 112 words in ")
    assert logging.getLogger("gensim").level == logging.NOTSET  # its level is put back
