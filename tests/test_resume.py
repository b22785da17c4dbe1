"""The resume contract: last.ckpt is the latest state, an interrupted run resumed ends bit-identical to
the same run uninterrupted, and a run folder with checkpoints is never reused silently."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from rnnlab.checkpoint import read_checkpoint
from rnnlab.train import RunDirectoryError, shape_misfits, train
from tests.conftest import ROOT, TINY_TRAINER, compose_config, make_imdb_tree, run_script, synthetic_overrides


class SignalAt(L.Callback):
    """Sends `signum` to this process at the end of global step `step` (once)."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
            time.sleep(0.05)  # let the handler run


class CrashAt(L.Callback):
    """Raises inside the training batch that would make global step `step + 1`, after its forward pass."""

    def __init__(self, step: int):
        self.step = step

    def on_before_backward(self, trainer, pl_module, loss):
        if trainer.global_step == self.step:
            raise RuntimeError("planted crash")


def last_state(folder: Path) -> dict:
    ckpt = read_checkpoint(folder / "checkpoints" / "last.ckpt")
    return {"weights": ckpt["state_dict"], "optimizer": ckpt["optimizer_states"], "step": ckpt["global_step"],
            "schedulers": ckpt["lr_schedulers"]}


def assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["weights"].keys() == b["weights"].keys()
    for key in a["weights"]:
        assert torch.equal(a["weights"][key], b["weights"][key]), key
    for opt_a, opt_b in zip(a["optimizer"], b["optimizer"]):
        for key, state in opt_a["state"].items():
            for name, value in state.items():
                other = opt_b["state"][key][name]
                assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    assert a["schedulers"] == b["schedulers"]


def lm_overrides(folder: Path) -> list[str]:
    """PTB-style LM with dropout and varied window lengths: two epochs of ~45 windows, last.ckpt every 7 steps."""
    return [*synthetic_overrides(folder), *TINY_TRAINER, "trainer.max_epochs=2", "trainer.limit_train_batches=null",
            "trainer.limit_val_batches=3", "data.batch_size=8", "data.vary_bptt=true", "model.net.dropout=0.3",
            "test=false", "callbacks.last_checkpoint.every_n_train_steps=7", "model/optimizer=adam",
            "model.optimizer.lr=0.003", "model/scheduler=keep_then_decay", "model.scheduler.lr_lambda.keep_epochs=1"]


def run_interrupted(overrides: list[str], tmp_path: Path, stopper: L.Callback, expected_exit: type | None,
                    resume: list[str] | None = None) -> Path:
    """Train with `stopper` added, expect it to stop the run, then resume with ckpt_path=last (or `resume`, the
    overrides then) to the end."""
    cfg = with_stopper(compose_config(overrides, tmp_path), stopper)
    try:
        with pytest.raises(expected_exit or BaseException):
            train(cfg)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    train(compose_config(resume or [*overrides, "ckpt_path=last"], tmp_path))
    return tmp_path / "run"


STOPPERS: dict[str, L.Callback] = {}


def instantiate_stopper() -> L.Callback:
    return STOPPERS.pop("next")


def with_stopper(cfg: DictConfig, stopper: L.Callback) -> DictConfig:
    """`cfg` with `stopper` among its callbacks (instantiated through the config, as train() does)."""
    STOPPERS["next"] = stopper
    with open_dict(cfg):
        cfg.callbacks["stopper"] = {"_target_": "tests.test_resume.instantiate_stopper"}
    return cfg


@pytest.fixture
def straight_lm(synthetic_ptb, tmp_path) -> dict:
    train(compose_config(lm_overrides(synthetic_ptb), tmp_path / "straight"))
    return last_state(tmp_path / "straight" / "run")


