"""Training throughput with `keep_freed_memory` on and off, in alternating rounds, each run a fresh process
(glibc's settings hold for a whole process): `bench/ptb_throughput.py --rounds 1` per run.

    python bench/freed_memory.py [--rounds 3] [ptb_throughput options and hydra overrides ...]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("ptb_throughput.py")


def run(setting: bool, extra: list[str]) -> dict[str, float]:
    """Tokens/s of the Lightning and the plain loop in one `ptb_throughput.py` round."""
    out = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "1", f"keep_freed_memory={str(setting).lower()}",
                          *extra], capture_output=True, text=True, check=True).stdout
    return {name: float(value) for name, value in re.findall(r"round 1 (lightning|plain) +(\d+) tokens/s", out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args, extra = parser.parse_known_args()
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for r in range(args.rounds):
        for setting in (True, False) if r % 2 == 0 else (False, True):
            results[setting].append(run(setting, extra))
            print(f"round {r + 1} keep_freed_memory={str(setting).lower():5s} "
                  + ", ".join(f"{k} {v:.0f} tokens/s" for k, v in results[setting][-1].items()), flush=True)
    for loop in ("lightning", "plain"):
        ratios = [on[loop] / off[loop] for on, off in zip(results[True], results[False])]
        print(f"{loop}: on/off by round {', '.join(f'{x:.3f}' for x in ratios)}; min {min(ratios):.3f} "
              f"median {statistics.median(ratios):.3f} max {max(ratios):.3f}")


if __name__ == "__main__":
    main()
