"""End-to-end runs with tiny limits: synthetic corpus, the real PTB files, eval, DDP, failures."""

import math
import re
import signal

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from rnnlab.callbacks import TrainingDiverged
from rnnlab.checkpoint import load_run, read_checkpoint
from rnnlab.checks import check_run
from rnnlab.data.lm_datamodule import TextFilesDataModule
from rnnlab.data.vectors import whiten
from rnnlab.evaluate import evaluate
from rnnlab.train import build, objective, train
from tests.conftest import TINY_TRAINER, compose_config, run_script, synthetic_overrides


def test_smoke_train_on_synthetic_corpus_then_eval_round_trip(synthetic_ptb, tmp_path):
    cfg = compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER], tmp_path)
    metrics = train(cfg)
    assert math.isfinite(metrics["val/ppl"]) and metrics["test/ppl"] == pytest.approx(math.exp(metrics["test/loss"]))
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert best.is_file() and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    run = load_run(best)
    assert run.config.data.bptt == 8 and len(run.vocab) == run.model.net.vocab_size
    eval_cfg = compose_config(["trainer.limit_test_batches=2", "trainer.enable_progress_bar=false",
                               f"ckpt_path={best}"], tmp_path, config_name="eval")
    assert evaluate(eval_cfg)["test/ppl"] == pytest.approx(metrics["test/ppl"], rel=1e-6)


def test_training_lowers_the_loss_and_is_reproducible_from_its_saved_config(synthetic_ptb, tmp_path):
    overrides = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "trainer.max_epochs=3",
                 "trainer.limit_train_batches=null", "trainer.limit_val_batches=null", "test=false",
                 "model/optimizer=adam", "model.optimizer.lr=0.01", "callbacks=none"]
    first = train(compose_config(overrides, tmp_path / "a"))
    saved = OmegaConf.load(tmp_path / "a" / "run" / ".hydra" / "config.yaml")
    assert saved.hydra.output_subdir is None  # Hydra's settings for a run from this file (--config-path)
    saved.paths.output_dir = str(tmp_path / "b")
    second = train(saved)
    assert (tmp_path / "b" / ".hydra" / "config.yaml").read_text() == \
        (tmp_path / "a" / "run" / ".hydra" / "config.yaml").read_text().replace(str(tmp_path / "a" / "run"),
                                                                              str(tmp_path / "b"))
    assert first["val/loss"] == pytest.approx(second["val/loss"], rel=1e-6)
    assert first["val/loss"] < math.log(42) - 1.0  # far better than uniform over the 42-symbol vocabulary


def test_accumulated_gradients_keep_the_carried_state(synthetic_ptb, tmp_path):
    cfg = compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "trainer.accumulate_grad_batches=2",
                          "trainer.limit_train_batches=6", "test=false"], tmp_path)
    datamodule, model, trainer = build(cfg)
    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(pl_module.states.get("train"))

    trainer.callbacks.append(Spy())
    trainer.fit(model, datamodule=datamodule)
    assert seen[0] is None and all(s is not None for s in seen[1:])
    assert trainer.global_step == 3  # six windows, one optimizer step per two


@pytest.mark.real_data
def test_smoke_train_on_real_ptb(tmp_path):
    cfg = compose_config([*TINY_TRAINER, "model.net.hidden_sizes=[32,32]", "model.net.embedding_dim=32"], tmp_path)
    metrics = train(cfg)
    # four SGD steps already learn word frequencies: below the uniform 10,000-word loss (measured 8.19 nats)
    assert metrics["test/loss"] < math.log(10_000) - 0.8 and metrics["test/ppl"] == pytest.approx(
        math.exp(metrics["test/loss"]), rel=1e-5)
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()


def test_non_finite_loss_stops_training_naming_the_step(synthetic_ptb, tmp_path):
    cfg = compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "model.optimizer.lr=1e38",
                          "model.net.init_scale=10", "trainer.gradient_clip_val=null"], tmp_path)
    with pytest.raises(TrainingDiverged, match=r"training loss nan at global step \d+, epoch 0, batch \d+"):
        train(cfg)
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # the first step already diverged: nothing to keep