@pytest.mark.parametrize(("step", "signum", "status"), [(10, signal.SIGINT, 130), (52, signal.SIGTERM, 143)])
def test_lm_interrupted_by_a_signal_mid_epoch_resumes_bit_identical(synthetic_ptb, tmp_path, straight_lm, step,
                                                                    signum, status):
    folder = run_interrupted(lm_overrides(synthetic_ptb), tmp_path / "cut", SignalAt(step, signum), SystemExit)
    assert_same_state(straight_lm, last_state(folder))


def test_lm_crash_mid_batch_keeps_the_state_before_the_batch_and_resumes_bit_identical(synthetic_ptb, tmp_path,
                                                                                       straight_lm):
    folder = run_interrupted(lm_overrides(synthetic_ptb), tmp_path / "crash", CrashAt(12), RuntimeError)
    assert_same_state(straight_lm, last_state(folder))


def test_ckpt_path_auto_starts_the_run_and_the_same_command_resumes_it_bit_identical(synthetic_ptb, tmp_path,
                                                                                     straight_lm):
    """A scheduler's requeue after a preemption: one command, run twice."""
    overrides = [*lm_overrides(synthetic_ptb), "ckpt_path=auto"]
    folder = run_interrupted(overrides, tmp_path / "cut", SignalAt(20, signal.SIGTERM), SystemExit, resume=overrides)
    assert_same_state(straight_lm, last_state(folder))
    first, second = (OmegaConf.load(folder / ".hydra" / name) for name in ("config.1.yaml", "config.yaml"))
    del first.callbacks["stopper"]  # the test's own; otherwise the same settings both times
    assert first == second
    (folder / "checkpoints" / "last.ckpt").unlink()  # a best.ckpt alone: no run to resume, and no fresh folder
    with pytest.raises(RunDirectoryError, match=r"already holds checkpoints \(best.ckpt\)"):
        train(compose_config(overrides, tmp_path / "cut"))


def test_interrupt_exit_status_and_checkpoint_step(synthetic_ptb, tmp_path):
    cfg = with_stopper(compose_config(lm_overrides(synthetic_ptb), tmp_path), SignalAt(10, signal.SIGINT))
    try:
        with pytest.raises(SystemExit) as stop:
            train(cfg)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert stop.value.code == 130
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 10
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": 10}]


def test_charrnn_interrupted_mid_epoch_resumes_bit_identical(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i % 7}: the quick brown fox jumps over the lazy dog.\n" for i in range(60)))
    overrides = ["task=charrnn", f"data.text_file={text}", *TINY_TRAINER, "trainer.max_epochs=2",
                 "trainer.limit_train_batches=null", "trainer.limit_val_batches=2", "data.batch_size=4",
                 "data.bptt=16", "model.net.hidden_sizes=[24]", "model.net.embedding_dim=null", "model.net.dropout=0.2",
                 "test=false", "callbacks.last_checkpoint.every_n_train_steps=5", "callbacks.text_samples=null"]
    train(compose_config(overrides, tmp_path / "straight"))
    folder = run_interrupted(overrides, tmp_path / "cut", SignalAt(8, signal.SIGINT), SystemExit)
    assert_same_state(last_state(tmp_path / "straight" / "run"), last_state(folder))


def test_sentiment_bucketed_interrupted_mid_epoch_resumes_bit_identical(tmp_path):
    make_imdb_tree(tmp_path / "data" / "imdb", per_class=40, extra_words=30)
    overrides = ["task=sentiment", "data=imdb", "model/embeddings=none", f"paths.data_dir={tmp_path / 'data'}",
                 *TINY_TRAINER, "trainer.max_epochs=2", "trainer.limit_train_batches=null",
                 "trainer.limit_val_batches=null", "data.batch_size=8", "data.batching=bucket", "data.chunk_batches=2",
                 "model.net.hidden_size=8", "model.net.embedding_dim=8", "model.net.dropout=0.3", "test=false",
                 "callbacks.last_checkpoint.every_n_train_steps=4", "callbacks.trajectories=null"]
    train(compose_config(overrides, tmp_path / "straight"))
    folder = run_interrupted(overrides, tmp_path / "cut", SignalAt(6, signal.SIGINT), SystemExit)
    assert_same_state(last_state(tmp_path / "straight" / "run"), last_state(folder))


