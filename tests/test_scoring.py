"""Scoring texts with a language model (`rnnlab.scoring`, `predict.py` on a language-model checkpoint)."""

from __future__ import annotations

import io
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rnnlab import CONF_DIR, scoring
from rnnlab.data.vocab import UnknownSymbolError, Vocabulary
from rnnlab.models.lm import RNNLM
from rnnlab.scoring import line_symbols, score_lines
from tests.conftest import TINY_TRAINER, compose_config, synthetic_overrides

WORDS = Vocabulary(["<eos>", "<unk>", "a", "b", "c", "d"], unk="<unk>")


def by_hand(net: RNNLM, ids: list[int]) -> list[float]:
    """-log P of ids[1:], reading ids one at a time from the zero state."""
    state, surprisal = None, []
    for current, following in zip(ids, ids[1:]):
        logits, state = net(torch.tensor([[current]]), state)
        surprisal.append(-F.log_softmax(logits[0, -1], -1)[following].item())
    return surprisal


@pytest.mark.parametrize("decoder", [{}, {"adaptive_softmax": [3]}])
def test_each_line_is_read_on_its_own_after_the_end_of_line_symbol_and_batching_changes_no_score(decoder,
                                                                                               monkeypatch):
    torch.manual_seed(0)
    net = RNNLM(len(WORDS), [12, 12], "lstm", embedding_dim=8, dropout=0.5, **decoder)  # dropout: off when scoring
    lines = ["a b c", "", "d", "a x b c d a b"]  # x is outside the vocabulary
    scores = score_lines(net, WORDS, lines, "word", batch_size=2)
    assert scores[1] is None and net.training  # nothing to read; the net's mode is put back
    for line, score in zip(lines, scores):
        if score is None:
            continue
        expected = by_hand(net.eval(), WORDS.encode(["<eos>", *line.split(), "<eos>"]))
        net.train()
        assert score.symbols == [*line.split(), "<eos>"]
        torch.testing.assert_close(torch.tensor(score.surprisal), torch.tensor(expected), rtol=0, atol=1e-5)
        assert score.log_prob == pytest.approx(-sum(expected), abs=1e-4)
        assert score.perplexity == pytest.approx(math.exp(sum(expected) / len(expected)), rel=1e-5)
    assert scores[3].unknown == ["x"] and scores[0].unknown == []
    alone = [score_lines(net, WORDS, [line], "word")[0] for line in lines]
    for batched, single in zip(scores, alone):
        assert (batched is None and single is None) or batched.surprisal == pytest.approx(single.surprisal, abs=1e-5)
    # long lines in windows of time, the state carried: the same scores, with the logits of a window at a time
    calls = []
    net.register_forward_hook(lambda module, args, output: calls.append(output[0].shape))
    monkeypatch.setattr(scoring, "LOGITS_AT_ONCE", 2 * len(WORDS))  # one step of two lines
    windowed = score_lines(net, WORDS, lines, "word", batch_size=2)
    # lines by length: ("d", "a b c") read 4 steps, a step a window; the longest alone, 8 steps two a window
    assert [shape[:2] for shape in calls] == [(2, 1)] * 4 + [(1, 2)] * 4
    for score, window in zip(scores, windowed):
        assert (score is None and window is None) or window.surprisal == pytest.approx(score.surprisal, abs=1e-6)


def test_a_char_model_reads_characters_then_a_line_break_and_a_document_model_its_own_tokenization():
    chars = Vocabulary(["\ufffd", "\n", " ", "a", "b"], unk="\ufffd")
    net = RNNLM(len(chars), [8], "gru", embedding_dim=None)
    (score,) = score_lines(net, chars, ["ab a"], "char")
    assert score.symbols == ["a", "b", " ", "a", "\n"]
    assert score.surprisal == pytest.approx(by_hand(net, chars.encode(["\n", "a", "b", " ", "a", "\n"])), abs=1e-5)
    backward = {"lower": True, "strip_html": True, "strip_punctuation": True, "reverse": True}
    assert line_symbols("The cat, sat!", "word", backward) == ["sat", "cat", "the", "<eos>"]
    assert line_symbols("The cat, sat!", "word", None) == ["The", "cat,", "sat!", "<eos>"]  # PTB: whitespace
    assert line_symbols("  ", "word", None) == [] and line_symbols("", "char", None) == []