def test_ctrl_c_stops_gracefully_and_keeps_a_checkpoint(synthetic_ptb, tmp_path):
    cfg = compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "trainer.limit_train_batches=10"],
                         tmp_path)
    datamodule, model, trainer = build(cfg)

    class Interrupt(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 3:
                raise KeyboardInterrupt

    trainer.callbacks.insert(0, Interrupt())
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown exits with status 1
            trainer.fit(model, datamodule=datamodule)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores further Ctrl-C
    assert trainer.interrupted and trainer.global_step == 4
    kept = load_run(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert torch.equal(kept.model.net.decoder.bias, model.net.decoder.bias)


def test_train_script_hydra_run_dir_saved_config(synthetic_ptb, tmp_path):
    args = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, f"hydra.run.dir={tmp_path / 'out'}", "seed=7"]
    result = run_script("train.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = OmegaConf.load(tmp_path / "out" / ".hydra" / "config.yaml")
    assert saved.seed == 7 and saved.data.bptt == 8
    assert (tmp_path / "out" / "checkpoints" / "best.ckpt").is_file()
    # the README's rerun: the saved config alone reproduces the run, weight for weight
    again = run_script("train.py", "--config-path", str(tmp_path / "out" / ".hydra"), "--config-name", "config",
                       f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    first, second = (load_run(tmp_path / d / "checkpoints" / "last.ckpt").model.state_dict() for d in ("out", "again"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    # rnnlab, not Hydra, writes .hydra/ (after the resume checks): the saved config carries hydra.output_subdir null
    assert sorted(p.name for p in (tmp_path / "again" / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml",
                                                                                "overrides.yaml"]
    # resuming with the saved config, no overrides to remember: Hydra no longer overwrites the run's config first
    original = (tmp_path / "out" / ".hydra" / "config.yaml").read_text()
    resumed = run_script("train.py", "--config-path", str(tmp_path / "out" / ".hydra"), "--config-name", "config",
                         f"hydra.run.dir={tmp_path / 'out'}", "ckpt_path=last", "trainer.max_epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "holds a run made with other settings (its files are kept as .hydra/*.1.yaml): trainer.max_epochs: 1 " \
           "there, 2 here\n" in resumed.stdout + resumed.stderr  # before: "ckpt_path: 'last' there, None here"
    assert (tmp_path / "out" / ".hydra" / "config.1.yaml").read_text() == original
    assert read_checkpoint(tmp_path / "out" / "checkpoints" / "last.ckpt")["global_step"] == 8  # 4 a epoch
    # without hydra.run.dir, a run from a saved config goes where train.py's runs go
    rerun = run_script("train.py", "--config-path", str(tmp_path / "out" / ".hydra"), "--config-name", "config",
                       "test=false", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    (folder,) = (tmp_path / "outputs" / "ptb" / "runs").iterdir()
    assert (folder / "checkpoints" / "last.ckpt").is_file()


def test_eval_multirun_over_checkpoints_writes_each_jobs_metrics_and_the_summary(synthetic_ptb, tmp_path):
    import csv
    import json

    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    folder = tmp_path / "run" / "checkpoints"
    direct = evaluate(compose_config([f"ckpt_path={folder / 'best.ckpt'}", "split=valid"], tmp_path, "eval"))
    sweep, missing = tmp_path / "evals", tmp_path / "none.ckpt"
    result = run_script("eval.py", "-m", f"ckpt_path={folder / 'best.ckpt'},{missing},{folder / 'last.ckpt'}",
                        "split=valid", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    # the job with no checkpoint fails alone: the sweep goes on, and ends with the summary and exit status 1
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"eval.py: error: job 1: checkpoint {missing} does not exist" in result.stderr.splitlines()
    assert result.stderr.splitlines()[-1] == (f"eval.py: error: 1 of 3 jobs failed (job 1); their errors are in "
                                              f"{sweep / 'summary.csv'}")
    jobs = [json.loads((sweep / str(job) / "metrics.json").read_text()) for job in (0, 2)]
    assert all(metrics.keys() == {"val/loss", "val/ppl"} for metrics in jobs)
    assert jobs[0] == pytest.approx(direct, rel=1e-6)
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["overrides"] for row in rows] == [f"ckpt_path={path} split=valid" for path in
                                                  (folder / "best.ckpt", missing, folder / "last.ckpt")]
    assert [(row["status"], row["error"]) for row in rows] == [
        ("", ""), ("failed", f"checkpoint {missing} does not exist"), ("", "")]
    assert [float(rows[i]["val/ppl"]) for i in (0, 2)] == pytest.approx([m["val/ppl"] for m in jobs], rel=1e-5)


def test_eval_text_file_reads_any_text_as_the_run_read_its_corpus(synthetic_ptb, tmp_path):
    from hydra.utils import instantiate

    from rnnlab.data.sine import SineDataModule
    from rnnlab.evaluate import use_text_file

    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    def evaluated(*overrides):
        return evaluate(compose_config([f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false", *overrides],
                                       tmp_path, "eval"))

    for split in ("test", "valid"):  # the run's own text as a file: the same numbers
        own = evaluated(f"split={split}", f"text_file={synthetic_ptb / f'ptb.{split}.txt'}")
        assert own == pytest.approx(evaluated(f"split={split}"), rel=1e-6)
    other = tmp_path / "other.txt"
    other.write_text("w1 w2 w3 zzz\n" + "w5 w6 w7 w8 w9 w10 w11\n" * 20)
    run = load_run(ckpt)
    datamodule = instantiate(run.config.data)
    datamodule.vocab = run.vocab
    assert run.vocab.decode(datamodule.encode_file(other)[:6].tolist()) == ["w1", "w2", "w3", "<unk>", "<eos>", "w5"]
    adapted = evaluated(f"text_file={other}", "adapt=dynamic")  # adapts over the file's text
    assert adapted.keys() == {"test/ppl", "test/ppl_dynamic"} and adapted["test/ppl_dynamic"] != adapted["test/ppl"]
    (synthetic_ptb / "ptb.train.txt").rename(tmp_path / "moved.txt")  # a text file needs none of the run's files
    on_other = evaluated(f"text_file={other}", "batch_size=1")
    assert on_other["test/ppl"] == pytest.approx(adapted["test/ppl"], rel=1e-5)  # both at batch 1
    assert on_other.keys() == {"test/loss", "test/ppl"} and 1 < on_other["test/ppl"] < len(run.vocab)  # < uniform
    with pytest.raises(FileNotFoundError, match="^data.train: .*ptb.train.txt does not exist"):
        evaluated()
    with pytest.raises(ValueError, match=r"^text_file: m.ckpt is not a language model \(SineDataModule\); text_file "
                                         r"gives a language model's perplexity on a text$"):
        use_text_file(SineDataModule(), str(other), "test", keep_corpus=False, where="m.ckpt")
    with pytest.raises(ValueError, match="^text_file is a language model's perplexity on a text; ensemble averages"):
        evaluated(f"text_file={other}", f"ensemble=[{ckpt}]")
    with pytest.raises(ValueError, match=r"^\S+last.ckpt holds a LanguageModel, not a sentiment model \(task="):
        evaluated(f"ensemble=[{ckpt}]")  # was a traceback: the PTB DataModule has no read_splits


def test_generate_names_the_lower_case_form_of_a_capitalized_prime_word(synthetic_ptb, tmp_path):
    import io

    from rnnlab.data.vocab import UnknownSymbolError
    from rnnlab.generate import generate

    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    settings = dict(ckpt_path=str(tmp_path / "run" / "checkpoints" / "last.ckpt"), prime="W1 w2 Zz", unknown="error",
                    length=5, temperature=1.0, sampling="multinomial", top_k=None, num_samples=1, seed=0,
                    device="cpu", print_prime=True)
    with pytest.raises(UnknownSymbolError, match=r"^prime: 2 symbol\(s\) not in the vocabulary: 'W1', 'Zz' \(the "
                                                 r"vocabulary has 'w1' in lower case; unknown=unk reads them as "
                                                 r"'<unk>'\)$"):
        generate(OmegaConf.create(settings), io.StringIO())


@pytest.mark.parametrize("content", [None, b"not a checkpoint", "plain-torch"])
def test_eval_script_bad_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "model.ckpt"
    if content == "plain-torch":
        torch.save({"weights": torch.zeros(2)}, path)
    elif content is not None:
        path.write_bytes(content)
    result = run_script("eval.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("eval.py: error: checkpoint " if content is None else "eval.py: error: ")
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr


def test_resume_from_a_checkpoint_continues_training(synthetic_ptb, tmp_path):
    base = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"]
    train(compose_config(base, tmp_path / "first"))
    last = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    train(compose_config([*base, "trainer.max_epochs=2", f"ckpt_path={last}"], tmp_path / "second"))
    resumed = read_checkpoint(tmp_path / "second" / "run" / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 2 and resumed["global_step"] == 8  # 4 steps restored + 4 new; two epochs done


def test_eval_batch_size_1_is_the_perplexity_of_the_whole_stream(synthetic_ptb, tmp_path):
    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    metrics = evaluate(compose_config(["trainer.enable_progress_bar=false", f"ckpt_path={ckpt}", "batch_size=1"],
                                      tmp_path, config_name="eval"))
    run = load_run(ckpt)
    tokens = TextFilesDataModule(*(str(synthetic_ptb / f"ptb.{s}.txt") for s in ("train", "valid", "test")),
                                 data_dir=".")
    tokens.setup()
    stream = tokens.corpus.splits["test"][None]  # one row: every position sees its whole history
    nll, state = 0.0, None
    with torch.no_grad():
        for start in range(0, stream.size(1) - 1, 8):  # the run's bptt
            x, y = stream[:, start:start + 8], stream[:, start + 1:start + 9]
            x = x[:, : y.size(1)]
            logits, state = run.model.net(x, state)
            nll += torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum").item()
    assert metrics["test/ppl"] == pytest.approx(math.exp(nll / (stream.size(1) - 1)), rel=1e-5)


def test_pretrain_embeddings_command_line(tmp_path):
    reviews, labels = tmp_path / "reviews.txt", tmp_path / "labels.txt"
    reviews.write_text("\n".join(["a good fine film", "a bad awful film", "the acting was superb"] * 20))
    labels.write_text("\n".join(["positive", "negative", "positive"] * 20))
    data = ["data=imdb", "data.imdb_layout=reviews_labels", f"data.reviews_file={reviews}",
            f"data.labels_file={labels}"]

    def vectors(name: str, *args: str) -> dict:
        out = tmp_path / f"{name}.pt"
        result = run_script("pretrain_embeddings.py", *data, "epochs=2", "embedding_dim=8", "subsample=0", *args,
                            f"output={out}", f"hydra.run.dir={tmp_path / name}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        return torch.load(out, weights_only=True)

    cbow = vectors("default")  # gensim's CBOW, one worker, whitened
    assert cbow["vectors"].shape == (len(cbow["itos"]), 8) and "film" in cbow["itos"]
    plain = vectors("plain", "whitened=false")
    assert plain["itos"] == cbow["itos"] and torch.allclose(cbow["vectors"], whiten(plain["vectors"]), atol=1e-6)
    sg = vectors("gensim", "method=gensim", "whitened=false")
    assert sg["itos"] == cbow["itos"] and not torch.equal(sg["vectors"], plain["vectors"])  # skip-gram, not CBOW
    own = vectors("torch", "method=torch", "whitened=false", "batch_size=64")
    assert own["itos"] == cbow["itos"] and own["vectors"].shape == cbow["vectors"].shape
    out = tmp_path / "default.pt"
    missing = run_script("pretrain_embeddings.py", *data[:2], f"data.reviews_file={tmp_path / 'none.txt'}",
                         f"data.labels_file={labels}", f"output={out}", cwd=tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    last_line = missing.stderr.strip().splitlines()[-1]
    assert last_line == f"pretrain_embeddings.py: error: {tmp_path / 'none.txt'} is missing"


def test_threads_setting_sets_the_intra_op_threads(synthetic_ptb, tmp_path):
    before = torch.get_num_threads()
    threads = 2 if before == 1 else 1  # a count other than the current one (1 under pytest-xdist)
    try:
        train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false", f"threads={threads}"],
                             tmp_path))
        assert torch.get_num_threads() == threads
        with pytest.raises(ValueError, match="threads must be an integer >= 1 or null, got 0"):
            train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "threads=0"], tmp_path / "b"))
    finally:
        torch.set_num_threads(before)


class FakeLibc:
    """Stands in for `ctypes.CDLL("libc.so.6")`: records `mallopt` calls and answers `answer`."""

    def __init__(self, answer: int = 1):
        self.calls, self.answer = [], answer

    def mallopt(self, option: int, value: int) -> int:
        self.calls.append((option, value))
        return self.answer


def test_keep_freed_memory_sets_glibcs_thresholds_once_per_process_setting(monkeypatch, synthetic_ptb, tmp_path):
    import platform

    from rnnlab import cli

    assert cli.keep_freed_memory() is (platform.libc_ver()[0] == "glibc")  # the real libc on this machine
    libc = FakeLibc()
    monkeypatch.setattr(cli.ctypes, "CDLL", lambda name: libc if name == "libc.so.6" else None)
    assert cli.keep_freed_memory() is True
    assert libc.calls == [(-3, 32 << 20), (-1, 1 << 30), (-2, 256 << 20)]  # mmap, trim thresholds, top pad
    assert cli.keep_freed_memory(False) is False and len(libc.calls) == 3
    libc.answer = 0  # glibc refused a value
    assert cli.keep_freed_memory() is False
    monkeypatch.setattr(cli.ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError("no libc.so.6")))
    assert cli.keep_freed_memory() is False  # another C library: nothing to set
    asked = []
    monkeypatch.setattr("rnnlab.train.keep_freed_memory", asked.append)
    for i, setting in enumerate(([], ["keep_freed_memory=false"])):
        train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false", *setting],
                             tmp_path / str(i)))
    assert asked == [True, False]


@pytest.mark.parametrize("print_config", [True, False])
def test_max_steps_from_the_command_line_and_a_quiet_fresh_run(synthetic_ptb, tmp_path, print_config):
    args = [*synthetic_overrides(synthetic_ptb), "trainer.max_steps=5", "trainer.max_epochs=10",
            "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false", "logger=csv", "test=false",
            f"hydra.run.dir={tmp_path / 'out'}", f"extras.print_config={str(print_config).lower()}"]
    result = run_script("train.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_checkpoint(tmp_path / "out" / "checkpoints" / "last.ckpt")["global_step"] == 5
    output = result.stdout + result.stderr
    for noise in ("💡 Tip", "litlogger", "litmodels", "weights_only` was not set", 'ckpt_path="last" is set',
                  "was called without a model"):
        assert noise not in output, noise
    assert f"run folder: {tmp_path / 'out'}" in output
    assert ("├── model" in output) is print_config and "\ntask_name: ptb" not in output  # the YAML: train.log only
    logged = (tmp_path / "out" / "train.log").read_text()
    assert "config:" in logged and "_target_: rnnlab.models.lm.RNNLM" in logged and "final metrics:" in logged
    assert "rnnlab.models.lm.RNNLM" in (tmp_path / "out" / "csv" / "hparams.yaml").read_text()


def test_debug_fast_dev_run_trains_one_batch_and_writes_no_checkpoint(synthetic_ptb, tmp_path):
    metrics = train(compose_config([*synthetic_overrides(synthetic_ptb), "debug=fdr"], tmp_path))
    assert math.isfinite(metrics["train/loss"]) and not list((tmp_path / "run").rglob("*.ckpt"))


def test_evaluation_window_length_changes_no_number(synthetic_ptb, tmp_path):
    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ppl = [evaluate(compose_config([f"ckpt_path={ckpt}", "batch_size=1", f"eval_bptt={n}",
                                    "trainer.enable_progress_bar=false"], tmp_path, config_name="eval"))["test/ppl"]
           for n in (8, 64, 500)]
    assert ppl[0] == pytest.approx(ppl[1], rel=1e-5) and ppl[0] == pytest.approx(ppl[2], rel=1e-5)


class TinyGRULM(torch.nn.Module):
    """A user's own network for the language-model task: ids (batch, time) -> logits and a state."""

    def __init__(self, vocab_size: int, size: int = 8):
        super().__init__()
        self.embed, self.rnn = torch.nn.Embedding(vocab_size, size), torch.nn.GRU(size, size, batch_first=True)
        self.out = torch.nn.Linear(size, vocab_size)

    def forward(self, ids, state=None):
        out, state = self.rnn(self.embed(ids), state)
        return self.out(out), state


def test_a_task_takes_any_network_given_as_model_net(synthetic_ptb, tmp_path):
    from omegaconf import open_dict

    cfg = compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER], tmp_path)
    with open_dict(cfg):
        cfg.model.net = {"_target_": "tests.test_train.TinyGRULM", "vocab_size": "???", "size": 8}
    metrics = train(cfg)
    run = load_run(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert isinstance(run.model.net, TinyGRULM) and math.isfinite(metrics["test/ppl"])


def test_output_that_is_not_a_terminal_gets_plain_progress_lines(synthetic_ptb, tmp_path):
    args = [*synthetic_overrides(synthetic_ptb), "trainer.max_epochs=2", "trainer.limit_train_batches=6",
            "trainer.limit_val_batches=2", "trainer.log_every_n_steps=3", "logger=csv", "test=false",
            f"hydra.run.dir={tmp_path / 'out'}"]
    result = run_script("train.py", *args, cwd=tmp_path)  # stdout and stderr are pipes
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "\r" not in output and "\x1b[A" not in output
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split("  ")[0].split(" (")[0] for line in lines] == [
        "epoch 0 step 3/6", "epoch 0 step 6/6", "epoch 0 validated", "epoch 1 step 3/6", "epoch 1 step 6/6",
        "epoch 1 validated"]
    assert "train/loss" in lines[0] and "val/ppl" in lines[2]


@pytest.mark.parametrize("task", ["ptb", "sentiment", "sine"])
def test_one_metric_naming_scheme_for_every_task(task, synthetic_ptb, tmp_path):
    import csv

    from tests.conftest import make_imdb_tree

    extra = {"ptb": [*synthetic_overrides(synthetic_ptb), "callbacks.throughput.window_size=2"],
             "sentiment": ["task=sentiment", "data=imdb", "model/embeddings=none", f"paths.data_dir={tmp_path / 'd'}",
                           "model.net.hidden_size=8", "model.net.embedding_dim=8", "data.batch_size=4"],
             "sine": ["task=sine", "model.plot=false", "model.net.hidden_sizes=[8]"]}[task]
    if task == "sentiment":
        make_imdb_tree(tmp_path / "d" / "imdb", per_class=10)
    train(compose_config([*extra, *TINY_TRAINER, "test=false", "trainer.log_every_n_steps=1"], tmp_path))
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        columns = set(next(csv.reader(f)))
    assert {"train/loss", "train/loss_epoch"} <= columns and not any(c.endswith("_step") for c in columns)
    assert not any("validate" in c or c.startswith("val/") and "per_sec" in c for c in columns)
    if task == "ptb":  # the sentiment and sine tasks leave throughput out
        assert "train/tokens_per_sec" in columns and "train/sequences_per_sec" in columns


def test_ptb_runs_log_text_samples_and_perplexity_per_step(synthetic_ptb, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "logger=tensorboard", "test=false",
                          "trainer.log_every_n_steps=1"], tmp_path))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    text = events.Tensors("samples/text_summary")[0].tensor_proto.string_val[0].decode()
    assert len(text.split()) >= 30 and all(w.startswith("w") or w == "<unk>" for w in text.split())  # <eos>: \n
    losses = {e.step: e.value for e in events.Scalars("train/loss")}
    for event in events.Scalars("train/ppl"):
        assert event.value == pytest.approx(math.exp(losses[event.step]), rel=1e-5)


def test_early_stopping_is_off_until_patience_is_set_then_stops_after_that_many_validations(tmp_path, capsys):
    from lightning.pytorch.callbacks import EarlyStopping

    from rnnlab.cli import one_line_errors

    base = ["task=sine", "model.net.hidden_sizes=[8]", "model.plot=false", *TINY_TRAINER, "trainer.max_epochs=6",
            "test=false"]
    _, _, trainer = build(compose_config(base, tmp_path / "default"))
    assert not any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    # the first validation sets the best; no later one improves on it by 1000, so two more end the run
    train(compose_config([*base, "callbacks.early_stopping.patience=2", "callbacks.early_stopping.min_delta=1000"],
                         tmp_path))
    state = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    stopper = next(v for k, v in state["callbacks"].items() if k.startswith("EarlyStopping"))
    assert stopper["stopped_epoch"] == 2 and stopper["wait_count"] == 2 and "val/mse" in next(
        k for k in state["callbacks"] if k.startswith("EarlyStopping"))
    with pytest.raises(SystemExit), one_line_errors("train.py"):
        build(compose_config([*base, "callbacks.early_stopping.patience=0"], tmp_path / "zero"))
    assert capsys.readouterr().err.strip() == ("train.py: error: callbacks.early_stopping: patience must be an integer "
                                               ">= 1, got 0")


@pytest.mark.parametrize(("override", "key"), [
    ("callbacks.model_checkpoint.monitor=val/mes", "callbacks.model_checkpoint.monitor"),
    ("callbacks.early_stopping.monitor=val/mes", "callbacks.early_stopping.monitor"),
    ("+callbacks.nt_asgd._target_=rnnlab.callbacks.NTASGD", "callbacks.nt_asgd.monitor"),  # val/loss: not sine's
    ("optimized_metric=val_mse", "optimized_metric"),
])
def test_a_monitored_metric_the_task_does_not_log_is_refused_at_the_sanity_check(override, key, tmp_path, capsys):
    from rnnlab.cli import one_line_errors

    overrides = ["task=sine", "model.net.hidden_sizes=[8]", "model.plot=false", *TINY_TRAINER, override,
                 "callbacks.early_stopping.patience=1"]
    with pytest.raises(SystemExit), one_line_errors("train.py"):
        train(compose_config(overrides, tmp_path))
    name = {"callbacks.nt_asgd.monitor": "val/loss", "optimized_metric": "val_mse"}.get(key, "val/mes")
    assert capsys.readouterr().err.strip() == (f"train.py: error: {key}={name!r} is not a metric this task logs; at "
                                               "validation it logs val/baseline_mse, val/mse")
    assert not (tmp_path / "run" / "checkpoints").exists()  # not a step was trained


def test_without_a_sanity_check_a_misnamed_monitor_is_refused_at_the_first_validation(tmp_path, capsys):
    from rnnlab.cli import one_line_errors

    overrides = ["task=sine", "model.net.hidden_sizes=[8]", "model.plot=false", *TINY_TRAINER, "trainer.max_epochs=3",
                 "trainer.num_sanity_val_steps=0", "optimized_metric=val/mes"]
    with pytest.raises(SystemExit), one_line_errors("train.py"):
        train(compose_config(overrides, tmp_path))
    assert capsys.readouterr().err.strip().startswith("train.py: error: optimized_metric='val/mes' is not a metric")
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["epoch"] == 0  # a crash keeps last.ckpt


def test_training_and_test_metrics_are_left_to_the_end_of_the_run(tmp_path):
    overrides = ["task=sine", "model.net.hidden_sizes=[8]", "model.plot=false", *TINY_TRAINER,
                 "optimized_metric=test/mse"]
    metrics = train(compose_config(overrides, tmp_path))
    assert objective(metrics, "test/mse") == metrics["test/mse"] > 0
    with pytest.raises(ValueError, match=r"^optimized_metric=test/mse is measured only with test=true; set it, or "
                                         "optimize a val/ metric$"):
        train(compose_config([*overrides, "test=false"], tmp_path / "no-test"))
    assert not (tmp_path / "no-test").exists()
    with pytest.raises(ValueError, match=r"^optimized_metric must be the name of a final metric such as val/ppl, "
                                         "got 3$"):
        check_run(compose_config([*overrides, "optimized_metric=3"], tmp_path))


def test_lr_finder_smoothing_removes_the_start_up_bias():
    from rnnlab.lr_finder import smoothed

    assert smoothed([3.0] * 5) == pytest.approx([3.0] * 5)  # a constant loss stays constant from the first point
    assert smoothed([1.0, 2.0]) == pytest.approx([1.0, (0.98 * 0.02 + 0.02 * 2) / (1 - 0.98 ** 2)])


def test_lr_suggestion_is_the_steepest_fall_per_decade_and_none_when_the_loss_never_fell():
    from rnnlab.lr_finder import suggest

    lrs = [10 ** (-4 + k / 10) for k in range(41)]  # 1e-4 .. 1
    # falls fastest at lr 1e-2, bottoms out near 0.3, then rises
    falling = [1.5 - 0.5 * math.tanh(3 * (math.log10(lr) + 2)) + 5 * max(0.0, math.log10(lr) + 0.5) ** 2
               for lr in lrs]
    suggested, lowest = suggest(lrs, falling)
    assert suggested == lrs[20] and lowest == lrs[falling.index(min(falling))] and lowest > suggested
    flat = [0.5] + [0.6 + 0.01 * k for k in range(40)]  # lowest at the start: it never fell
    assert suggest(lrs, flat) == (None, lrs[0])
    assert suggest(lrs[:12], falling[:12]) == (None, lrs[11])  # 10 + 1 points left out: one left
    assert suggest(lrs, [math.nan] * 41) == (None, None)


def test_lr_range_test_leaves_the_weights_as_they_were_and_writes_its_curve(tmp_path, caplog):
    import csv
    import json

    from rnnlab.lr_finder import find_lr, smoothed, suggest

    cfg = compose_config(["task=sine", "model.net.hidden_sizes=[8]", "model.plot=false", *TINY_TRAINER,
                          "trainer.max_epochs=20"], tmp_path)
    L.seed_everything(1234)
    datamodule, model, trainer = build(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = find_lr(trainer, model, datamodule, tmp_path, steps=40, min_lr=1e-4, max_lr=1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with open(tmp_path / "lr_find.csv") as f:
        rows = list(csv.DictReader(f))
    lrs, curve = [float(r["lr"]) for r in rows], [float(r["smoothed_loss"]) for r in rows]
    assert len(rows) == 40 == results["lr_find/steps"]
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in zip(lrs[1:], lrs[2:])]  # Lightning's schedule: min_lr, then steps of one ratio
    assert ratios == pytest.approx([10_000 ** (1 / 40)] * 38)
    assert curve == pytest.approx(smoothed([float(r["loss"]) for r in rows]))
    suggested, lowest = suggest(lrs, curve)
    assert suggested is not None  # this seed's loss falls before it rises
    assert results == {"lr_find/steps": 40.0, "lr_find/min_loss_lr": pytest.approx(lowest),
                       "lr_find/suggested_lr": pytest.approx(suggested)}
    assert (tmp_path / "lr_find.png").stat().st_size > 0
    assert not list(tmp_path.rglob("*.ckpt"))  # the test's own checkpoint is gone, no other was written

    # as a run: in place of training, from the command line's settings; too short an epoch ends it early
    with caplog.at_level("INFO", logger="rnnlab.lr_finder"):
        metrics = train(compose_config(["task=sine", "model.net.hidden_sizes=[8]", *TINY_TRAINER,
                                        "trainer.max_epochs=2", "lr_find.steps=20"], tmp_path / "run1"))
    assert metrics == {"lr_find/steps": 8.0, "lr_find/min_loss_lr": pytest.approx(metrics["lr_find/min_loss_lr"])}
    assert json.loads((tmp_path / "run1" / "run" / "metrics.json").read_text()) == metrics
    assert "the range test stopped after 8 of 20 steps: trainer.max_epochs ran out (raise it)" in caplog.text
    assert "too few points for a suggestion" in caplog.text
    assert not (tmp_path / "run1" / "run" / "checkpoints").exists()
    assert not (tmp_path / "run1" / "run" / "sine_predictions.png").exists()  # the plot of a trained model only


@pytest.mark.parametrize(("overrides", "message"), [
    (["lr_find.steps=5"], "lr_find.steps must be at least 13 (the suggestion leaves out the first 10 and the last "
                          "1), got 5"),
    (["lr_find.steps=50", "lr_find.min_lr=0"], "lr_find.min_lr must be a number > 0, got 0"),
    (["lr_find.steps=50", "lr_find.max_lr=1e-7"], "lr_find.max_lr must be above lr_find.min_lr, got 1e-07 and "
                                                  "1e-06"),
    (["lr_find.steps=50", "ckpt_path=x.ckpt"], "lr_find tests learning rates from the initial weights: not with "
                                               "ckpt_path"),
    (["lr_find.steps=50", "debug=fdr"], "lr_find does not run under trainer.fast_dev_run (debug=fdr): Lightning "
                                        "skips the range test"),
])
def test_lr_find_settings_are_checked_before_any_file_is_written(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        train(compose_config(["task=sine", *overrides], tmp_path))
    assert not (tmp_path / "run").exists()


def test_gradient_norm_is_logged_before_clipping_with_the_share_of_steps_clipped(tmp_path):
    import csv

    class Probe(L.Callback):  # the norm computed here, at the same hook, before Lightning clips
        def __init__(self):
            self.norms = []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
            self.norms.append(float(torch.cat(grads).norm()))

    def run(overrides: list[str], folder) -> tuple[list[dict], list[float]]:
        cfg = compose_config(["task=sine", "model.net.hidden_sizes=[8]", "model.plot=false", *TINY_TRAINER,
                              "trainer.max_epochs=2", "trainer.log_every_n_steps=2", *overrides], folder)
        probe = Probe()
        L.seed_everything(cfg.seed)
        datamodule, model, trainer = build(cfg, extra_callbacks=[probe])
        trainer.fit(model, datamodule=datamodule)
        with open(folder / "run" / "csv" / "metrics.csv") as f:
            return list(csv.DictReader(f)), probe.norms

    rows, norms = run(["trainer.gradient_clip_val=1e-6"], tmp_path / "clipped")
    assert len(norms) == 8
    logged = {int(r["step"]): float(r["train/grad_norm"]) for r in rows if r.get("train/grad_norm")}
    assert logged == pytest.approx({k: norms[k] for k in (1, 3, 5, 7)}, rel=1e-5)  # the logged steps
    assert min(logged.values()) > 1e-3  # not the clipped norm
    assert [float(r["train/clip_fraction"]) for r in rows if r.get("train/clip_fraction")] == [1.0, 1.0]  # per epoch

    # every step measured, every 4th written: the share clipped is exact
    rows, norms = run(["trainer.gradient_clip_val=0.1", "callbacks.grad_norm.every_n_steps=1",
                       "trainer.log_every_n_steps=4"], tmp_path / "every")
    logged = {int(r["step"]): float(r["train/grad_norm"]) for r in rows if r.get("train/grad_norm")}
    assert logged == pytest.approx({3: norms[3], 7: norms[7]}, rel=1e-5)
    shares = [float(r["train/clip_fraction"]) for r in rows if r.get("train/clip_fraction")]
    assert shares == pytest.approx([sum(n > 0.1 for n in norms[:4]) / 4, sum(n > 0.1 for n in norms[4:]) / 4])

    rows, _ = run(["trainer.gradient_clip_val=null"], tmp_path / "free")
    assert "train/clip_fraction" not in rows[0] and any(r.get("train/grad_norm") for r in rows)
