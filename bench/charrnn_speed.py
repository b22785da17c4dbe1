"""CharRNN speed on this machine: training characters/s of the fused LSTM versus `naive_lstm`,
and generation characters/s as the generated length grows (the state is carried, so it should stay flat).

    python bench/charrnn_speed.py [--batches 40] [--rounds 2] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from ptb_throughput import fresh_run_dir, lightning_round, timing_overrides  # noqa: E402  (bench/ is on sys.path when run as a script)

from rnnlab import CONF_DIR
from rnnlab.cli import silence_known_warnings
from rnnlab.train import build


def generation_speed(net: torch.nn.Module, length: int) -> float:
    from rnnlab.sampling import sample

    start = time.perf_counter()
    sample(net, [1, 2, 3], length, temperature=0.8, seed=0)
    return length / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args, overrides = parser.parse_known_args()
    silence_known_warnings()
    run_dir = fresh_run_dir("charrnn_speed")

    def config(cell: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=[
                "task=charrnn", f"model.net.cell={cell}", f"paths.output_dir={run_dir}",
                *timing_overrides(args.batches), "logger=none", "callbacks=none", *overrides,
            ])

    speeds: dict[str, list[float]] = {"lstm": [], "naive_lstm": []}
    for r in range(args.rounds):
        for cell in speeds:
            cfg = config(cell)
            cfg.paths.output_dir = f"{run_dir}/{cell}{r}"
            speeds[cell].append(lightning_round(cfg, args.batches, args.warmup))
            print(f"round {r + 1} {cell:10s} {speeds[cell][-1]:8.0f} chars/s (training)", flush=True)
    fused, naive = (statistics.median(speeds[c]) for c in ("lstm", "naive_lstm"))
    print(f"training chars/s: fused lstm {fused:.0f}, naive_lstm {naive:.0f}; fused/naive = {fused / naive:.1f}x")

    _, model, _ = build(config("lstm"))
    net = model.net.eval()
    generation_speed(net, 50)  # warm-up
    for length in (100, 1_000, 10_000):
        print(f"generation, length {length:6d}: {generation_speed(net, length):8.0f} chars/s", flush=True)


if __name__ == "__main__":
    main()
