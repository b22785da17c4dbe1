"""Language-model transfer to sentiment: the classifier takes the LM's vocabulary, tokenization, cell, sizes and
weights exactly; what does not fit is one line; gradual unfreezing, discriminative learning rates, one cycle;
an LM fine-tuned on new text (init_from=) keeps its architecture, tokenization and vocabulary."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rnnlab import CONF_DIR
from rnnlab.checkpoint import CheckpointError, read_checkpoint
from rnnlab.data.text import PAD, UNK
from rnnlab.data.text_corpus import EOS
from rnnlab.train import build, train
from rnnlab.transfer import copy_encoder, read_lm_encoder
from tests.conftest import TINY_TRAINER, compose_config, make_imdb_tree, synthetic_overrides

LM_NET = ["model.net.hidden_sizes=[12,12]", "model.net.embedding_dim=8", "model.net.cell=gru"]


@pytest.fixture(scope="module")
def imdb_lm(tmp_path_factory):
    """A tiny GRU LM over the training reviews of a small aclImdb tree: (its checkpoint, the data folder)."""
    root = tmp_path_factory.mktemp("transfer")
    make_imdb_tree(root / "data" / "imdb", per_class=12, extra_words=20)
    data = [f"paths.data_dir={root / 'data'}", f"paths.cache_dir={root / 'cache'}", "data.download=false"]
    train(compose_config(["task=lm", "data=imdb_text", *data, "data.split=[0.8,0.1,0.1]", "data.batch_size=2",
                          "data.eval_batch_size=2", "data.bptt=8", *LM_NET, "callbacks.text_samples=null",
                          *TINY_TRAINER, "test=false"], root / "lm"))
    return root / "lm" / "run" / "checkpoints" / "last.ckpt", data


def classifier_overrides(imdb_lm, *extra: str) -> list[str]:
    ckpt, data = imdb_lm
    return ["task=sentiment", "data=imdb", *data, "model/embeddings=none", "data.batch_size=4",
            "model.net.bidirectional=false", f"encoder.ckpt_path={ckpt}", "data.lower=false", *TINY_TRAINER,
            "test=false", "callbacks.trajectories=null", *extra]


@pytest.fixture(scope="module")
def classifier_ckpt(imdb_lm, tmp_path_factory):
    """A checkpoint of a classifier trained from `imdb_lm`: a word LM checkpoint it is not."""
    out = tmp_path_factory.mktemp("classifier")
    train(compose_config(classifier_overrides(imdb_lm), out))
    return out / "run" / "checkpoints" / "last.ckpt"


def test_the_classifier_takes_the_lms_vocabulary_sizes_tokenization_and_weights(imdb_lm, tmp_path):
    cfg = compose_config(classifier_overrides(imdb_lm), tmp_path)
    datamodule, model, _ = build(cfg)
    lm = read_checkpoint(imdb_lm[0])
    assert datamodule.vocab.itos == lm["rnnlab"]["vocab"]["itos"]
    assert (cfg.model.net.cell, cfg.model.net.embedding_dim, cfg.model.net.hidden_size, cfg.model.net.num_layers) \
        == ("gru", 8, 12, 2)
    assert cfg.data.lower is True  # the LM's tokenization wins over data.lower=false
    state = lm["state_dict"]
    assert torch.equal(model.net.embedding.weight, state["net.encoder.weight"])
    for k, (forward,) in enumerate(model.net.rnn.layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            assert torch.equal(getattr(forward, f"{name}_l0"), state[f"net.rnn.groups.0.{name}_l{k}"])
    run = imdb_lm[0].parent.parent  # a run folder: its checkpoints/best.ckpt
    _, from_folder, _ = build(compose_config([*classifier_overrides(imdb_lm), f"encoder.ckpt_path={run}"],
                                             tmp_path / "folder"))
    best = read_checkpoint(run / "checkpoints" / "best.ckpt")["state_dict"]
    assert torch.equal(from_folder.net.embedding.weight, best["net.encoder.weight"])


def test_new_words_extend_the_lms_vocabulary_and_start_at_its_mean_embedding(imdb_lm, tmp_path):
    """`encoder.new_words=2`: the training words the LM lacks seen at least twice follow the LM's vocabulary (its
    ids unchanged), their rows the LM's mean embedding; a word seen once stays `<unk>`."""
    ckpt, _ = imdb_lm
    make_imdb_tree(tmp_path / "data" / "imdb", per_class=12, extra_words=20)
    for path in sorted((tmp_path / "data" / "imdb" / "aclImdb" / "train").glob("*/*.txt")):
        path.write_text(path.read_text() + (" splendid" if path.parent.name == "pos" else " dreadful"))
    (tmp_path / "data" / "imdb" / "aclImdb" / "train" / "pos" / "0_8.txt").write_text("A splendid zeugma.")
    data = [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}", "data.download=false"]
    datamodule, model, _ = build(compose_config(classifier_overrides((ckpt, data), "encoder.new_words=2"), tmp_path))
    lm = read_checkpoint(ckpt)
    itos, embedding = lm["rnnlab"]["vocab"]["itos"], lm["state_dict"]["net.encoder.weight"]
    assert "splendid" not in itos and "zeugma" not in itos
    assert datamodule.vocab.itos == [*itos, "dreadful", "splendid"]  # as many of each: alphabetical
    weight = model.net.embedding.weight
    assert torch.equal(weight[: len(itos)], embedding)
    assert torch.equal(weight[len(itos):], embedding.mean(0).expand(2, -1))
    ids = datamodule.vocab.encode(["a", "splendid", "zeugma"])
    assert ids[1] == len(itos) + 1 and ids[2] == datamodule.vocab.stoi[UNK]
    train(compose_config(classifier_overrides((ckpt, data), "encoder.new_words=2"), tmp_path / "trained"))
    saved = read_checkpoint(tmp_path / "trained" / "run" / "checkpoints" / "last.ckpt")
    assert saved["rnnlab"]["vocab"]["itos"] == datamodule.vocab.itos  # what eval and predict read texts with
    with refusal(CheckpointError, ckpt, f": embedding {tuple(embedding.shape)} does not fit the classifier's "
                                        f"{tuple(weight.shape)}"):
        copy_encoder(model.net, read_lm_encoder(ckpt))  # without new_words the vocabularies must be the same
    with pytest.raises(ValueError, match=r"^encoder.new_words must be null or a count of at least 1 \(how often a "
                                         r"training word the LM lacks must occur to be added\), got 0$"):
        build(compose_config(classifier_overrides(imdb_lm, "encoder.new_words=0"), tmp_path / "zero"))


