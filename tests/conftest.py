from __future__ import annotations

import functools
import importlib.util
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from rnnlab import CONF_DIR

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs in one pytest process per CPU (pytest-xdist): one intra-op thread each, in this process and
    # in the scripts it starts, as two 2-thread jobs on 2 cores run several times slower than two 1-thread jobs.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
# The real corpora: RNNLAB_DATA_DIR, else a shared copy beside the clone, else the project's own data/
# folder, where the tests fetch them on first use through rnnlab's download code.
SHARED = ROOT.parent / "shared" / "data"
DATA_DIR = Path(os.environ.get("RNNLAB_DATA_DIR") or (SHARED if SHARED.is_dir() else ROOT / "data")).resolve()
REAL_DATA_FIXTURES = {"data_dir", "mr_checkpoint", "char_checkpoint"}

# Tiny settings for any run in the tests.
TINY_TRAINER = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


@functools.cache
def real_corpora_problem() -> str | None:
    """None once PTB, Tiny Shakespeare and sentence polarity are in DATA_DIR (fetched there if missing),
    else why they are not."""
    from rnnlab.data.download import DataFileError, fetch_corpus, fetch_tree

    try:
        fetch_corpus("ptb", DATA_DIR)
        fetch_corpus("tinyshakespeare", DATA_DIR)
        if not (DATA_DIR / "rt-polaritydata" / "rt-polarity.pos").is_file():
            shutil.copytree(fetch_tree("mr", DATA_DIR, DATA_DIR / ".fetch"), DATA_DIR / "rt-polaritydata")
    except DataFileError as e:
        return str(e)
    return None


def pytest_xdist_auto_num_workers(config) -> int | None:
    """`-n auto`: one worker per CPU this process may use (logical ones: the test processes run 1 thread each),
    at most 4, as tests/test_bench.py alone, which one worker runs, takes about a third of the suite;
    xdist's own `PYTEST_XDIST_AUTO_NUM_WORKERS`, where set, wins."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return min(len(os.sched_getaffinity(0)), 4)


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("real_data")


def missing_modules(names) -> list[str]:
    """The modules of `names` (dotted names allowed) that cannot be imported here."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def pytest_runtest_setup(item) -> None:
    """Tests on the real corpora skip, with the reason, where the corpora cannot be fetched (no network), and
    tests marked `needs(...)` where those optional packages are not installed (the `dev` extra has them); with
    RNNLAB_NO_SKIP=1 (CI, which has both) that is a failure instead."""
    message = None
    if item.get_closest_marker("real_data") and (problem := real_corpora_problem()):
        message = f"needs the real corpora in {DATA_DIR}, which could not be fetched: {problem}"
    elif (needs := item.get_closest_marker("needs")) and (missing := missing_modules(needs.args)):
        message = f"needs {', '.join(missing)}, not installed here (in the dev extra: pip install -e '.[dev]')"
    if message:
        if os.environ.get("RNNLAB_NO_SKIP"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def same_random_state() -> None:
    """Every test starts from the same random state, whichever tests ran before it in its worker."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture
def synthetic_ptb(tmp_path: Path) -> Path:
    """A learnable PTB-format corpus in `tmp/corpus/ptb.{train,valid,test}.txt`.

    Each line counts up from a random word: `w7 w8 w9 ...` (41 words with `<unk>`).
    """
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)] + ["<unk>"]
    folder = tmp_path / "corpus"
    folder.mkdir()
    for split, lines in (("train", 400), ("valid", 60), ("test", 60)):
        starts = [rng.randrange(len(words)) for _ in range(lines)]
        text = "\n".join(
            " ".join(words[(s + k) % len(words)] for k in range(rng.randint(3, 12))) for s in starts
        )
        (folder / f"ptb.{split}.txt").write_text(text + "\n")
    return folder


def compose_config(overrides: list[str], tmp_path: Path, config_name: str = "train") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name,
            overrides=[
                f"paths.output_dir={tmp_path / 'run'}",
                f"paths.data_dir={DATA_DIR}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                *overrides,
            ],
        )


def synthetic_overrides(folder: Path) -> list[str]:
    return [
        "data=text_files",
        f"data.train={folder / 'ptb.train.txt'}",
        f"data.valid={folder / 'ptb.valid.txt'}",
        f"data.test={folder / 'ptb.test.txt'}",
        "data.batch_size=4",
        "data.eval_batch_size=2",
        "data.bptt=8",
        "model.net.hidden_sizes=[16,12]",
        "model.net.embedding_dim=8",
    ]


def run_script(script: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RNNLAB_DATA_DIR": str(DATA_DIR), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def make_imdb_tree(root: Path, per_class: int = 3, extra_words: int = 0) -> None:
    """`root/aclImdb/{train,test}/{pos,neg}/<i>_<rating>.txt`: short reviews with a `<br />`, each
    followed by 0 to `extra_words` random neutral words (seeded)."""
    rng = random.Random(0)
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                word = "great wonderful" if label == "pos" else "awful boring"
                extra = " ".join(rng.choice(["film", "plot", "actor"]) for _ in range(rng.randint(0, extra_words)))
                text = f"A {word} film.<br />Review {i}." + (f" {extra}" if extra else "")
                (folder / f"{i}_{8 if label == 'pos' else 2}.txt").write_text(text)
