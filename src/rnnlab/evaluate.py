"""Evaluate a checkpoint on the test (or validation) split, with nothing but the checkpoint file."""

from __future__ import annotations

import logging
import math
import time

import hydra
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torchmetrics.functional.classification import binary_accuracy, binary_auroc, binary_f1_score

from rnnlab import CONF_DIR
from rnnlab.adapt import cache_nll, candidates, dynamic_nll, gradient_ms, plain_nll
from rnnlab.checkpoint import TrainedRun, load_run
from rnnlab.checks import check_accelerator, check_count, check_switch, init_parameters
from rnnlab.cli import check_added_keys, keep_freed_memory, one_line_errors, set_threads, silence_known_warnings
from rnnlab.data.corpus import TokenCorpus
from rnnlab.files import write_metrics
from rnnlab.predictor import check_sentiment, ensemble
from rnnlab.tasks.language_model import LanguageModel, perplexity

log = logging.getLogger(__name__)

SPLITS = ("test", "valid")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    set_threads(cfg.get("threads"))
    check_accelerator(cfg.trainer)
    check_switch("keep_freed_memory", cfg.get("keep_freed_memory", True))
    keep_freed_memory(cfg.get("keep_freed_memory", True))
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    for key in ("batch_size", "eval_bptt"):
        check_count(key, cfg.get(key), nullable=True)
    settings = candidates(cfg.adapt) if cfg.get("adapt") else None
    silence_known_warnings()
    run = load_run(cfg.ckpt_path)
    overrides = data_overrides(cfg, run)
    if cfg.get("ensemble"):
        if cfg.get("text_file"):
            raise ValueError("text_file is a language model's perplexity on a text; ensemble averages sentiment "
                             "classifiers: not both")
        return evaluate_ensemble(cfg, run, overrides)
    datamodule = instantiate(run.config.data, **overrides)
    datamodule.vocab = run.vocab
    if cfg.get("text_file"):
        use_text_file(datamodule, cfg.text_file, cfg.split, keep_corpus=bool(cfg.get("adapt")), where=cfg.ckpt_path)
    if cfg.get("adapt"):
        return adapted(run, datamodule, cfg.split, cfg.adapt, settings, adapt_device(cfg.trainer.get("accelerator")))
    trainer = instantiate(cfg.trainer)
    run_split = trainer.test if cfg.split == "test" else trainer.validate
    results = run_split(run.model, datamodule=datamodule)
    metrics = dict(results[0]) if results else {}
    on = f" on {cfg.text_file}" if cfg.get("text_file") else ""
    log.info("%s%s: %s", run.path, on, ", ".join(f"{k} {v:.6g}" for k, v in metrics.items()))
    accuracy = f"{'test' if cfg.split == 'test' else 'val'}/acc"
    if accuracy in metrics and hasattr(datamodule, "datasets"):
        n = len(datamodule.datasets[cfg.split])
        low, high = wilson_interval(metrics[accuracy], n)
        log.info("%s %.4f: 95%% Wilson interval [%.4f, %.4f] over %d texts", accuracy, metrics[accuracy], low, high, n)
    return metrics