def documents(stream: torch.Tensor, vocab) -> list[list[str]]:
    words = vocab.decode(stream.tolist())
    ends = [i for i, w in enumerate(words) if w == EOS]
    return [words[start + 1 if start >= 0 else 0:end] for start, end in zip([-1, *ends], ends)]


def test_a_backward_lm_reads_each_document_last_word_first_and_so_does_its_classifier(imdb_lm, tmp_path):
    ckpt, data = imdb_lm
    lm = ["task=lm", "data=imdb_text", *data, "data.split=[0.8,0.1,0.1]", "data.batch_size=2", "data.bptt=8",
          "data.eval_batch_size=2", *LM_NET, "callbacks.text_samples=null", *TINY_TRAINER, "test=false"]
    forward, _, _ = build(compose_config(lm, tmp_path / "forward"))
    backward_cfg = compose_config([*lm, "data.reverse=true"], tmp_path / "backward")
    backward, model, trainer = build(backward_cfg)
    trainer.fit(model, datamodule=backward)
    assert backward.vocab.itos == forward.vocab.itos
    for split, stream in forward.corpus.splits.items():
        ahead = documents(stream, forward.vocab)
        assert [doc[::-1] for doc in ahead] == documents(backward.corpus.splits[split], backward.vocab)
        assert len(ahead) > 1 and ahead != [doc[::-1] for doc in ahead]

    backward_ckpt = tmp_path / "backward" / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config(classifier_overrides((backward_ckpt, data), "data.reverse=false"), tmp_path)
    build(cfg)
    assert cfg.data.reverse is True  # the LM's reading order wins
    older = read_checkpoint(ckpt)
    del older["rnnlab"]["config"]["data"]["reverse"]  # a checkpoint from before data.reverse: it read forward
    torch.save(older, tmp_path / "older.ckpt")
    cfg = compose_config(classifier_overrides((tmp_path / "older.ckpt", data), "data.reverse=true"), tmp_path)
    build(cfg)
    assert cfg.data.reverse is False


