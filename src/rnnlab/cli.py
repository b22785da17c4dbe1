"""What every command-line entry point shares: device choice, warning filters, one-line errors."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue

from rnnlab import CONF_DIR
from rnnlab.checkpoint import CheckpointError
from rnnlab.checks import check_count
from rnnlab.data.download import DataFileError
from rnnlab.files import FolderLockedError, WriteError, not_a_file

KNOWN_WARNINGS = (
    r".*IterableDataset. has .__len__. defined.*",  # our streams know their exact length
    r".*you need to define a .flops_per_batch.*",  # ThroughputMonitor: we report tokens/s, not FLOPs
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*does not have many workers.*",  # in-memory tensors: worker processes would only add overhead
)

# Errors a user causes (a bad value, file or checkpoint): one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError, DataFileError, FolderLockedError, FileNotFoundError, ValueError, WriteError,
)


# Lightning's log lines that are advertising or untrue here: tips for other products, and "weights_only was
# not set, defaulting to False" at every save (rnnlab's checkpoints are weights-only and loaded as such).
NOISE = ("💡 Tip:", "`weights_only` was not set")


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in NOISE)


def silence_known_warnings() -> None:
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector",
                 "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNoise) for f in logger.filters):
            logger.addFilter(DropNoise())


def set_threads(threads: int | None) -> None:
    """Intra-op threads for this process (None: PyTorch's default, one per core)."""
    check_count("threads", threads, nullable=True)
    if threads is not None:
        torch.set_num_threads(threads)


# glibc's mallopt options: freed memory kept for reuse rather than returned to the OS
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
KEEP_FREED_MEMORY = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20))


def keep_freed_memory(enabled: bool = True) -> bool:
    """Keep freed blocks of up to 32 MB in the heap for the next allocation (glibc only), instead of unmapping
    them and faulting fresh pages in again: a CPU training step allocates the same large tensors every step (a
    `ptb_small` step's 16 MB logits and gradients; it trains 1.15x faster without those page faults). Returns
    whether it was applied (False when disabled or not on glibc)."""
    if not enabled:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(option, value) == 1 for option, value in KEEP_FREED_MEMORY)


