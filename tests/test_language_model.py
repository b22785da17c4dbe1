import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.models.lm import RNNLM
from rnnlab.models.recurrent import RecurrentStack
from rnnlab.models.regularization import LockedDropout
from rnnlab.optim import KeepThenDecay
from rnnlab.tasks.language_model import LanguageModel


def test_stack_groups_equal_sizes_into_fused_modules():
    stack = RecurrentStack("lstm", 8, [256, 128])
    assert [type(g).__name__ for g in stack.groups] == ["LSTM", "LSTM"]
    assert [(g.hidden_size, g.num_layers) for g in stack.groups] == [(256, 1), (128, 1)]
    stack = RecurrentStack("gru", 8, [32, 32, 32, 16])
    assert [(g.hidden_size, g.num_layers) for g in stack.groups] == [(32, 3), (16, 1)]
    out, state = stack(torch.randn(2, 5, 8))
    assert out.shape == (2, 5, 16) and state[0].shape == (3, 2, 32) and state[1].shape == (1, 2, 16)


@pytest.mark.parametrize("cell", ["lstm", "gru", "naive_lstm"])
def test_weights_saved_under_another_grouping_load_layer_by_layer(cell):
    """Locked dropout gives every layer its own module, fused runs share one: either state loads into the other,
    layer k into layer k, and the network computes the same."""
    torch.manual_seed(0)
    fused, per_layer = RecurrentStack(cell, 4, [6, 6, 3]), RecurrentStack(cell, 4, [6, 6, 3], locked=True)
    assert len(fused.groups) == 2 and len(per_layer.groups) == 3
    x = torch.randn(2, 5, 4)
    for source, target in ((fused, per_layer), (per_layer, fused)):
        target.load_state_dict(source.state_dict())
        assert torch.equal(source.eval()(x)[0], target.eval()(x)[0])
    assert torch.equal(per_layer.state_dict()["groups.1.weight_hh_l0"], fused.state_dict()["groups.0.weight_hh_l1"])
    with pytest.raises(RuntimeError, match="Missing key"):  # another number of layers is not renamed
        RecurrentStack(cell, 4, [6, 6, 6, 3], locked=True).load_state_dict(fused.state_dict())


def test_a_network_loads_its_other_groupings_weights_through_load_state_dict():
    """The renaming runs for a stack inside a network too (its keys under `rnn.`)."""
    torch.manual_seed(0)
    fused = RNNLM(50, [6, 6], "lstm", embedding_dim=4)
    per_layer = RNNLM(50, [6, 6], "lstm", embedding_dim=4, locked_dropout=True)
    per_layer.load_state_dict(fused.state_dict())
    ids = torch.randint(0, 50, (2, 5))
    assert torch.equal(fused.eval()(ids)[0], per_layer.eval()(ids)[0])


def test_stack_dropout_runs_between_layers_only():
    stack = RecurrentStack("lstm", 4, [6, 6, 3], dropout=0.5)
    assert type(stack.dropout) is nn.Dropout and stack.groups[0].dropout == 0.5 and stack.groups[1].dropout == 0.0
    assert type(RecurrentStack("lstm", 4, [6, 3], dropout=0.5, locked=True).dropout) is LockedDropout
    calls = []
    stack.dropout.register_forward_hook(lambda *_: calls.append(1))
    stack(torch.randn(2, 5, 4))
    assert len(calls) == 1  # between the two modules, never on the stack's input


def test_stack_refusals():
    with pytest.raises(ValueError, match=r"^hidden_sizes must name at least one layer$"):
        RecurrentStack("lstm", 4, [])
    with pytest.raises(ValueError, match=r"^weight_drop must be in \[0, 1\), got 1.0$"):
        RecurrentStack("lstm", 4, [6], weight_drop=1.0)


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
def test_carried_state_equals_one_long_window(cell):
    """Two windows with the state carried give exactly the outputs of one window of both."""
    torch.manual_seed(0)
    net = RNNLM(50, [12, 8], cell, embedding_dim=6, init_scale=0.1).eval()
    ids = torch.randint(0, 50, (3, 10))
    whole, _ = net(ids)
    first, state = net(ids[:, :4])
    second, _ = net(ids[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    restarted, _ = net(ids[:, 4:])
    assert not torch.allclose(restarted, second)


TASK_ARGS = ("loss_reduction", "bptt", "optimizer", "scheduler", "compile")


def make_module(**kwargs):
    """A LanguageModel over a small RNNLM; network arguments go to the net, the rest to the task."""
    net = {"vocab_size": 30, "hidden_sizes": [8], "embedding_dim": 4, **{k: v for k, v in kwargs.items()
                                                                         if k not in TASK_ARGS}}
    return LanguageModel(RNNLM(**net), **{"bptt": 5, **{k: v for k, v in kwargs.items() if k in TASK_ARGS}})


def batches(n, steps=5, rows=2, vocab=30):
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, vocab, (rows, steps), generator=g), torch.randint(0, vocab, (rows, steps), generator=g))
            for _ in range(n)]


