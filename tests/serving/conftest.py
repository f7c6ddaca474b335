"""Fixtures for the gateway tests: a real router, a fake backend, a real gateway on loopback.

Everything here is real: the router is trained (on the simulated demo pool, with the cheap
hashed TF-IDF encoder), the fake backend and the gateway are uvicorn servers on 127.0.0.1
ephemeral ports, in threads of the test process, stopped at the end. Every wait is bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrorouter.serving.app import Gateway, create_app
from entrorouter.serving.cli import server_settings
from entrorouter.serving.config import GatewayConfig, parse_gateway_config
from entrorouter.testing.fake_backend import FakeBackend

POOL = ("tiny-3b", "small-8b", "math-7b", "code-16b", "medium-34b", "large-70b", "mini-api", "frontier-api")
CLIENT_KEY = "test-client-key-123"
CLIENT_KEY_ENV = "ENTROROUTER_TEST_CLIENT_KEY"


def echo_answer(model: str, prompt: str) -> str:
    """The fake's answer names the model and repeats the prompt: crossed responses show."""
    return f"[{model}] {prompt}"


@pytest.fixture(scope="session")
def router_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real router for the demo pool, trained once per session (a few seconds)."""
    from entrorouter.data.demo import make_demo_table
    from entrorouter.router import Router
    from entrorouter.router.config import TrainConfig

    config = TrainConfig(encoder="hashed-tfidf", sft_epochs=1, rl_iterations=2, capability="knn", calibration_folds=3)
    router = Router(config).fit(make_demo_table(n_queries=600))
    assert router.models == POOL
    return router.save(tmp_path_factory.mktemp("serving") / "router")


@pytest.fixture(scope="session")
def router(router_dir: Path):
    from entrorouter.router import Router

    return Router.load(router_dir)


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[FakeBackend]:
    with FakeBackend({m: 0.5 for m in POOL}, answer_fn=echo_answer) as fake:
        yield fake


@pytest.fixture(scope="session", autouse=True)
def _client_key() -> Iterator[None]:
    """The client key's env var, for every gateway of the session (a test may unset it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CLIENT_KEY_ENV, CLIENT_KEY)
        yield


def gateway_config(router_dir: Path, base_url: str, **sections: Any) -> GatewayConfig:
    """A validated config for the demo pool on ``base_url``; ``backend`` overrides every backend."""
    backend = {"timeout_s": 5, "connect_timeout_s": 1, "max_retries": 1, **sections.pop("backend", {})}
    # One worker process per test gateway, and every request routed by it: the tests of
    # routing in the gateway process itself turn that on.
    sections["routing"] = {"router_workers": 1, "inline_max_ms": 0, **sections.get("routing", {})}
    raw = {
        "router": str(router_dir),
        "auth": {"api_key_envs": [CLIENT_KEY_ENV]},
        "retry": {"base_delay_s": 0.01, "max_delay_s": 0.05},
        "backends": [{"name": m, "base_url": base_url, **backend} for m in POOL],
        **sections,
    }
    return parse_gateway_config(raw, source="test.yaml", base_dir=router_dir.parent)


def tcp_socket() -> socket.socket:
    # IPPROTO_TCP so asyncio sets TCP_NODELAY (else responses wait on delayed ACKs).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


class RunningGateway:
    """``entrorouter serve`` in a thread: the same app and uvicorn settings, an ephemeral port."""

    def __init__(self, config: GatewayConfig) -> None:
        import uvicorn

        self.gateway = Gateway.load(config)
        self._sock = tcp_socket()
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(self.gateway), loop="asyncio", **server_settings(config))
        )
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> RunningGateway:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 30) -> None:
        self.server.should_exit = True
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the gateway did not stop"

    def __enter__(self) -> RunningGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30)
        headers = {"authorization": f"Bearer {CLIENT_KEY}", **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the gateway's Prometheus registry (0 when absent)."""
        value = self.gateway.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture(scope="module")
def shared_gateway(router_dir: Path, _fake_server: FakeBackend) -> Iterator[RunningGateway]:
    """One gateway with default settings, for the tests that do not change any."""
    with RunningGateway(gateway_config(router_dir, _fake_server.base_url)) as running:
        yield running


def chat_body(text: str, model: str = "entrorouter", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def wait_for(condition: Any, timeout_s: float = 10, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.01)
