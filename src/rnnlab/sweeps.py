"""What a multirun (`train.py -m ...`, any launcher or sweeper) reports when it ends: one table of every job's
overrides and final metrics, printed and written as `<sweep dir>/summary.csv`; and, for jobs that differ only in
`seed=`, each metric's mean and standard deviation over the seeds (`summary_by_seed.csv`). A job that fails is
recorded (`error.json` in its folder) and the sweep goes on; the multirun then ends with exit status 1."""

from __future__ import annotations

import csv
import json
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnnlab.files import atomic_write, read_metrics

log = logging.getLogger(__name__)

JOB_ERROR = "error.json"  # in a multirun job's folder: the error that ended it, and its overrides


def multirun_job() -> DictConfig | None:
    """Hydra's config of the multirun job running now (`job.num`, `overrides.task`, `sweep.dir`, ...); else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get()


def job_header() -> str:
    """`--- job N: its overrides ---` and a line break in a multirun job, to head what it prints; '' otherwise."""
    job = multirun_job()
    return f"--- job {job.job.num}: {' '.join(job.overrides.task)} ---\n" if job is not None else ""


def check_own_output(key: str, path: str | os.PathLike | None) -> None:
    """In a multirun job, refuses `key=path` where an earlier job of the same sweep wrote that file already: one
    output for every job would keep only the last job's."""
    job = multirun_job()
    if job is None or path is None or str(path) == "-":
        return
    path, started = Path(path).expanduser(), Path(job.sweep.dir) / "multirun.yaml"
    if path.is_file() and started.is_file() and path.stat().st_mtime >= started.stat().st_mtime:
        raise ValueError(f"{key}={path}: an earlier job of this multirun wrote it; give each job its own file, e.g. "
                         f"{key}={path.with_name(path.stem + '_${hydra:job.num}' + path.suffix)}")


def record_job_error(message: str, outcome: bool = False) -> int | None:
    """In a Hydra multirun job whose sweep ends with `MultirunSummary`, marks the job failed with `message` (and its
    overrides: it may have failed before writing them) for that summary, and returns its number; else None, and the
    error ends the sweep.

    It ends an Optuna study too when its first trial fails other than by an `outcome` of the trial's values (a run
    that diverged): a setting's error there would fail every trial, and Optuna ends a study without a completed
    trial in a traceback."""
    hydra_cfg = multirun_job()
    if hydra_cfg is None:
        return None
    summary = f"{__name__}.{MultirunSummary.__name__}"
    if not any(callback.get("_target_") == summary for callback in hydra_cfg.callbacks.values()):
        return None
    if not outcome and hydra_cfg.job.num == 0 and "optuna" in str(hydra_cfg.sweeper.get("_target_")).lower():
        return None
    record = {"error": message, "overrides": list(hydra_cfg.overrides.task)}
    atomic_write(Path(hydra_cfg.runtime.output_dir) / JOB_ERROR,
                 lambda tmp: Path(tmp).write_text(json.dumps(record) + "\n"))
    return hydra_cfg.job.num


def job_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """`{"job", "overrides" (a list), **metrics}` for every job folder of `sweep_dir`, by job number. A job that
    failed is listed with `status: failed` and its `error`; one with no metrics (killed, or a script that writes
    none) with `status: no metrics`."""
    rows = []
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()] if sweep_dir.is_dir() else []
    for folder in sorted(jobs, key=lambda p: int(p.name)):
        overrides_file, error_file = folder / ".hydra" / "overrides.yaml", folder / JOB_ERROR
        error = json.loads(error_file.read_text()) if error_file.is_file() else None
        overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else (error or {}).get("overrides", [])
        metrics = read_metrics(folder)
        row: dict[str, Any] = {"job": int(folder.name), "overrides": [str(o) for o in overrides], **metrics}
        if error:
            row.update(status="failed", error=error["error"])
        elif not metrics:
            row["status"] = "no metrics"
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
        done = [m for m in members if "status" not in m]
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
    """Writes `rows` as CSV to `path`, the columns `first` first and a failed job's `error` last; returns them as an
    aligned text table."""
    present = {k for row in rows for k in row}
    columns = [c for c in first if c in present]
    columns += sorted(present - set(columns) - {"error"}) + ["error"] * ("error" in present)
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

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A job run again in its folder (a sweep continued) starts with no error recorded."""
        (Path(config.hydra.runtime.output_dir) / JOB_ERROR).unlink(missing_ok=True)

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
        failed = [row["job"] for row in rows if row.get("status") == "failed"]
        if failed:
            print(f"{config.hydra.help.app_name}: error: {len(failed)} of {len(rows)} jobs failed (job"
                  f"{'s' * (len(failed) > 1)} {', '.join(map(str, failed))}); their errors are in "
                  f"{sweep_dir / 'summary.csv'}", file=sys.stderr)
            raise SystemExit(1)
