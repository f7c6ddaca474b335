"""One backend as the gateway sees it, and one call to it with retries.

:func:`open_chat` sends a chat request and returns the response as soon as its status line
and headers arrive (the body is still unread, so a stream can be relayed chunk by chunk).
It retries connection errors, timeouts, 429 and retryable 5xx with backoff, honouring
``Retry-After`` up to ``RetryPolicy.max_retry_after_s``: a backend that asks for a longer
pause is given up at once so the request falls back to the next model instead of waiting.

What an answer means for the request:

* 2xx: success, the caller reads or relays the body;
* 401, 403, 404 and every 5xx: the backend is unusable for us (a wrong key or model id, a
  broken server): :class:`~entrorouter.backends.BackendError`, the request falls back;
* any other 4xx (400, 413, 422…): the backend refused *this request* (say, an invalid tool
  schema); another model would refuse it too, so :class:`UpstreamRejected` returns the
  backend's error to the client;
* 429 after the retries: :class:`RateLimited`, a BackendError that keeps the backend's
  ``Retry-After``, so a client that named the backend gets the 429 and the pause it asked
  for (a routed request falls back like on any failure).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from entrorouter.backends import (
    RETRYABLE_STATUS,
    BackendConfig,
    BackendError,
    RetryPolicy,
    describe_error,
    parse_retry_after,
)
from entrorouter.errors import ConfigError
from entrorouter.serving.breaker import CircuitBreaker

BACKEND_FAULT_STATUS = frozenset({401, 403, 404})

#: What a failed call to a backend raises: a connection, protocol or payload error, or a timeout.
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


def env_proxy(url: str) -> str | None:
    """The proxy that the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``) names for ``url``."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def describe_failure(exc: BaseException) -> str:
    """:func:`~entrorouter.backends.describe_error` for aiohttp's transport errors."""
    return describe_error(exc, TRANSPORT_ERRORS)


def failure_reasons(exc: BaseException) -> tuple[str, str]:
    """How a failed backend call is described: ``(to the client, to the log)``. The client is
    told the kind of failure; a network error's text, which names the backend's host and
    port, goes only to the log (as ``/readyz`` shows no URL either)."""
    if isinstance(exc, BackendError):
        return exc.reason, exc.detail
    if isinstance(exc, TRANSPORT_ERRORS):
        return type(exc).__name__, describe_failure(exc)
    return str(exc), str(exc)  # the gateway's own words (an answer that is no chat completion)


class UpstreamRejected(Exception):
    """The backend refused the request itself (4xx): the client gets its error."""

    def __init__(self, backend: str, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"backend {backend!r} refused the request with HTTP {status}")
        self.backend, self.status, self.error = backend, status, error


class RateLimited(BackendError):
    """The backend still answered 429 after the retries; ``retry_after`` is its header (or None)."""

    def __init__(self, backend: str, error: dict[str, Any], retry_after: str | None) -> None:
        super().__init__(backend, "HTTP 429", 429, error)
        self.error, self.retry_after = error, retry_after


@dataclass
class Upstream:
    """A configured backend with its circuit breaker, concurrency slots and connection pool.

    Each backend has its own aiohttp session, whose pool holds up to ``max_concurrency``
    connections (the slots never let more calls in). aiohttp rather than httpx: as a bare
    pass-through it adds about half the latency and answers twice the requests per second
    (``benchmarks/bench_gateway.py`` measures both). Create it on the event loop that uses
    it; :meth:`aclose` closes the connections.
    """

    config: BackendConfig
    breaker: CircuitBreaker
    slots: asyncio.Semaphore = field(init=False)
    session: aiohttp.ClientSession = field(init=False)
    proxy: str | None = field(init=False)
    timeout: aiohttp.ClientTimeout = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.config.max_concurrency)
        connector = aiohttp.TCPConnector(limit=self.config.max_concurrency, limit_per_host=0)
        # No cookie jar: one client's cookies must never ride on another's request. The
        # environment's proxy is read once here: aiohttp's trust_env would look it (and
        # ~/.netrc) up in a worker thread on every call, two thread hops per request.
        self.session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        self.proxy = env_proxy(self.config.chat_url)
        # timeout_s bounds each wait for the backend (connect aside), not the whole answer,
        # so a long stream that keeps sending is never cut.
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=self.config.connect_timeout_s, sock_read=self.config.timeout_s
        )

    async def aclose(self) -> None:
        await self.session.close()

    @property
    def name(self) -> str:
        return self.config.name

    def payload(self, body: dict[str, Any]) -> bytes:
        """The client's body, untouched except ``model`` (the id this backend expects)."""
        return json.dumps({**body, "model": self.config.model}, ensure_ascii=False, separators=(",", ":")).encode()


async def open_chat(
    upstream: Upstream,
    payload: bytes,
    *,
    policy: RetryPolicy,
    request_id: str,
    on_retry: Callable[[], None] | None = None,
) -> aiohttp.ClientResponse:
    """POST ``payload`` to the backend; the open 2xx response (the caller must release or close it).

    Raises :class:`BackendError` when every attempt failed and :class:`UpstreamRejected`
    for a 4xx that is the request's fault. ``on_retry()`` is called before each retry.
    """
    backend = upstream.config
    try:
        headers = {**backend.headers(), "x-request-id": request_id}  # reads the key now
    except ConfigError as exc:  # its env var was unset after startup: this backend is unusable
        raise BackendError(backend.name, str(exc).removeprefix(f"backend {backend.name!r}: ")) from None
    last: BackendError | None = None
    for attempt in range(1, backend.max_retries + 2):
        retry_after = None
        try:
            response = await upstream.session.post(
                backend.chat_url, data=payload, headers=headers, timeout=upstream.timeout, proxy=upstream.proxy
            )
        except TRANSPORT_ERRORS as exc:
            last = BackendError(backend.name, type(exc).__name__, detail=describe_failure(exc))
        else:
            if response.status < 400:
                return response
            status = response.status
            error = await _read_error(response)
            if status not in RETRYABLE_STATUS and status < 500 and status not in BACKEND_FAULT_STATUS:
                raise UpstreamRejected(backend.name, status, error)
            retry_after = response.headers.get("retry-after")
            if status == 429:
                last = RateLimited(backend.name, error, retry_after)
            else:
                last = BackendError(backend.name, f"HTTP {status}", status, error)
            if status not in RETRYABLE_STATUS:
                break
        if attempt > backend.max_retries:
            break
        hinted = parse_retry_after(retry_after)
        if hinted is not None and hinted > policy.max_retry_after_s:
            break  # the backend asks for a longer pause than a waiting client should get
        if on_retry is not None:
            on_retry()
        await asyncio.sleep(policy.delay(attempt, retry_after))
    assert last is not None
    raise last


async def _read_error(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The OpenAI-style ``error`` object of a failed response (read, then released)."""
    try:
        body = await response.read()
    except TRANSPORT_ERRORS:
        body = b""
    finally:
        response.release()
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        return {"message": f"HTTP {response.status}", "type": "upstream_error", "param": None, "code": None}
    # Keep only the standard fields: nothing else from the backend reaches the client.
    return {key: error.get(key) for key in ("message", "type", "param", "code")}
