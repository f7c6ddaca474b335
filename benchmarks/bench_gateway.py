"""Gateway benchmark, side by side with a bare pass-through and the LiteLLM proxy, in one run.

    .venv/bin/python benchmarks/bench_gateway.py            # ~10 min; writes benchmarks/results/gateway.md
    .venv/bin/python benchmarks/bench_gateway.py --quick    # a short smoke run (not for the record)

Everything runs on this machine over loopback, each server in its own process: the fake
OpenAI-compatible backend (``entrorouter.testing.fake_backend``, answers at once), and in
front of it (a) nothing (direct), (b) a bare uvicorn + httpx pass-through
(``benchmarks/passthrough.py``: the floor for any Python gateway) and (b') the same with
aiohttp, the gateway's own client, as the client of the upstream call, (c) ``entrorouter serve``
with the backend named, (d) the same gateway routing (``model: entrorouter``), (d') a second
gateway routing with ``routing.inline_max_ms: 0`` (every text goes to a router worker: what
routing in the gateway process saves), (d'') a gateway routing with the lean router (the
same router without the kNN part of its capability ensemble, ``--lean-capability``: an
opt-in that trades the quality ``results/encoder_quality_capability.md`` measures for
routing time), and (e) the LiteLLM proxy, which does no routing,
installed by this script into its own virtualenv (``--litellm-venv``; pip from PyPI, cost map
read from the package: ``LITELLM_LOCAL_MODEL_COST_MAP``).
The load generator is this process (httpx, asyncio). For each path:

1. added latency at fixed rates (open loop: request *i* leaves at *t0 + i/rate* whatever
   earlier ones do): p50/p99 of the path minus p50/p99 of direct calls at the same rate;
2. max throughput: 32 requests kept in flight for a while, answered requests per second;
3. memory: resident memory of the server and all its child processes, after the load.

Why routing costs what it costs here: one routing decision timed back to back (the
router's arrays stay in the CPU caches) and after a 10 ms pause (they do not: on a shared
machine other work evicts them within milliseconds; a routed request at 100 req/s arrives
10 ms after the last one), for each router.

Then a sustained routed run (30 s at 75 % of the pass-through's max throughput), a stall
run (20 s at 75 % of the routed path's own max throughput, the gateway paused for 1 s
after 5 s, as a long GC pause or a noisy neighbour would: does it work off the backlog, or
fall behind for good?), the gateway's time to ready, and ``entrorouter route`` as a fresh
process. The load generator holds its connections in small pools (``ClientShards``) like
the gateway, so that it is not itself the bottleneck once a backlog forms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from entrorouter.backends import ClientShards
from entrorouter.data.atomic import write_text_atomic
from entrorouter.testing.fake_backend import FakeBackend

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "gateway.md"
LITELLM = "litellm[proxy]>=1.108,<1.109"  # the newest 1.108 whose extras resolve
DEFAULT_LITELLM_VENV = Path.home() / ".cache" / "entrorouter" / "bench-litellm-venv"
KEY_ENV, KEY = "ENTROROUTER_BENCH_KEY", "bench-client-key"
# The gateway's own HTTP client as a bare pass-through: the floor for the named path (the
# issue's reference pass-through, "bare pass-through", calls its backend through httpx).
AIOHTTP_PASSTHROUGH = "bare pass-through, aiohttp client"
LITELLM_KEY = "sk-bench-" + secrets.token_hex(16)  # per run, never logged
START_TIMEOUT_S = 300  # a server's start on a busy machine (LiteLLM imports a lot)
BURST_CONCURRENCY = 32
LEAN_CAPABILITY = "mlp+logistic"  # the default ensemble without its kNN part
LEAN_ROUTED = "EntroRouter, routed, lean router"
SUSTAINED_SHARE = 0.75  # of the pass-through's max throughput
SUSTAINED_P99_MS = 1000.0
STALL_AT_S, STALL_S = 5.0, 1.0  # the stall run: the gateway paused for 1 s, 5 s in
BACKLOG_MS = 100.0  # a second whose requests' median latency is above this is still behind the backlog
SHORT_PROMPTS = [
    "What is the capital of Australia?",
    "Write a Python function that checks whether a string is a palindrome.",
    "Compute the derivative of x^3 sin(x).",
    "Summarise the causes of the First World War in two sentences.",
    "Is a verbal contract legally binding?",
    "What are common side effects of ibuprofen?",
    "Translate 'good morning' into Spanish.",
    "Prove that the square root of 2 is irrational.",
    "Explain the difference between TCP and UDP.",
    "Write a haiku about the sea.",
    "How many prime numbers are there below 50?",
    "What does a REST API return for a missing resource?",
]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def prompt(i: int) -> str:
    return f"{SHORT_PROMPTS[i % len(SHORT_PROMPTS)]} (#{i})"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def uptime() -> str:
    load1, load5, load15 = os.getloadavg()
    return f"load average {load1:.2f}, {load5:.2f}, {load15:.2f} (1, 5, 15 min) on {os.cpu_count()} CPUs"


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (MB), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


# ------------------------------------------------------------------ servers
class Server:
    """A server process started by the benchmark; ready when ``ready_path`` answers 200."""

    def __init__(self, name: str, command: list[str], port: int, workdir: Path, **kwargs: Any) -> None:
        self.name, self.command, self.port = name, command, port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path: str = kwargs.pop("ready_path", "/readyz")
        self.env = {**os.environ, **kwargs.pop("env", {})}
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_s = float("nan")

    def __enter__(self) -> Server:
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log, env=self.env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-600:]
                raise RuntimeError(f"{self.name} exited with status {self.process.returncode}: {tail}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    self.ready_s = time.perf_counter() - started
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"{self.name} was not ready within {START_TIMEOUT_S} s")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)  # in case a stall run left it paused
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def rss_mb(self) -> float:
        assert self.process is not None
        return tree_rss_mb(self.process.pid)


def entrorouter_gateway(
    workdir: Path, router_dir: Path, backend_url: str, models: tuple[str, ...], workers: int, **routing: Any
) -> Server:
    config = {
        "router": str(router_dir),
        "auth": {"api_key_envs": [KEY_ENV]},
        "routing": {"router_workers": workers, **routing},
        "backends": [{"name": m, "base_url": backend_url, "max_concurrency": 256} for m in models],
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [sys.executable, "-m", "entrorouter.cli", "serve", "--config", str(path), "--port", str(port)]
    return Server("entrorouter", command, port, workdir, env={KEY_ENV: KEY})


def routing_split(gateway_url: str) -> dict[str, float]:
    """From the gateway's /metrics: texts routed so far (``texts``), how many of them the
    gateway process routed itself (``inline``) and its mean milliseconds per text (``inline_ms``)."""
    from prometheus_client.parser import text_string_to_metric_families

    texts_by_worker: dict[str, float] = {}
    inline_seconds = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{gateway_url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "entrorouter_routing_batch_size_sum":
                texts_by_worker[sample.labels["worker"]] = sample.value
            elif sample.name == "entrorouter_router_inference_seconds_sum" and sample.labels["worker"] == "gateway":
                inline_seconds = sample.value
    inline = texts_by_worker.get("gateway", 0.0)
    inline_ms = 1000 * inline_seconds / inline if inline else float("nan")
    return {"texts": sum(texts_by_worker.values()), "inline": inline, "inline_ms": inline_ms}


def passthrough(workdir: Path, backend_url: str, client: str = "httpx") -> Server:
    port = free_port()
    command = [sys.executable, str(REPO / "benchmarks" / "passthrough.py"), "--port", str(port), "--client", client]
    return Server(f"passthrough-{client}", [*command, "--upstream", backend_url], port, workdir, ready_path="/healthz")


def install_litellm(venv: Path) -> Path:
    """The LiteLLM proxy's executable, installed into ``venv`` on first use."""
    executable = venv / "bin" / "litellm"
    if not executable.exists():
        print(f"installing {LITELLM} into {venv} (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", LITELLM], check=True)
    return executable


