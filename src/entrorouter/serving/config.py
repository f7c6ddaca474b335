"""The gateway's configuration (``gateway.yaml``), validated up front.

Every value is checked when the file is read, so a bad config fails at startup with one
line naming the file and the field, never on the first request. ``docs/gateway.md`` is the
user-facing reference; ``examples/gateway.yaml`` is a commented example.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrorouter.backends import BackendConfig, RetryPolicy, load_yaml, parse_backends
from entrorouter.errors import ConfigError
from entrorouter.threads import usable_cores

#: The model name clients send to have the router choose; ``ROUTER_MODEL:<λ>`` sets λ and
#: ``ROUTER_MODEL@<target retention>`` (e.g. entrorouter@0.98) asks for a share of the strongest model.
ROUTER_MODEL = "entrorouter"
LOG_LEVELS = ("debug", "info", "warning", "error")


class _FieldError(ValueError):
    """A bad value of the config field ``name`` (located in the file by the parser)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise _FieldError(name, message)


@dataclass(frozen=True)
class ServerConfig:
    """Where to listen, how long an idle client connection stays open, and how long a
    shutdown waits for in-flight requests."""

    host: str = "127.0.0.1"
    port: int = 8000
    drain_timeout_s: float = 30.0
    keep_alive_s: float = 75.0
    """How long an idle client connection is kept open. Longer than clients' own idle limit
    (httpx and the openai SDK: 5 s) and load balancers' (60 s is common), so that the
    client side closes an idle connection: when the gateway closes one just as a request
    arrives on it, that request is lost to a connection reset (uvicorn's default, 5 s, was
    equal to httpx's)."""

    def __post_init__(self) -> None:
        _require(0 <= self.port <= 65535, "port", "expected a port number 0..65535")
        _require(self.drain_timeout_s >= 0, "drain_timeout_s", "expected a number >= 0")
        _require(self.keep_alive_s > 0, "keep_alive_s", "expected a number > 0")


@dataclass(frozen=True)
class AuthConfig:
    """Client authentication: the env vars holding accepted keys, or none at all."""

    api_key_envs: tuple[str, ...] = ()
    disabled: bool = False

    def __post_init__(self) -> None:
        _require(
            self.disabled or bool(self.api_key_envs),
            "api_key_envs",
            "list the environment variables holding client keys (or set auth.disabled: true)",
        )
        _require(
            not (self.disabled and self.api_key_envs),
            "disabled",
            "auth.disabled: true contradicts auth.api_key_envs",
        )

    def load_keys(self, source: str) -> tuple[bytes, ...]:
        """The accepted keys, read from the environment now (startup fails if one is unset)."""
        keys = []
        for env in self.api_key_envs:
            value = os.environ.get(env, "").strip()  # as a presented key is: a trailing newline is no part of it
            if not value:
                raise ConfigError(f"{source}: auth.api_key_envs: environment variable {env} is not set")
            keys.append(value.encode())
        return tuple(keys)


@dataclass(frozen=True)
class LimitsConfig:
    """Request limits: body size (413 beyond), how long a body may take to arrive (408 beyond;
    a stalled upload would hold a concurrency slot), concurrent chat requests (503 beyond), and
    how long a request queues for a backend that is at its ``max_concurrency``."""

    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout_s: float = 30.0
    max_in_flight: int = 1024
    backend_wait_s: float = 5.0

    def __post_init__(self) -> None:
        _require(self.max_body_bytes >= 1, "max_body_bytes", "expected an integer >= 1")
        _require(self.body_timeout_s > 0, "body_timeout_s", "expected a number > 0")
        _require(self.max_in_flight >= 1, "max_in_flight", "expected an integer >= 1")
        _require(self.backend_wait_s >= 0, "backend_wait_s", "expected a number >= 0")


@dataclass(frozen=True)
class RoutingConfig:
    """What text is routed on, how many router worker processes route it, how it is micro-batched."""

    max_text_chars: int = 2000
    router_workers: int = field(default_factory=usable_cores)  # one per core
    batch_max_size: int = 32
    batch_max_wait_ms: float = 2.0
    torch_threads: int = 1
    inline_max_ms: float = 2.0  # the gateway routes itself when one text takes at most this (0: never)
    inline_max_in_flight: int = 4  # ... and at most this many requests are in flight (more: the workers)

    def __post_init__(self) -> None:
        _require(1 <= self.router_workers <= 64, "router_workers", "expected an integer 1..64")
        _require(0 <= self.inline_max_ms <= 1000, "inline_max_ms", "expected 0..1000 (milliseconds)")
        _require(self.inline_max_in_flight >= 1, "inline_max_in_flight", "expected an integer >= 1")
        _require(self.max_text_chars >= 1, "max_text_chars", "expected an integer >= 1")
        _require(self.batch_max_size >= 1, "batch_max_size", "expected an integer >= 1")
        _require(0 <= self.batch_max_wait_ms <= 1000, "batch_max_wait_ms", "expected 0..1000 (milliseconds)")
        _require(self.torch_threads >= 1, "torch_threads", "expected an integer >= 1")


