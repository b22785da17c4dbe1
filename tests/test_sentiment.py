import dataclasses
import io
import json
import re
import tarfile
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.checkpoint import load_run, read_checkpoint
from rnnlab.data import download as dl
from rnnlab.data.download import DataFileError
from rnnlab.data.sentiment import (
    Collate,
    SentimentDataModule,
    fold_split,
    load_mr,
    read_acl_imdb,
    read_reviews_labels,
    stratified_split,
)
from rnnlab.data.text import PAD, UNK, BucketBatchSampler, build_vocab, pad_batch, reading, tokenize, truncate
from rnnlab.models.classifier import RecurrentClassifier
from rnnlab.models.padded import PaddedRNN, reverse_padded
from rnnlab.predict import predict
from rnnlab.tasks.sentiment import SentimentClassifier, packs
from rnnlab.train import train
from tests.conftest import TINY_TRAINER, compose_config, make_imdb_tree, run_script


def test_tokenizer_strips_html_and_punctuation():
    assert tokenize("Great movie!<br /><br />I don't 'like' it, really.") == [
        "great", "movie", "i", "don't", "like", "it", "really"]
    assert tokenize("A <br/> B", strip_html=False, strip_punctuation=False, lower=False) == ["A", "<br/>", "B"]


def test_vocab_pad_zero_unk_one_from_training_texts_only():
    vocab = build_vocab([["a", "b", "a"], ["c"]], min_freq=1)
    assert vocab.itos[:2] == [PAD, UNK] and vocab.encode(["a", "zzz"]) == [2, 1]
    assert build_vocab([["a", "b", "a"]], min_freq=2).itos == [PAD, UNK, "a"]


def test_padding_sides_and_truncation():
    assert pad_batch([[5, 6], [7]], "right").tolist() == [[5, 6], [7, 0]]
    assert pad_batch([[5, 6], [7]], "left").tolist() == [[5, 6], [0, 7]]
    assert pad_batch([[1, 2, 3]], "left", length=5).tolist() == [[0, 0, 1, 2, 3]]
    assert truncate([1, 2, 3, 4], 2, "start") == [1, 2] and truncate([1, 2, 3, 4], 2, "end") == [3, 4]
    assert reading([1, 2, 3, 4], 2, "start", reverse=True) == [2, 1]  # cut first, then reversed
    assert reading([1, 2, 3, 4], 2, "end", reverse=True) == [4, 3] and reading([1, 2, 3], reverse=True) == [3, 2, 1]
    assert reading([1, 2, 3, 4], 3, "end") == [2, 3, 4]
    ids, lengths, labels = Collate("left", 4)([([1, 2], 1), ([3, 4, 5, 6, 7], 0)])
    assert ids.tolist() == [[0, 0, 1, 2], [3, 4, 5, 6]] and lengths.tolist() == [2, 4]


