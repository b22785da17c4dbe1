"""Dynamic evaluation and the neural cache: exact at their neutral settings, never learning a token before
scoring it, a proper distribution, and from the command line for word and character models."""

from __future__ import annotations

import math
import re

import pytest
import torch

from rnnlab.adapt import cache_log_probs, cache_nll, dynamic_nll, gradient_ms, plain_nll
from rnnlab.evaluate import evaluate
from rnnlab.models.lm import RNNLM
from rnnlab.models.recurrent import detach_state
from rnnlab.tasks.language_model import MAX_LOG_PPL
from rnnlab.train import train
from tests.conftest import TINY_TRAINER, compose_config, synthetic_overrides


def small_net(cell: str = "lstm", vocab: int = 25) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(vocab, [24], cell, embedding_dim=12, init_scale=0.1)


def stream(n: int = 300, vocab: int = 25, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("update", ["rms", "sgd"])
def test_dynamic_evaluation_with_lr_0_is_plain_evaluation_exactly(update):
    net, text = small_net(), stream()
    ms = gradient_ms(net, stream(seed=1), 10, batches=5)
    assert dynamic_nll(net, text, 10, lr=0.0, decay=0.0, method=update, ms=ms) == plain_nll(net, text, 10)


def test_dynamic_evaluation_scores_before_it_learns_and_restores_the_weights():
    """A random sequence of 50 tokens read four times: the later copies are predicted better than plain
    evaluation predicts them, the first copy no better (learning a window before scoring it would make
    the first copy look easy too)."""
    net = small_net()
    before = [p.detach().clone() for p in net.parameters()]
    text = torch.cat([stream(50, seed=3)] * 4)
    per_token = {}
    for name, lr in (("plain", 0.0), ("dynamic", 2.0)):
        first, _ = dynamic_nll(net, text[:51], 10, lr=lr, method="sgd")
        whole, _ = dynamic_nll(net, text, 10, lr=lr, method="sgd")
        per_token[name] = (first / 50, (whole - first) / 149)
    assert per_token["dynamic"][0] > per_token["plain"][0] - 0.01  # the first copy: nothing known in advance
    assert per_token["dynamic"][1] < per_token["plain"][1] - 0.05  # the later copies: learned from the first
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))


def test_cache_with_lambda_0_is_plain_evaluation_exactly():
    net, text = small_net(), stream()
    assert cache_nll(net, text, 10, window=50, theta=0.5, lam=0.0) == plain_nll(net, text, 10)


@pytest.mark.parametrize("window", [1, 7, 500])
def test_cache_probabilities_sum_to_one_and_follow_repeats(window):
    net = small_net()
    text = torch.cat([stream(60, seed=4)] * 3)
    for log_probs, _ in cache_log_probs(net, text, 10, window=window, theta=1.0, lam=0.3):
        torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(log_probs.size(0)))
    if window == 500:  # repeated text: the cache remembers what came next
        assert cache_nll(net, text, 10, window, theta=1.0, lam=0.3)[0] < plain_nll(net, text, 10)[0]


@pytest.mark.parametrize("method", ["dynamic", "cache"])
def test_eval_script_reports_plain_and_adapted_numbers(synthetic_ptb, tmp_path, method):
    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    grid = {"dynamic": ["adapt.grid.lr=[0.0,0.01]", "adapt.grid.decay=[0.0]", "adapt.train_batches=5"],
            "cache": ["adapt.grid.window=[20]", "adapt.grid.theta=[0.3]", "adapt.grid.lam=[0.0,0.1]"]}[method]
    cfg = compose_config([f"ckpt_path={ckpt}", f"adapt={method}", "adapt.search=true", *grid], tmp_path,
                         config_name="eval")
    metrics = evaluate(cfg)
    plain = evaluate(compose_config([f"ckpt_path={ckpt}", "batch_size=1", "trainer.enable_progress_bar=false"],
                                    tmp_path, config_name="eval"))
    assert metrics["test/ppl"] == pytest.approx(plain["test/ppl"], rel=1e-5)
    assert math.isfinite(metrics[f"test/ppl_{method}"]) and metrics[f"test/ppl_{method}"] <= metrics["test/ppl"] * 1.01


