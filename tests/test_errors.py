"""Nothing executed, nothing hidden: unsafe checkpoints are refused by every entry point, and every data
error a user can cause is one line naming the file, from the command line too."""

from __future__ import annotations

import csv
import os
import pickle
import re
import time
from typing import Optional

import pytest
import torch

from rnnlab.checkpoint import CheckpointError, load_run, read_checkpoint
from rnnlab.data.download import DataFileError
from rnnlab.data.vocab import UnknownSymbolError, Vocabulary
from rnnlab.train import train
from tests.conftest import TINY_TRAINER, compose_config, run_script, synthetic_overrides


class Payload:
    """Unpickling this runs `open(marker, "w")`: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


PAYLOAD_GLOBAL = f"{open.__module__}.open"  # how pickle names it: io.open before Python 3.12, _io.open since


def plant_payload(path, marker) -> None:
    torch.save({"state_dict": {}, "rnnlab": {"config": {}}, "evil": Payload(marker)}, path)


def one_line_error(result, prog: str) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error: ")
    return last


def test_the_payload_runs_when_unpickled_unsafely(tmp_path):  # the test's own check that the payload is live
    plant_payload(tmp_path / "evil.ckpt", tmp_path / "marker")
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert (tmp_path / "marker").exists()


def test_a_payload_checkpoint_is_refused_in_python(tmp_path):
    plant_payload(tmp_path / "evil.ckpt", tmp_path / "marker")
    refused = f"evil.ckpt holds Python objects ({PAYLOAD_GLOBAL}), not only tensors and plain data; refusing to load it"
    with pytest.raises(CheckpointError, match=re.escape(refused)):
        load_run(tmp_path / "evil.ckpt")
    assert not (tmp_path / "marker").exists()


@pytest.mark.slow  # a subprocess: left out of mutation runs (bench/mutation.sh)
@pytest.mark.parametrize("script", ["train.py", "eval.py", "generate.py", "predict.py"])
def test_a_payload_checkpoint_never_runs_from_any_entry_point(synthetic_ptb, tmp_path, script):
    marker = tmp_path / "marker"
    if script == "train.py":  # planted in a run folder that a resume opens
        run = tmp_path / "run"
        (run / "checkpoints").mkdir(parents=True)
        evil = run / "checkpoints" / "last.ckpt"
        plant_payload(evil, marker)
        args = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, f"hydra.run.dir={run}", "ckpt_path=last"]
    else:
        evil = tmp_path / "shared.ckpt"
        plant_payload(evil, marker)
        args = [f"ckpt_path={evil}", f"hydra.run.dir={tmp_path / 'out'}"]
        if script == "predict.py":
            args.append("text=fine")
    line = one_line_error(run_script(script, *args, cwd=tmp_path), script)
    assert str(evil) in line and "refusing to load it" in line
    assert not marker.exists()


@pytest.mark.slow  # a subprocess: left out of mutation runs (bench/mutation.sh)
def test_data_errors_from_the_command_line_are_one_line(tmp_path):
    binary = tmp_path / "train.bin"
    binary.write_bytes(b"\x00\x01\x02 binary")
    text = tmp_path / "ok.txt"
    text.write_text("a b c\n")
    args = ["data=text_files", f"data.train={binary}", f"data.valid={text}", f"data.test={text}", *TINY_TRAINER,
            f"hydra.run.dir={tmp_path / 'out'}"]
    line = one_line_error(run_script("train.py", *args, cwd=tmp_path), "train.py")
    assert line == f"train.py: error: {binary} is a binary file, not UTF-8 text"
    assert not list((tmp_path / "out").rglob("*.ckpt"))


@pytest.mark.slow  # a subprocess: left out of mutation runs (bench/mutation.sh)
@pytest.mark.parametrize(("override", "expected"), [
    ("model.net.cell=lstmm", "model.net: unknown cell 'lstmm'; expected one of ['gru', 'lstm', 'naive_gru', "
                             "'naive_lstm', 'naive_rnn', 'rnn_relu', 'rnn_tanh']"),
    ("trainer.devices=0", "trainer: `Trainer(devices=0)` value is not a valid input using cpu accelerator."),
])
def test_a_config_node_that_cannot_be_built_is_one_line_naming_its_key(synthetic_ptb, tmp_path, override, expected):
    args = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, override, f"hydra.run.dir={tmp_path / 'out'}"]
    result = run_script("train.py", *args, cwd=tmp_path)
    assert one_line_error(result, "train.py") == f"train.py: error: {expected}"
    assert "Error executing job" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr


@pytest.mark.slow  # a subprocess: left out of mutation runs (bench/mutation.sh)
def test_a_missing_mandatory_value_is_one_line_naming_the_key(tmp_path):
    result = run_script("eval.py", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    expected = "eval.py: error: ckpt_path has no value: give it on the command line (ckpt_path=...)"
    assert result.returncode == 1 and result.stderr.strip() == expected


@pytest.mark.slow  # subprocesses: left out of mutation runs (bench/mutation.sh)
def test_a_key_added_with_plus_that_a_script_would_ignore_is_refused_and_a_bad_seed_is_one_line(tmp_path):
    missing = tmp_path / "missing.ckpt"
    result = run_script("eval.py", f"ckpt_path={missing}", "+data.batch_size=1", f"hydra.run.dir={tmp_path / 'out'}",
                        cwd=tmp_path)
    assert one_line_error(result, "eval.py") == ("eval.py: error: +data.batch_size=1: eval.py has no setting "
                                                 "data.batch_size and would ignore it (its settings: eval.py --help)")
    # the Trainer's own arguments pass on to it: this one goes on to the checkpoint
    result = run_script("eval.py", f"ckpt_path={missing}", "+trainer.benchmark=false",
                        f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert one_line_error(result, "eval.py") == f"eval.py: error: checkpoint {missing} does not exist"
    result = run_script("generate.py", f"ckpt_path={missing}", "+temp=0.5", cwd=tmp_path)
    assert one_line_error(result, "generate.py") == ("generate.py: error: +temp=0.5: generate.py has no setting temp "
                                                     "and would ignore it (its settings: generate.py --help)")
    result = run_script("train.py", "task=sine", "+lr=0.1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert one_line_error(result, "train.py") == ("train.py: error: +lr=0.1: train.py has no setting lr and would "
                                                  "ignore it (its settings: train.py --help)")
    result = run_script("pretrain_embeddings.py", "seed=abc", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert one_line_error(result, "pretrain_embeddings.py") == ("pretrain_embeddings.py: error: seed must be an "
                                                                "integer in [0, 4294967295], got 'abc'")


def test_instantiation_errors_keep_their_cause_and_other_errors_their_traceback(monkeypatch, capsys):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rnnlab.cli import one_line_errors

    cfg = OmegaConf.create({"data": {"vocab": {"_target_": "rnnlab.data.vocab.Vocabulary", "symbols": ["a"],
                                               "no_such_argument": 1}}})
    with pytest.raises(SystemExit) as exit_info, one_line_errors("train.py"):
        instantiate(cfg)
    assert exit_info.value.code == 1
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(r"train\.py: error: data\.vocab: .*unexpected keyword argument 'no_such_argument'", line)
    with pytest.raises(RuntimeError, match="^a bug$"), one_line_errors("train.py"):
        raise RuntimeError("a bug")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match="^bad value$"), one_line_errors("train.py"):
        raise ValueError("bad value")


def test_the_throughput_window_is_checked_at_the_start():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rnnlab import CONF_DIR
    from rnnlab.callbacks import TokenThroughput, batch_rows, batch_tokens

    with pytest.raises(ValueError, match=r"^window_size must be an integer >= 2, got 1$"):  # Lightning: an assert
        TokenThroughput(batch_size_fn=batch_rows, window_size=1)
    assert TokenThroughput(batch_size_fn=batch_rows, window_size=2).log_eval is False
    # the config's functions themselves, called every batch: Hydra's partials check their target policy every call
    built = instantiate(OmegaConf.load(CONF_DIR / "callbacks" / "default.yaml").throughput)
    assert built.batch_size_fn is batch_rows and built.length_fn is batch_tokens


def test_an_allocation_that_fails_is_one_line_saying_what_to_lower(capsys):
    """`train.py task=ptb data.batch_size=100000` asked for 29.8 GiB of logits and ended in a traceback."""
    from rnnlab.cli import one_line_errors, out_of_memory

    advice = ("failed; lower the batch size (data.batch_size, data.eval_batch_size; eval.py's batch_size), the window "
              "(data.bptt) or the model's size")
    with pytest.raises(SystemExit) as exit_info, one_line_errors("train.py"):
        torch.empty(2**50, dtype=torch.uint8)  # PyTorch's CPU allocator refuses a petabyte at once
    assert exit_info.value.code == 1
    line = capsys.readouterr().err
    assert line == f"train.py: error: out of memory: an allocation of 1048576.0 GiB on the CPU {advice}\n"
    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has 79 GiB in all")
    assert out_of_memory(gpu) == f"out of memory: an allocation of 20.00 GiB on the GPU {advice}"
    assert out_of_memory(RuntimeError("shape mismatch")) is None and out_of_memory(ValueError("can't allocate")) is None


def test_in_a_sweep_running_out_of_memory_is_an_outcome_of_the_jobs_values(monkeypatch, capsys):
    """An Optuna study goes on past a trial too large for the memory, even its first (`sweeps.record_job_error`)."""
    from rnnlab import sweeps
    from rnnlab.callbacks import TrainingDiverged
    from rnnlab.cli import one_line_errors

    recorded = []
    monkeypatch.setattr(sweeps, "record_job_error", lambda message, outcome: recorded.append(outcome) or 0)
    for error in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), ValueError("bad value"),
                  TrainingDiverged("training loss nan")):
        with one_line_errors("train.py", extra=(TrainingDiverged,), outcomes=(TrainingDiverged,)):  # a sweep's job 0
            raise error
    assert recorded == [True, False, True]
    assert capsys.readouterr().err.splitlines()[1] == "train.py: error: job 0: bad value"


@pytest.mark.parametrize(("task", "override", "message"), [
    ("ptb", "data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
    ("ptb", "data.eval_bptt=0", "data.eval_bptt must be an integer >= 1 or null, got 0"),
    ("charrnn", "data.bptt=-2", "data.bptt must be an integer >= 1, got -2"),
    ("sentiment", "data.max_len=0", "data.max_len must be an integer >= 1 or null, got 0"),
    ("sentiment", "data.batch_size=2.5", "data.batch_size must be an integer >= 1, got 2.5"),
    ("sentiment", "data.eval_batch_size=abc", "data.eval_batch_size must be an integer >= 1, got 'abc'"),
    ("sine", "data.horizon=0", "data.horizon must be an integer >= 1, got 0"),
    ("sentiment", "model.net.num_layers=0", "model.net.num_layers must be an integer >= 1, got 0"),
    ("sentiment", "model.net.embedding_dim=0", "model.net.embedding_dim must be an integer >= 1, got 0"),
    ("ptb", "model.net.embedding_dim=-3", "model.net.embedding_dim must be an integer >= 1 or null, got -3"),
    ("sentiment", "data.folds=1", "data.folds must be an integer >= 2 or null, got 1"),  # a ZeroDivisionError
    ("sentiment", "data.folds=10 data.fold=10", "data.fold must be in [0, 10), got 10"),
    ("sentiment", "data.fold=3", "data.fold=3 needs data.folds, the number of folds (e.g. data.folds=10)"),
    ("sentiment", "data.split=[0.5,0.5]", "data.split must be three non-negative fractions (train, valid, test) "
                                          "summing to 1, got [0.5, 0.5]"),  # a KeyError
    ("lm", "data.split=[0.5,0.6,-0.1]", "data.split must be three non-negative fractions (train, valid, test) "
                                        "summing to 1, got [0.5, 0.6, -0.1]"),
    ("sentiment", "data.lower=maybe", "data.lower must be true or false, got 'maybe'"),  # taken as true
    ("lm", "data.reverse=1", "data.reverse must be true or false, got 1"),
    ("sentiment", "data.max_size=0", "data.max_size must be an integer >= 1 or null, got 0"),  # every word <unk>
    ("lm", "data.min_freq=0", "data.min_freq must be an integer >= 1, got 0"),
    ("sentiment", "data.truncate_keep=middle", "data.truncate_keep must be 'start' or 'end', got 'middle'"),
    ("sine", "data.noise_std=-1", "data.noise_std must be >= 0, got -1"),  # before: noise all the same
    ("charrnn", "data.on_unknown=skip", "data.on_unknown must be 'unk' or 'error', got 'skip'"),
    ("ptb", "model.net.hidden_sizes=8",
     "model.net: hidden_sizes must be a list of layer sizes, e.g. [200, 200], got 8"),
    ("ptb", "model.net.hidden_sizes=[8,0]", "model.net: hidden_sizes[1] must be an integer >= 1, got 0"),
    ("ptb", "model.net.init_scale=-1", "model.net: init_scale must be > 0 or null (PyTorch's own start), got -1"),
])
def test_counts_in_the_data_and_network_configs_are_one_line_when_built(tmp_path, capsys, task, override, message):
    from hydra.utils import instantiate

    from rnnlab.cli import one_line_errors

    cfg = compose_config([f"task={task}", *override.split()], tmp_path)
    with pytest.raises(SystemExit), one_line_errors("train.py"):
        instantiate(cfg.data) if override.startswith("data.") else instantiate(cfg.model.net, vocab_size=10)
    assert capsys.readouterr().err.strip() == f"train.py: error: {message}"


@pytest.mark.parametrize(("override", "message"), [  # before the check: an AssertionError, ZeroDivisionErrors,
    ("trainer.max_epochs=1.5", "trainer.max_epochs must be an integer >= -1 or null, got 1.5"),  # and settings
    ("trainer.min_epochs=abc", "trainer.min_epochs must be an integer >= 0 or null, got 'abc'"),  # silently
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches must be an integer >= 1, got 0"),  # off
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch must be an integer >= 1 or null, got 0"),
    ("trainer.log_every_n_steps=-1", "trainer.log_every_n_steps must be an integer >= 0 or null, got -1"),
    ("trainer.gradient_clip_val=-1",
     "trainer.gradient_clip_val must be a number >= 0 (0: no clipping) or null, got -1"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval must be an integer >= 1 (batches), a fraction in "
                                     "(0, 1] of an epoch or null, got 0"),
    ("trainer.val_check_interval=1.5", "trainer.val_check_interval must be an integer >= 1 (batches), a fraction "
                                       "in (0, 1] of an epoch or null, got 1.5"),
    # the callbacks' own settings, at the start (before: accepted, a loss limit no loss is under, an AssertionError)
    ("callbacks.last_checkpoint.every_n_train_steps=-5", "callbacks.last_checkpoint: every_n_train_steps must be an "
                                                         "integer >= 0 or null (0 or null: only after epochs and when "
                                                         "stopped), got -5"),
    ("callbacks.stop_on_divergence.max_loss=-1", "callbacks.stop_on_divergence: max_loss must be > 0 (nats per "
                                                 "token) or null, got -1"),
])
def test_loop_settings_lightning_takes_unchecked_are_one_line(tmp_path, capsys, override, message):
    from rnnlab.cli import one_line_errors
    from rnnlab.train import build

    cfg = compose_config(["task=sine", override], tmp_path)
    with pytest.raises(SystemExit), one_line_errors("train.py"):
        build(cfg)
    assert capsys.readouterr().err.strip() == f"train.py: error: {message}"


@pytest.mark.parametrize(("override", "message"), [
    ("seed=abc", "seed must be an integer in [0, 4294967295], got 'abc'"),  # before: int()'s message, no name
    ("seed=-1", "seed must be an integer in [0, 4294967295], got -1"),  # before: NumPy's message
    ("test=maybe", "test must be true or false, got 'maybe'"),  # before: taken as true
    ("keep_freed_memory=maybe", "keep_freed_memory must be true or false, got 'maybe'"),
    ("extras.print_config=maybe", "extras.print_config must be true or false, got 'maybe'"),  # before: taken as true
    ("extras.rich_progress=1", "extras.rich_progress must be true or false, got 1"),
    ("tags=abc", "tags must be a list, e.g. tags=[baseline,ptb], got 'abc'"),  # before: tags a, b and c
    ("trainer.max_epochs=1.5", "trainer.max_epochs must be an integer >= -1 or null, got 1.5"),
    # every yes/no setting of every object the config builds, as its signature types it (before: taken as true)
    ("data.vary_bptt=maybe", "data.vary_bptt must be true or false, got 'maybe'"),
    ("model.net.tie_weights=1", "model.net.tie_weights must be true or false, got 1"),
    ("model.compile=yes", "model.compile must be true or false, got 'yes'"),
    ("trainer.enable_progress_bar=off", "trainer.enable_progress_bar must be true or false or null, got 'off'"),
    ("callbacks.model_checkpoint.enable_version_counter=no", "callbacks.model_checkpoint.enable_version_counter must "
                                                             "be true or false, got 'no'"),

    # and every integer and number setting (before: "model.net: '<' not supported between instances of 'str' ...")
    ("model.net.dropout=abc", "model.net.dropout must be a number, got 'abc'"),
    ("model.net.init_scale=abc", "model.net.init_scale must be a number or null, got 'abc'"),
    ("model.optimizer.lr=abc", "model.optimizer.lr must be a number, got 'abc'"),  # float | Tensor in torch
    ("data.eval_batch_size=2.5", "data.eval_batch_size must be an integer, got 2.5"),
    ("trainer.limit_train_batches=all", "trainer.limit_train_batches must be a number or null, got 'all'"),
])
def test_a_runs_own_settings_are_checked_before_any_file_is_written(tmp_path, override, message):
    from rnnlab.train import train

    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        train(compose_config(["task=ptb", *TINY_TRAINER, override], tmp_path))
    assert not (tmp_path / "run").exists()


def test_typed_parameters_are_the_switches_integers_and_numbers_through_kwargs():
    from rnnlab.checks import typed_parameters

    char = typed_parameters("rnnlab.data.lm_datamodule.CharDataModule")
    assert char["download"] == char["vary_bptt"] == ("switch", False) and char["batch_size"] == ("integer", False)
    assert typed_parameters("tests.test_errors.typed") == {
        "a": ("switch", False), "b": ("switch", True), "c": ("switch", True), "d": ("integer", False),
        "g": ("number", False), "h": ("number", True), "i": ("number", False)}
    assert typed_parameters("torch.optim.SGD")["lr"] == ("number", False)
    assert typed_parameters("no.such.module.Thing") == {}


def typed(a: bool, b: bool | None, c: Optional[bool], d: int, e: bool | int, f=True, g: float = 0.0,  # noqa: UP045
          h: int | float | None = None, i: float | torch.Tensor = 1.0, j: str | int = 1):
    """For the test above: a, b and c are switches, d an integer, g, h and i numbers; e, f and j none of these."""


@pytest.mark.parametrize(("lr", "cause"), [("abc", "'<=' not supported"), (-1.0, "Invalid learning rate: -1.0")])
def test_an_optimizer_setting_of_the_wrong_type_or_range_is_named(lr, cause):
    import functools

    from rnnlab.optim import configure_optimizers

    with pytest.raises(ValueError, match=rf"^model\.optimizer: {re.escape(cause)}"):
        configure_optimizers(torch.nn.Linear(2, 2), functools.partial(torch.optim.Adam, lr=lr))


@pytest.mark.parametrize(("scheduler", "message"), [
    (("CosineAnnealingLR", {"T_max": 0}), r"^model\.scheduler\.T_max \(epochs; trainer\.max_epochs by default\) must "
                                          r"be an integer >= 1, got 0$"),  # before: ZeroDivisionError at a step
    (("StepLR", {"size": 2}), r"^model\.scheduler: .*unexpected keyword argument 'size'"),
])
def test_a_scheduler_setting_of_the_wrong_type_or_range_is_named(scheduler, message):
    import functools

    from rnnlab.optim import configure_optimizers

    name, kwargs = scheduler
    with pytest.raises(ValueError, match=message):
        configure_optimizers(torch.nn.Linear(2, 2), functools.partial(torch.optim.Adam, lr=0.1),
                             functools.partial(getattr(torch.optim.lr_scheduler, name), **kwargs))


def lm_files(tmp_path, train_text: str, valid_text: str = "w1 w2\n"):
    files = {"train": tmp_path / "train.txt", "valid": tmp_path / "valid.txt", "test": tmp_path / "test.txt"}
    files["train"].write_text(train_text)
    files["valid"].write_text(valid_text)
    files["test"].write_text("w1 w2\n")
    return ["data=text_files", *(f"data.{k}={v}" for k, v in files.items()), *TINY_TRAINER], files


def test_an_empty_training_file_is_named_not_its_unknown_words(tmp_path):
    overrides, files = lm_files(tmp_path, "\n\n", " ".join(f"v{i}" for i in range(1747)) + "\n")
    with pytest.raises(DataFileError, match=f"^{files['train']} has no words: expected text"):
        train(compose_config(overrides, tmp_path))


def test_unknown_words_list_twenty_and_the_count(tmp_path):
    overrides, files = lm_files(tmp_path, "w1 w2 w3\n", " ".join(f"v{i:03d}" for i in range(30)) + "\n")
    with pytest.raises(UnknownSymbolError) as err:
        train(compose_config(overrides, tmp_path))
    message = str(err.value)
    assert message.startswith(f"{files['valid']}: 30 symbol(s) not in the vocabulary: 'v000', 'v001'")
    assert "'v019' and 10 more (the training file has no <unk>: write rare words as <unk> in every file" in message
    assert message.endswith("task=lm data.path=<file or folder>, which keeps a vocabulary of its own)")
    assert "v020" not in message


def test_a_split_too_short_for_its_batch_names_the_split_and_the_setting(tmp_path):
    overrides, _ = lm_files(tmp_path, "w1 w2 w1 w2\n" * 50, "w1 w2 w1\n")
    with pytest.raises(ValueError, match=r"^the valid split: a stream of 4 tokens is too short for 10 rows "
                                         r"\(lower data.eval_batch_size, or give the split more text\)$"):
        train(compose_config([*overrides, "data.eval_batch_size=10"], tmp_path))


def test_non_utf8_text_names_the_file_and_byte(tmp_path):
    overrides, files = lm_files(tmp_path, "w1 w2\n")
    files["train"].write_bytes("w1 caf\xe9 w2\n".encode("latin-1"))
    with pytest.raises(DataFileError, match=rf"^{files['train']} is not UTF-8 text \(byte 6"):
        train(compose_config(overrides, tmp_path))


def test_empty_or_all_filtered_sentiment_training_split_is_named(tmp_path):
    reviews, labels = tmp_path / "reviews.txt", tmp_path / "labels.txt"
    reviews.write_text("!!!\n...\n?\n" * 4)
    labels.write_text("positive\nnegative\npositive\n" * 4)
    overrides = ["task=sentiment", "data=imdb", "data.imdb_layout=reviews_labels", f"data.reviews_file={reviews}",
                 f"data.labels_file={labels}", "model/embeddings=none", *TINY_TRAINER]
    with pytest.raises(DataFileError, match=f"the training split is empty: no text with words in {reviews}"):
        train(compose_config(overrides, tmp_path))


def test_unknown_symbol_error_message_is_bounded():
    vocab = Vocabulary(["a", "b"])
    with pytest.raises(UnknownSymbolError, match=r"^500 symbol\(s\) not in the vocabulary: .* and 480 more$"):
        vocab.encode([f"x{i}" for i in range(500)])


def test_logger_none_works_with_the_default_callbacks(synthetic_ptb, tmp_path):
    metrics = train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "logger=none"], tmp_path))
    assert metrics["test/ppl"] > 1 and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_stale_part_files_from_a_killed_save_are_cleaned_on_the_next_save(synthetic_ptb, tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".last.ckpt.abc123.part", folder / ".last.ckpt.def456.part"
    for part in (stale, fresh):
        part.write_bytes(b"half a checkpoint")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    (folder / ".hold").write_text("")  # a folder with files but no checkpoint is not another run's
    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    assert not stale.exists() and fresh.exists()  # a recent one may belong to a save still running
    assert read_checkpoint(folder / "last.ckpt")["global_step"] == 4


def test_csv_metrics_of_a_resumed_run_keep_the_rows_before_the_stop(synthetic_ptb, tmp_path):
    base = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false", "trainer.log_every_n_steps=1"]
    train(compose_config(base, tmp_path))
    train(compose_config([*base, "trainer.max_epochs=2", "ckpt_path=last"], tmp_path))
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epochs = {int(r["epoch"]) for r in rows if r.get("val/loss")}
    assert epochs == {0, 1}
    assert sorted({int(r["step"]) for r in rows if r.get("train/loss")}) == list(range(8))


def test_pickle_error_is_not_masked_for_a_truncated_file(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}, "rnnlab": {"config": {}}}, good)
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="cut.ckpt is not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "cut.ckpt")
    assert isinstance(pickle.UnpicklingError(), Exception)


def plain(value) -> bool:
    """Tensors and plain containers of plain values only."""
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (torch.Tensor, str, int, float, bool))


def test_checkpoints_hold_tensors_and_plain_data_only(synthetic_ptb, tmp_path):
    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / name)
        assert plain(ckpt), name
        assert not any(k.startswith("hyper_parameters") for k in ckpt)
        assert ckpt["rnnlab"]["config"]["model"]["net"]["_target_"] == "rnnlab.models.lm.RNNLM"


def test_non_finite_weights_are_never_written_over_a_checkpoint(tmp_path):
    from rnnlab.checkpoint import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io_ = AtomicCheckpointIO()
    io_.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "rnnlab": {"config": {}}}, path)
    good = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"refusing to write .*last.ckpt: non-finite weights in \['w'\]"):
        io_.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, path)
    assert path.read_bytes() == good and not list(tmp_path.glob(".*.part"))


def test_a_full_disk_is_named_as_the_cause(tmp_path, monkeypatch):
    import errno

    from rnnlab.data import download as dl

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl.shutil, "copyfileobj", full)
    remote = dl.RemoteFile("x/file.txt", "file:///dev/null", None)
    with pytest.raises(DataFileError, match=f"cannot write {tmp_path / 'x' / 'file.txt'}: no space left on the device"):
        dl.fetch(remote, tmp_path)
    assert list((tmp_path / "x").iterdir()) == []


def test_a_checkpoint_save_on_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError ("unexpected pos ..."); the save names the file and the
    cause, removes its temporary file and leaves the last good checkpoint; other errors pass through."""
    import collections
    import errno

    from rnnlab import files
    from rnnlab.checkpoint import AtomicCheckpointIO
    from rnnlab.cli import one_line_errors

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    good = path.read_bytes()

    def cut_short(obj, tmp):
        open(tmp, "wb").write(b"PK")  # noqa: SIM115
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(files.torch, "save", cut_short)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: usage(100 << 30, 100 << 30, 4096))
    with pytest.raises(files.WriteError) as err:
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    assert str(err.value) == f"cannot write {path}: no space left on the device (the previous file is unchanged)"
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    with pytest.raises(SystemExit), one_line_errors("train.py"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "new.ckpt")

    def read_only(obj, tmp):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.torch, "save", read_only)
    with pytest.raises(files.WriteError, match=r"new.ckpt: the folder is read-only$"):
        files.atomic_torch_save({}, tmp_path / "new.ckpt")
    monkeypatch.setattr(files.torch, "save", lambda obj, tmp: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="^a bug$"):
        files.atomic_torch_save({}, tmp_path / "new.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    (tmp_path / "out").mkdir()  # an output named as a folder (export.py output=<folder>): before, "Is a directory
    written = []  # (the previous file is unchanged)" once the whole file had been written beside it
    with pytest.raises(files.WriteError, match=rf"^cannot write {re.escape(str(tmp_path / 'out'))}: it is a folder; "
                                               r"give a file name \(e.g. .*/out/name\)$"):
        files.atomic_write(tmp_path / "out", written.append)
    assert written == [] and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "out"]