def refusal(error: type[Exception], path, message: str):
    """`pytest.raises` for exactly `encoder.ckpt_path=<path><message>`."""
    return pytest.raises(error, match=f"^{re.escape(f'encoder.ckpt_path={path}{message}')}$")


def test_what_does_not_fit_is_refused_in_one_line(imdb_lm, classifier_ckpt, tmp_path, synthetic_ptb):
    with refusal(ValueError, imdb_lm[0], ": the LM reads left to right, so the classifier must too "
                                         "(model.net.bidirectional=false)"):
        build(compose_config(classifier_overrides(imdb_lm, "model.net.bidirectional=true"), tmp_path))
    ptb_lm = tmp_path / "ptb_lm"
    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], ptb_lm))
    ptb_ckpt = ptb_lm / "run" / "checkpoints" / "last.ckpt"
    with refusal(CheckpointError, ptb_ckpt, ": its data (rnnlab.data.lm_datamodule.TextFilesDataModule) is not "
                                            "tokenized as the sentiment texts; train the LM with data=text_corpus or "
                                            "data=imdb_text"):
        build(compose_config([*classifier_overrides(imdb_lm), f"encoder.ckpt_path={ptb_ckpt}"], tmp_path))
    uneven = tmp_path / "uneven"
    _, data = imdb_lm
    train(compose_config(["task=lm", "data=imdb_text", *data, "data.split=[0.8,0.1,0.1]", "data.batch_size=2",
                          "data.bptt=8", "model.net.hidden_sizes=[12,8]", "model.net.embedding_dim=8",
                          "callbacks.text_samples=null", *TINY_TRAINER, "test=false"], uneven))
    uneven_ckpt = uneven / "run" / "checkpoints" / "last.ckpt"
    with refusal(CheckpointError, uneven_ckpt, ": the classifier needs layers of one size and an embedding, the LM "
                                               "has hidden_sizes [12, 8] and embedding_dim 8"):
        build(compose_config([*classifier_overrides(imdb_lm), f"encoder.ckpt_path={uneven_ckpt}"], tmp_path))
    with refusal(CheckpointError, classifier_ckpt, " is not a word language model checkpoint (its network is "
                                                   "rnnlab.models.classifier.RecurrentClassifier)"):
        build(compose_config([*classifier_overrides(imdb_lm), f"encoder.ckpt_path={classifier_ckpt}"], tmp_path))


