"""Scoring texts with a language model: the surprisal of every symbol of a line, read on its own."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnlab.checkpoint import TrainedRun
from rnnlab.data.vocab import UnknownSymbolError, Vocabulary
from rnnlab.sampling import default_prime, to_symbols


@dataclass
class LineScore:
    """A line's symbols as the model read them (its end-of-line symbol last), each symbol's surprisal
    `-log P` in nats, and the line's symbols outside the vocabulary (read as its unknown symbol)."""

    symbols: list[str]
    surprisal: list[float]
    unknown: list[str]

    @property
    def log_prob(self) -> float:
        """log P(line) in nats."""
        return -math.fsum(self.surprisal)

    @property
    def perplexity(self) -> float:
        return math.exp(-self.log_prob / len(self.symbols))

    @property
    def surprisal_bits(self) -> list[float]:
        return [nats / math.log(2) for nats in self.surprisal]


def line_symbols(text: str, level: str, data: Mapping | None) -> list[str]:
    """A line as the model reads a line of its corpus (`generate.py` reads a prime the same way), in its reading
    order, ending with the symbol that ends a line (`<eos>`, or a line break for a char model); [] for a line
    with nothing to read."""
    symbols = to_symbols(text, level, data)
    return [*symbols, *to_symbols(default_prime(level), level)] if symbols else []


LOGITS_AT_ONCE = 1 << 24  # logits held at once (64 MB of floats): the memory stays bounded however long the lines


def surprisal_of(logits: Tensor, targets: Tensor) -> Tensor:
    """`-log P(target)` in nats `(batch, time)` from logits `(batch, time, vocab)` (or log-probabilities)."""
    logits = logits.float()
    return logits.logsumexp(-1) - logits.gather(-1, targets[..., None])[..., 0]


@torch.inference_mode()
def score_lines(net: nn.Module, vocab: Vocabulary, lines: Sequence[str], level: str, data: Mapping | None = None,
                batch_size: int = 64) -> list[LineScore | None]:
    """Each line's score (None for a line with nothing to read), every line read on its own from the zero state
    after the end-of-line symbol, as a line that follows another in the corpus is read. Lines go through `net`
    in batches of similar length, padded on the right (which a left-to-right model never reads), and a batch in
    windows of time, the state carried, so that no more than `LOGITS_AT_ONCE` logits are held at once."""
    boundary = vocab.encode(to_symbols(default_prime(level), level))
    read = [line_symbols(text, level, data) for text in lines]
    if vocab.unk is None or vocab.on_unknown == "error":  # the run read such symbols as errors, not as unknown
        missing = vocab.unknown(s for symbols in read for s in symbols)
        if missing:
            raise UnknownSymbolError(missing, where="the text")
    was_training, device = net.training, next(net.parameters()).device
    net.eval()
    scores: list[LineScore | None] = [None] * len(lines)
    order = sorted((i for i, symbols in enumerate(read) if symbols), key=lambda i: len(read[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        ids = [boundary + vocab.encode(read[i]) for i in rows]
        longest = max(map(len, ids))
        batch = torch.tensor([row + [0] * (longest - len(row)) for row in ids], device=device)
        window, state, parts = max(1, LOGITS_AT_ONCE // (len(rows) * len(vocab))), None, []
        for t in range(0, longest - 1, window):
            logits, state = net(batch[:, t:min(t + window, longest - 1)], state)
            parts.append(surprisal_of(logits, batch[:, t + 1:t + 1 + logits.size(1)]))
        surprisal = torch.cat(parts, 1)
        for i, row, values in zip(rows, ids, surprisal.cpu().tolist()):
            scores[i] = LineScore(read[i], values[:len(row) - 1], vocab.unknown(read[i]))
    net.train(was_training)
    return scores


def score_run(run: TrainedRun, lines: Sequence[str], batch_size: int = 64) -> list[LineScore | None]:
    """`score_lines` with a trained language model (`load_run`): its network, vocabulary, symbols and tokenization."""
    return score_lines(run.model.net, run.vocab, lines, run.model.symbol_level, run.config.get("data"), batch_size)
