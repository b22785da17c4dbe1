#!/usr/bin/env bash
# Mutation testing of the core modules (streams, resumable loaders, the LM task's BPTT and state carry,
# sampling, downloads and extraction, padded recurrent layers, the sentiment model's padding and pooling,
# checkpoints, LM transfer, the fused loss, optimizers, recurrent stacks) against the fast unit tests:
# `[tool.mutmut]` in pyproject.toml says which.
# Not part of CI (it runs the tests once per mutant). Needs `pip install -e ".[mutation]"`.
#     bash bench/mutation.sh            # then: mutation-report.md, mutmut show <mutant>
#     mutmut run <mutant names>          # re-run some (after new tests: rm mutants/mutmut-stats.json first)
set -euo pipefail
cd "$(dirname "$0")/.."
export RNNLAB_DATA_DIR="${RNNLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mutmut run --max-children "${MUTMUT_CHILDREN:-2}"
mutmut results --all true > mutation-results.txt || true
python bench/mutation_report.py mutation-results.txt > mutation-report.md   # the per-survivor table
head -1 mutation-report.md