def test_lm_checkpoints_without_their_network_data_or_special_words_are_refused(imdb_lm, tmp_path):
    lm = read_checkpoint(imdb_lm[0])

    def variant(name: str, change) -> Path:
        checkpoint = copy.deepcopy(lm)
        change(checkpoint)
        torch.save(checkpoint, tmp_path / name)
        return tmp_path / name

    def swap_first_words(checkpoint):
        itos = checkpoint["rnnlab"]["vocab"]["itos"]
        itos[0], itos[2] = itos[2], itos[0]

    def keep_one_layer(checkpoint):
        checkpoint["rnnlab"]["config"]["model"]["net"]["hidden_sizes"] = [12]
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("net.rnn.") and k.endswith("_l1")]:
            del state[key]

    one_layer = read_lm_encoder(variant("one_layer.ckpt", keep_one_layer))
    assert (one_layer.hidden_size, one_layer.num_layers, len(one_layer.layers)) == (12, 1, 1)
    third = lm["rnnlab"]["vocab"]["itos"][2]
    for path, message in (
        (variant("no_net.ckpt", lambda c: c["rnnlab"]["config"]["model"].pop("net")),
         " is not a word language model checkpoint (its network is None)"),
        (variant("no_data.ckpt", lambda c: c["rnnlab"]["config"].pop("data")),
         ": its data (None) is not tokenized as the sentiment texts; train the LM with data=text_corpus or "
         "data=imdb_text"),
        (variant("swapped.ckpt", swap_first_words),
         f": its vocabulary does not start with {PAD}, {UNK} (got [{third!r}, {UNK!r}])"),
    ):
        with refusal(CheckpointError, path, message):
            read_lm_encoder(path)


def test_gradual_unfreezing_keeps_frozen_layers_unchanged(imdb_lm, tmp_path):
    """Epoch 1 trains the head alone, epoch 2 the top recurrent layer too; the bottom layer and the embedding
    stay the LM's for the three epochs they are frozen."""
    lm = read_checkpoint(imdb_lm[0])["state_dict"]
    after = {}
    for epochs in (1, 2):
        out = tmp_path / str(epochs)
        train(compose_config(classifier_overrides(imdb_lm, "model.unfreeze=1", f"trainer.max_epochs={epochs}"), out))
        after[epochs] = read_checkpoint(out / "run" / "checkpoints" / "last.ckpt")["state_dict"]
    top, bottom = "net.rnn.layers.1.0.weight_hh_l0", "net.rnn.layers.0.0.weight_hh_l0"
    assert torch.equal(after[1][top], lm["net.rnn.groups.0.weight_hh_l1"])
    assert not torch.equal(after[2][top], lm["net.rnn.groups.0.weight_hh_l1"])
    for epochs in (1, 2):
        assert torch.equal(after[epochs][bottom], lm["net.rnn.groups.0.weight_hh_l0"])
        assert torch.equal(after[epochs]["net.embedding.weight"], lm["net.encoder.weight"])


@pytest.mark.parametrize("head", [[], ["model.net.head_hidden=4"]])
def test_discriminative_learning_rates_and_one_cycle(imdb_lm, tmp_path, head):
    cfg = compose_config(classifier_overrides(imdb_lm, "model.lr_decay_per_layer=2.0", "model.optimizer.lr=0.008",
                                              "model/scheduler=one_cycle", *head), tmp_path)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    optimizer = trainer.optimizers[0]
    scheduler = trainer.lr_scheduler_configs[0]
    assert scheduler.interval == "step" and type(scheduler.scheduler).__name__ == "OneCycleLR"
    assert [g["max_lr"] for g in optimizer.param_groups] == pytest.approx([0.008, 0.004, 0.002, 0.001])
    assert scheduler.scheduler.total_steps == 4  # the run's steps (limit_train_batches=4, one epoch)
    heads = [id(p) for p in model.net.head.parameters()]
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == heads


