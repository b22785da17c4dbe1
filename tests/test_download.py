"""The download path, for real, against an HTTP server on 127.0.0.1."""

import dataclasses
import errno
import functools
import hashlib
import io
import multiprocessing
import shutil
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rnnlab.data import download as dl
from rnnlab.data.download import DataFileError, RemoteFile, fetch
from rnnlab.data.ptb import load_ptb
from rnnlab.data.sentiment import SentimentDataModule, load_mr
from rnnlab.data.shakespeare import load_tinyshakespeare
from tests.conftest import make_imdb_tree


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without logging; `requests` lists the paths asked for."""

    requests: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        QuietHandler.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """Serves `tmp/served` on a free loopback port; yields (folder, base_url)."""
    served = tmp_path / "served"
    served.mkdir()
    QuietHandler.requests = []
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
        remotes = corpus.values() if isinstance(corpus, dict) else corpus.alternatives
        for remote in remotes:
            assert sha(data_dir / remote.path) == remote.sha256


def test_ptb_and_shakespeare_from_a_mirror_url(server, tmp_path, data_dir):
    served, url = server
    for split in ("train", "valid", "test"):
        shutil.copy(data_dir / "ptb" / f"ptb.{split}.txt", served / f"ptb.{split}.txt")
    shutil.copy(data_dir / "tinyshakespeare" / "input.txt", served / "shakespeare.txt")
    corpus = load_ptb(tmp_path / "data", tmp_path / "cache", url=url + "/")
    assert len(corpus.vocab) == 10_000 and corpus.splits["valid"].numel() == 73_760
    chars = load_tinyshakespeare(tmp_path / "data", cache_dir=tmp_path / "cache", url=f"{url}/shakespeare.txt")
    assert len(chars.vocab) == 66  # 65 characters and the unknown-character symbol
    with pytest.raises(DataFileError, match="checksum mismatch for input.txt downloaded from"):
        load_tinyshakespeare(tmp_path / "other", url=f"{url}/ptb.test.txt")


def make_archive(tmp_path: Path, corpus: str, name: str) -> Path:
    """A small archive in the corpus's real layout: aclImdb/{train,test}/{pos,neg}/ or rt-polaritydata/."""
    src = tmp_path / f"src-{corpus}"
    if corpus == "imdb":
        make_imdb_tree(src)
        tree = "aclImdb"
    else:
        folder = src / "rt-polaritydata"
        folder.mkdir(parents=True)
        (folder / "rt-polarity.pos").write_bytes("a moving , funny film\nsuperb\n".encode("cp1252"))
        (folder / "rt-polarity.neg").write_bytes("dull and lifeless\na caf\xe9 bore\n".encode("cp1252"))
        tree = "rt-polaritydata"
    archive = tmp_path / name
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / tree, arcname=tree)
    return archive


@pytest.mark.parametrize(("corpus", "name"), [("imdb", "aclImdb_v1.tar.gz"), ("mr", "rt-polaritydata.tar.gz")])
def test_archive_download_extracts_once_outside_the_download(server, tmp_path, corpus, name):
    served, url = server
    archive = make_archive(tmp_path, corpus, name)
    shutil.copy(archive, served / name)
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    tree = dl.fetch_tree(corpus, data_dir, cache, url=f"{url}/{name}", sha256=sha(archive))
    spec = dl.CORPORA[corpus]
    assert tree == cache / corpus / spec.tree and (cache / "downloads" / spec.archive.path).is_file()
    assert sorted(p.name for p in (cache / corpus).iterdir()) == [".extract.lock", spec.tree]  # no temporary left
    assert not list((cache / "downloads").rglob("*.part"))
    again = dl.fetch_tree(corpus, data_dir, cache, url=f"{url}/{name}", sha256=sha(archive))
    assert again == tree and QuietHandler.requests == [f"/{name}"]  # downloaded and extracted once
    if corpus == "imdb":
        dm = SentimentDataModule("imdb", str(data_dir), str(cache), url=f"{url}/{name}", sha256=sha(archive),
                                 batch_size=2, seed=0)
        dm.setup()
        assert len(dm.datasets["test"]) == 6
    else:
        texts = load_mr(data_dir, cache, url=f"{url}/{name}", sha256=sha(archive))
        assert texts.labels == [1, 1, 0, 0] and texts.texts[3] == "a caf\xe9 bore"


