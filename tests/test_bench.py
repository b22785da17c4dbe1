"""The bench scripts run end to end on tiny settings and measure what they say they measure."""

from __future__ import annotations

import re

from tests.conftest import make_imdb_tree, run_script, synthetic_overrides


def test_sentiment_speed_times_the_same_reviews_in_every_setting(tmp_path):
    make_imdb_tree(tmp_path / "data" / "imdb", per_class=20, extra_words=55)  # reviews of 6 to 61 words
    result = run_script(
        "bench/sentiment_speed.py", "--warmup", "0", "--pack-batches", "2",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}", "data.batch_size=4",
        "model.hidden_size=8", "model.embedding_dim=8", cwd=tmp_path,
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
        assert len(list(runs.iterdir())) == i + 1
        for folder in runs.rglob("checkpoints"):
            (folder / "interrupted.ckpt").write_text("not a checkpoint")