def test_written_files_get_the_users_umask_not_0600(tmp_path):
    import os

    from rnnlab.files import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "config.yaml", lambda tmp: open(tmp, "w").write("a: 1\n"))  # noqa: SIM115
    finally:
        os.umask(old)
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o644


def test_a_save_of_non_finite_weights_names_the_first_five(tmp_path):
    from rnnlab.checkpoint import AtomicCheckpointIO

    state = {f"w{i}": torch.tensor([float("nan")]) for i in range(7)} | {"ok": torch.ones(2)}
    with pytest.raises(CheckpointError) as err:
        AtomicCheckpointIO().save_checkpoint({"state_dict": state}, tmp_path / "x.ckpt")
    assert str(err.value) == (f"refusing to write {tmp_path / 'x.ckpt'}: non-finite weights in "
                              "['w0', 'w1', 'w2', 'w3', 'w4']")
    assert not (tmp_path / "x.ckpt").exists()


def test_lightning_reads_any_weights_only_checkpoint_and_rnnlab_needs_its_own_entry(tmp_path):
    from rnnlab.checkpoint import AtomicCheckpointIO

    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
    assert AtomicCheckpointIO().load_checkpoint(path)["epoch"] == 3  # e.g. a checkpoint of another Lightning run
    with pytest.raises(CheckpointError, match="no 'rnnlab' entry with the run's config"):
        read_checkpoint(path)


