"""AWD-LSTM's parts: weight drop, locked and word dropout, AR/TAR, NT-ASGD, varied windows, the presets."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.callbacks import NTASGD
from rnnlab.checkpoint import CheckpointError, read_checkpoint
from rnnlab.models.lm import RNNLM
from rnnlab.models.recurrent import RecurrentStack
from rnnlab.models.regularization import LockedDropout, weight_dropped, word_dropout
from rnnlab.tasks.language_model import LanguageModel
from rnnlab.train import build, train
from tests.conftest import TINY_TRAINER, compose_config, synthetic_overrides


def used_hidden_weights(module: nn.Module, p: float, x: torch.Tensor, calls: int = 1) -> list[torch.Tensor]:
    """The hidden-to-hidden weight each call of `weight_dropped` really ran with (read inside the call)."""
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(m.weight_hh_l0.detach().clone()))
    for _ in range(calls):
        weight_dropped(module, p, True, x)
    handle.remove()
    return seen


@pytest.mark.parametrize("cell", ["lstm", "naive_lstm", "gru"])
def test_weight_drop_one_mask_per_window_shared_by_its_time_steps(cell):
    torch.manual_seed(0)
    stack = RecurrentStack(cell, 3, [6], weight_drop=0.5)
    rnn = stack.groups[0]
    x = torch.randn(2, 9, 3)
    first, second = used_hidden_weights(rnn, 0.5, x, calls=2)
    raw = rnn.weight_hh_l0.detach()
    dropped = first == 0
    assert 0.3 < dropped.float().mean() < 0.7
    torch.testing.assert_close(first[~dropped], raw[~dropped] * 2)  # kept weights scaled by 1/(1-p)
    assert not torch.equal(first, second)  # a new mask for the next window
    # every time step of the window ran with that one matrix: the same module with it fixed gives the same output
    torch.manual_seed(1)
    out, _ = weight_dropped(rnn, 0.5, True, x)
    torch.manual_seed(1)
    (mask_weight,) = used_hidden_weights(rnn, 0.5, x)
    fixed = copy.deepcopy(rnn)
    with torch.no_grad():
        fixed.weight_hh_l0.copy_(mask_weight)
    torch.testing.assert_close(out, fixed(x)[0])


def test_weight_drop_is_off_in_eval_and_gradients_reach_the_raw_weights():
    torch.manual_seed(0)
    stack = RecurrentStack("lstm", 3, [5, 5], weight_drop=0.6)
    plain = copy.deepcopy(stack)
    plain.weight_drop = 0.0
    x = torch.randn(2, 7, 3)
    stack.eval(), plain.eval()
    torch.testing.assert_close(stack(x)[0], plain(x)[0])
    stack.train()
    stack(x)[0].pow(2).sum().backward()
    rnn = stack.groups[0]
    for k in range(2):
        grad = getattr(rnn, f"weight_hh_l{k}").grad
        assert grad is not None and grad.abs().sum() > 0
        assert 0.3 < (grad == 0).float().mean() < 0.9  # the dropped weights get no gradient this window
    assert rnn.weight_ih_l0.grad.abs().sum() > 0
    assert [n for n, _ in stack.named_parameters()] == [n for n, _ in plain.named_parameters()]  # names kept


def test_locked_dropout_one_mask_per_sequence_for_all_its_steps():
    torch.manual_seed(0)
    drop = LockedDropout(0.5)
    x = torch.ones(4, 12, 8)
    y = drop(x)
    assert torch.equal(y, y[:, :1].expand_as(y))  # the same mask at every time step
    assert not torch.equal(y[0], y[1])  # each sequence its own
    assert set(y.unique().tolist()) == {0.0, 2.0}
    drop.eval()
    assert torch.equal(drop(x), x)
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\), got 1.0"):
        LockedDropout(1.0)


def test_locked_stack_runs_one_module_per_layer_with_locked_masks_between():
    stack = RecurrentStack("lstm", 4, [6, 6, 3], dropout=0.5, locked=True)
    assert [g.num_layers for g in stack.groups] == [1, 1, 1]
    assert isinstance(stack.dropout, LockedDropout)
    assert [g.num_layers for g in RecurrentStack("lstm", 4, [6, 6, 3], dropout=0.5).groups] == [2, 1]


def test_word_dropout_drops_a_word_everywhere_in_the_batch():
    torch.manual_seed(3)
    emb = nn.Embedding(6, 4)
    ids = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]] * 3)
    out = word_dropout(emb, ids, 0.5, training=True)
    zero = (out == 0).all(-1)
    for word in range(6):
        where = zero[ids == word]
        assert where.all() or not where.any()  # a word is dropped at all its positions or at none
    assert 0 < zero.float().mean() < 1
    kept = ~zero
    torch.testing.assert_close(out[kept], emb(ids)[kept] * 2)
    torch.testing.assert_close(word_dropout(emb, ids, 0.5, training=False), emb(ids))


def test_ar_and_tar_are_added_to_the_training_loss_only():
    torch.manual_seed(0)
    net = RNNLM(11, [8], embedding_dim=8, dropout=0.0)
    task = LanguageModel(net, loss_reduction="mean", bptt=5, ar=2.0, tar=1.0)
    plain = LanguageModel(copy.deepcopy(net), loss_reduction="mean", bptt=5)
    ids = torch.randint(0, 11, (3, 6))
    batch = (ids[:, :5], ids[:, 1:])
    nll, penalty = task._step(batch, "train")
    plain_nll, plain_penalty = plain._step(batch, "train")
    torch.testing.assert_close(nll, plain_nll)
    assert plain_penalty == 0
    hidden, _ = net.hidden(batch[0])
    expected = 2.0 * hidden.pow(2).mean() + 1.0 * (hidden[:, 1:] - hidden[:, :-1]).pow(2).mean()
    torch.testing.assert_close(penalty, expected)
    assert task._step(batch, "val")[1] == 0
    with pytest.raises(ValueError, match="model.ar/model.tar need a network with `outputs\\(\\)`"):
        LanguageModel(nn.Linear(2, 2), ar=1.0)
    for key in ("ar", "tar"):  # a negative penalty would reward large activations
        with pytest.raises(ValueError, match=f"^model.{key} must be >= 0, got -1.0$"):
            LanguageModel(net, **{key: -1.0})


class Recorder(L.Callback):
    """Batches trained per epoch, validations run, and the weights after every optimizer step."""

    def __init__(self):
        self.batches, self.validated, self.weights = {}, [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches[trainer.current_epoch] = self.batches.get(trainer.current_epoch, 0) + 1
        self.weights.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validated.append(trainer.current_epoch)


def fit_with(cfg, *callbacks):
    L.seed_everything(cfg.seed)
    datamodule, model, trainer = build(cfg, list(callbacks))
    trainer.fit(model, datamodule=datamodule)
    return datamodule, model, trainer


def test_varied_windows_every_epoch_trains_all_its_windows_and_validates(synthetic_ptb, tmp_path):
    cfg = compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "trainer.max_epochs=6",
                          "trainer.limit_train_batches=null", "trainer.limit_val_batches=2", "data.vary_bptt=true",
                          "test=false", "logger=none"], tmp_path)
    recorder = Recorder()
    datamodule, _, _ = fit_with(cfg, recorder)
    stream = datamodule.stream("train", cfg.data.batch_size, vary=True)
    expected = {e: len(stream.lengths(e)) for e in range(6)}
    assert len(set(expected.values())) > 1  # the epochs really differ in length
    assert recorder.batches == expected
    assert recorder.validated == list(range(6))


class StubTrainer:
    sanity_checking = False

    def __init__(self, value: float, step: int):
        self.callback_metrics = {"val/loss": torch.tensor(value)}
        self.global_step = step


def test_nt_asgd_triggers_when_validation_is_worse_than_the_best_before_the_last_n_checks():
    losses = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.9]
    # nonmono=2: check k triggers when k > 2 and losses[k] > min(losses[:k - 2])
    # k=3: 3.5 > min(5) no; k=4: 3.2 > min(5, 4) = 4 no; k=5: 3.1 > min(5, 4, 3) = 3 yes
    callback = NTASGD(nonmono=2)
    fired = []
    for k, loss in enumerate(losses):
        callback.on_validation_end(StubTrainer(loss, step=10 * (k + 1)), None)
        fired.append(callback.triggered)
    assert fired == [False, False, False, False, False, True, True]
    assert callback.triggered_at == 60 and callback.history == pytest.approx(losses[:6])  # none after it
    assert callback.should_update(step_idx=51) and not callback.should_update(epoch_idx=4)
    assert not NTASGD(nonmono=2).should_update(step_idx=0)
    assert NTASGD(start="now").should_update(step_idx=0)
    with pytest.raises(ValueError, match="callbacks.nt_asgd.start must be 'trigger' or 'now', got 'soon'"):
        NTASGD(start="soon")


def tiny_lm_overrides(folder, tmp_path, epochs: int = 2) -> list[str]:
    return [*synthetic_overrides(folder), *TINY_TRAINER, f"trainer.max_epochs={epochs}",
            "trainer.limit_train_batches=5", "test=false", "logger=none", "model/scheduler=none",
            "model.optimizer.lr=0.5"]


def test_nt_asgd_averages_every_step_after_the_trigger_and_checkpoints_the_average(synthetic_ptb, tmp_path):
    cfg = compose_config(tiny_lm_overrides(synthetic_ptb, tmp_path, epochs=3), tmp_path)
    averaging = NTASGD(nonmono=1)
    averaging.load_state_dict({"latest_update_step": 0, "triggered": False, "triggered_at": None,
                               "history": [-1.0, -1.0]})  # any first loss is worse: triggers after epoch 0
    recorder = Recorder()
    _, model, trainer = fit_with(cfg, averaging, recorder)
    assert averaging.triggered_at == 5  # after epoch 0's 5 steps
    assert int(averaging._average_model.n_averaged) == 10
    names = [n for n, _ in model.net.named_parameters()]
    for name in names:
        key = f"net.{name}"
        expected = torch.stack([w[key] for w in recorder.weights[5:]]).mean(0)
        torch.testing.assert_close(model.state_dict()[key], expected)  # the final weights are the average
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    key = f"net.{names[0]}"
    torch.testing.assert_close(ckpt["state_dict"][key], torch.stack([w[key] for w in recorder.weights[5:]]).mean(0))
    torch.testing.assert_close(ckpt["current_model_state"][key], recorder.weights[-1][key])  # raw, for resuming


def test_nt_asgd_state_round_trips():
    callback = NTASGD(nonmono=3)
    callback.triggered, callback.triggered_at, callback.history = True, 40, [3.0, 2.5]
    other = NTASGD(nonmono=3)
    other.load_state_dict(callback.state_dict())
    assert (other.triggered, other.triggered_at, other.history) == (True, 40, [3.0, 2.5])


@pytest.mark.parametrize("preset", ["ptb_awd", "ptb_cpu60"])
def test_presets_compose_and_build(preset, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config([f"experiment={preset}"], tmp_path)
    net = instantiate(cfg.model.net, vocab_size=10_000)
    assert net.decoder.weight is net.encoder.weight  # tied
    assert isinstance(net.output_dropout, LockedDropout) and net.rnn.weight_drop > 0 and net.word_dropout > 0
    assert net.rnn.hidden_sizes[-1] == net.encoder.embedding_dim
    if preset == "ptb_awd":
        assert net.rnn.hidden_sizes == [1150, 1150, 400]
        assert cfg.callbacks.nt_asgd.nonmono == 5 and cfg.model.ar == 2.0 and cfg.model.tar == 1.0
    else:
        assert cfg.trainer.max_time == "00:01:00:00"
    finetune = compose_config(["experiment=ptb_awd_finetune", "init_from=x.ckpt"], tmp_path)
    assert finetune.callbacks.nt_asgd.start == "now" and finetune.model.net.hidden_sizes == [1150, 1150, 400]


def test_init_from_refuses_another_vocabulary(synthetic_ptb, tmp_path):
    train(compose_config(tiny_lm_overrides(synthetic_ptb, tmp_path, epochs=1), tmp_path / "a"))
    ckpt = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    other = tmp_path / "other"
    other.mkdir()
    for split in ("train", "valid", "test"):
        (other / f"ptb.{split}.txt").write_text("a b c d e f g h i j k l m n o p\n" * 40)
    with pytest.raises(CheckpointError, match=r"init_from=.*last.ckpt: its vocabulary \(42 symbols\) is not this "
                                              r"data's \(17 symbols\)"):
        train(compose_config([*tiny_lm_overrides(other, tmp_path, 1), f"init_from={ckpt}"], tmp_path / "b"))


def test_awd_then_finetune_on_the_real_ptb_files(data_dir, tmp_path):
    tiny = ["model.net.hidden_sizes=[24,24,16]", "model.net.embedding_dim=16", "trainer.max_epochs=2",
            "trainer.limit_train_batches=6", "trainer.limit_val_batches=3", "trainer.limit_test_batches=2",
            "data.eval_batch_size=10", "data.bptt=20", "logger=none", "trainer.enable_progress_bar=false",
            "callbacks.text_samples=null"]
    metrics = train(compose_config(["experiment=ptb_awd", *tiny], tmp_path / "awd"))
    best = tmp_path / "awd" / "run" / "checkpoints" / "best.ckpt"
    assert metrics["test/ppl"] < 10_000  # the vocabulary size: it learned something in 12 steps
    start = read_checkpoint(best)["state_dict"]
    recorder = Recorder()
    cfg = compose_config(["experiment=ptb_awd_finetune", f"init_from={best}", *tiny, "test=false"],
                         tmp_path / "finetune")
    _, model, _ = build(cfg)
    for key, value in start.items():  # the fine-tuning starts from the best weights
        assert torch.equal(model.state_dict()[key], value), key
    fit_with(cfg, recorder)
    ckpt = read_checkpoint(tmp_path / "finetune" / "run" / "checkpoints" / "last.ckpt")
    key = "net.decoder.bias"
    torch.testing.assert_close(ckpt["state_dict"][key], torch.stack([w[key] for w in recorder.weights]).mean(0))


def test_a_run_stopped_while_averaging_resumes_bit_identical(synthetic_ptb, tmp_path):
    import signal

    from tests.test_resume import SignalAt, assert_same_state, last_state, run_interrupted

    overrides = [*tiny_lm_overrides(synthetic_ptb, tmp_path, epochs=2), "trainer.limit_train_batches=20",
                 "+callbacks.nt_asgd._target_=rnnlab.callbacks.NTASGD", "+callbacks.nt_asgd.start=now",
                 "callbacks.last_checkpoint.every_n_train_steps=7", "model.net.dropout=0.3"]
    train(compose_config(overrides, tmp_path / "straight"))
    folder = run_interrupted(overrides, tmp_path / "cut", SignalAt(10, signal.SIGINT), SystemExit)
    straight, resumed = last_state(tmp_path / "straight" / "run"), last_state(folder)
    assert_same_state(straight, resumed)  # the averaged weights, the optimizer, the step
    a = read_checkpoint(tmp_path / "straight" / "run" / "checkpoints" / "last.ckpt")
    b = read_checkpoint(folder / "checkpoints" / "last.ckpt")
    assert int(a["averaging_state"]["n_averaged"]) == int(b["averaging_state"]["n_averaged"]) == 40
    for key, value in a["current_model_state"].items():
        assert torch.equal(value, b["current_model_state"][key]), key


def test_init_from_a_checkpoint_of_another_shape_names_what_does_not_fit(synthetic_ptb, tmp_path):
    train(compose_config(tiny_lm_overrides(synthetic_ptb, tmp_path, epochs=1), tmp_path / "a"))
    ckpt = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    wider = [*tiny_lm_overrides(synthetic_ptb, tmp_path, 1), "model.net.hidden_sizes=[20]", f"init_from={ckpt}"]
    with pytest.raises(CheckpointError) as err:
        build(compose_config(wider, tmp_path / "b"))
    assert str(err.value) == (f"init_from={ckpt} does not fit this model: missing [], other shapes "
                              "['net.rnn.groups.0.weight_ih_l0', 'net.rnn.groups.0.weight_hh_l0', "
                              "'net.rnn.groups.0.bias_ih_l0']")
    deeper = [*tiny_lm_overrides(synthetic_ptb, tmp_path, 1), "model.net.hidden_sizes=[12,12]", f"init_from={ckpt}"]
    with pytest.raises(CheckpointError, match=r"missing \['net.rnn.groups.0.bias_hh_l1', "):
        build(compose_config(deeper, tmp_path / "c"))


def test_tar_alone_still_regularizes_and_needs_two_steps():
    """TAR without AR is applied; a window of two steps has one difference, a window of one has none."""
    torch.manual_seed(0)
    net = RNNLM(11, [8], embedding_dim=8, dropout=0.0)
    task = LanguageModel(net, loss_reduction="mean", bptt=5, ar=0.0, tar=3.0)
    ids = torch.randint(0, 11, (3, 3))
    two, one = (ids[:, :2], ids[:, 1:]), (ids[:, :1], ids[:, 1:2])
    hidden, _ = net.hidden(two[0])
    torch.testing.assert_close(task._step(two, "train")[1], 3.0 * (hidden[:, 1] - hidden[:, 0]).pow(2).mean())
    task.states.clear()
    assert task._step(one, "train")[1] == 0


def test_the_regularized_step_starts_from_the_carried_state():
    torch.manual_seed(0)
    net = RNNLM(11, [8], embedding_dim=8, dropout=0.0)
    task = LanguageModel(net, loss_reduction="mean", bptt=5, ar=1.0)
    ids = torch.randint(0, 11, (2, 11))
    first, second = (ids[:, :5], ids[:, 1:6]), (ids[:, 5:10], ids[:, 6:11])
    task._step(first, "train")
    _, state = net(first[0])
    logits, _ = net(second[0], state)
    expected = F.cross_entropy(logits.reshape(-1, 11), second[1].reshape(-1))
    torch.testing.assert_close(task._step(second, "train")[0], expected)


def test_training_with_an_adaptive_softmax_never_builds_the_whole_distribution(monkeypatch):
    """The training loss is the clusters' loss (the same NLL, without the full log-probabilities);
    evaluation computes the full distribution, so perplexity covers every token."""
    torch.manual_seed(0)
    net = RNNLM(50, [8], embedding_dim=8, dropout=0.0, adaptive_softmax=[10, 30])
    task = LanguageModel(net, loss_reduction="mean", bptt=5)
    ids = torch.randint(0, 50, (2, 6))
    batch = (ids[:, :5], ids[:, 1:])
    full = F.nll_loss(net(batch[0])[0].reshape(-1, 50), batch[1].reshape(-1))
    calls = []
    real = net.decoder.asm.log_prob
    monkeypatch.setattr(net.decoder.asm, "log_prob", lambda h: calls.append(h.shape) or real(h))
    nll, _ = task._step(batch, "train")
    assert calls == []
    torch.testing.assert_close(nll, full)
    task._step(batch, "val")
    assert calls == [(10, 8)]
