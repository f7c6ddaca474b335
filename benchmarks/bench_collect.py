"""Benchmark `entrorouter collect` against instant fake backends on loopback.

Measures (query, model) calls per second through the whole collector — query loading,
HTTP with per-backend and global concurrency limits, grading (numeric), a SQLite commit
per pair, the progress bar, and writing the Parquet table — the calls per CPU-second of
the collector process (robust to other load on the machine) and its peak RSS.

The fake backend runs in its own process (so it does not share the collector's GIL);
each collect run also runs in a fresh process, so its peak RSS is its own.

    .venv/bin/python benchmarks/bench_collect.py                  # defaults below
    .venv/bin/python benchmarks/bench_collect.py --calls 20000 --repeats 5 --memory-calls 100000

Prints a Markdown table; results/collect.md holds the figures measured for the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {"m-strong": 0.9, "m-mid": 0.7, "m-weak": 0.4, "m-tiny": 0.2}


def write_inputs(folder: Path, n_queries: int, base_url: str, concurrency: int, per_backend: int) -> tuple[Path, Path]:
    queries = folder / "queries.jsonl"
    with queries.open("w", encoding="utf-8") as handle:
        for i in range(n_queries):
            a, b = 3 * i + 1, i % 97
            row = {"id": f"q{i}", "prompt": f"What is {a} + {b}?", "reference": str(a + b), "task": f"t{i % 5}"}
            handle.write(json.dumps(row) + "\n")
    pool = folder / "pool.yaml"
    lines = ["backends:"]
    for name in MODELS:
        lines.append(
            f"  - {{name: {name}, base_url: '{base_url}', max_concurrency: {per_backend}, "
            "price: {input: 1.0, output: 2.0}}"
        )
    lines += [f"concurrency: {concurrency}", "grader: numeric", "request: {temperature: 0, max_tokens: 64}"]
    pool.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return queries, pool


def run_once(queries: Path, pool: Path, out: Path) -> dict[str, float]:
    """One collect run in a fresh process; returns its timing and peak RSS."""
    command = [sys.executable, __file__, "_child", str(queries), str(pool), str(out)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(queries: str, pool: str, out: str) -> None:
    from rich.console import Console

    from entrorouter.collection.run import collect

    start = time.perf_counter()
    # A real console on stderr (the parent discards it): the progress bar's cost is included.
    result = collect(queries, pool, out, console=Console(stderr=True, force_terminal=True))
    seconds = time.perf_counter() - start
    assert result.complete, "every pair should succeed against the fake backends"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds of this process, imports included: the share of a core the collector needs,
    # whatever else competes for the machine.
    cpu_s = usage.ru_utime + usage.ru_stime
    print(
        json.dumps({"calls": result.counts.sent, "seconds": seconds, "cpu_s": cpu_s, "rss_mb": usage.ru_maxrss / 1024})
    )


def summary_row(name: str, runs: list[dict[str, float]]) -> str:
    rates = [r["calls"] / r["seconds"] for r in runs]
    per_cpu = statistics.median(r["calls"] / r["cpu_s"] for r in runs)
    rss = statistics.median(r["rss_mb"] for r in runs)
    return (
        f"| {name} | {int(runs[0]['calls'])} | {len(runs)} | {statistics.median(rates):.0f} | {min(rates):.0f} | "
        f"{max(rates):.0f} | {per_cpu:.0f} | {rss:.0f} |"
    )


def bench(args: argparse.Namespace) -> None:
    from entrorouter.testing.fake_backend import FakeBackend

    rows = []
    with FakeBackend(MODELS, subprocess=True, lifetime_s=3600) as fake, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        queries, pool = write_inputs(
            folder, args.calls // len(MODELS), fake.base_url, args.concurrency, args.per_backend
        )
        runs = []
        for i in range(args.repeats):
            runs.append(run_once(queries, pool, folder / f"out{i}.parquet"))
            print(f"throughput run {i + 1}: {runs[-1]}", file=sys.stderr)
        rows.append(summary_row("throughput", runs))
        for calls in (args.memory_calls // 10, args.memory_calls):
            inputs = write_inputs(folder, calls // len(MODELS), fake.base_url, args.concurrency, args.per_backend)
            result = run_once(*inputs, folder / f"memory{calls}.parquet")
            print(f"memory run {calls}: {result}", file=sys.stderr)
            rows.append(summary_row("memory", [result]))
        received = sum(fake.counts().values())
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    print(
        f"pool: {len(MODELS)} models on one fake server process; concurrency {args.concurrency}, "
        f"max_concurrency {args.per_backend} per backend; the fake server received {received} calls"
    )
    print()
    print("| run | calls | runs | calls/s (median) | min | max | calls per collector CPU-second | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per throughput run")
    parser.add_argument("--repeats", type=int, default=5, help="throughput runs (the median is reported)")
    parser.add_argument("--memory-calls", type=int, default=100_000, help="calls of the large memory run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--per-backend", type=int, default=16)
    bench(parser.parse_args())


if __name__ == "__main__":
    main()
