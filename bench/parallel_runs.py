"""Run several `train.py` jobs at once (one GPU shared by small models, or many cores) and tabulate their
per-epoch validation metric and final test metric from each run's CSV log.

    python bench/parallel_runs.py --jobs jobs.txt --out sweep/ [--timeout 600] [--metric val/ppl]

`jobs.txt`: one job a line, `name: override override ...` (blank lines and `#` comments skipped); a line
`NAME=override override ...` (capitals) defines overrides that later jobs name as the word `NAME`.
Writes `<out>/<name>/` run folders, `<out>/<name>.log`, and `<out>/summary.csv` (one row per job and epoch).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_jobs(path: Path) -> list[tuple[str, list[str]]]:
    jobs, macros = [], {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, _, rest = line.partition("=")
        if head.isupper() and head.isidentifier():
            macros[head] = rest.split()
            continue
        name, _, overrides = line.partition(":")
        jobs.append((name.strip(), [o for word in overrides.split() for o in macros.get(word, [word])]))
    return jobs


def epochs(metrics_csv: Path, metric: str) -> tuple[list[float], dict[str, float]]:
    """Per-epoch values of `metric` and the last value of every test metric."""
    per_epoch: dict[int, float] = {}
    final: dict[str, float] = {}
    if not metrics_csv.is_file():
        return [], final
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            if row.get(metric):
                per_epoch[int(row["epoch"])] = float(row[metric])
            for k, v in row.items():
                if k.startswith("test/") and v:
                    final[k] = float(v)
    return [per_epoch[e] for e in sorted(per_epoch)], final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for all jobs together")
    parser.add_argument("--metric", default="val/ppl")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    procs = {}
    start = time.time()
    for name, overrides in read_jobs(args.jobs):
        log = (args.out / f"{name}.log").open("w")
        cmd = [sys.executable, str(ROOT / "train.py"), f"paths.output_dir={args.out / name}", "logger=csv",
               *overrides]
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log)
    for proc, log in procs.values():
        try:
            proc.wait(timeout=max(1.0, args.timeout - (time.time() - start)))
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        log.close()
    with (args.out / "summary.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "exit", "epoch", args.metric])
        for name, (proc, _) in procs.items():
            values, final = epochs(args.out / name / "csv" / "metrics.csv", args.metric)
            for e, v in enumerate(values, 1):
                writer.writerow([name, proc.returncode, e, f"{v:.2f}"])
            curve = " ".join(f"{v:.1f}" for v in values)
            tests = " ".join(f"{k} {v:.2f}" for k, v in sorted(final.items()))
            print(f"{name:14s} exit {proc.returncode}  {args.metric} by epoch: {curve}  {tests}", flush=True)
    print(f"all jobs: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
