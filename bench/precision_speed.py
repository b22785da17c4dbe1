"""Training throughput of a PTB preset under each precision, with and without `torch.compile`.

The GPU check of the foundation issue: `ptb_medium` in `32-true` and `bf16-mixed`, and whether
`model.compile=true` helps. Rounds alternate over the variants so that drift in machine load
hits all of them; the first `--warmup` batches of each round (and compilation) are not timed.

    python bench/precision_speed.py                                   # ptb_medium on the GPU
    python bench/precision_speed.py experiment=ptb_small trainer=cpu --batches 40 --variants 32-true bf16-mixed
"""

from __future__ import annotations

import argparse
import statistics

import torch
from hydra import compose, initialize_config_dir
from ptb_throughput import fresh_run_dir, lightning_round, timing_overrides

from rnnlab import CONF_DIR
from rnnlab.cli import silence_known_warnings

VARIANTS = ("32-true", "bf16-mixed", "32-true+compile", "bf16-mixed+compile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args, overrides = parser.parse_known_args()
    silence_known_warnings()
    given = {o.split("=")[0] for o in overrides}
    defaults = [o for o in ("experiment=ptb_medium", "trainer=gpu") if o.split("=")[0] not in given]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            *defaults, *timing_overrides(args.batches), "test=false", "logger=none", "callbacks=none", *overrides,
        ])
    results: dict[str, list[float]] = {v: [] for v in args.variants}
    run_dir = fresh_run_dir("precision_speed")
    for r in range(args.rounds):
        for variant in args.variants:
            precision, _, compiled = variant.partition("+")
            cfg.trainer.precision = precision
            cfg.model.compile = bool(compiled)
            cfg.paths.output_dir = f"{run_dir}/{variant}-{r}"
            torch.manual_seed(cfg.seed)
            results[variant].append(lightning_round(cfg, args.batches, args.warmup))
            print(f"round {r + 1} {variant:20s} {results[variant][-1]:10.0f} tokens/s", flush=True)
    base = statistics.median(results[args.variants[0]])
    for variant, values in results.items():
        median = statistics.median(values)
        print(f"{variant:20s} median {median:10.0f} tokens/s  x{median / base:.2f} vs {args.variants[0]}")


if __name__ == "__main__":
    main()
