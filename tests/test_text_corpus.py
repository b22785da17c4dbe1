"""Word LMs over any documents: a text file, a folder of .txt files, IMDB's training reviews (never its test
reviews), the sentence-polarity sentences outside the classifier's test part, tokenized as the sentiment data
is, with the vocabulary stored in the checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.checkpoint import load_run
from rnnlab.data.download import DataFileError
from rnnlab.data.lm_datamodule import TextCorpusDataModule
from rnnlab.data.sentiment import SentimentDataModule
from rnnlab.data.text import PAD, UNK, build_vocab, tokenize
from rnnlab.data.text_corpus import EOS, document_corpus, split_documents, text_documents
from rnnlab.evaluate import evaluate
from rnnlab.train import train
from tests.conftest import TINY_TRAINER, compose_config, make_imdb_tree


def test_a_file_is_a_document_a_line_and_a_folder_a_document_a_file(tmp_path):
    (tmp_path / "one.txt").write_text("First line.\n\n  \nSecond <br /> line!\n")
    assert text_documents(tmp_path / "one.txt") == ["First line.", "Second <br /> line!"]
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("bee")
    (folder / "sub" / "a.txt").write_text("ay\nstill ay")
    (folder / "notes.md").write_text("not a document")
    assert text_documents(folder) == ["bee", "ay\nstill ay"]  # sorted paths: docs/b.txt < docs/sub/a.txt
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError, match="empty holds no .txt file"):
        text_documents(tmp_path / "empty")


def test_documents_are_split_whole_each_exactly_once():
    docs = [f"document {i}" for i in range(40)]
    parts = split_documents(docs, (0.8, 0.1, 0.1), seed=3)
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [32, 4, 4]
    assert sorted(parts["train"] + parts["valid"] + parts["test"]) == sorted(docs)
    assert parts == split_documents(docs, (0.8, 0.1, 0.1), seed=3)
    assert parts != split_documents(docs, (0.8, 0.1, 0.1), seed=4)
    with pytest.raises(ValueError, match=r"fractions \(train, valid, test\) summing to 1, got \[0.8, 0.1\]"):
        split_documents(docs, (0.8, 0.1), seed=0)
    with pytest.raises(DataFileError, match=r"^x.txt: 3 documents leave none for training with data.split=\[0.0, "):
        split_documents(docs[:3], (0.0, 0.5, 0.5), seed=0, source="x.txt")


@pytest.mark.parametrize("folder", [False, True])
def test_too_few_documents_name_the_file_or_folder_and_what_a_document_is(tmp_path, folder):
    where = tmp_path / "docs"
    if folder:
        where.mkdir()
        (where / "only.txt").write_text("one document\nof two lines\n")
    else:
        where.write_text("one line\n\n  \nanother line\n")
    what = "a document a .txt file" if folder else "a document a non-empty line"
    with pytest.raises(DataFileError, match=rf"^data.path {where} \({what}\) holds {1 if folder else 2} document\(s\); "
                                            r"a corpus needs at least 3 \(one per split\)$"):  # before: no file named
        train(compose_config(["task=lm", f"data.path={where}", *TINY_TRAINER], tmp_path))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_stream_is_every_document_then_eos_with_the_training_vocabulary():
    splits = {"train": ["The cat sat.", "A dog, a cat!"], "valid": ["The bird sat."], "test": ["A cat."]}
    corpus = document_corpus(splits, tokenize)
    vocab = corpus.vocab
    assert vocab.itos[:2] == [PAD, UNK] and "bird" not in vocab  # words of the training documents only
    assert vocab.decode(corpus.splits["train"].tolist()) == ["the", "cat", "sat", EOS, "a", "dog", "a", "cat", EOS]
    assert vocab.decode(corpus.splits["valid"].tolist()) == ["the", UNK, "sat", EOS]
    assert corpus.splits["test"].tolist() == vocab.encode(["a", "cat", EOS])


def test_imdb_text_reads_only_the_training_reviews(tmp_path):
    make_imdb_tree(tmp_path / "data" / "imdb", per_class=10)
    for path in (tmp_path / "data" / "imdb" / "aclImdb" / "test").rglob("*.txt"):
        path.write_text("testonlyword " + path.read_text())
    dm = TextCorpusDataModule(source="imdb", split=(0.8, 0.1, 0.1), data_dir=str(tmp_path / "data"),
                              cache_dir=str(tmp_path / "cache"), download=False)
    dm.setup()
    assert "testonlyword" not in dm.vocab and "wonderful" in dm.vocab and "<br" not in dm.vocab
    eos = dm.vocab.stoi[EOS]
    assert sum(int((dm.corpus.splits[k] == eos).sum()) for k in ("train", "valid", "test")) == 20  # 20 reviews


@pytest.mark.parametrize("folds", [None, 5])
def test_mr_text_reads_the_classifiers_training_and_validation_sentences_never_its_test_part(tmp_path, folds):
    folder = tmp_path / "data" / "rt-polaritydata"
    folder.mkdir(parents=True)
    (folder / "rt-polarity.pos").write_text("".join(f"a fine film p{i}\n" for i in range(30)))
    (folder / "rt-polarity.neg").write_text("".join(f"a dull film n{i}\n" for i in range(30)))
    where = {"data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"), "download": False, "seed": 7}
    fold = 2 if folds else 0  # a fold without folds is refused
    classifier = SentimentDataModule("mr", split=(0.6, 0.2, 0.2), folds=folds, fold=fold, **where).read_splits()
    dm = TextCorpusDataModule(source="mr", split=(0.8, 0.1, 0.1), sentiment_split=(0.6, 0.2, 0.2), folds=folds,
                              fold=fold, **where)
    every_word = [f"{w}{i}" for w in "pn" for i in range(30)] + ["a", "fine", "dull", "film"] + [EOS]
    dm.vocab = build_vocab([every_word])  # a vocabulary given (as from a checkpoint) that could decode any sentence
    dm.setup()
    read = {w for ids in dm.corpus.splits.values() for w in dm.vocab.decode(ids.tolist())}
    tags = {name: {text.split()[-1] for text in part.texts} for name, part in classifier.items()}
    assert len(tags["test"]) == 12 and not tags["test"] & read  # the test part: never read
    assert tags["train"] | tags["valid"] <= read  # everything else: read, in one of the LM's splits
    assert sum(int((ids == dm.vocab.stoi[EOS]).sum()) for ids in dm.corpus.splits.values()) == 48


def test_train_and_evaluate_an_lm_over_a_folder_of_files(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    for i in range(30):
        (folder / f"{i:02d}.txt").write_text(" ".join(words[j] for j in torch.randint(0, 6, (40,), generator=g)))
    overrides = ["task=lm", f"data.path={folder}", "data.batch_size=4", "data.eval_batch_size=2", "data.bptt=8",
                 "model.net.hidden_sizes=[16]", "model.net.embedding_dim=8", "callbacks.text_samples=null",
                 *TINY_TRAINER, "trainer.limit_val_batches=null", "trainer.limit_test_batches=null"]
    metrics = train(compose_config(overrides, tmp_path))
    run = load_run(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert run.vocab.itos[:2] == [PAD, UNK] and set(words) < set(run.vocab.itos)
    evaluated = evaluate(compose_config([f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
                                         "trainer.enable_progress_bar=false"], tmp_path, config_name="eval"))
    assert evaluated["test/ppl"] == pytest.approx(metrics["test/ppl"], rel=1e-5)
    assert math.isfinite(evaluated["test/ppl"]) and evaluated["test/ppl"] < len(run.vocab)  # it learned something


def test_adaptive_softmax_is_a_distribution_and_one_cluster_of_one_word_is_a_full_softmax():
    from rnnlab.models.lm import RNNLM, AdaptiveSoftmax

    torch.manual_seed(0)
    net = RNNLM(50, [16], embedding_dim=8, adaptive_softmax=[10, 30])
    log_probs, _ = net(torch.randint(0, 50, (3, 7)))
    assert log_probs.shape == (3, 7, 50)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 7))
    # cutoff 49: a head of 49 words plus one cluster holding the last word alone, which therefore gets the
    # cluster's whole probability: a full softmax over the head's 50 output rows
    decoder = AdaptiveSoftmax(16, 50, [49])
    h = torch.randn(4, 5, 16)
    full = torch.log_softmax(h @ decoder.asm.head.weight.T, -1)
    torch.testing.assert_close(decoder(h), full)
    targets = torch.randint(0, 50, (4, 5))
    torch.testing.assert_close(decoder.nll(h, targets), -full.gather(-1, targets[..., None]).mean())


def test_an_lm_with_the_adaptive_softmax_trains_and_reports_perplexity_over_every_token(tmp_path):
    text = tmp_path / "text.txt"
    g = torch.Generator().manual_seed(0)
    words = [f"w{i}" for i in range(40)]
    text.write_text("\n".join(" ".join(words[j] for j in torch.randint(0, 40, (30,), generator=g))
                              for _ in range(60)))
    overrides = ["task=lm", f"data.path={text}", "data.batch_size=4", "data.eval_batch_size=1", "data.bptt=8",
                 "model.net.hidden_sizes=[16]", "model.net.embedding_dim=8", "model.net.adaptive_softmax=[8,20]",
                 "callbacks.text_samples=null", *TINY_TRAINER, "trainer.limit_test_batches=null"]
    metrics = train(compose_config(overrides, tmp_path))
    run = load_run(tmp_path / "run" / "checkpoints" / "last.ckpt")
    dm = TextCorpusDataModule(path=str(text), split=(0.9, 0.05, 0.05), data_dir=str(tmp_path), cache_dir=None,
                              seed=1234)
    dm.setup()
    stream = dm.corpus.splits["test"]
    with torch.no_grad():
        log_probs, _ = run.model.net(stream[None, :-1])
    nll = -log_probs[0].gather(-1, stream[1:, None]).mean().item()
    assert metrics["test/ppl"] == pytest.approx(math.exp(nll), rel=1e-4)


def test_adaptive_softmax_cutoffs_outside_the_vocabulary_are_one_clear_error():
    from rnnlab.models.lm import RNNLM

    message = r"^adaptive_softmax cutoffs must increase within 1..49 \(a vocabulary of 50\), got \[2000, 10000\]$"
    with pytest.raises(ValueError, match=message):
        RNNLM(50, [8], adaptive_softmax=[2000, 10000])
    with pytest.raises(ValueError, match="got \\[20, 10\\]"):
        RNNLM(50, [8], adaptive_softmax=[20, 10])


def tiny_document_lm(tmp_path, *overrides):
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(0)
    words = ["alpha", "beta", "gamma", "delta"]
    for i in range(12):
        (folder / f"{i:02d}.txt").write_text(" ".join(words[j] for j in torch.randint(0, 4, (30,), generator=g)))
    train(compose_config(["task=lm", f"data.path={folder}", "data.batch_size=4", "data.eval_batch_size=2",
                          "data.bptt=8", "model.net.hidden_sizes=[8]", "model.net.embedding_dim=8", *TINY_TRAINER,
                          *overrides], tmp_path))
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("backward", [False, True])
def test_generate_reads_a_prime_as_the_lm_read_its_documents(tmp_path, monkeypatch, backward):
    import io

    from omegaconf import OmegaConf

    import rnnlab.generate
    from rnnlab.generate import generate
    from rnnlab.sampling import from_symbols, sample

    path = tiny_document_lm(tmp_path, f"data.reverse={backward}", "callbacks.text_samples=null")
    vocab = load_run(path).vocab
    calls = []

    def spy(net, prime, *args, **kw):
        calls.append((prime, sample(net, prime, *args, **kw)))
        return calls[-1][1]

    monkeypatch.setattr(rnnlab.generate, "sample", spy)
    cfg = dict(ckpt_path=str(path), prime="Alpha,<br />BETA gamma!", unknown="error", length=12, temperature=1.0,
               sampling="multinomial", top_k=None, num_samples=1, seed=3, device="cpu", print_prime=True)
    for num_samples in (1, 2):
        out = io.StringIO()
        texts = generate(OmegaConf.create(cfg | {"num_samples": num_samples}), out)
        prime, ids = calls[-1]
        read = ["alpha", "beta", "gamma"]  # lower-cased, <br /> and punctuation dropped, in reading order
        assert prime == vocab.encode(read[::-1] if backward else read)
        drawn = [vocab.decode(row) for row in ids.tolist()]
        # a backward LM drew the words before the prime, last first: they are written in the text's order
        assert texts == [from_symbols(row[::-1] if backward else row, "word") for row in drawn]
        shown = "alpha beta gamma "
        lines = [text + shown if backward else shown + text for text in texts]
        if num_samples > 1:
            lines = [f"--- sample {i + 1} ---\n{line}" for i, line in enumerate(lines)]
        assert out.getvalue() == "".join(f"{line}\n" for line in lines)
    with pytest.raises(ValueError, match="^prime has no symbols as the model's documents are tokenized"):
        generate(OmegaConf.create(cfg | {"prime": "!!! ..."}), io.StringIO())


@pytest.mark.parametrize("backward", [False, True])
def test_tensorboard_samples_read_the_prime_as_the_lm_reads_and_show_the_text_in_its_order(tmp_path, backward):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = tiny_document_lm(tmp_path, f"data.reverse={backward}", "logger=tensorboard",
                            "callbacks.text_samples.prime='Alpha,<br />BETA gamma'", "callbacks.text_samples.length=5")
    events = EventAccumulator(str(path.parent.parent / "tensorboard"))
    events.Reload()
    text = events.Tensors("samples/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text.endswith("alpha beta gamma ") if backward else text.startswith("alpha beta gamma ")
    assert len(text.replace("<eos>", "").split()) == 3 + 5 - text.count("  \n")


def test_eval_text_file_of_a_document_lm_reads_documents_as_its_corpus(tmp_path):
    from hydra.utils import instantiate

    path = tiny_document_lm(tmp_path, "callbacks.text_samples=null")
    run = load_run(path)
    datamodule = instantiate(run.config.data)
    datamodule.vocab = run.vocab
    text = tmp_path / "reviews.txt"
    text.write_text("Alpha, BETA!<br />zzz\n\n  \nGamma delta.\n")
    assert run.vocab.decode(datamodule.encode_file(text).tolist()) == ["alpha", "beta", UNK, EOS, "gamma", "delta", EOS]
    assert run.vocab.decode(datamodule.encode_file(tmp_path / "docs").tolist()).count(EOS) == 12  # a file a document
    metrics = evaluate(compose_config([f"ckpt_path={path}", f"text_file={tmp_path / 'docs'}", "batch_size=1",
                                       "trainer.enable_progress_bar=false"], tmp_path, "eval"))
    assert math.isfinite(metrics["test/ppl"]) and metrics["test/ppl"] > 1
