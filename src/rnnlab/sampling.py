"""Sampling from a recurrent language model, one symbol at a time with the state carried."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from rnnlab.checks import check_count, is_number
from rnnlab.data.text import document_words, is_document_corpus, tokenization

STRATEGIES = ("multinomial", "argmax")


def choose(logits: Tensor, temperature: float = 1.0, strategy: str = "multinomial", top_k: int | None = None,
           generator: torch.Generator | None = None, top_p: float | None = None) -> Tensor:
    """Next ids `(batch,)` from logits `(batch, vocab)`, divided by `temperature`, then only among the `top_k` most
    likely and the smallest set of most likely ids whose probabilities reach `top_p` (nucleus sampling).

    A multinomial draw is `torch.multinomial(probs, 1)`'s own method without its checks of `probs` (which cost
    more than the draw at batch 1): the argmax of `probs / q`, `q ~ Exp(1)` from `generator`, so the same
    generator gives the same ids."""
    if strategy == "argmax":
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ranked, order = logits.sort(-1, descending=True)
        p = ranked.softmax(-1)
        beyond = p.cumsum(-1) - p >= top_p  # the mass before this id already reaches top_p; the first always stays
        logits = logits.masked_fill(beyond.scatter(-1, order, beyond), float("-inf"))
    probs = torch.softmax(logits, -1).cpu()  # the seeded generator is a CPU one; no copy on the CPU
    q = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / q).argmax(-1).to(logits.device)


def check_sampling_args(length: int, temperature: float, strategy: str, top_k: int | None,
                        top_p: float | None = None) -> None:
    check_count("length", length)
    if not is_number(temperature) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"sampling must be one of {STRATEGIES}, got {strategy!r}")
    check_count("top_k", top_k, nullable=True)
    if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1] or null, got {top_p!r}")


@torch.inference_mode()
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
    single_step: bool = True,
    banned: Sequence[int] = (),
    top_p: float | None = None,
) -> Tensor:
    """`num_samples` continuations of `prime`, `(num_samples, length)` ids.

    The prime is read in one call to warm the state; each further symbol costs one time step, so the
    cost per symbol does not grow with the length. With `single_step` (and a network that has a
    `stepper()`, as `RNNLM`) a step goes through the cells' single-step functions; otherwise through
    `net` on a window of one step. `on_step` receives each step's ids `(num_samples,)`. Ids in `banned` (a
    padding symbol, which no text holds) are never drawn. `choose` says what `temperature`, `top_k` and `top_p` do.
    """
    check_sampling_args(length, temperature, strategy, top_k, top_p)
    if len(prime) == 0:
        raise ValueError("the prime must hold at least one symbol")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    ids = torch.tensor(list(prime), dtype=torch.long, device=device).repeat(num_samples, 1)
    logits, state = net(ids)
    logits = logits[:, -1]
    if single_step and hasattr(net, "stepper"):
        step, state = net.stepper(), net.rnn.to_layers(state, logits.size(0))
    else:
        def step(nxt: Tensor, state):
            logits, state = net(nxt[:, None], state)
            return logits[:, -1], state
    out = continue_sampling(step, logits, state, length, temperature, strategy, top_k, generator, on_step, banned,
                            top_p)
    net.train(was_training)
    return out


def continue_sampling(step: Callable, logits: Tensor, state, length: int, temperature: float, strategy: str,
                      top_k: int | None, generator: torch.Generator | None,
                      on_step: Callable[[Tensor], None] | None, banned: Sequence[int] = (),
                      top_p: float | None = None) -> Tensor:
    """`length` symbols `(batch, length)` drawn from `logits` `(batch, vocab)` and then from
    `step(ids (batch,), state) -> logits, state` after each draw, never one of the `banned` ids."""
    if not torch.isfinite(logits).all():
        raise ValueError("the network's logits are not finite (NaN or inf) before the first draw: its weights or "
                         "its state have diverged")
    banned_ids = torch.tensor(list(banned), dtype=torch.long, device=logits.device) if banned else None
    out = []
    for t in range(length):
        if banned_ids is not None:
            logits = logits.index_fill(1, banned_ids, float("-inf"))
        nxt = choose(logits, temperature, strategy, top_k, generator, top_p)
        out.append(nxt)
        if on_step is not None:
            on_step(nxt)
        if t + 1 < length:
            logits, state = step(nxt, state)
    return torch.stack(out, 1)


@torch.inference_mode()
def sample_steps(step: Callable, state, prime: Sequence[int], length: int, temperature: float = 1.0,
                 strategy: str = "multinomial", top_k: int | None = None, num_samples: int = 1,
                 seed: int | None = None, on_step: Callable[[Tensor], None] | None = None,
                 banned: Sequence[int] = (), top_p: float | None = None) -> Tensor:
    """`sample` over a step function alone (an exported model run by onnxruntime): the prime is read one
    symbol at a time from `state` (for `num_samples` rows), then as `sample`, the same draws for the same seed."""
    check_sampling_args(length, temperature, strategy, top_k, top_p)
    if len(prime) == 0:
        raise ValueError("the prime must hold at least one symbol")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for symbol in prime:
        logits, state = step(torch.full((num_samples,), int(symbol), dtype=torch.long), state)
    return continue_sampling(step, logits, state, length, temperature, strategy, top_k, generator, on_step, banned,
                             top_p)


def to_symbols(text: str, level: str, data: Mapping | None = None) -> list[str]:
    """A prime as the model's symbols, in its reading order: characters; for a word LM over documents (`task=lm`),
    the words its data config `data` reads (lower-cased, punctuation dropped, last first for a backward LM);
    else whitespace-separated words."""
    if level == "char":
        return list(text)
    return document_words(text, data) if data is not None and is_document_corpus(data) else text.split()


def reads_backward(level: str, data: Mapping | None) -> bool:
    """Whether a word LM reads its documents last word first (`data.reverse`): it samples what comes before."""
    return level == "word" and data is not None and is_document_corpus(data) and tokenization(data)["reverse"]


def from_symbols(symbols: Sequence[str], level: str) -> str:
    """Symbols as text; at word level `<eos>` becomes a line break."""
    if level == "char":
        return "".join(symbols)
    return "".join("\n" if s == "<eos>" else f"{s} " for s in symbols)


def default_prime(level: str) -> str:
    return "\n" if level == "char" else "<eos>"
