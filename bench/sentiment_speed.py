"""SentimentLSTM speed on this machine.

1. Training throughput (sequences/s) on IMDB's training reviews, cut at 400 words, of the
   task's model: `batching=pad` (every review padded to 400) versus `batching=bucket` (padded to
   the longest of its batch), alternating rounds of one full epoch each by default (the same
   reviews in both), with the padding fraction (padded positions / all positions) of each; and
   `bucket+pack` (packed sequences) over `--pack-batches` batches, since on CPU it is slow.
2. predict.py latency for one sentence (model load excluded), given a checkpoint.

    python bench/sentiment_speed.py [--batches 0 (a full epoch)] [--rounds 1] [--pack-batches 30] [--ckpt PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from ptb_throughput import lightning_round, timing_overrides  # noqa: E402  (bench/ is on sys.path when run as a script)

from rnnlab import CONF_DIR
from rnnlab.train import silence_known_warnings

SETTINGS = {
    "pad-400": ["data.batching=pad", "data.max_len=400", "model.pack=false"],
    "bucket": ["data.batching=bucket", "data.max_len=400", "model.pack=false"],
    "bucket+pack": ["data.batching=bucket", "data.max_len=400", "model.pack=true"],
}


def padding_fraction(cfg, batches: int) -> float:
    """Padded positions / all positions over the first `batches` training batches (0: all)."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    real = total = 0
    for i, (ids, lengths, _) in enumerate(dm.train_dataloader()):
        if i == batches > 0:
            break
        real, total = real + int(lengths.sum()), total + ids.numel()
    return 1 - real / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=0, help="training batches per round (0: one full epoch)")
    parser.add_argument("--pack-batches", type=int, default=30, help="batches for bucket+pack (0: skip it)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ckpt", default=None, help="a sentiment checkpoint for the latency measurement")
    args, overrides = parser.parse_known_args()
    silence_known_warnings()
    configs, batches = {}, {}
    run_dir = f"outputs/bench/sentiment_speed/{time.strftime('%Y-%m-%d_%H-%M-%S')}"  # fresh: never resumes
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name, extra in SETTINGS.items():
            batches[name] = args.pack_batches if name == "bucket+pack" else args.batches
            if name == "bucket+pack" and not args.pack_batches:
                continue
            configs[name] = compose("train", overrides=[
                "task=sentiment", "data=imdb", "model/embeddings=none", f"paths.output_dir={run_dir}",
                *timing_overrides(batches[name] or 1.0), "logger=none", "callbacks=none", *extra, *overrides,
            ])
    for name, cfg in configs.items():
        print(f"{name:12s} padding fraction {padding_fraction(cfg, batches[name]):.3f}", flush=True)
    speeds: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(args.rounds):
        for name, cfg in configs.items():
            cfg.paths.output_dir = f"{run_dir}/{name}{r}"
            start = time.perf_counter()
            speeds[name].append(lightning_round(cfg, batches[name], args.warmup, per="sequences"))
            print(f"round {r + 1} {name:12s} {speeds[name][-1]:8.1f} sequences/s "
                  f"({time.perf_counter() - start:.0f} s in all)", flush=True)
    medians = {n: statistics.median(v) for n, v in speeds.items()}
    print("median sequences/s: " + ", ".join(f"{n} {v:.1f} ({v / medians['pad-400']:.2f}x pad-400)"
                                             for n, v in medians.items()))

    if args.ckpt:
        from rnnlab.checkpoint import load_run
        from rnnlab.predict import Predictor

        predictor = Predictor(load_run(args.ckpt))
        text = "the acting was superb but the plot was a mess"
        predictor.one(text)
        times = []
        for _ in range(50):
            start = time.perf_counter()
            predictor.one(text)
            times.append(time.perf_counter() - start)
        print(f"predict latency, one {len(text.split())}-word sentence with its trajectory: "
              f"median {1000 * statistics.median(times):.2f} ms (threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
