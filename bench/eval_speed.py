"""Evaluation speed at batch 1 (the published protocol): `eval.py`'s Lightning test loop against a plain
`torch.inference_mode` loop over the same stream, in alternating rounds. Both must give the same perplexity.

    python bench/eval_speed.py ckpt_path=outputs/ptb/runs/<run>/checkpoints/best.ckpt [--rounds 3] [--split test]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host import host_line  # noqa: E402
from ptb_throughput import fresh_run_dir  # noqa: E402

from rnnlab import CONF_DIR  # noqa: E402
from rnnlab.adapt import plain_nll  # noqa: E402
from rnnlab.checkpoint import load_run  # noqa: E402
from rnnlab.cli import silence_known_warnings  # noqa: E402
from rnnlab.evaluate import evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--split", default="test", choices=["test", "valid"])
    args, overrides = parser.parse_known_args()
    silence_known_warnings()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"paths.output_dir={fresh_run_dir('eval_speed')}", "batch_size=1",
                                         f"split={args.split}", "trainer.enable_progress_bar=false",
                                         "trainer.enable_model_summary=false", *overrides])
    run = load_run(cfg.ckpt_path)
    extra = {"eval_bptt": cfg.eval_bptt} if cfg.get("eval_bptt") else {}
    datamodule = instantiate(run.config.data, data_dir=cfg.paths.data_dir, cache_dir=cfg.paths.cache_dir, **extra)
    datamodule.vocab = run.vocab
    datamodule.setup()
    stream = datamodule.corpus.splits[args.split]
    window = datamodule.hparams.get("eval_bptt") or datamodule.hparams.bptt  # the windows eval.py reads
    times: dict[str, list[float]] = {"eval.py": [], "plain": []}
    print(host_line(), flush=True)
    for r in range(args.rounds):
        for name in (("eval.py", "plain") if r % 2 == 0 else ("plain", "eval.py")):
            start = time.perf_counter()
            if name == "plain":
                nll, count = plain_nll(run.model.net, stream, window)
                ppl = math.exp(nll / count)
            else:
                ppl = evaluate(cfg)[f"{args.split}/ppl"]
            times[name].append(time.perf_counter() - start)
            print(f"round {r + 1} {name:8s} {times[name][-1]:7.2f} s  ppl {ppl:.4f}", flush=True)
    ratios = [a / b for a, b in zip(times["eval.py"], times["plain"])]
    for name, values in times.items():
        print(f"{name:8s} seconds min {min(values):.2f}  median {statistics.median(values):.2f}  max {max(values):.2f}")
    print(f"eval.py / plain loop: min {min(ratios):.3f}x  median {statistics.median(ratios):.3f}x  "
          f"max {max(ratios):.3f}x over {stream.numel() - 1} tokens")


if __name__ == "__main__":
    main()
