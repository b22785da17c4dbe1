"""The bench scripts run end to end on tiny settings and measure what they say they measure."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest
import torch

from rnnlab.checkpoint import read_checkpoint
from tests.conftest import ROOT, make_imdb_tree, run_script, synthetic_overrides


def is_host_line(stdout: str) -> bool:
    """The speed benches print first the host they measured on: CPU model, logical CPUs, torch's vector code."""
    first = stdout.splitlines()[0]
    expected = f", {os.cpu_count()} logical CPUs, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    return first.startswith("host: ") and first.endswith(expected) and len(first) > len("host: ") + len(expected)


def test_sentiment_speed_times_the_same_reviews_in_every_setting(tmp_path):
    make_imdb_tree(tmp_path / "data" / "imdb", per_class=20, extra_words=55)  # reviews of 6 to 61 words
    result = run_script(
        "bench/sentiment_speed.py", "--warmup", "0", "--pack-batches", "2",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}", "data.batch_size=4",
        "model.net.hidden_size=8", "model.net.embedding_dim=8", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {name: (int(batches), int(reviews), int(words), float(padding)) for name, batches, reviews, words, padding
            in re.findall(r"round 1 (\S+) +[\d.]+ sequences/s over (\d+) batches \((\d+) reviews, (\d+) words\), "
                          r"padding fraction ([\d.]+)", result.stdout)}
    train_reviews = 36  # 40 training reviews less the 10% validation split
    assert rows["pad-400"][:3] == rows["bucket"][:3]  # one epoch each over the same reviews and words
    assert rows["pad-400"][:2] == (9, train_reviews)
    assert rows["pad-400"][3] > 0.85 and rows["bucket"][3] < rows["pad-400"][3] / 2  # texts of 6-61 words
    assert rows["bucket+pack"][:2] == (2, 8)
    assert re.search(r"round 1: bucket / pad-400 = [\d.]+x", result.stdout)


