"""Loggers beyond TensorBoard (MLflow, W&B offline), run tags, the rich config print, multirun summaries,
the Optuna sweep and the parallel launchers."""

from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path

import lightning as L
import pytest
import yaml
from hydra.utils import instantiate

from rnnlab.sweeps import by_seed, job_results, write_summary
from rnnlab.train import objective, train
from tests.conftest import ROOT, TINY_TRAINER, compose_config, run_script, synthetic_overrides


def tiny(folder) -> list[str]:
    return [*synthetic_overrides(folder), *TINY_TRAINER, "test=false", "callbacks.text_samples=null"]


@pytest.mark.needs("mlflow")
def test_mlflow_logger_round_trips_metrics_params_and_tags(synthetic_ptb, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    metrics = train(compose_config([*tiny(synthetic_ptb), "logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                                    "tags=[baseline,tiny]", "trainer.log_every_n_steps=1"], tmp_path))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ptb")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["val/ppl"] == pytest.approx(metrics["val/ppl"], rel=1e-6)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1, 2, 3]  # every step of the 4
    assert run.data.params["model/net/hidden_sizes"] == "[16, 12]"
    assert run.data.tags["baseline"] == "true" and run.data.tags["tiny"] == "true"


def wandb_records(path) -> list:
    """The protobuf records of a W&B transaction log (`offline-run-*/run-*.wandb`): a 7-byte header, then
    LevelDB-log records (crc 4, length 2, type 1: full/first/middle/last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data, records, pending, pos, block = path.read_bytes(), [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


@pytest.mark.needs("wandb")
def test_wandb_offline_logger_writes_the_metrics_to_its_run_files(synthetic_ptb, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    metrics = train(compose_config([*tiny(synthetic_ptb), "logger=wandb", "tags=[tiny]"], tmp_path))
    import wandb

    wandb.finish()
    (log,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 60  # on a loaded machine W&B's writer process may still be flushing the run file
    while True:
        records = wandb_records(log)
        logged = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
                  for r in records if r.WhichOneof("record_type") == "history"]
        if any("val/ppl" in h for h in logged) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    val_ppl = [h["val/ppl"] for h in logged if "val/ppl" in h]
    assert val_ppl == [pytest.approx(metrics["val/ppl"], rel=1e-6)]
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert list(run.tags) == ["tiny"]
    updates = [item for r in records if r.WhichOneof("record_type") == "config" for item in r.config.update]
    config = {item.key or "/".join(item.nested_key): item.value_json for item in updates}
    assert json.loads(config["model"])["net"]["hidden_sizes"] == [16, 12]


@pytest.mark.needs("mlflow")
def test_tensorboard_and_mlflow_together(tmp_path):
    cfg = compose_config(["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri=sqlite:///{tmp_path}/m.db"],
                         tmp_path)
    loggers = [instantiate(c) for c in cfg.logger.values()]
    assert [type(x).__name__ for x in loggers] == ["TensorBoardLogger", "MLFlowLogger"]


def test_config_tree_is_printed_with_rich_and_the_yaml_kept_out_of_the_terminal(synthetic_ptb, tmp_path, capsys):
    train(compose_config(tiny(synthetic_ptb), tmp_path))
    out = capsys.readouterr().out
    assert "config" in out and "├── model" in out and "hidden_sizes" in out
    train(compose_config([*tiny(synthetic_ptb), "extras.print_config=false"], tmp_path / "plain"))
    assert "├── model" not in capsys.readouterr().out


def test_objective_names_the_missing_metric():
    assert objective({"val/ppl": 120.0}, "val/ppl") == 120.0
    assert objective({"val/ppl": 120.0}, None) is None
    with pytest.raises(ValueError, match=r"optimized_metric='val/acc' is not among the run's final metrics: "
                                         r"\['val/ppl'\]"):
        objective({"val/ppl": 120.0}, "val/acc")


def test_summary_lists_every_job_and_marks_failed_ones(tmp_path):
    for num, metrics in ((0, {"val/ppl": 120.5}), (1, None), (2, {"val/ppl": 99.25, "test/ppl": 98.0}), (3, None)):
        (tmp_path / str(num) / ".hydra").mkdir(parents=True)
        if num != 1:  # a job that failed before writing its config: its overrides are in its error record
            (tmp_path / str(num) / ".hydra" / "overrides.yaml").write_text(f"- seed={num}\n- data.bptt=20\n")
        if metrics:
            (tmp_path / str(num) / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "1" / "error.json").write_text(json.dumps({"error": "model.net.dropout must be a number, got 'x'",
                                                           "overrides": ["seed=1", "model.net.dropout=x"]}))
    rows = job_results(tmp_path)
    assert [r["job"] for r in rows] == [0, 1, 2, 3]
    assert [r.get("status") for r in rows] == [None, "failed", None, "no metrics"]  # 3: killed, say
    assert rows[1]["overrides"] == ["seed=1", "model.net.dropout=x"]
    table = write_summary(rows, tmp_path / "summary.csv")
    assert table.splitlines()[0].split() == ["job", "overrides", "status", "test/ppl", "val/ppl", "error"]
    assert "seed=2 data.bptt=20" in table.splitlines()[3] and "99.25" in table.splitlines()[3]
    assert re.search(r" failed +model\.net\.dropout must be a number, got 'x'$", table.splitlines()[2])
    with (tmp_path / "summary.csv").open() as f:
        written = list(csv.DictReader(f))
    assert [w["val/ppl"] for w in written] == ["120.5", "", "99.25", ""]
    assert [w["error"] for w in written] == ["", "model.net.dropout must be a number, got 'x'", "", ""]


class Boom(L.Callback):
    """Raises a bug's error (not one a user causes) when fit starts, if `fail`."""

    def __init__(self, fail: bool):
        self.fail = fail

    def on_fit_start(self, trainer, pl_module):
        if self.fail:
            raise ZeroDivisionError("planted bug")


@pytest.mark.slow
def test_a_job_that_hits_a_bug_fails_alone_with_its_traceback_in_its_log(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_script("train.py", "-m", "task=sine", "debug=fdr", "+callbacks.boom._target_=tests."
                        "test_sweeps_and_loggers.Boom", "+callbacks.boom.fail=false,true,false",
                        f"hydra.sweep.dir={sweep}", "extras.print_config=false", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert f"train.py: error: job 1: ZeroDivisionError: planted bug (its traceback: {sweep / '1' / 'train.log'})" \
        in lines
    assert lines[-1] == f"train.py: error: 1 of 3 jobs failed (job 1); their errors are in {sweep / 'summary.csv'}"
    log = (sweep / "1" / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and 'raise ZeroDivisionError("planted bug")' in log
    with (sweep / "summary.csv").open() as f:
        jobs = list(csv.DictReader(f))
    assert [(j["status"], j["error"], bool(j["val/mse"])) for j in jobs] == [
        ("", "", True), ("failed", "ZeroDivisionError: planted bug", False), ("", "", True)]


@pytest.mark.slow
def test_a_job_with_a_bad_setting_fails_alone_and_the_multirun_ends_with_status_1(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_script("train.py", "-m", "task=sine", "debug=fdr", "model.net.dropout=0.1,abc,0.2",
                        f"hydra.sweep.dir={sweep}", "extras.print_config=false", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert "train.py: error: job 1: model.net.dropout must be a number, got 'abc'" in lines
    assert lines[-1] == f"train.py: error: 1 of 3 jobs failed (job 1); their errors are in {sweep / 'summary.csv'}"
    with (sweep / "summary.csv").open() as f:
        jobs = list(csv.DictReader(f))
    assert [j["overrides"] for j in jobs] == [f"task=sine debug=fdr model.net.dropout={d} extras.print_config=False"
                                              for d in ("0.1", "abc", "0.2")]
    assert [j["status"] for j in jobs] == ["", "failed", ""]
    assert jobs[1]["error"] == "model.net.dropout must be a number, got 'abc'" and not jobs[1]["val/mse"]
    assert float(jobs[0]["val/mse"]) > 0 and float(jobs[2]["val/mse"]) > 0  # the job after the failed one ran


def multirun(tmp_path, *args: str):
    sweep = tmp_path / "sweep"
    result = run_script("train.py", "-m", *args, f"hydra.sweep.dir={sweep}", "logger=none",
                        f"paths.cache_dir={tmp_path / 'cache'}", cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep, result


@pytest.mark.slow
@pytest.mark.needs("hydra_plugins.hydra_optuna_sweeper", "optuna")
def test_optuna_sweep_runs_three_trials_and_returns_the_best(synthetic_ptb, tmp_path):
    sweep, result = multirun(tmp_path, "hparams_search=ptb_optuna", "hydra.sweeper.n_trials=3",
                             "hydra.sweeper.sampler.n_startup_trials=3", *tiny(synthetic_ptb),
                             "model.net.embedding_dim=8")
    with (sweep / "summary.csv").open() as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 3 and all(t["val/ppl"] for t in trials)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(float(t["val/ppl"]) for t in trials), rel=1e-5)
    # hidden_sizes and bptt are fixed by the command line's tiny model, which the sweeper keeps: it searches the rest
    assert set(best["best_params"]) == {"model.optimizer.lr", "model.net.dropout"}
    assert 0.3 <= best["best_params"]["model.optimizer.lr"] <= 3.0
    assert "multirun summary" in result.stdout + result.stderr


class FailWhileFileExists(L.Callback):
    """A user's error (a missing input, say) when the run with seed 2 starts, while the file `path` exists."""

    def __init__(self, path: str, seed: int):
        self.path, self.seed = Path(path), seed

    def on_fit_start(self, trainer, pl_module):
        if self.seed == 2 and self.path.exists():
            raise ValueError(f"{self.path} is in the way")


@pytest.mark.slow
def test_a_sweep_cut_short_continues_with_the_same_command_and_ckpt_path_auto(tmp_path):
    sweep, marker = tmp_path / "sweep", tmp_path / "marker"
    args = ["-m", "task=sine", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
            "seed=1,2", f"hydra.sweep.dir={sweep}", "ckpt_path=auto", "logger=none", "extras.print_config=false",
            "+callbacks.gate._target_=tests.test_sweeps_and_loggers.FailWhileFileExists",
            f"+callbacks.gate.path={marker}", "+callbacks.gate.seed=${seed}"]
    marker.touch()
    first = run_script("train.py", *args, cwd=tmp_path)
    assert first.returncode == 1 and (sweep / "1" / "error.json").is_file(), first.stderr[-3000:]
    with (sweep / "summary.csv").open() as f:
        before = list(csv.DictReader(f))
    marker.unlink()  # the cause fixed: the same command again
    again = run_script("train.py", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    logged = again.stdout + again.stderr
    assert "ckpt_path=auto: resuming from" in logged and "ckpt_path=auto: a new run" in logged
    with (sweep / "summary.csv").open() as f:
        after = list(csv.DictReader(f))
    assert not (sweep / "1" / "error.json").exists() and "status" not in after[0]
    # job 0, done, keeps its metrics (a resumed run that trains nothing logs only its test again); job 1 ran now
    assert {k: v for k, v in before[0].items() if k not in ("status", "error")} == after[0]
    assert float(after[0]["val/mse"]) > 0 and float(after[1]["val/mse"]) > 0 and before[1]["status"] == "failed"


@pytest.mark.slow
@pytest.mark.needs("hydra_plugins.hydra_optuna_sweeper", "optuna")
def test_a_diverged_trial_is_a_failed_trial_and_the_optuna_study_goes_on(synthetic_ptb, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_script("train.py", "-m", "hparams_search=ptb_optuna", "seed=2", "hydra.sweeper.n_trials=4",
                        "hydra.sweeper.sampler.n_startup_trials=4", *tiny(synthetic_ptb), "logger=none",
                        "callbacks.stop_on_divergence.max_loss=choice(0.001,100)", f"hydra.sweep.dir={sweep}",
                        f"paths.cache_dir={tmp_path / 'cache'}", cwd=ROOT, timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    with (sweep / "summary.csv").open() as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 4
    diverged = ["max_loss=0.001" in t["overrides"] for t in trials]
    assert 0 < sum(diverged) < 4  # seed 2 draws both
    for trial, failed in zip(trials, diverged):
        assert (trial["status"], bool(trial["val/ppl"])) == (("failed", False) if failed else ("", True))
        assert trial["error"].startswith("training loss ") == failed
        assert ("above callbacks.stop_on_divergence.max_loss=0.001" in trial["error"]) == failed
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(float(t["val/ppl"]) for t in trials if t["val/ppl"]), rel=1e-5)
    assert best["best_params"]["callbacks.stop_on_divergence.max_loss"] == 100


@pytest.mark.slow
@pytest.mark.needs("hydra_plugins.hydra_optuna_sweeper", "optuna")
def test_a_bad_setting_ends_an_optuna_study_at_its_first_trial_in_one_line(synthetic_ptb, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_script("train.py", "-m", "hparams_search=ptb_optuna", "hydra.sweeper.n_trials=3",
                        *tiny(synthetic_ptb), "data.batch_size=abc", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == "train.py: error: data.batch_size must be an integer, got 'abc'"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0"]  # every trial would fail the same way


def test_jobs_that_differ_only_in_the_seed_are_summarized_by_mean_and_standard_deviation(tmp_path):
    jobs = [("seed=1 cell=gru", {"val/ppl": 100.0}), ("seed=2 cell=gru", {"val/ppl": 110.0, "test/ppl": 1.0}),
            ("seed=1 cell=lstm", {"val/ppl": 90.0}), ("seed=2 cell=lstm", None),
            ("seed=3 cell=lstm", {"val/ppl": 94.0}), ("cell=rnn", {"val/ppl": 80.0}),
            ("seed=1 cell=tanh", {"val/ppl": 70.0})]
    for num, (overrides, metrics) in enumerate(jobs):
        (tmp_path / str(num) / ".hydra").mkdir(parents=True)
        (tmp_path / str(num) / ".hydra" / "overrides.yaml").write_text(
            "".join(f"- {o}\n" for o in [*overrides.split(), "data.bptt=20"]))
        if metrics:
            (tmp_path / str(num) / "metrics.json").write_text(json.dumps(metrics))
    # a group of one (cell=tanh) and a job without a seed are left out, and so is what every group shares
    rows = by_seed(job_results(tmp_path))
    assert [(r["overrides"], r["seeds"], r["failed"]) for r in rows] == [(["cell=gru"], 2, 0), (["cell=lstm"], 2, 1)]
    assert rows[0]["val/ppl"] == 105.0 and rows[0]["val/ppl_std"] == pytest.approx(math.sqrt(50))
    assert rows[0]["test/ppl"] == 1.0 and math.isnan(rows[0]["test/ppl_std"])  # one value: no spread
    assert rows[1]["val/ppl"] == 92.0 and rows[1]["val/ppl_std"] == pytest.approx(math.sqrt(8))
    table = write_summary(rows, tmp_path / "summary_by_seed.csv", first=("overrides", "seeds", "failed"))
    assert table.splitlines()[0].split() == ["overrides", "seeds", "failed", "test/ppl", "test/ppl_std", "val/ppl",
                                             "val/ppl_std"]
    with (tmp_path / "summary_by_seed.csv").open() as f:
        written = list(csv.DictReader(f))
    assert [(w["overrides"], w["val/ppl"]) for w in written] == [("cell=gru", "105.0"), ("cell=lstm", "92.0")]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [
    pytest.param("joblib", marks=pytest.mark.needs("hydra_plugins.hydra_joblib_launcher")),
    pytest.param("submitit_local", marks=pytest.mark.needs("hydra_plugins.hydra_submitit_launcher"))])
def test_parallel_launchers_run_every_job_and_summarize(synthetic_ptb, tmp_path, launcher):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    sweep, _ = multirun(tmp_path, f"hydra/launcher={launcher}", *extra, "seed=1,2", *tiny(synthetic_ptb))
    with (sweep / "summary.csv").open() as f:
        jobs = list(csv.DictReader(f))
    assert ["seed=1" in jobs[0]["overrides"].split(), "seed=2" in jobs[1]["overrides"].split()] == [True, True]
    assert all(float(j["val/ppl"]) > 1 for j in jobs)
    assert jobs[0]["val/ppl"] != jobs[1]["val/ppl"]  # two different seeds really ran
    with (sweep / "summary_by_seed.csv").open() as f:
        (seeds,) = list(csv.DictReader(f))
    assert seeds["seeds"] == "2" and float(seeds["val/ppl"]) == pytest.approx(
        (float(jobs[0]["val/ppl"]) + float(jobs[1]["val/ppl"])) / 2)


@pytest.mark.parametrize(("tty", "rich", "expected"), [(True, True, "RichProgressBar"), (True, False, None),
                                                        (False, True, "LineProgress")])
def test_rich_progress_bar_in_a_terminal_and_one_line_per_n_steps_in_a_log(synthetic_ptb, tmp_path, monkeypatch,
                                                                          tty, rich, expected):
    import sys

    from lightning.pytorch.callbacks import ProgressBar

    from rnnlab.train import build

    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    cfg = compose_config([*synthetic_overrides(synthetic_ptb), "trainer.enable_progress_bar=true",
                          f"extras.rich_progress={str(rich).lower()}"], tmp_path)
    _, _, trainer = build(cfg)
    bars = [type(c).__name__ for c in trainer.callbacks if isinstance(c, ProgressBar)]
    assert bars == [expected or "TQDMProgressBar"]
