"""Evaluation that adapts to the text it reads, for any recurrent language model (`RNNLM`-like `net`).

Both stream one row of tokens `(1, T)` in windows of `bptt`, carrying the state, score every token
before anything learns from it, and return the NLL summed over the tokens and their count:

- `dynamic_nll` (Krause et al. 2018): after scoring a window, one gradient step on it, with the
  RMS-normalised update (`method="rms"`, mean squared gradients from the training split) or plain SGD,
  and a decay `decay` pulling the weights back towards the trained ones.
- `cache_nll` (Grave et al. 2017, the continuous cache): the model's distribution mixed with one over
  the words that followed the last `window` hidden states, weighted by exp(`theta` h_t . h_i).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.checks import check_count, check_range
from rnnlab.data.streams import BPTTStream
from rnnlab.models.recurrent import detach_state

# What each adaptation's settings may be: (lowest, highest) inclusive, None for no upper bound; "count": an
# integer >= 1.
SETTING_RANGES = {
    "dynamic": {"lr": (0, None), "decay": (0, 1)},
    "cache": {"window": "count", "theta": (0, None), "lam": (0, 1)},
}


def candidates(adapt: Mapping) -> list[dict[str, float]]:
    """The settings an `adapt` config asks for: its own, or with `search` every one of its `grid`; each checked."""
    names = list(SETTING_RANGES[adapt["method"]])
    if not adapt["search"]:
        settings, where = [{k: adapt[k] for k in names}], "adapt"
    else:
        settings = [dict(zip(names, values)) for values in itertools.product(*(adapt["grid"][k] for k in names))]
        where = "adapt.grid"
    for setting in settings:
        for key, allowed in SETTING_RANGES[adapt["method"]].items():
            if allowed == "count":
                check_count(f"{where}.{key}", setting[key])
            else:
                check_range(f"{where}.{key}", setting[key], *allowed)
    check_count("adapt.bptt", adapt.get("bptt"), nullable=True)
    return settings


def windows(stream: Tensor, bptt: int) -> BPTTStream:
    """`(inputs, targets)` windows `(1, time)` over a 1-D token stream, in order: one row of `BPTTStream`."""
    return BPTTStream(stream, 1, bptt)


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """NLL summed over the tokens of one row: logits `(time, vocab)`, targets `(time,)`."""
    return -F.log_softmax(logits, -1).gather(1, targets[:, None]).sum()


@torch.inference_mode()
def plain_nll(net: nn.Module, stream: Tensor, bptt: int) -> tuple[float, int]:
    """NLL summed over every token of `stream` and the token count, state carried (no adaptation)."""
    net.eval()
    total, state = 0.0, None
    for x, y in windows(stream, bptt):
        logits, state = net(x, state)
        total += token_nll(logits[0], y[0]).item()
    return total, stream.numel() - 1


# Gradients in eval mode (no dropout): cuDNN's RNN backward refuses eval mode, so these run without cuDNN.
@torch.backends.cudnn.flags(enabled=False)
def gradient_ms(net: nn.Module, stream: Tensor, bptt: int, batches: int | None = None,
                batch_size: int = 100) -> list[Tensor]:
    """Mean squared gradients of the mean token loss over windows `(batch_size, bptt)` of `stream` (training
    text, state carried), as Krause et al. collect them: the first `batches` windows, or all of them."""
    net.eval()
    ms = [torch.zeros_like(p) for p in net.parameters()]
    state, n = None, 0
    for x, y in itertools.islice(BPTTStream(stream, batch_size, bptt), batches):
        logits, state = net(x, detach_state(state))
        grads = torch.autograd.grad(F.cross_entropy(logits.flatten(0, 1), y.flatten()), list(net.parameters()))
        for m, g in zip(ms, grads):
            m.add_(g * g)
        n += 1
    return [m / max(n, 1) for m in ms]


@torch.backends.cudnn.flags(enabled=False)
def dynamic_nll(net: nn.Module, stream: Tensor, bptt: int, lr: float, decay: float = 0.0, method: str = "rms",
                ms: Sequence[Tensor] | None = None, eps: float = 1e-4) -> tuple[float, int]:
    """NLL of `stream` under dynamic evaluation; the network's weights are restored afterwards."""
    if method not in ("rms", "sgd"):
        raise ValueError(f"adapt.rule must be 'rms' or 'sgd', got {method!r}")
    if method == "rms" and ms is None:
        raise ValueError("the rms update needs the mean squared gradients (gradient_ms on the training split)")
    params = list(net.parameters())
    original = [p.detach().clone() for p in params]
    if method == "rms":
        rms = [m.sqrt() + eps for m in ms]
        mean_rms = torch.cat([r.flatten() for r in rms]).mean()
        pull = [torch.clamp(r / mean_rms, max=1.0 / decay if decay > 0 else 1.0) for r in rms]
    net.eval()
    total, state = 0.0, None
    try:
        for x, y in windows(stream, bptt):
            logits, state = net(x, detach_state(state))
            loss = token_nll(logits[0], y[0])
            total += loss.item()  # scored with the weights from before this window
            grads = torch.autograd.grad(loss / y.numel(), params)
            with torch.no_grad():
                for i, (p, g, p0) in enumerate(zip(params, grads, original)):
                    step = g / rms[i] if method == "rms" else g
                    p.sub_(lr * step)
                    if decay:
                        p.add_(decay * (p0 - p) * (pull[i] if method == "rms" else 1.0))
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, original):
                p.copy_(p0)
    return total, stream.numel() - 1


