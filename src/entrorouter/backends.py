"""OpenAI-compatible backends: the configuration shared by `serve` and `collect`, one
retrying HTTP call, and connections held in small pools (:class:`ClientShards`).

A backend entry in YAML (the gateway's ``gateway.yaml`` and the collector's ``pool.yaml``
use the same format)::

    backends:
      - name: gpt-4-1106-preview        # the model's name in the pool / router
        base_url: https://api.openai.com/v1
        model: gpt-4-1106-preview       # the id the backend expects (default: name)
        api_key_env: OPENAI_API_KEY     # env var holding the key (optional)
        timeout_s: 60                   # read timeout per attempt
        connect_timeout_s: 5
        max_concurrency: 16             # in-flight requests to this backend
        max_retries: 2                  # on connection errors, 429 and 5xx
        price: {input: 10.0, output: 30.0}   # US$ per 1M tokens (collect needs it)

Keys are read from the environment when a request is made and never logged: a
:class:`BackendConfig` prints ``api_key_env``, never the key.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from entrorouter.errors import ConfigError

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class BackendConfig:
    """One OpenAI-compatible endpoint serving one model of the pool."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    max_concurrency: int = 16
    max_retries: int = 2
    input_price: float | None = None
    output_price: float | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def api_key(self) -> str | None:
        """The key from ``api_key_env`` (read now, so rotation needs no restart)."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "").strip()  # a secret file's trailing newline is no part of it
        if not key:
            raise ConfigError(f"backend {self.name!r}: environment variable {self.api_key_env} is not set")
        if not key.isprintable():
            raise ConfigError(
                f"backend {self.name!r}: the key in {self.api_key_env} holds a control character, "
                "which an HTTP header cannot carry"
            )
        return key

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.extra_headers}
        key = self.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @property
    def models_url(self) -> str:
        """``GET`` it to see whether the server answers at all (start-up and readiness checks)."""
        return self.base_url.rstrip("/") + "/models"

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float | None:
        """US$ for one call, or None when the backend has no price."""
        if self.input_price is None or self.output_price is None:
            return None
        return (prompt_tokens * self.input_price + completion_tokens * self.output_price) / 1e6


# ------------------------------------------------------------------ parsing
def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping from ``path``, with one-line errors."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def number_field(entry: dict[str, Any], key: str, where: str, default: float, *, minimum: float = 0.0) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"{where}.{key}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def parse_backends(raw: Any, source: str) -> list[BackendConfig]:
    """Validate the ``backends:`` list of a config; errors name ``source`` and the field."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: 'backends' must be a non-empty list")
    backends, seen = [], set()
    for i, entry in enumerate(raw):
        where = f"{source}: backends[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping with name and base_url")
        known = {
            "name",
            "base_url",
            "model",
            "api_key_env",
            "timeout_s",
            "connect_timeout_s",
            "max_concurrency",
            "max_retries",
            "price",
            "headers",
        }
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(known)}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: expected a non-empty string")
        if name in seen:
            raise ConfigError(f"{where}.name: backend {name!r} is configured twice")
        seen.add(name)
        url = entry.get("base_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.base_url: expected an http(s) URL, got {url!r}")
        key_env = entry.get("api_key_env")
        if key_env is not None and (not isinstance(key_env, str) or not key_env):
            raise ConfigError(f"{where}.api_key_env: expected the name of an environment variable")
        price = entry.get("price")
        in_price = out_price = None
        if price is not None:
            if not isinstance(price, dict):
                raise ConfigError(f"{where}.price: expected {{input: <US$/1M>, output: <US$/1M>}}")
            missing = [key for key in ("input", "output") if key not in price]
            if missing:
                raise ConfigError(
                    f"{where}.price.{missing[0]}: missing; expected {{input: <US$/1M>, output: <US$/1M>}}"
                )
            in_price = number_field(price, "input", f"{where}.price", 0.0)
            out_price = number_field(price, "output", f"{where}.price", 0.0)
        headers = entry.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ConfigError(f"{where}.headers: expected a mapping of header -> string")
        backends.append(
            BackendConfig(
                name=name,
                base_url=url,
                model=str(entry.get("model") or name),
                api_key_env=key_env,
                timeout_s=number_field(entry, "timeout_s", where, 60.0, minimum=0.001),
                connect_timeout_s=number_field(entry, "connect_timeout_s", where, 5.0, minimum=0.001),
                max_concurrency=int(number_field(entry, "max_concurrency", where, 16, minimum=1)),
                max_retries=int(number_field(entry, "max_retries", where, 2)),
                input_price=in_price,
                output_price=out_price,
                extra_headers={str(k): v for k, v in headers.items()},
            )
        )
    return backends


def require_api_key(backend: BackendConfig, where: str) -> None:
    """Fail now, naming the config entry ``where``, when the backend's ``api_key_env`` is not set."""
    if backend.api_key_env and not os.environ.get(backend.api_key_env):
        raise ConfigError(f"{where}.api_key_env: environment variable {backend.api_key_env} is not set")