def test_state_carried_detached_and_reset_per_stage():
    module = make_module()
    b0, b1 = batches(2)
    module.training_step(b0, 0)
    carried = module.states["train"]
    assert carried[0][0].shape == (1, 2, 8)
    module.validation_step(b1, 0)  # evaluation keeps its own state
    assert module.states["train"] is carried
    loss = module.training_step(b1, 1)
    loss.backward()  # works: the carried state was detached, no second backward through window 0
    module.on_train_epoch_start()
    module.on_validation_epoch_start()
    assert "train" not in module.states and "val" not in module.states


def test_the_gradient_of_a_window_stops_at_its_carried_state():
    """Truncated BPTT: the second window's gradient equals the one computed from a state given as a constant,
    and backpropagating both windows in turn works (no second pass through the first window's graph)."""
    torch.manual_seed(0)
    module = make_module(dropout=0.0)
    reference = make_module(dropout=0.0)
    reference.load_state_dict(module.state_dict())
    b0, b1 = batches(2)
    module.training_step(b0, 0).backward()
    module.zero_grad()
    module.training_step(b1, 1).backward()
    with torch.no_grad():
        _, state = reference(b0[0])
    logits, _ = reference(b1[0], state)
    F.cross_entropy(logits.reshape(-1, 30), b1[1].reshape(-1), reduction="sum").div(2).backward()
    for (name, p), q in zip(module.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_perplexity_is_over_tokens_not_an_average_of_batches():
    torch.manual_seed(0)  # the margin below depends on the weights: fix them whatever ran before
    module = make_module().eval()
    data = batches(1, steps=9) + batches(1, steps=2)
    nll_sum = tokens = 0.0
    per_batch_ppl = []
    with torch.no_grad():
        for i, (x, y) in enumerate(data):
            logits, _ = module.net(x, module.states.get("val"))
            nll = F.cross_entropy(logits.reshape(-1, 30), y.reshape(-1), reduction="sum").item()
            nll_sum, tokens = nll_sum + nll, tokens + y.numel()
            per_batch_ppl.append(math.exp(nll / y.numel()))
            module.validation_step((x, y), i)
    logged = {}
    module.log_dict = lambda d, **kw: logged.update(d)
    module.on_validation_epoch_end()
    assert logged["val/ppl"] == pytest.approx(math.exp(nll_sum / tokens), rel=1e-5)
    assert logged["val/ppl"] != pytest.approx(sum(per_batch_ppl) / 2, rel=1e-3)


def test_loss_conventions_scale_the_gradient_by_window_length():
    (x, y), = batches(1, steps=5)
    grads = {}
    for reduction in ("sum_time", "mean"):
        torch.manual_seed(0)
        module = make_module(loss_reduction=reduction, bptt=5)
        module.log = lambda *a, **k: None
        module.training_step((x, y), 0).backward()
        grads[reduction] = module.net.decoder.weight.grad.clone()
    torch.testing.assert_close(grads["sum_time"], 5 * grads["mean"])


def test_unknown_loss_reduction_is_refused():
    with pytest.raises(ValueError, match="loss_reduction must be one of"):
        make_module(loss_reduction="sum")


def test_keep_then_decay_matches_zaremba():
    schedule = KeepThenDecay(keep_epochs=4, decay=0.5)
    assert [schedule(e) for e in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    per_epoch = KeepThenDecay(keep_epochs=1, decay=0.97)
    assert per_epoch(3) == pytest.approx(0.97**3)


def test_init_forget_bias_and_tying():
    net = RNNLM(20, [6], "lstm", embedding_dim=6, init_scale=0.05, forget_bias=0.0, tie_weights=True)
    assert max(p.abs().max().item() for p in net.parameters()) <= 0.05
    lstm = net.rnn.groups[0]
    assert torch.all(lstm.bias_ih_l0[6:12] == 0) and torch.all(lstm.bias_hh_l0[6:12] == 0)
    assert net.decoder.weight is net.encoder.weight
    tf_style = RNNLM(20, [6, 4], "lstm", embedding_dim=6, init_scale=0.1, recurrent_bias=0.0, forget_bias=1.0)
    for name, p in tf_style.rnn.named_parameters():
        if "bias" in name:
            h = p.numel() // 4
            forget = 1.0 if "bias_ih" in name else 0.0
            assert torch.all(p[h : 2 * h] == forget) and torch.all(p[:h] == 0) and torch.all(p[2 * h :] == 0), name
    assert tf_style.decoder.bias.abs().max() > 0  # only the recurrent layers' biases are set
    with pytest.raises(ValueError, match="tie_weights needs embedding_dim == last hidden size"):
        RNNLM(20, [6, 5], "lstm", embedding_dim=6, tie_weights=True)
    with pytest.raises(ValueError, match="unknown cell 'lstmm'"):
        RNNLM(20, [6], "lstmm")


def test_varied_windows_scale_the_mean_loss_like_awd_lstm_scales_the_lr():
    (x, y), = batches(1, steps=10)
    module = make_module(loss_reduction="mean", bptt=5)
    module.log = lambda *a, **k: None
    returned = module.training_step((x, y), 0)
    nll = module.nll["train_nll"].compute()
    assert returned.item() == pytest.approx(2 * nll.item(), rel=1e-6)  # a 10-step window at bptt 5 counts double


def test_carried_state_round_trip_and_each_stage_resets_its_own():
    module = make_module()
    b0, _ = batches(2)
    module.training_step(b0, 0)
    saved = module.carried_state()
    assert all(not t.requires_grad for t in saved[0])
    fresh = make_module()
    fresh.load_carried_state(saved)
    for a, b in zip(fresh.states["train"][0], module.states["train"][0]):
        assert torch.equal(a, b)
    fresh.load_carried_state(None)
    assert fresh.states["train"] is None
    for stage, hook in (("val", "on_validation_epoch_start"), ("test", "on_test_epoch_start"),
                        ("train", "on_train_epoch_start")):
        module.states = {"train": 1, "val": 2, "test": 3}
        getattr(module, hook)()
        assert stage not in module.states and len(module.states) == 2


def test_fused_cross_entropy_equals_pytorch_loss_and_gradients():
    from rnnlab.losses import cross_entropy

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(400, 10_000, generator=g) * 3).requires_grad_()
    targets = torch.randint(0, 10_000, (400,), generator=g)
    ours = cross_entropy(logits, targets)
    (ours * 2.5).backward()
    ours_grad, logits.grad = logits.grad.clone(), None
    theirs = F.cross_entropy(logits, targets)
    (theirs * 2.5).backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)  # float32 rounding: 1.4e-7 relative
    torch.testing.assert_close(ours_grad, logits.grad, rtol=0, atol=1e-6)


