"""Micro-batched routing in router worker processes.

The router is synchronous and CPU-bound, and embedding 16 texts costs much less than 16
single calls. So request handlers do not call it directly: they enqueue their text and
await a future. Each router worker — a process with its own copy of the router — has a
collector thread in the gateway that takes the first waiting request plus everything else
already queued (up to ``max_batch_size``) and sends the batch to its worker, which routes
it in one ``Router.route`` call: one encoder call, each text at its own λ. All collectors
take from one queue, so a batch goes to whichever worker is free and the workers share the
load. While traffic is concurrent (this batch or the collector's previous one had more
than one request) a collector also waits up to ``max_wait_s`` for more to join; a request
that finds a worker idle is routed at once, with no wait.

Why processes and not threads: the encoder runs hundreds of small operations per batch and
needs the GIL between them; a busy event loop in the same process holds the GIL for up to
the interpreter's switch interval (5 ms) each time, which made a batch 3-4x slower under
load. In its own process each worker has a core to itself. The workers report the router's
pool and default λ when they are ready; one of them then times routing one text.

Why the gateway may also route itself: handing a text to a worker costs two process
wake-ups and two thread hand-offs, and for a router with a static encoder that is about as
much as routing the text. So when a worker times one text at or under ``inline_max_ms``
(at start, once every worker is loaded), the gateway process loads its own copy and
:meth:`RoutingBatcher.route_here` routes on the event loop, without the hop. The gateway
uses it only while few requests are in flight; concurrent traffic still goes to the
workers, whose batches route more texts per second than one event loop can beside its HTTP
work. A router that costs more (a MiniLM forward pass) is never loaded in the gateway
process: it would hold up every request on the event loop. ``benchmarks/results/gateway.md``
measures both paths side by side.

A worker that dies (killed for memory, say) is restarted by its collector; the requests of
the batch it was routing go back to the queue once (another worker, or the restarted one,
routes them) and fail with :class:`RoutingError` if their second worker dies too. When no
worker can be restarted, every waiting request fails at once: none hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entrorouter.data.cost import CostPredictor
from entrorouter.threads import limit_threads

if TYPE_CHECKING:
    from entrorouter.router import Router

log = logging.getLogger("entrorouter.serving")

#: Times a request is sent to a worker before a worker's death fails it.
MAX_ATTEMPTS = 2


class RoutingError(Exception):
    """No router worker could route a batch (or none is running)."""


@dataclass(frozen=True)
class Routed:
    """A routing decision as the gateway uses it (the router's ``RouteResult`` fields)."""

    model: str
    ranking: tuple[str, ...]
    probabilities: dict[str, float]


@dataclass(frozen=True)
class RouterSummary:
    """What the gateway needs to know about the router: its pool, default λ, calibration curve,
    and (for the dashboard's saving estimate) its strongest model and cost predictor."""

    models: tuple[str, ...]
    lam: float
    calibration: dict[str, Any] | None  # ``Calibration.to_dict()``, None when the router has none
    strongest: str
    cost_predictor: CostPredictor = field(compare=False)  # derived from the same weights as the rest


@dataclass
class _Pending:
    text: str
    lam: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Routed]
    queued_at: float = field(default_factory=time.perf_counter)
    attempts: int = 0


_STOP = object()  # queued by close(), once per worker: a collector finishes its batch and exits

#: on_batch(worker, batch size, seconds each request queued, seconds the worker routed).
BatchObserver = Callable[[str, int, list[float], float], None]


