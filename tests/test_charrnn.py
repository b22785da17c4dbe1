import io
import math
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from rnnlab.checkpoint import load_run
from rnnlab.data.lm_datamodule import CharDataModule
from rnnlab.data.shakespeare import UNK_CHAR, char_corpus, load_tinyshakespeare, split_text
from rnnlab.data.streams import BPTTStream
from rnnlab.data.vocab import UnknownSymbolError, Vocabulary
from rnnlab.generate import generate
from rnnlab.models.lm import RNNLM
from rnnlab.sampling import choose, sample, sample_steps
from rnnlab.train import train
from tests.conftest import ROOT, TINY_TRAINER, compose_config, run_script


def test_real_tinyshakespeare_vocabulary_and_split(data_dir, tmp_path):
    corpus = load_tinyshakespeare(data_dir, cache_dir=tmp_path, download=False)
    assert len(corpus.vocab) == 66 and corpus.vocab.itos[0] == UNK_CHAR  # 65 characters + unknown
    sizes = {k: v.numel() for k, v in corpus.splits.items()}
    assert sum(sizes.values()) == 1_115_394 and sizes["train"] == 1_003_854
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text()
    assert "".join(corpus.vocab.decode(corpus.splits["valid"][:200])) == text[1_003_854:1_004_054]


def test_char_vocab_round_trip_and_unknown_policy():
    corpus = char_corpus("abcabc" * 10 + "xyz" * 3, (0.8, 0.1, 0.1))
    assert corpus.vocab.itos == [UNK_CHAR, "a", "b", "c"]
    assert "".join(corpus.vocab.decode(corpus.vocab.encode("cab"))) == "cab"
    assert corpus.vocab.decode(corpus.splits["test"]).count(UNK_CHAR) == corpus.splits["test"].numel()
    unknown = r"^the text \(valid part\): 1 symbol\(s\) not in the vocabulary: 'x'$"
    with pytest.raises(UnknownSymbolError, match=unknown):  # the first split past train fails
        char_corpus("abcabc" * 10 + "xyz" * 3, (0.8, 0.1, 0.1), on_unknown="error")
    with pytest.raises(ValueError, match=r"^data.split must be three non-negative fractions .* got \[0.5, 0.6, 0.1\]$"):
        split_text("abc", (0.5, 0.6, 0.1))


