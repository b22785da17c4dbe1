import re
import string

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rnnlab import CONF_DIR
from rnnlab.checks import check_run
from tests.conftest import ROOT, compose_config

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_presets_exist():
    assert {"ptb_notebook", "ptb_small", "ptb_medium", "ptb_large"} <= set(PRESETS)


def test_the_readme_lists_every_preset():
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `experiment` |"))
    assert sorted(re.findall(r"`(\w+)`", row.split("|")[2])) == PRESETS


DATA_KWARGS = {  # what each task's DataModule.model_kwargs() would add
    "ptb": {"net": {"vocab_size": 50}}, "lm": {"net": {"vocab_size": 30000}}, "charrnn": {"net": {"vocab_size": 50}},
    "sentiment": {"net": {"vocab_size": 50}}, "sine": {"net": {"horizon": 1}},
}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_instantiates(preset, tmp_path, monkeypatch):
    import rnnlab.pretrain_embeddings

    vectors = []  # pretraining is tested in test_skipgram; here only the call it would make
    monkeypatch.setattr(rnnlab.pretrain_embeddings, "cached_vectors", lambda **kw: vectors.append(kw) or "vectors.pt")
    cfg = compose_config([f"experiment={preset}"], tmp_path)
    OmegaConf.resolve(cfg)
    for group in ("data", "model", "trainer"):
        assert "_target_" in cfg[group]
    model = instantiate(cfg.model, **DATA_KWARGS[cfg.task_name])
    if OmegaConf.is_config(cfg.model.get("pretrained_embeddings")):
        assert model.hparams.pretrained_embeddings == "vectors.pt"
        assert vectors[0]["embedding_dim"] == cfg.model.net.embedding_dim
        assert vectors[0]["data"].hparams.dataset == "imdb"
    for key, value in cfg.model.items():
        if key not in ("_target_", "optimizer", "scheduler", "pretrained_embeddings", "net"):
            expected = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            assert model.hparams[key] == expected, key
    assert f"{type(model.net).__module__}.{type(model.net).__name__}" == cfg.model.net._target_
    assert callable(model.hparams.optimizer)
    check_run(cfg)  # every preset's settings pass the checks train.py makes
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_task_alone_is_ptb_small(tmp_path):
    plain = compose_config([], tmp_path)
    small = compose_config(["experiment=ptb_small"], tmp_path)
    for key in ("data", "model", "trainer"):
        assert OmegaConf.to_container(plain[key]) == OmegaConf.to_container(small[key])
    assert plain.model.loss_reduction == "sum_time" and plain.model.optimizer.lr == 1.0
    assert plain.trainer.gradient_clip_val == 5.0 and plain.trainer.max_epochs == 13


def test_published_preset_values(tmp_path):
    medium = compose_config(["experiment=ptb_medium"], tmp_path)
    assert medium.model.net.hidden_sizes == [650, 650] and medium.model.net.dropout == 0.5 and medium.data.bptt == 35
    assert medium.model.scheduler.lr_lambda.keep_epochs == 6 and medium.model.scheduler.lr_lambda.decay == 0.8
    large = compose_config(["experiment=ptb_large"], tmp_path)
    assert large.trainer.gradient_clip_val == 10.0
    assert large.model.scheduler.lr_lambda.decay == pytest.approx(1 / 1.15)
    notebook = compose_config(["experiment=ptb_notebook"], tmp_path)
    assert notebook.model.net.hidden_sizes == [256, 128] and notebook.data.batch_size == 60


def test_groups_swap_from_the_command_line(tmp_path):
    cfg = compose_config(["model/optimizer=adam", "model.net.cell=gru", "trainer=gpu", "logger=csv"], tmp_path)
    assert cfg.model.optimizer._target_ == "torch.optim.Adam"
    assert cfg.model.net.cell == "gru" and cfg.trainer.accelerator == "gpu"
    assert list(cfg.logger) == ["csv"]
    ddp = compose_config(["trainer=ddp"], tmp_path)
    assert ddp.trainer.strategy == "ddp" and ddp.trainer.max_epochs == 13


def test_unknown_key_is_hydras_error(tmp_path):
    with pytest.raises(ConfigCompositionException, match="model.hiden_sizes"):
        compose_config(["model.hiden_sizes=[3]"], tmp_path)


def test_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_DATA_DIR", "/some/where")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}"])
    assert cfg.paths.data_dir == "/some/where" and cfg.data.data_dir == "/some/where"


def test_charrnn_task_alone_is_charrnn_small_and_post_is_min_char_rnn(tmp_path):
    plain = compose_config(["task=charrnn"], tmp_path)
    small = compose_config(["experiment=charrnn_small"], tmp_path)
    assert OmegaConf.to_container(plain.model) == OmegaConf.to_container(small.model)
    assert plain.model.net.hidden_sizes == [256, 256] and plain.data.bptt == 100 and plain.model.net.dropout == 0.2
    post = compose_config(["experiment=charrnn_post"], tmp_path)
    assert post.model.net.cell == "rnn_tanh" and post.model.net.embedding_dim is None
    assert post.model.optimizer._target_ == "torch.optim.Adagrad" and post.data.bptt == 25
    assert post.trainer.gradient_clip_algorithm == "value"


