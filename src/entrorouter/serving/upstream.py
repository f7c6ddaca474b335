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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from entrorouter.backends import (
    RETRYABLE_STATUS,
    BackendConfig,
    BackendError,
    ClientShards,
    RetryPolicy,
    describe_error,
    parse_retry_after,
)
from entrorouter.errors import ConfigError
from entrorouter.serving.breaker import CircuitBreaker

BACKEND_FAULT_STATUS = frozenset({401, 403, 404})


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

    Each backend has its own connections, sized to its ``max_concurrency`` and split into
    small pools (:class:`ClientShards`). Create it on the event loop that uses it;
    :meth:`aclose` closes the connections.
    """

    config: BackendConfig
    breaker: CircuitBreaker
    slots: asyncio.Semaphore = field(init=False)
    connections: ClientShards = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.config.max_concurrency)
        self.connections = ClientShards(self.config.max_concurrency)

    async def aclose(self) -> None:
        await self.connections.aclose()

    @property
    def name(self) -> str:
        return self.config.name

    def payload(self, body: dict[str, Any]) -> bytes:
        """The client's body, untouched except ``model`` (the id this backend expects)."""
        return json.dumps({**body, "model": self.config.model}, ensure_ascii=False, separators=(",", ":")).encode()


async def open_chat(
    client: httpx.AsyncClient,
    backend: BackendConfig,
    payload: bytes,
    *,
    policy: RetryPolicy,
    request_id: str,
    on_retry: Callable[[], None] | None = None,
) -> httpx.Response:
    """POST ``payload`` to the backend; the open 2xx response (the caller must close it).

    Raises :class:`BackendError` when every attempt failed and :class:`UpstreamRejected`
    for a 4xx that is the request's fault. ``on_retry()`` is called before each retry.
    """
    try:
        headers = {**backend.headers(), "x-request-id": request_id}  # reads the key now
    except ConfigError as exc:  # its env var was unset after startup: this backend is unusable
        raise BackendError(backend.name, str(exc)) from None
    last: BackendError | None = None
    for attempt in range(1, backend.max_retries + 2):
        retry_after = None
        request = client.build_request(
            "POST", backend.chat_url, content=payload, headers=headers, timeout=backend.timeout()
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            last = BackendError(backend.name, describe_error(exc))
        else:
            if response.status_code < 400:
                return response
            status = response.status_code
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


async def _read_error(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI-style ``error`` object of a failed response (read, then closed)."""
    try:
        body = await response.aread()
    except httpx.HTTPError:
        body = b""
    finally:
        await response.aclose()
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        return {"message": f"HTTP {response.status_code}", "type": "upstream_error", "param": None, "code": None}
    # Keep only the standard fields: nothing else from the backend reaches the client.
    return {key: error.get(key) for key in ("message", "type", "param", "code")}