def test_bucket_sampler_covers_every_example_once_with_similar_lengths():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 300, (1000,), generator=g).tolist()
    sampler = BucketBatchSampler(lengths, batch_size=16, chunk_batches=10, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 40  # sorted within chunks of 160; random batches of 16 would span ~270
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_bucket_sampler_two_ranks_split_the_batches():
    lengths = list(range(1, 101))
    ranks = [BucketBatchSampler(lengths, 8, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    got = [list(s) for s in ranks]
    assert len(got[0]) == len(got[1]) == len(ranks[0]) == 7
    every = ranks[0].all_batches()  # 13 batches, the same list on both ranks
    assert len(every) == 13 and sorted(i for b in every for i in b) == list(range(100))
    assert got[0] == every[0::2] and got[1] == every[1::2] + [every[0]]  # padded by repeating the first


def test_stratified_split_and_folds():
    labels = [1] * 50 + [0] * 50
    train, val, test = stratified_split(labels, [0.8, 0.1, 0.1], seed=0)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert sum(labels[i] for i in test) == 5 and not set(train) & set(test)
    tests = [set(fold_split(labels, 10, k, 0.1, 0)[2]) for k in range(10)]
    assert set().union(*tests) == set(range(100)) and sum(len(t) for t in tests) == 100


def test_real_mr_files_and_latin1_copies(data_dir, tmp_path):
    data = load_mr(data_dir, tmp_path, download_missing=False)
    assert len(data.texts) == 10_662 and sum(data.labels) == 5_331
    folder = tmp_path / "latin" / "rt-polaritydata"
    folder.mkdir(parents=True)
    for name in ("rt-polarity.pos", "rt-polarity.neg"):
        text = (data_dir / "rt-polaritydata" / name).read_text(encoding="utf-8")
        (folder / name).write_bytes(text.encode("cp1252", errors="replace"))
    latin = load_mr(tmp_path / "latin", tmp_path, download_missing=False)
    assert latin.texts == [t.encode("cp1252", errors="replace").decode("cp1252") for t in data.texts]
    assert any("é" in t for t in latin.texts)


@pytest.mark.parametrize("given_vocab", [False, True])
def test_setup_tokenizes_each_text_once_and_encodes_the_words_it_counted(data_dir, tmp_path, given_vocab):
    """The training texts are tokenized once for both the vocabulary (built, or a given one extended by
    `new_words`) and their ids."""
    dm = SentimentDataModule("mr", str(data_dir), str(tmp_path), download=False, folds=10, fold=0, max_len=20)
    given = build_vocab([["the", "film"]])
    if given_vocab:
        dm.vocab, dm.new_words = given, 2
    calls, tokenize_text = [], dm.tokenize
    dm.tokenize = lambda text: calls.append(text) or tokenize_text(text)
    dm.setup()
    splits = dm.read_splits()
    assert len(calls) == sum(len(texts.texts) for texts in splits.values()) == 10_662
    train_words = [tokenize_text(t) for t in splits["train"].texts]
    counts = Counter(w for words in train_words for w in words)
    start = given.itos if given_vocab else [PAD, UNK]
    by_count = sorted((w for w, c in counts.items() if w not in start and c >= (2 if given_vocab else 1)),
                      key=lambda w: (-counts[w], w))
    assert dm.vocab.itos == start + by_count
    assert dm.datasets["train"].ids == [dm.vocab.encode(words)[:20] for words in train_words if words]


def test_imdb_archive_in_the_data_dir_is_extracted_once_into_the_cache(tmp_path, monkeypatch):
    make_imdb_tree(tmp_path / "src")
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    (data_dir / "imdb").mkdir(parents=True)
    with tarfile.open(data_dir / "imdb" / "aclImdb_train_test.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "src" / "aclImdb", arcname="aclImdb")
    spec = dl.CORPORA["imdb"]
    xz = data_dir / "imdb" / "aclImdb_train_test.tar.xz"
    local = dataclasses.replace(spec.alternatives[0], sha256=dl.sha256_of(xz))
    monkeypatch.setitem(dl.CORPORA, "imdb", dataclasses.replace(spec, alternatives=(local,)))
    extractions = []
    real_extract = dl.extract_safely
    monkeypatch.setattr(dl, "extract_safely", lambda *a: extractions.append(a) or real_extract(*a))
    dm = SentimentDataModule("imdb", str(data_dir), str(cache), download=False, batch_size=2, seed=0)
    dm.setup()
    assert len(dm.datasets["test"]) == 6 and len(dm.datasets["train"]) + len(dm.datasets["valid"]) == 6
    assert (cache / "imdb" / "aclImdb" / "train" / "pos" / "0_8.txt").is_file()
    assert "br" not in dm.vocab and "wonderful" in dm.vocab
    assert read_acl_imdb(cache / "imdb" / "aclImdb", "test").labels == [1, 1, 1, 0, 0, 0]
    again = SentimentDataModule("imdb", str(data_dir), str(cache), download=False, batch_size=2, seed=0)
    again.setup()
    assert len(extractions) == 1 and again.vocab == dm.vocab


def test_a_corrupted_xz_archive_in_the_data_dir_fails_its_checksum(tmp_path):
    (tmp_path / "data" / "imdb").mkdir(parents=True)
    (tmp_path / "data" / "imdb" / "aclImdb_train_test.tar.xz").write_bytes(b"\xfd7zXZ\x00 not really")
    with pytest.raises(DataFileError, match=r"checksum mismatch for .*train_test.tar.xz: expected sha256 d7cb5a9e"):
        SentimentDataModule("imdb", str(tmp_path / "data"), str(tmp_path / "cache"), download=False).setup()


def test_reviews_labels_form_and_its_errors(tmp_path):
    reviews, labels = tmp_path / "reviews.txt", tmp_path / "labels.txt"
    reviews.write_text("good film\nbad film\n")
    labels.write_text("positive\nnegative\n")
    assert read_reviews_labels(reviews, labels).labels == [1, 0]
    labels.write_text("positive\n")
    with pytest.raises(DataFileError, match="reviews.txt has 2 lines but .*labels.txt has 1"):
        read_reviews_labels(reviews, labels)
    labels.write_text("positive\nmeh\n")
    with pytest.raises(DataFileError, match=r"labels.txt: unexpected label\(s\) \['meh'\]"):
        read_reviews_labels(reviews, labels)


TASK_ARGS = ("padding_side", "loss", "pack", "unfreeze", "freeze_embeddings", "label_smoothing")


def model(**kw):
    """A SentimentClassifier over a small RecurrentClassifier; network arguments go to the net, the rest to the task."""
    torch.manual_seed(0)
    net = {"vocab_size": 30, "embedding_dim": 8, "hidden_size": 6, "dropout": 0.0,
           "num_outputs": 1 if kw.get("loss") == "mse" else 2, **{k: v for k, v in kw.items() if k not in TASK_ARGS}}
    return SentimentClassifier(RecurrentClassifier(**net), **{k: v for k, v in kw.items() if k in TASK_ARGS}).eval()


@pytest.mark.parametrize("kw", [{}, {"bidirectional": True}, {"pooling": "mean"}, {"pooling": "max"},
                                {"pooling": "concat", "bidirectional": True}, {"cell": "gru", "num_layers": 2},
                                {"padding_side": "left"}, {"pack": True},
                                {"pack": True, "pooling": "mean"}, {"pack": False, "padding_side": "left"},
                                {"pooling": "concat", "head_hidden": 4}])
def test_padding_never_changes_the_prediction(kw):
    m = model(**kw)
    sentence = torch.tensor([[4, 9, 2, 7]])
    alone = m.prob_positive(m(sentence, torch.tensor([4])))
    other = [3, 5, 6, 8, 10, 11, 12, 13, 14]
    batch = pad_batch([[4, 9, 2, 7], other], kw.get("padding_side", "right"))
    together = m.prob_positive(m(batch, torch.tensor([4, 9])))
    torch.testing.assert_close(together[0], alone[0])


@pytest.mark.parametrize("kw", [{}, {"pooling": "mean"}, {"pooling": "max"}, {"pooling": "concat"},
                                {"bidirectional": True}, {"pooling": "concat", "bidirectional": True}, {"loss": "mse"},
                                {"loss": "bce"}, {"pooling": "concat", "head_hidden": 4}])
def test_trajectory_has_one_value_per_word_and_ends_at_the_prediction(kw):
    m = model(**kw)
    ids = torch.tensor([4, 9, 2, 7, 5])
    traj = m.trajectory(ids)
    assert traj.shape == (5,)
    final = m.prob_positive(m(ids[None], torch.tensor([5])))[0]
    torch.testing.assert_close(traj[-1], final)
    assert torch.allclose(traj[2], m.prob_positive(m(ids[None, :3], torch.tensor([3])))[0])


def test_bidirectional_trajectory_in_chunks_equals_one_batch():
    m = model(bidirectional=True, pooling="max")
    ids = torch.randint(2, 30, (23,), generator=torch.Generator().manual_seed(0))
    whole = m.trajectory(ids, max_positions=23 * 23)
    for budget in (1, 23 * 4, 23 * 7):  # one prefix a batch, 4, 7 (the last batch shorter)
        torch.testing.assert_close(m.trajectory(ids, max_positions=budget), whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_trajectory_at_some_prefixes_equals_those_of_every_prefix(bidirectional):
    m = model(bidirectional=bidirectional, pooling="mean")
    ids = torch.randint(2, 30, (40,), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([1, 9, 17, 40])
    torch.testing.assert_close(m.trajectory(ids, lengths, max_positions=80), m.trajectory(ids)[lengths - 1],
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize(("pack", "device", "expected"), [
    ("auto", "cpu", False), ("auto", "cuda", True), (True, "cpu", True), (False, "cuda", False)])
def test_pack_auto_packs_only_on_a_gpu(pack, device, expected, monkeypatch):
    assert packs(pack, torch.device(device)) is expected
    if device == "cpu":  # and the model passes that decision to its recurrent layers
        m = model(pack=pack)
        seen = []
        real = type(m.net.rnn).forward
        spy = lambda self, x, lengths, p: seen.append(p) or real(self, x, lengths, p)  # noqa: E731
        monkeypatch.setattr(type(m.net.rnn), "forward", spy)
        m(torch.tensor([[3, 4, 5]]), torch.tensor([3]))
        assert seen == [expected]


def test_the_three_losses():
    labels = torch.tensor([1, 0])
    ce = model(loss="ce")
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    assert ce.loss(logits, labels).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    bce = model(loss="bce")
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert bce.loss(logits, labels).item() == pytest.approx(expected.item())
    negatives = torch.tensor([0, 0])  # one-hot over both classes even when a batch holds one
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert bce.loss(logits, negatives).item() == pytest.approx(expected.item())
    mse = model(loss="mse")
    one = torch.tensor([[0.0], [0.0]])
    assert mse.loss(one, labels).item() == pytest.approx(0.25) and mse.net.head.out_features == 1


def test_label_smoothing_trains_against_softened_targets_and_validation_reports_the_plain_loss():
    logits, labels = torch.tensor([[0.0, 2.0], [1.0, -1.0]]), torch.tensor([1, 0])
    log_p = logits.log_softmax(-1)
    ce = model(loss="ce", label_smoothing=0.2)  # targets 0.9 for the label, 0.1 for the other class
    expected = -(0.9 * log_p[0, 1] + 0.1 * log_p[0, 0] + 0.9 * log_p[1, 0] + 0.1 * log_p[1, 1]) / 2
    assert ce.loss(logits, labels, 0.2).item() == pytest.approx(expected.item(), rel=1e-6)
    bce = model(loss="bce", label_smoothing=0.2)
    q = torch.sigmoid(logits)
    targets = torch.tensor([[0.1, 0.9], [0.9, 0.1]])
    expected = -(targets * q.log() + (1 - targets) * (1 - q).log()).mean()
    assert bce.loss(logits, labels, 0.2).item() == pytest.approx(expected.item(), rel=1e-6)
    ids, lengths = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    seen = {}
    ce.log = lambda name, value, **kw: seen.setdefault(name, value)
    trained = ce.training_step((ids, lengths, labels), 0)
    out = ce(ids, lengths)
    assert trained.item() == pytest.approx(ce.loss(out, labels, 0.2).item(), rel=1e-6)
    ce.validation_step((ids, lengths, labels), 0)
    assert seen["val/loss"].item() == pytest.approx(ce.loss(out, labels).item(), rel=1e-6)
    assert seen["val/loss"].item() != pytest.approx(trained.item(), rel=1e-3)
    with pytest.raises(ValueError, match=r"^model.label_smoothing must be in \[0, 1\) with the ce or bce loss, got 0.1 "
                                         r"with model.loss=mse$"):
        model(loss="mse", label_smoothing=0.1)


MR_SMALL = ["task=sentiment", "model/embeddings=none", *TINY_TRAINER, "trainer.limit_train_batches=null",
            "model.optimizer.lr=0.003", "trainer.limit_val_batches=null", "model.net.hidden_size=32"]


@pytest.fixture(scope="module")
def mr_checkpoint(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mr")
    cfg = compose_config([*MR_SMALL, "trainer.limit_test_batches=null"], tmp_path)
    return tmp_path / "run" / "checkpoints" / "best.ckpt", train(cfg)


def test_smoke_train_on_real_sentence_polarity(mr_checkpoint):
    path, metrics = mr_checkpoint
    assert path.is_file()
    # one epoch of a small model from scratch (measured: acc 0.569, AUROC 0.662 over the 1,066 test sentences)
    assert metrics["test/auroc"] > 0.6 and metrics["test/acc"] > 0.53 and 0 < metrics["test/f1"] < 1


@pytest.fixture(scope="module")
def mr_backward_checkpoint(tmp_path_factory):
    """The same classifier as `mr_checkpoint`, reading every sentence last word first (`data.reverse=true`)."""
    tmp_path = tmp_path_factory.mktemp("mr_backward")
    train(compose_config([*MR_SMALL, "data.reverse=true", "test=false"], tmp_path))
    return tmp_path / "run" / "checkpoints" / "best.ckpt"


def test_a_backward_classifier_reads_the_same_words_last_first(mr_backward_checkpoint, tmp_path):
    from rnnlab.predictor import Predictor

    texts = ["the acting was superb but the plot was a mess", "x y z a b"]
    data = {"dataset": "mr", "data_dir": str(tmp_path), "cache_dir": str(tmp_path), "download": False,
            "max_len": 3, "truncate_keep": "end"}
    forward, backward = SentimentDataModule(**data), SentimentDataModule(**data, reverse=True)
    vocab = build_vocab([tokenize(t) for t in texts])
    labelled = SimpleNamespace(texts=texts, labels=[1, 0])
    for datamodule in (forward, backward):
        datamodule.vocab = vocab
    ahead, behind = forward.encode(labelled, "test").ids, backward.encode(labelled, "test").ids
    assert [ids[::-1] for ids in ahead] == behind and vocab.decode(behind[1]) == ["b", "a", "z"]  # cut, then reversed
    predictor = Predictor(load_run(mr_backward_checkpoint))
    assert predictor.words("The plot was a mess!") == (["mess", "a", "was", "plot", "the"], False)


def test_trajectory_figures_check_their_counts_at_the_start():
    from rnnlab.callbacks import TrajectoryFigures

    for kw, message in (({"num_texts": 0}, "num_texts must be an integer >= 1, got 0"),
                        ({"max_words": 2.5}, "max_words must be an integer >= 1, got 2.5")):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):  # before: at the first validation, or never
            TrajectoryFigures(**kw)


def test_eval_gives_the_accuracys_wilson_interval(mr_checkpoint, tmp_path, caplog):
    import logging

    from rnnlab.evaluate import evaluate, wilson_interval

    assert wilson_interval(0.5, 100) == pytest.approx((0.40383, 0.59617), abs=1e-5)  # the textbook's example
    assert wilson_interval(1.0, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)  # never above 1, unlike p ± 1.96 s.e.
    path, trained = mr_checkpoint
    with caplog.at_level(logging.INFO, logger="rnnlab.evaluate"):
        metrics = evaluate(compose_config([f"ckpt_path={path}", "threads=1"], tmp_path, config_name="eval"))
    assert metrics["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    low, high = wilson_interval(metrics["test/acc"], 1066)  # sentence polarity's test tenth
    assert f"test/acc {metrics['test/acc']:.4f}: 95% Wilson interval [{low:.4f}, {high:.4f}] over 1066 texts" in \
        caplog.text and low < metrics["test/acc"] < high


def test_eval_averages_a_forward_and_a_backward_classifier(mr_checkpoint, mr_backward_checkpoint, tmp_path):
    from rnnlab.evaluate import evaluate
    from rnnlab.predictor import Predictor

    forward, metrics = mr_checkpoint
    eval_cfg = compose_config([f"ckpt_path={forward}", f"ensemble=[{mr_backward_checkpoint}]", "threads=1"],
                              tmp_path, config_name="eval")
    ensembled = evaluate(eval_cfg)
    assert ensembled["test/acc_member0"] == pytest.approx(metrics["test/acc"], abs=1e-6)  # as train.py's test
    run = load_run(forward)
    test = instantiate(run.config.data, data_dir=eval_cfg.paths.data_dir, cache_dir=tmp_path).read_splits()["test"]
    probs = [torch.tensor(Predictor(load_run(path)).many(test.texts)) for path in (forward, mr_backward_checkpoint)]
    assert not torch.equal(probs[0], probs[1])
    labels = torch.tensor(test.labels)
    assert ensembled["test/acc_member1"] == pytest.approx(((probs[1] >= 0.5) == labels).double().mean().item())
    mean = (probs[0] + probs[1]) / 2
    assert ensembled["test/acc"] == pytest.approx(((mean >= 0.5) == labels).double().mean().item())
    positive, negative = mean[labels == 1], mean[labels == 0]
    auroc = ((positive[:, None] > negative[None]).double() + 0.5 * (positive[:, None] == negative[None])).mean()
    assert len(test.texts) == 1066 and ensembled["test/auroc"] == pytest.approx(auroc.item(), abs=1e-5)

    other = read_checkpoint(mr_backward_checkpoint)
    other["rnnlab"]["config"]["data"]["seed"] += 1  # another shuffle: other test sentences
    torch.save(other, tmp_path / "other.ckpt")
    eval_cfg = compose_config([f"ckpt_path={forward}", f"ensemble=[{tmp_path / 'other.ckpt'}]"], tmp_path,
                              config_name="eval")
    with pytest.raises(ValueError, match=r"^ensemble: .*other.ckpt reads other test texts than .*best.ckpt \(their "
                                         r"data configs must agree on the dataset, split, folds, fold and seed\)$"):
        evaluate(eval_cfg)


def test_predict_averages_an_ensemble_over_a_file_of_texts(mr_checkpoint, mr_backward_checkpoint, tmp_path):
    forward, _ = mr_checkpoint
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("a fine film with a weak end\n!!!\nboring and bad but the cast is superb\n")
    pair = predict(pcfg(forward, input=str(reviews), ensemble=[str(mr_backward_checkpoint)]), io.StringIO(),
                   io.StringIO())
    alone = [predict(pcfg(path, input=str(reviews)), io.StringIO(), io.StringIO())
             for path in (forward, mr_backward_checkpoint)]
    assert pair[1] is None and alone[0][0] != alone[1][0]
    for i in (0, 2):
        assert pair[i] == pytest.approx((alone[0][i] + alone[1][i]) / 2, abs=1e-7)
    with pytest.raises(ValueError, match=r"^ensemble= averages batch predictions: give the texts as input=FILE"):
        predict(pcfg(forward, text="fine", ensemble=[str(mr_backward_checkpoint)]), io.StringIO(), io.StringIO())


def pcfg(path, **kw):
    return OmegaConf.create({"ckpt_path": str(path), "text": None, "text_file": None, "input": None, "output": None,
                             "plot": False,
                             "plot_path": "x.png", "threshold": 0.5, "batch_size": 4, "device": "cpu",
                              "trajectory_points": 200, **kw})


def test_predict_text_trajectory_and_plot(mr_checkpoint, tmp_path):
    path, _ = mr_checkpoint
    out, err = io.StringIO(), io.StringIO()
    png = tmp_path / "curve.png"
    (pred,) = predict(pcfg(path, text="The acting was superb, but the plot was a mess!", plot=True,
                           plot_path=str(png)), out, err)
    assert pred.words == ["the", "acting", "was", "superb", "but", "the", "plot", "was", "a", "mess"]
    assert len(pred.trajectory) == 10 and pred.trajectory[-1] == pytest.approx(pred.probability, abs=1e-6)
    assert out.getvalue().splitlines()[-1].startswith("P(positive) = ") and png.stat().st_size > 5000
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("fine\n")
    with pytest.raises(ValueError, match=r"^plot=true draws the curve of one text \(text= or text_file=\), not of "):
        predict(pcfg(path, input=str(reviews), plot=True), out, err)  # before: no plot, without a word


def test_predict_long_text_trajectory_at_evenly_spaced_words(mr_checkpoint, tmp_path):
    path, _ = mr_checkpoint
    out, err = io.StringIO(), io.StringIO()
    text = tmp_path / "review.txt"
    text.write_text(" ".join(["good", "bad", "plot", "film", "acting"] * 100))
    (pred,) = predict(pcfg(path, text_file=str(text), trajectory_points=50), out, err)
    assert len(pred.words) == 500 and len(pred.trajectory) == 50 and pred.positions[0] == 0
    assert pred.positions[-1] == 499 and pred.trajectory[-1] == pytest.approx(pred.probability, abs=1e-6)
    assert "after 50 evenly spaced words of 500" in err.getvalue() and len(out.getvalue().splitlines()) == 51


def test_predict_warns_on_unknown_words_and_batch_mode(mr_checkpoint, tmp_path):
    path, _ = mr_checkpoint
    err = io.StringIO()
    predict(pcfg(path, text="qqqzz xxyyq"), io.StringIO(), err)
    assert "no word of the text is in the vocabulary" in err.getvalue()
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("a fine film\n\n!!!\nboring and bad\n")
    out_file = tmp_path / "new" / "folder" / "p.jsonl"  # made, as export.py makes its folder
    probs = predict(pcfg(path, input=str(reviews), output=str(out_file)), io.StringIO(), err)
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4] and rows[1]["p_positive"] is None and probs[2] is None
    assert [p.name for p in out_file.parent.iterdir()] == ["p.jsonl"]  # written beside, then renamed
    single = predict(pcfg(path, text="boring and bad"), io.StringIO(), io.StringIO())[0].probability
    assert rows[3]["p_positive"] == pytest.approx(single, abs=1e-5)
    with pytest.raises(ValueError, match=r"^output=.*reviews.txt is the input file; write the predictions to another"):
        predict(pcfg(path, input=str(reviews), output=str(tmp_path / "." / "reviews.txt")), io.StringIO(), err)
    assert reviews.read_text() == "a fine film\n\n!!!\nboring and bad\n"


def test_predict_reads_standard_input_for_a_dash(mr_checkpoint, tmp_path):
    path, _ = mr_checkpoint
    texts = "a fine film\n\nboring and bad but the cast is superb\n"
    (tmp_path / "reviews.txt").write_text(texts)
    from_file, from_stdin = io.StringIO(), io.StringIO()
    err = io.StringIO()
    filed = predict(pcfg(path, input=str(tmp_path / "reviews.txt")), from_file, io.StringIO())
    piped = predict(pcfg(path, input="-"), from_stdin, err, stdin=io.StringIO(texts))
    assert piped == filed and from_stdin.getvalue() == from_file.getvalue()
    assert "1 line(s) of standard input have no words" in err.getvalue()
    bytes_in = io.TextIOWrapper(io.BytesIO(b"a fine \xff film"))  # not UTF-8: replaced, as in a file
    (pred,) = predict(pcfg(path, text_file="-"), io.StringIO(), io.StringIO(), stdin=bytes_in)
    assert pred.words == ["a", "fine", "film"]


@pytest.mark.slow  # a subprocess: left out of mutation runs (bench/mutation.sh)
def test_predict_script_errors_are_one_line(mr_checkpoint, tmp_path):
    path, _ = mr_checkpoint
    result = run_script("predict.py", f"ckpt_path={path}", "text=''", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == "predict.py: error: the text has no words to read"
    result = run_script("generate.py", f"ckpt_path={path}", cwd=tmp_path)
    assert result.returncode == 1 and "cannot generate text" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_predict_multirun_never_lets_a_job_overwrite_an_earlier_jobs_output(mr_checkpoint, tmp_path):
    path, _ = mr_checkpoint
    (tmp_path / "in.txt").write_text("a fine film\na dull mess\n")
    (tmp_path / "out.jsonl").write_text("from before the sweep\n")  # a file of before is overwritten, as without -m
    result = run_script("predict.py", "-m", f"ckpt_path={path},{path}", f"input={tmp_path / 'in.txt'}",
                        f"output={tmp_path / 'out.jsonl'}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"predict.py: error: output={tmp_path / 'out.jsonl'}: an earlier job of this multirun wrote it; give each "
        f"job its own file, e.g. output={tmp_path / 'out_${hydra:job.num}.jsonl'}")
    assert [json.loads(line)["line"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [1, 2]
    result = run_script("predict.py", "-m", f"ckpt_path={path},{path}", f"input={tmp_path / 'in.txt'}",
                        f"output={tmp_path / 'out_${hydra:job.num}.jsonl'}", cwd=tmp_path)  # as the message says
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out_0.jsonl").read_text() == (tmp_path / "out_1.jsonl").read_text() == \
        (tmp_path / "out.jsonl").read_text()
    assert [line.startswith("--- job ") for line in result.stdout.splitlines()] == [True, True]


@pytest.mark.parametrize(("kw", "message"), [
    ({"threshold": 1.5}, "threshold must be in [0, 1], got 1.5"),
    ({"threshold": "high"}, "threshold must be a number in [0, 1], got 'high'"),  # a traceback before
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"trajectory_points": 0}, "trajectory_points must be an integer >= 1 or null, got 0"),
    ({"plot": "maybe"}, "plot must be true or false, got 'maybe'"),  # before: a plot
    ({"device": "tpu"}, "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ({"device": "cuda:0"}, "device=cuda:0, but PyTorch sees no CUDA device"),
])
def test_predict_settings_out_of_range_are_named(mr_checkpoint, monkeypatch, kw, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU
    path, _ = mr_checkpoint
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        predict(pcfg(path, text="a fine film", **kw), out=io.StringIO(), err=io.StringIO())


@pytest.mark.parametrize("key", ["input", "text_file"])
def test_a_folder_given_as_predicts_text_file_or_input_is_named(mr_checkpoint, tmp_path, key):
    path, _ = mr_checkpoint
    message = f"^{'input file' if key == 'input' else 'text_file'} {re.escape(str(tmp_path))} is a folder, not a file$"
    with pytest.raises(ValueError, match=message):  # before: "does not exist"
        predict(pcfg(path, **{key: str(tmp_path)}), out=io.StringIO(), err=io.StringIO())


def test_long_text_is_truncated_with_a_warning(tmp_path):
    from rnnlab.checkpoint import TrainedRun
    from rnnlab.predictor import Predictor

    data = OmegaConf.create({"lower": True, "strip_html": True, "strip_punctuation": True, "max_len": 3,
                             "truncate_keep": "end", "padding_side": "right"})
    predictor = Predictor(TrainedRun(model(), OmegaConf.create({"data": data}), build_vocab([["a", "b"]]), tmp_path))
    words, cut = predictor.words("x y z a b")
    assert words == ["z", "a", "b"] and cut


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("pack", [False, True])
def test_padded_rnn_equals_packed_torch_bidirectional_stack(cell, pack):
    torch.manual_seed(0)
    ours = PaddedRNN(cell, 5, 4, num_layers=2, bidirectional=True).double()
    torch_modules = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}
    ref = torch_modules[cell](5, 4, 2, batch_first=True, bidirectional=True).double()
    with torch.no_grad():
        for layer, directions in enumerate(ours.layers):
            for suffix, rnn in zip(["", "_reverse"], directions):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(rnn, f"{name}_l0").copy_(getattr(ref, f"{name}_l{layer}{suffix}"))
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(3, 6, 5, dtype=torch.double)
    x[1, 2:] = 7.0  # padding content must not matter
    out, final = ours(x, lengths, pack=pack)
    packed, h = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    expected, _ = pad_packed_sequence(packed, batch_first=True)
    h = h[0] if cell == "lstm" else h
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(final, torch.cat([h[-2], h[-1]], -1))
    (out.sum() + final.sum()).backward()
    assert all(p.grad is not None for p in ours.parameters())


def test_reverse_padded_keeps_padding_in_place_and_is_an_involution():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]).unsqueeze(-1)
    lengths = torch.tensor([3, 2])
    assert reverse_padded(x, lengths).squeeze(-1).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]
    assert torch.equal(reverse_padded(reverse_padded(x, lengths), lengths), x)


@pytest.mark.real_data
@pytest.mark.slow  # a subprocess: left out of mutation runs (bench/mutation.sh)
@pytest.mark.parametrize("batching", ["bucket", "pad"])
def test_ddp_two_cpu_processes_on_real_sentence_polarity(tmp_path, batching):
    args = ["task=sentiment", "model/embeddings=none", *TINY_TRAINER, "trainer=ddp", "trainer.accelerator=cpu",
            "trainer.devices=2", f"data.batching={batching}", "data.max_len=40", "model.net.hidden_size=16",
            "model.net.embedding_dim=16", f"hydra.run.dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}",
            "+callbacks.record._target_=tests.test_distributed.RecordRank", f"+callbacks.record.folder={tmp_path}"]
    result = run_script("train.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    assert (tmp_path / "out" / "checkpoints" / "best.ckpt").is_file()
    assert "test/acc" in result.stdout + result.stderr
    texts = [{tuple(row.tolist()) for batch in torch.load(tmp_path / f"rank{r}.pt")["batches"] for row in batch}
             for r in (0, 1)]
    assert len(texts[0]) > 100 and len(texts[1]) > 100 and len(texts[0] & texts[1]) <= 1  # each rank its own texts


@pytest.mark.real_data
def test_default_embeddings_are_pretrained_on_first_use_and_loaded_by_word(tmp_path, caplog):
    reviews, labels = tmp_path / "reviews.txt", tmp_path / "labels.txt"
    reviews.write_text("\n".join(["a good fine film", "a bad awful film", "the acting was superb"] * 20))
    labels.write_text("\n".join(["positive", "negative", "positive"] * 20))
    vectors = "model.pretrained_embeddings"
    overrides = ["task=sentiment", *TINY_TRAINER, "model.net.hidden_size=8", "model.net.embedding_dim=8",
                 f"{vectors}.data.imdb_layout=reviews_labels", f"{vectors}.data.reviews_file={reviews}",
                 f"{vectors}.data.labels_file={labels}", f"{vectors}.epochs=1", f"{vectors}.subsample=0",
                 f"{vectors}.pretrain_if_missing=true"]
    with caplog.at_level("INFO"):
        train(compose_config(overrides, tmp_path))
    (cached,) = (tmp_path / "cache" / "vectors").glob("cbow-imdb-8d-*.pt")  # gensim's CBOW, whitened
    found = [r.getMessage() for r in caplog.records if "word vectors from" in r.getMessage()]
    assert found and found[0].startswith("initialized ") and str(cached) in found[0]
    assert int(found[0].split()[1]) >= 4  # good, bad, film, acting ... are in both vocabularies
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")  # weights-only
    assert "hyper_parameters" not in ckpt and ckpt["rnnlab"]["model_kwargs"]["net"]["vocab_size"] > 4
    run = load_run(tmp_path / "run" / "checkpoints" / "best.ckpt")  # rebuilt without training the vectors again
    assert torch.equal(run.model.net.embedding.weight, ckpt["state_dict"]["net.embedding.weight"])


def test_the_plot_goes_to_the_checkpoints_run_folder_by_default_one_file_per_text(mr_checkpoint):
    import hashlib
    from pathlib import Path

    path, _ = mr_checkpoint
    saved = []
    for text in ("a fine film", "A fine film!", "a fine film", "Ünïcode only: ???"):
        err = io.StringIO()
        predict(pcfg(path, text=text, plot=True, plot_path=None), io.StringIO(), err)
        saved.append(Path(err.getvalue().split("saved ")[-1].strip()))
        assert saved[-1].stat().st_size > 5000
    folder = path.parent.parent / "predictions"
    assert saved[0] == folder / f"a-fine-film-{hashlib.sha256(b'a fine film').hexdigest()[:8]}.png"
    assert saved[1].name.startswith("a-fine-film-") and saved[1] != saved[0]  # another text keeps its own plot
    assert saved[2] == saved[0]  # the same text: the same file
    assert saved[3].parent == folder and saved[3].name.startswith("ünïcode-only-")


@pytest.mark.parametrize("cell", ["lstm", "naive_gru"])
def test_pack_true_packs_for_the_fused_cells_only_and_keeps_the_padded_length(cell):
    """`pack=True` hands the fused layers a PackedSequence (no work past each end; the naive cells read padded
    batches), `pack=False` the padded tensor; the outputs keep the batch's time axis even when every text
    is shorter than it."""
    torch.manual_seed(0)
    rnn = PaddedRNN(cell, 4, 5, num_layers=2, bidirectional=True)
    seen = []
    for layer in rnn.layers:
        for module in layer:
            module.register_forward_pre_hook(lambda m, args: seen.append(type(args[0]).__name__))
    x, lengths = torch.randn(3, 9, 4), torch.tensor([4, 6, 2])  # all shorter than the 9 steps
    packed_out, packed_final = rnn(x, lengths, pack=True)
    assert seen == ["Tensor"] * 4 if cell.startswith("naive") else seen == ["PackedSequence"] * 4
    seen.clear()
    out, final = rnn(x, lengths, pack=False)
    assert seen == ["Tensor"] * 4
    assert packed_out.shape == out.shape == (3, 9, 10)
    torch.testing.assert_close(packed_out, out)
    torch.testing.assert_close(packed_final, final)
    assert PaddedRNN(cell, 4, 5).directions == 1 and len(PaddedRNN(cell, 4, 5).layers) == 1  # the defaults


def test_what_the_classifier_logs_and_where():
    """Training: the batch's loss per step in the progress bar and its batch-weighted epoch mean; evaluation:
    each split's loss (synchronized across processes) and accuracy, F1, AUROC, validation's in the bar."""
    torch.manual_seed(0)
    module = SentimentClassifier(RecurrentClassifier(20, embedding_dim=4, hidden_size=6, dropout=0.0))
    logged = []
    module.log = lambda name, value, **kw: logged.append((name, float(value.detach()), kw))
    module.log_dict = lambda values, **kw: logged.extend((k, float(v), kw) for k, v in values.items())
    ids, lengths, labels = torch.randint(2, 20, (3, 5)), torch.tensor([5, 3, 4]), torch.tensor([1, 0, 1])
    loss = module.training_step((ids, lengths, labels), 0)
    expected = torch.nn.functional.cross_entropy(module(ids, lengths), labels).item()
    assert logged == [("train/loss", pytest.approx(expected), {"on_step": True, "on_epoch": False, "prog_bar": True,
                                                                "batch_size": 3}),
                      ("train/loss_epoch", pytest.approx(expected), {"on_step": False, "on_epoch": True,
                                                                      "batch_size": 3})]
    assert loss.item() == pytest.approx(expected)
    for stage, step, end in (("val", module.validation_step, module.on_validation_epoch_end),
                             ("test", module.test_step, module.on_test_epoch_end)):
        logged.clear()
        step((ids, lengths, labels), 0)
        end()
        assert logged[0] == (f"{stage}/loss", pytest.approx(expected), {"batch_size": 3, "sync_dist": True})
        assert sorted(name for name, _, _ in logged[1:]) == [f"{stage}/acc", f"{stage}/auroc", f"{stage}/f1"]
        assert {str(kw) for _, _, kw in logged[1:]} == {str({"prog_bar": True} if stage == "val" else {})}


@pytest.mark.parametrize("freeze_embeddings", [False, True])
def test_gradual_unfreezing_schedule_by_epoch(freeze_embeddings):
    """unfreeze=2 over head, top layer, bottom layer, embedding: one more group from the top every two
    epochs; a frozen embedding stays frozen throughout, the layers above it unaffected."""
    m = model(num_layers=2, unfreeze=2, freeze_embeddings=freeze_embeddings)
    groups = m.layer_groups()
    assert [len(g) for g in groups] == [2, 4, 4, 1] and groups[-1][0] is m.net.embedding.weight
    trainable = []
    for epoch in range(8):
        m._trainer = SimpleNamespace(current_epoch=epoch)  # what current_epoch reads
        m.on_train_epoch_start()
        trainable.append([all(p.requires_grad for p in g) for g in groups])
        assert all(len({p.requires_grad for p in g}) == 1 for g in groups)
    embedding = not freeze_embeddings
    assert trainable == [[True, False, False, False]] * 2 + [[True, True, False, False]] * 2 + \
        [[True, True, True, False]] * 2 + [[True, True, True, embedding]] * 2
