"""The download path, for real, against an HTTP server on 127.0.0.1."""

import functools
import hashlib
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rnnlab.data import download as dl
from rnnlab.data.download import DataFileError, RemoteFile, fetch


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serves `tmp/served` on a free loopback port; yields (folder, base_url)."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_downloads_verifies_and_reuses(server, tmp_path, data_dir):
    served, url = server
    source = data_dir / "ptb" / "ptb.valid.txt"
    shutil.copy(source, served / "ptb.valid.txt")
    remote = RemoteFile("ptb/ptb.valid.txt", f"{url}/ptb.valid.txt", dl.CORPORA["ptb"]["valid"].sha256)
    target_dir = tmp_path / "data"
    path = fetch(remote, target_dir)
    assert path == target_dir / "ptb" / "ptb.valid.txt"
    assert path.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["ptb.valid.txt"]  # no temporary left
    (served / "ptb.valid.txt").unlink()  # a second fetch must not need the network
    assert fetch(remote, target_dir) == path


def test_corrupt_download_raises_naming_file_and_hashes_and_leaves_nothing(server, tmp_path, data_dir):
    served, url = server
    truncated = (data_dir / "ptb" / "ptb.test.txt").read_bytes()[:1000]
    (served / "ptb.test.txt").write_bytes(truncated)
    expected = dl.CORPORA["ptb"]["test"].sha256
    remote = RemoteFile("ptb/ptb.test.txt", f"{url}/ptb.test.txt", expected)
    target_dir = tmp_path / "data"
    with pytest.raises(DataFileError) as err:
        fetch(remote, target_dir)
    message = str(err.value)
    assert "ptb.test.txt" in message and expected in message
    assert hashlib.sha256(truncated).hexdigest() in message
    assert list((target_dir / "ptb").iterdir()) == []  # neither the file nor a partial one


def test_missing_file_on_server_is_a_clear_error(server, tmp_path):
    _, url = server
    remote = RemoteFile("x/missing.txt", f"{url}/missing.txt", "0" * 64)
    with pytest.raises(DataFileError, match="could not download .*missing.txt"):
        fetch(remote, tmp_path / "data")
    assert list((tmp_path / "data" / "x").iterdir()) == []


def test_corrupt_local_file_is_reported_not_used(tmp_path, data_dir):
    folder = tmp_path / "data" / "ptb"
    folder.mkdir(parents=True)
    (folder / "ptb.train.txt").write_bytes((data_dir / "ptb" / "ptb.train.txt").read_bytes()[:-10])
    with pytest.raises(DataFileError, match=r"checksum mismatch for .*ptb.train.txt: expected sha256 fcea919f"):
        dl.fetch_corpus("ptb", tmp_path / "data")


def test_download_disabled_names_the_missing_file(tmp_path):
    with pytest.raises(DataFileError, match=r"ptb.train.txt is missing"):
        dl.fetch_corpus("ptb", tmp_path, download_missing=False)


def test_checksums_of_the_shared_copies_match(data_dir):
    for corpus in dl.CORPORA.values():
        for remote in corpus.values():
            assert sha(data_dir / remote.path) == remote.sha256