@dataclass(frozen=True)
class RetryConfig(RetryPolicy):
    """Backoff between retries of one backend (the retry count is per backend): the shared
    :class:`RetryPolicy` with shorter waits, since a client is waiting on the gateway."""

    base_delay_s: float = 0.1
    max_delay_s: float = 2.0
    max_retry_after_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("base_delay_s", "max_delay_s", "max_retry_after_s"):
            _require(getattr(self, name) >= 0, name, "expected a number >= 0")


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """Open a backend's circuit after this many consecutive failures; probe after the cool-down."""

    failure_threshold: int = 5
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        _require(self.failure_threshold >= 1, "failure_threshold", "expected an integer >= 1")
        _require(self.cooldown_s >= 0, "cooldown_s", "expected a number >= 0")


@dataclass(frozen=True)
class FallbackConfig:
    """How many backends one routed request may be sent to (skipped ones do not count)."""

    max_backends: int = 3

    def __post_init__(self) -> None:
        _require(self.max_backends >= 1, "max_backends", "expected an integer >= 1")


@dataclass(frozen=True)
class LoggingConfig:
    """JSON logs on stderr; request text only when ``include_text`` is switched on."""

    level: str = "info"
    include_text: bool = False

    def __post_init__(self) -> None:
        _require(self.level in LOG_LEVELS, "level", f"expected one of {list(LOG_LEVELS)}")


@dataclass(frozen=True)
class GatewayConfig:
    """The whole ``gateway.yaml``."""

    router: Path
    backends: tuple[BackendConfig, ...]
    auth: AuthConfig
    source: str = "gateway config"
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# The optional sections of gateway.yaml and the dataclass each one fills.
SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "auth": AuthConfig,
    "limits": LimitsConfig,
    "routing": RoutingConfig,
    "retry": RetryConfig,
    "circuit_breaker": CircuitBreakerConfig,
    "fallback": FallbackConfig,
    "logging": LoggingConfig,
}


def load_gateway_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate ``gateway.yaml``; relative paths are relative to the file."""
    path = Path(path)
    return parse_gateway_config(load_yaml(path), source=str(path), base_dir=path.parent)


def parse_gateway_config(raw: dict[str, Any], *, source: str, base_dir: Path) -> GatewayConfig:
    """Validate a config mapping; every error is one line naming ``source`` and the field."""
    known = {"router", "backends", *SECTIONS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; expected some of {sorted(known)}")
    router = raw.get("router")
    if not isinstance(router, str) or not router:
        raise ConfigError(f"{source}: router: expected the path of a router directory (from `entrorouter train`)")
    backends = tuple(parse_backends(raw.get("backends"), source))
    for backend in backends:
        if backend.name == ROUTER_MODEL or backend.name.startswith((ROUTER_MODEL + ":", ROUTER_MODEL + "@")):
            raise ConfigError(f"{source}: backend name {backend.name!r} is reserved for the router")
    # A missing ``auth`` section fails in AuthConfig: an open gateway must be asked for.
    sections = {name: _parse_section(raw.get(name), name, cls, source) for name, cls in SECTIONS.items()}
    return GatewayConfig(router=(base_dir / router), backends=backends, source=source, **sections)


# ------------------------------------------------------------------ helpers
def _parse_section(raw: Any, name: str, cls: type, source: str) -> Any:
    """Fill dataclass ``cls`` from the mapping ``raw`` (None: all defaults), checking types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {name}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{source}: {name}: unknown field(s) {unknown}; expected some of {sorted(fields)}")
    values = {}
    for key, value in raw.items():
        try:
            values[key] = _coerce(value, hints[key])
        except _FieldError as exc:
            raise ConfigError(f"{source}: {name}.{key}: {exc}, got {value!r}") from None
    try:
        return cls(**values)
    except _FieldError as exc:
        raise ConfigError(f"{source}: {name}.{exc.name}: {exc}") from None


def _coerce(value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (bool, int, float, str or tuple[str, ...]), else a _FieldError."""
    if kind is bool:
        _require(isinstance(value, bool), "", "expected true or false")
    elif kind is int:
        _require(isinstance(value, int) and not isinstance(value, bool), "", "expected an integer")
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        _require(ok, "", "expected a number")
        return float(value)
    elif kind is str:
        _require(isinstance(value, str), "", "expected a string")
    elif kind == tuple[str, ...]:
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        _require(ok, "", "expected a list of non-empty strings")
        return tuple(value)
    else:  # a field type this parser does not know: a programming error
        raise TypeError(f"unsupported config field type {kind!r}")
    return value
