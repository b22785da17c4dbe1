"""ONNX export of a trained run, and onnxruntime versions of what predict.py and generate.py run.

What is exported (the checkpoint keeps supplying the vocabulary and the settings):
- a language model (word or char): one time step with its state in and out, `ids (batch,)`, one state tensor per
  layer (`h<k>`, and `c<k>` for LSTMs, `(batch, hidden)`) -> `logits (batch, vocab)` and the new states, so
  sampling runs outside PyTorch step by step;
- a sentiment classifier: `ids (batch, time)` right-padded, `lengths (batch,)` -> `p_positive (batch,)`; the
  per-word probabilities are the same graph over a batch of the text's prefixes;
- the sine model: `x (batch, time, 1)` -> `y (batch, horizon)`.
Batch and time axes are dynamic.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from rnnlab.checkpoint import TrainedRun, run_folder
from rnnlab.files import atomic_write
from rnnlab.models.cells import cell_kind
from rnnlab.tasks.language_model import LanguageModel
from rnnlab.tasks.sentiment import SentimentClassifier
from rnnlab.tasks.sine import SineRegressor


class LMStep(nn.Module):
    """`RNNLM.stepper()` as a module over flat state tensors: `(ids, h0[, c0], h1[, c1], ...)` ->
    `(logits, h0'[, c0'], ...)`."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.per_layer = len(layer_state_names(net))

    def forward(self, ids: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        n = self.per_layer
        logits, layers = self.net.stepper()(ids, [states[i : i + n] for i in range(0, len(states), n)])
        return (logits, *(t for layer in layers for t in layer))


def layer_state_names(net: nn.Module) -> tuple[str, ...]:
    """The tensors of one layer's state: `("h", "c")` for LSTMs, `("h",)` otherwise."""
    return ("h", "c") if cell_kind(net.rnn.cell).lstm else ("h",)


def state_names(net: nn.Module) -> list[str]:
    return [f"{name}{k}" for k in range(len(net.rnn.hidden_sizes)) for name in layer_state_names(net)]


def zero_states(net: nn.Module, batch: int) -> list[np.ndarray]:
    """Zero states for `LMStep` of `net`, as float32 arrays `(batch, hidden)` in its input order."""
    return [np.zeros((batch, size), np.float32) for size in net.rnn.hidden_sizes for _ in layer_state_names(net)]


class PositiveProbability(nn.Module):
    def __init__(self, model: SentimentClassifier):
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.model.prob_positive(self.model.net(ids, lengths, False))


def fused_cells_only(cell: str) -> None:
    if cell.startswith("naive"):
        raise ValueError("the hand-written cells loop over time in Python, which an export fixes to one length; "
                         "export a run with a fused cell (lstm, gru, rnn_tanh, rnn_relu)")


# The exporters' warnings that do not hold for these graphs: the batch axes are named alike on purpose, and the
# sequence models' initial states are zeros built inside the graph at the input's batch size (both tested with
# another batch than the example's).
EXPORT_WARNINGS = (r".*The axis name: batch will not be used.*", r".*with a batch_size other than 1.*")


def export_onnx(run: TrainedRun, output: Path) -> dict:
    """Writes `output` (atomically) and returns what was exported: `{"kind", "inputs", "outputs"}`."""
    model = run.model.cpu().eval()
    if isinstance(model, LanguageModel):
        batch = torch.export.Dim("batch", min=1)
        net, names = model.net, state_names(model.net)
        module = LMStep(net)
        args = (torch.zeros(2, dtype=torch.long), *(torch.from_numpy(s) for s in zero_states(net, 2)))
        inputs, outputs = ["ids", *names], ["logits", *[f"{n}_out" for n in names]]
        shapes = ({0: batch}, tuple({0: batch} for _ in names))  # forward(ids, *states)
        kind = "language_model_step"
    elif isinstance(model, SentimentClassifier):  # shapes: each input's dynamic axes (0 batch, 1 time)
        if model.hparams.padding_side != "right":
            raise ValueError("ONNX export reads right-padded batches; this run pads on the left (data.padding_side)")
        fused_cells_only(model.net.rnn.cell)
        module = PositiveProbability(model)
        args = (torch.ones(2, 5, dtype=torch.long), torch.tensor([5, 3]))
        inputs, outputs, shapes = ["ids", "lengths"], ["p_positive"], ((0, 1), (0,))
        kind = "sentiment_classifier"
    elif isinstance(model, SineRegressor):
        fused_cells_only(model.net.rnn.cell)
        module = model.net
        args = (torch.zeros(2, 5, 1),)
        inputs, outputs, shapes = ["x"], ["y"], ((0, 1),)
        kind = "series_regressor"
    else:
        raise ValueError(f"{run.path} holds a {type(model).__name__}, which has no ONNX export")

    def write(tmp: str) -> None:
        if kind == "language_model_step":  # torch.export: the cells' single-step functions become plain ops
            program = torch.onnx.export(module, args, dynamo=True, input_names=inputs, output_names=outputs,
                                        dynamic_shapes=shapes, verbose=False)
            program.save(tmp, external_data=False)
        else:  # sequences: the TorchScript exporter maps nn.LSTM/GRU/RNN to ONNX's recurrent ops, so the time axis
            # stays dynamic (torch.export unrolls them over the example's length) and the reversal is plain gathers
            axes = {name: {axis: ("batch", "time")[axis] for axis in axes} for name, axes in zip(inputs, shapes)}
            axes.update({name: {0: "batch"} for name in outputs})
            torch.onnx.export(module, args, tmp, dynamo=False, input_names=inputs, output_names=outputs,
                              dynamic_axes=axes)

    module.eval()  # the wrappers' own mode; the networks inside are already in eval mode
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            for pattern in EXPORT_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            atomic_write(output, write)
    finally:
        registration.setLevel(level)
    return {"kind": kind, "inputs": inputs, "outputs": outputs}


BACKENDS = ("torch", "onnxruntime")


def backend(cfg: DictConfig) -> str:
    """`cfg.backend`, checked: onnxruntime needs `onnx_path` (the checkpoint still gives vocabulary and settings)."""
    name = cfg.get("backend", "torch")
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "onnxruntime" and not cfg.get("onnx_path"):
        raise ValueError("backend=onnxruntime needs onnx_path=<the file export.py wrote>")
    return name


class OnnxModel:
    """An onnxruntime session over an exported file, checked to be the kind of export the caller needs."""

    def __init__(self, path: str | Path, kind: str, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"onnx_path: {path} does not exist")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        expected = {"language_model_step": "ids", "sentiment_classifier": "lengths", "series_regressor": "x"}[kind]
        if expected not in self.inputs:
            raise ValueError(f"onnx_path: {path} is not an exported {kind.replace('_', ' ')} (inputs {self.inputs})")

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self.inputs, arrays)))


