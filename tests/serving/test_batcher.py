"""Micro-batched routing in the router process, with the real router."""

from __future__ import annotations

import asyncio
import math
import os
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
def batcher(router_dir: Path, router, sizes: list[int]) -> Iterator[RoutingBatcher]:
    """One router process for the tests that do not break it."""
    started = RoutingBatcher(
        router_dir, router.models, max_batch_size=8, max_wait_s=0.02, on_batch=lambda n, s: sizes.append(n)
    )
    started.start()
    yield started
    started.close()
    assert not started.alive


def run(coroutine, timeout_s: float = 30):
    return asyncio.run(asyncio.wait_for(coroutine, timeout_s))


def test_concurrent_requests_share_batches_and_get_their_own_answers(batcher, router, sizes) -> None:
    sizes.clear()
    texts = [f"{TEXTS[i % len(TEXTS)]} (request {i})" for i in range(40)]
    lams = [(i % 3) * 0.5 for i in range(40)]

    async def main() -> list:
        return await asyncio.gather(*(batcher.route(t, lam) for t, lam in zip(texts, lams, strict=True)))

    results = run(main())
    for text, lam, result in zip(texts, lams, results, strict=True):  # each at its own λ
        expected = router.route([text], lam)[0]
        assert result.ranking == expected.ranking
        assert result.probabilities == pytest.approx(expected.probabilities, abs=1e-5)
    assert sum(sizes) == 40
    assert max(sizes) <= 8
    assert max(sizes) > 1, "concurrent requests were not batched"


def test_a_lone_request_does_not_wait_for_company(router_dir: Path, router) -> None:
    lone = RoutingBatcher(router_dir, router.models, max_wait_s=2.0)
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


def test_a_failing_batch_fails_its_requests_and_routing_goes_on(batcher, router) -> None:
    async def main() -> None:
        with pytest.raises(RoutingError, match="λ must be a finite number"):
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


def test_a_dead_router_process_fails_requests_instead_of_hanging(router_dir: Path, router) -> None:
    doomed = RoutingBatcher(router_dir, router.models)
    doomed.start()
    try:
        assert doomed.pid is not None
        os.kill(doomed.pid, signal.SIGKILL)

        async def main() -> None:
            with pytest.raises(RoutingError, match=r"not running|exited"):
                await doomed.route("a", 0.0)

        run(main())
        deadline = time.monotonic() + 10  # the pipe reports EOF while the child is still exiting
        while doomed.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not doomed.alive
    finally:
        doomed.close()


def test_the_router_process_refuses_another_pool(router_dir: Path) -> None:
    wrong = RoutingBatcher(router_dir, ("a", "b"))
    with pytest.raises(RoutingError, match=r"failed to start.*trained for the pool"):
        wrong.start()
    wrong.close()
