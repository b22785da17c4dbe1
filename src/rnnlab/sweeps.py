"""What a multirun (`train.py -m ...`, any launcher or sweeper) reports when it ends: one table of every job's
overrides and final metrics, printed and written as `<sweep dir>/summary.csv`."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnnlab.files import atomic_write

log = logging.getLogger(__name__)


def job_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """`{"job", "overrides", **metrics}` for every job folder of `sweep_dir` holding a `metrics.json`, by job number;
    a job that failed has no metrics and is listed with `status: failed`."""
    rows = []
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()] if sweep_dir.is_dir() else []
    for folder in sorted(jobs, key=lambda p: int(p.name)):
        overrides_file = folder / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        row: dict[str, Any] = {"job": int(folder.name), "overrides": " ".join(overrides)}
        metrics_file = folder / "metrics.json"
        if metrics_file.is_file():
            row.update(json.loads(metrics_file.read_text()))
        else:
            row["status"] = "failed"
        rows.append(row)
    return rows


def write_summary(rows: list[dict[str, Any]], path: Path) -> str:
    """Writes `rows` as CSV to `path`; returns them as an aligned text table."""
    columns = ["job", "overrides"] + sorted({k for row in rows for k in row} - {"job", "overrides"})

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