def cache_log_probs(net: nn.Module, stream: Tensor, bptt: int, window: int = 2000, theta: float = 0.3,
                    lam: float = 0.1) -> Iterator[tuple[Tensor, Tensor]]:
    """`(log-probabilities (time, vocab), targets (time,))` of each window of `stream` under the cache mixture
    (1 - lam) p_model + lam p_cache, where p_cache(w) is a softmax of theta h_t . h_i over the last `window`
    positions i already scored whose next word was w (no cache yet: the model alone)."""
    net.eval()
    state = None
    keys, values = None, stream.new_empty(0)  # the hidden states already scored, the word after each
    log_keep, log_lam = math.log1p(-lam), (math.log(lam) if lam > 0 else float("-inf"))
    for x, y in windows(stream, bptt):
        out, state = net.hidden(x, state)
        h, targets = out[0], y[0]  # (time, hidden), (time,)
        log_model = F.log_softmax(net.decoder(h), -1)
        keys = h.new_empty(0, h.size(1)) if keys is None else keys
        all_keys, all_values = torch.cat([keys, h]), torch.cat([values, targets])
        position = torch.arange(all_keys.size(0), device=h.device)[None, :]
        now = keys.size(0) + torch.arange(h.size(0), device=h.device)[:, None]  # position of each step among all_keys
        visible = (position < now) & (position >= now - window)
        scores = (theta * h @ all_keys.T).masked_fill(~visible, float("-inf"))
        has_cache = visible.any(1, keepdim=True)
        weights = torch.softmax(scores.masked_fill(~has_cache, 0.0), -1) * has_cache
        cache = torch.zeros_like(log_model).index_add_(1, all_values, weights)
        mixed = torch.logaddexp(log_keep + log_model, log_lam + cache.log())
        yield torch.where(has_cache, mixed, log_model), targets
        keys, values = all_keys[-window:], all_values[-window:]


@torch.inference_mode()
def cache_nll(net: nn.Module, stream: Tensor, bptt: int, window: int = 2000, theta: float = 0.3,
              lam: float = 0.1) -> tuple[float, int]:
    """NLL of `stream` with the continuous cache pointer over the last `window` positions."""
    total = 0.0
    for log_probs, targets in cache_log_probs(net, stream, bptt, window, theta, lam):
        total -= log_probs.gather(1, targets[:, None]).sum().item()  # token_nll on the mixture
    return total, stream.numel() - 1