def test_a_vocabulary_that_reads_unknown_symbols_as_errors_names_them():
    strict = Vocabulary(["<eos>", "a"], unk=None)
    net = RNNLM(len(strict), [4], "rnn_tanh", embedding_dim=4)
    with pytest.raises(UnknownSymbolError, match=r"the text: 2 symbol\(s\) not in the vocabulary: 'x', 'y'"):
        score_lines(net, strict, ["a x", "y"], "word")


@pytest.fixture
def ptb_run(synthetic_ptb, tmp_path):
    from rnnlab.train import train

    train(compose_config([*synthetic_overrides(synthetic_ptb), *TINY_TRAINER, "test=false"], tmp_path))
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


def predicted(ckpt, tmp_path, **kw):
    from rnnlab.predict import predict

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # predict.yaml has no paths
        cfg = OmegaConf.merge(compose("predict", overrides=[f"ckpt_path={ckpt}", "threads=1"]), kw)
    out, err = io.StringIO(), io.StringIO()
    return predict(cfg, out, err), out.getvalue(), err.getvalue()


def test_predict_scores_a_text_and_a_file_with_a_language_model(ptb_run, tmp_path):
    from rnnlab.checkpoint import load_run

    run = load_run(ptb_run)
    (score,), out, err = predicted(ptb_run, tmp_path, text="w1 w2 qq w3")
    assert score.symbols == ["w1", "w2", "qq", "w3", "<eos>"] and score.unknown == ["qq"]
    expected = by_hand(run.model.net.eval(), run.vocab.encode(["<eos>", "w1", "w2", "<unk>", "w3", "<eos>"]))
    assert score.surprisal == pytest.approx(expected, abs=1e-5)
    rows = out.splitlines()
    assert rows[0].split() == ["symbol", "surprisal", "(bits)"] and len(rows) == 1 + 5 + 1
    assert [row.split()[0] for row in rows[1:6]] == score.symbols
    assert [float(row.split()[1]) for row in rows[1:6]] == pytest.approx([v / math.log(2) for v in expected], abs=1e-3)
    assert rows[-1] == (f"log P = {score.log_prob:.3f} nats over 5 symbols: perplexity {score.perplexity:.2f}, "
                        f"{-score.log_prob / 5 / math.log(2):.3f} bits per symbol")
    assert err == "note: 1 symbol(s) outside the vocabulary, read as '<unk>': 'qq'\n"
    _, _, err = predicted(ptb_run, tmp_path, text="W1 w2 W3 qq")  # the synthetic corpus, as PTB, is lower-case
    assert err == ("note: 3 symbol(s) outside the vocabulary, read as '<unk>': 'W1', 'W3', 'qq' (the vocabulary has "
                   "'w1', 'w3' in lower case)\n")

    lines = tmp_path / "lines.txt"
    lines.write_text("w1 w2 qq w3\n\nw4 w5\n")
    output = tmp_path / "scores.jsonl"
    scores, out, err = predicted(ptb_run, tmp_path, input=str(lines), output=str(output), per_token=True)
    assert out == "" and "warning: 1 line(s) of" in err and "have no symbols; their scores are null" in err
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert records[1] == {"line": 2, "symbols": None, "log_prob": None, "perplexity": None, "unknown": None}
    assert records[0]["log_prob"] == pytest.approx(score.log_prob, abs=1e-4) and records[0]["unknown"] == 1
    assert records[0]["tokens"] == score.symbols and records[2]["symbols"] == 3
    assert records[0]["surprisal_bits"] == pytest.approx([v / math.log(2) for v in expected], abs=1e-5)
    plain, out, _ = predicted(ptb_run, tmp_path, input=str(lines))
    assert [json.loads(line) for line in out.splitlines()][2].keys() == {"line", "symbols", "log_prob", "perplexity",
                                                                        "unknown"}  # per_token=false: no lists


