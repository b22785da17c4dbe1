"""The bench scripts run end to end on tiny settings and measure what they say they measure."""

from __future__ import annotations

import random
import re

from tests.conftest import run_script, synthetic_overrides


def write_imdb_tree(root, per_class: int = 20) -> None:
    """`root/imdb/aclImdb/{train,test}/{pos,neg}/*.txt`, reviews of 3 to 60 words."""
    rng = random.Random(0)
    for split in ("train", "test"):
        for label, words in (("pos", ["good", "fine", "great"]), ("neg", ["bad", "dull", "awful"])):
            folder = root / "imdb" / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                text = " ".join(rng.choice(words + ["film", "plot"]) for _ in range(rng.randint(3, 60)))
                (folder / f"{i}_5.txt").write_text(text)


def test_sentiment_speed_times_the_same_reviews_in_every_setting(tmp_path):
    write_imdb_tree(tmp_path / "data")
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
    assert rows["pad-400"][3] > 0.85 and rows["bucket"][3] < rows["pad-400"][3] / 2  # texts of 3-60 words
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
