"""Dynamic-evaluation grid of one LM checkpoint in parallel worker processes (`eval.py adapt.search=true`
runs the same grid one setting after another). The parent computes the training split's gradient statistics once
(on `--stats-device`), each worker takes its share of the grid on `--device` and prints one line per setting as it ends;
the parent prints them all, best first.

    python bench/adapt_grid.py outputs/ptb/runs/<run>/checkpoints/best.ckpt --lr 1e-4,3e-4 --decay 0,0.01 \
        --bptt 20 --workers 8 [--device cpu] [--stats-device cuda] [--split valid] [--train-batches 0 (all)]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from hydra.utils import instantiate

from rnnlab.adapt import dynamic_nll, gradient_ms, plain_nll
from rnnlab.checkpoint import load_run
from rnnlab.cli import silence_known_warnings


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def load(ckpt: str, device: str):
    """The run's network and its splits on `device`."""
    run = load_run(ckpt, map_location=device)
    datamodule = instantiate(run.config.data, data_dir=os.environ.get("RNNLAB_DATA_DIR", "data"),
                             cache_dir=os.environ.get("RNNLAB_CACHE_DIR", ".cache"))
    datamodule.vocab = run.vocab
    datamodule.setup()
    return run.model.net, run.model.hparams.bptt, {k: v.to(device) for k, v in datamodule.corpus.splits.items()}


def worker(args: argparse.Namespace, settings: list[tuple[float, float, int]]) -> None:
    silence_known_warnings()
    net, bptt, splits = load(args.ckpt, args.device)
    ms = [m.to(args.device) for m in torch.load(args.stats, weights_only=True)]
    rows = [("plain", 0.0, 0.0, bptt)] if args.plain else []
    rows += [(args.rule, *setting) for setting in settings]
    for rule, lr, decay, window in rows:
        start = time.perf_counter()
        if rule == "plain":
            nll, count = plain_nll(net, splits[args.split], bptt)
        else:
            nll, count = dynamic_nll(net, splits[args.split], window, lr, decay, rule, ms)
        line = f"{rule} {lr} {decay} {window} {math.exp(nll / count):.3f} {time.perf_counter() - start:.1f}"
        print(line, flush=True)
        with open(args.results, "a") as out:  # one short line per write: the workers' lines never interleave
            out.write(line + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt")
    parser.add_argument("--lr", type=floats, default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--decay", type=floats, default=[0.0])
    parser.add_argument("--bptt", type=lambda t: [int(x) for x in t.split(",")], default=[20])
    parser.add_argument("--rule", default="rms", choices=["rms", "sgd"])
    parser.add_argument("--split", default="valid", choices=["valid", "test"])
    parser.add_argument("--train-batches", type=int, default=0, help="training windows for the statistics; 0: all")
    parser.add_argument("--train-batch-size", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="where the workers evaluate")
    parser.add_argument("--stats-device", default="cpu", help="where the gradient statistics are computed")
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    silence_known_warnings()
    grid = list(itertools.product(args.lr, args.decay, args.bptt))
    if args.worker is not None:
        torch.set_num_threads(1)
        worker(args, grid[args.worker::args.workers])
        return
    net, bptt, splits = load(args.ckpt, args.stats_device)
    start = time.perf_counter()
    ms = gradient_ms(net, splits["train"], bptt, args.train_batches or None, args.train_batch_size)
    print(f"gradient statistics: {time.perf_counter() - start:.1f} s on {args.stats_device}", flush=True)
    stats = os.path.join(tempfile.mkdtemp(), "gradient_ms.pt")
    torch.save([m.cpu() for m in ms], stats)
    results = os.path.join(os.path.dirname(stats), "results.txt")
    children = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--worker", str(i), "--stats", stats,
                                  "--results", results, *(["--plain"] if i == 0 else [])]) for i in range(args.workers)]
    if any(child.wait() for child in children):
        raise SystemExit("a worker failed")
    with open(results) as lines:
        rows = [line.split() for line in lines]
    shutil.rmtree(os.path.dirname(stats))
    print(f"{'rule':5s} {'lr':>8s} {'decay':>7s} {'bptt':>5s} {args.split + ' ppl':>10s} {'seconds':>8s}")
    for rule, lr, decay, window, ppl, seconds in sorted(rows, key=lambda r: float(r[4])):
        print(f"{rule:5s} {lr:>8s} {decay:>7s} {window:>5s} {ppl:>10s} {seconds:>8s}")


if __name__ == "__main__":
    main()