class _Worker:
    """One router process and the pipe to it (used by its collector thread only)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.collector: threading.Thread | None = None
        self.collecting = False  # the collector thread runs (the process may be restarting)
        self.previous_batch_size = 0

    def launch(self, router_dir: Path, torch_threads: int) -> None:
        context = multiprocessing.get_context("spawn")  # no fork: the parent has threads
        self.conn, child_end = context.Pipe()
        self.process = context.Process(
            target=_router_process,
            args=(child_end, str(router_dir), torch_threads),
            name=f"entrorouter-router-{self.name}",
            daemon=True,
        )
        self.process.start()
        child_end.close()  # the parent keeps one end: EOF on it means the child is gone

    def wait_ready(self, timeout_s: float) -> RouterSummary:
        """The router's summary once the worker has loaded and warmed it; RoutingError otherwise."""
        detail = self._start_reply("ready", timeout_s)
        return RouterSummary(
            tuple(detail["models"]),
            float(detail["lam"]),
            detail["calibration"],
            detail["strongest"],
            CostPredictor.from_tensors(detail["cost"]),
        )

    def time_one_text(self, timeout_s: float) -> float:
        """Milliseconds the worker takes to route one text (see :func:`_single_text_ms`)."""
        assert self.conn is not None
        with contextlib.suppress(OSError):  # a dead worker shows as EOF in the reply
            self.conn.send(TIME_ONE_TEXT)
        return float(self._start_reply("ok", timeout_s))

    def _start_reply(self, expected_status: str, timeout_s: float) -> Any:
        """The detail of the worker's next message, which must come within ``timeout_s`` with
        ``expected_status``; RoutingError otherwise."""
        assert self.conn is not None and self.process is not None
        try:
            if not self.conn.poll(timeout_s):
                raise RoutingError(f"router worker {self.name} did not start within {timeout_s:g} s")
            status, detail = self.conn.recv()
        except (EOFError, OSError):
            raise RoutingError(f"router worker {self.name} exited while starting") from None
        if status != expected_status:
            raise RoutingError(f"router worker {self.name} failed to start: {detail}")
        return detail

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
        if self.conn is not None:
            self.conn.close()

    def stop(self, timeout_s: float) -> None:
        """Ask the process to exit (closing its pipe), then kill it if it does not."""
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.conn.close()
        if self.process is not None:
            self.process.join(timeout_s)
            if self.process.is_alive():
                log.warning("router worker did not stop; killing it", extra={"fields": {"worker": self.name}})
                self.process.kill()
                self.process.join(timeout_s)