def test_archive_with_a_wrong_checksum_is_refused_and_not_kept(server, tmp_path):
    served, url = server
    archive = make_archive(tmp_path, "imdb", "aclImdb_v1.tar.gz")
    shutil.copy(archive, served / "aclImdb_v1.tar.gz")
    with pytest.raises(DataFileError, match=f"checksum mismatch .* expected sha256 {'0' * 64}, got {sha(archive)}"):
        dl.fetch_tree("imdb", tmp_path / "data", tmp_path / "cache", url=f"{url}/aclImdb_v1.tar.gz", sha256="0" * 64)
    assert not (tmp_path / "cache" / "downloads" / "imdb" / "aclImdb_v1.tar.gz").exists()
    assert not (tmp_path / "cache" / "imdb" / "aclImdb").exists()


def test_the_default_imdb_source_is_checked_against_its_published_hash(server, tmp_path):
    served, url = server
    shutil.copy(make_archive(tmp_path, "imdb", "aclImdb_v1.tar.gz"), served / "aclImdb_v1.tar.gz")
    published = dl.CORPORA["imdb"].archive.sha256
    with pytest.raises(DataFileError, match=f"expected sha256 {published}"):
        dl.fetch_tree("imdb", tmp_path / "data", tmp_path / "cache", url=f"{url}/aclImdb_v1.tar.gz")