def resolve_device(name: str) -> torch.device:
    """`device=auto` (a CUDA GPU when PyTorch sees one, else the CPU), `cpu`, `cuda`, `cuda:N` or `mps`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    available = {"cpu": lambda: True, "cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device is None or device.type not in available:
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if not available[device.type]():
        raise ValueError(f"device={name}, but PyTorch sees no {device.type.upper()} device")
    return device


def read_text_setting(name: str, value: object, stdin=None) -> tuple[str, str]:
    """The text of a file setting (`text_file=FILE`; `-`: standard input), bytes that are not UTF-8 replaced, and
    where it came from; `name` is how an error names the setting."""
    if str(value) == "-":
        stream = stdin or sys.stdin
        buffer = getattr(stream, "buffer", None)
        text = buffer.read().decode("utf-8", errors="replace") if buffer is not None else stream.read()
        return text, "standard input"
    path = Path(str(value)).expanduser()
    if why := not_a_file(path):
        raise ValueError(f"{name} {path} {why}")
    return path.read_text(encoding="utf-8", errors="replace"), str(path)


def out_of_memory(error: BaseException) -> str | None:
    """One line for an allocation that failed, on the CPU (a RuntimeError from PyTorch's allocator) or a GPU
    (`torch.OutOfMemoryError`): how much it asked for and what to lower; None for any other error."""
    text = str(error)
    cpu = re.search(r"DefaultCPUAllocator: can't allocate memory: you tried to allocate (\d+) bytes", text)
    if isinstance(error, torch.OutOfMemoryError):
        asked = re.search(r"Tried to allocate ([\d.]+ [KMGT]iB)", text)
        where = f"an allocation of {asked.group(1)} on the GPU" if asked else "an allocation on the GPU"
    elif isinstance(error, RuntimeError) and cpu:
        where = f"an allocation of {int(cpu.group(1)) / 2**30:.1f} GiB on the CPU"
    else:
        return None
    return (f"out of memory: {where} failed; lower the batch size (data.batch_size, data.eval_batch_size; "
            "eval.py's batch_size), the window (data.bptt) or the model's size")


def user_error_message(error: BaseException) -> str | None:
    """The one line for an error a user caused, None for any other. A config node that fails to build
    (Hydra's `InstantiationException`) is named by its key, followed by what its constructor said; an
    allocation that fails (a batch too large for the memory) is `out_of_memory`'s line."""
    if message := out_of_memory(error):
        return message
    if isinstance(error, MissingMandatoryValue):
        return f"{error.full_key} has no value: give it on the command line ({error.full_key}=...)"
    if isinstance(error, InstantiationException):
        key = next((line.removeprefix("full_key:").strip() for line in str(error).splitlines()
                    if line.startswith("full_key:")), "")
        cause = error.__cause__
        if cause is None:
            return str(error).splitlines()[0]
        message = user_error_message(cause) or str(cause).strip() or type(cause).__name__
        named = not key or message.startswith((f"{key}.", f"{key}:", f"{key} ", f"{key}="))
        return message if named else f"{key}: {message}"
    if isinstance(error, USER_ERRORS):
        return str(error).strip() or type(error).__name__
    return None


@contextmanager
def one_line_errors(prog: str, extra: tuple[type[BaseException], ...] = (),
                    outcomes: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn the errors a user can cause (and `extra`) into `prog: error: message` and exit status 1,
    without a traceback (`RNNLAB_TRACEBACK=1` or Hydra's `HYDRA_FULL_ERROR=1` shows it).

    In a multirun job the error is recorded in the job's folder for the sweep's summary and ends the job only
    (`prog: error: job N: message`, the block left as if it had returned; any other error as its first line, its
    traceback written to the job's log): the sweep goes on to the other jobs, and exits with status 1 at its end
    (`sweeps.record_job_error`; `outcomes`: errors that are an outcome of the job's own values, such as a diverged
    run; running out of memory is one for every script)."""
    from rnnlab.sweeps import record_job_error

    try:
        yield
    except Exception as e:
        message = user_error_message(e) or (str(e).strip() or type(e).__name__ if isinstance(e, extra) else None)
        first_line = f"{type(e).__name__}: {e}".splitlines()[0]
        job = record_job_error(message or first_line, isinstance(e, outcomes) or out_of_memory(e) is not None)
        if (message is None and job is None) or os.environ.get("RNNLAB_TRACEBACK") or \
                os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if message is None:
            message = f"{first_line} (its traceback: {traceback_to_log()})"
        print(f"{prog}: error: {message}" if job is None else f"{prog}: error: job {job}: {message}", file=sys.stderr)
        if job is None:
            raise SystemExit(1) from None


def check_added_keys(prog: str, read: tuple[str, ...] = ()) -> None:
    """Refuses a key added with Hydra's `+` (say `+data.batch_size=1`) that `prog` would ignore: of the keys a
    command line adds, `prog` reads only those under the groups `read` (e.g. `trainer.`, passed to the Trainer).
    A config group added with `+` (`+experiment=...`) is Hydra's to judge."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    for override in HydraConfig.get().overrides.task:
        key = override.lstrip("+").split("=", 1)[0]
        added = override.startswith("+") and not override.startswith("++") and not (CONF_DIR / key).is_dir()
        if added and not key.startswith(read):
            raise ValueError(f"{override}: {prog} has no setting {key} and would ignore it (its settings: {prog} "
                             "--help)")


def print_config_tree(cfg, keys_first: tuple[str, ...] = ("task_name", "data", "model", "trainer", "callbacks",
                                                           "logger", "paths")) -> None:
    """The resolved config as a `rich` tree on stdout, one branch per top-level group."""
    from omegaconf import OmegaConf
    from rich import print as rich_print
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    keys = [k for k in keys_first if k in cfg] + [k for k in cfg if k not in keys_first]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if OmegaConf.is_config(value) else str(value)
        syntax = Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default")
        tree.add(f"[bold]{key}[/bold]").add(syntax)
    rich_print(tree)


def traceback_to_log() -> str:
    """The traceback of the exception being handled, into the log files: where they are; 'above' where there are
    none and it went to stderr."""
    files = [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if not files:
        traceback.print_exc()
        return "above"
    log_to_files(logging.getLogger(__name__), traceback.format_exc().rstrip())
    return ", ".join(files)


def log_to_files(logger: logging.Logger, text: str) -> None:
    """`text` into the log files only (Hydra's `<job>.log`), not the terminal: for what is shown there otherwise."""
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
