"""Generation speed at batch 1, in alternating rounds, for 1 and 2 threads: `sample()` as it was when the speed
issue was filed (commit 1985e81, frozen below: the full forward on a window of one step, `torch.multinomial`
under `no_grad`) against `sample()` now, on its single-step path and on its forward path.

The network has `charrnn_small`'s shape (2x256 LSTM over one-hot characters, 65 symbols) unless a
checkpoint is given; speed does not depend on the weights. Every path draws the same text for the same seed.

    python bench/generation_speed.py [--ckpt best.ckpt] [--length 2000] [--rounds 3] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from host import host_line  # bench/ is on sys.path when run as a script

from rnnlab.checkpoint import load_run
from rnnlab.models.lm import RNNLM
from rnnlab.sampling import sample

PATHS = ("before", "forward", "single-step")


@torch.no_grad()
def sample_before(net, prime: list[int], length: int, temperature: float, seed: int) -> torch.Tensor:
    """1985e81's `sample()` (multinomial draws, one sample), kept as the baseline."""
    generator = torch.Generator().manual_seed(seed)
    net.eval()
    logits, state = net(torch.tensor(prime)[None])
    out = []
    for t in range(length):
        probs = torch.softmax(logits[:, -1].float() / temperature, -1)
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)
        out.append(nxt)
        if t + 1 < length:
            logits, state = net(nxt[:, None], state)
    return torch.stack(out, 1)


def chars_per_second(net, length: int, path: str) -> tuple[float, list[int]]:
    start = time.perf_counter()
    if path == "before":
        ids = sample_before(net, [0], length, 0.8, 0)
    else:
        ids = sample(net, [0], length, temperature=0.8, seed=0, single_step=path == "single-step")
    return length / (time.perf_counter() - start), ids[0].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="a charrnn checkpoint; default: an untrained charrnn_small-shaped network")
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if args.ckpt:
        net = load_run(args.ckpt).model.net
    else:
        torch.manual_seed(0)
        net = RNNLM(65, [256, 256], "lstm", embedding_dim=None, dropout=0.2, init_scale=0.08)
    net.eval()
    print(host_line(), flush=True)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for path in PATHS:
            chars_per_second(net, 50, path)  # warm-up
        speeds = {path: [] for path in PATHS}
        for r in range(args.rounds):
            texts = {}
            for path in PATHS if r % 2 == 0 else PATHS[::-1]:
                speed, texts[path] = chars_per_second(net, args.length, path)
                speeds[path].append(speed)
            same = all(text == texts["before"] for text in texts.values())
            print(f"threads {threads} round {r + 1}: " + ", ".join(f"{p} {speeds[p][-1]:5.0f}" for p in PATHS)
                  + f" chars/s, same text: {same}", flush=True)
        for path, values in speeds.items():
            median = statistics.median(values)
            print(f"threads {threads} {path:12s} chars/s min {min(values):7.0f}  median {median:7.0f}"
                  f"  max {max(values):7.0f}")
        for path in PATHS[1:]:
            ratios = [now / before for now, before in zip(speeds[path], speeds["before"])]
            print(f"threads {threads} {path} / before: min {min(ratios):.2f}x  median {statistics.median(ratios):.2f}x"
                  f"  max {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
