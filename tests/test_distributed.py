"""Under DDP each rank reads its own rows or batches (disjoint, together the whole split), and metrics are
aggregated over the ranks: the same number as one process over the same data."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from rnnlab.data.lm_datamodule import TextFilesDataModule
from rnnlab.data.sentiment import SentimentDataModule
from rnnlab.data.sine import SineDataModule
from rnnlab.data.streams import batchify
from rnnlab.evaluate import evaluate
from rnnlab.train import train
from tests.conftest import ROOT, TINY_TRAINER, compose_config, make_imdb_tree, run_script, synthetic_overrides


def as_rank(datamodule, rank: int, world: int = 2):
    datamodule.trainer = SimpleNamespace(global_rank=rank, world_size=world, training=False)
    return datamodule


def lm_datamodule(folder: Path, **kw) -> TextFilesDataModule:
    return TextFilesDataModule(train=str(folder / "ptb.train.txt"), valid=str(folder / "ptb.valid.txt"),
                               test=str(folder / "ptb.test.txt"), data_dir=".", batch_size=4, eval_batch_size=2,
                               bptt=8, **kw)


def train_tokens(folder: Path) -> torch.Tensor:
    dm = lm_datamodule(folder)
    dm.setup()
    return dm.corpus.splits["train"]


def test_lm_ranks_read_disjoint_blocks_of_rows_that_cover_the_stream(synthetic_ptb):
    loaders = [as_rank(lm_datamodule(synthetic_ptb), r).train_dataloader() for r in (0, 1)]
    rows = [loader.dataset.data for loader in loaders]
    whole = batchify(train_tokens(synthetic_ptb), 8)  # 2 ranks x 4 rows
    torch.testing.assert_close(torch.cat(rows), whole)
    first = [next(iter(loader))[0] for loader in loaders]
    assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize("batching", ["bucket", "pad"])
def test_sentiment_ranks_take_disjoint_batches(tmp_path, batching):
    make_imdb_tree(tmp_path / "data" / "imdb", per_class=30, extra_words=10)
    seen = []
    for rank in (0, 1):
        dm = as_rank(SentimentDataModule("imdb", str(tmp_path / "data"), str(tmp_path / "cache"), batch_size=4,
                                         batching=batching, max_len=20, seed=0), rank)
        loader = dm.train_dataloader()
        sampler = loader.batch_sampler if batching == "bucket" else loader.sampler
        assert (sampler.rank, getattr(sampler, "world_size", getattr(sampler, "num_replicas", None))) == (rank, 2)
        seen.append([tuple(map(tuple, ids.tolist())) for ids, _, _ in loader])
    texts = [{row for batch in rank_batches for row in batch} for rank_batches in seen]
    assert len(seen[0]) == len(seen[1])
    total = len(dm.datasets["train"])
    assert len(texts[0] | texts[1]) >= total - 8  # (identical texts collapse in the set) nearly all, split in two
    assert len(texts[0] & texts[1]) <= 4  # at most the one padded batch is shared


def test_sine_ranks_take_disjoint_windows():
    dms = [as_rank(SineDataModule(batch_size=8, seed=0), r) for r in (0, 1)]
    idx = [list(dm.train_dataloader().sampler) for dm in dms]
    assert set(idx[0]).isdisjoint(idx[1]) and len(idx[0]) == len(idx[1])


def test_ddp_training_ranks_read_disjoint_rows(synthetic_ptb, tmp_path):
    args = [*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "trainer=ddp", "trainer.accelerator=cpu",
            "trainer.devices=2", f"hydra.run.dir={tmp_path / 'out'}",
            "+callbacks.record._target_=tests.test_distributed.RecordRank", f"+callbacks.record.folder={tmp_path}"]
    result = run_script("train.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    batches = [torch.load(tmp_path / f"rank{r}.pt")["batches"] for r in (0, 1)]
    whole = batchify(train_tokens(synthetic_ptb), 8)  # 2 ranks x 4 rows
    for step in range(2):
        torch.testing.assert_close(torch.cat([batches[0][step], batches[1][step]]), whole[:, step * 8:(step + 1) * 8])
    assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()


def test_ddp_evaluation_aggregates_to_the_single_process_number(synthetic_ptb, tmp_path):
    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    single = evaluate(compose_config(["trainer.enable_progress_bar=false", f"ckpt_path={ckpt}", "batch_size=4"],
                                     tmp_path, config_name="eval"))
    result = run_script("eval.py", f"ckpt_path={ckpt}", "batch_size=2", "trainer=ddp", "trainer.accelerator=cpu",
                        "trainer.devices=2", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'e'}",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    value = float(re.search(r"test/ppl[^\d]+([\d.]+)", result.stdout).group(1))  # from Lightning's results table
    assert value == pytest.approx(single["test/ppl"], rel=1e-5)


class RecordRank(L.Callback):
    """This rank's first `n` training batch inputs and its final metrics, saved to `<folder>/rank<r>.pt`."""

    def __init__(self, folder: str, n: int = 2):
        self.folder, self.n, self.seen = Path(folder), n, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx < self.n:
            self.seen.append(batch[0].cpu())

    def on_fit_end(self, trainer, pl_module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        torch.save({"batches": self.seen, "metrics": metrics, "world": trainer.world_size,
                    "node": trainer.node_rank}, self.folder / f"rank{trainer.global_rank}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_node_overrides(task: str, tmp_path: Path) -> list[str]:
    """Corpora in which no two windows hold the same symbols, so rows read twice would show."""
    rng = random.Random(0)
    if task == "ptb":
        folder = tmp_path / "unique"
        folder.mkdir()
        words = [f"u{i}" for i in range(3000)]
        (folder / "ptb.train.txt").write_text("\n".join(" ".join(words[i:i + 10]) for i in range(0, 3000, 10)))
        for split in ("valid", "test"):
            (folder / f"ptb.{split}.txt").write_text(" ".join(rng.sample(words, 200)) + "\n")
        return synthetic_overrides(folder)
    if task == "charrnn":
        text = tmp_path / "text.txt"
        text.write_text("".join(rng.choice("abcdefghijklmnopqrstuvwxyz .,;ABCDEFGHIJ\n") for _ in range(6000)))
        return ["task=charrnn", f"data.text_file={text}", "data.batch_size=4", "data.bptt=16",
                "model.net.hidden_sizes=[16]", "callbacks.text_samples=null"]
    if task == "sentiment":
        make_imdb_tree(tmp_path / "data" / "imdb", per_class=30, extra_words=10)
        return ["task=sentiment", "data=imdb", "model/embeddings=none", f"paths.data_dir={tmp_path / 'data'}",
                "data.batch_size=4", "model.net.hidden_size=8", "model.net.embedding_dim=8",
                "callbacks.trajectories=null"]
    return ["task=sine", "model.net.hidden_sizes=[8]", "model.plot=false"]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ptb", "charrnn", "sentiment", "sine"])
def test_two_nodes_under_torchrun_read_disjoint_shards_and_agree_on_the_metrics(task, tmp_path):
    """Two "nodes" of one CPU process each on 127.0.0.1 (`torchrun --nnodes=2 --node-rank=r`, gloo), as on a
    cluster: each node starts its own torchrun; the run folder is shared."""
    args = [*two_node_overrides(task, tmp_path), *TINY_TRAINER, "test=false", "logger=none",
            "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
            f"hydra.run.dir={tmp_path / 'out'}", "+callbacks.record._target_=tests.test_distributed.RecordRank",
            f"+callbacks.record.folder={tmp_path}"]
    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={r}",
                               "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}",
                               str(ROOT / "train.py"), *args],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [(r["world"], r["node"]) for r in ranks] == [(2, 0), (2, 1)]
    for a, b in zip(ranks[0]["batches"], ranks[1]["batches"]):
        rows_a, rows_b = {tuple(row.flatten().tolist()) for row in a}, {tuple(row.flatten().tolist()) for row in b}
        assert rows_a.isdisjoint(rows_b), "both nodes read the same rows"
    assert ranks[0]["metrics"] and ranks[0]["metrics"] == ranks[1]["metrics"]  # aggregated: one number everywhere
    assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()
