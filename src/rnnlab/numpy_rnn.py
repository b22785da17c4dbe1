"""An Elman RNN from scratch in NumPy: forward, backpropagation through time, clipping, SGD/Adagrad, sampling.

No torch anywhere in this module. Notation, for one sequence of T steps:

    a_t = U x_t + W h_{t-1} + bh          pre-activation          (hidden,)
    h_t = f(a_t)                           tanh or sigmoid          (hidden,)
    o_t = V h_t + by                       output                   (out,)
    y_t = o_t (linear) or softmax(o_t)

Loss: 0.5 * ||o_t - target_t||^2 (linear) or -log softmax(o_t)[target_t] (softmax), summed over
the steps that have a target. The derivative of f is taken at its output h_t
(tanh: 1 - h^2, sigmoid: h (1 - h)), never at the pre-activation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.data.series import make_windows, sine_series, split_windows

PARAMS = ("U", "W", "V", "bh", "by")


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


ACTIVATIONS = {
    "tanh": (np.tanh, lambda h: 1.0 - h * h),
    "sigmoid": (sigmoid, lambda h: h * (1.0 - h)),
}


def softmax(o: np.ndarray) -> np.ndarray:
    e = np.exp(o - o.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Forward:
    """What backward needs: inputs `(T, in)`, states `(T + 1, hidden)` (`hs[0]` the initial one), outputs `(T, out)`."""

    xs: np.ndarray
    hs: np.ndarray
    outputs: np.ndarray


class ElmanRNN:
    def __init__(self, n_in: int, n_hidden: int, n_out: int, hidden: str = "tanh", output: str = "linear",
                 init_scale: float = 0.1, seed: int = 0, dtype=np.float64):
        if hidden not in ACTIVATIONS:
            raise ValueError(f"hidden activation must be one of {sorted(ACTIVATIONS)}, got {hidden!r}")
        if output not in ("linear", "softmax"):
            raise ValueError(f"output must be 'linear' or 'softmax', got {output!r}")
        rng = np.random.default_rng(seed)
        self.hidden, self.output = hidden, output
        self.f, self.df = ACTIVATIONS[hidden]
        self.params = {
            "U": rng.uniform(-init_scale, init_scale, (n_hidden, n_in)).astype(dtype),
            "W": rng.uniform(-init_scale, init_scale, (n_hidden, n_hidden)).astype(dtype),
            "V": rng.uniform(-init_scale, init_scale, (n_out, n_hidden)).astype(dtype),
            "bh": np.zeros(n_hidden, dtype),
            "by": np.zeros(n_out, dtype),
        }

    @property
    def n_hidden(self) -> int:
        return self.params["W"].shape[0]

    def forward(self, xs: np.ndarray, h0: np.ndarray | None = None) -> Forward:
        U, W, V, bh, by = (self.params[k] for k in PARAMS)
        hs = np.zeros((len(xs) + 1, self.n_hidden), dtype=U.dtype)
        if h0 is not None:
            hs[0] = h0
        for t, x in enumerate(xs):
            hs[t + 1] = self.f(U @ x + W @ hs[t] + bh)
        outputs = hs[1:] @ V.T + by
        return Forward(np.asarray(xs), hs, softmax(outputs) if self.output == "softmax" else outputs)

    def loss(self, fw: Forward, targets: np.ndarray, steps: Sequence[int]) -> float:
        """Summed loss over `steps`; `targets[t]` is a vector (linear) or a class id (softmax)."""
        if self.output == "softmax":
            return float(-sum(np.log(fw.outputs[t, int(targets[t])]) for t in steps))
        return float(0.5 * sum(np.sum((fw.outputs[t] - targets[t]) ** 2) for t in steps))

    def output_grads(self, fw: Forward, targets: np.ndarray, steps: Sequence[int]) -> np.ndarray:
        """dLoss/do_t `(T, out)`: zero at steps without a target."""
        d_out = np.zeros_like(fw.outputs)
        for t in steps:
            if self.output == "softmax":
                d_out[t] = fw.outputs[t]
                d_out[t, int(targets[t])] -= 1.0
            else:
                d_out[t] = fw.outputs[t] - targets[t]
        return d_out

    def backward(self, fw: Forward, targets: np.ndarray, steps: Sequence[int],
                 truncate: int | None = None) -> dict[str, np.ndarray]:
        """Gradients of `loss` by backpropagation through time.

        `truncate=None`: full BPTT. `truncate=k`: the loss at step t reaches back through the k most
        recent steps only (t, t-1, ..., t-k+1), as if the state had been detached k steps back.
        """
        U, W, V = self.params["U"], self.params["W"], self.params["V"]
        grads = {k: np.zeros_like(p) for k, p in self.params.items()}
        d_out = self.output_grads(fw, targets, steps)
        grads["V"] += d_out.T @ fw.hs[1:]
        grads["by"] += d_out.sum(0)
        dh_from_output = d_out @ V  # (T, hidden)

        def through_step(s: int, dh: np.ndarray) -> np.ndarray:
            da = dh * self.df(fw.hs[s + 1])
            grads["U"] += np.outer(da, fw.xs[s])
            grads["W"] += np.outer(da, fw.hs[s])
            grads["bh"] += da
            return W.T @ da  # dLoss/dh_{s-1}

        if truncate is None:
            dh_next = np.zeros(self.n_hidden, dtype=U.dtype)
            for s in reversed(range(len(fw.xs))):
                dh_next = through_step(s, dh_from_output[s] + dh_next)
        else:
            if truncate < 1:
                raise ValueError(f"truncate must be >= 1 or None, got {truncate}")
            for t in steps:
                dh = dh_from_output[t]
                for s in range(t, max(-1, t - truncate), -1):
                    dh = through_step(s, dh)
        return grads

    def step(self, xs: np.ndarray, targets: np.ndarray, steps: Sequence[int], optimizer: Optimizer,
             h0: np.ndarray | None = None, truncate: int | None = None,
             clip_value: float | None = None) -> tuple[float, np.ndarray]:
        """Forward, backward, clip, update. Returns the loss and the last state."""
        fw = self.forward(xs, h0)
        loss = self.loss(fw, targets, steps)
        grads = self.backward(fw, targets, steps, truncate)
        if clip_value is not None:
            clip_by_value(grads, clip_value)
        optimizer.update(self.params, grads)
        return loss, fw.hs[-1]

    def sample(self, h: np.ndarray, first: int, n: int, temperature: float = 1.0,
               rng: np.random.Generator | None = None) -> list[int]:
        """`n` class ids drawn one at a time from softmax(o / temperature), feeding each back as a one-hot input."""
        if self.output != "softmax":
            raise ValueError("sampling needs a softmax output")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        rng = rng or np.random.default_rng(0)
        U, W, V, bh, by = (self.params[k] for k in PARAMS)
        ix, out = first, []
        for _ in range(n):
            h = self.f(U[:, ix] + W @ h + bh)  # U @ one_hot(ix)
            p = softmax((V @ h + by) / temperature)
            ix = int(rng.choice(len(p), p=p))
            out.append(ix)
        return out


def clip_by_value(grads: dict[str, np.ndarray], limit: float) -> None:
    for g in grads.values():
        np.clip(g, -limit, limit, out=g)


class Optimizer:
    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    def __init__(self, lr: float):
        self.lr = lr

    def update(self, params, grads):
        for k in params:
            params[k] -= self.lr * grads[k]


class Adagrad(Optimizer):
    def __init__(self, lr: float, eps: float = 1e-8):
        self.lr, self.eps, self.memory = lr, eps, {}

    def update(self, params, grads):
        for k in params:
            mem = self.memory.setdefault(k, np.zeros_like(params[k]))
            mem += grads[k] ** 2
            params[k] -= self.lr * grads[k] / np.sqrt(mem + self.eps)


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad}


def train_sine(epochs: int = 25, hidden: int = 50, lr: float = 0.01, optimizer: str = "adagrad",
               activation: str = "tanh", truncate: int | None = None, clip_value: float | None = 10.0,
               seed: int = 0, log=print) -> tuple[ElmanRNN, float]:
    """The sheet's task: sin(0..199), 50 values in, the 51st out, the last 50 windows for validation.
    One window per update, as the sheet trains. Returns the model and the final validation MSE."""
    (x_train, y_train), (x_val, y_val) = split_windows(*make_windows(sine_series(200), 50, 1), 50)
    model = ElmanRNN(1, hidden, 1, activation, "linear", seed=seed)
    opt = OPTIMIZERS[optimizer](lr)
    rng = np.random.default_rng(seed)
    last = [x_train.shape[1] - 1]

    def val_mse() -> float:
        preds = np.array([model.forward(x).outputs[-1] for x in x_val])
        return float(np.mean((preds - y_val) ** 2))

    log(f"epoch   0  val MSE {val_mse():.5f}")
    for epoch in range(1, epochs + 1):
        total = 0.0
        for i in rng.permutation(len(x_train)):
            target = np.zeros((x_train.shape[1], 1))
            target[-1] = y_train[i]
            loss, _ = model.step(x_train[i], target, last, opt, truncate=truncate, clip_value=clip_value)
            total += loss
        log(f"epoch {epoch:3d}  train loss {total / len(x_train):.3e}  val MSE {val_mse():.3e}")
    return model, val_mse()


def train_chars(text: str, steps: int = 2000, hidden: int = 100, seq_len: int = 25, lr: float = 0.1,
                temperature: float = 1.0, sample_every: int = 1000, sample_length: int = 200, seed: int = 0,
                log=print) -> tuple[ElmanRNN, float, float]:
    """min-char-rnn: one stream of `seq_len`-character windows with the state carried, Adagrad,
    gradients clipped to [-5, 5]. Returns the model and the smoothed loss per character before and after."""
    if not text:
        raise ValueError("the text is empty")
    chars = sorted(set(text))
    if len(text) <= seq_len + 1:
        raise ValueError(f"the text has {len(text)} characters; need more than seq_len + 1 = {seq_len + 1}")
    index = {c: i for i, c in enumerate(chars)}
    data = np.array([index[c] for c in text])
    vocab = len(chars)
    model = ElmanRNN(vocab, hidden, vocab, "tanh", "softmax", init_scale=0.01, seed=seed)
    opt, rng, eye = Adagrad(lr), np.random.default_rng(seed), np.eye(vocab)
    h, p = np.zeros(hidden), 0
    smooth = start = float(np.log(vocab))  # loss per character of a uniform guess
    for n in range(steps):
        if p + seq_len + 1 > len(data):
            h, p = np.zeros(hidden), 0
        inputs, targets = data[p : p + seq_len], data[p + 1 : p + seq_len + 1]
        loss, h = model.step(eye[inputs], targets, range(seq_len), opt, h0=h, clip_value=5.0)
        smooth = 0.999 * smooth + 0.001 * loss / seq_len
        if sample_every and (n % sample_every == 0 or n == steps - 1):
            text_out = "".join(chars[i] for i in model.sample(h, inputs[-1], sample_length, temperature, rng))
            log(f"--- step {n}, smoothed loss {smooth:.4f} nats/char ---\n{text_out}\n")
        p += seq_len
    return model, start, smooth


def count(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.lstrip("+").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def positive(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Help lines that end in their default, where there is one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="numpy_rnn.py", description="The NumPy RNN: sine regression or a char model.")
    sub = parser.add_subparsers(dest="mode", required=True)
    sine = sub.add_parser("sine", help="the lab sheet's sine task", formatter_class=DefaultsHelp,
                          description="An Elman RNN reads 50 values of sin(x) and predicts the 51st; prints the "
                                      "validation MSE.")
    sine.add_argument("--epochs", type=count, default=25, help="passes over the training windows")
    sine.add_argument("--hidden", type=count, default=50, help="hidden units")
    sine.add_argument("--lr", type=positive, default=0.01, help="learning rate")
    sine.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adagrad", help="update rule")
    sine.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh", help="hidden activation")
    sine.add_argument("--truncate", type=count, default=None, help="BPTT truncation k (default: full BPTT)")
    sine.add_argument("--seed", type=int, default=0, help="seed of the weights and the shuffles")
    chars = sub.add_parser("chars", help="min-char-rnn on a text file; prints samples", formatter_class=DefaultsHelp,
                           description="Karpathy's min-char-rnn: a tanh RNN over the characters of a UTF-8 text "
                                       "file, trained with Adagrad; prints samples as it trains.")
    chars.add_argument("--text", required=True, help="the UTF-8 text file to learn")
    chars.add_argument("--steps", type=count, default=5000, help="updates, one window each")
    chars.add_argument("--hidden", type=count, default=100, help="hidden units")
    chars.add_argument("--seq-len", type=count, default=25, help="characters per window (BPTT length)")
    chars.add_argument("--lr", type=positive, default=0.1, help="Adagrad's learning rate")
    chars.add_argument("--temperature", type=positive, default=1.0, help="sampling temperature")
    chars.add_argument("--sample-every", type=count, default=1000, help="steps between samples")
    chars.add_argument("--sample-length", type=count, default=200, help="characters per sample")
    chars.add_argument("--seed", type=int, default=0, help="seed of the weights and the samples")
    args = parser.parse_args(argv)
    try:
        if args.mode == "sine":
            _, mse = train_sine(args.epochs, args.hidden, args.lr, args.optimizer, args.activation, args.truncate,
                                seed=args.seed)
            print(f"final validation MSE {mse:.3e}")
        else:
            try:
                text = Path(args.text).read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ValueError(f"--text: {args.text} does not exist") from None
            except UnicodeDecodeError as e:
                raise ValueError(f"--text: {args.text} is not UTF-8 text (byte {e.start})") from None
            except OSError as e:
                raise ValueError(f"--text: cannot read {args.text} ({e.strerror})") from None
            if not text:
                raise ValueError(f"{args.text} is empty")
            _, before, after = train_chars(text, args.steps, args.hidden, args.seq_len, args.lr, args.temperature,
                                           args.sample_every, args.sample_length, args.seed)
            print(f"smoothed loss per character: {before:.4f} before, {after:.4f} after {args.steps} steps")
    except (OSError, ValueError) as e:
        sys.exit(f"numpy_rnn.py: error: {e}")


if __name__ == "__main__":
    main()
