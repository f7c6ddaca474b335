"""Micro-batched routing in a separate router process.

The router is synchronous and CPU-bound, and embedding 16 texts costs much less than 16
single calls. So request handlers do not call it directly: they enqueue their text and
await a future. A collector thread takes the first waiting request plus everything else
already queued (up to ``max_batch_size``) and sends the batch to the router process, which
routes it in one ``Router.route`` call: one encoder call, each text at its own λ. While
traffic is concurrent (this batch or the previous one had more than one request) the
collector also waits up to ``max_wait_s`` for more to join; a request that finds the router
idle is routed at once, with no wait. Under heavy load the queue fills while the previous
batch is computed, so the encoder keeps up.

Why a process and not a thread: the encoder runs hundreds of small torch operations per
batch and needs the GIL between them; a busy event loop in the same process holds the GIL
for up to the interpreter's switch interval (5 ms) each time, which made a batch 3-4x
slower under load. In its own process the encoder has a core to itself. The router
process loads the router from its directory (checking it is the pool the gateway was
configured for), warms it up, and exits when the gateway closes the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from entrorouter.router import RouteResult

log = logging.getLogger("entrorouter.serving")


class RoutingError(Exception):
    """The router process could not route a batch (or is gone)."""


@dataclass
class _Pending:
    text: str
    lam: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[RouteResult]


_STOP = object()  # queued by close(): the collector finishes what it has and exits


class RoutingBatcher:
    """Routes texts in micro-batches in a router process; :meth:`route` is awaitable."""

    def __init__(
        self,
        router_dir: Path,
        models: Sequence[str],
        *,
        torch_threads: int = 1,
        max_batch_size: int = 32,
        max_wait_s: float = 0.002,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.router_dir = Path(router_dir)
        self.models = tuple(models)
        self.torch_threads = torch_threads
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch  # (batch size, seconds in the router process), for metrics
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._previous_batch_size = 0  # collector thread only

    @property
    def pid(self) -> int | None:
        """The router process's id (for operators and tests), once started."""
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        """Whether routing works: the collector thread and the router process both run."""
        return bool(self._thread and self._thread.is_alive() and self._process and self._process.is_alive())

    def start(self, timeout_s: float = 300.0) -> None:
        """Start the router process, wait until it has loaded and warmed the router (blocking)."""
        if self._thread is not None:
            raise RuntimeError("the routing batcher is already started")
        context = multiprocessing.get_context("spawn")  # no fork: the parent has threads
        self._conn, child_end = context.Pipe()
        self._process = context.Process(
            target=_router_process,
            args=(child_end, str(self.router_dir), self.models, self.torch_threads),
            name="entrorouter-router",
            daemon=True,
        )
        self._process.start()
        child_end.close()  # the parent keeps one end: EOF on it means the child is gone
        if not self._conn.poll(timeout_s):
            self._process.kill()
            raise RoutingError(f"the router process did not start within {timeout_s:g} s")
        status, detail = self._receive()
        if status != "ready":
            raise RoutingError(f"the router process failed to start: {detail}")
        self._thread = threading.Thread(target=self._collect_and_route, name="entrorouter-routing", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish the queued requests, then stop the collector and the router process."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
        if self._process is not None:
            self._process.join(timeout_s)
            if self._process.is_alive():
                log.warning("router process did not stop; killing it", extra={"fields": {"timeout_s": timeout_s}})
                self._process.kill()
                self._process.join(timeout_s)
        if self._conn is not None:
            self._conn.close()

    async def route(self, text: str, lam: float) -> RouteResult:
        """The routing decision for ``text`` at trade-off ``lam`` (validated by the caller)."""
        if not self.alive:
            raise RoutingError("the router process is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RouteResult] = loop.create_future()
        self._queue.put(_Pending(text, lam, loop, future))
        if not self.alive:  # the process died while we queued: nobody else will answer
            self._fail_queued(RoutingError("the router process is not running"))
        return await future

    # ------------------------------------------------------------ collector thread
    def _collect_and_route(self) -> None:
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                if first is _STOP:
                    break
                batch, stopping = self._collect(first)
                if not self._route(batch):
                    return  # the router process is gone
        finally:
            self._fail_queued(RoutingError("the router process is not running"))
            with contextlib.suppress(OSError):
                assert self._conn is not None
                self._conn.send(None)  # tells the router process to exit

    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first``, what is queued, and (under concurrent traffic) what arrives within the wait."""
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            concurrent = len(batch) > 1 or self._previous_batch_size > 1
            remaining = deadline - time.monotonic() if concurrent else 0.0
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        self._previous_batch_size = len(batch)
        return batch, stop

    def _route(self, batch: list[_Pending]) -> bool:
        """Route one batch in the router process; False when the process is gone."""
        from entrorouter.router import RouteResult

        assert self._conn is not None
        started = time.perf_counter()
        try:
            self._conn.send(([p.text for p in batch], [p.lam for p in batch]))
            status, detail = self._receive()
        except (EOFError, OSError):
            log.error("the router process exited", extra={"fields": {"batch_size": len(batch)}})
            for pending in batch:
                _deliver(pending, exception=RoutingError("the router process exited"))
            return False
        # Bookkeeping before the answers go out: once a request resumes on the event loop,
        # this thread should be blocked on the queue, not competing with it for the GIL.
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - started)
        if status != "ok":
            log.error("routing failed", extra={"fields": {"batch_size": len(batch), "reason": detail}})
            for pending in batch:
                _deliver(pending, exception=RoutingError(detail))
            return True
        for pending, (model, ranking, probabilities) in zip(batch, detail, strict=True):
            _deliver(pending, result=RouteResult(model, tuple(ranking), probabilities))
        return True

    def _receive(self) -> tuple[str, Any]:
        assert self._conn is not None
        return self._conn.recv()

    def _fail_queued(self, exc: Exception) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Pending):
                _deliver(item, exception=exc)


def _deliver(pending: _Pending, *, result: RouteResult | None = None, exception: Exception | None = None) -> None:
    """Resolve the request's future on its event loop (from the collector thread)."""

    def resolve() -> None:
        if pending.future.done():  # the request was cancelled (client gone)
            return
        if exception is not None:
            pending.future.set_exception(exception)
        else:
            pending.future.set_result(result)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        pending.loop.call_soon_threadsafe(resolve)


# ------------------------------------------------------------------ router process
def _router_process(conn: Connection, router_dir: str, models: tuple[str, ...], torch_threads: int) -> None:
    """Load the router, say "ready", then route batches until the pipe says stop or closes.

    Messages in: ``(texts, lams)`` or None (stop). Out: ``("ready", None)`` once, then per
    batch ``("ok", [(model, ranking, probabilities), ...])`` or ``("error", message)``.
    """
    import torch

    torch.set_num_threads(torch_threads)
    try:
        from entrorouter.router import Router

        router = Router.load(router_dir, expected_models=models)  # the pool the gateway checked
        router.route(["warm-up"])  # loads the encoder now, not on the first request
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the gateway is gone
            return
        if message is None:
            return
        texts, lams = message
        try:
            results = router.route(texts, lams)
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", [(r.model, r.ranking, r.probabilities) for r in results]))
