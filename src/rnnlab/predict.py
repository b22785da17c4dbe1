"""Predictions from a checkpoint: a sentiment classifier's P(positive) after every word, or a language model's
surprisal of every symbol; one text, or a file in batch."""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rnnlab import CONF_DIR
from rnnlab.checkpoint import TrainedRun, checkpoint_file, load_run, run_folder
from rnnlab.checks import check_count, check_range, check_switches
from rnnlab.cli import check_added_keys, one_line_errors, read_text_setting, resolve_device, set_threads
from rnnlab.files import atomic_write
from rnnlab.onnx_export import OnnxModel, backend
from rnnlab.plotting import pyplot, save_figure
from rnnlab.predictor import Prediction, Predictor, averaged
from rnnlab.scoring import LineScore, score_run
from rnnlab.sweeps import check_own_output, job_header
from rnnlab.tasks.language_model import LanguageModel
from rnnlab.tasks.sentiment import SentimentClassifier


def plot_per_symbol(symbols: list[str], positions: list[int], values: list[float], ylabel: str, title: str,
                    path: Path, ylim: tuple[float, float] | None = None, line: float | None = None) -> Path:
    """`values` after the symbols at `positions` as a curve, the symbols as ticks when they are few; a PNG."""
    plt = pyplot()
    if plt is None:
        raise ValueError("plot=true needs matplotlib: pip install 'rnnlab[plot]'")
    fig, ax = plt.subplots(figsize=(min(40, max(6, 0.45 * len(positions))), 3.5))
    ax.plot(positions, values, marker="o" if len(positions) <= 100 else None)
    if line is not None:
        ax.axhline(line, color="grey", lw=0.8, ls="--")
    if len(positions) <= 100:
        ax.set_xticks(positions, [symbols[i] for i in positions], rotation=60, ha="right")
    else:
        ax.set_xlabel("symbol")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_trajectory(pred: Prediction, path: Path) -> Path:
    return plot_per_symbol(pred.words, pred.positions, pred.trajectory, "P(positive)", "prediction after each word",
                           path, ylim=(0, 1), line=0.5)


def plot_path(cfg: DictConfig, text: str) -> Path:
    """`plot_path`, else one file per text in the checkpoint's run folder (`<run>/checkpoints/x.ckpt` ->
    `<run>/predictions/<its first words>-<hash of the text>.png`): another text never replaces a plot."""
    if cfg.get("plot_path"):
        return Path(cfg.plot_path).expanduser()
    words = "-".join(re.findall(r"[^\W_]+", text.lower())[:6])[:60] or "text"
    name = f"{words}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.png"
    return run_folder(checkpoint_file(cfg.ckpt_path)) / "predictions" / name


