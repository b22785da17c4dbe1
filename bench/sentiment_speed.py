"""SentimentLSTM speed on this machine.

1. Training throughput (sequences/s) on IMDB's training reviews, cut at 400 words, of the
   task's model: `batching=pad` (every review padded to 400) versus `batching=bucket` (padded to
   the longest of its batch), one full epoch each by default (the same reviews in both), with
   the padding fraction (padded positions / all positions) of each; and `bucket+pack` (packed
   sequences) over its first `--pack-batches` batches, since on CPU it is slow.
   The settings take turns batch by batch (pad, bucket, bucket+pack, pad, ...), each with its
   own model and optimizer, so that the machine's load, which on a shared VM swings by 1.5x
   from one minute to the next, weighs on all of them alike. A step is what the Trainer does
   for a batch: fetch and collate it, forward, loss, backward, clip, optimizer step.
2. predict.py latency for one sentence (model load excluded), given a checkpoint.

    python bench/sentiment_speed.py [--batches 0 (a full epoch)] [--rounds 1] [--pack-batches 30] [--ckpt PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rnnlab import CONF_DIR
from rnnlab.cli import silence_known_warnings

SETTINGS = {
    "pad-400": ["data.batching=pad", "data.max_len=400", "model.pack=false"],
    "bucket": ["data.batching=bucket", "data.max_len=400", "model.pack=false"],
    "bucket+pack": ["data.batching=bucket", "data.max_len=400", "model.pack=true"],
}


@dataclass
class Setting:
    """One batching setting in training: its model, optimizer, batches, and what its timed steps held."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: object
    limit: int
    clip: float | None
    steps: int = 0
    seconds: float = 0.0
    sequences: int = 0
    real: int = 0
    positions: int = 0

    def step(self, timed: bool) -> bool:
        """One training step; False when its batches are used up."""
        if self.steps == self.limit > 0:
            return False
        start = time.perf_counter()
        batch = next(self.batches, None)
        if batch is None:
            return False
        ids, lengths, labels = batch
        loss = self.model.loss(self.model(ids, lengths), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.steps += 1
        if timed:
            self.seconds += time.perf_counter() - start
            self.sequences += ids.size(0)
            self.real += int(lengths.sum())
            self.positions += ids.numel()
        return True


def make_setting(cfg, encoded, limit: int) -> Setting:
    """A fresh model and optimizer for `cfg`, reading `encoded`'s tokenized reviews with `cfg`'s batching."""
    datamodule = instantiate(cfg.data)
    datamodule.vocab, datamodule.datasets = encoded.vocab, encoded.datasets
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model, **datamodule.model_kwargs()).train()
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    return Setting(model, optimizer, iter(datamodule.train_dataloader()), limit, cfg.trainer.gradient_clip_val)


def paired_round(configs, encoded, limits: dict[str, int], warmup: int) -> dict[str, Setting]:
    """All settings trained in turns, a batch each, until each has used its batches."""
    settings = {name: make_setting(cfg, encoded, limits[name]) for name, cfg in configs.items()}
    active, i = list(settings), 0
    while active:
        active = [name for name in active if settings[name].step(timed=i >= warmup)]
        i += 1
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=0, help="training batches per round (0: one full epoch)")
    parser.add_argument("--pack-batches", type=int, default=30, help="batches for bucket+pack (0: skip it)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps of each setting")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ckpt", default=None, help="a sentiment checkpoint for the latency measurement")
    args, overrides = parser.parse_known_args()
    silence_known_warnings()
    limits = {name: args.pack_batches if name == "bucket+pack" else args.batches for name in SETTINGS}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        configs = {name: compose("train", overrides=["task=sentiment", "data=imdb", "model/embeddings=none",
                                                     *extra, *overrides])
                   for name, extra in SETTINGS.items() if limits[name] or name != "bucket+pack"}
    encoded = instantiate(configs["pad-400"].data)  # tokenized once: the settings differ only in batching
    encoded.setup()
    speeds: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(args.rounds):
        start = time.perf_counter()
        settings = paired_round(configs, encoded, limits, args.warmup)
        for name, s in settings.items():
            speeds[name].append(s.sequences / s.seconds)
            print(f"round {r + 1} {name:12s} {speeds[name][-1]:7.1f} sequences/s over {s.steps - args.warmup} "
                  f"batches ({s.sequences} reviews, {s.real} words), padding fraction {1 - s.real / s.positions:.3f}",
                  flush=True)
        print(f"round {r + 1}: bucket / pad-400 = {speeds['bucket'][-1] / speeds['pad-400'][-1]:.2f}x "
              f"({time.perf_counter() - start:.0f} s in all)", flush=True)
    medians = {n: statistics.median(v) for n, v in speeds.items()}
    print(f"median sequences/s (torch threads: {torch.get_num_threads()}): "
          + ", ".join(f"{n} {v:.1f} ({v / medians['pad-400']:.2f}x pad-400)" for n, v in medians.items()))

    if args.ckpt:
        from rnnlab.checkpoint import load_run
        from rnnlab.predictor import Predictor

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
