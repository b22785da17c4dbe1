"""k-fold cross-validation of a sentence-polarity preset: test accuracy per fold, mean and spread.

    python bench/mr_folds.py [experiment=mr_lstm] [hydra overrides ...] [--folds 10] [--only 0 1 2]
    python bench/mr_folds.py experiment=mr_ulmfit --lm experiment=mr_lm init_from=<LM>/checkpoints/best.ckpt

With `--lm OVERRIDES`, every fold first fine-tunes a language model (`train.py OVERRIDES`, on that fold's
training and validation sentences only: `data.folds`/`data.fold` are passed to it too), and the classifier
starts from its best checkpoint (`encoder.ckpt_path`). `--lm` takes every argument after it: put the
classifier's overrides first.
"""

from __future__ import annotations

import argparse
import statistics
import time

from hydra import compose, initialize_config_dir
from ptb_throughput import fresh_run_dir  # bench/ is on sys.path when run as a script

from rnnlab import CONF_DIR
from rnnlab.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--only", type=int, nargs="*", help="run only these folds")
    parser.add_argument("--lm", nargs="+", metavar="OVERRIDE", help="fine-tune this LM on each fold first")
    args, overrides = parser.parse_known_args()
    overrides = overrides or ["experiment=mr_lstm"]
    accuracies = []
    run_dir = fresh_run_dir("mr_folds")  # never an older run's folds, nor those of a run started in the same second
    folds = args.only if args.only is not None else range(args.folds)
    quiet = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]

    def fold_config(fold: int, output_dir: str, more: list[str]):
        return compose("train", overrides=[f"data.folds={args.folds}", f"data.fold={fold}",
                                           f"paths.output_dir={output_dir}", *quiet, *more])

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # all composed before any runs
        lm_configs = {fold: fold_config(fold, f"{run_dir}/{fold}/lm", args.lm) for fold in folds} if args.lm else {}
        configs = {fold: fold_config(fold, f"{run_dir}/{fold}", overrides + (
            [f"encoder.ckpt_path={run_dir}/{fold}/lm/checkpoints/best.ckpt"] if args.lm else [])) for fold in folds}
    for fold, cfg in configs.items():
        start = time.perf_counter()
        if fold in lm_configs:
            lm = train(lm_configs[fold])
            print(f"fold {fold}: LM test perplexity {lm['test/ppl']:.2f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
        metrics = train(cfg)
        accuracies.append(metrics["test/acc"])
        print(f"fold {fold}: test accuracy {metrics['test/acc']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    print(f"{len(accuracies)} fold(s): mean test accuracy {statistics.mean(accuracies):.4f} ± {spread:.4f}")


if __name__ == "__main__":
    main()