def test_ptb_throughput_never_resumes_an_earlier_run(synthetic_ptb, tmp_path):
    """A second run in the same folder trains from scratch, even beside an earlier run's interrupted.ckpt
    (which Lightning would otherwise resume from)."""
    args = ["--batches", "4", "--warmup", "1", "--rounds", "1", *synthetic_overrides(synthetic_ptb)]
    runs = tmp_path / "outputs" / "bench" / "ptb_throughput"
    for i in range(2):
        result = run_script("bench/ptb_throughput.py", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert re.search(r"ratio lightning/plain = [\d.]+", result.stdout)
        assert re.search(r"plain fraction of the ceiling: min \d+%", result.stdout)
        assert re.search(r"lightning fraction of the run's highest ceiling \(\d+ tokens/s\): min \d+%  median \d+%  "
                         r"max \d+%", result.stdout)
        assert is_host_line(result.stdout)
        assert len(list(runs.iterdir())) == i + 1
        for folder in runs.rglob("checkpoints"):
            (folder / "interrupted.ckpt").write_text("not a checkpoint")


def test_freed_memory_alternates_the_setting_in_fresh_processes(synthetic_ptb, tmp_path):
    result = run_script("bench/freed_memory.py", "--rounds", "2", "--batches", "4", "--warmup", "1",
                        *synthetic_overrides(synthetic_ptb), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    order = re.findall(r"round (\d) keep_freed_memory=(true|false) +lightning \d+ tokens/s, plain \d+ tokens/s",
                       result.stdout)
    assert order == [("1", "true"), ("1", "false"), ("2", "false"), ("2", "true")]
    for loop in ("lightning", "plain"):
        assert re.search(rf"{loop}: on/off by round [\d.]+, [\d.]+; min [\d.]+ median [\d.]+ max", result.stdout)


def test_charrnn_speed_reports_training_and_generation(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 400)
    result = run_script("bench/charrnn_speed.py", "--batches", "3", "--warmup", "1", "--rounds", "1",
                        f"data.text_file={text}", "data.batch_size=4", "data.bptt=16", "model.net.hidden_sizes=[16]",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"round 1 lstm +\d+ chars/s \(training\)", result.stdout)
    assert re.search(r"fused/naive = [\d.]+x", result.stdout)
    assert len(re.findall(r"generation, length +\d+: +\d+ chars/s", result.stdout)) >= 2


def test_precision_speed_times_each_variant(synthetic_ptb, tmp_path):
    result = run_script("bench/precision_speed.py", *synthetic_overrides(synthetic_ptb), "trainer=cpu",
                        "--batches", "3", "--warmup", "1", "--rounds", "1", "--variants", "32-true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"32-true +median +\d+ tokens/s +x1.00 vs 32-true", result.stdout)


def tiny_sentence_polarity(tmp_path: Path) -> Path:
    """A learnable `rt-polaritydata` folder under `tmp_path/data`: 40 positive and 40 negative sentences."""
    folder = tmp_path / "data" / "rt-polaritydata"
    folder.mkdir(parents=True)
    (folder / "rt-polarity.pos").write_text("a superb moving film\nwonderful acting\n" * 20)
    (folder / "rt-polarity.neg").write_text("a dull boring mess\nawful acting\n" * 20)
    return folder


def test_mr_folds_reports_each_fold_and_the_mean(tmp_path):
    tiny_sentence_polarity(tmp_path)
    result = run_script("bench/mr_folds.py", "task=sentiment", "model/embeddings=none",
                        f"paths.data_dir={tmp_path / 'data'}", "trainer.max_epochs=2", "model.net.hidden_size=8",
                        "model.net.embedding_dim=8", "logger=none", "trainer.enable_progress_bar=false", "--folds", "4",
                        "--only", "0", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folds = [float(a) for a in re.findall(r"fold \d: test accuracy ([\d.]+)", result.stdout)]
    mean = float(re.search(r"2 fold\(s\): mean test accuracy ([\d.]+)", result.stdout).group(1))
    assert len(folds) == 2 and mean == pytest.approx(sum(folds) / 2, abs=1e-4)


def test_mr_folds_averages_each_fold_with_the_same_fold_of_earlier_runs(tmp_path):
    tiny_sentence_polarity(tmp_path)
    tiny = ["task=sentiment", "model/embeddings=none", f"paths.data_dir={tmp_path / 'data'}", "trainer.max_epochs=1",
            "model.net.hidden_size=8", "model.net.embedding_dim=8", "logger=none", "--folds", "4"]
    first = run_script("bench/mr_folds.py", *tiny, "--only", "0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (earlier,) = tmp_path.glob("outputs/bench/mr_folds/*")
    result = run_script("bench/mr_folds.py", *tiny, "data.reverse=true", "--only", "0", "--ensemble-with",
                        str(earlier), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (later,) = set(tmp_path.glob("outputs/bench/mr_folds/*")) - {earlier}
    assert read_checkpoint(later / "0" / "checkpoints" / "best.ckpt")["rnnlab"]["config"]["data"]["reverse"] is True
    assert re.search(r"member1 +\S+/0/checkpoints/best.ckpt +acc [\d.]+", result.stdout)
    ensembled = float(re.search(r"fold 0: ensemble test accuracy ([\d.]+)", result.stdout).group(1))
    assert f"1 fold(s): mean ensemble test accuracy {ensembled:.4f} ± 0.0000" in result.stdout
    again = run_script("bench/mr_folds.py", "--ensemble-of", str(later), str(earlier), "--only", "0", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"fold 0: ensemble test accuracy {ensembled:.4f}" in again.stdout  # the same two, nothing trained
    assert set(tmp_path.glob("outputs/bench/mr_folds/*")) == {earlier, later}
    alone = run_script("bench/mr_folds.py", "--ensemble-of", str(later), "--only", "0", cwd=tmp_path)
    assert alone.returncode == 2 and "--ensemble-of takes two runs or more" in alone.stderr
    missing = run_script("bench/mr_folds.py", *tiny, "--only", "1", "--ensemble-with", str(earlier), cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.strip().endswith(f"--ensemble-with: no run of "
                                                                      f"{[str(earlier)]} has fold 1")
    for args, message in ((["--folds", "1"], "--folds must be at least 2, got 1"),  # before: a traceback
                          (["--only", "12"], "--only: fold(s) [12] not in 0..9 (--folds 10)"),  # and an odd one
                          ([*tiny, "model.net.dropout=abc", "--only", "0"], "model.net.dropout must be a number, got "
                                                                           "'abc'")):
        refused = run_script("bench/mr_folds.py", *args, cwd=tmp_path)
        assert refused.returncode in (1, 2) and refused.stderr.strip().splitlines()[-1].endswith(message), \
            refused.stderr[-2000:]


def test_mr_folds_fine_tunes_an_lm_on_each_folds_training_sentences_first(tmp_path):
    folder = tiny_sentence_polarity(tmp_path)
    data = [f"paths.data_dir={tmp_path / 'data'}", "logger=none", "trainer.max_epochs=1"]
    first = run_script("train.py", "task=lm", f"data.path={folder / 'rt-polarity.pos'}", "model.net.hidden_sizes=[8]",
                       "model.net.embedding_dim=8", "data.batch_size=2", "data.eval_batch_size=2", "data.bptt=4",
                       "callbacks.text_samples=null",
                       "test=false", *data, f"hydra.run.dir={tmp_path / 'first'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result = run_script("bench/mr_folds.py", "experiment=mr_ulmfit", "data.batch_size=8", *data, "--folds", "4",
                        "--only", "1", "--lm", "task=lm", "data=mr_text", "data.batch_size=2", "data.eval_batch_size=2",
                        "data.bptt=4",
                        f"init_from={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}", "callbacks.text_samples=null",
                        *data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"fold 1: LM test perplexity [\d.]+ \(\d+ s\)", result.stdout)
    assert re.search(r"fold 1: test accuracy [\d.]+", result.stdout)
    lm, = tmp_path.glob("outputs/bench/mr_folds/*/1/lm/checkpoints/best.ckpt")
    classifier = read_checkpoint(lm.parents[2] / "checkpoints" / "last.ckpt")["rnnlab"]["config"]
    assert classifier["encoder"]["ckpt_path"] == str(lm)  # the fold's own LM, by its absolute path
    assert read_checkpoint(lm)["rnnlab"]["config"]["data"]["fold"] == 1


def test_summarize_run_reads_the_csv_log(synthetic_ptb, tmp_path):
    run = tmp_path / "run"
    result = run_script("train.py", *synthetic_overrides(synthetic_ptb), "trainer.max_epochs=2",
                        "trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "logger=csv",
                        "trainer.enable_progress_bar=false", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = run_script("bench/summarize_run.py", str(run), cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert len(re.findall(r"epoch +\d  val loss [\d.]+", summary.stdout)) == 2
    assert re.search(r"test/ppl [\d.]+", summary.stdout)


def test_resume_soak_ends_equal_to_the_straight_run(synthetic_ptb, tmp_path):
    result = run_script("bench/resume_soak.py", "--kills", "2", *synthetic_overrides(synthetic_ptb),
                        "data.batch_size=4", "trainer.limit_train_batches=10", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(re.findall(r"stop +\d: SIG(KILL|INT) +at step +\d+ -> exit +(-9|130)", result.stdout)) == 2
    assert "final state EQUAL to the straight run" in result.stdout


@pytest.mark.real_data
def test_predict_memory_reports_peak_rss_per_length(tmp_path):
    result = run_script("bench/predict_memory.py", "model.net.hidden_size=8", "model.net.embedding_dim=8",
                        f"paths.cache_dir={tmp_path / 'cache'}", "--words", "30", "120", "--points", "10",
                        "--lines", "50", "--lm-lines", "3", "--lm-words", "40", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(re.findall(r"^ *\d+ words: peak RSS +\d+ MB", result.stdout, re.M)) == 2
    assert re.search(r"50 lines: peak RSS +\d+ MB .* 50 predictions", result.stdout)
    assert re.search(r"language model \(10,000 words\): scoring one word: peak RSS \d+ MB; 3 lines of 40 words: "
                     r"peak RSS \d+ MB \([+-]\d+ MB\), [\d.]+ s, 3 scores", result.stdout)


def test_generation_speed_compares_both_paths_with_the_sample_of_before_on_the_same_text(tmp_path):
    result = run_script("bench/generation_speed.py", "--length", "60", "--rounds", "2", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("same text: True") == 2 and is_host_line(result.stdout)
    for path in ("single-step", "forward"):
        assert re.search(rf"threads 1 {path} / before: min [\d.]+x  median [\d.]+x", result.stdout)


def test_eval_speed_times_both_loops_on_the_same_stream(synthetic_ptb, tmp_path):
    result = run_script("train.py", *synthetic_overrides(synthetic_ptb), "trainer.max_epochs=1",
                        "trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "logger=none", "test=false",
                        "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    result = run_script("bench/eval_speed.py", f"ckpt_path={ckpt}", "--rounds", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ppls = [float(p) for p in re.findall(r"ppl ([\d.]+)", result.stdout)]
    assert len(ppls) == 4 and max(ppls) == pytest.approx(min(ppls), rel=1e-5)  # both loops: the same perplexity
    assert is_host_line(result.stdout)
    assert re.search(r"eval.py / plain loop: min [\d.]+x  median [\d.]+x", result.stdout)


def test_parallel_runs_tabulates_each_jobs_validation_curve(synthetic_ptb, tmp_path):
    tiny = " ".join([*synthetic_overrides(synthetic_ptb), "trainer.limit_train_batches=3",
                     "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false", "test=false"])
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"# two tiny jobs\nTINY={tiny}\na: TINY trainer.max_epochs=2\n"
                    "b: TINY trainer.max_epochs=1 seed=7\n")
    result = run_script("bench/parallel_runs.py", "--jobs", str(jobs), "--out", str(tmp_path / "sweep"),
                        "--timeout", "300", cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    with (tmp_path / "sweep" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["epoch"], r["exit"]) for r in rows] == [("a", "1", "0"), ("a", "2", "0"), ("b", "1", "0")]
    assert all(float(r["val/ppl"]) > 1 for r in rows)
    assert "a              exit 0  val/ppl by epoch:" in result.stdout


def test_adapt_grid_runs_the_grid_in_workers_and_lr_0_is_plain(synthetic_ptb, tmp_path):
    from rnnlab.train import train
    from tests.conftest import TINY_TRAINER, compose_config

    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    result = run_script("bench/adapt_grid.py", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--lr", "0,0.01",
                        "--decay", "0,0.1", "--workers", "2", "--train-batches", "3", "--train-batch-size", "2",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("valid ppl"):]
    line = r"^(\w+) +(\S+) +(\S+) +(\d+) +([\d.]+) +([\d.]+)$"
    rows = {(rule, float(lr), float(decay)): float(ppl) for rule, lr, decay, _, ppl, _ in re.findall(line, table, re.M)}
    assert len(rows) == 5  # plain and the four settings, each once
    assert rows[("rms", 0.0, 0.0)] == rows[("rms", 0.0, 0.1)] == rows[("plain", 0.0, 0.0)]
    assert rows[("rms", 0.01, 0.0)] != rows[("plain", 0.0, 0.0)]
    ppls = [float(p) for p in re.findall(r"^\w+ +\S+ +\S+ +\d+ +([\d.]+)", table, re.M)]
    assert ppls == sorted(ppls)  # best first


def test_mutation_report_counts_and_classifies_survivors(tmp_path):
    """A stand-in `mutmut show` on PATH: an equivalent survivor (float's case), a gap, and the kill rate over
    the non-equivalent mutants."""
    import os
    import stat
    import subprocess
    import sys

    diffs = {"m.x_f__mutmut_1": ('x = float("-inf")', 'x = float("-INF")'),
             "m.x_g__mutmut_2": ("a = b + 1", "a = b - 1"),
             "m.x_digest_of__mutmut_3": ("while block := f.read(chunk):", "while block := f.read(None):"),
             "m.x_other__mutmut_4": ("while block := f.read(chunk):", "while block := f.read(None):")}
    fake = tmp_path / "bin" / "mutmut"
    fake.parent.mkdir()
    fake.write_text("#!" + sys.executable + "\nimport sys\nd = " + repr(diffs) + "\no, n = d[sys.argv[2]]\n"
                    "print('--- a.py\\n+++ a.py\\n-' + o + '\\n+' + n)\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    results = tmp_path / "results.txt"
    killed = "".join(f"    m.x_h__mutmut_{i}: killed\n" for i in range(8))
    results.write_text("    m.x_f__mutmut_1: survived\n    m.x_g__mutmut_2: survived\n    m.x_digest_of__mutmut_3: "
                       "survived\n    m.x_other__mutmut_4: survived\n" + killed
                       + "    m.x_h__mutmut_9: timeout\n")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "mutation_report.py"), str(results)], text=True,
                         capture_output=True, env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == ("mutants 13: killed 8, timed out 1, survived 4, no tests 0, not checked 0; "
                                          "equivalent (below) 2; killed or timed out 81.8% of the non-equivalent "
                                          "checked ones")
    assert "| m.x_f__mutmut_1 | survived | `x = float(\"-inf\")` | `x = float(\"-INF\")` | equivalent: float() reads" \
        in out.stdout
    assert "| m.x_g__mutmut_2 | survived | `a = b + 1` | `a = b - 1` | gap |" in out.stdout
    assert "| m.x_digest_of__mutmut_3 | survived | `while block := f.read(chunk):` | `while block := f.read(None):` " \
        "| equivalent: reading the whole file at once gives the same digest |" in out.stdout  # a rule for one function
    assert "| m.x_other__mutmut_4 | survived | `while block := f.read(chunk):` | `while block := f.read(None):` " \
        "| gap |" in out.stdout
