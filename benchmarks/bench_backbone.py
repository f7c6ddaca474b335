"""Does fine-tuning the encoder end to end (``minilm-ft``) help EntroRouter? Validation only.

    ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data nice -n 10 \\
        .venv/bin/python benchmarks/bench_backbone.py --max-seconds 1200

On the RouterBench subset (the smallest public table) the train split is cut, with the
seed, into 80% for fitting and 20% held out; the test split is never loaded. `Benchmark`
(which itself carves its operating-point validation from the 80%) fits EntroRouter on the
frozen ``minilm`` features and EntroRouter with its own fine-tuned encoder
(``entrorouter_ft``, fine-tune limited to ``--max-seconds``), plus the kNN and MLP
baselines for context, and reports each one's AIQ and chosen point on the held-out 20%.
Writes ``benchmarks/results/backbone.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from entrorouter.baselines.base import REGISTRY
from entrorouter.baselines.routers import EntroRouterFineTuned
from entrorouter.data.datasets import load_source
from entrorouter.evaluation.benchmark import Benchmark, BenchmarkConfig
from entrorouter.threads import apply_threads

DATASET = "routerbench_subset"
CONTEXT_ROUTERS = ("knn", "mlp", "entrorouter")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="time budget of the encoder fine-tune")
    parser.add_argument("--limit", type=int, help="use only this many train queries (a quick check of the script)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/backbone.md"))
    args = parser.parse_args()
    apply_threads()
    load_before, started_at = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    train = load_source(DATASET).split("train")
    if args.limit:
        train = train.subset(np.random.default_rng(args.seed).permutation(train.n_queries)[: args.limit])
    held_out = np.zeros(train.n_queries, dtype=bool)
    held_out[np.random.default_rng(args.seed).permutation(train.n_queries)[: train.n_queries // 5]] = True
    bench = Benchmark(
        train.subset(~held_out),
        train.subset(held_out),
        BenchmarkConfig(seed=args.seed, n_boot=200),
        dataset=DATASET,
        progress=lambda message: print(message, file=sys.stderr),
    )
    routers = {name: REGISTRY[name]() for name in CONTEXT_ROUTERS}
    ft_encoder = f"minilm-ft:max_seconds={args.max_seconds:g}"
    routers["entrorouter_ft"] = EntroRouterFineTuned(encoder=ft_encoder)
    rows = {}
    for name, router in routers.items():
        print(f"fitting {name}", file=sys.stderr)
        started = time.perf_counter()
        rows[name] = bench.evaluate_router(router)
        rows[name]["wall_seconds"] = time.perf_counter() - started
        print(f"{name}: AIQ {rows[name]['aiq']:.4f} in {rows[name]['wall_seconds']:.0f} s", file=sys.stderr)
    ft_log = routers["entrorouter_ft"].router.training_log
    done = next(r for r in ft_log if r.get("event") == "done")
    steps = [r for r in ft_log if str(r.get("stage", "")).startswith("backbone") and "loss" in r]
    budget_hit = any(r.get("event") == "time_budget" for r in ft_log)

    lines = [
        "# End-to-end fine-tuned backbone (minilm-ft) vs frozen MiniLM — validation only",
        "",
        f"Dataset {DATASET}: train split cut with seed {args.seed} into {int((~held_out).sum())} queries for fitting "
        f"and {int(held_out.sum())} held out (the test split is not loaded). `Benchmark` carves its own "
        "operating-point validation from the fitting part; all figures below are on the held-out part.",
        "",
        "Command (load average before/after in the last line):",
        "",
        "    ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data nice -n 10 \\",
        f"        .venv/bin/python benchmarks/bench_backbone.py --seed {args.seed} --max-seconds {args.max_seconds:g}"
        + (f" --limit {args.limit}" if args.limit else ""),
        "",
        "| router | encoder | AIQ (held out) | retained at chosen λ | cost red. at chosen λ | fit + sweep s |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        encoder = ft_encoder if name == "entrorouter_ft" else "minilm (frozen)"
        lines.append(
            f"| {name} | {encoder} | {row['aiq']:.4f} | {row['retained']:.1%} | {row['cost_reduction']:.1%} "
            f"| {row['wall_seconds']:.0f} |"
        )
    diff = rows["entrorouter_ft"]["aiq"] - rows["entrorouter"]["aiq"]
    lines += [
        "",
        f"AIQ difference, fine-tuned minus frozen EntroRouter: {diff:+.4f}.",
        "",
        f"Fine-tune: {len(steps)} optimiser steps in {done['seconds']:.0f} s "
        f"({'stopped by the time budget' if budget_hit else 'all epochs done'}), best fine-tune validation reward "
        f"{done['val_reward']:.4f}; adapters {done['cache_id']}.",
        "",
        f"Run {started_at} on {os.cpu_count()} cores shared with other jobs, ENTROROUTER_THREADS="
        f"{os.environ.get('ENTROROUTER_THREADS', 'unset')}; 1/5/15-min load average before "
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after {'/'.join(f'{x:.2f}' for x in os.getloadavg())}.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
