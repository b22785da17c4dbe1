"""Training throughput of `task=ptb` under Lightning versus a minimal hand-written PyTorch loop.

Both train the same model (built from the same config) on the same BPTT batches with the same
optimizer and clipping; rounds alternate, and so does the order inside a round (Lightning first in
odd rounds, plain first in even ones), so that drift in machine load hits both. Timing excludes the
first `--warmup` batches of each round. Beside each round, GEMMs of the decoder's shape (forward and
both backward products) are timed (the fastest of five timings): the matmul-bound ceiling is the tokens/s
the step would reach if all of its FLOPs ran at that rate, and each throughput is reported as a fraction
of it, and at the end also as a fraction of the highest of the run's ceilings (a round's own GEMM timing may
have been slowed by load elsewhere, which lifts that round's fraction).

    python bench/ptb_throughput.py [--batches 300] [--rounds 3] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from host import host_line  # bench/ is on sys.path when run as a script
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rnnlab import CONF_DIR
from rnnlab.cli import keep_freed_memory, silence_known_warnings
from rnnlab.models.recurrent import detach_state
from rnnlab.train import build


def fresh_run_dir(bench: str) -> str:
    """A new folder `outputs/bench/<bench>/<time>_<suffix>` per call, as an absolute path (what `mkdtemp` gives from
    Python 3.12 on, given a relative folder): a timing run never resumes an older one."""
    base = Path("outputs/bench") / bench
    base.mkdir(parents=True, exist_ok=True)
    return os.path.abspath(tempfile.mkdtemp(prefix=time.strftime("%Y-%m-%d_%H-%M-%S_"), dir=base))


def timing_overrides(batches: int | float) -> list[str]:
    """Config overrides for timing `batches` training batches: one epoch, no validation, no progress output."""
    return ["trainer.max_epochs=1", f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


class Timer(L.Callback):
    """Wall time of the training batches after `warmup` (epoch-end work, such as checkpoints, excluded),
    and the tokens they held."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.seconds, self.tokens = warmup, None, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()
        if batch_idx >= self.warmup:
            self.tokens += batch[0].numel()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.seconds = time.perf_counter() - self.start


def lightning_round(cfg, batches: int, warmup: int) -> float:
    """Training throughput (tokens/s) of the configured run."""
    timer = Timer(warmup)
    datamodule, model, trainer = build(cfg, [timer])
    trainer.fit(model, datamodule=datamodule)
    return timer.tokens / timer.seconds


def plain_round(cfg, batches: int, warmup: int) -> float:
    datamodule, model, _ = build(cfg)
    net = model.net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.model.optimizer.lr)
    state, tokens, start = None, 0, None
    for i, (x, y) in enumerate(datamodule.train_dataloader()):
        if i == batches:
            break
        if i == warmup:
            start = time.perf_counter()
        logits, state = net(x, detach_state(state))
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)) * x.size(1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        if i >= warmup:
            tokens += x.numel()
    return tokens / (time.perf_counter() - start)


def step_flops_per_token(cfg, vocab: int) -> float:
    """FLOPs per training token of the LM (forward and backward = 3x forward): the recurrent layers' input
    and hidden products and the decoder; elementwise work not counted."""
    net = cfg.model.net
    sizes = [net.embedding_dim or 0] + list(net.hidden_sizes)  # one-hot input: a lookup, no product
    gates = {"lstm": 4, "gru": 3}.get(net.cell.replace("naive_", ""), 1)
    recurrent = sum(2 * gates * h * (i + h) for i, h in zip(sizes[:-1], sizes[1:]))
    return 3 * (recurrent + 2 * sizes[-1] * vocab)


def gemm_rate(rows: int, hidden: int, vocab: int, repeats: int = 10, trials: int = 5) -> float:
    """FLOP/s of the decoder's three products for `rows` tokens (forward, input gradient, weight gradient):
    the fastest of `trials` timings of `repeats` each, so that a moment of load elsewhere cannot lower the
    ceiling."""
    a, w, g = torch.randn(rows, hidden), torch.randn(vocab, hidden), torch.randn(rows, vocab)
    products = (lambda: a @ w.T, lambda: g @ w, lambda: g.T @ a)
    for f in products:
        f()
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            for f in products:
                f()
        best = min(best, time.perf_counter() - start)
    return 3 * 2 * rows * hidden * vocab * repeats / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args, overrides = parser.parse_known_args()
    silence_known_warnings()
    run_dir = fresh_run_dir("ptb_throughput")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={run_dir}", *timing_overrides(args.batches), *overrides])
    keep_freed_memory(cfg.keep_freed_memory)  # as train.py does: both loops run under the same process setting
    print(host_line(), flush=True)
    results: dict[str, list[float]] = {"lightning": [], "plain": []}
    fractions: dict[str, list[float]] = {"lightning": [], "plain": []}
    rows = cfg.data.batch_size * cfg.data.bptt
    vocab = instantiate(cfg.data).model_kwargs()["net"]["vocab_size"]
    flops = step_flops_per_token(cfg, vocab)
    rounds = (("lightning", lightning_round), ("plain", plain_round))
    ceilings = []
    for r in range(args.rounds):
        ceiling = gemm_rate(rows, cfg.model.net.hidden_sizes[-1], vocab) / flops
        ceilings.append(ceiling)
        for name, run in rounds if r % 2 == 0 else rounds[::-1]:
            torch.manual_seed(cfg.seed)
            cfg.paths.output_dir = f"{run_dir}/{name}{r}"
            results[name].append(run(cfg, args.batches, args.warmup))
            fractions[name].append(results[name][-1] / ceiling)
            print(f"round {r + 1} {name:9s} {results[name][-1]:9.0f} tokens/s, {fractions[name][-1]:.0%} of the "
                  f"matmul-bound ceiling ({ceiling:.0f} tokens/s)", flush=True)
    light, plain = statistics.median(results["lightning"]), statistics.median(results["plain"])
    ratios = [a / b for a, b in zip(results["lightning"], results["plain"])]  # each round's pair ran back to back
    print(f"median tokens/s: lightning {light:.0f}, plain loop {plain:.0f}; "
          f"ratio lightning/plain = {light / plain:.3f} (torch threads: {torch.get_num_threads()})")
    print(f"lightning/plain by round: {', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}")
    for name, values in fractions.items():
        print(f"{name} fraction of the ceiling: min {min(values):.0%}  median {statistics.median(values):.0%}  "
              f"max {max(values):.0%}")
    best = max(ceilings)  # the host's GEMM rate at its least disturbed: a round's own timing may be slowed
    for name, values in results.items():
        print(f"{name} fraction of the run's highest ceiling ({best:.0f} tokens/s): min {min(values) / best:.0%}  "
              f"median {statistics.median(values) / best:.0%}  max {max(values) / best:.0%}")


if __name__ == "__main__":
    main()