def test_corrupt_archive_is_an_error_naming_it_and_leaves_no_tree(server, tmp_path):
    served, url = server
    good = make_archive(tmp_path, "imdb", "aclImdb_v1.tar.gz").read_bytes()
    (served / "aclImdb_v1.tar.gz").write_bytes(good[: len(good) // 2])  # truncated, with its own (matching) hash
    truncated_sha = hashlib.sha256(good[: len(good) // 2]).hexdigest()
    with pytest.raises(DataFileError, match=r"aclImdb_v1.tar.gz is corrupt or truncated .*delete it"):
        dl.fetch_tree("imdb", tmp_path / "data", tmp_path / "cache", url=f"{url}/aclImdb_v1.tar.gz",
                      sha256=truncated_sha)
    assert sorted(p.name for p in (tmp_path / "cache" / "imdb").iterdir()) == [".extract.lock"]


def test_an_archive_without_a_hash_is_checked_by_its_file_counts(tmp_path, monkeypatch):
    archive = make_archive(tmp_path, "imdb", "aclImdb_v1.tar.gz")
    (tmp_path / "data" / "imdb").mkdir(parents=True)
    shutil.copy(archive, tmp_path / "data" / "imdb" / "aclImdb_v1.tar.gz")
    spec = dl.CORPORA["imdb"]
    monkeypatch.setitem(dl.CORPORA, "imdb", dataclasses.replace(
        spec, archive=dataclasses.replace(spec.archive, sha256=None)))
    with pytest.raises(DataFileError, match=r"aclImdb/train/pos holds 3 files after extraction, expected 12500"):
        dl.fetch_tree("imdb", tmp_path / "data", tmp_path / "cache", download_missing=False)
    counts = {k: 3 for k in spec.expected_files}
    monkeypatch.setitem(dl.CORPORA, "imdb", dataclasses.replace(
        spec, archive=dataclasses.replace(spec.archive, sha256=None), expected_files=counts))
    assert dl.fetch_tree("imdb", tmp_path / "data", tmp_path / "cache", download_missing=False).is_dir()


def fetch_in_process(args):
    corpus, data_dir, cache, url, digest = args
    return str(dl.fetch_tree(corpus, data_dir, cache, url=url, sha256=digest))


@pytest.mark.slow  # a subprocess: left out of mutation runs (bench/mutation.sh)
def test_two_processes_fetching_at_once_get_one_tree(server, tmp_path):
    served, url = server
    archive = make_archive(tmp_path, "imdb", "aclImdb_v1.tar.gz")
    shutil.copy(archive, served / "aclImdb_v1.tar.gz")
    job = ("imdb", str(tmp_path / "data"), str(tmp_path / "cache"), f"{url}/aclImdb_v1.tar.gz", sha(archive))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        trees = pool.map(fetch_in_process, [job, job])
    assert trees[0] == trees[1] == str(tmp_path / "cache" / "imdb" / "aclImdb")
    assert QuietHandler.requests == ["/aclImdb_v1.tar.gz"]  # the second waited and reused the first's tree
    assert sorted(p.name for p in (tmp_path / "cache" / "imdb").iterdir()) == [".extract.lock", "aclImdb"]


def test_a_read_only_cache_is_named_as_the_cause(tmp_path, monkeypatch):
    archive = make_archive(tmp_path, "imdb", "aclImdb_v1.tar.gz")
    (tmp_path / "data" / "imdb").mkdir(parents=True)
    shutil.copy(archive, tmp_path / "data" / "imdb" / "aclImdb_v1.tar.gz")
    cache = tmp_path / "cache"
    real_mkdir = Path.mkdir

    def read_only_mkdir(self, *args, **kwargs):  # as root, chmod cannot make a folder read-only: the kernel's error
        if str(self).startswith(str(cache)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    with pytest.raises(DataFileError, match=f"cannot write {cache / 'imdb'}: the folder is read-only"):
        dl.fetch_tree("imdb", tmp_path / "data", cache, download_missing=False)


@pytest.mark.parametrize("member", ["../esc/escaped.txt", "link"])
def test_unsafe_archive_members_are_refused_with_a_message(tmp_path, member):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    for check in (dl.extract_safely, fallback_extract):
        out = tmp_path / f"out-{check.__name__}"
        with pytest.raises(DataFileError, match=r"evil.tar: unsafe member refused"):
            check(evil, out)
        assert not (tmp_path / "esc").exists()


def test_an_absolute_member_stays_inside_the_target(tmp_path):
    evil = tmp_path / "abs.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo(str(tmp_path / "outside.txt"))
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    dl.extract_safely(evil, tmp_path / "out")  # the data filter strips the leading slash
    assert not (tmp_path / "outside.txt").exists()
    assert (tmp_path / "out" / str(tmp_path / "outside.txt").lstrip("/")).read_bytes() == b"hi"
    with pytest.raises(DataFileError, match="abs.tar: unsafe member refused"):  # the older-Python branch refuses it
        fallback_extract(evil, tmp_path / "out2")


def fallback_extract(archive: Path, dest: Path) -> None:
    """The branch for Pythons without tarfile's data filter (and its FilterError)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delattr(tarfile, "data_filter")
        patch.delattr(tarfile, "FilterError")
        dl.extract_safely(archive, dest)


def test_corrupt_archive_bytes_are_reported(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataFileError, match=r"bad.tar.gz is corrupt or truncated"):
        dl.extract_safely(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_read_only_data_directory_is_read_and_a_missing_file_is_named(tmp_path, monkeypatch, data_dir):
    """Corpora in a read-only folder are used in place (derived files go to the cache); a file missing
    there cannot be downloaded into it, and the error says why."""
    ro = tmp_path / "ro"
    (ro / "ptb").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        shutil.copy(data_dir / "ptb" / f"ptb.{split}.txt", ro / "ptb" / f"ptb.{split}.txt")
    real_mkdir, real_mkstemp = Path.mkdir, dl.tempfile.mkstemp

    def read_only(path):
        if str(path).startswith(str(ro)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: read_only(self) or real_mkdir(self, *a, **k))
    monkeypatch.setattr(dl.tempfile, "mkstemp", lambda *a, **k: read_only(k.get("dir", "")) or real_mkstemp(*a, **k))
    corpus = load_ptb(ro, tmp_path / "cache", download=True)
    assert corpus.splits["valid"].numel() == 73_760
    (ro / "ptb" / "ptb.test.txt").unlink()
    with pytest.raises(DataFileError, match=f"cannot write {ro / 'ptb' / 'ptb.test.txt'}: the folder is read-only"):
        load_ptb(ro, tmp_path / "cache2", download=True)


def test_verify_checks_a_hash_string_and_md5_only_files_with_the_reason_in_the_message(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"some text\n" * 10)
    sha256, md5 = sha(path), hashlib.md5(path.read_bytes()).hexdigest()
    assert dl.verify(path, sha256) is True  # a bare string is a sha256
    assert dl.verify(path, RemoteFile("corpus.txt", "", md5=md5)) is True
    assert dl.verify(path, RemoteFile("corpus.txt", "")) is False  # nothing published to compare with
    with pytest.raises(DataFileError) as err:
        dl.verify(path, "0" * 64)
    assert str(err.value) == (f"checksum mismatch for {path}: expected sha256 {'0' * 64}, got {sha256} "
                              "(the file is truncated or corrupt; delete it to download it again)")
    with pytest.raises(DataFileError) as err:
        dl.verify(path, RemoteFile("corpus.txt", "", md5="f" * 32), source="http://host/c.txt", name="c.txt")
    assert str(err.value) == (f"checksum mismatch for c.txt downloaded from http://host/c.txt: expected md5 "
                              f"{'f' * 32}, got {md5} (the download is truncated, or the server sent another file)")


def test_a_download_streams_into_a_hidden_part_file_beside_the_target_and_logs_it(server, tmp_path, caplog):
    """While the server sends the file, the only thing in the target folder is `.<name>.<random>.part`;
    the log names the URL and the target, and the sha256 of a file with no published hash."""
    served, url = server
    (served / "words.txt").write_text("a b c\n" * 100)
    target = tmp_path / "data" / "words.txt"
    seen = []
    real_copy = shutil.copyfileobj

    def copy_and_look(source, out, *args):  # the server's thread copies too: look only from the client's side
        real_copy(source, out, *args)
        if hasattr(source, "status"):
            seen.extend(p.name for p in target.parent.iterdir())

    with caplog.at_level("INFO", logger="rnnlab.data.download"), \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(dl.shutil, "copyfileobj", copy_and_look)
        dl.download(RemoteFile("words.txt", f"{url}/words.txt"), target)
    assert len(seen) == 1 and seen[0].startswith(".words.txt.") and seen[0].endswith(".part")
    assert [p.name for p in target.parent.iterdir()] == ["words.txt"]
    assert caplog.messages == [f"downloading {url}/words.txt -> {target}",
                               f"{url}/words.txt: sha256 {sha(target)} (no published hash to compare with)"]


def test_a_mirror_is_a_folder_for_several_files_and_the_file_itself_for_one():
    ptb = dl.corpus_files("ptb", url="http://mirror.example/lm//", sha256={"train": "a" * 64})
    expected = [f"http://mirror.example/lm/ptb.{split}.txt" for split in ("train", "valid", "test")]
    assert [f.url for f in ptb.values()] == expected
    assert ptb["train"].sha256 == "a" * 64 and ptb["valid"].sha256 == dl.CORPORA["ptb"]["valid"].sha256
    (text,) = dl.corpus_files("tinyshakespeare", url="http://mirror.example/shakespeare.txt", sha256="b" * 64).values()
    assert (text.url, text.sha256, text.md5, text.path) == ("http://mirror.example/shakespeare.txt", "b" * 64, None,
                                                            "tinyshakespeare/input.txt")
    assert dl.corpus_files("ptb") == dl.CORPORA["ptb"]
    with pytest.raises(KeyError, match="unknown file corpus 'imdb'"):
        dl.corpus_files("imdb")
    archive = dl.corpus_archive("mr", url="http://mirror.example/mr.tgz", sha256="c" * 64).archive
    assert (archive.url, archive.sha256, archive.md5) == ("http://mirror.example/mr.tgz", "c" * 64, None)
    with pytest.raises(KeyError, match="unknown archive corpus 'ptb'"):
        dl.corpus_archive("ptb")


def test_without_tarfiles_data_filter_extraction_checks_the_members_itself(tmp_path, monkeypatch):
    """Pythons before 3.11.4 have no `filter="data"`: extract_safely checks each member, then extracts."""
    archive = make_archive(tmp_path, "mr", "rt-polaritydata.tar.gz")
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    fallback_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "rt-polaritydata").iterdir()) == ["rt-polarity.neg",
                                                                                       "rt-polarity.pos"]
    with pytest.raises(DataFileError) as err:
        fallback_extract(evil, tmp_path / "out2")
    assert str(err.value) == f"{evil}: unsafe member refused ('../escaped.txt')"
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out2").exists()
    with pytest.raises(DataFileError, match=r"bad.tar.gz is corrupt or truncated"):
        fallback_extract(bad, tmp_path / "out3")


def test_a_full_disk_while_extracting_or_renaming_is_named_and_leaves_nothing(tmp_path, monkeypatch, caplog):
    archive = make_archive(tmp_path, "mr", "rt-polaritydata.tar.gz")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(tarfile.TarFile, "extractall", full)
        with pytest.raises(DataFileError) as err:
            dl.extract_safely(archive, tmp_path / "x" / "out")
    assert str(err.value) == f"cannot extract rt-polaritydata.tar.gz into {tmp_path / 'x'}: no space left on the device"
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    archive.rename(data / "rt-polaritydata.tar.gz")
    with monkeypatch.context() as patch:
        patch.setattr(dl.os, "replace", full)
        with pytest.raises(DataFileError) as err:
            dl.fetch_tree("mr", data, cache, download_missing=False, sha256=sha(data / "rt-polaritydata.tar.gz"))
    assert str(err.value) == f"cannot write {cache / 'mr' / 'rt-polaritydata'}: no space left on the device"
    assert [p.name for p in (cache / "mr").iterdir()] == [".extract.lock"]  # no half-extracted folder left
    with caplog.at_level("INFO", logger="rnnlab.data.download"):
        tree = dl.fetch_tree("mr", data, cache, download_missing=False, sha256=sha(data / "rt-polaritydata.tar.gz"))
    assert tree == cache / "mr" / "rt-polaritydata"
    assert f"extracted {data / 'rt-polaritydata.tar.gz'} into {tree}" in caplog.messages


def test_a_missing_archive_with_downloads_disabled_names_where_it_looked(tmp_path):
    with pytest.raises(DataFileError) as err:
        dl.fetch_tree("imdb", tmp_path / "data", tmp_path / "cache", download_missing=False)
    assert str(err.value) == (f"no aclImdb archive in {tmp_path / 'data' / 'imdb'} and downloading is disabled "
                              "(data.download=false)")
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    shutil.copy(make_archive(tmp_path, "mr", "rt-polaritydata.tar.gz"), downloads / "rt-polaritydata.tar.gz")
    tree = dl.fetch_tree("mr", tmp_path / "data", tmp_path / "cache", download_missing=False,
                         sha256=sha(downloads / "rt-polaritydata.tar.gz"))
    assert (tree / "rt-polarity.pos").is_file()  # an earlier download in the cache is found


def test_a_mirror_folder_name_and_a_two_file_corpus(monkeypatch):
    """The mirror folder's own name is kept (only its trailing slashes go); two files are already several;
    a given sha256 replaces the registry's hashes, md5 included."""
    (train,) = [dl.corpus_files("ptb", url="http://mirror.example/ptbX/")["train"].url]
    assert train == "http://mirror.example/ptbX/ptb.train.txt"
    monkeypatch.setitem(dl.CORPORA, "pair", {"a": RemoteFile("pair/a.txt", "http://x/a.txt", md5="1" * 32),
                                             "b": RemoteFile("pair/b.txt", "http://x/b.txt", md5="2" * 32)})
    pair = dl.corpus_files("pair", url="http://mirror.example/p", sha256="c" * 64)
    assert [(f.url, f.sha256, f.md5) for f in pair.values()] == [("http://mirror.example/p/a.txt", "c" * 64, None),
                                                                 ("http://mirror.example/p/b.txt", "c" * 64, None)]


def test_fetch_corpus_downloads_missing_files_from_the_mirror_with_the_given_hashes(server, tmp_path):
    served, url = server
    (served / "shakespeare.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    digest = sha(served / "shakespeare.txt")
    files = dl.fetch_corpus("tinyshakespeare", tmp_path / "data", url=f"{url}/shakespeare.txt", sha256=digest)
    assert files == {"input": tmp_path / "data" / "tinyshakespeare" / "input.txt"}
    assert sha(files["input"]) == digest and QuietHandler.requests == ["/shakespeare.txt"]
    with pytest.raises(DataFileError, match=f"expected sha256 {'0' * 64}"):
        dl.fetch_corpus("tinyshakespeare", tmp_path / "other", url=f"{url}/shakespeare.txt", sha256="0" * 64)


def test_a_server_that_stops_answering_ends_the_download_after_the_timeout(tmp_path):
    import socket

    listener = socket.create_server(("127.0.0.1", 0))  # accepts connections (the kernel's backlog), never answers
    try:
        port = listener.getsockname()[1]
        with pytest.raises(DataFileError, match=rf"could not download http://127.0.0.1:{port}/x.txt to .*timed out"):
            dl.download(RemoteFile("x.txt", f"http://127.0.0.1:{port}/x.txt"), tmp_path / "x.txt", timeout=0.5)
    finally:
        listener.close()
    assert list(tmp_path.iterdir()) == []


def test_a_download_gives_up_on_a_silent_server_after_a_minute_by_default(tmp_path, monkeypatch):
    asked = []

    def no_server(url, timeout):
        asked.append((url, timeout))
        raise OSError("connection refused")

    monkeypatch.setattr(dl.urllib.request, "urlopen", no_server)
    with pytest.raises(DataFileError, match="could not download http://x/a.txt to .*a.txt: connection refused"):
        dl.download(RemoteFile("a.txt", "http://x/a.txt"), tmp_path / "a.txt")
    assert asked == [("http://x/a.txt", 60.0)]


def test_a_read_error_while_extracting_is_named_as_a_corrupt_archive(tmp_path, monkeypatch):
    archive = make_archive(tmp_path, "mr", "rt-polaritydata.tar.gz")

    def unreadable(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(tarfile.TarFile, "extractall", unreadable)
    with pytest.raises(DataFileError) as err:
        dl.extract_safely(archive, tmp_path / "out")
    assert str(err.value) == (f"{archive} is corrupt or truncated ([Errno 5] Input/output error); "
                              "delete it to download it again")


def test_a_failed_write_is_named_by_its_cause():
    path = Path("/data/ptb.txt")
    assert str(dl.os_error(OSError(errno.EIO, "Input/output error"), "write", path)) == \
        "cannot write /data/ptb.txt: Input/output error"
    assert str(dl.os_error(OSError("quota exceeded"), "write", path)) == "cannot write /data/ptb.txt: quota exceeded"
    assert str(dl.os_error(OSError(errno.EROFS, "Read-only file system"), "write", path)).endswith(
        "the folder is read-only (point paths.cache_dir / paths.data_dir at a writable folder)")


def test_an_extraction_waits_for_the_one_in_progress_and_uses_its_tree(tmp_path):
    """A second fetch of the same archive blocks on the extraction lock, then returns the tree the first
    one made without extracting again (no archive is even needed)."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    outcome = {}
    first = dl.FolderLock(cache / "mr", name=".extract.lock", wait=True)

    def second():
        try:
            outcome["tree"] = dl.fetch_tree("mr", data, cache, download_missing=False)
        except Exception as e:  # noqa: BLE001 - reported below
            outcome["error"] = e

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and outcome == {}  # waiting on the lock
    (cache / "mr" / "rt-polaritydata").mkdir()
    first.release()
    thread.join(10)
    assert outcome == {"tree": cache / "mr" / "rt-polaritydata"}


def test_a_crashed_extraction_of_the_same_process_id_is_cleared_first(tmp_path):
    archive = make_archive(tmp_path, "mr", "rt-polaritydata.tar.gz")
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    shutil.copy(archive, data / "rt-polaritydata.tar.gz")
    stale = cache / "mr" / f".rt-polaritydata.extract-{dl.os.getpid()}" / "rt-polaritydata"
    stale.mkdir(parents=True)
    (stale / "left-over.txt").write_text("from a run that died mid-extraction")
    tree = dl.fetch_tree("mr", data, cache, sha256=sha(archive))
    assert sorted(p.name for p in tree.iterdir()) == ["rt-polarity.neg", "rt-polarity.pos"]
    assert sorted(p.name for p in (cache / "mr").iterdir()) == [".extract.lock", "rt-polaritydata"]


def test_an_archive_of_another_tree_or_corrupt_is_named_at_fetch(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    (data / "imdb").mkdir(parents=True)
    other = make_archive(tmp_path, "mr", "other.tar.gz")
    shutil.copy(other, data / "imdb" / "aclImdb_v1.tar.gz")
    with pytest.raises(DataFileError) as err:
        dl.fetch_tree("imdb", data, cache, sha256=sha(other))
    assert str(err.value) == f"{data / 'imdb' / 'aclImdb_v1.tar.gz'} holds no aclImdb/ folder: not the expected archive"
    (data / "imdb" / "aclImdb_v1.tar.gz").write_bytes(b"not an archive at all")
    with pytest.raises(DataFileError, match=r"aclImdb_v1.tar.gz is corrupt or truncated"):
        dl.fetch_tree("imdb", data, cache, sha256=sha(data / "imdb" / "aclImdb_v1.tar.gz"))
    assert sorted(p.name for p in (cache / "imdb").iterdir()) == [".extract.lock"]


def test_file_counts_name_the_folder_and_what_was_expected(tmp_path):
    (tmp_path / "tree" / "train").mkdir(parents=True)
    (tmp_path / "tree" / "train" / "1.txt").write_text("x")
    dl.count_files(tmp_path / "tree", {"train": 1})
    with pytest.raises(DataFileError) as err:
        dl.count_files(tmp_path / "tree", {"train": 1, "test": 2})
    assert str(err.value) == (f"{tmp_path / 'tree' / 'test'} holds 0 files after extraction, expected 2: "
                              "the archive is incomplete or not the expected one")
