"""Micro-batched routing in the router process, with the real router."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from entrorouter.serving.batcher import RoutingBatcher, RoutingError

TEXTS = [
    "Compute the integral of x^2 from 0 to 3, step by step and rigorously.",
    "Write a Python function that reverses a linked list.",
    "Who was the first emperor of Rome?",
    "What is the statute of limitations for contract claims?",
    "Draft a short wedding toast.",
    "Which drug interactions matter for warfarin?",
]


@pytest.fixture(scope="module")
def sizes() -> list[int]:
    return []


@pytest.fixture(scope="module")
def batcher(router_dir: Path, sizes: list[int]) -> Iterator[RoutingBatcher]:
    """One router worker for the tests that do not break it."""
    started = RoutingBatcher(
        router_dir, max_batch_size=8, max_wait_s=0.02, on_batch=lambda worker, n, waits, s: sizes.append(n)
    )
    started.start()
    yield started
    started.close()
    assert not started.alive


def run(coroutine, timeout_s: float = 30):
    return asyncio.run(asyncio.wait_for(coroutine, timeout_s))


def route_all(batcher: RoutingBatcher, texts: list[str], lams: list[float]) -> list:
    async def main() -> list:
        return await asyncio.gather(*(batcher.route(t, lam) for t, lam in zip(texts, lams, strict=True)))

    return run(main())


def test_the_workers_report_the_routers_pool_and_lambda(batcher, router) -> None:
    assert batcher.summary is not None
    assert batcher.summary.models == router.models and batcher.summary.lam == router.lam


def test_concurrent_requests_share_batches_and_get_their_own_answers(batcher, router, sizes) -> None:
    sizes.clear()
    texts = [f"{TEXTS[i % len(TEXTS)]} (request {i})" for i in range(40)]
    lams = [(i % 3) * 0.5 for i in range(40)]
    results = route_all(batcher, texts, lams)
    for text, lam, result in zip(texts, lams, results, strict=True):  # each at its own λ
        expected = router.route([text], lam)[0]
        assert result.probabilities == pytest.approx(expected.probabilities, abs=1e-5)
        assert result.ranking == expected.ranking
    assert sum(sizes) == 40
    assert max(sizes) <= 8
    assert max(sizes) > 1, "concurrent requests were not batched"


def test_a_lone_request_does_not_wait_for_company(router_dir: Path) -> None:
    lone = RoutingBatcher(router_dir, max_wait_s=2.0)
    lone.start()

    async def main() -> float:
        await lone.route(TEXTS[0], 0.0)
        started = time.perf_counter()
        await lone.route(TEXTS[1], 0.0)
        return time.perf_counter() - started

    try:
        assert run(main()) < 1.0  # far below the 2 s window: it was not waited for
    finally:
        lone.close()


def test_a_cheap_router_is_also_loaded_in_the_gateway_process_and_routes_as_the_workers_do(
    router_dir: Path, router
) -> None:
    seen: list[tuple[str, int]] = []
    here = RoutingBatcher(router_dir, inline_max_ms=1000, on_batch=lambda worker, n, waits, s: seen.append((worker, n)))
    here.start()
    try:
        assert here.route_ms is not None and here.route_ms > 0
        assert here.routes_here
        for i, text in enumerate(TEXTS):
            lam = i * 0.4
            in_gateway = here.route_here(text, lam)
            in_worker = run(here.route(text, lam))
            assert in_gateway.ranking == in_worker.ranking == router.route([text], lam)[0].ranking
            assert in_gateway.probabilities == pytest.approx(in_worker.probabilities, abs=1e-6)
        assert seen.count(("gateway", 1)) == len(TEXTS) and seen.count(("0", 1)) == len(TEXTS)
    finally:
        here.close()


def test_a_router_slower_than_the_inline_limit_stays_in_the_workers(router_dir: Path, batcher) -> None:
    assert not batcher.routes_here  # inline_max_ms = 0, the batcher's default: never in the gateway
    slow = RoutingBatcher(router_dir, inline_max_ms=1e-6)  # no router routes a text in a nanosecond
    slow.start()
    try:
        assert not slow.routes_here
        assert run(slow.route(TEXTS[0], 0.0)).model in slow.summary.models
    finally:
        slow.close()


def test_a_failing_batch_fails_its_requests_and_routing_goes_on(batcher, router) -> None:
    async def main() -> None:
        with pytest.raises(RoutingError, match=r"λ must be a number in \[0, 1e\+06\]"):
            await batcher.route("a", math.nan)
        result = await batcher.route("a", 0.0)
        assert result.model in router.models

    run(main())
    assert batcher.alive


def test_a_cancelled_request_does_not_disturb_the_others(batcher, router) -> None:
    async def main() -> None:
        doomed = asyncio.ensure_future(batcher.route(TEXTS[0], 0.0))
        kept = asyncio.ensure_future(batcher.route(TEXTS[1], 0.0))
        await asyncio.sleep(0)
        doomed.cancel()
        result = await kept
        assert result.ranking == router.route([TEXTS[1]], 0.0)[0].ranking

    run(main())
    assert batcher.alive


def test_two_workers_share_the_batches_and_a_killed_one_is_restarted(router_dir: Path, router) -> None:
    seen: list[str] = []
    restarted: list[str] = []
    pool = RoutingBatcher(
        router_dir,
        workers=2,
        max_batch_size=4,
        max_wait_s=0.005,
        on_batch=lambda worker, n, waits, s: seen.append(worker),
        on_restart=restarted.append,
    )
    pool.start()
    try:
        texts = [f"{TEXTS[i % len(TEXTS)]} (request {i})" for i in range(60)]
        results = route_all(pool, texts, [0.0] * len(texts))
        assert [r.model for r in results] == [r.model for r in router.route(texts, 0.0)]
        assert set(seen) == {"0", "1"}, "one worker did all the routing"

        old = pool.pids
        os.kill(old[0], signal.SIGKILL)  # requests sent meanwhile fail over to the other worker
        results = route_all(pool, texts[:20], [0.0] * 20)
        assert [r.model for r in results] == [r.model for r in router.route(texts[:20], 0.0)]
        deadline = time.monotonic() + 120  # a restart loads torch and the router
        while not restarted and time.monotonic() < deadline:
            route_all(pool, texts[:4], [0.0] * 4)  # makes the dead worker's collector notice
            time.sleep(0.1)
        assert restarted == ["0"]
        assert pool.pids[0] != old[0] and pool.pids[1] == old[1]
        assert pool.alive
    finally:
        pool.close()


def test_when_no_worker_can_be_restarted_requests_fail_instead_of_hanging(router_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "router"
    shutil.copytree(router_dir, moved)
    doomed = RoutingBatcher(moved)
    doomed.start()
    try:
        shutil.rmtree(moved)  # the restart cannot load the router any more
        os.kill(doomed.pids[0], signal.SIGKILL)

        async def main() -> None:
            with pytest.raises(RoutingError, match=r"no router worker is running|exited while routing"):
                await doomed.route("a", 0.0)

        run(main(), timeout_s=120)
        deadline = time.monotonic() + 120
        while doomed.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not doomed.alive
    finally:
        doomed.close()


def test_a_worker_that_cannot_load_the_router_fails_start(tmp_path: Path) -> None:
    missing = RoutingBatcher(tmp_path / "nowhere")
    with pytest.raises(RoutingError, match=r"worker 0 failed to start.*no router directory"):
        missing.start()
    missing.close()
