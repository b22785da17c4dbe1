"""Generation speed at batch 1: the single-step path of `sample()` against the same network read one step
at a time through its full forward (what `sample()` did before), in alternating rounds, for 1 and 2 threads.

The network has `charrnn_small`'s shape (2x256 LSTM over one-hot characters, 65 symbols) unless a
checkpoint is given; speed does not depend on the weights. Both paths draw the same text for the same seed.

    python bench/generation_speed.py [--ckpt best.ckpt] [--length 2000] [--rounds 3] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from host import host_line  # bench/ is on sys.path when run as a script

from rnnlab.checkpoint import load_run
from rnnlab.models.lm import RNNLM
from rnnlab.sampling import sample


def chars_per_second(net, length: int, single_step: bool) -> tuple[float, list[int]]:
    start = time.perf_counter()
    ids = sample(net, [0], length, temperature=0.8, seed=0, single_step=single_step)
    return length / (time.perf_counter() - start), ids[0].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="a charrnn checkpoint; default: an untrained charrnn_small-shaped network")
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if args.ckpt:
        net = load_run(args.ckpt).model.net
    else:
        torch.manual_seed(0)
        net = RNNLM(65, [256, 256], "lstm", embedding_dim=None, dropout=0.2, init_scale=0.08)
    net.eval()
    print(host_line(), flush=True)
    for threads in args.threads:
        torch.set_num_threads(threads)
        chars_per_second(net, 50, True), chars_per_second(net, 50, False)  # warm-up
        speeds = {"forward": [], "single-step": []}
        for r in range(args.rounds):
            for name in (("forward", "single-step") if r % 2 == 0 else ("single-step", "forward")):
                speed, ids = chars_per_second(net, args.length, name == "single-step")
                speeds[name].append(speed)
                if name == "forward":
                    reference = ids
                else:
                    same = ids
            print(f"threads {threads} round {r + 1}: forward {speeds['forward'][-1]:7.0f} chars/s, "
                  f"single-step {speeds['single-step'][-1]:7.0f} chars/s, same text: {same == reference}", flush=True)
        ratios = [s / f for s, f in zip(speeds["single-step"], speeds["forward"])]
        for name, values in speeds.items():
            median = statistics.median(values)
            print(f"threads {threads} {name:12s} chars/s min {min(values):7.0f}  median {median:7.0f}"
                  f"  max {max(values):7.0f}")
        median = statistics.median(ratios)
        print(f"threads {threads} single-step / forward: min {min(ratios):.2f}x  median {median:.2f}x"
              f"  max {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
