"""What a multirun (`train.py -m ...`, any launcher or sweeper) reports when it ends: one table of every job's
overrides and final metrics, printed and written as `<sweep dir>/summary.csv`; and, for jobs that differ only in
`seed=`, each metric's mean and standard deviation over the seeds (`summary_by_seed.csv`)."""

from __future__ import annotations

import csv
import json
import logging
import statistics
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnnlab.files import atomic_write

log = logging.getLogger(__name__)


def job_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """`{"job", "overrides" (a list), **metrics}` for every job folder of `sweep_dir` holding a `metrics.json`, by job
    number; a job that failed has no metrics and is listed with `status: failed`."""
    rows = []
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()] if sweep_dir.is_dir() else []
    for folder in sorted(jobs, key=lambda p: int(p.name)):
        overrides_file = folder / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        row: dict[str, Any] = {"job": int(folder.name), "overrides": [str(o) for o in overrides]}
        metrics_file = folder / "metrics.json"
        if metrics_file.is_file():
            row.update(json.loads(metrics_file.read_text()))
        else:
            row["status"] = "failed"
        rows.append(row)
    return rows


def by_seed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs that differ only in `seed=`, one row per group of two or more: its other overrides (less those every group
    shares), `seeds` (the jobs with metrics), `failed` (those without), and each metric's mean and sample standard
    deviation (`<metric>_std`)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if any(o.startswith("seed=") for o in row["overrides"]):
            groups.setdefault(tuple(o for o in row["overrides"] if not o.startswith("seed=")), []).append(row)
    groups = {others: members for others, members in groups.items() if len(members) > 1}
    shared = set.intersection(*map(set, groups)) if len(groups) > 1 else set()  # the same for every group
    summary = []
    for others, members in groups.items():
        done = [m for m in members if m.get("status") != "failed"]
        names = sorted({k for m in done for k, v in m.items() if isinstance(v, (int, float)) and k != "job"})
        row = {"overrides": [o for o in others if o not in shared], "seeds": len(done),
               "failed": len(members) - len(done)}
        for name in names:
            values = [m[name] for m in done if name in m]
            row[name] = statistics.fmean(values)
            row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else float("nan")
        summary.append(row)
    return summary


def write_summary(rows: list[dict[str, Any]], path: Path, first: tuple[str, ...] = ("job", "overrides")) -> str:
    """Writes `rows` as CSV to `path`, the columns `first` first; returns them as an aligned text table."""
    columns = [c for c in first if any(c in row for row in rows)]
    columns += sorted({k for row in rows for k in row} - set(columns))
    rows = [{k: " ".join(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows]

    def cell(value: Any) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
    table = [columns] + [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table)


class MultirunSummary(Callback):
    """Hydra callback: at the end of a multirun, the table of jobs and metrics (`summary.csv` in the sweep dir).
    Reads the job folders, so it works with every launcher (local, joblib, submitit)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = job_results(sweep_dir)
        if rows:
            table = write_summary(rows, sweep_dir / "summary.csv")
            log.info("multirun summary (%s):\n%s", sweep_dir / "summary.csv", table)
        seeds = by_seed(rows)
        if seeds:
            path = sweep_dir / "summary_by_seed.csv"
            table = write_summary(seeds, path, first=("overrides", "seeds", "failed"))
            log.info("over the seeds, mean and standard deviation (%s):\n%s", path, table)
