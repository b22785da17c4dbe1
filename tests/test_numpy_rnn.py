"""The NumPy RNN's gradients against PyTorch autograd (float64) and finite differences."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from rnnlab.numpy_rnn import ElmanRNN, clip_by_value, train_chars, train_sine
from tests.conftest import ROOT, run_script

T, IN, HID, OUT = 9, 3, 5, 4


def torch_loss(model: ElmanRNN, xs, targets, steps, truncate, h0):
    """The same loss through autograd; with `truncate=k` the state is detached k steps before each loss step."""
    p = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    f = torch.tanh if model.hidden == "tanh" else torch.sigmoid
    x = torch.tensor(xs)

    def run(h, start, stop):
        hs = []
        for s in range(start, stop):
            h = f(p["U"] @ x[s] + p["W"] @ h + p["bh"])
            hs.append(h)
        return hs

    def loss_at(t, h):
        o = p["V"] @ h + p["by"]
        if model.output == "softmax":
            return -torch.log_softmax(o, 0)[int(targets[t])]
        return 0.5 * ((o - torch.tensor(targets[t])) ** 2).sum()

    h0 = torch.tensor(h0)
    total = 0.0
    if truncate is None:
        hs = run(h0, 0, T)
        total = sum(loss_at(t, hs[t]) for t in steps)
    else:
        with torch.no_grad():
            states = [h0] + run(h0, 0, T)  # states[s] = h_s (h_0 is the initial state)
        for t in steps:
            start = max(0, t - truncate + 1)
            h = run(states[start].detach(), start, t + 1)[-1]
            total = total + loss_at(t, h)
    total.backward()
    return float(total.detach()), {k: v.grad.numpy() for k, v in p.items()}


def rel_error(a, b):
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-12)


def make_case(output, hidden, seed=0):
    rng = np.random.default_rng(seed)
    model = ElmanRNN(IN, HID, OUT, hidden, output, init_scale=0.5, seed=seed)
    model.params["bh"] += rng.normal(0, 0.1, HID)
    model.params["by"] += rng.normal(0, 0.1, OUT)
    xs = rng.normal(size=(T, IN))
    targets = rng.integers(0, OUT, T) if output == "softmax" else rng.normal(size=(T, OUT))
    h0 = rng.normal(0, 0.5, HID)
    return model, xs, targets, h0


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("truncate", [None, 1, 3])
@pytest.mark.parametrize("steps", ["all", "last"])
def test_gradients_equal_autograd(hidden, output, truncate, steps):
    model, xs, targets, h0 = make_case(output, hidden)
    steps = list(range(T)) if steps == "all" else [T - 1]
    fw = model.forward(xs, h0)
    grads = model.backward(fw, targets, steps, truncate)
    loss, expected = torch_loss(model, xs, targets, steps, truncate, h0)
    assert model.loss(fw, targets, steps) == pytest.approx(loss, rel=1e-12)
    for k in grads:
        assert rel_error(grads[k], expected[k]) <= 1e-7, k


def test_truncation_changes_the_gradient():
    model, xs, targets, h0 = make_case("linear", "tanh")
    fw = model.forward(xs, h0)
    full = model.backward(fw, targets, [T - 1])
    cut = model.backward(fw, targets, [T - 1], truncate=2)
    assert rel_error(full["W"], cut["W"]) > 1e-3
    assert np.array_equal(full["V"], cut["V"])  # the output layer is not recurrent
    assert rel_error(model.backward(fw, targets, [T - 1], truncate=T)["W"], full["W"]) < 1e-12


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid"])
def test_finite_differences_on_a_tiny_net(hidden):
    model, xs, targets, h0 = make_case("linear", hidden, seed=3)
    steps = list(range(T))
    grads = model.backward(model.forward(xs, h0), targets, steps)
    eps = 1e-6
    for name, param in model.params.items():
        numeric = np.zeros_like(param)
        for i in np.ndindex(param.shape):
            saved = param[i]
            param[i] = saved + eps
            plus = model.loss(model.forward(xs, h0), targets, steps)
            param[i] = saved - eps
            minus = model.loss(model.forward(xs, h0), targets, steps)
            param[i] = saved
            numeric[i] = (plus - minus) / (2 * eps)
        assert rel_error(grads[name], numeric) < 1e-6, name


def test_clipping_is_applied_after_the_gradient():
    grads = {"a": np.array([30.0, -4.0]), "b": np.array([-12.0])}
    clip_by_value(grads, 10.0)
    assert grads["a"].tolist() == [10.0, -4.0] and grads["b"].tolist() == [-10.0]


def test_sampling_is_deterministic_under_a_seed():
    model = ElmanRNN(6, 8, 6, output="softmax", init_scale=0.5)
    a = model.sample(np.zeros(8), 0, 30, 0.7, np.random.default_rng(1))
    b = model.sample(np.zeros(8), 0, 30, 0.7, np.random.default_rng(1))
    assert a == b and len(a) == 30 and a != model.sample(np.zeros(8), 0, 30, 0.7, np.random.default_rng(2))


def test_sine_reaches_the_target():
    _, mse = train_sine(epochs=25, log=lambda *a: None)
    assert mse <= 1e-2


def test_chars_loss_falls():
    text = "the quick brown fox jumps over the lazy dog. " * 40
    _, before, after = train_chars(text, steps=1500, hidden=32, sample_every=0, log=lambda *a: None)
    assert after < before - 0.3


def test_module_does_not_import_torch():
    code = "import sys, rnnlab.numpy_rnn; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_cli_both_modes_and_errors(tmp_path, data_dir):
    result = run_script("numpy_rnn.py", "sine", "--epochs", "2", cwd=tmp_path)
    assert result.returncode == 0 and "final validation MSE" in result.stdout
    result = run_script("numpy_rnn.py", "chars", "--text", str(data_dir / "tinyshakespeare" / "input.txt"),
                        "--steps", "200", "--sample-every", "100", "--hidden", "32", cwd=tmp_path)
    assert result.returncode == 0 and "--- step 100" in result.stdout and "before" in result.stdout
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run_script("numpy_rnn.py", "chars", "--text", str(empty), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == f"numpy_rnn.py: error: {empty} is empty"


@pytest.mark.parametrize(("args", "message"), [
    (["sine", "--hidden", "0"], "argument --hidden: expected an integer >= 1, got '0'"),
    (["sine", "--truncate", "2.5"], "argument --truncate: expected an integer >= 1, got '2.5'"),
    (["sine", "--lr", "-1"], "argument --lr: expected a number > 0, got '-1'"),
    (["chars", "--text", "x.txt", "--temperature", "0"], "argument --temperature: expected a number > 0, got '0'"),
    (["chars", "--text", "x.txt", "--seq-len", "abc"], "argument --seq-len: expected an integer >= 1, got 'abc'"),
])
def test_cli_sizes_and_rates_out_of_range_are_refused_before_training(capsys, args, message):
    from rnnlab.numpy_rnn import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"numpy_rnn.py {args[0]}: error: {message}"


def test_cli_text_files_that_cannot_be_read_are_named(tmp_path):
    from rnnlab.numpy_rnn import main

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait".encode("latin-1"))
    cases = {str(tmp_path / "missing.txt"): f"--text: {tmp_path / 'missing.txt'} does not exist",
             str(latin1): f"--text: {latin1} is not UTF-8 text (byte 3)",
             str(tmp_path): f"--text: cannot read {tmp_path} (Is a directory)"}
    for path, message in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(["chars", "--text", path])
        assert exit_info.value.code == f"numpy_rnn.py: error: {message}"


def test_cli_help_gives_every_option_a_meaning_and_its_default(capsys):
    from rnnlab.numpy_rnn import main

    for mode in ("sine", "chars"):
        with pytest.raises(SystemExit):
            main([mode, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text
        expected = {"sine": ["--hidden HIDDEN hidden units (default: 50)", "BPTT truncation k (default: full BPTT)"],
                    "chars": ["--text TEXT the UTF-8 text file to learn --steps", "(default: 5000)"]}[mode]
        for line in expected:
            assert line in text
