"""pool.yaml: the backends to query and how to grade their answers.

::

    backends:                 # the gateway's backend format (entrorouter.backends)
      - name: gpt-4o-mini
        base_url: https://api.openai.com/v1
        api_key_env: OPENAI_API_KEY
        max_concurrency: 16
        price: {input: 0.15, output: 0.60}     # required by collect: it prices every call
    concurrency: 64           # calls in flight over all backends (--concurrency wins)
    request:                  # merged into every chat-completion body
      temperature: 0
      max_tokens: 1024
    retry:                    # backoff between retries of a call (count: backends[].max_retries)
      base_delay_s: 0.25      # full-jitter exponential backoff, capped at max_delay_s
      max_delay_s: 8
      max_retry_after_s: 60   # a Retry-After header is honoured up to this
    grader: numeric           # for queries without a grader of their own (--grader wins)
    graders:                  # options per grader (see entrorouter.collection.graders)
      numeric: {rel_tol: 1.0e-6}
      code: {timeout_s: 10, memory_mb: 512}
      judge:
        backend: {name: judge, base_url: https://api.openai.com/v1, model: gpt-4o,
                  api_key_env: OPENAI_API_KEY, price: {input: 2.5, output: 10}}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from entrorouter.backends import BackendConfig, RetryPolicy, load_yaml, number_field, parse_backends
from entrorouter.errors import ConfigError

DEFAULT_CONCURRENCY = 64
TOP_LEVEL_KEYS = ("backends", "concurrency", "request", "retry", "grader", "graders")
# The collector sets these itself; letting the config override them would break the run.
RESERVED_REQUEST_KEYS = frozenset({"model", "messages", "stream", "stream_options", "n"})


@dataclass(frozen=True)
class CollectConfig:
    """A validated pool.yaml."""

    backends: tuple[BackendConfig, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    request: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    grader: str | None = None
    grader_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "pool.yaml"


def load_config(path: str | os.PathLike[str]) -> CollectConfig:
    """Read and validate a pool.yaml; every error names the file and the field."""
    source = str(path)
    raw = load_yaml(path)
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; expected some of {list(TOP_LEVEL_KEYS)}")
    backends = parse_backends(raw.get("backends"), source)
    for i, backend in enumerate(backends):
        if backend.input_price is None:
            raise ConfigError(
                f"{source}: backends[{i}] ({backend.name}): collect needs a price to cost each call: "
                "price: {input: <US$ per 1M tokens>, output: <US$ per 1M tokens>}"
            )
    return CollectConfig(
        backends=tuple(backends),
        concurrency=_concurrency(raw.get("concurrency", DEFAULT_CONCURRENCY), f"{source}: concurrency"),
        request=_request(raw.get("request"), source),
        retry=_retry(raw.get("retry"), source),
        grader=_optional_name(raw.get("grader"), f"{source}: grader"),
        grader_options=_grader_options(raw.get("graders"), source),
        source=source,
    )


def _concurrency(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected an integer >= 1, got {value!r}")
    return value


def _request(value: Any, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: request: expected a mapping of chat-completion fields")
    reserved = sorted(RESERVED_REQUEST_KEYS & set(value))
    if reserved:
        raise ConfigError(f"{source}: request: {reserved} cannot be set here; collect sets them itself")
    return dict(value)


def _retry(value: Any, source: str) -> RetryPolicy:
    if value is None:
        return RetryPolicy()
    known = [f.name for f in fields(RetryPolicy)]
    if not isinstance(value, dict) or set(value) - set(known):
        raise ConfigError(f"{source}: retry: expected a mapping with some of {known}")
    return RetryPolicy(**{key: number_field(value, key, f"{source}: retry", 0.0) for key in value})


def _optional_name(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a grader name")
    return value


def _grader_options(value: Any, source: str) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: graders: expected a mapping of grader name -> options")
    options = {}
    for name, entry in value.items():
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: graders.{name}: expected a mapping of options")
        options[str(name)] = dict(entry)
    return options
