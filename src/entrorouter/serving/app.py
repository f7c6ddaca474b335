"""The gateway: an OpenAI-compatible HTTP API in front of a trained router and its backends.

``Gateway.load(config)`` does everything that can fail on bad input (router, pool, keys)
before a socket is opened; ``create_app(gateway)`` wraps it in an ASGI app whose lifespan
starts the runtime parts (router process, HTTP clients) and stops them after uvicorn has
drained the in-flight requests.

Concurrency: the request handlers, circuit breakers and counters live on the event loop's
thread; the router lives in the router worker processes (:mod:`.batcher`), reached through
the batcher's queue, its collector threads and pipes. A router cheap enough to run on the
event loop (a static encoder) is also loaded in the gateway process, which routes a request
itself while few are in flight; a costlier one (and torch) never is.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from entrorouter.errors import ConfigError, EntroRouterError
from entrorouter.serving.batcher import RouterSummary, RoutingBatcher, RoutingError
from entrorouter.serving.breaker import CircuitBreaker, CircuitState
from entrorouter.serving.chat import ApiError, ChatRequest, parse_chat_request, parse_json_body, routing_text
from entrorouter.serving.config import ROUTER_MODEL, GatewayConfig
from entrorouter.serving.dashboard import DashboardStats, dashboard_routes
from entrorouter.serving.dispatch import Decision, Dispatcher, NoBackendAnswered, StreamStart
from entrorouter.serving.metrics import GatewayMetrics
from entrorouter.serving.upstream import TRANSPORT_ERRORS, RateLimited, Upstream, UpstreamRejected

log = logging.getLogger("entrorouter.serving")

READINESS_CACHE_S = 1.0  # /readyz probes backends at most this often, whatever the poll rate
READINESS_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=0.8)  # under the 1 s default timeout of Kubernetes probes
OVERLOADED_RETRY_AFTER_S = 1  # the pause a client refused at the concurrency limit is asked for
CLIENT_LEFT_STATUS = 499  # logged (never sent) for a client gone before its answer
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
REJECT_REASONS = {
    400: "invalid_request",
    401: "unauthorized",
    404: "unknown_model",
    408: "body_timeout",
    413: "too_large",
    503: "overloaded",
}


class Gateway:
    """A validated config; :meth:`start_router`, :meth:`start` and :meth:`stop` own the rest."""

    def __init__(self, config: GatewayConfig, client_keys: tuple[bytes, ...]) -> None:
        self.config = config
        self.client_keys = client_keys
        self.router: RouterSummary | None = None  # the pool and default λ, once the workers run
        self.metrics = GatewayMetrics()
        self.dashboard: DashboardStats | None = None  # needs the router's pool: set once the workers run
        self.backend_names = frozenset(b.name for b in config.backends)
        self.batcher: RoutingBatcher | None = None
        self.dispatcher: Dispatcher | None = None
        self.upstreams: dict[str, Upstream] = {}
        self._probe_session: aiohttp.ClientSession | None = None  # /readyz: never queued behind traffic
        self._in_flight = 0
        self._readiness: tuple[float, dict[str, Any]] | None = None
        self._target_lams: dict[float, float] = {}

    @classmethod
    def load(cls, config: GatewayConfig) -> Gateway:
        """Check the keys the config names are set; one-line errors (the router: :meth:`start_router`)."""
        for backend in config.backends:
            backend.api_key()  # fails now, not on the first request, when its env var is unset
        keys = () if config.auth.disabled else config.auth.load_keys(config.source)
        return cls(config, keys)

    def lam_for_target(self, target: float) -> float:
        """λ for ``entrorouter@<target>``: the router's calibration curve (as its workers
        reported it), cached per target."""
        if target not in self._target_lams:
            from entrorouter.router.calibration import Calibration

            assert self.router is not None
            if self.router.calibration is None:
                raise EntroRouterError(
                    "this router has no calibration curve (trained with calibration_folds = 0): route with a λ instead"
                )
            curve = Calibration.from_dict(self.router.calibration, source=str(self.config.router))
            self._target_lams[target] = curve.lam_for(target)
        return self._target_lams[target]

    # ------------------------------------------------------------ lifecycle
    def start_router(self) -> None:
        """Start the router workers, wait until they are warm, check the pool (blocking; one-line errors).

        ``entrorouter serve`` calls this before opening its socket, so a router that cannot
        route, or a config that does not match its pool, fails startup with one clear line;
        :meth:`start` calls it when nobody did.
        """
        routing = self.config.routing
        batcher = RoutingBatcher(
            self.config.router,
            workers=routing.router_workers,
            torch_threads=routing.torch_threads,
            max_batch_size=routing.batch_max_size,
            max_wait_s=routing.batch_max_wait_ms / 1000,
            inline_max_ms=routing.inline_max_ms,
            on_batch=self._observe_batch,
            on_restart=lambda worker: self.metrics.router_restarts.labels(worker).inc(),
        )
        try:
            summary = batcher.start()
            check_pool(self.config, summary.models)
        except RoutingError as exc:
            batcher.close()
            raise EntroRouterError(f"{self.config.router}: {exc}") from None
        except ConfigError:
            batcher.close()
            raise
        self.batcher, self.router = batcher, summary
        self.dashboard = DashboardStats(summary)

    async def start(self) -> None:
        if self.batcher is None:
            await asyncio.to_thread(self.start_router)
        self._probe_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        breaker = self.config.circuit_breaker
        for backend in self.config.backends:
            gauge = self.metrics.circuit_open.labels(backend.name)
            gauge.set(0)
            self.upstreams[backend.name] = Upstream(
                backend,
                CircuitBreaker(
                    breaker.failure_threshold,
                    breaker.cooldown_s,
                    on_change=lambda state, gauge=gauge: gauge.set(state is not CircuitState.CLOSED),
                ),
            )
        self.dispatcher = Dispatcher(
            self.upstreams,
            self.config.retry,
            self.metrics,
            slot_wait_s=self.config.limits.backend_wait_s,
        )
        log.info(
            "gateway started",
            extra={
                "fields": {
                    "models": list(self.router.models),
                    "default_lam": self.router.lam,
                    "route_ms": round(self.batcher.route_ms, 3),
                    "routes_in_gateway": self.batcher.routes_here,
                }
            },
        )

    async def stop(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.aclose()
        if self._probe_session is not None:
            await self._probe_session.close()
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.close)
        log.info("gateway stopped")

    def _observe_batch(self, worker: str, size: int, waits: list[float], seconds: float) -> None:
        """Per-worker batch metrics (runs on the worker's collector thread)."""
        self.metrics.routing_batch_size.labels(worker).observe(size)
        self.metrics.router_inference_seconds.labels(worker).observe(seconds)
        queue_seconds = self.metrics.routing_queue_seconds.labels(worker)
        for wait in waits:
            queue_seconds.observe(wait)

    # ------------------------------------------------------------ chat completions
    async def chat_completions(self, request: Request) -> Response:
        received = time.perf_counter()
        record: dict[str, Any] = {"request_id": _request_id(request), "stream": False}
        try:
            self._authorize(request)
            if self._in_flight >= self.config.limits.max_in_flight:
                raise ApiError(
                    503,
                    "the gateway is at its concurrency limit; retry shortly",
                    type="api_error",
                    code="overloaded",
                    headers={"retry-after": str(OVERLOADED_RETRY_AFTER_S)},
                )
        except ApiError as exc:
            return self._log_after_sending(self._refused(exc, record), record, received)
        self._in_flight += 1
        self.metrics.in_flight.inc()
        try:
            response = await self._answer(request, record, received)
        except Exception:  # a bug: answered with the request's id, logged once, counted
            log.exception("unhandled error", extra={"fields": {"request_id": record["request_id"]}})
            self.metrics.errors.labels(record.get("chosen", "none"), "internal_error").inc()
            error = ApiError(500, "internal error; see the gateway log", type="api_error", code="internal_error")
            response = self._error_response(error, record)
        except BaseException:
            self._request_done(record, received)
            raise
        if isinstance(response, RelayResponse):  # its on_close finishes the request
            return response
        self._release_slot()
        return self._log_after_sending(response, record, received)

    async def _answer(self, request: Request, record: dict[str, Any], received: float) -> Response:
        """The response, or — if the client disconnects before it starts — nothing, at once.

        A watcher waits for the client's disconnect while the request is routed and the
        backend answers; if it comes first the handler is cancelled, which cancels the
        backend call and releases its slot without a verdict for the circuit breaker.
        """
        try:
            async with asyncio.timeout(self.config.limits.body_timeout_s):
                raw = await read_body(request, self.config.limits.max_body_bytes)
        except ApiError as exc:
            return self._refused(exc, record)
        except TimeoutError:
            timeout = self.config.limits.body_timeout_s
            exc = ApiError(408, f"the request body did not arrive within {timeout:g} s", code="request_timeout")
            return self._refused(exc, record)
        except ClientDisconnect:
            return self._client_left(record)
        handler = asyncio.current_task()
        assert handler is not None
        left = False

        async def watch() -> None:
            nonlocal left
            while (await request.receive())["type"] != "http.disconnect":
                pass
            left = True
            handler.cancel()

        watcher = asyncio.create_task(watch())
        try:
            return await self._route_and_forward(raw, record, received)
        except asyncio.CancelledError:
            if not left:
                raise  # shutdown, not the client
            handler.uncancel()
            return self._client_left(record)
        finally:
            watcher.cancel()

    def _client_left(self, record: dict[str, Any]) -> Response:
        record.update(status=CLIENT_LEFT_STATUS, error="client_left")
        self.metrics.errors.labels(record.get("chosen", "none"), "client_left").inc()
        return Response(status_code=CLIENT_LEFT_STATUS)  # nobody is there to read it

    async def _route_and_forward(self, raw: bytes, record: dict[str, Any], received: float) -> Response:
        try:
            assert self.router is not None
            chat = parse_chat_request(parse_json_body(raw), self.backend_names, self.router.lam, self.lam_for_target)
        except ApiError as exc:
            return self._refused(exc, record)
        record.update(model=chat.body["model"][:100], stream=chat.stream)
        text = routing_text(chat.body["messages"], self.config.routing.max_text_chars)
        if self.config.logging.include_text:
            record["text"] = text
        try:
            decision = await self._decide(chat, text)
        except Exception:
            log.exception("routing failed", extra={"fields": {"request_id": record["request_id"]}})
            exc = ApiError(500, "routing failed; see the gateway log", type="api_error", code="routing_failed")
            return self._refused(exc, record, reason="routing_failed")
        record.update(chosen=decision.chosen, route_ms=decision.route_ms)
        self.dashboard.routed(decision.chosen, text, decision.route_ms)
        self.metrics.requests.labels(decision.chosen, str(chat.stream).lower()).inc()
        return await self._forward(chat, decision, record, received)

    async def _forward(
        self, chat: ChatRequest, decision: Decision, record: dict[str, Any], received: float
    ) -> Response:
        """Send the request along ``decision`` and turn the outcome into the client's response."""
        assert self.dispatcher is not None
        try:
            if chat.stream:
                start = await self.dispatcher.open_stream(decision, chat.body, record["request_id"])
                return self._stream_response(start, decision, record, received)
            completion = await self.dispatcher.complete(decision, chat.body, record["request_id"])
        except NoBackendAnswered as exc:
            self.metrics.errors.labels(decision.chosen, "no_backend").inc()
            code = "backend_unavailable" if exc.status == 503 else "backend_failed"
            return self._error_response(ApiError(exc.status, str(exc), type="api_error", code=code), record)
        except UpstreamRejected as exc:
            self.metrics.errors.labels(decision.chosen, "rejected_by_backend").inc()
            record.update(status=exc.status, backend=exc.backend)
            return JSONResponse({"error": exc.error}, exc.status, headers={"x-request-id": record["request_id"]})
        except RateLimited as exc:  # only for a backend the client named (routed requests fall back)
            self.metrics.errors.labels(decision.chosen, "rate_limited").inc()
            record.update(status=429, backend=exc.backend, error="rate_limited")
            headers = {"x-request-id": record["request_id"]}
            if exc.retry_after is not None:
                headers["retry-after"] = exc.retry_after
            return JSONResponse({"error": exc.error}, 429, headers=headers)
        record.update(status=completion.status, backend=completion.backend, fallbacks=completion.fallbacks)
        self.metrics.answered.labels(completion.backend).inc()
        headers = self._answer_headers(record, completion.backend, decision, completion.fallbacks)
        return Response(completion.body, completion.status, headers=headers, media_type="application/json")

    async def _decide(self, chat: ChatRequest, text: str) -> Decision:
        """Where the request goes: the backend the client named, or the router's ranking."""
        if chat.direct is not None:
            return Decision(chosen=chat.direct, candidates=(chat.direct,), max_attempts=1)
        assert self.batcher is not None and chat.lam is not None
        started = time.perf_counter()
        if self.batcher.routes_here and self._in_flight <= self.config.routing.inline_max_in_flight:
            result = self.batcher.route_here(text, chat.lam)
        else:
            result = await self.batcher.route(text, chat.lam)
        seconds = time.perf_counter() - started
        self.metrics.routing_seconds.observe(seconds)
        return Decision(
            chosen=result.model,
            candidates=result.ranking,
            max_attempts=self.config.fallback.max_backends,
            route_ms=seconds * 1000,
        )

    def _stream_response(
        self, start: StreamStart, decision: Decision, record: dict[str, Any], received: float
    ) -> Response:
        assert self.dispatcher is not None
        record.update(status=200, backend=start.backend, fallbacks=start.fallbacks)
        self.metrics.answered.labels(start.backend).inc()

        def first_chunk() -> None:
            self.metrics.time_to_first_token.labels(start.backend).observe(time.perf_counter() - received)

        async def on_close() -> None:
            await start.call.finish(None)  # no-op unless the relay never ran (client gone first)
            record["stream_outcome"] = start.outcome
            self._request_done(record, received)

        headers = self._answer_headers(record, start.backend, decision, start.fallbacks)
        headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
        body = self.dispatcher.relay(start, decision.chosen, first_chunk)
        return RelayResponse(body, on_close, headers=headers, media_type="text/event-stream")

    @staticmethod
    def _answer_headers(record: dict[str, Any], backend: str, decision: Decision, fallbacks: int) -> dict[str, str]:
        headers = {"x-request-id": record["request_id"], "x-entrorouter-model": backend}
        if decision.route_ms is not None:
            headers["x-entrorouter-route-ms"] = f"{decision.route_ms:.2f}"
        headers["x-entrorouter-fallbacks"] = str(fallbacks)
        return headers

    def _refused(self, exc: ApiError, record: dict[str, Any], *, reason: str | None = None) -> Response:
        """The error response for a request refused before a model was chosen."""
        self.metrics.rejected.labels(reason or REJECT_REASONS.get(exc.status, str(exc.status))).inc()
        return self._error_response(exc, record)

    @staticmethod
    def _error_response(exc: ApiError, record: dict[str, Any]) -> Response:
        record.update(status=exc.status, error=exc.code or exc.type)
        return JSONResponse(exc.body(), exc.status, headers={**exc.headers, "x-request-id": record["request_id"]})

    def _release_slot(self) -> None:
        self._in_flight -= 1
        self.metrics.in_flight.dec()

    def _request_done(self, record: dict[str, Any], received: float) -> None:
        self._release_slot()
        self._log_request(record, received)

    def _log_request(self, record: dict[str, Any], received: float) -> None:
        record["duration_ms"] = round((time.perf_counter() - received) * 1000, 2)
        if record.get("route_ms") is not None:
            record["route_ms"] = round(record["route_ms"], 2)
        log.info("chat completion", extra={"fields": record})
        if self.dashboard is not None:
            self.dashboard.finished(record)

    def _log_after_sending(self, response: Response, record: dict[str, Any], received: float) -> Response:
        """``response``, logging the request once it has been sent: before sending, the JSON
        log line was the largest single cost the named path added to a request's latency."""

        async def log_request() -> None:  # async: Starlette runs a plain function in a thread
            self._log_request(record, received)

        response.background = BackgroundTask(log_request)
        return response

    def _authorize(self, request: Request) -> None:
        """401 unless the request carries one of the client keys (constant-time comparison)."""
        if self.config.auth.disabled:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        presented = token.strip().encode()
        valid = False
        for key in self.client_keys:  # compare with every key: the time does not say which matched
            valid |= hmac.compare_digest(presented, key)
        if scheme.lower() != "bearer" or not valid:
            raise ApiError(
                401, "missing or invalid API key (send 'Authorization: Bearer <key>')", code="invalid_api_key"
            )

    # ------------------------------------------------------------ other endpoints
    async def list_models(self, request: Request) -> Response:
        try:
            self._authorize(request)
        except ApiError as exc:
            return JSONResponse(exc.body(), exc.status)
        ids = [ROUTER_MODEL, *(b.name for b in self.config.backends)]
        return JSONResponse({"object": "list", "data": [_model_object(name) for name in ids]})

    async def retrieve_model(self, request: Request) -> Response:
        """``GET /v1/models/{id}`` (the openai SDK's ``models.retrieve``): a name ``list_models`` lists."""
        try:
            self._authorize(request)
            name = request.path_params["model"]
            if name != ROUTER_MODEL and name not in self.backend_names:
                raise ApiError(404, f"the model {name[:100]!r} does not exist", param="model", code="model_not_found")
        except ApiError as exc:
            return JSONResponse(exc.body(), exc.status)
        return JSONResponse(_model_object(name))

    async def healthz(self, request: Request) -> Response:
        """Alive, unless no router worker runs or can be restarted: only a restart brings routing back."""
        if self.batcher is not None and not self.batcher.alive:
            return JSONResponse({"status": "router workers down"}, 503)
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Ready: the router is loaded and warm, and a backend with a usable circuit answers HTTP."""
        report = await self._readiness_report()
        return JSONResponse(report, 200 if report["ready"] else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def _readiness_report(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._readiness is not None and now - self._readiness[0] < READINESS_CACHE_S:
            return self._readiness[1]
        names = list(self.upstreams)
        reachable = await asyncio.gather(*(self._reachable(self.upstreams[n]) for n in names))
        backends = {
            name: {"reachable": ok, "circuit": self.upstreams[name].breaker.state.value}
            for name, ok in zip(names, reachable, strict=True)
        }
        router_ready = self.batcher is not None and self.batcher.alive
        usable = any(b["reachable"] and b["circuit"] != CircuitState.OPEN.value for b in backends.values())
        report = {"ready": router_ready and usable, "router": router_ready, "backends": backends}
        self._readiness = (now, report)
        return report

    async def _reachable(self, upstream: Upstream) -> bool:
        """Whether the backend's server answers HTTP at all (any status: it is up)."""
        assert self._probe_session is not None
        try:  # through the backend's proxy, as its calls go
            async with self._probe_session.get(
                upstream.config.models_url, timeout=READINESS_PROBE_TIMEOUT, proxy=upstream.proxy
            ):
                return True
        except TRANSPORT_ERRORS:
            return False


class RelayResponse(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends (completed, cut, cancelled).

    Starlette cancels the body task when the client disconnects, possibly before the body
    generator ever started, in which case the generator's own ``finally`` never runs: this
    is where the backend call, its slot and the request's bookkeeping are released.
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]  # an async generator
            await self._on_close()


# ------------------------------------------------------------------ helpers
def check_pool(config: GatewayConfig, models: tuple[str, ...]) -> None:
    """Every model of the router's pool needs a backend, and every backend a pool model."""
    names = [b.name for b in config.backends]
    missing = [m for m in models if m not in names]
    extra = [n for n in names if n not in models]
    if missing or extra:
        problems = ([f"no backend for {missing}"] if missing else []) + ([f"{extra} not in the pool"] if extra else [])
        raise ConfigError(
            f"{config.source}: backends do not match the router's pool {list(models)}: {'; '.join(problems)}"
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes."""

    def too_large() -> ApiError:
        return ApiError(413, f"the request body exceeds the limit of {limit} bytes", code="request_too_large")

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "entrorouter"}


def _request_id(request: Request) -> str:
    """The client's ``x-request-id`` when it is a plain token, else a fresh one."""
    given = request.headers.get("x-request-id", "")
    return given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    error = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)
    return JSONResponse(error.body(), exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"fields": {"path": request.url.path}})
    error = ApiError(500, "internal error; see the gateway log", type="api_error", code="internal_error")
    return JSONResponse(error.body(), 500)


def create_app(gateway: Gateway) -> Starlette:
    """The ASGI application; its lifespan starts and stops ``gateway``."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:  # stop() also cleans up after a start() that failed half-way
            await gateway.start()
            yield
        finally:
            await gateway.stop()

    routes = [
        Route("/v1/chat/completions", gateway.chat_completions, methods=["POST"]),
        Route("/v1/models", gateway.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", gateway.retrieve_model, methods=["GET"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
        *dashboard_routes(gateway),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