def wilson_interval(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion `p` of `n` trials (95% for the default `z`): a confidence interval
    for a classifier's accuracy on the distribution its `n` test texts were drawn from."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def use_text_file(datamodule, path: str, split: str, keep_corpus: bool, where: str) -> None:
    """`split` becomes the text of `path`, read as the run read its corpus (`datamodule.encode_file`); the run's
    own corpus is read only when `keep_corpus` (adaptive evaluation tunes on its validation text)."""
    if not hasattr(datamodule, "encode_file"):
        raise ValueError(f"text_file: {where} is not a language model ({type(datamodule).__name__}); text_file "
                         "gives a language model's perplexity on a text")
    tokens = datamodule.encode_file(path)
    if keep_corpus:
        datamodule.setup()
        datamodule.corpus.splits[split] = tokens
    else:
        datamodule.corpus = TokenCorpus(datamodule.vocab, {split: tokens})


def data_overrides(cfg: DictConfig, run: TrainedRun) -> dict:
    """What eval.py changes in the run's data config: this machine's folders, and `batch_size` / `eval_bptt`
    where given, each only for a DataModule that takes the setting (the sine data has no folders and one batch
    size)."""
    data = run.config.data
    takes = init_parameters(get_class(data._target_))
    overrides = {key: cfg.paths[key] for key in ("data_dir", "cache_dir") if key in takes}
    if cfg.get("batch_size"):
        keys = [key for key in ("eval_batch_size", "test_batch_size") if key in takes] or ["batch_size"]
        overrides |= dict.fromkeys(keys, cfg.batch_size)
    if cfg.get("eval_bptt"):
        if "eval_bptt" not in takes:
            raise ValueError(f"eval_bptt: the data of {cfg.ckpt_path} ({data._target_}) has no evaluation "
                             "windows; eval_bptt is for language models")
        overrides["eval_bptt"] = cfg.eval_bptt
    return overrides


def evaluate_ensemble(cfg: DictConfig, run: TrainedRun, overrides: dict) -> dict[str, float]:
    """Sentiment classifiers averaged (`ensemble=[more checkpoints]`, e.g. ULMFiT's forward and backward pair):
    accuracy, F1 and AUROC of the mean P(positive) on the split's texts, which every member must read the same,
    and each member's accuracy."""
    device = adapt_device(cfg.trainer.get("accelerator"))
    runs = [run] + [load_run(path) for path in cfg.ensemble]
    for member in runs:
        check_sentiment(member)
        member.model.to(device)
    splits = [instantiate(member.config.data, **overrides).read_splits()[cfg.split] for member in runs]
    for member, texts in zip(runs[1:], splits[1:]):
        if texts.texts != splits[0].texts or list(texts.labels) != list(splits[0].labels):
            raise ValueError(f"ensemble: {member.path} reads other {cfg.split} texts than {run.path} (their data "
                             "configs must agree on the dataset, split, folds, fold and seed)")
    result = ensemble(runs, splits[0].texts, list(splits[0].labels), cfg.get("batch_size") or 256)
    metrics = {f"{cfg.split}/acc_member{i}": binary_accuracy(p, result.labels).item()
               for i, p in enumerate(result.members)}
    mean = result.mean
    metrics |= {f"{cfg.split}/acc": binary_accuracy(mean, result.labels).item(),
                f"{cfg.split}/f1": binary_f1_score(mean, result.labels).item(),
                f"{cfg.split}/auroc": binary_auroc(mean, result.labels).item()}
    for i, member in enumerate(runs):
        print(f"member{i}  {member.path}  acc {metrics[f'{cfg.split}/acc_member{i}']:.4f}")
    print(f"ensemble of {len(runs)} over {len(mean)} {cfg.split} texts: acc {metrics[f'{cfg.split}/acc']:.4f}, "
          f"f1 {metrics[f'{cfg.split}/f1']:.4f}, auroc {metrics[f'{cfg.split}/auroc']:.4f}"
          + (f" ({result.dropped} texts without words left out)" if result.dropped else ""))
    return metrics


def adapt_device(accelerator: str | None) -> torch.device:
    """Where adapted (or ensemble) evaluation runs: the GPU with `trainer=gpu`, else the CPU."""
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError("trainer.accelerator=gpu, but PyTorch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def adapted(run: TrainedRun, datamodule, split: str, adapt: DictConfig, settings: list[dict[str, float]],
            device: torch.device | str = "cpu") -> dict[str, float]:
    """Plain and adapted perplexity (and bits/char) of `split` at batch 1 on `device`, for `settings` (from
    `adapt.candidates`): its one setting, or with `adapt.search` the best of them on the validation split
    (a table of every setting is printed)."""
    if not isinstance(run.model, LanguageModel):
        raise ValueError(f"adapt={adapt.method} applies to language models; {run.path} holds a "
                         f"{type(run.model).__name__}")
    datamodule.setup()
    net, bptt = run.model.net.to(device), run.model.hparams.bptt
    splits = {name: tokens.to(device) for name, tokens in datamodule.corpus.splits.items()}
    ms = None
    if adapt.method == "dynamic" and adapt.rule == "rms":
        ms = gradient_ms(net, splits["train"], bptt, adapt.train_batches, adapt.train_batch_size)
    measure = {
        "dynamic": lambda stream, s: dynamic_nll(net, stream, adapt.get("bptt") or bptt, s["lr"], s["decay"],
                                                 adapt.rule, ms),
        "cache": lambda stream, s: cache_nll(net, stream, bptt, s["window"], s["theta"], s["lam"]),
    }[adapt.method]
    setting = settings[0]
    if adapt.search:
        rows = []
        for candidate in settings:
            nll, count = measure(splits["valid"], candidate)
            rows.append((nll / count, candidate))
            values = "  ".join(f"{k}={v:<6}" for k, v in candidate.items())
            print(f"valid  {values}  ppl {perplexity(nll / count):9.2f}", flush=True)
        setting = min(rows, key=lambda row: row[0])[1]
        print(f"best on valid: {setting}")
    start = time.perf_counter()
    plain, count = plain_nll(net, splits[split], bptt)
    plain_seconds = time.perf_counter() - start
    start = time.perf_counter()
    nll, _ = measure(splits[split], setting)
    adapted_seconds = time.perf_counter() - start
    metrics = {f"{split}/ppl": perplexity(plain / count), f"{split}/ppl_{adapt.method}": perplexity(nll / count)}
    if run.model.symbol_level == "char":
        bits = count * math.log(2)
        metrics |= {f"{split}/bpc": plain / bits, f"{split}/bpc_{adapt.method}": nll / bits}
    for key, value in metrics.items():
        print(f"{key:24s} {value:.4f}")
        log.info("%s %.6g", key, value)
    print(f"{adapt.method} with {setting}: {adapted_seconds:.1f} s, plain evaluation {plain_seconds:.1f} s "
          f"({adapted_seconds / plain_seconds:.1f}x) over {count} tokens")
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    with one_line_errors("eval.py"):
        check_added_keys("eval.py", read=("trainer.",))
        write_metrics(cfg.paths.output_dir, evaluate(cfg))  # beside the run's .hydra/: for eval.py -m summaries


if __name__ == "__main__":
    main()
