"""Peak memory (RSS) of `predict.py` on long texts: a bidirectional sentiment model, and a language model scoring
long lines.

A model of the sentiment task's default shape (BiLSTM 128 over 128-dim embeddings, max pooling) is trained for
one step on sentence polarity so that a real checkpoint exists; then `predict.py` runs as its own process on
texts of each length, and the peak RSS of that process is read from the kernel (`wait4`). Then the same for a
language model of `task=ptb`'s default shape (one step on PTB) scoring `input=` a file of long lines.

    python bench/predict_memory.py [--words 1000 10000 20000] [--points 200] [--lines 100000]
                                   [--lm-lines 64] [--lm-words 2000] [hydra overrides of the sentiment run ...]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from ptb_throughput import fresh_run_dir  # noqa: E402

from rnnlab import CONF_DIR  # noqa: E402
from rnnlab.checkpoint import load_run  # noqa: E402
from rnnlab.train import train  # noqa: E402


def checkpoint(folder: str, overrides: list[str]) -> Path:
    """A checkpoint after one training step of `overrides` (`task=...` first)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            *overrides[:1], "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
            "test=false", "logger=none", "trainer.enable_progress_bar=false", f"paths.output_dir={folder}",
            *overrides[1:]])
    train(cfg)
    return Path(folder) / "checkpoints" / "last.ckpt"


def peak_rss_mb(args: list[str]) -> tuple[float, float, int]:
    """(peak RSS in MB, wall seconds, exit status) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"predict.py failed:\n{proc.stderr.read()[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, nargs="*", default=[1000, 10_000, 20_000])
    parser.add_argument("--points", type=int, default=200, help="predict.py trajectory_points")
    parser.add_argument("--lines", type=int, nargs="*", default=[100_000], help="input= files of this many reviews")
    parser.add_argument("--lm-lines", type=int, default=64, help="a language model's input=: lines (0: none)")
    parser.add_argument("--lm-words", type=int, default=2000, help="... of this many words each")
    args, overrides = parser.parse_known_args()
    ckpt = checkpoint(fresh_run_dir("predict_memory"), ["task=sentiment", "model/embeddings=none", *overrides])
    words = load_run(ckpt).vocab.itos[2:]
    rng = random.Random(0)
    base, _, _ = peak_rss_mb([sys.executable, str(ROOT / "predict.py"), f"ckpt_path={ckpt}", "text=fine",
                              "device=cpu"])
    print(f"model: {sum(p.numel() for p in load_run(ckpt).model.parameters()):,} parameters; "
          f"predict.py on a one-word text: peak RSS {base:.0f} MB")
    for n in args.words:
        text = Path(fresh_run_dir("predict_memory")) / f"text-{n}.txt"
        text.write_text(" ".join(rng.choice(words) for _ in range(n)))
        rss, seconds, _ = peak_rss_mb([sys.executable, str(ROOT / "predict.py"), f"ckpt_path={ckpt}",
                                       f"text_file={text}", f"trajectory_points={args.points}", "device=cpu"])
        print(f"{n:6d} words: peak RSS {rss:6.0f} MB ({rss - base:+5.0f} MB over one word), {seconds:5.1f} s")
    for n in args.lines:  # batch mode: one 5-30 word review a line
        reviews = Path(fresh_run_dir("predict_memory")) / f"reviews-{n}.txt"
        reviews.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(n)))
        out = reviews.with_suffix(".jsonl")
        rss, seconds, _ = peak_rss_mb([sys.executable, str(ROOT / "predict.py"), f"ckpt_path={ckpt}",
                                       f"input={reviews}", f"output={out}", "device=cpu"])
        print(f"{n:6d} lines: peak RSS {rss:6.0f} MB ({rss - base:+5.0f} MB over one word), {seconds:5.1f} s, "
              f"{len(out.read_text().splitlines())} predictions")
    if args.lm_lines:
        language_model(args.lm_lines, args.lm_words, rng)


def language_model(lines: int, words_a_line: int, rng: random.Random) -> None:
    """Peak RSS of a PTB language model scoring `input=` a file of `lines` lines of `words_a_line` words."""
    ckpt = checkpoint(fresh_run_dir("predict_memory"), ["task=ptb"])
    run = load_run(ckpt)
    words = [w for w in run.vocab.itos if not w.startswith("<")]
    base, _, _ = peak_rss_mb([sys.executable, str(ROOT / "predict.py"), f"ckpt_path={ckpt}", "text=the",
                              "device=cpu"])
    text = Path(fresh_run_dir("predict_memory")) / f"lines-{lines}x{words_a_line}.txt"
    text.write_text("\n".join(" ".join(rng.choice(words) for _ in range(words_a_line)) for _ in range(lines)))
    out = text.with_suffix(".jsonl")
    rss, seconds, _ = peak_rss_mb([sys.executable, str(ROOT / "predict.py"), f"ckpt_path={ckpt}", f"input={text}",
                                   f"output={out}", "device=cpu"])
    print(f"language model ({len(run.vocab):,} words): scoring one word: peak RSS {base:.0f} MB; {lines} lines of "
          f"{words_a_line} words: peak RSS {rss:.0f} MB ({rss - base:+.0f} MB), {seconds:.1f} s, "
          f"{len(out.read_text().splitlines())} scores")


if __name__ == "__main__":
    main()
