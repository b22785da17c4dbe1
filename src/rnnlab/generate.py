"""Sample text from a language-model checkpoint (CharRNN, PTB or a word LM over documents), streaming it to stdout."""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from rnnlab import CONF_DIR
from rnnlab.checkpoint import load_run
from rnnlab.checks import check_count, check_seed, check_switch
from rnnlab.cli import check_added_keys, one_line_errors, read_text_setting, resolve_device, set_threads
from rnnlab.data.text import never_sampled
from rnnlab.data.vocab import UnknownSymbolError
from rnnlab.onnx_export import OnnxModel, backend, onnx_stepper, zero_states
from rnnlab.sampling import (
    check_sampling_args,
    default_prime,
    from_symbols,
    reads_backward,
    sample,
    sample_steps,
    to_symbols,
)
from rnnlab.sweeps import job_header
from rnnlab.tasks.language_model import LanguageModel


def streamer(out, vocab, level: str, every: int = 64):
    """`on_step` for `sample`: writes each symbol as it comes, flushing at line ends and every `every` symbols."""
    written = 0

    def on_step(ids) -> None:
        nonlocal written
        text = from_symbols(vocab.decode(ids), level)
        out.write(text)
        written += 1
        if "\n" in text or written % every == 0:
            out.flush()

    return on_step


UNKNOWN = ("error", "unk")  # what a prime's symbols outside the vocabulary do


def generate(cfg: DictConfig, out=sys.stdout, stdin=None) -> list[str]:
    """The generated texts (without the prime); streams them to `out` as they are produced.

    A prime for a word LM over documents (`task=lm`) is tokenized as its documents were (lower-cased, punctuation
    dropped); a backward LM (`data.reverse=true`) writes the text that leads up to the prime, in the usual order."""
    set_threads(cfg.get("threads"))
    check_sampling_args(cfg.length, cfg.temperature, cfg.sampling, cfg.top_k, cfg.get("top_p"))
    check_count("num_samples", cfg.num_samples)
    check_seed("seed", cfg.get("seed"), nullable=True)
    check_switch("print_prime", cfg.get("print_prime", True))
    if cfg.get("prime_file") is not None:
        if cfg.prime is not None:
            raise ValueError("give prime=TEXT or prime_file=FILE, not both")
        cfg = OmegaConf.merge(cfg, {"prime": read_text_setting("prime_file", cfg.prime_file, stdin)[0]})
    on_unknown = cfg.get("unknown", "error")
    if on_unknown not in UNKNOWN:
        raise ValueError(f"unknown must be one of {UNKNOWN}, got {on_unknown!r}")
    run = load_run(cfg.ckpt_path, map_location=resolve_device(cfg.device))
    if not isinstance(run.model, LanguageModel) or run.vocab is None:
        raise ValueError(
            f"{cfg.ckpt_path} holds a {type(run.model).__name__} ({run.config.get('task_name')} task), "
            "which cannot generate text; use a language-model checkpoint (task=charrnn, ptb or lm)"
        )
    level = run.model.symbol_level
    data = run.config.get("data")
    backward = reads_backward(level, data)
    prime = to_symbols(default_prime(level), level) if cfg.prime is None else to_symbols(str(cfg.prime), level, data)
    if not prime:
        read = " as the model's documents are tokenized" if str(cfg.prime).strip() else ""
        raise ValueError(f"prime has no symbols{read}; give some text or leave it unset (null)")
    unknown = run.vocab.unknown(prime)
    if unknown and (on_unknown == "error" or run.vocab.unk is None):
        hints = [f"unknown=unk reads them as {run.vocab.unk!r}"] if run.vocab.unk is not None else []
        if lowered := run.vocab.lower_case_hint(unknown):
            hints.insert(0, lowered)
        raise UnknownSymbolError(unknown, where="prime", hint=f" ({'; '.join(hints)})" if hints else "")
    if unknown:
        prime = [s if s in run.vocab else run.vocab.unk for s in prime]
    stream = cfg.num_samples == 1 and not backward  # a backward LM writes what comes before: shown once done
    shown = ""  # the prime as the model read it, in the text's order
    if cfg.print_prime and cfg.prime is not None:
        shown = from_symbols(prime[::-1] if backward else prime, level)
    out.write(job_header())
    if stream:
        out.write(shown)
    on_step = streamer(out, run.vocab, level) if stream else None
    args = (cfg.length, cfg.temperature, cfg.sampling, cfg.top_k, cfg.num_samples, cfg.seed, on_step)
    if backend(cfg) == "onnxruntime":
        session = OnnxModel(cfg.onnx_path, "language_model_step", cfg.get("threads"))
        states = zero_states(run.model.net, cfg.num_samples)
        ids = sample_steps(onnx_stepper(session), states, run.vocab.encode(prime), *args,
                           banned=never_sampled(run.vocab), top_p=cfg.get("top_p"))
    else:
        ids = sample(run.model.net, run.vocab.encode(prime), *args, banned=never_sampled(run.vocab),
                     top_p=cfg.get("top_p"))
    texts = [from_symbols(run.vocab.decode(row[::-1] if backward else row), level) for row in ids.tolist()]
    if stream:
        out.write("\n")
    else:
        for i, text in enumerate(texts):
            header = f"--- sample {i + 1} ---\n" if cfg.num_samples > 1 else ""
            out.write(f"{header}{text}{shown}\n" if backward else f"{header}{shown}{text}\n")
    out.flush()
    return texts


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="generate")
def main(cfg: DictConfig) -> None:
    try:
        with one_line_errors("generate.py"):
            check_added_keys("generate.py")
            generate(cfg)
    except BrokenPipeError:  # `generate.py ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error when Python flushes at exit


if __name__ == "__main__":
    main()
