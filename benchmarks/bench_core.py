"""Speed and memory of the core (issue 2 targets), on MMLU-Pro from $ENTROROUTER_DATA_DIR.

    ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_core.py [--out benchmarks/results/core.md]

Measures, in one process, side by side:
  1. MiniLM embedding throughput with 1 vs 2 torch threads (1,000 MMLU-Pro queries, cold),
     and of the unmodified model (``minilm-full``) with 1 thread;
  2. embedding all 12,032 MMLU-Pro queries cold (empty cache) with the faster setting;
  3. training with the default TrainConfig (both stages and the 5-fold calibration curve,
     seed 0) on the MMLU-Pro train split (9,623 queries x 29 models) from cached
     embeddings, and one fit without the curve beside it;
  4. batched routing throughput from cached embeddings (test split, median of 5 runs);
  5. single-query `Router.route` latency including the embedding, after load (p50/p99), on
     MMLU-Pro test questions and on the same questions cut to 80 characters;
  6. peak resident memory of this process.
Targets (2-core machine): (2) <= 180 s, (3) <= 60 s, (4) >= 2,000 queries/s, (5) p50 <= 15 ms,
(6) <= 2 GB. Results are written as Markdown (with the machine's load) and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from entrorouter.data.atomic import write_text_atomic
from entrorouter.data.datasets import load_source
from entrorouter.features.cache import EmbeddingCache
from entrorouter.features.encoders import make_encoder
from entrorouter.router import Router
from entrorouter.router.config import TrainConfig

TARGETS = {
    "embed_cold_seconds": ("<=", 180.0),
    "train_seconds": ("<=", 60.0),
    "batched_queries_per_second": (">=", 2000.0),
    "route_p50_ms": ("<=", 15.0),
    "peak_rss_mb": ("<=", 2048.0),
}


def embed_rate(texts: list[str], threads: int, encoder_name: str = "minilm") -> float:
    torch.set_num_threads(threads)
    encoder = make_encoder(encoder_name)
    encoder.encode(texts[:32])  # load the model, warm up
    started = time.perf_counter()
    encoder.encode(texts)
    return len(texts) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/core.md"))
    args = parser.parse_args()
    table = load_source("mmlu_pro")
    train, test = table.split("train"), table.split("test")
    texts = [str(q) for q in table.queries]
    results: dict[str, float | int | str] = {"load_average_start": os.getloadavg()[0]}

    rates = {n: embed_rate(texts[:1000], n) for n in (1, 2)}
    results["embed_rate_1_thread"], results["embed_rate_2_threads"] = rates[1], rates[2]
    results["embed_rate_full_model_1_thread"] = embed_rate(texts[:1000], 1, "minilm-full")
    threads = max(rates, key=rates.get)
    results["threads"] = threads
    torch.set_num_threads(threads)
    print(f"embedding: {rates[1]:.0f}/s with 1 thread, {rates[2]:.0f}/s with 2; using {threads}", flush=True)

    with tempfile.TemporaryDirectory() as cold:
        cache = EmbeddingCache(cold)
        encoder = make_encoder("minilm")
        started = time.perf_counter()
        features = cache.embed(encoder, texts)
        results["embed_cold_seconds"] = time.perf_counter() - started
    print(f"cold embedding of {len(texts)} queries: {results['embed_cold_seconds']:.1f}s", flush=True)
    by_text = dict(zip(texts, features, strict=True))
    train_x = np.stack([by_text[str(q)] for q in train.queries])
    test_texts = [str(q) for q in test.queries]
    test_x = np.stack([by_text[t] for t in test_texts])

    started = time.perf_counter()
    router = Router(TrainConfig(seed=0)).fit(train, features=train_x)
    results["train_seconds"] = time.perf_counter() - started
    print(f"training on {train.n_queries} x {train.n_models}: {results['train_seconds']:.1f}s", flush=True)
    # The default includes the cross-fitted calibration curve (K more fits); one fit of both
    # stages alone, at the λ that curve chose, is what the 60 s target was first set for.
    started = time.perf_counter()
    Router(TrainConfig(seed=0, calibration_folds=0, lam=router.lam)).fit(train, features=train_x)
    results["train_one_fit_seconds"] = time.perf_counter() - started
    print(f"one fit without the calibration curve: {results['train_one_fit_seconds']:.1f}s", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        router.save(folder)
        router = Router.load(folder)
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            router.rank(router.inputs(test_x, test_texts))
            runs.append(time.perf_counter() - started)
        results["batched_queries_per_second"] = len(test_texts) / statistics.median(runs)
        router.route(test_texts[:3])  # warm up the encoder
        latencies = []
        for text in test_texts[:300]:
            started = time.perf_counter()
            router.route([text])
            latencies.append(1000 * (time.perf_counter() - started))
        results["route_p50_ms"] = float(np.percentile(latencies, 50))
        results["route_p99_ms"] = float(np.percentile(latencies, 99))
        short = []  # the same questions cut to a chat-sized prompt
        for text in test_texts[:300]:
            started = time.perf_counter()
            router.route([text[:80]])
            short.append(1000 * (time.perf_counter() - started))
        results["route_short_p50_ms"] = float(np.percentile(short, 50))
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1), flush=True)

    lines = [
        "# Core speed and memory (issue 2)",
        "",
        f"Command: `ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_core.py` "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average {results['load_average_start']:.2f} at start, {results['load_average_end']:.2f} at end).",
        "",
        "| measure | result | target | met |",
        "|---|---|---|---|",
    ]
    labels = {
        "embed_cold_seconds": "embed 12,032 MMLU-Pro queries, cold (s)",
        "train_seconds": f"`train` with default settings (both stages and the 5-fold calibration curve), "
        f"MMLU-Pro train {train.n_queries:,} x {train.n_models}, cached embeddings (s)",
        "batched_queries_per_second": "batched routing from cached embeddings (queries/s, median of 5)",
        "route_p50_ms": "single-query route incl. embedding, p50 (ms)",
        "peak_rss_mb": "peak resident memory (MB)",
    }
    for key, label in labels.items():
        op, target = TARGETS[key]
        value = float(results[key])
        met = value <= target if op == "<=" else value >= target
        lines.append(f"| {label} | {value:,.1f} | {op} {target:,.0f} | {'yes' if met else 'NO'} |")
    lines += [
        "",
        f"- of that training time, one fit of both stages without the calibration curve (`calibration_folds = 0`, "
        f"at the λ the curve chose): {results['train_one_fit_seconds']:.1f} s; the curve costs its 5 fold fits "
        "(success nets shared between them).",
        f"- single-query route p99: {results['route_p99_ms']:.1f} ms (MMLU-Pro questions with their options, "
        f"median 155 tokens, of which the encoder reads 128); p50 for the same questions cut to their first "
        f"80 characters (a chat-sized prompt): {results['route_short_p50_ms']:.1f} ms.",
        f"- MiniLM on 1,000 queries: {results['embed_rate_1_thread']:.0f} queries/s with 1 torch thread, "
        f"{results['embed_rate_2_threads']:.0f}/s with 2; the run used {results['threads']}. The unmodified "
        f"model (`minilm-full`: float32, 256 tokens) on the same queries: "
        f"{results['embed_rate_full_model_1_thread']:.0f}/s with 1 thread.",
        "- Timings are wall-clock on a shared 2-core machine; rerun to compare, and read them with the load "
        "average above.",
        "",
    ]
    write_text_atomic(args.out, "\n".join(lines))
    write_text_atomic(args.out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
