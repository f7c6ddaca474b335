"""Embedding throughput by torch thread count, and what the default picks (issue 11 §3).

    ENTROROUTER_DATA_DIR=../shared/data nice -n 10 .venv/bin/python benchmarks/bench_threads.py \
        [--queries 64] [--rounds 3] [--out benchmarks/results/threads.md]

On a 2-core machine shared with other work, two threads per process were measured ~30x
slower than one (oversubscribed cores: each thread waits for the other at every op). This
measures MiniLM embedding of the first N MMLU-Pro test questions (no cache; the model is loaded once) with 1
thread and with every core, alternating the two ``--rounds`` times so both see the same
load, and records the 1-minute load average before and after, the medians, their ratio,
and the count :func:`entrorouter.threads.default_threads` chooses for that load. Run it
once on an idle machine and once on a busy one; each run appends a section to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from entrorouter.data.datasets import load_source
from entrorouter.features.encoders import Encoder, make_encoder
from entrorouter.threads import default_threads


def embed_rate(encoder: Encoder, texts: list[str], threads: int) -> float:
    torch.set_num_threads(threads)
    started = time.perf_counter()
    encoder.encode(texts)
    return len(texts) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/threads.md"))
    args = parser.parse_args()
    table = load_source("mmlu_pro").split("test")
    texts = [str(q) for q in table.queries[: args.queries]]
    cores = os.cpu_count() or 1
    load_start = os.getloadavg()[0]
    chosen = default_threads(cores, load_start)
    encoder = make_encoder("minilm")
    encoder.encode(texts[:8])  # load the model once, warm up
    rates: dict[int, list[float]] = {1: [], cores: []}
    for _ in range(args.rounds):
        for threads in rates:
            rates[threads].append(embed_rate(encoder, texts, threads))
    load_end = os.getloadavg()[0]
    one, every = statistics.median(rates[1]), statistics.median(rates[cores])
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {cores} cores, "
        f"load average {load_start:.1f} -> {load_end:.1f}",
        "",
        f"MiniLM (`minilm`), {len(texts)} MMLU-Pro test questions, no cache (model loaded once); "
        f"median of {args.rounds} alternating rounds.",
        "",
        "| threads | queries/s (median) | rounds |",
        "|---|---|---|",
        f"| 1 | {one:.1f} | {', '.join(f'{r:.1f}' for r in rates[1])} |",
        f"| {cores} | {every:.1f} | {', '.join(f'{r:.1f}' for r in rates[cores])} |",
        "",
        f"1 thread / {cores} threads = {one / every:.2f}x. The default at the starting load picks {chosen} thread(s).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    header = "# Torch threads under load\n\nMade by `benchmarks/bench_threads.py` (see its docstring).\n\n"
    previous = args.out.read_text() if args.out.exists() else header
    args.out.write_text(previous + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
