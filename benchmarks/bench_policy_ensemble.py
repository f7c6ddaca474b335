"""What several policies cost a routing decision: one policy, three member by member, three stacked.

    ENTROROUTER_THREADS=1 .venv/bin/python benchmarks/bench_policy_ensemble.py [--out FILE.md]

A router with ``policy_seeds: 3`` (the default) routes with the mean of three policies'
logits. :class:`~entrorouter.policy.weights.PolicyEnsemble` computes them stacked (one
matrix product per layer for all members); this measures that against one policy and
against the three computed one after another, side by side in one process, on one query
(what the gateway pays per request) and on a batch of 64; and what each further λ costs a
sweep, which computes the first layer's λ-free part once per query
(:meth:`~entrorouter.policy.weights.PolicyEnsemble.first_layer`). Policies of the default shape
(two hidden layers of 256) for an 11-model pool fed MiniLM's 384-dimensional embedding with
the capability and cost estimates; random weights, as the arithmetic does not depend on them.
Reports medians of 2,000 calls (200 for the batch) after a warm-up, and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from entrorouter.data.atomic import write_text_atomic
from entrorouter.policy.weights import PolicyEnsemble, PolicyWeights, policy_input_dim
from entrorouter.router.config import TrainConfig
from entrorouter.threads import chosen_threads, limit_threads

EMBEDDING_DIM, N_MODELS = 384, 11


def random_policy(rng: np.random.Generator, config: TrainConfig) -> PolicyWeights:
    def layer(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        weight = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
        return weight.astype(np.float32), (rng.standard_normal(n_out) * 0.1).astype(np.float32)

    width = policy_input_dim(EMBEDDING_DIM, N_MODELS, config.policy_input) + 2
    hidden = []
    for _ in range(config.n_layers):
        hidden.append(layer(config.hidden, width))
        width = config.hidden
    return PolicyWeights(tuple(hidden), layer(N_MODELS, width), config.lam_min, config.lam_max)


def median_seconds(logits: Callable[..., np.ndarray], inputs: tuple[np.ndarray, ...], repeats: int) -> float:
    for _ in range(repeats // 10):
        logits(*inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        logits(*inputs)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/policy_ensemble.md"))
    args = parser.parse_args()
    limit_threads(chosen_threads())
    load_before = os.getloadavg()[0]
    config = TrainConfig()
    rng = np.random.default_rng(0)
    members = tuple(random_policy(rng, config) for _ in range(config.policy_seeds))
    lone, stacked = PolicyEnsemble(members[:1]), PolicyEnsemble(members)

    def one_by_one(x: np.ndarray, lam: np.ndarray, anchor: np.ndarray) -> np.ndarray:
        return np.mean([member.logits(x, lam) for member in members], axis=0) + anchor

    rows = []
    for n, repeats in ((1, 2000), (64, 200)):
        x = rng.standard_normal((n, members[0].in_dim)).astype(np.float32)
        lam = np.full(n, 0.1, dtype=np.float32)
        anchor = rng.standard_normal((n, N_MODELS)).astype(np.float32)
        inputs = (x, lam, anchor)
        np.testing.assert_allclose(stacked.logits(*inputs), one_by_one(*inputs), rtol=1e-4, atol=1e-5)
        timings = {
            "one policy": median_seconds(lone.logits, inputs, repeats),
            f"{len(members)} member by member": median_seconds(one_by_one, inputs, repeats),
            f"{len(members)} stacked": median_seconds(stacked.logits, inputs, repeats),
            f"{len(members)} stacked, each further λ": median_seconds(
                stacked.logits_from, (stacked.first_layer(x), lam, anchor), repeats
            ),
        }
        rows.append((n, timings))
    load_after = os.getloadavg()[0]

    names = list(rows[0][1])
    lines = [
        "# Policy ensemble: routing arithmetic per call",
        "",
        f"Command: `ENTROROUTER_THREADS=1 .venv/bin/python benchmarks/bench_policy_ensemble.py` "
        f"({chosen_threads()} thread(s), 1-minute load {load_before:.2f} at the start, {load_after:.2f} at the end). "
        "The policy MLP only (f_θ's logits plus the anchor), medians; see the script's doc.",
        "",
        "| queries per call | " + " | ".join(f"{name} (µs)" for name in names) + " | stacked / one policy |",
        "|---" * (len(names) + 2) + "|",
    ]
    for n, timings in rows:
        values = " | ".join(f"{timings[name] * 1e6:,.1f}" for name in names)
        lines.append(f"| {n} | {values} | {timings[names[2]] / timings[names[0]]:.2f}x |")
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
