"""checkpoint.py on its own: reading weights-only, the refusals' messages, weight starts and run rebuilding."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from rnnlab.checkpoint import (
    CheckpointError,
    build_model,
    checkpoint_file,
    init_weights,
    load_run,
    read_checkpoint,
    run_folder,
)
from rnnlab.data.vocab import Vocabulary
from tests.test_errors import PAYLOAD_GLOBAL, plant_payload


def error_of(path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path, **kwargs)
    return str(err.value)


def test_each_refusal_says_what_the_file_is_not(tmp_path):
    assert error_of(tmp_path / "none.ckpt") == f"checkpoint {tmp_path / 'none.ckpt'} does not exist"
    assert error_of(tmp_path) == (f"checkpoint {tmp_path} is a folder with no best.ckpt in it or in its "
                                  "checkpoints/; give a .ckpt file")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "best.ckpt").write_bytes(b"")
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert checkpoint_file(tmp_path / "run") == checkpoint_file(tmp_path / "run" / "checkpoints") == best
    assert checkpoint_file(tmp_path) == tmp_path and checkpoint_file(best) == best
    assert error_of(tmp_path / "run") == f"checkpoint {tmp_path / 'run'} is a folder; give a .ckpt file, such as {best}"
    torch.save({"rnnlab": {}}, tmp_path / "no_state.ckpt")
    assert error_of(tmp_path / "no_state.ckpt") == \
        f"{tmp_path / 'no_state.ckpt'} is not an rnnlab checkpoint (no 'state_dict' entry)"
    torch.save([1, 2], tmp_path / "list.ckpt")
    assert error_of(tmp_path / "list.ckpt") == \
        f"{tmp_path / 'list.ckpt'} is not an rnnlab checkpoint (no 'state_dict' entry)"
    torch.save({"state_dict": {}}, tmp_path / "lightning.ckpt")
    assert read_checkpoint(tmp_path / "lightning.ckpt", require_rnnlab=False) == {"state_dict": {}}
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "lightning.ckpt").read_bytes()[:300])  # a truncated save
    assert error_of(tmp_path / "cut.ckpt").startswith(f"{tmp_path / 'cut.ckpt'} is not a readable PyTorch checkpoint "
                                                      "(RuntimeError: PytorchStreamReader failed reading zip archive")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    assert error_of(tmp_path / "text.ckpt") == \
        f"{tmp_path / 'text.ckpt'} is not a readable PyTorch checkpoint (UnpicklingError: Unsupported operand 110)"


def test_a_payload_is_named_and_refused_even_when_the_environment_forces_unsafe_loading(tmp_path, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns a default `torch.load` unsafe; an explicit weights_only=True stays."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    plant_payload(tmp_path / "evil.ckpt", tmp_path / "marker")
    assert error_of(tmp_path / "evil.ckpt") == (
        f"{tmp_path / 'evil.ckpt'} holds Python objects ({PAYLOAD_GLOBAL}), not only tensors and plain data; "
        "refusing to load it: loading it could run code")
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_mapped_read_holds_the_same_data_and_refuses_the_same_files(tmp_path, legacy):
    """`mmap=True` (the resume checks' read): the same tensors and settings, and a payload still refused unrun."""
    saved = {"state_dict": {"net.w": torch.randn(3, 4)}, "rnnlab": {"config": {"seed": 1}}, "global_step": 7}
    torch.save(saved, tmp_path / "a.ckpt", _use_new_zipfile_serialization=not legacy)
    mapped = read_checkpoint(tmp_path / "a.ckpt", mmap=True)
    assert mapped.keys() == saved.keys() and mapped["rnnlab"] == saved["rnnlab"] and mapped["global_step"] == 7
    assert torch.equal(mapped["state_dict"]["net.w"], saved["state_dict"]["net.w"])
    plant_payload(tmp_path / "evil.ckpt", tmp_path / "marker")
    assert error_of(tmp_path / "evil.ckpt", mmap=True) == error_of(tmp_path / "evil.ckpt")
    assert not (tmp_path / "marker").exists()
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    assert error_of(tmp_path / "text.ckpt", mmap=True) == error_of(tmp_path / "text.ckpt")


def test_an_unpickling_error_naming_no_global_is_reported_as_it_is(tmp_path, monkeypatch):
    torch.save({"state_dict": {}}, tmp_path / "odd.ckpt")

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError("Unsupported operand 149")

    monkeypatch.setattr(torch, "load", refuse)
    assert error_of(tmp_path / "odd.ckpt") == \
        f"{tmp_path / 'odd.ckpt'} is not a readable PyTorch checkpoint (UnpicklingError: Unsupported operand 149)"


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)


def test_init_weights_takes_the_shared_weights_and_names_the_first_three_missing(tmp_path):
    source = Pair()
    state = {**source.state_dict(), "extra.weight": torch.zeros(1)}  # e.g. a metric's buffer this model lacks
    torch.save({"state_dict": state, "rnnlab": {}}, tmp_path / "run.ckpt")
    target = Pair()
    init_weights(target, tmp_path / "run.ckpt")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run.ckpt").rename(tmp_path / "run" / "checkpoints" / "best.ckpt")
    target = Pair()
    init_weights(target, tmp_path / "run")  # a run folder: its best checkpoint
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    torch.save({"state_dict": {"c.weight": torch.zeros(2, 2)}, "rnnlab": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError) as err:
        init_weights(Pair(), tmp_path / "other.ckpt")
    assert str(err.value) == (f"init_from={tmp_path / 'other.ckpt'} does not fit this model: missing "
                              "['a.bias', 'a.weight', 'b.bias'], other shapes []")  # the first three of four


def test_a_run_is_rebuilt_from_a_checkpoint_without_model_kwargs_or_vocabulary(tmp_path):
    net = nn.Linear(3, 2)
    config = {"model": {"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 2}}
    torch.save({"state_dict": net.state_dict(), "rnnlab": {"config": config}}, tmp_path / "lin.ckpt")
    run = load_run(tmp_path / "lin.ckpt")
    assert run.vocab is None and run.path == tmp_path / "lin.ckpt" and not run.model.training
    (tmp_path / "lin.ckpt").rename(tmp_path / "best.ckpt")  # a checkpoints/ folder: its best
    assert load_run(tmp_path).path == tmp_path / "best.ckpt"
    (tmp_path / "best.ckpt").rename(tmp_path / "lin.ckpt")
    assert torch.equal(run.model.weight, net.weight)
    vocab = Vocabulary(["<unk>", "a", "b"])
    torch.save({"state_dict": net.state_dict(), "rnnlab": {"config": config, "vocab": vocab.state_dict(),
                                                           "model_kwargs": {"bias": True}}}, tmp_path / "v.ckpt")
    assert load_run(tmp_path / "v.ckpt").vocab == vocab


def test_training_time_initializers_are_dropped_when_rebuilding():
    config = OmegaConf.create({"_target_": "builtins.dict", "pretrained_embeddings": "vectors.pt", "size": 3})
    assert build_model(config, {"extra": 1}) == {"pretrained_embeddings": None, "size": 3, "extra": 1}
    assert config.pretrained_embeddings == "vectors.pt"  # the saved config itself is unchanged


def test_the_run_folder_of_a_checkpoint(tmp_path):
    assert run_folder(tmp_path / "run" / "checkpoints" / "best.ckpt") == tmp_path / "run"
    assert run_folder(tmp_path / "elsewhere" / "model.ckpt") == tmp_path / "elsewhere"
    assert run_folder(Path("checkpoints") / "x.ckpt") == Path.cwd()
