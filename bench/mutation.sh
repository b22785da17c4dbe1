#!/usr/bin/env bash
# Mutation testing of the core modules (streams, resumable loaders, the LM task's BPTT and state carry,
# sampling, downloads and extraction, padded recurrent layers, the sentiment model's padding and pooling,
# checkpoints) against the fast unit tests: `[tool.mutmut]` in pyproject.toml says which.
# Not part of CI (it runs the tests once per mutant). Needs `pip install -e ".[mutation]"`.
#     bash bench/mutation.sh            # then: mutmut results / mutmut show <mutant>
set -euo pipefail
cd "$(dirname "$0")/.."
export RNNLAB_DATA_DIR="${RNNLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mutmut run --max-children "${MUTMUT_CHILDREN:-2}"
mutmut results --all true > mutation-results.txt || true
python - <<'PY'
import collections, re
counts = collections.Counter(re.findall(r": (\w[\w ]*)$", open("mutation-results.txt").read(), re.M))
print(dict(counts))
PY