def test_sentiment_task_alone_is_mr_lstm_and_notebook_is_unidirectional(tmp_path):
    plain = compose_config(["task=sentiment"], tmp_path)
    preset = compose_config(["experiment=mr_lstm"], tmp_path)
    assert OmegaConf.to_container(plain.model) == OmegaConf.to_container(preset.model)
    assert plain.model.net.bidirectional and plain.model.net.pooling == "max" and plain.trainer.max_epochs == 8
    notebook = compose_config(["experiment=imdb_notebook"], tmp_path)
    assert not notebook.model.net.bidirectional and notebook.model.loss == "mse" and notebook.data.max_len == 200
    assert notebook.data.padding_side == "left" and notebook.data.batching == "pad"
    vectors = plain.model.pretrained_embeddings
    assert vectors._target_ == "rnnlab.pretrain_embeddings.cached_vectors" and vectors.data.dataset == "imdb"
    assert vectors.embedding_dim == plain.model.net.embedding_dim and notebook.model.pretrained_embeddings is None


def test_default_embeddings_are_cbow_imdb_and_the_pretrain_embeddings_commands_defaults(tmp_path):
    def vectors(*overrides: str):
        return compose_config(["task=sentiment", *overrides], tmp_path).model.pretrained_embeddings

    cbow, skipgram = vectors(), vectors("model/embeddings=skipgram_imdb")
    assert cbow == vectors("model/embeddings=cbow_imdb")
    assert {k for k in skipgram if k != "data" and skipgram[k] != cbow[k]} == {"method", "epochs", "whitened"}
    assert (cbow.method, cbow.epochs, cbow.whitened) == ("gensim_cbow", 10, True)
    assert (skipgram.method, skipgram.epochs, skipgram.whitened) == ("torch", 3, False)
    assert {k for k in skipgram.data if skipgram.data[k] != cbow.data[k]} == {"min_freq", "max_size"}
    assert (skipgram.data.min_freq, skipgram.data.max_size) == (2, 50000)
    assert (cbow.data.min_freq, cbow.data.max_size) == (1, None)
    # python pretrain_embeddings.py data=imdb
    command = compose_config(["data=imdb"], tmp_path, config_name="pretrain_embeddings")
    for key in ("embedding_dim", "window", "negatives", "subsample", "epochs", "seed", "method", "workers", "whitened"):
        assert cbow[key] == command[key], key
    for key, value in cbow.data.items():
        assert command.data[key] == value, key


@pytest.mark.parametrize("mode", ["default", "fdr", "overfit", "limit", "profiler"])
def test_debug_modes_compose(mode, tmp_path):
    cfg = compose_config([f"debug={mode}"], tmp_path)
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.detect_anomaly and not cfg.get("logger")
    expected = {"fdr": ("fast_dev_run", True), "overfit": ("overfit_batches", 3), "limit": ("limit_train_batches", 10),
                "profiler": ("limit_train_batches", 50), "default": ("max_epochs", 1)}[mode]
    assert cfg.trainer[expected[0]] == expected[1]


def test_debug_profiler_writes_its_tables_into_the_run_folder(tmp_path):
    from rnnlab.train import train

    train(compose_config(["task=sine", "debug=profiler", "model.net.hidden_sizes=[8]", "model.plot=false"], tmp_path))
    fit, test = ((tmp_path / "run" / f"{stage}-profile.txt").read_text() for stage in ("fit", "test"))
    assert fit.startswith("FIT Profiler Report") and "run_training_batch" in fit
    assert test.startswith("TEST Profiler Report") and "SingleDeviceStrategy.test_step" in test


@pytest.mark.parametrize("name", ["rnnlm", "rnn_classifier", "series_regressor"])
def test_each_network_config_lists_the_networks_own_defaults(name):
    """Configs mirror code: every key of `conf/model/net/<name>.yaml` but the data's (`???`) is a constructor
    argument of its `_target_` with that value as the default."""
    import inspect

    from hydra.utils import get_class

    cfg = OmegaConf.load(CONF_DIR / "model" / "net" / f"{name}.yaml")
    signature = inspect.signature(get_class(cfg._target_))
    for key in cfg:
        if key == "_target_" or OmegaConf.is_missing(cfg, key):
            continue
        value = OmegaConf.to_container(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
        default = signature.parameters[key].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key


@pytest.mark.parametrize(("name", "subdir"), [("train", None), ("eval", ".hydra"), ("pretrain_embeddings", ".hydra"),
                                              ("generate", None), ("predict", None), ("export", None)])
def test_train_writes_its_run_files_itself_and_each_script_has_its_own_help(name, subdir):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, return_hydra_config=True)
    assert cfg.hydra.output_subdir == subdir  # train.py: after its resume checks (tests/test_resume.py)
    assert cfg.hydra.help.header.startswith(f"{name}.py (rnnlab): ")
    string.Template(cfg.hydra.help.header).substitute()  # Hydra renders --help as a template: a stray $ breaks it
