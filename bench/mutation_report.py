"""The per-mutant table of a mutmut run: every surviving (or untested) mutant with its one-line change and a
verdict, equivalent mutants with the reason, and the kill rate over the non-equivalent ones.

    mutmut results --all true > mutation-results.txt     # after bash bench/mutation.sh
    python bench/mutation_report.py mutation-results.txt > docs/mutation-survivors.md

A mutant counts as equivalent only under a rule below, each naming why no test can tell it from the code;
everything else that survives is a gap.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys

# (pattern on the mutated line, pattern the original line must match too, reason)
EQUIVALENT = [
    (r"float\(\"-?INF\"\)", None, "float() reads 'inf' in any case"),
    (r"device=None|\.to\(None\)|torch\.arange\([^)]*, \)", r"device|\.to\(",
     "the tensors are on the CPU already, where CI runs (device placement is checked on a GPU by bench/gpu_checks.py)"),
    (r"tarfile\.open\(archive, \)", None, "tarfile.open's default mode is 'r:*', the mode it was given"),
    (r"top_k <= logits\.size", None, "top_k equal to the vocabulary masks nothing either way"),
    (r"strategy: str = \"(XXmultinomialXX|MULTINOMIAL)\"", None,
     "choose() only looks for 'argmax'; any other default samples the same way"),
    (r"\.item\(\) <= 0\.95", None, "a continuous draw equals 0.95 with probability 0"),
    (r"multinomial\(probs, 2, generator=generator\)\[:, 0\]", None,
     "torch.multinomial races one exponential per category, so the first of two draws is the one draw, from the "
     "same random numbers (checked: equal over consecutive calls)"),
    (r".", r"multinomial\(probs\.cpu\(\)", "the line for logits on a GPU; CPU logits return on the line above"),
]
# functions whose -1 axis is the last of a 2-D tensor, so +1 names the same axis
TWO_D = {"x_choose": "logits are (batch, vocab)", "prob_positive": "logits are (rows, 2)",
         "xǁPaddedRNNǁforward": "the concatenated states are (batch, hidden)"}


def cell(text: str) -> str:
    return "`" + text.replace("|", "\\|")[:90] + "`" if text else ""


def diff(name: str) -> tuple[str, str]:
    """The original and the mutated line of mutant `name` (first changed line of each)."""
    lines = subprocess.run(["mutmut", "show", name], capture_output=True, text=True).stdout.splitlines()

    def first(sign: str) -> str:
        return next((line[1:].strip() for line in lines if line.startswith(sign) and not line.startswith(sign * 3)), "")

    return first("-"), first("+")


def verdict(name: str, old: str, new: str) -> str | None:
    """The reason `name` is equivalent, or None."""
    for mutated, original, reason in EQUIVALENT:
        if re.search(mutated, new) and (original is None or re.search(original, old)):
            return reason
    for function, shape in TWO_D.items():
        if function in name and re.search(r"\(\+1\)|dim=\+1|, \+1\)", new) and re.search(r"-1", old):
            return f"-1 and +1 are the same axis: {shape}"
    return None


def main() -> None:
    with open(sys.argv[1]) as lines:
        results = [line.strip().rsplit(": ", 1) for line in lines if ": " in line]
    status = {name: state for name, state in results}
    counts = collections.Counter(status.values())
    rows, equivalent = [], 0
    for name, state in sorted(status.items()):
        if state not in ("survived", "no tests"):
            continue
        old, new = diff(name)
        reason = verdict(name, old, new)
        equivalent += reason is not None
        rows.append((name.removeprefix("rnnlab."), state, old, new, reason))
    killed = counts["killed"] + counts["timeout"]
    total = sum(counts.values())
    rate = killed / max(1, total - equivalent - counts["not checked"])
    print(f"mutants {total}: killed {counts['killed']}, timed out {counts['timeout']}, survived {counts['survived']}, "
          f"no tests {counts['no tests']}, not checked {counts['not checked']}; equivalent (below) {equivalent}; "
          f"killed or timed out {rate:.1%} of the non-equivalent "
          "checked ones\n")
    print("| mutant | status | original | mutated | verdict |")
    print("|---|---|---|---|---|")
    for name, state, old, new, reason in rows:
        print(f"| {name} | {state} | {cell(old)} | {cell(new)} | {'equivalent: ' + reason if reason else 'gap'} |")


if __name__ == "__main__":
    main()
