"""The recurrent language-model network: embedding (or one-hot) -> recurrent stack -> decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rnnlab.checks import check_count
from rnnlab.models.recurrent import RecurrentStack, State
from rnnlab.models.regularization import LockedDropout, word_dropout

INITS = ("uniform", "pytorch")


class OneHot(nn.Module):
    """Ids `(batch, time)` -> one-hot vectors `(batch, time, vocab_size)`."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.embedding_dim = vocab_size
        self.register_buffer("eye", torch.eye(vocab_size), persistent=False)  # follows .to(dtype/device)

    def forward(self, ids: Tensor) -> Tensor:
        return self.eye[ids]


class AdaptiveSoftmax(nn.Module):
    """Hidden `(..., hidden)` -> log-probabilities `(..., vocab)` by the adaptive softmax (Grave et al. 2017;
    PyTorch's `AdaptiveLogSoftmaxWithLoss`): the ids below `cutoffs[0]` in the head, rarer ones in clusters
    with smaller projections (`div_value`). Ids must run from most to least frequent, as the vocabularies do.
    Its outputs are a proper distribution, so they serve wherever logits do; `nll` is the cheap training loss."""

    def __init__(self, hidden_size: int, vocab_size: int, cutoffs: Sequence[int], div_value: float = 4.0):
        super().__init__()
        self.asm = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab_size, list(cutoffs), div_value=div_value)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.asm.log_prob(hidden.reshape(-1, hidden.size(-1))).view(*hidden.shape[:-1], -1)

    def nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Mean NLL of `targets` `(...)` given `hidden` `(..., hidden)`, without the full distribution."""
        return self.asm(hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)).loss


class RNNLM(nn.Module):
    """Ids `(batch, time)` -> next-symbol logits `(batch, time, vocab)` and the carried state.

    Dropout: `embedding_dropout` on the embedded inputs, `layer_dropout` between recurrent layers, `dropout` on
    the last layer's outputs (the first two default to `dropout`); `locked_dropout=True` makes all three one mask
    per sequence. AWD-LSTM adds `word_dropout` (whole words of the embedding matrix) and `weight_drop`
    (DropConnect on the hidden-to-hidden weights). `init_scale`: uniform init in [-init_scale, init_scale] of
    every weight, or with `recurrent_init="pytorch"` of the embedding and decoder only, the recurrent layers
    keeping PyTorch's (AWD-LSTM's choice). `adaptive_softmax`: cluster cutoffs (e.g. `[2000, 10000]`) for an
    `AdaptiveSoftmax` decoder over large vocabularies (then `logits` are its log-probabilities).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_sizes: Sequence[int] = (200, 200),
        cell: str = "lstm",
        embedding_dim: int | None = 200,
        dropout: float = 0.0,
        embedding_dropout: float | None = None,
        init_scale: float | None = 0.1,
        recurrent_bias: float | None = None,
        forget_bias: float | None = None,
        tie_weights: bool = False,
        layer_dropout: float | None = None,
        locked_dropout: bool = False,
        word_dropout: float = 0.0,
        weight_drop: float = 0.0,
        recurrent_init: str = "uniform",
        adaptive_softmax: Sequence[int] | None = None,
        adaptive_div_value: float = 4.0,
    ):
        super().__init__()
        if recurrent_init not in INITS:
            raise ValueError(f"recurrent_init must be one of {INITS}, got {recurrent_init!r}")
        if word_dropout and embedding_dim is None:
            raise ValueError("word_dropout needs an embedding (embedding_dim), not one-hot inputs")
        check_count("model.net.embedding_dim", embedding_dim, nullable=True)
        if init_scale is not None and not init_scale > 0:
            raise ValueError(f"init_scale must be > 0 or null (PyTorch's own start), got {init_scale}")
        self.vocab_size = vocab_size
        self.encoder = OneHot(vocab_size) if embedding_dim is None else nn.Embedding(vocab_size, embedding_dim)
        input_size = self.encoder.embedding_dim
        drop = LockedDropout if locked_dropout else nn.Dropout
        self.word_dropout = word_dropout
        self.embedding_dropout = drop(dropout if embedding_dropout is None else embedding_dropout)
        self.rnn = RecurrentStack(cell, input_size, hidden_sizes, dropout if layer_dropout is None else layer_dropout,
                                  locked=locked_dropout, weight_drop=weight_drop)
        self.output_dropout = drop(dropout)
        if adaptive_softmax:
            cutoffs = list(adaptive_softmax)
            if cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] > vocab_size - 1:
                raise ValueError(f"adaptive_softmax cutoffs must increase within 1..{vocab_size - 1} (a vocabulary of "
                                 f"{vocab_size}), got {cutoffs}")
            if tie_weights:
                raise ValueError("tie_weights needs a full softmax decoder, not adaptive_softmax")
            self.decoder = AdaptiveSoftmax(self.rnn.output_size, vocab_size, adaptive_softmax, adaptive_div_value)
        else:
            self.decoder = nn.Linear(self.rnn.output_size, vocab_size)
        if init_scale is not None:
            initialized = self.parameters() if recurrent_init == "uniform" else \
                [*self.encoder.parameters(), *(p for n, p in self.decoder.named_parameters() if "weight" in n)]
            for p in initialized:
                nn.init.uniform_(p, -init_scale, init_scale)
            if recurrent_init == "pytorch":
                for name, p in self.decoder.named_parameters():
                    if "bias" in name:
                        nn.init.zeros_(p)
        if recurrent_bias is not None:
            self.rnn.set_bias(recurrent_bias)
        if forget_bias is not None:
            self.rnn.set_forget_bias(forget_bias)
        if tie_weights:
            if embedding_dim != self.rnn.output_size:
                raise ValueError(
                    f"tie_weights needs embedding_dim == last hidden size, got {embedding_dim} "
                    f"and {self.rnn.output_size}"
                )
            self.decoder.weight = self.encoder.weight

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        logits, state, _, _ = self.outputs(ids, state)
        return logits, state

    def outputs(self, ids: Tensor, state: State | None = None,
                decode: bool = True) -> tuple[Tensor | None, State, Tensor, Tensor]:
        """`forward` plus the last layer's outputs `(batch, time, hidden)` before and after the output dropout
        (what activation regularization and the adaptive softmax's loss read): `(logits, state, hidden,
        dropped)`; `decode=False` skips the logits (None)."""
        out, state = self.hidden(ids, state)
        dropped = self.output_dropout(out)
        return self.decoder(dropped) if decode else None, state, out, dropped

    def hidden(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The last recurrent layer's outputs `(batch, time, hidden)` (what the decoder reads) and the state."""
        if self.word_dropout:
            embedded = word_dropout(self.encoder, ids, self.word_dropout, self.training)
        else:
            embedded = self.encoder(ids)
        return self.rnn(self.embedding_dropout(embedded), state)

    def step(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step in eval mode: ids `(batch,)` -> logits `(batch, vocab)` and the state, in the state
        format of `forward` (so the two can alternate).

        The same network's math as `forward` without dropout, through single-step functions on the same
        weights (`RecurrentStack.stepper`): at batch 1 a fused sequence kernel's fixed cost per call
        dominates, and these skip it. Works for every cell, the hand-written ones included. Each call prepares
        the weights again (about 2 ms for `charrnn_small`); a loop of steps calls `stepper()` once instead.
        """
        logits, layers = self.stepper()(ids, self.rnn.to_layers(state, ids.size(0)))
        return logits, self.rnn.from_layers(layers)

    def stepper(self):
        """`step(ids (batch,), layers) -> logits (batch, vocab), layers`, over per-layer states
        (`self.rnn.to_layers` / `from_layers`): `step` without converting the state at every call.
        One-hot inputs are looked up, not built and multiplied; a linear decoder's weight is transposed once."""
        one_hot = isinstance(self.encoder, OneHot)
        rnn_step, encoder, decode = self.rnn.stepper(one_hot), self.encoder, self.decoder
        if isinstance(self.decoder, nn.Linear):
            w_t, bias = self.decoder.weight.T.contiguous(), self.decoder.bias

            def decode(out: Tensor) -> Tensor:
                return torch.addmm(bias, out, w_t)

        def step(ids: Tensor, layers: list) -> tuple[Tensor, list]:
            out, layers = rnn_step(ids if one_hot else encoder(ids), layers)
            return decode(out), layers

        return step