class RoutingBatcher:
    """Routes texts in micro-batches across router worker processes; :meth:`route` is awaitable."""

    def __init__(
        self,
        router_dir: Path,
        *,
        workers: int = 1,
        torch_threads: int = 1,
        max_batch_size: int = 32,
        max_wait_s: float = 0.002,
        inline_max_ms: float = 0.0,
        start_timeout_s: float = 300.0,
        on_batch: BatchObserver | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.router_dir = Path(router_dir)
        self.torch_threads = torch_threads
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.inline_max_ms = inline_max_ms
        self.start_timeout_s = start_timeout_s
        self._on_batch = on_batch
        self._on_restart = on_restart
        self._workers = [_Worker(str(i)) for i in range(workers)]
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._closing = False
        self.summary: RouterSummary | None = None
        self.route_ms: float | None = None  # one text's routing time, measured by a worker at start
        self._local_router: Router | None = None  # the gateway's own copy, for route_here

    @property
    def pids(self) -> list[int | None]:
        """The worker processes' ids (for operators and tests), in worker order."""
        return [w.process.pid if w.process is not None else None for w in self._workers]

    @property
    def routes_here(self) -> bool:
        """Whether :meth:`route_here` may be used: the router is cheap enough to run on the event loop."""
        return self._local_router is not None

    @property
    def alive(self) -> bool:
        """Whether routing works: at least one collector still runs (its worker up or restarting)."""
        return any(w.collecting for w in self._workers)

    def start(self) -> RouterSummary:
        """Start every worker, wait until each has loaded and warmed the router (blocking)."""
        if self.summary is not None:
            raise RuntimeError("the routing batcher is already started")
        for worker in self._workers:  # all load at once
            worker.launch(self.router_dir, self.torch_threads)
        try:
            summaries = [worker.wait_ready(self.start_timeout_s) for worker in self._workers]
            # Timed once every worker is loaded: while the others load, the cores are busy.
            self.route_ms = self._workers[0].time_one_text(self.start_timeout_s)
        except RoutingError:
            for worker in self._workers:  # the others are still loading: no point waiting
                worker.kill()
            raise
        self.summary = summaries[0]
        if self.route_ms <= self.inline_max_ms:
            limit_threads(self.torch_threads)  # as in a worker: NumPy's maths on the event loop's thread only
            self._local_router = _load_router(self.router_dir)
        for worker in self._workers:
            worker.collecting = True
            worker.collector = threading.Thread(
                target=self._collect_and_route, args=(worker,), name=f"entrorouter-routing-{worker.name}", daemon=True
            )
            worker.collector.start()
        return self.summary

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish the queued requests, then stop the collectors and the worker processes."""
        self._closing = True
        for _ in self._workers:
            self._queue.put(_STOP)
        for worker in self._workers:
            if worker.collector is not None:
                worker.collector.join(timeout_s)
            worker.stop(timeout_s)

    async def route(self, text: str, lam: float) -> Routed:
        """The routing decision for ``text`` at trade-off ``lam`` (validated by the caller)."""
        if not self.alive:
            raise RoutingError("no router worker is running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Routed] = loop.create_future()
        self._queue.put(_Pending(text, lam, loop, future))
        if not self.alive:  # the last worker gave up while we queued: nobody else will answer
            self._fail_queued(RoutingError("no router worker is running"))
        return await future

    def route_here(self, text: str, lam: float) -> Routed:
        """The routing decision for ``text``, computed now in this process (see the module
        docstring; only when :attr:`routes_here`). Reported to ``on_batch`` as worker "gateway"."""
        assert self._local_router is not None
        started = time.perf_counter()
        result = self._local_router.route([text], [lam])[0]
        if self._on_batch is not None:
            self._on_batch("gateway", 1, [0.0], time.perf_counter() - started)
        return Routed(result.model, result.ranking, result.probabilities)

    # ------------------------------------------------------------ collector threads
    def _collect_and_route(self, worker: _Worker) -> None:
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                if first is _STOP:
                    break
                batch, stopping = self._collect(worker, first)
                if not self._route(worker, batch) and not self._restart(worker):
                    return
        finally:
            worker.collecting = False  # before the check below: this collector no longer counts
            if not self.alive:
                self._fail_queued(RoutingError("no router worker is running"))

    def _collect(self, worker: _Worker, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first``, what is queued, and (under concurrent traffic) what arrives within the wait."""
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            concurrent = len(batch) > 1 or worker.previous_batch_size > 1
            remaining = deadline - time.monotonic() if concurrent else 0.0
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        worker.previous_batch_size = len(batch)
        return batch, stop

    def _route(self, worker: _Worker, batch: list[_Pending]) -> bool:
        """Route one batch on ``worker``; False when the worker died (its batch is dealt with)."""
        assert worker.conn is not None
        started = time.perf_counter()
        waits = [started - p.queued_at for p in batch]
        for pending in batch:
            pending.attempts += 1
        try:
            worker.conn.send(([p.text for p in batch], [p.lam for p in batch]))
            status, detail = worker.conn.recv()
        except (EOFError, OSError):
            self._worker_died(worker, batch)
            return False
        # Bookkeeping before the answers go out: once a request resumes on the event loop,
        # this thread should be blocked on the queue, not competing with it for the GIL.
        if self._on_batch is not None:
            self._on_batch(worker.name, len(batch), waits, time.perf_counter() - started)
        if status != "ok":
            log.error("routing failed", extra={"fields": {"batch_size": len(batch), "reason": detail}})
            for pending in batch:
                _deliver(pending, exception=RoutingError(detail))
            return True
        for pending, (model, ranking, probabilities) in zip(batch, detail, strict=True):
            _deliver(pending, result=Routed(model, tuple(ranking), probabilities))
        return True

    def _worker_died(self, worker: _Worker, batch: list[_Pending]) -> None:
        """Send the batch's requests to another worker once; fail those already retried."""
        log.error("router worker exited", extra={"fields": {"worker": worker.name, "batch_size": len(batch)}})
        for pending in batch:
            if pending.attempts < MAX_ATTEMPTS and not self._closing:
                self._queue.put(pending)
            else:
                _deliver(pending, exception=RoutingError("the router worker exited while routing this request"))

    def _restart(self, worker: _Worker) -> bool:
        """Replace ``worker``'s dead process; False (this collector gives up) if it cannot start."""
        worker.stop(1.0)
        if self._closing:
            return False
        worker.previous_batch_size = 0
        try:
            worker.launch(self.router_dir, self.torch_threads)
            summary = worker.wait_ready(self.start_timeout_s)
        except RoutingError as exc:
            log.error(
                "router worker could not be restarted", extra={"fields": {"worker": worker.name, "reason": str(exc)}}
            )
            return False
        if summary != self.summary:  # the router directory changed under the gateway
            log.error("restarted router worker loaded another router", extra={"fields": {"worker": worker.name}})
            worker.stop(1.0)
            return False
        log.warning("router worker restarted", extra={"fields": {"worker": worker.name, "pid": worker.process.pid}})
        if self._on_restart is not None:
            self._on_restart(worker.name)
        return True

    def _fail_queued(self, exc: Exception) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Pending):
                _deliver(item, exception=exc)


