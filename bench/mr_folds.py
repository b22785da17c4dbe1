"""k-fold cross-validation of a sentence-polarity preset: test accuracy per fold, mean and spread.

    python bench/mr_folds.py [experiment=mr_lstm] [hydra overrides ...] [--folds 10] [--only 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

from hydra import compose, initialize_config_dir

from rnnlab import CONF_DIR
from rnnlab.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--only", type=int, nargs="*", help="run only these folds")
    args, overrides = parser.parse_known_args()
    overrides = overrides or ["experiment=mr_lstm"]
    accuracies = []
    run_dir = f"outputs/bench/mr_folds/{time.strftime('%Y-%m-%d_%H-%M-%S')}"  # fresh: never resume an older fold
    folds = args.only if args.only is not None else range(args.folds)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # all composed before any runs
        configs = {fold: compose("train", overrides=[
            f"data.folds={args.folds}", f"data.fold={fold}", f"paths.output_dir={run_dir}/{fold}",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", *overrides,
        ]) for fold in folds}
    for fold, cfg in configs.items():
        start = time.perf_counter()
        metrics = train(cfg)
        accuracies.append(metrics["test/acc"])
        print(f"fold {fold}: test accuracy {metrics['test/acc']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    print(f"{len(accuracies)} fold(s): mean test accuracy {statistics.mean(accuracies):.4f} ± {spread:.4f}")


if __name__ == "__main__":
    main()
