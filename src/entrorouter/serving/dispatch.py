"""Send a chat request down the router's ranking until a backend answers.

For each candidate, best first, the dispatcher skips a backend whose circuit is open or
whose concurrency slots stay full for ``limits.backend_wait_s``, else sends the request (with
the backend's retries, see :mod:`.upstream`). A failed backend counts against its circuit
and the next candidate is tried, up to ``max_attempts`` backends actually called.

A request is committed to a backend once it has its answer: the whole body for a plain
completion, the first event for a stream. Until then a failure falls back; after it, a
failing stream is ended with an SSE error event (:meth:`Dispatcher.relay`), because the
client already has part of one model's answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from entrorouter.backends import BackendError, RetryPolicy
from entrorouter.serving.breaker import Permit
from entrorouter.serving.chat import reject_json_constant
from entrorouter.serving.metrics import GatewayMetrics
from entrorouter.serving.sse import Event, EventTooLarge, data_event, encode, iter_events
from entrorouter.serving.upstream import (
    TRANSPORT_ERRORS,
    RateLimited,
    Upstream,
    UpstreamRejected,
    failure_reasons,
    open_chat,
)

log = logging.getLogger("entrorouter.serving")


@dataclass(frozen=True)
class Decision:
    """Where a request may go: the chosen model first, then the fallbacks in order."""

    chosen: str
    candidates: tuple[str, ...]
    max_attempts: int
    route_ms: float | None = None  # None: the client named the model, nothing was routed

    @property
    def named(self) -> bool:
        """The client named the backend: no routing, no fallback."""
        return self.route_ms is None


class NoBackendAnswered(Exception):
    """No candidate answered: 503 when none could be tried, 502 when the tried ones failed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BadAnswer(Exception):
    """A 2xx whose body is not a chat completion (or a stream that ends before its first event)."""


class TruncatedStream(Exception):
    """The backend's stream ended without ``data: [DONE]``."""


class Call:
    """One admitted call to a backend; :meth:`finish` settles it exactly once."""

    def __init__(self, upstream: Upstream, permit: Permit, metrics: GatewayMetrics) -> None:
        self.upstream, self.permit, self.metrics = upstream, permit, metrics
        self.response: aiohttp.ClientResponse | None = None
        self.events: AsyncIterator[Event] | None = None
        self.started = time.perf_counter()
        self._finished = False

    async def finish(self, ok: bool | None) -> None:
        """Close the call: ``ok`` True/False is the verdict for the circuit, None: no verdict."""
        if self._finished:
            return
        self._finished = True
        breaker = self.upstream.breaker
        if ok is True:
            breaker.record_success(self.permit)
        elif ok is False:
            breaker.record_failure(self.permit)
        else:
            breaker.record_abandoned(self.permit)
        try:
            if self.events is not None:
                await self.events.aclose()  # type: ignore[attr-defined]  # an async generator
            if self.response is not None:
                # A fully read answer's connection goes back to the pool; a cut one is closed.
                if self.response.content.is_eof():
                    self.response.release()
                else:
                    self.response.close()
        finally:
            self.upstream.slots.release()
            self.metrics.upstream_seconds.labels(self.upstream.name).observe(time.perf_counter() - self.started)


@dataclass
class Completion:
    """A non-streaming answer, ready to return."""

    backend: str
    status: int
    body: bytes
    fallbacks: int


@dataclass
class StreamStart:
    """A stream whose first event has arrived; :meth:`Dispatcher.relay` sends the rest."""

    backend: str
    call: Call
    first: Event
    fallbacks: int
    request_id: str
    # How the relay ended: complete | interrupted | backend_error | client_left.
    outcome: str = "client_left"


