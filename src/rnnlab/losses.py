"""Cross-entropy over a large vocabulary without `nll_loss`'s zero-filled gradient and `log_softmax`'s backward."""

from __future__ import annotations

import torch
from torch import Tensor


class FusedCrossEntropy(torch.autograd.Function):
    """Mean NLL of `targets` `(n,)` under `logits` `(n, vocab)`.

    Forward: one `log_softmax` pass and one gathered value per row. Backward: the saved log-probabilities'
    exp minus one-hot, written once into one buffer and scaled in place, instead of a zero-filled `(n, vocab)`
    gradient from `nll_loss`, scattered, then pushed through `log_softmax`'s backward.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        log_probs = torch.log_softmax(logits, dim=-1)
        ctx.save_for_backward(log_probs, targets)
        return -log_probs.gather(1, targets[:, None]).mean()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        log_probs, targets = ctx.saved_tensors
        out = log_probs.exp()
        out[torch.arange(targets.numel(), device=targets.device), targets] -= 1.0
        return out.mul_(grad / targets.numel()), None


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """`F.cross_entropy(logits, targets)` (mean over rows), computed by `FusedCrossEntropy`."""
    return FusedCrossEntropy.apply(logits, targets)
