"""Writing files so that nothing is ever half-written, and one run per folder."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

PART_SUFFIX = ".part"
STALE_PART_SECONDS = 60.0  # a temporary file older than this belongs to a killed writer


def clean_stale_parts(folder: Path, name: str, older_than: float = STALE_PART_SECONDS) -> None:
    """Delete `.<name>.*.part` files in `folder` left by a writer that was killed before its rename."""
    now = time.time()
    for part in folder.glob(f".{name}.*{PART_SUFFIX}"):
        try:
            if now - part.stat().st_mtime > older_than:
                part.unlink()
        except OSError:
            pass


class WriteError(OSError):
    """A file could not be written (a full disk, a read-only folder); the file it would replace is unchanged."""


# How torch.save reports a failed write (it raises RuntimeError, not OSError)
TORCH_WRITE_FAILURES = re.compile(r"iostream error|unexpected pos|file write failed|failed writing file")
LOW_SPACE_BYTES = 64 << 20
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)  # what a write into a read-only folder raises


def write_failure(e: BaseException, folder: Path | None = None) -> str:
    """Why a write failed, in words: from its errno, or, for an error without one (torch.save's), from the free
    space left in `folder` when it is given."""
    code = getattr(e, "errno", None)
    if code in READ_ONLY_ERRNOS:
        return "the folder is read-only"
    try:
        low = code is None and folder is not None and shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        low = False
    if code == errno.ENOSPC or low:
        return "no space left on the device"
    return getattr(e, "strerror", None) or str(e)


def not_a_file(path: Path) -> str | None:
    """Why `path` is not a file to read ("is a folder, not a file", "does not exist"); None when it is one."""
    if path.is_file():
        return None
    return "is a folder, not a file" if path.is_dir() else "does not exist"


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """`write(tmp)` to a temporary file beside `path`, then rename it to `path`: never a partial file.

    The file gets the permissions of a plainly created file (the umask), not `mkstemp`'s 0600. A failed
    write (a full disk, a read-only folder) is a `WriteError` naming the file and the cause.
    """
    path = Path(path)
    if path.is_dir():  # os.replace would say "Is a directory", after the whole file was written beside it
        raise WriteError(f"cannot write {path}: it is a folder; give a file name (e.g. {path / 'name'})")
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_parts(path.parent, path.name)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        write(tmp_name)
        os.replace(tmp_name, path)
    except (OSError, RuntimeError) as e:
        if not isinstance(e, OSError) and not TORCH_WRITE_FAILURES.search(str(e)):
            raise
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)  # first: it may hold the space the check below looks for
        kept = " (the previous file is unchanged)" if path.exists() else ""
        raise WriteError(f"cannot write {path}: {write_failure(e, path.parent)}{kept}") from None
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


def write_metrics(folder: str | Path, metrics: dict[str, float]) -> Path:
    """`folder/metrics.json`, written atomically: a run's final metrics, for multirun summaries and scripts."""
    path = Path(folder) / "metrics.json"
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=1) + "\n"))
    return path


def read_metrics(folder: str | Path) -> dict[str, float]:
    """The metrics `write_metrics` wrote into `folder`; {} where it wrote none."""
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def atomic_torch_save(obj: object, path: Path) -> None:
    """`torch.save` through a temporary file and a rename."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


class FolderLockedError(RuntimeError):
    """Another process holds the lock of a folder."""


class FolderLock:
    """An exclusive `flock` on `<folder>/<name>`, held while the object lives (or until `release`).

    The lock is the kernel's: it disappears with the process, so a killed run never leaves a stale lock.
    """

    def __init__(self, folder: Path, name: str = ".lock", wait: bool = False):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / name
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            owner = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise FolderLockedError(f"{folder} is in use by another process (pid {owner})") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
