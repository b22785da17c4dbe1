"""k-fold cross-validation of a sentence-polarity preset: test accuracy per fold, mean and spread.

    python bench/mr_folds.py [experiment=mr_lstm] [hydra overrides ...] [--folds 10] [--only 0 1 2]
    python bench/mr_folds.py experiment=mr_ulmfit --lm experiment=mr_lm init_from=<LM>/checkpoints/best.ckpt
    python bench/mr_folds.py experiment=mr_ulmfit encoder.ckpt_path=<backward LM> --ensemble-with <forward run>

With `--lm OVERRIDES`, every fold first fine-tunes a language model (`train.py OVERRIDES`, on that fold's
training and validation sentences only: `data.folds`/`data.fold` are passed to it too), and the classifier
starts from its best checkpoint (`encoder.ckpt_path`). `--lm` takes every argument after it: put the
classifier's overrides first.

With `--ensemble-with DIR [DIR ...]` (earlier runs of this script: `outputs/bench/mr_folds/<time>`), every fold's
classifier is also averaged with that fold's classifier from those runs (`eval.py ensemble=`), e.g. a backward
classifier (an LM trained with `data.reverse=true`) with the forward ones: ULMFiT's forward + backward pair.
With `--ensemble-of DIR DIR [...]` nothing is trained: each fold's classifiers of those runs are averaged.

    python bench/mr_folds.py --ensemble-of <forward run> <backward run> <mr_lstm run> [--only 0 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from ptb_throughput import fresh_run_dir  # bench/ is on sys.path when run as a script

from rnnlab import CONF_DIR
from rnnlab.cli import one_line_errors
from rnnlab.evaluate import evaluate
from rnnlab.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--only", type=int, nargs="*", help="run only these folds")
    parser.add_argument("--lm", nargs="+", metavar="OVERRIDE", help="fine-tune this LM on each fold first")
    parser.add_argument("--ensemble-with", nargs="+", metavar="DIR", type=Path, default=[],
                        help="average each fold's classifier with the same fold's from these earlier runs")
    parser.add_argument("--ensemble-of", nargs="+", metavar="DIR", type=Path, default=[],
                        help="train nothing: average each fold's classifiers of these earlier runs")
    args, overrides = parser.parse_known_args()
    if args.folds < 2:
        parser.error(f"--folds must be at least 2, got {args.folds}")
    outside = [fold for fold in args.only or [] if not 0 <= fold < args.folds]
    if outside:
        parser.error(f"--only: fold(s) {outside} not in 0..{args.folds - 1} (--folds {args.folds})")
    folds = args.only if args.only is not None else range(args.folds)
    if args.ensemble_of:
        if len(args.ensemble_of) < 2 or any(not o.startswith("threads=") for o in overrides):
            parser.error("--ensemble-of takes two runs or more and trains nothing (of the overrides only threads=)")
        first, *rest = args.ensemble_of
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            configs = {fold: ensemble_config(partners([first], fold)[0], rest, fold, overrides) for fold in folds}
        ensembled = [evaluate(cfg)["test/acc"] for cfg in configs.values()]
        for fold, acc in zip(folds, ensembled):
            print(f"fold {fold}: ensemble test accuracy {acc:.4f}")
        print(f"{len(ensembled)} fold(s): mean ensemble test accuracy {summary(ensembled)}")
        return
    overrides = overrides or ["experiment=mr_lstm"]
    accuracies, ensembled = [], []
    run_dir = fresh_run_dir("mr_folds")  # never an older run's folds, nor those of a run started in the same second
    quiet = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]

    def fold_config(fold: int, output_dir: str, more: list[str]):
        return compose("train", overrides=[f"data.folds={args.folds}", f"data.fold={fold}",
                                           f"paths.output_dir={output_dir}", *quiet, *more])

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # all composed before any runs
        lm_configs = {fold: fold_config(fold, f"{run_dir}/{fold}/lm", args.lm) for fold in folds} if args.lm else {}
        configs = {fold: fold_config(fold, f"{run_dir}/{fold}", overrides + (
            [f"encoder.ckpt_path={run_dir}/{fold}/lm/checkpoints/best.ckpt"] if args.lm else [])) for fold in folds}
        eval_configs = {fold: ensemble_config(f"{run_dir}/{fold}/checkpoints/best.ckpt", args.ensemble_with, fold,
                                              overrides)
                        for fold in folds} if args.ensemble_with else {}
    for fold, cfg in configs.items():
        start = time.perf_counter()
        if fold in lm_configs:
            lm = train(lm_configs[fold])
            print(f"fold {fold}: LM test perplexity {lm['test/ppl']:.2f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
        metrics = train(cfg)
        accuracies.append(metrics["test/acc"])
        print(f"fold {fold}: test accuracy {metrics['test/acc']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
        if fold in eval_configs:
            ensembled.append(evaluate(eval_configs[fold])["test/acc"])
            print(f"fold {fold}: ensemble test accuracy {ensembled[-1]:.4f}", flush=True)
    print(f"{len(accuracies)} fold(s): mean test accuracy {summary(accuracies)}")
    if ensembled:
        print(f"{len(ensembled)} fold(s): mean ensemble test accuracy {summary(ensembled)}")


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def ensemble_config(ckpt: str, runs: list[Path], fold: int, overrides: list[str]):
    """`eval.py`'s config averaging the classifier `ckpt` with `fold`'s of `runs` (threads as overridden)."""
    threads = [o for o in overrides if o.startswith("threads=")]
    return compose("eval", overrides=[f"ckpt_path={ckpt}",
                                      f"ensemble=[{','.join(partners(runs, fold))}]", *threads])


def partners(runs: list[Path], fold: int) -> list[str]:
    """The best checkpoint of `fold` in every earlier run that holds it (a run may hold some folds only)."""
    found = [run / str(fold) / "checkpoints" / "best.ckpt" for run in runs]
    found = [str(path) for path in found if path.is_file()]
    if not found:
        raise SystemExit(f"--ensemble-with: no run of {[str(r) for r in runs]} has fold {fold}")
    return found


if __name__ == "__main__":
    with one_line_errors("mr_folds.py"):
        main()