@pytest.mark.parametrize(("overrides", "message"), [
    (["adapt=dynamic", "adapt.lr=-1"], "adapt.lr must be >= 0, got -1"),
    (["adapt=dynamic", "adapt.decay=1.5"], "adapt.decay must be in [0, 1], got 1.5"),
    (["adapt=dynamic", "adapt.bptt=0"], "adapt.bptt must be an integer >= 1 or null, got 0"),
    (["adapt=cache", "adapt.window=0"], "adapt.window must be an integer >= 1, got 0"),
    (["adapt=cache", "adapt.window=2.5"], "adapt.window must be an integer >= 1, got 2.5"),  # a traceback before
    (["adapt=dynamic", "adapt.lr=abc"], "adapt.lr must be a number >= 0, got 'abc'"),  # a traceback before
    (["adapt=cache", "adapt.theta=-0.5"], "adapt.theta must be >= 0, got -0.5"),
    (["adapt=cache", "adapt.lam=2"], "adapt.lam must be in [0, 1], got 2"),
    (["adapt=cache", "adapt.search=true", "adapt.grid.lam=[0.1,-0.1]"], "adapt.grid.lam must be in [0, 1], got -0.1"),
    (["batch_size=0"], "batch_size must be an integer >= 1 or null, got 0"),
    (["eval_bptt=0"], "eval_bptt must be an integer >= 1 or null, got 0"),
])
def test_eval_settings_out_of_range_are_named_before_any_work(tmp_path, monkeypatch, overrides, message):
    import rnnlab.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "load_run", lambda path: pytest.fail("read the checkpoint first"))
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        evaluate(compose_config(["ckpt_path=x.ckpt", *overrides], tmp_path, config_name="eval"))


def test_a_diverged_adaptation_reports_a_capped_perplexity(synthetic_ptb, tmp_path):
    """A learning rate far too high makes dynamic evaluation diverge: a huge perplexity, not an overflow."""
    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    metrics = evaluate(compose_config([f"ckpt_path={ckpt}", "adapt=dynamic", "adapt.rule=sgd", "adapt.lr=1e6"],
                                      tmp_path, config_name="eval"))
    assert metrics["test/ppl_dynamic"] == math.exp(MAX_LOG_PPL) and metrics["test/ppl"] < 1e4


def test_character_models_report_bits_per_char(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 60)
    train(compose_config(["task=charrnn", f"data.text_file={text}", *TINY_TRAINER, "model.net.hidden_sizes=[16]",
                          "data.batch_size=4", "data.bptt=16", "test=false", "callbacks.text_samples=null"], tmp_path))
    cfg = compose_config([f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}", "adapt=dynamic",
                          "adapt.lr=0.003", "adapt.train_batches=5"], tmp_path, config_name="eval")
    metrics = evaluate(cfg)
    assert metrics["test/bpc"] == pytest.approx(math.log2(metrics["test/ppl"]), rel=1e-6)
    assert metrics["test/bpc_dynamic"] < metrics["test/bpc"]  # a repetitive text: adaptation helps


def test_dynamic_evaluation_updates_every_adapt_bptt_tokens(synthetic_ptb, tmp_path, monkeypatch):
    import rnnlab.evaluate as evaluate_module

    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    seen, real = [], evaluate_module.dynamic_nll
    monkeypatch.setattr(evaluate_module, "dynamic_nll",
                        lambda net, stream, bptt, *args: seen.append(bptt) or real(net, stream, bptt, *args))
    for extra, expected in (([], 8), (["adapt.bptt=5"], 5)):  # the model's bptt (8), or adapt.bptt
        seen.clear()
        metrics = evaluate(compose_config([f"ckpt_path={ckpt}", "adapt=dynamic", "adapt.train_batches=5",
                                           "adapt.lr=0.01", *extra], tmp_path, config_name="eval"))
        assert seen == [expected] and math.isfinite(metrics["test/ppl_dynamic"])


def test_gradient_statistics_average_the_squared_gradients_of_batched_windows():
    """Windows of `batch_size` rows with the state carried, as Krause et al. collect them: the statistics
    equal the mean of the squared gradients of each window's mean loss, computed here step by step."""
    net, text = small_net(), stream(200, seed=2)
    rows = text[: 200 // 4 * 4].view(4, -1)  # 4 rows of 50 tokens
    expected, state = [torch.zeros_like(p) for p in net.parameters()], None
    for start in (0, 10):
        x, y = rows[:, start:start + 10], rows[:, start + 1:start + 11]
        logits, state = net(x, state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 25), y.reshape(-1))
        grads = torch.autograd.grad(loss, list(net.parameters()))
        state = detach_state(state)
        expected = [e + g * g / 2 for e, g in zip(expected, grads)]
    for got, want in zip(gradient_ms(net, text, 10, batches=2, batch_size=4), expected):
        torch.testing.assert_close(got, want)


def test_adapted_evaluation_runs_where_the_trainer_says():
    from rnnlab.evaluate import adapt_device

    assert adapt_device("cpu") == torch.device("cpu") and adapt_device(None) == torch.device("cpu")
    if torch.cuda.is_available():
        assert adapt_device("gpu") == torch.device("cuda")
    else:
        with pytest.raises(ValueError, match="^trainer.accelerator=gpu, but PyTorch sees no CUDA device$"):
            adapt_device("gpu")
