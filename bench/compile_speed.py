"""`torch.compile` on CPU for the whole PTB training step (network + loss, forward and backward), against eager.

One plain PyTorch loop trains the `task=ptb` network (ptb_small by default) on the same BPTT batches, once eager and
once with the step's forward (embedding, LSTM, decoder, cross-entropy) compiled; AOTAutograd compiles its backward.
Rounds alternate the order (eager first in odd rounds); compilation happens before the timed rounds. Also checks
that the compiled loss equals the eager one on the first batch.

    python bench/compile_speed.py [--batches 100] [--rounds 3] [--cells lstm,gru] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rnnlab import CONF_DIR
from rnnlab.cli import silence_known_warnings
from rnnlab.models.recurrent import detach_state


def make_step(net):
    def step(inputs, targets, state):
        logits, state = net(inputs, state)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1)), state

    return step


def run(step, net, batches, clip: float, lr: float) -> float:
    """Tokens per second over `batches` (after the first 3, a warm-up)."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    state, tokens, start = None, 0, None
    for i, (x, y) in enumerate(batches):
        if i == 3:
            start, tokens = time.perf_counter(), 0
        loss, state = step(x, y, detach_state(state))
        opt.zero_grad(set_to_none=True)
        (loss * x.size(1)).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        tokens += y.numel()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", default="lstm")
    args, overrides = parser.parse_known_args()
    silence_known_warnings()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["task=ptb", *overrides])
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    loader = datamodule.stream("train", cfg.data.batch_size)
    batches = [b for _, b in zip(range(args.batches + 3), loader)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.batches} batches of "
          f"{tuple(batches[0][0].shape)}")
    for cell in args.cells.split(","):
        torch.manual_seed(0)
        eager_net = instantiate(cfg.model.net, vocab_size=len(datamodule.vocab), cell=cell)
        compiled_net = copy.deepcopy(eager_net)
        eager, compiled = make_step(eager_net), torch.compile(make_step(compiled_net))
        x, y = batches[0]
        start = time.perf_counter()
        with torch.no_grad():
            same = torch.allclose(eager(x, y, None)[0], compiled(x, y, None)[0], rtol=1e-5, atol=1e-6)
        for _ in range(2):  # compile the training graphs (first window without state, then with)
            run(compiled, compiled_net, batches[:5], cfg.trainer.gradient_clip_val, 1.0)
        print(f"{cell}: compiled in {time.perf_counter() - start:.0f} s; same loss as eager: {same}")
        ratios = []
        for r in range(args.rounds):
            order = [("eager", eager, eager_net), ("compiled", compiled, compiled_net)]
            rates = {name: run(step, net, batches, cfg.trainer.gradient_clip_val, 1.0)
                     for name, step, net in (order if r % 2 == 0 else order[::-1])}
            ratios.append(rates["compiled"] / rates["eager"])
            print(f"  round {r + 1}: eager {rates['eager']:,.0f} tokens/s, compiled {rates['compiled']:,.0f} "
                  f"tokens/s, ratio {ratios[-1]:.3f}", flush=True)
        print(f"{cell}: compiled / eager min {min(ratios):.3f} median {statistics.median(ratios):.3f} "
              f"max {max(ratios):.3f}")


if __name__ == "__main__":
    main()
