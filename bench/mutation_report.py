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

# (function the mutant is in or None for any, pattern on the mutated line, pattern the original line must match
# too or None, reason)
DEVICE = ("the tensors are on the CPU already, where CI runs (device placement is checked on a GPU by "
          "bench/gpu_checks.py)")
EQUIVALENT = [
    ("loss", r"labels\.to\(None\)", None,
     "mse_loss promotes the integer labels to the input's float type: the same loss and gradient (checked)"),
    (None, r"float\(\"-?INF\"\)", None, "float() reads 'inf' in any case"),
    ("pool", r"lengths\[:, None\]\.to\(None\)", None,
     "dividing the float sum by the integer lengths promotes them: the same float mean"),
    ("pool", r"self\.pooling == \"(XXlastXX|LAST)\"", None,
     "'last' pooling then takes the general path, whose 'last' part is the final state itself: the same output"),
    ("read_document_lm", r"net\.get\(\"_target_\", (None|\"XXXX\"|)\)", None,
     "a network without a _target_ is refused either way: 'None', 'XXXX' and '' do not end with 'RNNLM'"),
    (None, r"device=None|\.to\(None\)|torch\.arange\(.*, \)|torch\.tensor\(\[n\], \)|torch\.zeros\(\(\), \)",
     r"device|\.to\(", DEVICE),
    (None, r"map_location=None|torch\.load\(path, weights_only=True\)", r"map_location=\"cpu\"", DEVICE),
    (None, r"move_state\((state|s), None\)", None, DEVICE),
    (None, r"tarfile\.open\(archive, \)", None, "tarfile.open's default mode is 'r:*', the mode it was given"),
    (None, r"top_k <= logits\.size", None, "top_k equal to the vocabulary masks nothing either way"),
    (None, r"strategy: str = \"(XXmultinomialXX|MULTINOMIAL)\"", None,
     "choose() only looks for 'argmax'; any other default samples the same way"),
    (None, r"\.item\(\) <= 0\.95", None, "a continuous draw equals 0.95 with probability 0"),
    (None, r"multinomial\(probs, 2, generator=generator\)\[:, 0\]", None,
     "torch.multinomial races one exponential per category, so the first of two draws is the one draw, from the "
     "same random numbers (checked: equal over consecutive calls)"),
    ("load_checkpoint", r"require_rnnlab=None", None, "None and False are both false where the flag is read"),
    ("_run", r"enforce_sorted=None", None, "pack_padded_sequence reads the flag by truth: None sorts, as False"),
    ("init_weights", r"strict=None", None, "load_state_dict reads the flag by truth: None is lenient, as False"),
    ("digest_of", r"f\.read\(None\)", None, "reading the whole file at once gives the same digest"),
    (None, r"digest_of\(path, \"SHA256\"\)", None, "hashlib.new accepts algorithm names in any case"),
    ("xǁBPTTStreamǁ__init__", r"seed: int = 1,", None,
     "the default seed is never used with varied lengths (the DataModule passes the run's seed); fixed lengths "
     "draw nothing"),
    ("xǁBPTTStreamǁlengths", r"manual_seed\(self\.seed \* (100_003 - epoch|100004 \+ epoch)\)", None,
     "another one-to-one mix of (seed, epoch): other random lengths, equally distributed, still a function of "
     "seed and epoch alone"),
    ("training_step", r"batch\[1\]\.size\(1\)", None, "inputs and targets have the same shape"),
]
# functions whose -1 axis is the last of a 2-D tensor, so +1 names the same axis
TWO_D = {"x_choose": "logits are (batch, vocab)", "prob_positive": "logits are (rows, 2)",
         "xǁFusedCrossEntropyǁforward": "logits are (rows, vocab)",
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
    for function, mutated, original, reason in EQUIVALENT:
        if (function is None or f"{function}__mutmut_" in name) and re.search(mutated, new) \
                and (original is None or re.search(original, old)):
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
