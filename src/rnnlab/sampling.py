"""Sampling from a recurrent language model, one symbol at a time with the state carried."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

STRATEGIES = ("multinomial", "argmax")


def choose(logits: Tensor, temperature: float = 1.0, strategy: str = "multinomial", top_k: int | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Next ids `(batch,)` from logits `(batch, vocab)`."""
    if strategy == "argmax":
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)


def check_sampling_args(length: int, temperature: float, strategy: str, top_k: int | None) -> None:
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if strategy not in STRATEGIES:
        raise ValueError(f"sampling must be one of {STRATEGIES}, got {strategy!r}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or null, got {top_k}")


@torch.no_grad()
def sample(
    net: nn.Module,
    prime: Sequence[int],
    length: int,
    temperature: float = 1.0,
    strategy: str = "multinomial",
    top_k: int | None = None,
    num_samples: int = 1,
    seed: int | None = None,
    on_step: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """`num_samples` continuations of `prime`, `(num_samples, length)` ids.

    The prime is read in one call to warm the state; each further symbol costs one call on a
    single time step, so the cost per symbol does not grow with the length. `on_step` receives
    each step's ids `(num_samples,)` as they are produced.
    """
    check_sampling_args(length, temperature, strategy, top_k)
    if len(prime) == 0:
        raise ValueError("the prime must hold at least one symbol")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    ids = torch.tensor(list(prime), dtype=torch.long, device=device).repeat(num_samples, 1)
    logits, state = net(ids)
    out = []
    for t in range(length):
        nxt = choose(logits[:, -1], temperature, strategy, top_k, generator)
        out.append(nxt)
        if on_step is not None:
            on_step(nxt)
        if t + 1 < length:
            logits, state = net(nxt[:, None], state)
    net.train(was_training)
    return torch.stack(out, 1)


def to_symbols(text: str, level: str) -> list[str]:
    """A prime as the model's symbols: characters, or whitespace-separated words."""
    return list(text) if level == "char" else text.split()


def from_symbols(symbols: Sequence[str], level: str) -> str:
    """Symbols as text; at word level `<eos>` becomes a line break."""
    if level == "char":
        return "".join(symbols)
    return "".join("\n" if s == "<eos>" else f"{s} " for s in symbols)


def default_prime(level: str) -> str:
    return "\n" if level == "char" else "<eos>"
