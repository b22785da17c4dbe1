"""Checks that need a GPU (run where one is lent; CI has none): `pack=auto` packs on CUDA, and packed
recurrent layers give the unpacked (and CPU) outputs, forward and backward, every cell, both directions.

    python bench/gpu_checks.py
"""

from __future__ import annotations

import copy

import torch

from rnnlab.models.padded import PaddedRNN
from rnnlab.tasks.sentiment import packs


def main() -> None:
    assert torch.cuda.is_available(), "needs a CUDA device"
    cuda = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"pack=auto on cuda packs: {packs('auto', cuda)}; on cpu: {packs('auto', torch.device('cpu'))}")
    torch.manual_seed(0)
    lengths = torch.tensor([17, 3, 11, 1, 17, 8])
    for cell in ("lstm", "gru", "rnn_tanh"):
        for bidirectional in (False, True):
            cpu_net = PaddedRNN(cell, 5, 7, num_layers=2, bidirectional=bidirectional).double()
            gpu_net = copy.deepcopy(cpu_net).to(cuda)
            x = torch.randn(6, 17, 5, dtype=torch.double)
            ref_out, ref_last = cpu_net(x, lengths, pack=False)
            ref_out.sum().backward()
            worst = 0.0
            for pack in (True, False):
                gpu_net.zero_grad()
                out, last = gpu_net(x.to(cuda), lengths, pack=pack)
                out.sum().backward()
                worst = max(worst, (out.cpu() - ref_out).abs().max().item(), (last.cpu() - ref_last).abs().max().item())
                for p, q in zip(gpu_net.parameters(), cpu_net.parameters()):
                    worst = max(worst, (p.grad.cpu() - q.grad).abs().max().item())
            status = "ok" if worst < 1e-10 else "MISMATCH"
            print(f"{cell:8s} bidirectional={bidirectional!s:5s} packed & unpacked on cuda vs cpu: "
                  f"max abs diff {worst:.2e} (outputs, final states, gradients, float64) {status}")


if __name__ == "__main__":
    main()