class Dispatcher:
    def __init__(
        self,
        upstreams: dict[str, Upstream],
        policy: RetryPolicy,
        metrics: GatewayMetrics,
        *,
        slot_wait_s: float,
    ) -> None:
        self.upstreams, self.policy, self.metrics = upstreams, policy, metrics
        self.slot_wait_s = slot_wait_s

    async def complete(self, decision: Decision, body: dict[str, Any], request_id: str) -> Completion:
        """The first successful non-streaming answer along ``decision.candidates``."""

        async def read(call: Call, fallbacks: int) -> Completion:
            assert call.response is not None
            raw = await call.response.read()
            try:
                answer = json.loads(raw, parse_constant=reject_json_constant)
            except ValueError:  # NaN and Infinity included: the client would get them back
                raise BadAnswer("the backend answered with invalid JSON") from None
            if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
                raise BadAnswer("the backend's answer is not a chat completion (no 'choices' list)")
            if answer.get("model") != call.upstream.name:  # the pool's name for the model that answered
                answer["model"] = call.upstream.name
                raw = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
            return Completion(call.upstream.name, call.response.status, raw, fallbacks)

        completion, call = await self._first_answer(decision, body, request_id, read)
        await call.finish(ok=True)
        return completion

    async def open_stream(self, decision: Decision, body: dict[str, Any], request_id: str) -> StreamStart:
        """The first backend along ``decision.candidates`` whose stream yields an event."""

        async def first_event(call: Call, fallbacks: int) -> StreamStart:
            assert call.response is not None
            call.events = iter_events(call.response.content.iter_any())
            first = await anext(call.events, None)
            if first is None:
                raise BadAnswer("the backend's stream ended before its first event")
            return StreamStart(call.upstream.name, call, first, fallbacks, request_id)

        start, _ = await self._first_answer(decision, body, request_id, first_event)
        return start

    async def relay(self, start: StreamStart, chosen: str, on_first_chunk: Callable[[], None]) -> AsyncIterator[bytes]:
        """The stream's events for the client, ending in an error event if the backend fails."""
        call, ok = start.call, None
        try:
            event: Event | None = start.first
            on_first_chunk()
            while event is not None:
                payload = event.json()
                yield _renamed(event, payload, start.backend)
                if event.is_done:
                    ok, start.outcome = True, "complete"
                    return
                if isinstance(payload, dict) and "error" in payload:
                    # The backend reported its failure in-band; the client has that event.
                    ok, start.outcome = False, "backend_error"
                    self.metrics.errors.labels(chosen, "stream_backend_error").inc()
                    return
                event = await anext(call.events, None)  # type: ignore[arg-type]
            raise TruncatedStream("the backend's stream ended without [DONE]")
        except (*TRANSPORT_ERRORS, TruncatedStream, EventTooLarge) as exc:
            ok, start.outcome = False, "interrupted"
            reason, detail = failure_reasons(exc)
            self.metrics.errors.labels(chosen, "stream_interrupted").inc()
            fields = {"backend": start.backend, "request_id": start.request_id, "reason": detail}
            log.warning("stream interrupted", extra={"fields": fields})
            message = f"the backend {start.backend!r} failed mid-stream ({reason}); the answer is incomplete"
            error = {"message": message, "type": "upstream_error", "param": None, "code": "stream_interrupted"}
            yield data_event({"error": error})
        finally:
            await call.finish(ok)

    # ------------------------------------------------------------ internals
    async def _first_answer(
        self,
        decision: Decision,
        body: dict[str, Any],
        request_id: str,
        read: Callable[[Call, int], Any],
    ) -> tuple[Any, Call]:
        """Try candidates in order; ``read(call, fallbacks)`` turns an open 2xx into the answer."""
        failures: list[str] = []
        attempts = passed_over = 0
        for name in decision.candidates:
            if attempts >= decision.max_attempts:
                break
            upstream = self.upstreams[name]
            permit = upstream.breaker.admit()
            if permit is None:
                self._pass_over(name, "circuit_open")
                passed_over += 1
                continue
            try:
                got_slot = await self._take_slot(upstream)
            except BaseException:  # cancelled while waiting
                upstream.breaker.record_abandoned(permit)
                raise
            if not got_slot:
                upstream.breaker.record_abandoned(permit)
                self._pass_over(name, "saturated")
                passed_over += 1
                continue
            attempts += 1
            call = Call(upstream, permit, self.metrics)
            try:
                call.response = await open_chat(
                    upstream,
                    upstream.payload(body),
                    policy=self.policy,
                    request_id=request_id,
                    on_retry=self.metrics.retries.labels(name).inc,
                )
                answer = await read(call, passed_over)
            except UpstreamRejected:
                await call.finish(ok=True)  # the backend works; the request was refused
                raise
            except (BackendError, BadAnswer, EventTooLarge, *TRANSPORT_ERRORS) as exc:
                if isinstance(exc, RateLimited) and decision.named:
                    await call.finish(ok=None)  # the client asked for this backend: it gets the 429
                    raise
                await call.finish(ok=False)
                reason, detail = failure_reasons(exc)
                failures.append(f"{name}: {reason}")
                log.warning(
                    "backend failed", extra={"fields": {"backend": name, "request_id": request_id, "reason": detail}}
                )
                self._pass_over(name, "failed")
                passed_over += 1
                continue
            except BaseException:  # cancelled (the client left) or a bug: release, no verdict
                await call.finish(ok=None)
                raise
            return answer, call
        if not failures:
            raise NoBackendAnswered(503, f"no backend available for {decision.chosen!r} (circuits open or saturated)")
        raise NoBackendAnswered(502, "every backend tried failed: " + "; ".join(failures))

    def _pass_over(self, backend: str, reason: str) -> None:
        self.metrics.fallbacks.labels(backend, reason).inc()

    async def _take_slot(self, upstream: Upstream) -> bool:
        """A concurrency slot of the backend, waiting at most ``slot_wait_s``."""
        if not upstream.slots.locked():  # the common case: a slot is free, no timer needed
            await upstream.slots.acquire()
            return True
        try:
            async with asyncio.timeout(self.slot_wait_s):
                await upstream.slots.acquire()
        except TimeoutError:
            return False
        return True


def _renamed(event: Event, payload: Any, model: str) -> bytes:
    """The event for the client, with ``model`` set to the pool's name of the backend."""
    if event.data_only and isinstance(payload, dict) and "model" in payload and payload["model"] != model:
        payload["model"] = model
        return data_event(payload)
    return encode(event)
