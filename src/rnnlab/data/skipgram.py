"""Skip-gram training pairs with negative samples, from the id sequences of training texts."""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset


class SkipGramPairs(IterableDataset):
    """Batches of (center `(batch,)`, context `(batch,)`, negatives `(batch, k)`) from id sequences.

    Context words lie within `window` of the center; negatives are drawn from the unigram
    distribution raised to 0.75 (Mikolov et al. 2013). Padding and unknown ids (0, 1) are skipped.
    With `subsample` = t > 0, a word of frequency f is kept with probability min(1, sqrt(t/f) + t/f)
    (word2vec's rule, drawn once), which drops most "the"/"a" and widens the effective window.
    """

    def __init__(self, sequences: list[list[int]], vocab_size: int, window: int = 5, negatives: int = 5,
                 batch_size: int = 1024, seed: int = 0, subsample: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        seqs = [torch.tensor([i for i in seq if i > 1], dtype=torch.long) for seq in sequences]
        if subsample > 0 and seqs:
            freq = torch.bincount(torch.cat(seqs), minlength=vocab_size).double()
            freq = freq / freq.sum().clamp(min=1)
            ratio = subsample / freq.clamp(min=1e-12)
            keep = (ratio.sqrt() + ratio).clamp(max=1.0)
            seqs = [seq[torch.rand(len(seq), generator=g, dtype=torch.double) < keep[seq]] for seq in seqs]
        centers, contexts = [], []
        for seq in seqs:
            for offset in range(1, window + 1):
                if len(seq) > offset:
                    centers += [seq[:-offset], seq[offset:]]
                    contexts += [seq[offset:], seq[:-offset]]
        if not centers:
            raise ValueError(f"no skip-gram pairs: {len(sequences)} text(s) leave no two known words within a "
                             f"window (subsample={subsample} may have dropped them all; try a smaller one)")
        self.centers, self.contexts = torch.cat(centers), torch.cat(contexts)
        counts = torch.bincount(self.centers, minlength=vocab_size).float()
        self.noise = counts.pow(0.75) / counts.pow(0.75).sum()
        self.negatives, self.batch_size, self.seed, self.passes = negatives, batch_size, seed, 0

    def __len__(self) -> int:
        return -(-len(self.centers) // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.passes)
        self.passes += 1
        order = torch.randperm(len(self.centers), generator=g)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            neg = torch.multinomial(self.noise, len(idx) * self.negatives, replacement=True, generator=g)
            yield self.centers[idx], self.contexts[idx], neg.view(len(idx), self.negatives)