# ------------------------------------------------------------------ retries
@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; ``Retry-After`` wins when the server sends it."""

    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        hinted = parse_retry_after(retry_after)
        if hinted is not None:
            return min(hinted, self.max_retry_after_s)
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class BackendError(Exception):
    """A backend call that failed after its retries (status None: no HTTP answer)."""

    def __init__(
        self, backend: str, message: str, status: int | None = None, body: Any = None, *, detail: str | None = None
    ) -> None:
        super().__init__(f"backend {backend!r}: {message}")
        self.backend, self.status, self.body = backend, status, body
        self.reason = message  # what went wrong, fit for a client's eyes
        self.detail = detail or message  # for the operator's log: may name the backend's host


@dataclass
class ChatResponse:
    """A successful non-streaming call."""

    body: dict[str, Any]
    status: int
    latency_s: float
    attempts: int
    headers: dict[str, str]

    @property
    def content(self) -> str | None:
        """The first choice's message text; None when the body has none."""
        try:
            content = self.body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return None
        return content if isinstance(content, str) else None


async def post_chat_completion(
    client: httpx.AsyncClient,
    backend: BackendConfig,
    body: dict[str, Any],
    *,
    policy: RetryPolicy | None = None,
) -> ChatResponse:
    """POST ``body`` to the backend's ``/chat/completions`` with retries.

    Retries connection errors, timeouts, 429 and 5xx up to ``backend.max_retries`` times,
    honouring ``Retry-After``. Other 4xx answers are final. ``body["model"]`` is replaced
    by the backend's model id. Raises :class:`BackendError` when every attempt failed.
    """
    policy = policy or RetryPolicy()
    payload = {**body, "model": backend.model}
    last: BackendError | None = None
    for attempt in range(1, backend.max_retries + 2):
        start = time.perf_counter()
        retry_after = None
        try:
            response = await client.post(
                backend.chat_url, json=payload, headers=backend.headers(), timeout=backend.timeout()
            )
        except httpx.TransportError as exc:
            last = BackendError(backend.name, describe_error(exc))
        else:
            latency = time.perf_counter() - start
            if response.status_code < 400:
                try:
                    data = response.json()
                except ValueError:
                    last = BackendError(backend.name, "answered with invalid JSON", response.status_code)
                else:
                    return ChatResponse(data, response.status_code, latency, attempt, dict(response.headers))
            else:
                last = BackendError(
                    backend.name,
                    f"HTTP {response.status_code}",
                    response.status_code,
                    _safe_json(response),
                )
                if response.status_code not in RETRYABLE_STATUS:
                    raise last
                retry_after = response.headers.get("retry-after")
        if attempt <= backend.max_retries:
            await asyncio.sleep(policy.delay(attempt, retry_after))
    assert last is not None
    raise last


def _safe_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def describe_error(
    exc: BaseException, transport_errors: tuple[type[BaseException], ...] = (httpx.TransportError,)
) -> str:
    """A short, key-free description of a failed call (for logs and error bodies): a network
    failure (one of ``transport_errors``, httpx's by default) is named by its type, since its
    text alone is often empty."""
    text = str(exc)
    if not isinstance(exc, transport_errors):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ClientShards:
    """HTTP clients of at most ``shard_size`` connections each, that together hold ``size``.

    httpcore's pool works on every request and response in time that grows with the square
    of the connections it holds (it lists the idle ones once per connection): with 256
    idle connections one call cost 26 ms of CPU here, against 0.9 ms with one. A burst
    that opened many connections then left a process slower than its arrival rate, and it
    never caught up. Small pools bound that work. A call takes the first shard with a free
    connection, so a quiet process uses one shard, and the connections a burst opened in
    the others lie untouched until they expire.
    """

    def __init__(self, size: int, shard_size: int = 8, **client_options: Any) -> None:
        self.capacity = [min(shard_size, size - start) for start in range(0, size, shard_size)]
        self.busy = [0] * len(self.capacity)
        self._clients: list[httpx.AsyncClient | None] = [None] * len(self.capacity)
        self._options = client_options

    def client(self, index: int) -> httpx.AsyncClient:
        """Shard ``index``'s client, made on first use (a quiet process never makes the rest)."""
        client = self._clients[index]
        if client is None:
            if "verify" not in self._options:  # one TLS context for all shards: each costs ~0.9 MB and ~20 ms
                self._options["verify"] = httpx.create_ssl_context()
            limits = httpx.Limits(max_connections=self.capacity[index], max_keepalive_connections=self.capacity[index])
            client = self._clients[index] = httpx.AsyncClient(limits=limits, **self._options)
        return client

    def take(self) -> int:
        """The index of a shard with a free connection (the least busy one when none is free)."""
        for index, busy in enumerate(self.busy):
            if busy < self.capacity[index]:
                break
        else:
            index = min(range(len(self.busy)), key=self.busy.__getitem__)
        self.busy[index] += 1
        return index

    def give_back(self, index: int) -> None:
        self.busy[index] -= 1

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[httpx.AsyncClient]:
        """The client of a shard with a free connection, for one call (:meth:`take` and
        :meth:`give_back` for a call that outlives a ``with`` block, such as a relayed stream)."""
        index = self.take()
        try:
            yield self.client(index)
        finally:
            self.give_back(index)

    async def aclose(self) -> None:
        for client in self._clients:
            if client is not None:
                await client.aclose()

    async def __aenter__(self) -> ClientShards:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