def test_the_range_test_sweeps_every_group_at_its_own_share_of_the_lr(imdb_lm, tmp_path, monkeypatch):
    import csv

    from rnnlab.lr_finder import find_lr

    cfg = compose_config(classifier_overrides(imdb_lm, "model.lr_decay_per_layer=2.0", "model/optimizer=adam",
                                              "trainer.max_epochs=10"), tmp_path)
    datamodule, model, trainer = build(cfg)
    seen, step = [], torch.optim.Adam.step

    def recorded(self, *args, **kwargs):
        seen.append([group["lr"] for group in self.param_groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recorded)
    find_lr(trainer, model, datamodule, tmp_path, steps=16, min_lr=1e-4, max_lr=1e-1)
    with open(tmp_path / "lr_find.csv") as f:
        swept = [float(row["lr"]) for row in csv.DictReader(f)]
    assert len(seen) == len(swept) == 16  # before: every group at the swept lr, the head's and the embedding's alike
    for lrs, lr in zip(seen, swept):
        assert lrs == pytest.approx([lr, lr / 2, lr / 4, lr / 8])  # the head, then each layer below it


def test_an_lm_fine_tuned_on_new_text_keeps_its_architecture_tokenization_vocabulary_and_weights(
        imdb_lm, classifier_ckpt, tmp_path, monkeypatch):
    ckpt, _ = imdb_lm
    lm = read_checkpoint(ckpt)
    text = tmp_path / "new.txt"
    text.write_text("A wonderful film zzznever\nan awful film\nwonderful acting\nawful\n" * 2)
    cfg = compose_config(["task=lm", f"data.path={text}", f"init_from={ckpt}", "data.split=[0.5,0.25,0.25]",
                          "model.net.cell=lstm", "model.net.hidden_sizes=[30]", "data.lower=false",
                          "data.batch_size=1", "data.eval_batch_size=1", "data.bptt=3", "callbacks.text_samples=null",
                          *TINY_TRAINER], tmp_path)
    reads = []

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return read_checkpoint(path, *args, **kwargs)

    monkeypatch.setattr("rnnlab.transfer.read_checkpoint", counted)
    monkeypatch.setattr("rnnlab.checkpoint.read_checkpoint", counted)
    datamodule, model, trainer = build(cfg)
    monkeypatch.undo()
    assert reads == [str(ckpt)]  # architecture, vocabulary and weights from one read
    assert (cfg.model.net.cell, list(cfg.model.net.hidden_sizes), cfg.model.net.embedding_dim) == ("gru", [12, 12], 8)
    assert cfg.data.lower is True  # the checkpoint's tokenization wins over data.lower=false
    assert datamodule.vocab.itos == lm["rnnlab"]["vocab"]["itos"]
    words = [w for split in datamodule.corpus.splits.values() for w in datamodule.vocab.decode(split.tolist())]
    assert "zzznever" not in words and UNK in words and words.count(EOS) == 8  # outside the LM's words: <unk>
    assert all(torch.equal(tensor, lm["state_dict"][name]) for name, tensor in model.state_dict().items())
    trainer.fit(model, datamodule=datamodule)
    tuned = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert tuned["rnnlab"]["vocab"] == lm["rnnlab"]["vocab"]
    assert not torch.equal(tuned["state_dict"]["net.encoder.weight"], lm["state_dict"]["net.encoder.weight"])
    with pytest.raises(CheckpointError, match=r"^init_from=.*last.ckpt is not a word language model checkpoint"):
        build(compose_config(["task=lm", f"data.path={text}", f"init_from={classifier_ckpt}"], tmp_path))


@pytest.mark.parametrize("preset", ["imdb_ulmfit", "mr_ulmfit"])
def test_ulmfit_presets_compose(preset):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={preset}", "encoder.ckpt_path=lm.ckpt"])
    assert cfg.model.unfreeze is None and cfg.model.lr_decay_per_layer == 2.6 and cfg.model.optimizer.lr == 0.01
    assert cfg.model.net.pooling == "concat"  # [last, max, mean]: the better of the poolings measured on both
    assert cfg.model.scheduler._target_ == "torch.optim.lr_scheduler.OneCycleLR"
    assert cfg.model.net.bidirectional is False and cfg.encoder.ckpt_path == "lm.ckpt"


def test_mr_lm_preset_composes():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mr_lm", "init_from=lm.ckpt", "data.folds=10", "data.fold=3"])
    assert (cfg.task_name, cfg.data.source, cfg.data.folds, cfg.data.fold) == ("lm", "mr", 10, 3)
    assert cfg.init_from == "lm.ckpt" and cfg.model.optimizer.lr == 10.0
    assert cfg.model.ar == 2.0 and cfg.model.net.weight_drop == 0.2  # the regularizers it was measured with


def test_imdb_lm_halves_ptb_cpu60s_regularizers_and_mr_lm_keeps_them():
    """imdb_lm's 3 epochs underfit with ptb_cpu60's dropouts (docs/results.md); mr_lm, fine-tuning on a small
    corpus, keeps the stronger ones it was measured with."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        awd = compose("train", overrides=["experiment=ptb_cpu60"]).model.net
        lm = compose("train", overrides=["experiment=imdb_lm"]).model.net
        mr = compose("train", overrides=["experiment=mr_lm", "init_from=lm.ckpt"]).model.net
    names = ("dropout", "embedding_dropout", "layer_dropout", "weight_drop")
    assert [lm[n] for n in names] == [0.15, 0.1, 0.1, 0.1] and lm.word_dropout == 0.0
    assert [mr[n] for n in names] == [0.3, 0.2, 0.2, 0.2] and mr.word_dropout == 0.05
    assert [lm[n] * 2 for n in names] == [awd[n] for n in names]


def test_lm_then_transfer_on_the_real_sentence_polarity_files(data_dir, tmp_path):
    """An LM over the real positive sentences (a document a line), fine-tuned on the training sentences of fold 3
    (experiment=mr_lm), then mr_ulmfit from it on the real data."""
    first, lm = tmp_path / "first", tmp_path / "lm"
    train(compose_config(["task=lm", f"data.path={data_dir / 'rt-polaritydata' / 'rt-polarity.pos'}",
                          "data.batch_size=8", "data.bptt=16", "model.net.hidden_sizes=[24,24]",
                          "model.net.embedding_dim=16", "callbacks.text_samples=null", *TINY_TRAINER,
                          "trainer.limit_train_batches=30", "test=false"], first))
    train(compose_config(["experiment=mr_lm", f"init_from={first}/run/checkpoints/last.ckpt", "data.folds=10",
                          "data.fold=3", "callbacks.text_samples=null", *TINY_TRAINER, "test=false"], lm))
    metrics = train(compose_config(["experiment=mr_ulmfit", f"encoder.ckpt_path={lm}/run/checkpoints/last.ckpt",
                                    "model.unfreeze=1", *TINY_TRAINER, "trainer.max_epochs=2",
                                    "trainer.limit_train_batches=10",
                                    "callbacks.trajectories=null", "data.batch_size=16"], tmp_path))
    assert {"test/acc", "test/f1", "test/auroc"} <= set(metrics)
    source, tuned = (read_checkpoint(path / "run" / "checkpoints" / "last.ckpt") for path in (lm, tmp_path))
    # the preset's encoder.new_words=2: the LM's words first, then the training words it lacks
    lm_words, words = source["rnnlab"]["vocab"]["itos"], tuned["rnnlab"]["vocab"]["itos"]
    assert words[:len(lm_words)] == lm_words and len(words) > len(lm_words)
    # two epochs of gradual unfreezing: the head, then the top layer; the embedding and the bottom layer stay
    lm_embedding, embedding = source["state_dict"]["net.encoder.weight"], tuned["state_dict"]["net.embedding.weight"]
    assert torch.equal(embedding[:len(lm_words)], lm_embedding)
    assert torch.allclose(embedding[len(lm_words):], lm_embedding.mean(0).expand(len(words) - len(lm_words), -1))
    assert torch.equal(tuned["state_dict"]["net.rnn.layers.0.0.weight_ih_l0"],
                       source["state_dict"]["net.rnn.groups.0.weight_ih_l0"])
    assert not torch.equal(tuned["state_dict"]["net.rnn.layers.1.0.weight_ih_l0"],
                           source["state_dict"]["net.rnn.groups.1.weight_ih_l0"])  # mr_lm: a module a layer