def test_what_each_stage_logs_and_where():
    """Training logs its window's loss and perplexity per step in the progress bar; each split's epoch logs
    loss and perplexity over all its tokens (training's as `*_epoch`, only validation and test in the bar)."""
    module = make_module()
    logged = []
    module.log = lambda name, value, **kw: logged.append((name, float(value.detach()), kw))
    module.log_dict = lambda values, **kw: logged.extend((k, float(v), kw) for k, v in values.items())
    x, y = batches(1)[0]
    module.training_step((x, y), 0)
    logits, _ = module.net(x)
    nll = F.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    per_step = {"on_step": True, "on_epoch": False, "prog_bar": True}
    assert logged[0] == ("train/loss", pytest.approx(nll, rel=1e-5), per_step)
    assert logged[1] == ("train/ppl", pytest.approx(math.exp(nll), rel=1e-5), per_step)
    module.on_train_epoch_end()
    assert logged[2:] == [("train/loss_epoch", pytest.approx(nll, rel=1e-5), {"prog_bar": False, "sync_dist": False}),
                          ("train/ppl_epoch", pytest.approx(math.exp(nll), rel=1e-5),
                           {"prog_bar": False, "sync_dist": False})]
    del logged[:]
    module.validation_step((x, y), 0)
    module.on_validation_epoch_end()
    assert [(name, kw) for name, _, kw in logged] == [("val/loss", {"prog_bar": True, "sync_dist": False}),
                                                      ("val/ppl", {"prog_bar": True, "sync_dist": False})]


def test_perplexity_of_a_diverging_loss_is_capped_not_an_overflow():
    module = make_module()
    assert module.epoch_metrics(1000.0) == {"ppl": math.exp(80.0)}
    assert module.epoch_metrics(2.0) == {"ppl": math.exp(2.0)}
    logged = {}
    module.log = lambda name, value, **kw: logged.update({name: value.item()})
    module._step = lambda batch, stage: (torch.tensor(1000.0), torch.tensor(0.0))
    module.training_step(batches(1)[0], 0)
    assert logged == {"train/loss": 1000.0, "train/ppl": pytest.approx(math.exp(80.0), rel=1e-6)}


def test_without_an_optimizer_config_the_lm_trains_with_sgd_at_lr_1_and_keeps_its_scheduler():
    module = make_module()
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["lr"] == 1.0
    scheduled = make_module(scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2)
                            ).configure_optimizers()
    assert isinstance(scheduled["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert scheduled["lr_scheduler"]["interval"] == "epoch"
