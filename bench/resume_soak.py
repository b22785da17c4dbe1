"""Soak test of the resume contract: one tiny PTB run killed (SIGKILL, SIGINT) at random steps and resumed
each time with `ckpt_path=last` must end with every tensor equal to the same run left alone.

Each interrupted run is a real `train.py` process; a small callback (this module's `KillAt`, added through
the config) sends the signal to its own process at a chosen global step, so the steps are random but known.

    python bench/resume_soak.py [--kills 20] [--seed 0] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from ptb_throughput import fresh_run_dir  # noqa: E402

from rnnlab.checkpoint import read_checkpoint  # noqa: E402

TINY_PTB = ["model.net.hidden_sizes=[32,32]", "model.net.embedding_dim=32", "model.net.dropout=0.3",
            "data.vary_bptt=true", "data.batch_size=20", "trainer.max_epochs=3", "trainer.limit_train_batches=40",
            "trainer.limit_val_batches=5", "callbacks.last_checkpoint.every_n_train_steps=3", "test=false",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv"]
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}


class KillAt(L.Callback):
    """Sends `signum` to this process when training reaches global step `step`."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
            time.sleep(1)


def run(folder: Path, overrides: list[str], extra: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")]),
           "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={folder}", *extra],
                          env=env, capture_output=True, text=True)


def final_state(folder: Path) -> dict:
    ckpt = read_checkpoint(folder / "checkpoints" / "last.ckpt")
    return {"step": ckpt["global_step"], "weights": ckpt["state_dict"], "optimizer": ckpt["optimizer_states"]}


def equal(a: dict, b: dict) -> bool:
    same_weights = a["weights"].keys() == b["weights"].keys() and all(
        torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    same_optimizer = all(
        torch.equal(v, sb["state"][i][n]) if isinstance(v, torch.Tensor) else v == sb["state"][i][n]
        for sa, sb in zip(a["optimizer"], b["optimizer"]) for i, st in sa["state"].items() for n, v in st.items())
    return a["step"] == b["step"] and same_weights and same_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args()
    overrides = [*TINY_PTB, *overrides]
    base = Path(fresh_run_dir("resume_soak"))
    started = time.perf_counter()
    straight = run(base / "straight", overrides, [])
    if straight.returncode != 0:
        raise SystemExit(f"the straight run failed:\n{straight.stderr[-3000:]}")
    total = final_state(base / "straight")["step"]
    print(f"straight run: {total} steps in {time.perf_counter() - started:.1f} s")
    rng = random.Random(args.seed)
    steps = sorted(rng.sample(range(1, total), min(args.kills, total - 1)))
    folder, resume = base / "interrupted", []
    for i, step in enumerate(steps):
        name = rng.choice(sorted(SIGNALS))
        kill = ["+callbacks.soak._target_=resume_soak.KillAt", f"+callbacks.soak.step={step}",
                f"+callbacks.soak.signum={int(SIGNALS[name])}"]
        result = run(folder, overrides, [*resume, *kill])
        if result.returncode == 0:
            raise SystemExit(f"run {i + 1} was not stopped at step {step}:\n{result.stderr[-3000:]}")
        if result.returncode not in (-int(signal.SIGKILL), 130):
            print(f"  unexpected exit status {result.returncode}; the run's last lines:\n{result.stderr[-1500:]}")
        kept = read_checkpoint(folder / "checkpoints" / "last.ckpt")["global_step"]
        print(f"stop {i + 1:2d}: SIG{name:<4s} at step {step:3d} -> exit {result.returncode:4d}, "
              f"last.ckpt at step {kept}")
        resume = ["ckpt_path=last"]
    finished = run(folder, overrides, resume)
    if finished.returncode != 0:
        raise SystemExit(f"the final resume failed:\n{finished.stderr[-3000:]}")
    same = equal(final_state(base / "straight"), final_state(folder))
    print(f"{len(steps)} stops, resumed each time: final state {'EQUAL' if same else 'DIFFERENT'} to the straight run "
          f"(every weight and optimizer tensor torch.equal); {time.perf_counter() - started:.0f} s in all")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