def read_texts(cfg: DictConfig, stdin=None) -> tuple[str | None, list[str] | None, str]:
    """The input of `text`, `text_file` or `input` (`-`: standard input): `(one text, None, "the text")`, or
    `(None, the lines of input, where they came from)`."""
    given = [k for k in ("text", "text_file", "input") if cfg.get(k) is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of text=..., text_file=FILE (one text) or input=FILE (a text a line)")
    if cfg.get("text") is not None:
        return str(cfg.text), None, "the text"
    key = given[0]
    if key == "input" and cfg.output and str(cfg.input) != "-" and \
            Path(cfg.output).expanduser().resolve() == Path(cfg.input).expanduser().resolve():
        raise ValueError(f"output={cfg.output} is the input file; write the predictions to another file")
    text, source = read_text_setting("text_file" if key == "text_file" else "input file", cfg[key], stdin)
    return (text, None, "the text") if key == "text_file" else (None, text.splitlines(), source)


def write_lines(cfg: DictConfig, records: list[dict], out) -> None:
    """JSON lines to `output` (written whole, under a temporary name first), else to `out`."""
    lines = "".join(json.dumps(record) + "\n" for record in records)
    if cfg.output:
        atomic_write(Path(cfg.output).expanduser(), lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
    else:
        out.write(lines)


def predict(cfg: DictConfig, out=sys.stdout, err=sys.stderr, stdin=None) -> list:
    """`text`, `text_file` or `input` (`-`: standard input) through the checkpoint; prints and returns the
    predictions: a sentiment classifier's P(positive), or a language model's surprisal of every symbol."""
    set_threads(cfg.get("threads"))
    check_range("threshold", cfg.threshold, 0, 1)
    check_count("batch_size", cfg.batch_size)
    check_count("trajectory_points", cfg.get("trajectory_points"), nullable=True)
    check_switches("", plot=cfg.plot, per_token=cfg.get("per_token", False))
    text, texts, source = read_texts(cfg, stdin)
    if cfg.plot and texts is not None:
        raise ValueError("plot=true draws the curve of one text (text= or text_file=), not of input=FILE")
    check_own_output("output", cfg.output)
    device = resolve_device(cfg.device)
    run = load_run(cfg.ckpt_path, map_location=device)
    out.write(job_header())
    if isinstance(run.model, LanguageModel):
        return predict_scores(cfg, run, text, texts, source, out, err)
    if not isinstance(run.model, SentimentClassifier):
        raise ValueError(f"{run.path} holds a {type(run.model).__name__}; predict.py reads texts with a sentiment "
                         "classifier (task=sentiment) or a language model (task=ptb, lm or charrnn)")
    onnx = OnnxModel(cfg.onnx_path, "sentiment_classifier", cfg.get("threads")) \
        if backend(cfg) == "onnxruntime" else None
    if cfg.get("ensemble") and text is not None:
        raise ValueError("ensemble= averages batch predictions: give the texts as input=FILE (a text a line)")
    predictor = Predictor(run, onnx)
    members = [Predictor(load_run(path, map_location=device)) for path in cfg.get("ensemble") or []]
    label = lambda p: "positive" if p >= cfg.threshold else "negative"  # noqa: E731
    if text is not None:
        pred = predictor.one(text, cfg.trajectory_points)
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
            err.write(f"saved {plot_trajectory(pred, plot_path(cfg, text))}\n")
        return [pred]
    probs = averaged([member.many(texts, cfg.batch_size) for member in [predictor, *members]])
    empty = sum(p is None for p in probs)
    if empty:
        err.write(f"warning: {empty} line(s) of {source} have no words; their prediction is null\n")
    write_lines(cfg, [{"line": i + 1, "p_positive": p, "label": None if p is None else label(p)}
                      for i, p in enumerate(probs)], out)
    return probs


def predict_scores(cfg: DictConfig, run: TrainedRun, text: str | None, texts: list[str] | None, source: str,
                   out, err) -> list[LineScore | None]:
    """A language model's surprisal of every symbol, each line read on its own (`rnnlab.scoring`): for one text
    a table of them (in bits) and the total (`plot`: also their curve); for `input` a JSON line per line
    (`per_token`: with the symbols and their surprisals)."""
    for setting, given in (("ensemble=[...]", bool(cfg.get("ensemble"))),
                           ("backend=onnxruntime", backend(cfg) == "onnxruntime")):
        if given:
            raise ValueError(f"{setting} is for sentiment classifiers; {run.path} holds a language model, whose "
                             "scores predict.py computes in PyTorch")
    level, vocab = run.model.symbol_level, run.vocab
    shown = (lambda s: repr(s)) if level == "char" else (lambda s: s)  # noqa: E731
    lines = texts if texts is not None else text.splitlines() or [text]
    scores = score_run(run, lines, cfg.batch_size)
    unknown = sorted({s for score in scores if score for s in score.unknown})
    if unknown:
        listed = ", ".join(map(repr, unknown[:20])) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        hint = vocab.lower_case_hint(unknown)
        err.write(f"note: {len(unknown)} symbol(s) outside the vocabulary, read as {vocab.unk!r}: {listed}"
                  f"{f' ({hint})' if hint else ''}\n")
    if texts is None:
        kept = [score for score in scores if score]
        if not kept:
            raise ValueError("the text has no symbols to read")
        symbols = [shown(symbol) for score in kept for symbol in score.symbols]
        bits = [b for score in kept for b in score.surprisal_bits]
        out.write(f"{'symbol':>20s}  surprisal (bits)\n")
        out.write("".join(f"{symbol:>20s}  {b:.3f}\n" for symbol, b in zip(symbols, bits)))
        n, log_prob = len(symbols), math.fsum(score.log_prob for score in kept)
        out.write(f"log P = {log_prob:.3f} nats over {n} symbols: perplexity {math.exp(-log_prob / n):.2f}, "
                  f"{-log_prob / n / math.log(2):.3f} bits per symbol\n")
        if cfg.plot:
            path = plot_per_symbol(symbols, list(range(n)), bits, "surprisal (bits)", "surprisal of each symbol",
                                   plot_path(cfg, text))
            err.write(f"saved {path}\n")
        return scores
    empty = sum(score is None for score in scores)
    if empty:
        err.write(f"warning: {empty} line(s) of {source} have no symbols; their scores are null\n")
    records = []
    for i, score in enumerate(scores):
        record = {"line": i + 1, "symbols": None, "log_prob": None, "perplexity": None, "unknown": None}
        if score is not None:
            record |= {"symbols": len(score.symbols), "log_prob": score.log_prob, "perplexity": score.perplexity,
                       "unknown": len([s for s in score.symbols if s in score.unknown])}
            if cfg.get("per_token"):
                record |= {"tokens": score.symbols, "surprisal_bits": score.surprisal_bits}
        records.append(record)
    write_lines(cfg, records, out)
    return scores


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    with one_line_errors("predict.py"):
        check_added_keys("predict.py")
        predict(cfg)


if __name__ == "__main__":
    main()
