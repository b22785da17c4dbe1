"""Sentiment predictions from a SentimentLSTM checkpoint: per-word trajectories, or a file in batch."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rnnlab import CONF_DIR
from rnnlab.checkpoint import checkpoint_file, load_run, run_folder
from rnnlab.checks import check_count, check_range, check_switch
from rnnlab.cli import check_added_keys, one_line_errors, resolve_device, set_threads
from rnnlab.files import atomic_write
from rnnlab.onnx_export import OnnxModel, backend
from rnnlab.plotting import pyplot, save_figure
from rnnlab.predictor import Prediction, Predictor, averaged


def plot_trajectory(pred: Prediction, path: Path) -> Path:
    plt = pyplot()
    if plt is None:
        raise ValueError("plot=true needs matplotlib: pip install 'rnnlab[plot]'")
    fig, ax = plt.subplots(figsize=(min(40, max(6, 0.45 * len(pred.positions))), 3.5))
    ax.plot(pred.positions, pred.trajectory, marker="o" if len(pred.positions) <= 100 else None)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    if len(pred.positions) <= 100:
        ax.set_xticks(pred.positions, [pred.words[i] for i in pred.positions], rotation=60, ha="right")
    else:
        ax.set_xlabel("word")
    ax.set_ylim(0, 1)
    ax.set_ylabel("P(positive)")
    ax.set_title("prediction after each word")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_path(cfg: DictConfig) -> Path:
    """`plot_path`, else one file per text in the checkpoint's run folder (`<run>/checkpoints/x.ckpt` ->
    `<run>/predictions/<its first words>-<hash of the text>.png`): another text never replaces a plot."""
    if cfg.get("plot_path"):
        return Path(cfg.plot_path).expanduser()
    text = str(cfg.text)
    words = "-".join(re.findall(r"[^\W_]+", text.lower())[:6])[:60] or "text"
    name = f"{words}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.png"
    return run_folder(checkpoint_file(cfg.ckpt_path)) / "predictions" / name


def read_stdin(stdin) -> str:
    """All of standard input as text, bytes that are not UTF-8 replaced (as files are read)."""
    buffer = getattr(stdin, "buffer", None)
    return buffer.read().decode("utf-8", errors="replace") if buffer is not None else stdin.read()


def predict(cfg: DictConfig, out=sys.stdout, err=sys.stderr, stdin=None) -> list:
    """`text`, `text_file` or `input` (`-`: standard input) through the checkpoint; prints and returns the
    predictions."""
    set_threads(cfg.get("threads"))
    check_range("threshold", cfg.threshold, 0, 1)
    check_count("batch_size", cfg.batch_size)
    check_count("trajectory_points", cfg.get("trajectory_points"), nullable=True)
    check_switch("plot", cfg.plot)
    given = [k for k in ("text", "text_file", "input") if cfg.get(k) is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of text=..., text_file=FILE (one text) or input=FILE (a text a line)")
    if cfg.get("text_file") is not None:
        path = Path(cfg.text_file).expanduser()
        if str(cfg.text_file) == "-":
            text = read_stdin(stdin or sys.stdin)
        elif not path.is_file():
            raise ValueError(f"text_file {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}")
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
        cfg = OmegaConf.merge(cfg, {"text": text, "text_file": None})
    onnx = OnnxModel(cfg.onnx_path, "sentiment_classifier", cfg.get("threads")) \
        if backend(cfg) == "onnxruntime" else None
    if cfg.get("ensemble") and cfg.text is not None:
        raise ValueError("ensemble= averages batch predictions: give the texts as input=FILE (a text a line)")
    device = resolve_device(cfg.device)
    predictor = Predictor(load_run(cfg.ckpt_path, map_location=device), onnx)
    members = [Predictor(load_run(path, map_location=device)) for path in cfg.get("ensemble") or []]
    label = lambda p: "positive" if p >= cfg.threshold else "negative"  # noqa: E731
    if cfg.text is not None:
        pred = predictor.one(str(cfg.text), cfg.trajectory_points)
        if pred.truncated:
            err.write(f"warning: the text is longer than max_len={predictor.data.max_len} words; "
                      f"read the {predictor.data.truncate_keep} {len(pred.words)}\n")
        if len(pred.unknown) == len(pred.words):
            err.write("warning: no word of the text is in the vocabulary; the prediction means little\n")
        if len(pred.positions) < len(pred.words):
            err.write(f"note: P(positive) after {len(pred.positions)} evenly spaced words of {len(pred.words)} "
                      "(trajectory_points)\n")
        for i, p in zip(pred.positions, pred.trajectory):
            out.write(f"{pred.words[i]:>20s}  {p:.3f}\n")
        out.write(f"P(positive) = {pred.probability:.3f}: {label(pred.probability)}\n")
        if cfg.plot:
            err.write(f"saved {plot_trajectory(pred, plot_path(cfg))}\n")
        return [pred]
    path = Path(cfg.input).expanduser()
    if str(cfg.input) == "-":
        texts, source = read_stdin(stdin or sys.stdin).splitlines(), "standard input"
    elif not path.is_file():
        raise ValueError(f"input file {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}")
    elif cfg.output and Path(cfg.output).expanduser().resolve() == path.resolve():
        raise ValueError(f"output={cfg.output} is the input file; write the predictions to another file")
    else:
        texts, source = path.read_text(encoding="utf-8", errors="replace").splitlines(), str(path)
    probs = averaged([member.many(texts, cfg.batch_size) for member in [predictor, *members]])
    empty = sum(p is None for p in probs)
    if empty:
        err.write(f"warning: {empty} line(s) of {source} have no words; their prediction is null\n")
    lines = "".join(json.dumps({"line": i + 1, "p_positive": p, "label": None if p is None else label(p)}) + "\n"
                    for i, p in enumerate(probs))
    if cfg.output:
        atomic_write(Path(cfg.output).expanduser(), lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
    else:
        out.write(lines)
    return probs


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    with one_line_errors("predict.py"):
        check_added_keys("predict.py")
        predict(cfg)


if __name__ == "__main__":
    main()