def test_last_ckpt_holds_the_final_step_when_the_last_validation_is_worse(synthetic_ptb, tmp_path):
    overrides = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "trainer.max_epochs=3", "test=false",
                 "model.optimizer.lr=30", "callbacks.stop_on_divergence=null"]  # too high: validation gets worse
    train(compose_config(overrides, tmp_path))
    folder = tmp_path / "run" / "checkpoints"
    best, last = read_checkpoint(folder / "best.ckpt"), read_checkpoint(folder / "last.ckpt")
    assert last["global_step"] == 12 and best["global_step"] < 12


def test_a_folder_with_checkpoints_is_not_reused_without_ckpt_path(synthetic_ptb, tmp_path):
    overrides = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"]
    train(compose_config(overrides, tmp_path))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "checkpoints").iterdir()}
    with pytest.raises(RunDirectoryError, match=r"already holds checkpoints \(best.ckpt, last.ckpt\).*ckpt_path=last"):
        train(compose_config(overrides, tmp_path))
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "checkpoints").iterdir()} == before


def test_ckpt_path_last_without_a_last_checkpoint_is_an_error(synthetic_ptb, tmp_path):
    with pytest.raises(RunDirectoryError, match="there is no .*last.ckpt to resume from"):
        train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "ckpt_path=last"], tmp_path))
    with pytest.raises(RunDirectoryError, match=r"^ckpt_path=Auto: no such file; it takes a \.ckpt file, last \(this "
                                                r"run folder's last.ckpt\) or auto \(last where there is one, else a "
                                                r"new run\)$"):
        train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "ckpt_path=Auto"], tmp_path))
    assert not (tmp_path / "run" / ".hydra").exists()  # refused before anything is written


@pytest.mark.parametrize("bad", ["model.optimizer.lr=-1", "data.bptt=0"])  # fails in fit / building the data
def test_a_run_failing_before_its_first_step_leaves_no_checkpoint(synthetic_ptb, tmp_path, bad):
    from hydra.errors import InstantiationException

    with pytest.raises((ValueError, InstantiationException)) as err:
        train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, bad], tmp_path))
    assert isinstance(err.value.__cause__ if isinstance(err.value, InstantiationException) else err.value, ValueError)
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))


def test_a_second_process_in_the_same_run_folder_is_refused(synthetic_ptb, tmp_path):
    out = tmp_path / "out"
    args = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "trainer.max_epochs=100000",
            "trainer.max_time=00:00:01:00", f"hydra.run.dir={out}", "test=false"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
            time.sleep(0.2)
        second = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "ckpt_path=last"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1].startswith(f"train.py: error: {out} is in use by another process")
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 143, err[-2000:]


