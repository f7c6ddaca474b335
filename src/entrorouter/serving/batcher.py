"""Micro-batched routing: concurrent requests share one encoder call on one worker thread.

The router is synchronous and CPU-bound, and embedding 16 texts costs little more than
embedding one. So request handlers do not call it directly: they enqueue their text and
await a future, and a single worker thread takes the first waiting request, everything
else already queued, and whatever arrives within ``max_wait_s`` after it (up to
``max_batch_size``), embeds the batch once and ranks it, one policy call per distinct λ.
Under light load a request waits at most ``max_wait_s``; under heavy load the batches
fill while the previous one is computed, so the encoder keeps up.

One thread owns the router, so the router needs no locking and torch's own thread pool
(``torch.set_num_threads``) does the parallel work inside each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from entrorouter.router import Router, RouteResult

log = logging.getLogger("entrorouter.serving")


@dataclass
class _Pending:
    text: str
    lam: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[RouteResult]


_STOP = object()  # queued by close(): the worker finishes what it has and exits


class RoutingBatcher:
    """Routes texts on a worker thread in micro-batches; :meth:`route` is awaitable."""

    def __init__(
        self,
        router: Router,
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.002,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.router = router
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch  # (batch size, seconds of router work), for metrics
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the routing batcher is already started")
        self._thread = threading.Thread(target=self._work, name="entrorouter-routing", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish the queued requests, then stop the worker (bounded by ``timeout_s``)."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("routing worker did not stop", extra={"fields": {"timeout_s": timeout_s}})

    async def route(self, text: str, lam: float) -> RouteResult:
        """The routing decision for ``text`` at trade-off ``lam`` (validated by the caller)."""
        if not self.alive:
            raise RuntimeError("the routing worker is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RouteResult] = loop.create_future()
        self._queue.put(_Pending(text, lam, loop, future))
        return await future

    # ------------------------------------------------------------ worker thread
    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stopping = self._collect(first)
            started = time.perf_counter()
            self._run(batch)
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)

    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` plus what arrives within the wait window; (batch, stop requested)."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self, batch: list[_Pending]) -> None:
        try:
            results = route_batch(self.router, [p.text for p in batch], [p.lam for p in batch])
        except Exception as exc:  # one bad batch must not kill the worker
            log.exception("routing failed", extra={"fields": {"batch_size": len(batch)}})
            for pending in batch:
                _deliver(pending, exception=exc)
            return
        for pending, result in zip(batch, results, strict=True):
            _deliver(pending, result=result)


def route_batch(router: Router, texts: list[str], lams: list[float]) -> list[RouteResult]:
    """Route ``texts[i]`` at ``lams[i]``: one embedding call, one policy call per distinct λ."""
    from entrorouter.router import RouteResult

    features = router.embed(texts)
    names = np.asarray(router.models, dtype=object)
    results: list[RouteResult | None] = [None] * len(texts)
    lam_of = np.asarray(lams, dtype=np.float64)
    for lam in np.unique(lam_of):
        rows = np.flatnonzero(lam_of == lam)
        probs, rankings = router.rank(router.inputs(features[rows], [texts[i] for i in rows]), float(lam))
        for row, p, order in zip(rows, probs, rankings, strict=True):
            results[row] = RouteResult(
                model=str(names[order[0]]),
                ranking=tuple(str(n) for n in names[order]),
                probabilities={m: float(v) for m, v in zip(router.models, p, strict=True)},
            )
    return results  # type: ignore[return-value]  # every row was filled above


def _deliver(pending: _Pending, *, result: RouteResult | None = None, exception: Exception | None = None) -> None:
    """Resolve the request's future on its event loop (from the worker thread)."""

    def resolve() -> None:
        if pending.future.done():  # the request was cancelled (client gone)
            return
        if exception is not None:
            pending.future.set_exception(exception)
        else:
            pending.future.set_result(result)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        pending.loop.call_soon_threadsafe(resolve)