def litellm_proxy(workdir: Path, executable: Path, backend_url: str, models: tuple[str, ...]) -> Server:
    config = {
        "model_list": [
            {"model_name": m, "litellm_params": {"model": f"openai/{m}", "api_base": backend_url, "api_key": "x"}}
            for m in models
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    # LiteLLM refuses to start without a master key; clients then authenticate with it, as they do with ours.
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "NO_DOCS": "1",
    }
    command = [str(executable), "--config", str(path), "--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"]
    return Server("litellm", command, port, workdir, env=env, ready_path="/health/liveliness")


# ------------------------------------------------------------------ load
@dataclass
class Target:
    """Where requests go and as which model."""

    label: str
    url: str  # the chat completions URL
    model: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Run:
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    sent_s: list[float] = field(default_factory=list)  # when each answered request left, after the start
    errors: list[str] = field(default_factory=list)
    span_s: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.ok / self.span_s if self.span_s else 0.0


def client() -> ClientShards:
    """512 connections in small pools, as the gateway holds them: in one pool of 512, this
    load generator, not the server it measured, became the bottleneck once a backlog formed."""
    return ClientShards(512, timeout=15)


async def _one(http: ClientShards, target: Target, i: int, run: Run, sent_s: float = 0.0) -> None:
    body = {"model": target.model, "messages": [{"role": "user", "content": prompt(i)}]}
    started = time.perf_counter()
    try:
        async with http.connection() as connection:
            response = await connection.post(target.url, json=body, headers=target.headers)
    except httpx.HTTPError as exc:
        run.errors.append(type(exc).__name__)
        return
    if response.status_code == 200:
        run.latencies_ms.append((time.perf_counter() - started) * 1000)
        run.sent_s.append(sent_s)
    else:
        run.errors.append(f"HTTP {response.status_code}")


async def open_loop(target: Target, rate: float, duration_s: float, stall_pid: int | None = None) -> Run:
    """Requests leave on schedule whatever the responses do; a bounded wait for the last ones.

    With ``stall_pid``, that process is paused (SIGSTOP) for ``STALL_S`` seconds at
    ``STALL_AT_S``, as a long GC pause or a noisy neighbour would, while requests keep leaving.
    """
    run = Run()
    async with client() as http:
        for i in range(20):  # warm the connections; not measured
            await _one(http, target, i, Run())
        loop = asyncio.get_running_loop()
        tasks, start = [], loop.time()
        for i in range(int(rate * duration_s)):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if stall_pid is not None and i == int(STALL_AT_S * rate):
                os.kill(stall_pid, signal.SIGSTOP)
                loop.call_later(STALL_S, os.kill, stall_pid, signal.SIGCONT)
            tasks.append(asyncio.create_task(_one(http, target, i, run, i / rate)))
        _, unfinished = await asyncio.wait(tasks, timeout=60)
        for task in unfinished:
            task.cancel()
        run.errors += ["unfinished 60 s after the last send"] * len(unfinished)
        run.sent, run.span_s = len(tasks), loop.time() - start
    return run


async def closed_loop(target: Target, concurrency: int, duration_s: float) -> Run:
    """``concurrency`` requests always in flight for ``duration_s``: the max throughput."""
    run = Run()
    async with client() as http:
        loop = asyncio.get_running_loop()
        start = loop.time()
        counter = iter(range(10**9))

        async def worker() -> None:
            while loop.time() - start < duration_s:
                await _one(http, target, next(counter), run)
                run.sent += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.span_s = loop.time() - start
    return run


@dataclass
class PathResult:
    at_rate: dict[float, Run] = field(default_factory=dict)
    burst: Run | None = None
    rss_mb: float = float("nan")
    ready_s: float = float("nan")
    note: str = ""


def measure(target: Target, rates: list[float], rate_s: float, burst_s: float) -> PathResult:
    result = PathResult()
    for rate in rates:
        print(f"  {target.label}: {rate:g} req/s for {rate_s:g} s", flush=True)
        result.at_rate[rate] = asyncio.run(open_loop(target, rate, rate_s))
    print(f"  {target.label}: {BURST_CONCURRENCY} in flight for {burst_s:g} s", flush=True)
    result.burst = asyncio.run(closed_loop(target, BURST_CONCURRENCY, burst_s))
    return result


def fresh_route_wall_s(router_dir: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "entrorouter.cli", "route", "--router", str(router_dir), SHORT_PROMPTS[2]],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def train_demo_router(out: Path, encoder: str, capability: str | None = None) -> Path:
    """A router that costs what a default one costs per query: the default capability
    ensemble (kNN over every training query, bagged MLP and logistic success predictors)
    on the quickstart's 4,000-query demo pool. Fewer training passes and no calibration
    curve keep its training short; neither changes the work of routing one query.
    ``capability``: another capability ensemble (default: the default one)."""
    from entrorouter import Router
    from entrorouter.data.demo import make_demo_table
    from entrorouter.router.config import TrainConfig

    config = TrainConfig(
        encoder=encoder,
        capability=capability or TrainConfig.capability,
        sft_epochs=2,
        rl_iterations=4,
        calibration_folds=0,
        lam=0.1,
    )
    return Router(config).fit(make_demo_table()).save(out)


def single_route_ms(router_dir: Path, texts: int = 200, pause_s: float = 0.01) -> tuple[float, float]:
    """Median milliseconds to route one text (as the gateway process does inline), back to back
    and after a ``pause_s`` pause; in this process, with one thread, before any server starts."""
    from entrorouter import Router
    from entrorouter.threads import limit_threads

    limit_threads(1)
    router = Router.load(router_dir)
    prompts = [f"Explain step by step how to solve problem number {i} of the set" for i in range(texts)]
    router.route(prompts[:8])  # warm-up
    medians = []
    for pause in (0.0, pause_s):
        times = []
        for text in prompts:
            time.sleep(pause)
            started = time.perf_counter()
            router.route([text])
            times.append(time.perf_counter() - started)
        medians.append(1000 * float(np.median(times)))
    return medians[0], medians[1]


# ------------------------------------------------------------------ report
def stall_recovery(run: Run, run_s: float) -> tuple[float, float]:
    """(seconds from the pause's end to the end of the last second whose requests' median
    latency was above ``BACKLOG_MS``, p99 latency of the requests sent in the last 5 s)."""
    stall_end = STALL_AT_S + STALL_S
    by_second: dict[int, list[float]] = {}
    for sent, ms in zip(run.sent_s, run.latencies_ms, strict=True):
        if sent >= stall_end:
            by_second.setdefault(int(sent - stall_end), []).append(ms)
    behind = [second + 1 for second, values in by_second.items() if np.median(values) > BACKLOG_MS]
    last = [ms for sent, ms in zip(run.sent_s, run.latencies_ms, strict=True) if sent >= run_s - 5]
    return float(max(behind, default=0)), percentile(last, 99)


def fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def signed(value: float) -> str:
    """An added latency: a sign always (direct calls' own tail can exceed a path's at p99)."""
    return ("+" if value >= 0 else "−") + fmt(abs(value))


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def split_note(split: dict[str, float]) -> str:
    if not split["inline"]:
        return "The gateway process routed nothing itself: every routed request went to a worker."
    return (
        f"Of the {split['texts']:.0f} requests of the routed path's runs (fixed rates and max throughput), "
        f"the gateway process routed {split['inline']:.0f} itself ({100 * split['inline'] / split['texts']:.0f} %, "
        f"{split['inline_ms']:.2f} ms each on average; `routing.inline_max_in_flight`), the workers the rest."
    )


def write_report(path: Path, command: str, data: dict[str, Any]) -> str:
    results: dict[str, PathResult] = data["paths"]
    direct = results["direct"]
    rates: list[float] = data["rates"]

    def added(label: str, rate: float, q: float) -> float:
        run = results[label].at_rate.get(rate)
        if run is None:
            return float("nan")
        return percentile(run.latencies_ms, q) - percentile(direct.at_rate[rate].latencies_ms, q)

    def burst(label: str) -> float:
        run = results[label].burst
        return run.rate if run is not None else float("nan")

    high = max(rates)
    routed50, routed99 = added("EntroRouter, routed", high, 50), added("EntroRouter, routed", high, 99)
    named50, bare50 = added("EntroRouter, backend named", high, 50), added("bare pass-through", high, 50)
    lean50, lean99 = added(LEAN_ROUTED, high, 50), added(LEAN_ROUTED, high, 99)
    sustained: Run = data["sustained"]
    sustained_rate = data["sustained_rate"]
    sustained99 = percentile(sustained.latencies_ms, 99)
    sustained_ok = not sustained.errors and sustained.rate >= 0.98 * sustained_rate and sustained99 <= 1000
    stall: Run = data["stall"]
    cleared_s, last99 = stall_recovery(stall, data["stall_run_s"])
    stall_ok = not stall.errors and cleared_s <= data["stall_run_s"] - STALL_AT_S - STALL_S - 5
    gateway = results["EntroRouter, routed"]
    litellm_ran = "LiteLLM proxy (no routing)" in results and results["LiteLLM proxy (no routing)"].burst is not None
    beats = litellm_ran and (
        added("LiteLLM proxy (no routing)", high, 50) > routed50
        and burst("LiteLLM proxy (no routing)") < burst("EntroRouter, routed")
    )
    lines = [
        "# Gateway benchmark",
        "",
        f"Generated by `benchmarks/bench_gateway.py` on {data['date']} (UTC). Command:",
        "",
        f"    {command}",
        "",
        "## Conditions",
        "",
        f"- {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}; at the start "
        f"{data['load_before']}, at the end {data['load_after']}.",
        "- The machine is shared: a load average above the CPU count means other jobs competed for the same "
        "cores during the run, and every figure includes that contention (and the load generator, the backend "
        "and the gateway share the same cores).",
        f"- Router: {data['router_note']}; the gateway runs {data['workers']} router workers. "
        f"{split_note(data['routing_split'])}",
        *(
            [
                f"- Lean router: the same, with the capability ensemble `{data['lean_capability']}`. "
                f"{split_note(data['lean_routing_split'])}"
            ]
            if "lean_capability" in data
            else []
        ),
        f"- LiteLLM: {data['litellm_note']}",
        "",
        f"## Targets (rate {high:g} req/s)",
        "",
        "| measure | result | target | |",
        "|---|---|---|---|",
        f"| routed, added latency p50 / p99 | {fmt(routed50)} / {fmt(routed99)} ms | ≤ 3 / ≤ 15 ms "
        f"| {verdict(routed50 <= 3 and routed99 <= 15)} |",
        *(
            [
                f"| routed by the lean router (opt-in: `capability: {data['lean_capability']}`), added "
                f"latency p50 / p99 | {fmt(lean50)} / {fmt(lean99)} ms | ≤ 3 / ≤ 15 ms "
                f"| {verdict(lean50 <= 3 and lean99 <= 15)} |"
            ]
            if LEAN_ROUTED in results
            else []
        ),
        f"| routed, sustained {sustained_rate:.0f} req/s (75 % of the pass-through's max) for "
        f"{data['sustained_s']:g} s | {sustained.ok}/{sustained.sent} ok, {len(sustained.errors)} errors, "
        f"{sustained.rate:.0f} req/s, p99 {fmt(sustained99)} ms | no errors, p99 ≤ 1 s | {verdict(sustained_ok)} |",
        f"| routed, {data['stall_rate']:.0f} req/s (75 % of its own max) for {data['stall_run_s']:g} s, "
        f"the gateway paused {STALL_S:g} s at "
        f"{STALL_AT_S:g} s | backlog cleared {cleared_s:.0f} s after the pause; p99 of the last 5 s "
        f"{fmt(last99)} ms; {len(stall.errors)} errors | cleared before the last 5 s, no errors "
        f"(ours, not the issue's) | {verdict(stall_ok)} |",
        f"| named, added p50 vs the bare pass-through's | {fmt(named50)} vs {fmt(bare50)} ms "
        f"| ≤ bare + 0.2 ms | {verdict(named50 <= bare50 + 0.2)} |",
        "| routed beats LiteLLM on added p50 and max throughput | "
        + (
            f"{fmt(routed50)} vs {fmt(added('LiteLLM proxy (no routing)', high, 50))} ms; "
            f"{burst('EntroRouter, routed'):.0f} vs {burst('LiteLLM proxy (no routing)'):.0f} req/s"
            if litellm_ran
            else "LiteLLM did not run"
        )
        + f" | both | {verdict(beats)} |",
        f"| gateway ready after start | {fmt(gateway.ready_s)} s | ≤ 5 s | {verdict(gateway.ready_s <= 5)} |",
        f"| gateway memory, all processes ({data['workers']} router workers) | {gateway.rss_mb:.0f} MB | ≤ 1024 MB "
        f"| {verdict(gateway.rss_mb <= 1024)} |",
        f'| `entrorouter route --router R "…"`, fresh process | {fmt(data["route_wall_s"])} s | ≤ 2 s '
        f"| {verdict(data['route_wall_s'] <= 2)} |",
        "",
        "## Side by side",
        "",
        "Added latency = the path's latency percentile minus direct calls' at the same rate (open loop, "
        f"{data['rate_s']:g} s per rate). Max throughput: {BURST_CONCURRENCY} requests in flight for "
        f"{data['burst_s']:g} s. Memory: resident set of the server and its child processes after the load.",
        "",
        "| path | "
        + " | ".join(f"added p50 / p99 at {r:g}/s (ms)" for r in rates)
        + " | errors | max throughput (req/s) | memory (MB) | ready (s) |",
        "|---|" + "---|" * (len(rates) + 4),
    ]
    for label, result in results.items():
        if result.burst is None:
            lines.append(f"| {label} | {result.note} |" + " |" * (len(rates) + 3))
            continue
        cells = []
        for rate in rates:
            run = result.at_rate[rate]
            if label == "direct":
                cells.append(f"({fmt(percentile(run.latencies_ms, 50))} / {fmt(percentile(run.latencies_ms, 99))})")
            else:
                cells.append(f"{signed(added(label, rate, 50))} / {signed(added(label, rate, 99))}")
        errors = sum(len(r.errors) for r in result.at_rate.values()) + len(result.burst.errors)
        lines.append(
            f"| {label} | {' | '.join(cells)} | {errors} | {result.burst.rate:.0f} | "
            f"{fmt(result.rss_mb)} | {fmt(result.ready_s)} |"
        )
    lines += [
        "",
        "Direct calls' own p50 / p99 are in brackets. Errors count non-200 answers and transport errors in "
        "all of that path's runs."
        + (f" Sustained-run errors: {sorted(set(sustained.errors))}." if sustained.errors else "")
        + (f" Stall-run errors: {sorted(set(stall.errors))}." if stall.errors else ""),
        "",
        "## Routing one text",
        "",
        "Median milliseconds of one routing decision, in the benchmark's process with one thread before any "
        "server starts (the work the gateway process does for a routed request it routes itself). Back to back, "
        "the router's arrays stay in the CPU caches; after a 10 ms pause (a request every 10 ms is 100 req/s) they "
        "no longer do, and the decision waits for main memory. The second column is what a routed request pays "
        "here.",
        "",
        "| router | back to back (ms) | after a 10 ms pause (ms) |",
        "|---|---|---|",
        *(f"| {name} | {fmt(hot)} | {fmt(cold)} |" for name, (hot, cold) in data["single_route_ms"].items()),
        "",
    ]
    text = "\n".join(lines)
    write_text_atomic(path, text)
    return text


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", type=Path, help="a router directory (default: train one on the demo pool)")
    parser.add_argument("--encoder", default="minilm-onnx", help="encoder of the trained router (minilm-onnx)")
    parser.add_argument(
        "--lean-capability",
        default=LEAN_CAPABILITY,
        help=f"capability ensemble of the lean router's row ({LEAN_CAPABILITY}; 'none': no such row)",
    )
    parser.add_argument("--workers", type=int, default=2, help="router workers of the gateway (2)")
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 100], help="fixed rates (50 100)")
    parser.add_argument("--rate-s", type=float, default=10, help="seconds per fixed rate (10)")
    parser.add_argument("--burst-s", type=float, default=10, help="seconds of the max-throughput run (10)")
    parser.add_argument("--sustained-s", type=float, default=30, help="seconds of the sustained run (30)")
    parser.add_argument("--stall-run-s", type=float, default=20, help="seconds of the stall run (20)")
    parser.add_argument("--litellm-venv", type=Path, default=DEFAULT_LITELLM_VENV)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rate_s, args.burst_s, args.sustained_s, args.stall_run_s = 3, 3, 5, 12

    data: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_before": uptime(),
        "rates": args.rates,
        "rate_s": args.rate_s,
        "burst_s": args.burst_s,
        "sustained_s": args.sustained_s,
        "stall_run_s": args.stall_run_s,
        "workers": args.workers,
    }
    paths: dict[str, PathResult] = {}
    data["paths"] = paths
    try:
        litellm = install_litellm(args.litellm_venv)
        data["litellm_note"] = f"`{LITELLM}` in `{args.litellm_venv}`, one worker, offline cost map."
    except (OSError, subprocess.CalledProcessError) as exc:
        litellm = None
        data["litellm_note"] = f"could not be installed ({exc}); its row is empty."
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        router_dir = args.router
        if router_dir is None:
            print(f"training a {args.encoder} router on the simulated demo pool...", flush=True)
            router_dir = train_demo_router(workdir / "router", args.encoder)
            data["router_note"] = (
                f"`{args.encoder}` encoder, the default capability ensemble (kNN over 4,000 queries, bagged MLP and "
                "logistic success predictors) and MLP policy, trained by the benchmark on the demo pool"
            )
        else:
            data["router_note"] = f"`{router_dir}`"
        routers = {"default": router_dir}
        if args.lean_capability != "none" and args.router is None:
            print(f"training the lean router ({args.lean_capability})...", flush=True)
            routers["lean"] = train_demo_router(workdir / "lean-router", args.encoder, args.lean_capability)
            data["lean_capability"] = args.lean_capability
        models = tuple(json.loads((router_dir / "config.json").read_text())["models"])
        data["route_wall_s"] = fresh_route_wall_s(router_dir)
        data["single_route_ms"] = {name: single_route_ms(path) for name, path in routers.items()}
        with FakeBackend(dict.fromkeys(models, 0.7), subprocess=True, lifetime_s=3600) as fake:
            chat = f"{fake.base_url}/chat/completions"
            print("direct...", flush=True)
            paths["direct"] = measure(Target("direct", chat, models[0]), args.rates, args.rate_s, args.burst_s)
            for client_name, label in (("httpx", "bare pass-through"), ("aiohttp", AIOHTTP_PASSTHROUGH)):
                with passthrough(workdir, fake.base_url, client_name) as bare:
                    target = Target(label, f"{bare.url}/v1/chat/completions", models[0])
                    paths[label] = measure(target, args.rates, args.rate_s, args.burst_s)
                    paths[label].rss_mb, paths[label].ready_s = bare.rss_mb, bare.ready_s
            with entrorouter_gateway(workdir, router_dir, fake.base_url, models, args.workers) as gateway:
                auth = {"authorization": f"Bearer {KEY}"}
                url = f"{gateway.url}/v1/chat/completions"
                for label, model in (("EntroRouter, backend named", models[0]), ("EntroRouter, routed", "entrorouter")):
                    paths[label] = measure(Target(label, url, model, auth), args.rates, args.rate_s, args.burst_s)
                    paths[label].rss_mb, paths[label].ready_s = gateway.rss_mb, gateway.ready_s
                data["routing_split"] = routing_split(gateway.url)  # the named path routes nothing
                data["sustained_rate"] = SUSTAINED_SHARE * paths["bare pass-through"].burst.rate
                print(f"sustained routed {data['sustained_rate']:.0f}/s for {args.sustained_s:g} s...", flush=True)
                routed = Target("routed", url, "entrorouter", auth)
                data["sustained"] = asyncio.run(open_loop(routed, data["sustained_rate"], args.sustained_s))
                data["stall_rate"] = SUSTAINED_SHARE * paths["EntroRouter, routed"].burst.rate
                print(f"stall run {data['stall_rate']:.0f}/s, the gateway paused {STALL_S:g} s...", flush=True)
                data["stall"] = asyncio.run(
                    open_loop(routed, data["stall_rate"], args.stall_run_s, stall_pid=gateway.pid)
                )
            label = "EntroRouter, routed by the workers only"  # what routing in the gateway process saves
            with entrorouter_gateway(
                workdir, router_dir, fake.base_url, models, args.workers, inline_max_ms=0
            ) as gateway:
                target = Target(label, f"{gateway.url}/v1/chat/completions", "entrorouter", auth)
                paths[label] = measure(target, args.rates, args.rate_s, args.burst_s)
                paths[label].rss_mb, paths[label].ready_s = gateway.rss_mb, gateway.ready_s
            if "lean" in routers:
                with entrorouter_gateway(workdir, routers["lean"], fake.base_url, models, args.workers) as gateway:
                    target = Target(LEAN_ROUTED, f"{gateway.url}/v1/chat/completions", "entrorouter", auth)
                    paths[LEAN_ROUTED] = measure(target, args.rates, args.rate_s, args.burst_s)
                    paths[LEAN_ROUTED].rss_mb, paths[LEAN_ROUTED].ready_s = gateway.rss_mb, gateway.ready_s
                    data["lean_routing_split"] = routing_split(gateway.url)
            label = "LiteLLM proxy (no routing)"
            paths[label] = PathResult(note="did not run")
            if litellm is not None:
                try:
                    with litellm_proxy(workdir, litellm, fake.base_url, models) as proxy:
                        auth = {"authorization": f"Bearer {LITELLM_KEY}"}
                        target = Target(label, f"{proxy.url}/v1/chat/completions", models[0], auth)
                        paths[label] = measure(target, args.rates, args.rate_s, args.burst_s)
                        paths[label].rss_mb, paths[label].ready_s = proxy.rss_mb, proxy.ready_s
                except RuntimeError as exc:
                    paths[label].note = f"could not start: {str(exc)[:300]}"
    data["load_after"] = uptime()
    command = "python benchmarks/bench_gateway.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(write_report(args.out, command.strip(), data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