def onnx_stepper(model: OnnxModel):
    """`step(ids (batch,), states) -> logits (batch, vocab), states` over the exported step, for sampling."""

    def step(ids: Tensor, states: list[np.ndarray]) -> tuple[Tensor, list[np.ndarray]]:
        logits, *states = model(ids.numpy().astype(np.int64), *states)
        return torch.from_numpy(logits), states

    return step


def data_source(data: Mapping) -> str:
    """Where a run's data config read its texts or series from, for the model card."""
    files = [data.get(key) for key in ("train", "valid", "test")]
    if all(files):  # data=text_files
        return ", ".join(f"`{f}`" for f in files)
    for key in ("series_file", "text_file", "path", "reviews_file"):  # your own files
        if data.get(key):
            labels = f" with labels `{data.labels_file}`" if key == "reviews_file" else ""
            return f"`{data[key]}`{labels}"
    if "series_file" in data:
        return "clean synthetic sines, generated"
    source = data.get("source") or data.get("dataset")
    return f"{source} texts in `{data.get('data_dir')}`" if source else f"`{data.get('data_dir')}`"


def model_card(run: TrainedRun, export: dict, output: Path) -> str:
    """`<stem>.card.md` text for an exported run: data, preset, metrics, intended use, limits."""
    config, net, run_dir = run.config, run.config.model.net, run_folder(run.path)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = overrides_file.read_text().strip() if overrides_file.is_file() else "(not recorded)"
    metrics_file = run_dir / "metrics.json"
    metrics = metrics_file.read_text().strip() if metrics_file.is_file() else "(no metrics.json beside the run)"
    data, source = config.data.get("_target_", "?").rsplit(".", 1)[-1], data_source(config.data)
    uses = {
        "language_model_step": ("Scoring and sampling text like the training corpus, one symbol at a time "
                                "(generate.py backend=onnxruntime).",
                                "Knows only its training vocabulary (unknown words map to <unk> or are refused) "
                                "and the style of its corpus; it is not a source of facts, and samples can "
                                "repeat the corpus's biases."),
        "sentiment_classifier": ("P(positive) of English texts like its training reviews or sentences "
                                 "(predict.py backend=onnxruntime), and that probability after every word.",
                                 "Trained on one domain of English text (movie reviews or snippets); other domains, "
                                 "languages, sarcasm and very long texts (past max_len) are read poorly; words "
                                 "outside its vocabulary are ignored as <unk>."),
        "series_regressor": ("Next-value regression on windows of a series like its training series.",
                             f"Learned on one series ({source}); no claim beyond that distribution."),
    }[export["kind"]]
    return "\n".join([
        f"# Model card: {output.name}",
        "",
        f"- Exported from `{run.path}` by `export.py` (rnnlab), ONNX, `{export['kind']}`.",
        f"- Inputs: {', '.join(export['inputs'])}; outputs: {', '.join(export['outputs'])} (batch and time dynamic).",
        f"- Task: `{config.get('task_name')}`; network: `{net.get('_target_', '?').rsplit('.', 1)[-1]}` "
        f"({net.get('cell', '?')} cells, sizes {list(net.get('hidden_sizes') or [net.get('hidden_size')])}).",
        "",
        "## Data",
        f"`{data}` from {source}"
        + (f" ({len(run.vocab)} symbols in the vocabulary, stored in the checkpoint)" if run.vocab is not None else ""),
        "",
        "## Preset and command-line overrides",
        "```",
        overrides,
        "```",
        "",
        "## Metrics (the run's final metrics)",
        "```",
        metrics,
        "```",
        "",
        "## Intended use",
        uses[0],
        "",
        "## Limits",
        uses[1],
        "",
    ])
