"""gateway.yaml validation: every mistake is one line naming the file and the field."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from entrorouter.errors import ConfigError, EntroRouterError
from entrorouter.serving.app import Gateway
from entrorouter.serving.config import SECTIONS, load_gateway_config, parse_gateway_config

from .conftest import CLIENT_KEY_ENV, POOL, gateway_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "gateway.yaml"


def minimal(router_dir: Path, **overrides: object) -> dict:
    raw = {
        "router": str(router_dir),
        "auth": {"api_key_envs": [CLIENT_KEY_ENV]},
        "backends": [{"name": m, "base_url": "http://127.0.0.1:9/v1"} for m in POOL],
    }
    raw.update(overrides)
    return raw


def parse(raw: dict) -> object:
    return parse_gateway_config(raw, source="gw.yaml", base_dir=Path("."))


def test_example_config_is_valid_and_documents_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_gateway_config(EXAMPLE)
    assert config.router == EXAMPLE.parent / "../runs/quickstart"
    assert {b.name for b in config.backends} >= {"frontier-api", "tiny-3b"}
    text = EXAMPLE.read_text()
    import dataclasses

    for section, cls in SECTIONS.items():
        assert f"{section}:" in text, section
        for field in dataclasses.fields(cls):
            assert f"{field.name}:" in text, f"{section}.{field.name} is not documented in the example"


def test_defaults_and_relative_router_path(tmp_path: Path) -> None:
    config = parse_gateway_config(
        {"router": "r", "auth": {"disabled": True}, "backends": [{"name": "a", "base_url": "http://x/v1"}]},
        source="gw.yaml",
        base_dir=tmp_path,
    )
    assert config.router == tmp_path / "r"
    assert config.limits.max_body_bytes == 4 * 1024 * 1024
    assert config.routing.batch_max_wait_ms == 2.0
    assert config.routing.router_workers == len(os.sched_getaffinity(0))  # one per core
    assert config.auth.disabled


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"serve": {}}, "unknown section(s) ['serve']"),
        ({"router": None}, "router: expected the path"),
        ({"auth": None}, "auth.api_key_envs: list the environment variables"),
        ({"auth": {"api_key_envs": ["A"], "disabled": True}}, "auth.disabled"),
        ({"auth": {"api_key_envs": "A"}}, "auth.api_key_envs: expected a list"),
        ({"limits": {"max_body_bytes": "1MB"}}, "limits.max_body_bytes: expected an integer"),
        ({"limits": {"max_body_bytes": 0}}, "limits.max_body_bytes: expected an integer >= 1"),
        ({"limits": {"max_bodysize": 1}}, "limits: unknown field(s) ['max_bodysize']"),
        ({"routing": {"batch_max_wait_ms": True}}, "routing.batch_max_wait_ms: expected a number"),
        ({"routing": {"torch_threads": 0}}, "routing.torch_threads"),
        ({"routing": {"router_workers": 0}}, "routing.router_workers: expected an integer 1..64"),
        ({"routing": {"inline_max_ms": -1}}, "routing.inline_max_ms: expected 0..1000 (milliseconds)"),
        ({"routing": {"inline_max_in_flight": 0}}, "routing.inline_max_in_flight: expected an integer >= 1"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"keep_alive_s": 0}}, "server.keep_alive_s: expected a number > 0"),
        ({"retry": []}, "retry: expected a mapping"),
        ({"circuit_breaker": {"failure_threshold": 0}}, "circuit_breaker.failure_threshold"),
        ({"fallback": {"max_backends": 0}}, "fallback.max_backends"),
        ({"logging": {"level": "loud"}}, "logging.level"),
        ({"backends": []}, "'backends' must be a non-empty list"),
        ({"backends": [{"name": "entrorouter", "base_url": "http://x"}]}, "reserved for the router"),
        ({"backends": [{"name": "a", "base_url": "ftp://x"}]}, "backends[0].base_url"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(tmp_path: Path, overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(minimal(tmp_path, **overrides))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("gw.yaml: ")
    assert fragment in message


def test_pool_mismatch_fails_startup_with_one_line(router_dir: Path) -> None:
    raw = minimal(router_dir)
    raw["backends"] = [b for b in raw["backends"] if b["name"] != "tiny-3b"] + [
        {"name": "gpt-5", "base_url": "http://127.0.0.1:9/v1"}
    ]
    gateway = Gateway.load(parse(raw))
    with pytest.raises(ConfigError) as error:
        gateway.start_router()  # the router workers report the pool
    assert gateway.batcher is None
    message = str(error.value)
    assert "\n" not in message
    assert "no backend for ['tiny-3b']" in message and "['gpt-5'] not in the pool" in message


def test_unset_key_variables_fail_startup(router_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CLIENT_KEY_ENV)
    with pytest.raises(ConfigError, match=f"auth.api_key_envs: environment variable {CLIENT_KEY_ENV} is not set"):
        Gateway.load(parse(minimal(router_dir)))
    monkeypatch.setenv(CLIENT_KEY_ENV, "k")
    config = gateway_config(router_dir, "http://127.0.0.1:9/v1", backend={"api_key_env": "ENTROROUTER_TEST_UNSET"})
    with pytest.raises(ConfigError, match="ENTROROUTER_TEST_UNSET is not set"):
        Gateway.load(config)
    monkeypatch.setenv("ENTROROUTER_TEST_BAD_KEY", "sk-a\rb")
    config = gateway_config(router_dir, "http://127.0.0.1:9/v1", backend={"api_key_env": "ENTROROUTER_TEST_BAD_KEY"})
    with pytest.raises(ConfigError, match="the key in ENTROROUTER_TEST_BAD_KEY holds a control character"):
        Gateway.load(config)


def test_missing_router_directory(tmp_path: Path) -> None:
    with pytest.raises(EntroRouterError, match="no router directory"):
        Gateway.load(parse(minimal(tmp_path / "nowhere", routing={"router_workers": 1}))).start_router()


def test_serve_cli_reports_a_bad_config_in_one_line(router_dir: Path, tmp_path: Path) -> None:
    raw = minimal(router_dir)
    raw["backends"] = raw["backends"][:3]
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "entrorouter.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, CLIENT_KEY_ENV: "k"},
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "backends do not match the router's pool" in lines[0]


def test_serve_cli_reports_a_router_that_cannot_route_in_one_line(router_dir: Path, tmp_path: Path) -> None:
    # A router whose encoder folder has gone: it loads (the encoder is lazy) but cannot route,
    # which only the router process finds out, before the gateway opens its socket.
    broken = tmp_path / "router"
    shutil.copytree(router_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["encoder"] = {"kind": "sentence-transformers", "path": str(tmp_path / "no-model")}
    (broken / "config.json").write_text(json.dumps(config))
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(minimal(broken)))
    result = subprocess.run(
        [sys.executable, "-m", "entrorouter.cli", "serve", "--config", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, CLIENT_KEY_ENV: "k"},
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "router worker 0 failed to start" in lines[0] and "no-model" in lines[0]


def test_backend_calls_go_through_the_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read once per backend (not per call), honouring NO_PROXY, for http and https backends."""
    import asyncio

    from entrorouter.backends import BackendConfig
    from entrorouter.serving.breaker import CircuitBreaker
    from entrorouter.serving.upstream import Upstream

    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")

    async def proxies() -> list[str | None]:
        urls = ("https://api.example.com/v1", "http://127.0.0.1:8000/v1", "http://models.internal/v1")
        backends = [BackendConfig(name=f"m{i}", base_url=url, model="m") for i, url in enumerate(urls)]
        upstreams = [Upstream(backend, CircuitBreaker(5, 30)) for backend in backends]
        try:
            return [upstream.proxy for upstream in upstreams]
        finally:
            for upstream in upstreams:
                await upstream.aclose()

    assert asyncio.run(proxies()) == ["http://proxy.internal:3128", None, None]
