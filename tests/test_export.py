"""ONNX export (export.py) and the onnxruntime backends of generate.py and predict.py: same outputs as PyTorch."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnnlab.checkpoint import load_run
from rnnlab.export import export
from rnnlab.generate import generate
from rnnlab.onnx_export import LMStep, OnnxModel, zero_states
from rnnlab.predict import predict
from rnnlab.train import train
from tests.conftest import ROOT, TINY_TRAINER, compose_config, make_imdb_tree, synthetic_overrides

pytestmark = pytest.mark.needs("onnx", "onnxscript", "onnxruntime")


def script_config(name: str, overrides: list[str]):
    """The composed config of `export.py`, `generate.py` or `predict.py` (they have no `paths` group)."""
    from hydra import compose, initialize_config_dir

    from rnnlab import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=overrides)


def trained(overrides: list[str], tmp_path) -> str:
    train(compose_config([*overrides, *TINY_TRAINER, "test=false", "logger=none"], tmp_path))
    return str(tmp_path / "run" / "checkpoints" / "last.ckpt")


def exported(ckpt: str, tmp_path) -> str:
    out = tmp_path / "export" / "model.onnx"
    export(script_config("export", [f"ckpt_path={ckpt}", f"output={out}"]))
    return str(out)


@pytest.fixture
def char_lm(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i % 7}: the quick brown fox jumps over the lazy dog.\n" for i in range(60)))
    ckpt = trained(["task=charrnn", f"data.text_file={text}", "model.net.hidden_sizes=[24,16]",
                    "callbacks.text_samples=null"], tmp_path)
    return ckpt, exported(ckpt, tmp_path)


@pytest.mark.parametrize("cell", ["gru", "naive_lstm"])
def test_word_lm_step_matches_pytorch_for_any_batch(synthetic_ptb, tmp_path, cell):
    ckpt = trained([*synthetic_overrides(synthetic_ptb), f"model.net.cell={cell}"], tmp_path)
    session = OnnxModel(exported(ckpt, tmp_path), "language_model_step")
    net = load_run(ckpt).model.net
    step = LMStep(net)
    states = zero_states(net, 5)
    ids = torch.tensor([1, 4, 7, 2, 9])
    for _ in range(4):  # a few steps, the state carried
        with torch.no_grad():
            expected = step(ids, *(torch.from_numpy(s) for s in states))
        got = session(ids.numpy(), *states)
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e.numpy(), rtol=0, atol=1e-5)
        states = got[1:]
        ids = torch.from_numpy(got[0]).argmax(-1)


def test_generation_with_onnxruntime_gives_the_pytorch_text(char_lm, tmp_path):
    ckpt, onnx = char_lm
    common = [f"ckpt_path={ckpt}", "length=200", "seed=5", "prime=line", "temperature=0.8"]
    texts = {}
    for backend in ("torch", "onnxruntime"):
        cfg = script_config("generate", [*common, f"backend={backend}", f"onnx_path={onnx}"])
        texts[backend] = generate(cfg, out=io.StringIO())
    assert texts["onnxruntime"] == texts["torch"] and len(texts["torch"][0]) == 200
    batched = script_config("generate", [*common, "backend=onnxruntime", f"onnx_path={onnx}", "num_samples=3"])
    assert len(generate(batched, out=io.StringIO())) == 3  # a dynamic batch


def test_model_card_is_written_beside_the_export(char_lm, tmp_path, capsys):
    ckpt, _ = char_lm
    card = (tmp_path / "export" / "model.card.md").read_text()
    for section in ("## Data", "## Preset and command-line overrides", "## Metrics", "## Intended use", "## Limits"):
        assert section in card
    assert "language_model_step" in card and "val/bpc" in card
    assert f"## Data\n`CharDataModule` from `{tmp_path / 'text.txt'}` (" in card  # the text it learned, not a folder
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # the warnings a user would see
    result = subprocess.run([sys.executable, str(ROOT / "export.py"), f"ckpt_path={ckpt}",
                             f"output={tmp_path / 'export' / 'second.onnx'}"], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""  # no exporter warnings or logs that do not hold here
    assert result.stdout.startswith(f"wrote {tmp_path / 'export' / 'second.onnx'} (language_model_step: ids, h0, c0")
    assert (tmp_path / "export" / "model.card.md").read_text() == card  # a second export keeps the first card
    assert (tmp_path / "export" / "second.card.md").read_text().startswith("# Model card: second.onnx\n")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_sentiment_onnx_gives_the_pytorch_probabilities_and_trajectory(tmp_path, bidirectional):
    make_imdb_tree(tmp_path / "data" / "imdb", per_class=20, extra_words=10)
    ckpt = trained(["task=sentiment", "data=imdb", "model/embeddings=none", f"paths.data_dir={tmp_path / 'data'}",
                    "data.batch_size=8", "model.net.hidden_size=8", "model.net.embedding_dim=8",
                    f"model.net.bidirectional={str(bidirectional).lower()}", "callbacks.trajectories=null"], tmp_path)
    onnx = exported(ckpt, tmp_path)
    text = "the acting was great but the plot was a mess and the ending was great"
    lines = tmp_path / "texts.txt"
    lines.write_text("a great film\nterrible plot and bad acting all along the way\n\nfine\n")
    results = {}
    for backend in ("torch", "onnxruntime"):  # both on the CPU, where the onnxruntime backend runs
        common = [f"ckpt_path={ckpt}", f"backend={backend}", f"onnx_path={onnx}", "device=cpu"]
        one = predict(script_config("predict", [*common, f"text='{text}'"]),
                      out=io.StringIO(), err=io.StringIO())[0]
        many = predict(script_config("predict", [*common, f"input={lines}"]),
                       out=io.StringIO(), err=io.StringIO())
        results[backend] = (one, many)
    (t1, tm), (o1, om) = results["torch"], results["onnxruntime"]
    np.testing.assert_allclose(o1.trajectory, t1.trajectory, rtol=0, atol=1e-5)
    assert o1.probability == pytest.approx(t1.probability, abs=1e-5) and len(o1.trajectory) == len(text.split())
    assert om[2] is None and tm[2] is None
    np.testing.assert_allclose([p for p in om if p is not None], [p for p in tm if p is not None], rtol=0, atol=1e-5)


def test_sine_onnx_matches_pytorch(tmp_path):
    ckpt = trained(["task=sine", "model.net.hidden_sizes=[8,6]", "model.plot=false"], tmp_path)
    session = OnnxModel(exported(ckpt, tmp_path), "series_regressor")
    x = torch.randn(3, 37, 1)  # another batch and length than the export's example
    with torch.no_grad():
        expected = load_run(ckpt).model.net(x)
    np.testing.assert_allclose(session(x.numpy())[0], expected.numpy(), rtol=0, atol=1e-5)


def test_onnx_backend_needs_a_path_and_the_right_kind_of_file(char_lm, tmp_path):
    ckpt, onnx = char_lm
    with pytest.raises(ValueError, match=r"backend=onnxruntime needs onnx_path=<the file export.py wrote>"):
        generate(script_config("generate", [f"ckpt_path={ckpt}", "backend=onnxruntime"]))
    with pytest.raises(ValueError, match=r"is not an exported sentiment classifier"):
        OnnxModel(onnx, "sentiment_classifier")


@pytest.mark.parametrize(("data", "source"), [
    ({"train": "a.txt", "valid": "b.txt", "test": "c.txt", "data_dir": "d"}, "`a.txt`, `b.txt`, `c.txt`"),
    ({"text_file": "t.txt", "data_dir": "d"}, "`t.txt`"),
    ({"text_file": None, "data_dir": "d"}, "`d`"),  # Tiny Shakespeare
    ({"source": "files", "path": "docs/", "data_dir": "d"}, "`docs/`"),
    ({"source": "imdb", "path": None, "data_dir": "d"}, "imdb texts in `d`"),
    ({"dataset": "imdb", "reviews_file": "r.txt", "labels_file": "l.txt", "data_dir": "d"},
     "`r.txt` with labels `l.txt`"),
    ({"dataset": "mr", "reviews_file": None, "data_dir": "d"}, "mr texts in `d`"),
    ({"series_file": "s.npy"}, "`s.npy`"),
    ({"series_file": None}, "clean synthetic sines, generated"),
])
def test_the_model_card_names_the_files_the_run_read(data, source):
    from omegaconf import OmegaConf

    from rnnlab.onnx_export import data_source

    assert data_source(OmegaConf.create(data)) == source
