"""What one training step costs with torch's own dropout and AdamW, and with the project's.

    ENTROROUTER_THREADS=1 .venv/bin/python benchmarks/bench_training_step.py [--out FILE.md]

Every net here trains on the CPU. Torch's CPU dropout draws its mask element by element from
a Mersenne Twister, and its default AdamW loops over the tensors in Python; the project's
:class:`~entrorouter.policy.mlp.Dropout` draws the mask with NumPy's PCG64 and
:func:`~entrorouter.policy.mlp.adamw` uses torch's fused kernel. This times one step
(forward in training mode, backward, optimiser step) of the two nets that take most of a
fit, each built both ways from the same initial weights, alternated in rounds in one
process: the routing policy (default shape, MiniLM's 384 dimensions plus capability and
cost estimates for 29 models, batches of 512) and a success net (hidden 256, dropout 0.2,
batches of 256). Random data: the arithmetic does not depend on it. Medians of the rounds.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from entrorouter.data.atomic import write_text_atomic
from entrorouter.policy.mlp import Dropout, RoutingPolicy, adamw
from entrorouter.policy.weights import policy_input_dim
from entrorouter.router.config import TrainConfig
from entrorouter.threads import chosen_threads, limit_threads
from entrorouter.training.nets import SuccessNet

EMBEDDING_DIM, N_MODELS = 384, 29


def with_torch_dropout(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose dropout layers are torch's own, same probability."""
    net = copy.deepcopy(net)
    for module in net.modules():
        for name, child in module.named_children():
            if isinstance(child, Dropout):
                setattr(module, name, nn.Dropout(child.p))
    return net


def step_seconds(net: nn.Module, optimizer: torch.optim.Optimizer, inputs: tuple, steps: int) -> float:
    """Mean seconds per step over ``steps`` steps."""
    started = time.perf_counter()
    for _ in range(steps):
        loss = net(*inputs).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def compare(ours: nn.Module, inputs: tuple, lr: float, rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per step of torch's dropout + default AdamW and of the project's, alternated."""
    theirs = with_torch_dropout(ours)
    nets = {
        "torch": (theirs, torch.optim.AdamW(theirs.parameters(), lr=lr, weight_decay=1e-4)),
        "entrorouter": (ours, adamw(ours.parameters(), lr=lr, weight_decay=1e-4)),
    }
    times: dict[str, list[float]] = {name: [] for name in nets}
    for net, optimizer in nets.values():
        net.train()
        step_seconds(net, optimizer, inputs, steps // 5)  # warm-up
    for _ in range(rounds):
        for name, (net, optimizer) in nets.items():
            times[name].append(step_seconds(net, optimizer, inputs, steps))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training_step.md"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100, help="steps per round and net")
    args = parser.parse_args()
    limit_threads(chosen_threads())
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    config = TrainConfig()
    in_dim = policy_input_dim(EMBEDDING_DIM, N_MODELS, config.policy_input)
    policy = RoutingPolicy(in_dim, N_MODELS, hidden=config.hidden, n_layers=config.n_layers, dropout=config.dropout)
    nn.init.normal_(policy.head.weight, std=0.01)  # a zero head would leave the body without gradients
    success = SuccessNet(EMBEDDING_DIM, N_MODELS, hidden=256, dropout=0.2)
    rows = {
        "routing policy, batch 512": compare(
            policy, (torch.randn(512, in_dim), torch.rand(512)), config.rl_lr, args.rounds, args.steps
        ),
        "success net, batch 256": compare(success, (torch.randn(256, EMBEDDING_DIM),), 1e-3, args.rounds, args.steps),
    }
    load_after = os.getloadavg()[0]
    lines = [
        "# One training step: torch's dropout and AdamW against the project's",
        "",
        f"Command: `ENTROROUTER_THREADS=1 .venv/bin/python benchmarks/bench_training_step.py` "
        f"({chosen_threads()} thread(s), 1-minute load {load_before:.2f} at the start, {load_after:.2f} at the end; "
        f"medians of {args.rounds} alternated rounds of {args.steps} steps). See the script's doc.",
        "",
        "| net | torch's dropout + AdamW (ms/step) | NumPy dropout + fused AdamW (ms/step) | saved |",
        "|---|---|---|---|",
    ]
    for name, timing in rows.items():
        saved = 1 - timing["entrorouter"] / timing["torch"]
        lines.append(f"| {name} | {timing['torch'] * 1e3:.2f} | {timing['entrorouter'] * 1e3:.2f} | {saved:.0%} |")
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
