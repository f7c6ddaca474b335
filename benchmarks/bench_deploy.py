"""Resource sizing of one gateway replica (the numbers in deploy/k8s/deployment.yaml).

    ENTROROUTER_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_deploy.py [--requests 2000]

Starts `entrorouter serve` (the production path: MiniLM router, one torch thread) in its
own process next to a fake backend process, as bench_gateway.py does, then sends routed
requests (16 in flight) and reads from /proc, for the gateway and its router process
together: resident memory after start-up and its peak under load (VmHWM), and CPU seconds
per routed request. Writes benchmarks/results/deploy.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench_gateway import KEY, entrorouter_gateway, prompt, train_demo_router
from entrorouter.data.atomic import write_text_atomic
from entrorouter.testing.fake_backend import FakeBackend

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            todo.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def memory_mb(pids: list[int], field: str) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


async def send(url: str, n: int, concurrency: int = 16) -> float:
    headers = {"authorization": f"Bearer {KEY}"}
    queue = iter(range(n))
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:

        async def worker() -> None:
            for i in queue:
                body = {"model": "entrorouter", "messages": [{"role": "user", "content": prompt(i)}]}
                (await client.post("/v1/chat/completions", json=body)).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/deploy.md"))
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        router = train_demo_router(work / "router", encoder="minilm")
        from entrorouter.router import Router

        models = Router.load(router).models
        with (
            FakeBackend(dict.fromkeys(models, 0.7), subprocess=True, lifetime_s=3600) as fake,
            entrorouter_gateway(work, router, fake.base_url, models, workers=1) as gateway,
        ):
            pids = process_tree(gateway.pid)
            idle_rss = memory_mb(pids, "VmRSS")
            cpu_before = cpu_seconds(pids)
            seconds = asyncio.run(send(gateway.url, args.requests))
            cpu = cpu_seconds(pids) - cpu_before
            peak = memory_mb(pids, "VmHWM")
    rows = [
        ("processes per replica (gateway + router)", f"{len(pids)}"),
        ("resident memory after start-up", f"{idle_rss:,.0f} MB"),
        ("peak resident memory under load (sum of VmHWM)", f"{peak:,.0f} MB"),
        (
            "routed requests sent (16 in flight)",
            f"{args.requests} in {seconds:.1f} s = {args.requests / seconds:.0f}/s",
        ),
        ("CPU per routed request (gateway + router)", f"{1000 * cpu / args.requests:.1f} ms"),
        ("routed requests/s per CPU core (1 / CPU per request)", f"{args.requests / cpu:.0f}"),
    ]
    load_end = os.getloadavg()[0]
    busy = max(load_start, load_end) > (os.cpu_count() or 1)
    contention = ": other jobs competed for the cores, so throughput is a floor" if busy else ""
    lines = [
        "# Gateway replica sizing",
        "",
        f"`benchmarks/bench_deploy.py --requests {args.requests}`: `entrorouter serve` with a MiniLM router "
        f"(demo pool, one torch thread) and a fake backend in its own process, on {os.cpu_count()} shared cores "
        f"(load average {load_start:.1f} at the start, {load_end:.1f} at the end{contention}; CPU per request "
        "counts only the gateway's own processes).",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]
    write_text_atomic(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
