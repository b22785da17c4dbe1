"""The machine a bench figure was measured on, printed first by the speed benches.

GEMM rates, and so every tokens/s and fraction of the matmul-bound ceiling, differ between hosts (the PTB
decoder's GEMMs ran about 2x slower on one AVX2 host than on the hosts of earlier sessions, docs/results.md):
compare figures from the same host line only.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def host_line() -> str:
    """`host: <model>, <n> logical CPUs, torch CPU capability <AVX512|AVX2|...>` (the vector code torch runs)."""
    return (f"host: {cpu_model()}, {os.cpu_count()} logical CPUs, torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}")
