"""Summarize a finished run from its CSV log: per-epoch val perplexity, test perplexity, tokens/s, wall time.

    python bench/summarize_run.py outputs/ptb/runs/<run>
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path


def main(run_dir: str) -> None:
    with open(Path(run_dir) / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    key = "train/tokens_per_sec" if any(r.get("train/tokens_per_sec") for r in rows) else "train/device/items_per_sec"
    speed = [float(r[key]) for r in rows if r.get(key)]  # the second name: logs written before TokenThroughput
    times = [float(r["train/time"]) for r in rows if r.get("train/time")]
    for r in rows:
        if r.get("val/loss"):
            keys = ("val/ppl", "val/bpc", "val/acc", "val/mse")
            extra = "".join(f"  {k} {float(r[k]):8.3f}" for k in keys if r.get(k))
            print(f"epoch {int(r['epoch']) + 1:3d}  val loss {float(r['val/loss']):.4f}{extra}")
    for key in ("test/loss", "test/ppl", "test/bpc", "test/acc"):
        values = [float(r[key]) for r in rows if r.get(key)]
        if values:
            print(f"{key} {values[-1]:.2f}")
    if speed:
        print(f"training tokens/s: median {statistics.median(speed):.0f} (min {min(speed):.0f}, max {max(speed):.0f})")
    if times:
        print(f"training wall time (Lightning's clock, excluding validation start-up): {max(times) / 60:.1f} min")


if __name__ == "__main__":
    main(sys.argv[1])