def test_a_gpu_trainer_without_a_cuda_device_is_one_line_before_anything_is_built(tmp_path, monkeypatch):
    from rnnlab.evaluate import evaluate
    from rnnlab.train import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU
    message = (f"^trainer.accelerator=gpu, but this PyTorch \\({re.escape(torch.__version__)}\\) sees no CUDA device; "
               r"use trainer=cpu \(or trainer=ddp trainer.accelerator=cpu\)$")
    with pytest.raises(ValueError, match=message):  # before: Lightning's "No supported gpu backend found!"
        train(compose_config(["task=sine", "trainer=gpu"], tmp_path))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=message):
        evaluate(compose_config(["ckpt_path=any.ckpt", "trainer=gpu"], tmp_path, "eval"))


def test_a_write_error_with_its_own_cause_is_not_called_a_full_disk(tmp_path, monkeypatch):
    """The free-space guess is for errors without an errno (torch.save's); /proc, say, has no free space and refuses
    files with ENOENT, which is the cause to name."""
    import collections
    import errno

    from rnnlab import files

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: usage(0, 0, 0))
    assert files.write_failure(OSError(errno.ENOENT, "No such file or directory"), tmp_path) == \
        "No such file or directory"
    assert files.write_failure(OSError(errno.ENOSPC, "No space left on device"), tmp_path) == \
        "no space left on the device"
    assert files.write_failure(RuntimeError("unexpected pos 64 vs 0"), tmp_path) == "no space left on the device"
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: usage(100 << 30, 0, 100 << 30))
    assert files.write_failure(RuntimeError("unexpected pos 64 vs 0"), tmp_path) == "unexpected pos 64 vs 0"


def test_reading_a_folder_as_a_text_file_says_so(tmp_path):
    from rnnlab.data.corpus import read_text

    with pytest.raises(DataFileError, match=f"^{re.escape(str(tmp_path))} is a folder, not a text file$"):
        read_text(tmp_path)
    with pytest.raises(DataFileError, match=f"^{re.escape(str(tmp_path / 'no.txt'))} does not exist$"):
        read_text(tmp_path / "no.txt")