def test_predict_plots_a_texts_surprisal_per_symbol(ptb_run, tmp_path, monkeypatch):
    import rnnlab.predict

    png = tmp_path / "surprisal.png"
    _, _, err = predicted(ptb_run, tmp_path, text="w1 w2\nw3", plot=True, plot_path=str(png))
    assert err == f"saved {png}\n" and png.stat().st_size > 5000
    drawn = []
    monkeypatch.setattr(rnnlab.predict, "plot_per_symbol", lambda *args, **kw: drawn.append(args) or png)
    scores, _, _ = predicted(ptb_run, tmp_path, text="w1 w2\nw3", plot=True, plot_path=str(png))
    ((symbols, positions, bits, ylabel, _, path),) = drawn
    assert symbols == ["w1", "w2", "<eos>", "w3", "<eos>"] and positions == [0, 1, 2, 3, 4] and path == png
    assert bits == pytest.approx([v / math.log(2) for s in scores for v in s.surprisal])
    assert ylabel == "surprisal (bits)"


@pytest.mark.parametrize(("kw", "message"), [
    ({"input": "x.txt", "plot": True}, "plot=true draws the curve of one text (text= or text_file=), not of input="),
    ({"input": "x.txt", "ensemble": ["y.ckpt"]}, "ensemble=[...] is for sentiment classifiers; "),
    ({"text": "w1", "backend": "onnxruntime", "onnx_path": "m.onnx"}, "backend=onnxruntime is for sentiment "),
    ({"text": " "}, "the text has no symbols to read"),
    ({"text": "w1", "per_token": "yes"}, "per_token must be true or false, got 'yes'"),
])
def test_predict_refuses_what_a_language_model_cannot_do_in_one_line(ptb_run, tmp_path, kw, message):
    if "input" in kw:
        (tmp_path / "x.txt").write_text("w1\n")
        kw = kw | {"input": str(tmp_path / "x.txt")}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        predicted(ptb_run, tmp_path, **kw)


def test_the_python_api_loads_a_run_folder_and_scores_samples_and_imports_lazily(ptb_run, tmp_path):
    import subprocess
    import sys

    import rnnlab
    from rnnlab.checkpoint import load_run
    from rnnlab.sampling import sample

    light = subprocess.run([sys.executable, "-c", "import sys, rnnlab; print(sorted({'torch', 'lightning'} & "
                            "set(sys.modules)))"], capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "[]"  # import rnnlab reads no framework until a function is used
    assert rnnlab.load_run is load_run and rnnlab.sample is sample and "score_run" in rnnlab.__all__
    run = rnnlab.load_run(ptb_run.parent.parent)  # a run folder: its best.ckpt
    (score,) = rnnlab.score_run(run, ["w1 w2 qq w3"])
    (expected,), _, _ = predicted(ptb_run.parent / "best.ckpt", tmp_path, text="w1 w2 qq w3")
    assert score.surprisal == pytest.approx(expected.surprisal, abs=1e-6)
    ids = rnnlab.sample(run.model.net, run.vocab.encode(["<eos>"]), 5, seed=1)
    assert ids.shape == (1, 5) and all(word in run.vocab for word in run.vocab.decode(ids[0]))
    with pytest.raises(AttributeError, match="module 'rnnlab' has no attribute 'nope'"):
        rnnlab.nope  # noqa: B018


def test_predict_names_what_it_reads_texts_with_for_another_checkpoint(tmp_path):
    from rnnlab.train import train

    train(compose_config(["task=sine", "model.net.hidden_sizes=[4]", "model.plot=false", *TINY_TRAINER, "test=false"],
                         tmp_path))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=rf"^{re.escape(str(ckpt))} holds a SineRegressor; predict.py reads texts with "
                                         r"a sentiment classifier \(task=sentiment\) or a language model \(task=ptb, "):
        predicted(ckpt, tmp_path, text="w1")
