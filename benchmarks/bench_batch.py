"""Batch routing speed and memory: `route --batch` on the local engine and on Ray (issue 12).

    ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data nice -n 10 \
        .venv/bin/python benchmarks/bench_batch.py [--n 1000000] [--minilm-n 100000] [--ray-n 40000] \
        [--fast-encoder minilm-static] [--minilm-encoder minilm-onnx]

Queries: the texts of the three public datasets (MMLU-Pro, RouterBench subset, RouteLLM
2-model), cycled to ``--n`` rows with distinct ids, written once as Parquet. Routers:
trained on the MMLU-Pro train split (29 models, seed 0, default architecture; fewer
training epochs than the default, which changes no routing cost), one with the fastest
shipped encoder (``--fast-encoder``: the static token table distilled from MiniLM) and one
with MiniLM itself (``--minilm-encoder``: ONNX Runtime, int8, 128 tokens) on 2,000 queries.

Measured, one torch thread per process, side by side in one run:
  1. ``route_file`` (the local engine: read, route, write parts, join) of all ``--n`` queries
     in a child process: throughput and the child's peak resident memory;
  2. the local engine against in-process batched routing (texts in memory, ``Router.rank`` on
     4,096-query chunks, no file I/O; the router loaded and warmed up before the clock starts)
     in ``--rounds`` paired rounds: each routes the first ``--baseline-n`` queries in-process,
     then on the local engine, each side in a fresh child process; the ratio is the median of
     the rounds' ratios. Paired, because this shared machine's speed drifts within a run by as
     much as the target's margin (see the rounds' rates in results/batch.md); fresh processes on
     both sides, because a long-lived process routed the same calls up to a fifth faster than a
     fresh one (docs/scale.md);
  3. the same for MiniLM on ``--minilm-n`` queries, against in-process routing of 500 (peak
     memory does not grow with N: the input is streamed in chunks);
  4. Ray (a local Ray, ``num_cpus=2``) on ``--ray-n`` queries with 1 and 2 workers, and the
     local engine on the same file: the 2-vs-1 speed-up, outputs compared row for row, and
     the per-chunk overhead of Ray = (Ray 1 worker − local − actor start-up) / chunks.
Targets: peak memory <= 2 GB, local >= 90% of in-process, Ray 2 workers >= 1.6x one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 4096


def public_texts() -> list[str]:
    from entrorouter.data.datasets import load_source

    texts: list[str] = []
    for name in ("mmlu_pro", "routerbench_subset", "routellm_2model"):
        texts.extend(str(q) for q in load_source(name).queries)
    return list(dict.fromkeys(texts))


def write_queries(texts: list[str], n: int, path: Path) -> None:
    rows = np.arange(n)
    frame = pd.DataFrame({"id": [f"q{i}" for i in rows], "text": [texts[i % len(texts)] for i in rows]})
    frame.to_parquet(path, row_group_size=65536)


def train_router(encoder: str, n_train: int | None, path: Path) -> None:
    from entrorouter.data.datasets import load_source
    from entrorouter.router import Router
    from entrorouter.router.config import TrainConfig

    train = load_source("mmlu_pro").split("train")
    if n_train is not None:
        train = train.subset(np.arange(n_train))
    Router(TrainConfig(encoder=encoder, seed=0, sft_epochs=2, rl_iterations=3)).fit(train).save(path)


def in_process_rate(router_dir: Path, texts: list[str]) -> float:
    """Queries/s of ``Router.rank`` on in-memory chunks of ``texts`` (the routing work without any
    file I/O), the router loaded and warmed up on a few of them before the clock starts."""
    from entrorouter.router import Router

    router = Router.load(router_dir)
    router.rank(router.inputs(router.embed(texts[:64]), texts[:64]))
    started = time.perf_counter()
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start : start + CHUNK]
        router.rank(router.inputs(router.embed(chunk), chunk), router.lam)
    return len(texts) / (time.perf_counter() - started)


class _Echo:
    """A worker that does no routing: returns a table of the chunk's size (Ray's cost alone)."""

    def __call__(self, chunk: Any) -> pa.Table:
        return pa.table({"id": chunk.ids, "model": chunk.ids, "lam": np.zeros(len(chunk.ids))})


def ray_round_trip_ms(texts: list[str], n_chunks: int = 20) -> float:
    """Median ms to ship one chunk to a Ray actor and its result table back (no routing work)."""
    import ray

    from entrorouter.batch.engines import _Actor
    from entrorouter.batch.routing import Chunk

    chunk = Chunk(0, [f"q{i}" for i in range(CHUNK)], [texts[i % len(texts)] for i in range(CHUNK)], [])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        actor = ray.remote(num_cpus=1)(_Actor).remote(_Echo)
        ray.get(actor.run.remote(chunk))  # the actor is up
        times = []
        for _ in range(n_chunks):
            started = time.perf_counter()
            ray.get(actor.run.remote(chunk))
            times.append(1000 * (time.perf_counter() - started))
    finally:
        ray.shutdown()
    return float(np.median(times))


def child(argv: list[str]) -> dict[str, float]:
    """Route in a fresh process (:func:`run_child`); its wall time, queries routed and peak memory."""
    output = subprocess.run(
        [sys.executable, __file__, "--child", *argv], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that across
    exec, so a child would report the parent's size at fork time."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(router: str, queries: str, out: str, engine: str, workers: str) -> None:
    """Route the ``queries`` file with ``engine``: ``route_file``'s engines (the clock includes
    loading the router), or ``in-process`` (:func:`in_process_rate`; nothing written to ``out``)."""
    from entrorouter.batch.routing import route_file
    from entrorouter.router import Router
    from entrorouter.threads import apply_threads

    apply_threads()
    if engine == "in-process":
        texts = pd.read_parquet(queries, columns=["text"])["text"].tolist()
        rate = in_process_rate(Path(router), texts)
        print(json.dumps({"seconds": len(texts) / rate, "routed": len(texts), "peak_rss_mb": peak_rss_mb()}))
        return
    lam = Router.load(router).lam
    if engine == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    started = time.perf_counter()
    summary = route_file(
        Path(router), Path(queries), Path(out), lam=lam, chunk_size=CHUNK, engine=engine, workers=int(workers) or None
    )
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "routed": summary.routed, "peak_rss_mb": peak}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--minilm-n", type=int, default=100_000)
    parser.add_argument("--fast-encoder", default="minilm-static", help="the fastest shipped encoder")
    parser.add_argument("--minilm-encoder", default="minilm-onnx", help="a MiniLM encoder (minilm, minilm-onnx)")
    parser.add_argument("--ray-n", type=int, default=40_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batch.md"))
    parser.add_argument("--baseline-n", type=int, default=100_000, help="queries of each paired round")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds of in-process vs local engine")
    parser.add_argument("--work", type=Path, help="work folder, kept: routers and queries found there are reused")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return 0
    from entrorouter.threads import apply_threads

    apply_threads()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        return bench(args, args.work)
    with tempfile.TemporaryDirectory() as scratch:
        return bench(args, Path(scratch))


def bench(args: argparse.Namespace, work: Path) -> int:
    r: dict[str, float | int | str] = {
        "load_average_start": round(os.getloadavg()[0], 2),
        "chunk_size": CHUNK,
        "fast_encoder": args.fast_encoder,
        "minilm_encoder": args.minilm_encoder,
    }
    started = time.perf_counter()
    texts = public_texts()
    r["distinct_texts"] = len(texts)
    queries = work / "queries.parquet"
    n_rows = max(args.n, args.minilm_n, args.ray_n)
    if not queries.exists() or pq.ParquetFile(queries).metadata.num_rows < n_rows:
        write_queries(texts, n_rows, queries)
    fast, minilm = work / f"router-{args.fast_encoder}", work / f"router-{args.minilm_encoder}"
    for path, encoder, n_train in ((fast, args.fast_encoder, None), (minilm, args.minilm_encoder, 2000)):
        if not (path / "config.json").exists():
            train_router(encoder, n_train, path)
    print(f"setup {time.perf_counter() - started:.0f}s", flush=True)

    def subset(n: int) -> Path:
        path = work / f"queries-{n}.parquet"
        if not path.exists():
            pd.read_parquet(queries).iloc[:n].to_parquet(path, row_group_size=65536)
        return path

    local = child([str(fast), str(subset(args.n)), str(work / "out.parquet"), "local", "0"])
    r.update(
        n=args.n,
        local_qps=local["routed"] / local["seconds"],
        local_seconds=local["seconds"],
        local_routed=local["routed"],
        local_peak_rss_mb=local["peak_rss_mb"],
    )

    def rate(router: Path, queries: Path, engine: str) -> float:
        result = child([str(router), str(queries), str(work / "out-round.parquet"), engine, "0"])
        return result["routed"] / result["seconds"]

    paired = subset(args.baseline_n)
    rounds = []
    for _ in range(args.rounds):
        in_process = rate(fast, paired, "in-process")
        rounds.append({"in_process_qps": in_process, "local_qps": rate(fast, paired, "local")})
    r.update(
        baseline_n=args.baseline_n,
        rounds=rounds,
        local_vs_in_process=float(np.median([x["local_qps"] / x["in_process_qps"] for x in rounds])),
    )
    print(json.dumps(r), flush=True)

    minilm_in_process = rate(minilm, subset(500), "in-process")
    mini = child([str(minilm), str(subset(args.minilm_n)), str(work / "out-minilm.parquet"), "local", "0"])
    r.update(
        minilm_n=args.minilm_n,
        minilm_in_process_qps=minilm_in_process,
        minilm_qps=mini["routed"] / mini["seconds"],
        minilm_seconds=mini["seconds"],
        minilm_peak_rss_mb=mini["peak_rss_mb"],
    )
    print(json.dumps(r), flush=True)

    ray_queries = subset(args.ray_n)
    one_chunk = subset(CHUNK)
    outputs = {}
    for label, engine, workers, source in (
        ("ray_start", "ray", "1", one_chunk),
        ("ray_local", "local", "0", ray_queries),
        ("ray_1", "ray", "1", ray_queries),
        ("ray_2", "ray", "2", ray_queries),
    ):
        outputs[label] = work / f"{label}.parquet"
        result = child([str(fast), str(source), str(outputs[label]), engine, workers])
        r[f"{label}_seconds"] = result["seconds"]
        r[f"{label}_peak_rss_mb"] = result["peak_rss_mb"]
        print(label, result, flush=True)
    local_one_chunk = r["ray_local_seconds"] * CHUNK / args.ray_n
    r["ray_n"] = args.ray_n
    r["ray_speedup_2_vs_1"] = r["ray_1_seconds"] / r["ray_2_seconds"]
    r["ray_actor_start_seconds"] = r["ray_start_seconds"] - local_one_chunk
    n_chunks = -(-args.ray_n // CHUNK)
    r["ray_overhead_per_chunk_ms"] = (
        1000 * (r["ray_1_seconds"] - r["ray_local_seconds"] - r["ray_actor_start_seconds"]) / n_chunks
    )
    r["ray_round_trip_per_chunk_ms"] = ray_round_trip_ms(texts)
    reference = pd.read_parquet(outputs["ray_local"])
    r["ray_outputs_identical"] = str(all(reference.equals(pd.read_parquet(outputs[k])) for k in ("ray_1", "ray_2")))
    r["load_average_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(r, indent=1), flush=True)
    write_report(args.out, r)
    return 0


def write_report(path: Path, r: dict) -> None:
    def ok(good: bool) -> str:
        return "yes" if good else "**no**"

    def qps(rates: list[float]) -> str:
        return ", ".join(f"{rate:,.0f}" for rate in rates)

    lines = [
        "# Batch routing (`route --batch`): speed and memory",
        "",
        f"`benchmarks/bench_batch.py` on {platform.machine()} Linux, {os.cpu_count()} cores shared with other "
        f"work (load average {r['load_average_start']} at the start, {r['load_average_end']} at the end), one "
        f"torch thread per process, chunks of {r['chunk_size']} queries. Queries: the {r['distinct_texts']:,} "
        "distinct texts of the three public datasets, cycled. Routers trained on the MMLU-Pro train split "
        "(29 models, seed 0).",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| `{r['fast_encoder']}`, local engine, {r['n']:,} queries: time | {r['local_seconds']:.0f} s | | |",
        f"| … throughput | {r['local_qps']:,.0f} queries/s | | |",
        f"| … {len(r['rounds'])} paired rounds on the first {r['baseline_n']:,} queries: in-process, then "
        f"local engine | {qps([x['in_process_qps'] for x in r['rounds']])}; "
        f"{qps([x['local_qps'] for x in r['rounds']])} queries/s | | |",
        f"| … local engine / in-process, median of the rounds' ratios | {r['local_vs_in_process']:.1%} | ≥ 90% | "
        f"{ok(r['local_vs_in_process'] >= 0.9)} |",
        f"| … peak memory | {r['local_peak_rss_mb']:,.0f} MB | ≤ 2,048 MB | {ok(r['local_peak_rss_mb'] <= 2048)} |",
        f"| `{r['minilm_encoder']}`, local engine, {r['minilm_n']:,} queries: time | {r['minilm_seconds']:.0f} s | | |",
        f"| … throughput (in-process) | {r['minilm_qps']:,.0f} ({r['minilm_in_process_qps']:,.0f}) queries/s | | |",
        f"| … peak memory | {r['minilm_peak_rss_mb']:,.0f} MB | ≤ 2,048 MB | {ok(r['minilm_peak_rss_mb'] <= 2048)} |",
        f"| Ray, {r['ray_n']:,} queries: local engine / 1 worker / 2 workers | {r['ray_local_seconds']:.1f} / "
        f"{r['ray_1_seconds']:.1f} / {r['ray_2_seconds']:.1f} s | | |",
        f"| … 2 workers vs 1 | {r['ray_speedup_2_vs_1']:.2f}× | ≥ 1.6× | {ok(r['ray_speedup_2_vs_1'] >= 1.6)} |",
        f"| … actor start-up (router loaded once per actor) | {r['ray_actor_start_seconds']:.1f} s | | |",
        f"| … overhead per chunk of {r['chunk_size']}: (1 worker − local − start-up) / chunks | "
        f"{r['ray_overhead_per_chunk_ms']:.0f} ms | | |",
        f"| … round trip of one chunk to an actor doing no work (median of 20) | "
        f"{r['ray_round_trip_per_chunk_ms']:.1f} ms | | |",
        f"| … outputs identical to the local engine, row for row | {r['ray_outputs_identical']} | yes | "
        f"{ok(r['ray_outputs_identical'] == 'True')} |",
        "",
        "Ray times include starting the actors (each imports torch and loads the router once). The first",
        "overhead figure is a difference of noisy wall times on a shared machine; the round trip (a chunk",
        "of texts to an actor and a table of that size back, through Ray's object store) is Ray's own cost.",
        "",
        "```json",
        json.dumps(r, indent=1),
        "```",
        "",
    ]
    from entrorouter.data.atomic import write_text_atomic

    write_text_atomic(path, "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