def test_characters_use_the_same_bptt_stream(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello world, " * 200)
    dm = CharDataModule(text_file=str(path), data_dir=str(tmp_path), batch_size=4, bptt=10, split=(0.8, 0.1, 0.1))
    loader = dm.train_dataloader()
    assert isinstance(loader.dataset, BPTTStream)
    (x0, y0), (x1, _) = list(loader)[:2]
    assert x0.shape == (4, 10) and torch.equal(y0[:, :-1], x0[:, 1:]) and torch.equal(x1[:, 0], y0[:, -1])
    text = "".join(dm.vocab.decode(x0[0]))
    assert text == ("hello world, " * 200)[:10]


class CountingNet(torch.nn.Module):
    """Wraps a network and records the time steps of each call."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, ids, state=None):
        self.calls.append(ids.size(1))
        return self.net(ids, state)


def test_sampling_cost_per_symbol_is_constant():
    net = CountingNet(RNNLM(20, [16], "lstm", embedding_dim=8))
    sample(net, [1, 2, 3, 4], length=50, seed=0)
    assert net.calls == [4] + [1] * 49  # the prime once, then one step per symbol
    net.calls.clear()
    sample(net, [1], length=500, seed=0)
    assert len(net.calls) == 500 and max(net.calls) == 1


def draw_frequencies(logits, **kw) -> torch.Tensor:
    """How often each id is drawn from `logits` (vocab,) over 40,000 draws, seeded."""
    rows = logits.expand(40_000, -1)
    ids = choose(rows, generator=torch.Generator().manual_seed(0), **kw)
    return torch.bincount(ids, minlength=logits.numel()).float() / rows.size(0)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_divides_the_logits(temperature):
    logits = torch.tensor([0.0, math.log(3.0), -1.0])
    expected = torch.softmax(logits / temperature, -1)
    torch.testing.assert_close(draw_frequencies(logits, temperature=temperature), expected, rtol=0, atol=0.01)


def test_top_k_draws_only_among_the_k_most_likely_in_their_proportions():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.5, 2.5])
    freq = draw_frequencies(logits, top_k=3)
    assert freq[0] == 0 and freq[3] == 0  # outside the top 3
    expected = torch.softmax(torch.tensor([3.0, 2.0, 2.5]), -1)
    torch.testing.assert_close(freq[[1, 2, 4]], expected, rtol=0, atol=0.01)
    torch.testing.assert_close(draw_frequencies(logits, top_k=1), torch.tensor([0.0, 1, 0, 0, 0]))


def test_top_p_draws_only_among_the_fewest_most_likely_that_reach_p_in_their_proportions():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])
    logits = probs.log()
    freq = draw_frequencies(logits, top_p=0.7)  # 0.5, then 0.3 (0.5 < 0.7 before it); 0.8 >= 0.7 before 0.15
    assert freq[0] == 0 and freq[2] == 0
    torch.testing.assert_close(freq[[1, 3]], torch.tensor([0.625, 0.375]), rtol=0, atol=0.01)
    torch.testing.assert_close(draw_frequencies(logits, top_p=0.45), torch.tensor([0.0, 1, 0, 0]))  # the first stays
    torch.testing.assert_close(draw_frequencies(logits, top_p=0.9), torch.tensor([0.15, 0.5, 0, 0.3]) / 0.95,
                               rtol=0, atol=0.01)
    assert torch.equal(draw_frequencies(logits, top_p=1.0), draw_frequencies(logits))  # the same draws
    # after the temperature: at 0.5 the probabilities are 0.5^2, 0.3^2, ... renormalized (0.685 first), so p=0.6
    # keeps the first alone, where at temperature 1 it keeps two
    torch.testing.assert_close(draw_frequencies(logits, temperature=0.5, top_p=0.6), torch.tensor([0.0, 1, 0, 0]))
    assert (draw_frequencies(logits, top_p=0.6) > 0).tolist() == [False, True, False, True]
    rows = torch.stack([logits, logits.flip(0)])  # each row its own nucleus
    ids = choose(rows.repeat(2000, 1), generator=torch.Generator().manual_seed(1), top_p=0.7).view(2000, 2)
    assert set(ids[:, 0].tolist()) == {1, 3} and set(ids[:, 1].tolist()) == {0, 2}


def test_sampling_is_deterministic_under_a_seed_and_batched():
    net = RNNLM(20, [16], "gru", embedding_dim=8, init_scale=0.5)
    a = sample(net, [1, 2], 40, temperature=1.0, seed=5, num_samples=3)
    b = sample(net, [1, 2], 40, temperature=1.0, seed=5, num_samples=3)
    c = sample(net, [1, 2], 40, temperature=1.0, seed=6, num_samples=3)
    assert a.shape == (3, 40) and torch.equal(a, b) and not torch.equal(a, c)
    top1 = sample(net, [1, 2], 40, top_k=1, seed=9)
    assert torch.equal(top1, sample(net, [1, 2], 40, strategy="argmax"))
    assert torch.equal(sample(net, [1, 2], 40, top_p=1e-6, seed=9), top1)  # the nucleus of the most likely alone
    nucleus = sample(net, [1, 2], 40, top_p=0.5, seed=5, num_samples=3)
    assert torch.equal(nucleus, sample(net, [1, 2], 40, top_p=0.5, seed=5, num_samples=3))
    assert not torch.equal(a, nucleus)
    step, layers = net.stepper(), net.rnn.to_layers(None, 3)  # the onnxruntime path draws the same
    assert torch.equal(sample_steps(step, layers, [1, 2], 40, top_p=0.5, seed=5, num_samples=3), nucleus)


def test_banned_ids_are_never_drawn_even_when_most_likely():
    from rnnlab.data.text import PAD, build_vocab, never_sampled

    net = RNNLM(20, [16], "gru", embedding_dim=8, init_scale=0.5)
    with torch.no_grad():
        net.decoder.bias[0] = 50.0  # id 0 (a document LM's <pad>) dominates every distribution
    assert (sample(net, [1, 2], 30, seed=1) == 0).all()
    for kw in ({"seed": 1}, {"strategy": "argmax"}, {"top_k": 1}):
        drawn = sample(net, [1, 2], 30, num_samples=2, banned=[0], **kw)
        assert drawn.shape == (2, 30) and not (drawn == 0).any()
    step = net.stepper()
    layers = net.rnn.to_layers(None, 2)
    stepped = sample_steps(step, layers, [1, 2], 30, num_samples=2, seed=1, banned=[0])  # the onnxruntime path
    assert not (stepped == 0).any()
    assert never_sampled(build_vocab([["a", "b"]])) == [0] and build_vocab([["a"]]).itos[0] == PAD
    assert never_sampled(Vocabulary([UNK_CHAR, "a", "b"], UNK_CHAR)) == []  # a char vocabulary pads nothing


def test_argmax_follows_the_most_likely_path_of_a_trained_model():
    torch.manual_seed(0)
    net = RNNLM(5, [16], "lstm", embedding_dim=8, init_scale=0.3)
    cycle = torch.tensor([0, 1, 2, 3, 4] * 8)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        logits, _ = net(cycle[None, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0], cycle[1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    greedy = sample(net, [0, 1], 12, strategy="argmax")[0]
    assert greedy.tolist() == [2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3]
    # and it is, step by step, the argmax of the model's own distribution
    with torch.no_grad():
        logits, _ = net(torch.cat([torch.tensor([0, 1]), greedy])[None])
    assert torch.equal(logits[0, 1:-1].argmax(-1), greedy)


@pytest.fixture(scope="module")
def char_checkpoint(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("charrnn")
    cfg = compose_config(["task=charrnn", *TINY_TRAINER, "model.net.hidden_sizes=[32]", "data.batch_size=8",
                          "data.bptt=20", "trainer.limit_train_batches=20", "logger=tensorboard"], tmp_path)
    metrics = train(cfg)
    return tmp_path / "run" / "checkpoints" / "best.ckpt", metrics


def test_smoke_train_on_real_tinyshakespeare_reports_bits_per_char(char_checkpoint):
    path, metrics = char_checkpoint
    assert path.is_file()
    assert metrics["test/bpc"] == pytest.approx(metrics["test/loss"] / math.log(2), rel=1e-6)
    assert metrics["val/loss"] < math.log(66)


def test_eval_text_file_of_a_char_model_is_the_files_characters(char_checkpoint, tmp_path, data_dir):
    from rnnlab.evaluate import evaluate

    path, _ = char_checkpoint
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text()
    (tmp_path / "test_part.txt").write_text(split_text(text, (0.9, 0.05, 0.05))["test"])
    (tmp_path / "other.txt").write_text("ROMEO: ~wherefore~ art thou\n" * 3)

    def evaluated(*overrides):
        return evaluate(compose_config([f"ckpt_path={path}", "trainer.enable_progress_bar=false", *overrides],
                                       tmp_path, "eval"))

    own = evaluated(f"text_file={tmp_path / 'test_part.txt'}")
    assert own == pytest.approx(evaluated(), rel=1e-6) and own.keys() == {"test/loss", "test/ppl", "test/bpc"}
    folder = evaluate(compose_config([f"ckpt_path={path.parent.parent}", "trainer.enable_progress_bar=false"],
                                     tmp_path, "eval"))  # a run folder: its checkpoints/best.ckpt
    assert folder == evaluated()
    other = evaluated(f"text_file={tmp_path / 'other.txt'}", "batch_size=1")  # '~' is read as U+FFFD
    assert other["test/bpc"] == pytest.approx(other["test/loss"] / math.log(2), rel=1e-6)


def gen_cfg(path, **kw):
    base = dict(ckpt_path=str(path), prime="ROMEO:", length=40, temperature=0.8, sampling="multinomial",
                top_k=None, num_samples=1, seed=3, device="cpu", print_prime=True)
    return OmegaConf.create({**base, **kw})


def test_generate_streams_and_repeats_under_a_seed(char_checkpoint):
    path, _ = char_checkpoint
    out = io.StringIO()
    texts = generate(gen_cfg(path), out)
    assert len(texts[0]) == 40 and out.getvalue() == "ROMEO:" + texts[0] + "\n"
    assert generate(gen_cfg(path), io.StringIO()) == texts
    two = generate(gen_cfg(path, num_samples=2, sampling="argmax"), io.StringIO())
    assert len(two) == 2 and two[0] == two[1]
    assert generate(gen_cfg(path, top_p=1e-6), io.StringIO()) == generate(gen_cfg(path, sampling="argmax"),
                                                                          io.StringIO())
    nucleus = generate(gen_cfg(path, top_p=0.5), io.StringIO())
    assert nucleus != texts and nucleus == generate(gen_cfg(path, top_p=0.5), io.StringIO())


@pytest.mark.parametrize("kw, message", [
    (dict(temperature=0.0), r"^temperature must be a number > 0, got 0.0$"),
    (dict(temperature="hot"), r"^temperature must be a number > 0, got 'hot'$"),  # these four: tracebacks before
    (dict(length="long"), r"^length must be an integer >= 1, got 'long'$"),
    (dict(top_k=2.5), r"^top_k must be an integer >= 1 or null, got 2.5$"),
    (dict(num_samples=True), r"^num_samples must be an integer >= 1, got True$"),
    (dict(length=0), r"^length must be an integer >= 1, got 0$"),
    (dict(top_p=0), r"^top_p must be a number in \(0, 1\] or null, got 0$"),
    (dict(top_p=1.5), r"^top_p must be a number in \(0, 1\] or null, got 1.5$"),
    (dict(top_p="all"), r"^top_p must be a number in \(0, 1\] or null, got 'all'$"),
    (dict(prime="ROMEO~#"), r"^prime: 2 symbol\(s\) not in the vocabulary: '#', '~' \(unknown=unk reads them as "
                            r"'\ufffd'\)$"),
    (dict(unknown="skip"), r"^unknown must be one of \('error', 'unk'\), got 'skip'$"),
    (dict(sampling="beam"), "sampling must be one of"),
    (dict(seed="abc"), r"^seed must be an integer in \[0, 4294967295\] or null, got 'abc'$"),  # a traceback before
    (dict(print_prime="maybe"), r"^print_prime must be true or false, got 'maybe'$"),
])
def test_generate_bad_input(char_checkpoint, kw, message):
    path, _ = char_checkpoint
    with pytest.raises(ValueError, match=message):
        generate(gen_cfg(path, **kw), io.StringIO())


def test_a_prime_read_from_a_file_or_standard_input_generates_as_the_same_prime_given_inline(char_checkpoint, tmp_path):
    path, _ = char_checkpoint
    prime = "ROMEO:\nO, she [doth] = 'x'"  # what a command line would parse: a comma, brackets, =, quotes
    inline = io.StringIO()
    texts = generate(gen_cfg(path, prime=prime, unknown="unk"), inline)
    (tmp_path / "prime.txt").write_text(prime)
    from_file = io.StringIO()
    read = generate(gen_cfg(path, prime=None, prime_file=str(tmp_path / "prime.txt"), unknown="unk"), from_file)
    assert read == texts and from_file.getvalue() == inline.getvalue()
    piped = generate(gen_cfg(path, prime=None, prime_file="-", unknown="unk"), io.StringIO(), stdin=io.StringIO(prime))
    assert piped == texts
    with pytest.raises(ValueError, match=r"^give prime=TEXT or prime_file=FILE, not both$"):
        generate(gen_cfg(path, prime_file=str(tmp_path / "prime.txt")), io.StringIO())
    with pytest.raises(ValueError, match=r"^prime_file \S+nothing.txt does not exist$"):
        generate(gen_cfg(path, prime=None, prime_file=str(tmp_path / "nothing.txt")), io.StringIO())


@pytest.mark.parametrize(("kw", "shown"), [({}, "ROMEO:"), ({"prime": None}, ""), ({"print_prime": False}, "")])
def test_several_samples_show_the_prime_as_one_stream_does(char_checkpoint, kw, shown):
    path, _ = char_checkpoint
    out = io.StringIO()
    texts = generate(gen_cfg(path, num_samples=2, **kw), out)
    assert out.getvalue() == "".join(f"--- sample {i + 1} ---\n{shown}{text}\n" for i, text in enumerate(texts))
    one = io.StringIO()
    generate(gen_cfg(path, **kw), one)
    assert one.getvalue().startswith(shown) and len(one.getvalue()) == len(shown) + 40 + 1


def test_generate_reads_unknown_prime_symbols_as_unk_when_asked(char_checkpoint, monkeypatch):
    import rnnlab.generate

    path, _ = char_checkpoint
    primes = []
    monkeypatch.setattr(rnnlab.generate, "sample", lambda net, prime, *args, **kw: primes.append(prime) or sample(
        net, prime, *args, **kw))
    asked = generate(gen_cfg(path, prime="RO~EO#", unknown="unk"), io.StringIO())
    assert asked == generate(gen_cfg(path, prime=f"RO{UNK_CHAR}EO{UNK_CHAR}"), io.StringIO())
    vocab = load_run(path).vocab
    assert primes[0] == primes[1] == vocab.encode(["R", "O", UNK_CHAR, "E", "O", UNK_CHAR])
    assert vocab.unk == UNK_CHAR and "~" not in vocab and "#" not in vocab


@pytest.mark.slow  # a subprocess: left out of mutation runs (bench/mutation.sh)
def test_generate_script_one_line_errors(char_checkpoint, tmp_path):
    path, _ = char_checkpoint
    result = run_script("generate.py", f"ckpt_path={path}", "temperature=-1", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "generate.py: error: temperature must be a number > 0, got -1"
    result = run_script("generate.py", f"ckpt_path={path}", "prime=ROMEO:", "length=30", "seed=1", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("ROMEO:") and len(result.stdout) == 6 + 30 + 1


@pytest.mark.slow
def test_a_generate_multirun_heads_each_jobs_text_with_its_settings(char_checkpoint, tmp_path):
    path, _ = char_checkpoint
    result = run_script("generate.py", "-m", f"ckpt_path={path}", "prime=RO", "length=12", "seed=1",
                        "temperature=0.5,2.0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"--- job 0: ckpt_path={path} prime=RO length=12 seed=1 temperature=0.5 ---"
    assert lines[2] == f"--- job 1: ckpt_path={path} prime=RO length=12 seed=1 temperature=2.0 ---"
    assert [len(lines[1]), len(lines[3]), lines[1][:2], lines[3][:2]] == [14, 14, "RO", "RO"]
    single = run_script("generate.py", f"ckpt_path={path}", "prime=RO", "length=12", "seed=1", "temperature=2.0",
                        cwd=tmp_path)
    assert single.stdout == lines[3] + "\n"  # the same text as job 1, without a header
    (sweep,) = (tmp_path / "outputs" / "generate" / "multiruns").iterdir()
    assert (sweep / "multirun.yaml").is_file()


def test_text_samples_are_written_to_tensorboard(char_checkpoint):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path, _ = char_checkpoint
    events = EventAccumulator(str(path.parent.parent / "tensorboard"))
    events.Reload()
    assert "samples/text_summary" in events.Tags()["tensors"]
    text = events.Tensors("samples/text_summary")[0].tensor_proto.string_val[0].decode()
    assert len(text) > 300


def test_text_samples_draw_as_generate_does_and_check_their_settings_at_the_start(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from lightning.pytorch.loggers import TensorBoardLogger

    import rnnlab.callbacks
    from rnnlab.callbacks import TextSamples

    for kw, message in (({"temperature": 0}, "temperature must be a number > 0, got 0"),
                        ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\] or null, got 1.5"),
                        ({"every_n_epochs": 0}, "every_n_epochs must be an integer >= 1, got 0")):
        with pytest.raises(ValueError, match=f"^{message}$"):  # before: after the first epoch, or never
            TextSamples(**kw)
    drawn = []
    monkeypatch.setattr(rnnlab.callbacks, "sample", lambda *args, **kw: drawn.append(kw) or torch.tensor([[1, 2]]))
    vocab = Vocabulary([UNK_CHAR, "\n", "a", "b"], UNK_CHAR)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(vocab=vocab, hparams=None), sanity_checking=False,
                              is_global_zero=True, current_epoch=0, global_step=3,
                              loggers=[TensorBoardLogger(str(tmp_path))])
    module = SimpleNamespace(symbol_level="char", net=None)
    TextSamples(length=2, top_k=3, top_p=0.9, seed=4).on_validation_epoch_end(trainer, module)
    assert drawn == [{"top_k": 3, "seed": 4, "banned": [], "top_p": 0.9}]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu", "naive_lstm", "naive_gru", "naive_rnn"])
@pytest.mark.parametrize("embedding_dim, sizes", [(None, [16, 16, 8]), (6, [16, 16, 8]), (None, [16, 16]), (6, [16])])
def test_single_step_path_equals_the_training_forward_over_200_steps(cell, embedding_dim, sizes):
    """Layers of one size take their hidden products in one batched product, others one by one."""
    torch.manual_seed(0)
    net = RNNLM(20, sizes, cell, embedding_dim=embedding_dim, dropout=0.3).eval()
    ids = torch.randint(0, 20, (3, 200))
    with torch.no_grad():
        whole, final = net(ids)
        state, outs = None, []
        for t in range(200):
            logits, state = net.step(ids[:, t], state)
            outs.append(logits)
    torch.testing.assert_close(torch.stack(outs, 1), whole, rtol=0, atol=1e-6)
    for ours, theirs in zip(state, final):  # the same state format: the two paths can alternate
        for a, b in zip(ours if isinstance(ours, tuple) else [ours], theirs if isinstance(theirs, tuple) else [theirs]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "naive_rnn"])
def test_per_layer_states_are_the_cells_tuples_and_round_trip(cell):
    """`to_layers` gives each layer the state tuple its cell's `update` takes, `(h,)` or `(h, c)` of `(batch, hidden)`
    (zeros for no state); `from_layers` gives back `forward`'s state exactly."""
    torch.manual_seed(0)
    rnn = RNNLM(20, [16, 16, 8], cell, embedding_dim=6).eval().rnn  # two groups: [16, 16] and [8]
    width = 2 if "lstm" in cell else 1
    zeros = rnn.to_layers(None, 3)
    assert [tuple(t.shape for t in s) for s in zeros] == [((3, size),) * width for size in (16, 16, 8)]
    assert all(t.dtype == torch.float32 and not t.any() for s in zeros for t in s)
    _, state = rnn(torch.randn(3, 5, 6))
    layers = rnn.to_layers(state, 3)
    assert all(isinstance(s, tuple) and len(s) == width for s in layers)
    for ours, theirs in zip(rnn.from_layers(layers), state):
        for a, b in zip(ours if width == 2 else [ours], theirs if width == 2 else [theirs]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("num_samples", [1, 3])
def test_single_step_sampling_draws_the_text_of_the_forward_path(num_samples):
    torch.manual_seed(0)
    net = RNNLM(30, [32, 32], "lstm", embedding_dim=None, init_scale=0.3).eval()
    kw = dict(temperature=0.9, num_samples=num_samples, seed=11)
    fast = sample(net, [1, 2, 3], 300, single_step=True, **kw)
    slow = sample(net, [1, 2, 3], 300, single_step=False, **kw)
    assert torch.equal(fast, slow) and fast.shape == (num_samples, 300)
    if num_samples > 1:
        assert not torch.equal(fast[0], fast[1])  # the rows are separate samples


@pytest.mark.slow  # a subprocess: left out of mutation runs (bench/mutation.sh)
def test_generate_into_a_closed_pipe_ends_quietly(char_checkpoint, tmp_path):
    path, _ = char_checkpoint
    script, err = ROOT / "generate.py", tmp_path / "err"
    command = f"{sys.executable} {script} ckpt_path={path} length=20000 seed=0 2>{err} | head -c 50"
    result = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert len(result.stdout) == 50
    errors = err.read_text()
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors[-2000:]


def test_symbols_primes_and_text_by_level():
    from rnnlab.sampling import default_prime, from_symbols, to_symbols

    assert default_prime("char") == "\n" and default_prime("word") == "<eos>"
    assert to_symbols("ab c", "char") == ["a", "b", " ", "c"] and to_symbols("the  cat\n", "word") == ["the", "cat"]
    assert from_symbols(["a", "b", "\n"], "char") == "ab\n"
    assert from_symbols(["the", "cat", "<eos>", "a"], "word") == "the cat \na "


@pytest.mark.parametrize("rows, vocab", [(1, 65), (4, 7), (500, 65), (3, 10_000)])
def test_choose_draws_what_torch_multinomial_draws_from_the_same_generator(rows, vocab):
    """Draws come from the caller's generator: the same seed gives the same ids as `torch.multinomial` over the
    tempered softmax, draw after draw, so texts sampled before `choose` skipped its checks are drawn again."""
    logits = 3 * torch.randn(rows, vocab, generator=torch.Generator().manual_seed(vocab))
    ours, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(50):
        got = choose(logits, 0.8, generator=ours)
        expected = torch.multinomial(torch.softmax(logits / 0.8, -1), 1, generator=theirs)[:, 0]
        assert torch.equal(got, expected)
        logits = logits.roll(1, -1)


def test_sampling_refuses_a_network_whose_logits_are_not_finite():
    net = RNNLM(20, [16], "lstm", embedding_dim=8)
    with torch.no_grad():
        net.decoder.bias[3] = float("nan")
    with pytest.raises(ValueError, match=r"logits are not finite \(NaN or inf\) before the first draw"):
        sample(net, [1, 2], 10, seed=0)


def test_a_sample_of_length_one_is_one_id():
    net = RNNLM(20, [16], "gru", embedding_dim=8, init_scale=0.5)
    assert sample(net, [1, 2], 1, seed=0).shape == (1, 1)
    with pytest.raises(ValueError, match="^length must be an integer >= 1, got 0$"):
        sample(net, [1, 2], 0)
