"""Language-model transfer to the sentiment classifier (`encoder.ckpt_path=`): the classifier takes the LM's
vocabulary, its tokenization, its cell and sizes, and the weights of its embedding and recurrent layers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn

from rnnlab.checkpoint import CheckpointError, checkpoint_file, read_checkpoint
from rnnlab.checks import is_int
from rnnlab.data.text import PAD, UNK, is_document_corpus, tokenization
from rnnlab.data.vocab import Vocabulary
from rnnlab.models.recurrent import layer_parameters

ARCHITECTURE = ("cell", "hidden_sizes", "embedding_dim", "tie_weights", "adaptive_softmax", "adaptive_div_value")
LM_LAYERS = "net.rnn."  # where an RNNLM's RecurrentStack sits in the LM's state dict


@dataclass
class LMEncoder:
    """What a classifier takes from a word LM checkpoint."""

    path: str
    vocab: Vocabulary
    cell: str
    embedding_dim: int
    hidden_size: int
    num_layers: int
    tokenization: dict[str, bool]
    embedding: Tensor  # (vocab, embedding_dim)
    layers: list[dict[str, Tensor]]  # per layer, bottom first: weight_ih, weight_hh, bias_ih, bias_hh


def read_document_lm(path: str | os.PathLike, where: str) -> tuple[dict, dict, dict, Vocabulary]:
    """A word LM checkpoint over documents (read weights-only; a run folder: its best): its contents, network and
    data configs, and vocabulary; one line naming `where` (the setting) when it is not one."""
    checkpoint = read_checkpoint(checkpoint_file(path))
    extra = checkpoint["rnnlab"]
    net, data = extra["config"]["model"].get("net", {}), extra["config"].get("data", {})
    if not str(net.get("_target_", "")).endswith("RNNLM") or "vocab" not in extra:
        raise CheckpointError(f"{where} is not a word language model checkpoint (its network is "
                              f"{net.get('_target_')})")
    if not is_document_corpus(data):
        raise CheckpointError(f"{where}: its data ({data.get('_target_')}) is not tokenized as the sentiment "
                              "texts; train the LM with data=text_corpus or data=imdb_text")
    vocab = Vocabulary.from_state_dict(extra["vocab"])
    if vocab.itos[:2] != [PAD, UNK]:
        raise CheckpointError(f"{where}: its vocabulary does not start with {PAD}, {UNK} (got {vocab.itos[:2]})")
    return checkpoint, net, data, vocab


def use_lm_checkpoint(cfg: DictConfig, path: str | os.PathLike) -> tuple[Vocabulary, dict]:
    """LM fine-tuning on new text (`init_from=` a document LM, ULMFiT's second stage): set the network's
    architecture and the data's tokenization to the checkpoint's (in place); return its vocabulary, which
    the new text is read with (words outside it are `<unk>`), so that every weight fits, and the checkpoint
    (for `checkpoint.init_weights`, so that it is read once)."""
    checkpoint, net, data, vocab = read_document_lm(path, f"init_from={path}")
    with open_dict(cfg):
        for key in ARCHITECTURE:
            if key in net:
                cfg.model.net[key] = net[key]
        for key, value in tokenization(data).items():
            cfg.data[key] = value
    return vocab, checkpoint


def read_lm_encoder(path: str | os.PathLike) -> LMEncoder:
    """The encoder of the LM checkpoint `path` (read weights-only); one line naming what does not fit."""
    where = f"encoder.ckpt_path={path}"
    checkpoint, net, data, vocab = read_document_lm(path, where)
    sizes = list(net["hidden_sizes"])
    if len(set(sizes)) != 1 or not net.get("embedding_dim"):
        raise CheckpointError(f"{where}: the classifier needs layers of one size and an embedding, the LM has "
                              f"hidden_sizes {sizes} and embedding_dim {net.get('embedding_dim')}")
    state = checkpoint["state_dict"]
    found: dict[tuple[int, int], dict[str, Tensor]] = {}
    for key, (group, name, layer) in layer_parameters(state, LM_LAYERS).items():
        found.setdefault((group, layer), {})[name] = state[key]
    layers = [found[k] for k in sorted(found)]
    return LMEncoder(str(path), vocab, net["cell"], net["embedding_dim"], sizes[0], len(sizes),
                     tokenization(data), state["net.encoder.weight"], layers)


def new_words(value) -> int | None:
    """`encoder.new_words`: null (the LM's vocabulary as it is) or how often a training word the LM lacks must
    occur to be added to the classifier's vocabulary."""
    if value is None:
        return None
    if not is_int(value) or value < 1:
        raise ValueError(f"encoder.new_words must be null or a count of at least 1 (how often a training word "
                         f"the LM lacks must occur to be added), got {value!r}")
    return value


def use_encoder(cfg: DictConfig, encoder: LMEncoder) -> None:
    """Set the classifier's cell and sizes and the data's tokenization to the LM's (in place)."""
    net = cfg.model.net
    if net.get("bidirectional"):
        raise ValueError(f"encoder.ckpt_path={encoder.path}: the LM reads left to right, so the classifier must "
                         "too (model.net.bidirectional=false)")
    with open_dict(cfg):
        net.cell, net.embedding_dim = encoder.cell, encoder.embedding_dim
        net.hidden_size, net.num_layers = encoder.hidden_size, encoder.num_layers
        for key, value in encoder.tokenization.items():
            cfg.data[key] = value


@torch.no_grad()
def copy_encoder(classifier: nn.Module, encoder: LMEncoder, new_words: bool = False) -> None:
    """The LM's embedding and recurrent weights into `classifier` (a `RecurrentClassifier`), exactly. With
    `new_words`, the classifier's vocabulary is the LM's followed by words the LM lacks (`encoder.new_words`):
    their rows start from the mean of the LM's rows (ULMFiT's start for new words)."""
    rows, lm_rows = classifier.embedding.weight.size(0), encoder.embedding.size(0)
    fits = rows >= lm_rows if new_words else rows == lm_rows
    if not fits or classifier.embedding.weight.size(1) != encoder.embedding.size(1):
        raise CheckpointError(f"encoder.ckpt_path={encoder.path}: embedding {tuple(encoder.embedding.shape)} does "
                              f"not fit the classifier's {tuple(classifier.embedding.weight.shape)}")
    if len(classifier.rnn.layers) != len(encoder.layers):
        raise CheckpointError(f"encoder.ckpt_path={encoder.path}: {len(encoder.layers)} LM layers for "
                              f"{len(classifier.rnn.layers)} classifier layers")
    classifier.embedding.weight[lm_rows:] = encoder.embedding.mean(0)
    classifier.embedding.weight[:lm_rows] = encoder.embedding
    for (forward, *_), weights in zip(classifier.rnn.layers, encoder.layers):
        for name, tensor in weights.items():
            getattr(forward, f"{name}_l0").copy_(tensor)
