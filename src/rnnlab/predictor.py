"""P(positive) from sentiment checkpoints: one text with its per-word trajectory, many texts batched, and the
averaged prediction of several classifiers (an ensemble, e.g. ULMFiT's forward + backward pair)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rnnlab.checkpoint import TrainedRun
from rnnlab.data.text import pad_batch, reading, tokenize
from rnnlab.onnx_export import OnnxModel
from rnnlab.tasks.sentiment import SentimentClassifier


@dataclass
class Prediction:
    words: list[str]          # the words the model read (after truncation)
    positions: list[int]      # the words (0-based) after which P(positive) was computed: all, or evenly spaced
    trajectory: list[float]   # P(positive) after each of those words
    probability: float        # P(positive) of the whole text
    unknown: list[str]        # words not in the vocabulary
    truncated: bool


def check_sentiment(run: TrainedRun) -> None:
    """Refuses a run that is not a sentiment classifier, in one line naming its checkpoint."""
    if not isinstance(run.model, SentimentClassifier):
        raise ValueError(f"{run.path} holds a {type(run.model).__name__}, not a sentiment model (task=sentiment)")


class Predictor:
    """Tokenizes as the run's data config did, encodes with the checkpoint's vocabulary, predicts."""

    def __init__(self, run: TrainedRun, onnx: OnnxModel | None = None):
        check_sentiment(run)
        self.model, self.vocab, self.data, self.onnx = run.model, run.vocab, run.config.data, onnx

    def probabilities(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """P(positive) `(batch,)` of a padded batch (PyTorch, or the exported model with `backend=onnxruntime`)."""
        if self.onnx is None:
            return self.model.prob_positive(self.model(ids, lengths))
        (probs,) = self.onnx(ids.cpu().numpy().astype(np.int64), lengths.cpu().numpy().astype(np.int64))
        return torch.from_numpy(probs)

    def words(self, text: str) -> tuple[list[str], bool]:
        """The words the model reads, in its reading order (last word first for a backward model,
        `data.reverse`), and whether the text was cut to `data.max_len`."""
        d = self.data
        words = tokenize(text, d.lower, d.strip_html, d.strip_punctuation)
        read = reading(words, d.max_len, d.truncate_keep, d.get("reverse", False))
        return read, len(read) < len(words)

    def one(self, text: str, points: int | None = None) -> Prediction:
        """The prediction for `text` and its trajectory after every word, or after `points` evenly spaced
        words of a longer text (a bidirectional model rereads each prefix: time grows with length x points)."""
        words, truncated = self.words(text)
        if not words:
            raise ValueError("the text has no words to read")
        ids = torch.tensor(self.vocab.encode(words), device=self.model.device)
        n = len(words)
        lengths = torch.arange(1, n + 1) if not points or n <= points else \
            torch.linspace(1, n, points).round().long().unique()
        with torch.no_grad():
            if self.onnx is None:
                trajectory = self.model.trajectory(ids, lengths.to(ids.device)).tolist()
            else:  # each prefix is the text read up to its length (what follows it is padding to the model)
                trajectory = self.probabilities(ids.expand(len(lengths), n), lengths).tolist()
            prob = self.probabilities(ids[None], torch.tensor([n]))[0].item()
        return Prediction(words, (lengths - 1).tolist(), trajectory, prob, self.vocab.unknown(words), truncated)

    @torch.no_grad()
    def many(self, texts: list[str], batch_size: int = 256) -> list[float | None]:
        """P(positive) of each text (None for a text with no words), batched and length-sorted."""
        encoded = [self.vocab.encode(self.words(t)[0]) for t in texts]
        order = sorted((i for i, e in enumerate(encoded) if e), key=lambda i: len(encoded[i]))
        probs: list[float | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids = pad_batch([encoded[i] for i in idx], self.data.padding_side).to(self.model.device)
            lengths = torch.tensor([len(encoded[i]) for i in idx])
            for i, p in zip(idx, self.probabilities(ids, lengths).tolist()):
                probs[i] = p
        return probs


def averaged(members: list[list[float | None]]) -> list[float | None]:
    """Each text's P(positive) averaged over the members (None where a member read no words)."""
    return [None if None in probs else sum(probs) / len(probs) for probs in zip(*members)]


@dataclass
class EnsembleResult:
    """Each member's and the averaged P(positive) of a split's texts, with their labels."""

    members: list[torch.Tensor]  # per checkpoint, (texts,)
    mean: torch.Tensor           # (texts,)
    labels: torch.Tensor         # (texts,)
    dropped: int                 # texts with no words for some member: left out, as the classifier's test leaves them


def ensemble(runs: list[TrainedRun], texts: list[str], labels: list[int], batch_size: int = 256) -> EnsembleResult:
    """P(positive) of `texts` from every classifier in `runs`, each reading them as its own data config says
    (tokenization, vocabulary, `reverse`), and their mean."""
    probs = [Predictor(run).many(texts, batch_size) for run in runs]
    mean = averaged(probs)
    kept = [i for i, p in enumerate(mean) if p is not None]
    return EnsembleResult([torch.tensor([p[i] for i in kept]) for p in probs], torch.tensor([mean[i] for i in kept]),
                          torch.tensor([labels[i] for i in kept]), len(texts) - len(kept))
