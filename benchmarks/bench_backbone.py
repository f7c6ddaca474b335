"""Does fine-tuning the encoder end to end (``minilm-ft``) help EntroRouter? Validation only.

    ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data nice -n 10 \\
        .venv/bin/python benchmarks/bench_backbone.py --dataset mmlu_pro --max-seconds 900

On a public dataset the train split is cut, with the seed, into 80% for fitting and 20%
held out; the test split is never loaded. Each router is fitted once on the 80%:
EntroRouter on the frozen ``minilm`` features, EntroRouter with its own fine-tuned encoder
(``entrorouter_ft``, fine-tune limited to ``--max-seconds``), and the kNN and MLP baselines
for context. The report gives each one's AIQ on the held-out 20%, and the AIQ difference of
the fine-tuned router to the frozen one and to the best baseline with its 95% paired
bootstrap interval: the evidence for whether ``minilm-ft`` may become the default (it
must win here, DESIGN §3.6 b). Writes ``<out>/<dataset>.md``.
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
from entrorouter.data.atomic import write_text_atomic
from entrorouter.data.datasets import BENCHMARK_DATASETS, load_source
from entrorouter.evaluation.benchmark import Benchmark, BenchmarkConfig, aiq_difference_ci
from entrorouter.threads import apply_threads

CONTEXT_ROUTERS = ("knn", "mlp", "entrorouter")
N_BOOT = 1000


def fmt_ci(comparison: dict) -> str:
    low, high = comparison["ci"]
    return f"{comparison['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=BENCHMARK_DATASETS, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="time budget of the encoder fine-tune")
    parser.add_argument("--limit", type=int, help="use only this many train queries (a quick check of the script)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/backbone"))
    args = parser.parse_args()
    apply_threads()
    load_before, started_at = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run_started = time.perf_counter()

    train = load_source(args.dataset).split("train")
    if args.limit:
        train = train.subset(np.random.default_rng(args.seed).permutation(train.n_queries)[: args.limit])
    held_out = np.zeros(train.n_queries, dtype=bool)
    held_out[np.random.default_rng(args.seed).permutation(train.n_queries)[: train.n_queries // 5]] = True
    bench = Benchmark(
        train.subset(~held_out),
        train.subset(held_out),
        BenchmarkConfig(seed=args.seed),
        dataset=args.dataset,
        progress=lambda message: print(message, file=sys.stderr),
    )
    ft_encoder = f"minilm-ft:max_seconds={args.max_seconds:g}"
    routers = {name: REGISTRY[name]() for name in CONTEXT_ROUTERS}
    routers["entrorouter_ft"] = EntroRouterFineTuned(encoder=ft_encoder)
    everything = np.ones(bench.train.table.n_queries, dtype=bool)
    sweeps, aiqs, seconds = {}, {}, {}
    for name, router in routers.items():
        print(f"fitting {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        router.fit(bench.context(everything))
        sweeps[name] = bench.sweep(router, bench.test)
        seconds[name] = time.perf_counter() - started
        aiqs[name] = bench.curve_metrics(sweeps[name])["aiq"]
        print(f"{name}: AIQ {aiqs[name]:.4f} in {seconds[name]:.0f} s", file=sys.stderr)
    best_baseline = max(("knn", "mlp"), key=aiqs.__getitem__)
    vs_frozen = aiq_difference_ci(sweeps["entrorouter_ft"], sweeps["entrorouter"], bench.ref, n_boot=N_BOOT, seed=0)
    vs_best = aiq_difference_ci(sweeps["entrorouter_ft"], sweeps[best_baseline], bench.ref, n_boot=N_BOOT, seed=0)

    ft_log = routers["entrorouter_ft"].router.training_log
    done = next(r for r in ft_log if r.get("event") == "done")
    steps = [r for r in ft_log if str(r.get("stage", "")).startswith("backbone") and "loss" in r]
    epochs = {r["epoch"] for r in steps}
    budget_hit = any(r.get("event") == "time_budget" for r in ft_log)
    command = (
        f".venv/bin/python benchmarks/bench_backbone.py --dataset {args.dataset} --seed {args.seed} "
        f"--max-seconds {args.max_seconds:g}" + (f" --limit {args.limit}" if args.limit else "")
    )
    lines = [
        f"# End-to-end fine-tuned backbone (minilm-ft) vs frozen MiniLM on {args.dataset} — validation only",
        "",
        f"The train split is cut with seed {args.seed} into {int((~held_out).sum())} queries for fitting and "
        f"{int(held_out.sum())} held out (the test split is not loaded). Each router is fitted once on the "
        "fitting part; AIQ is measured on the held-out part.",
        "",
        "Command (load average before/after in the last line):",
        "",
        f"    ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data nice -n 10 {command}",
        "",
        "| router | encoder | AIQ (held out) | fit + sweep s |",
        "|---|---|---|---|",
    ]
    for name in routers:
        encoder = ft_encoder if name == "entrorouter_ft" else "minilm (frozen)"
        lines.append(f"| {name} | {encoder} | {aiqs[name]:.4f} | {seconds[name]:.0f} |")
    lines += [
        "",
        "AIQ difference of the fine-tuned EntroRouter, with its 95% paired-bootstrap interval "
        f"({N_BOOT} resamples of the held-out queries):",
        "",
        f"- minus frozen EntroRouter: {fmt_ci(vs_frozen)}",
        f"- minus the best baseline here ({best_baseline}): {fmt_ci(vs_best)}",
        "",
        f"Fine-tune: {len(steps)} optimiser steps over {len(epochs)} epoch(s) in {done['seconds']:.0f} s "
        f"({'stopped by the time budget' if budget_hit else 'all epochs done'}), best fine-tune validation reward "
        f"{done['val_reward']:.4f}; adapters {done['cache_id']}.",
        "",
        f"Run {started_at}, {time.perf_counter() - run_started:.0f} s in all, on {os.cpu_count()} cores, "
        f"ENTROROUTER_THREADS={os.environ.get('ENTROROUTER_THREADS', 'unset')}; 1/5/15-min load average before "
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after {'/'.join(f'{x:.2f}' for x in os.getloadavg())}.",
    ]
    write_text_atomic(args.out / f"{args.dataset}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
