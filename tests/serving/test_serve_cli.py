"""`entrorouter serve` as a real process: it serves, logs JSON, and drains on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import yaml

from .conftest import CLIENT_KEY, CLIENT_KEY_ENV, POOL, chat_body, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    """The ids of ``pid``'s child processes (Linux /proc)."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_serve_runs_and_drains_on_sigterm(router_dir: Path, fake, tmp_path: Path) -> None:
    config = {
        "router": str(router_dir),
        "auth": {"api_key_envs": [CLIENT_KEY_ENV]},
        "server": {"drain_timeout_s": 10},
        "routing": {"router_workers": 2},
        "backends": [{"name": m, "base_url": fake.base_url} for m in POOL],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "entrorouter.cli", "serve", "--config", str(path), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, CLIENT_KEY_ENV: CLIENT_KEY},
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 180, "the gateway to start")  # two router workers load at once

        # The router is loaded once per worker process, and once in the gateway process since
        # it is cheap enough to route on the event loop (loading one reads its safetensors
        # file); routing needs no torch anywhere.
        def loaded(pid: int, library: str) -> bool:
            return library in Path(f"/proc/{pid}/maps").read_text()

        assert loaded(process.pid, "safetensors") and not loaded(process.pid, "libtorch")
        workers = [pid for pid in children(process.pid) if loaded(pid, "safetensors")]
        assert len(workers) == 2  # routing.router_workers: 2
        assert not any(loaded(pid, "libtorch") for pid in workers)
        headers = {"authorization": f"Bearer {CLIENT_KEY}"}
        fake.stall(1.0, model="mini-api", times=1)
        result: dict[str, httpx.Response] = {}

        def slow_call() -> None:
            body = chat_body("drain me", model="mini-api")
            result["r"] = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)

        thread = threading.Thread(target=slow_call)
        thread.start()
        wait_for(lambda: fake.counts()["mini-api"] == 1, 10, "the slow request to reach the backend")
        process.send_signal(signal.SIGTERM)
        thread.join(15)
        assert result["r"].status_code == 200 and result["r"].headers["x-entrorouter-model"] == "mini-api"
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.stderr is not None
    lines = [json.loads(line) for line in process.stderr.read().splitlines() if line.strip()]
    requests = [line for line in lines if line["event"] == "chat completion"]
    assert requests and requests[-1]["status"] == 200 and "drain me" not in json.dumps(lines)
    assert any(line["event"] == "gateway stopped" for line in lines)