@pytest.mark.slow  # subprocesses: Hydra's own writing of .hydra/ is what this checks
def test_a_refused_resume_leaves_the_run_config_and_a_resumed_one_keeps_the_earlier(tmp_path):
    out = tmp_path / "out"
    common = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false", "logger=none",
              "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"]
    first = ["task=sine", "model.plot=false", "trainer.max_epochs=1"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return run_script("train.py", *args, *common, cwd=tmp_path)

    assert run(*first).returncode == 0
    hydra_dir = out / ".hydra"
    before = {p.name: p.read_text() for p in hydra_dir.iterdir()}
    assert sorted(before) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    ckpt, overrides = out / "checkpoints" / "last.ckpt", hydra_dir / "overrides.yaml"
    their_overrides = " ".join([*first, *common[:-1]])  # Hydra's own settings (hydra.run.dir) are not among them
    refusals = {  # before this check: Hydra overwrote .hydra/ first, then a traceback (another task, other sizes)
        ("ckpt_path=last",): f"ckpt_path: {ckpt} was trained with task_name=sine, this command has task_name=ptb",
        ("task=sine", "model.plot=false", "model.net.hidden_sizes=[8]", "ckpt_path=last"):
            f"ckpt_path: the weights of {ckpt} do not fit this run's network (model.net.hidden_sizes: [100] there, "
            "[8] here)",
    }
    for args, message in refusals.items():
        result = run(*args)
        assert result.returncode == 1
        expected = f"train.py: error: {message}; resume with the run's own overrides ({overrides}): {their_overrides}"
        assert result.stderr.strip().splitlines()[-1] == expected
        assert {p.name: p.read_text() for p in hydra_dir.iterdir()} == before
    resumed = run("task=sine", "model.plot=false", "trainer.max_epochs=2", "model.net.cell=lstm", "ckpt_path=last")
    assert resumed.returncode == 0
    # told which settings differ from the run's own, a forgotten override among them
    assert (f"{out} holds a run made with other settings (its files are kept as .hydra/*.1.yaml): trainer.max_epochs: "
            "1 there, 2 here\n") in resumed.stdout + resumed.stderr
    assert (hydra_dir / "config.1.yaml").read_text() == before["config.yaml"]
    assert (hydra_dir / "overrides.1.yaml").read_text() == before["overrides.yaml"]
    resumed = OmegaConf.load(hydra_dir / "config.yaml")
    assert resumed.trainer.max_epochs == 2 and resumed.ckpt_path is None  # retrains from the start, not a resume
    assert "ckpt_path=last" in OmegaConf.load(overrides)


def test_a_checkpoint_whose_vocabulary_does_not_fit_is_one_line_naming_the_first_misfit(synthetic_ptb, tmp_path):
    overrides = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false", "logger=[csv,tensorboard]"]
    train(compose_config(overrides, tmp_path))
    small = tmp_path / "small.txt"  # another training text, hence a vocabulary of 4 words (w1, w2, <unk>, <eos>)
    small.write_text("w1 w2 <unk>\n" * 50)
    resume = compose_config([*overrides, f"data.train={small}", f"data.valid={small}", "ckpt_path=last"], tmp_path)
    files = lambda: {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    with pytest.raises(RunDirectoryError, match=r"^ckpt_path: the weights of .*last.ckpt do not fit this run's network "
                       r"\(net.decoder.bias: \(42,\) there, \(4,\) here\); resume with the overrides that run was "
                       r"trained with$"):
        train(resume)
    # refused before any logger wrote: the loggers' hparams and events, .hydra/ (put back) and the checkpoints stay
    assert files() == before


def test_a_checkpoint_with_a_tensor_the_network_lacks_is_refused_before_any_logger_writes(synthetic_ptb, tmp_path):
    overrides = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false", "logger=[csv,tensorboard]"]
    train(compose_config(overrides, tmp_path))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["state_dict"]["extra.scale"] = torch.ones(3)  # outside net.: only Lightning's strict load saw it
    torch.save(checkpoint, last)
    files = lambda: {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    with pytest.raises(RunDirectoryError, match=r"^ckpt_path: the weights of .*last.ckpt do not fit this run's network "
                       r"\(extra.scale: \(3,\) there, absent here\); resume with the overrides"):
        train(compose_config([*overrides, "ckpt_path=last"], tmp_path))
    assert files() == before


def test_shape_misfits_names_every_tensor_whose_shape_differs_or_that_one_side_lacks():
    theirs = {"net.a": torch.zeros(2, 3), "net.b": torch.zeros(4), "net.gone": torch.zeros(1)}
    ours = {"a": torch.zeros(2, 3), "b": torch.zeros(5), "new": torch.zeros(2, 2)}
    assert shape_misfits(theirs, ours, "net.") == ["net.b: (4,) there, (5,) here", "net.gone: (1,) there, absent here",
                                                   "net.new: absent there, (2, 2) here"]
    unprefixed = {k.removeprefix("net."): v for k, v in theirs.items()}
    assert shape_misfits(theirs, dict(theirs)) == [] == shape_misfits(theirs, unprefixed, "net.")