def _deliver(pending: _Pending, *, result: Routed | None = None, exception: Exception | None = None) -> None:
    """Resolve the request's future on its event loop (from a collector thread)."""

    def resolve() -> None:
        if pending.future.done():  # the request was cancelled (client gone)
            return
        if exception is not None:
            pending.future.set_exception(exception)
        else:
            pending.future.set_result(result)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        pending.loop.call_soon_threadsafe(resolve)


# ------------------------------------------------------------------ router worker process
#: The message that asks a worker how long routing one text takes.
TIME_ONE_TEXT = "time one text"
#: Distinct texts a worker routes one at a time to measure it.
TIMING_TEXTS = tuple(f"How do I compute the area of a circle with radius {i} metres?" for i in range(15))


def _load_router(router_dir: str | Path) -> Router:
    """The saved router, loaded and warmed up (its encoder loaded now, not on the first request)."""
    from entrorouter import Router

    router = Router.load(router_dir)
    router.route(["warm-up"])
    return router


def _single_text_ms(router: Router) -> float:
    """Milliseconds to route one text alone (the work :meth:`RoutingBatcher.route_here` does): the
    fastest of several, the router's own cost without the pauses that other processes cause."""
    times = []
    for text in TIMING_TEXTS * 3:
        started = time.perf_counter()
        router.route([text])
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def _router_process(conn: Connection, router_dir: str, torch_threads: int) -> None:
    """Load the router, say "ready", then route batches until the pipe says stop or closes.

    Messages in: ``(texts, lams)``, :data:`TIME_ONE_TEXT` or None (stop). Out: ``("ready",
    {"models", "lam", "calibration", "strongest", "cost"})`` once, then per batch ``("ok",
    [(model, ranking, probabilities), ...])`` or ``("error", message)``, per timing ``("ok", ms)``.
    """
    limit_threads(torch_threads)  # the encoder's (torch or ONNX Runtime) and NumPy's
    try:
        router = _load_router(router_dir)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    calibration = None if router.calibration is None else router.calibration.to_dict()
    ready = {
        "models": list(router.models),
        "lam": router.lam,
        "calibration": calibration,
        "strongest": router.trained_on.get("strongest_model") or router.models[-1],
        "cost": router.cost_predictor.tensors(),
    }
    conn.send(("ready", ready))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the gateway is gone
            return
        if message is None:
            return
        try:
            if message == TIME_ONE_TEXT:
                reply: Any = _single_text_ms(router)
            else:
                texts, lams = message
                reply = [(r.model, r.ranking, r.probabilities) for r in router.route(texts, lams)]
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", reply))
