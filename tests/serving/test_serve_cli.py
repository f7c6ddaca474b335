"""`entrorouter serve` as a real process: it serves, logs JSON, and drains on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
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


def serve(router_dir: Path, fake, tmp_path: Path, workers: int, **popen) -> tuple[subprocess.Popen, str]:
    """``entrorouter serve`` started as a process on a free port, and its URL, once healthy."""
    config = {
        "router": str(router_dir),
        "auth": {"api_key_envs": [CLIENT_KEY_ENV]},
        "server": {"drain_timeout_s": 10},
        "routing": {"router_workers": workers},
        "backends": [{"name": m, "base_url": fake.base_url} for m in POOL],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "entrorouter.cli", "serve", "--config", str(path), "--port", str(port)],
        env={**os.environ, CLIENT_KEY_ENV: CLIENT_KEY},
        **popen,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else "the gateway exited"
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 180, "the gateway to start")  # router workers load at once
    except BaseException:
        process.kill()
        process.wait(10)
        raise
    return process, url


def test_serve_runs_and_drains_on_sigterm(router_dir: Path, fake, tmp_path: Path) -> None:
    process, url = serve(router_dir, fake, tmp_path, workers=2, stderr=subprocess.PIPE, text=True)
    try:
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
    with process.stderr:
        lines = [json.loads(line) for line in process.stderr.read().splitlines() if line.strip()]
    requests = [line for line in lines if line["event"] == "chat completion"]
    assert requests and requests[-1]["status"] == 200 and "drain me" not in json.dumps(lines)
    assert any(line["event"] == "gateway stopped" for line in lines)


def test_a_request_on_a_connection_idle_for_five_seconds_is_answered(router_dir: Path, fake, tmp_path: Path) -> None:
    """The keep-alive race: a client (idle limit above 5 s) sends on a connection the gateway has kept
    idle for 5 s. With uvicorn's default keep-alive (5 s) the gateway closed it as the request
    arrived and the client got a connection reset; the gateway is paused across the 5 s mark, as a
    busy event loop or a GC pause would hold it, so that the close and the request meet every time."""
    process, url = serve(router_dir, fake, tmp_path, workers=1, stderr=subprocess.DEVNULL)
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    body = chat_body("hello", model="mini-api")
    try:
        with httpx.Client(base_url=url, limits=httpx.Limits(keepalive_expiry=60), timeout=10) as client:
            assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
            time.sleep(4.8)
            process.send_signal(signal.SIGSTOP)
            resume = threading.Timer(0.6, process.send_signal, (signal.SIGCONT,))
            resume.start()
            time.sleep(0.3)  # 5.1 s idle: sent while the gateway is paused
            try:
                assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
            finally:
                resume.join()
    finally:
        process.kill()
        process.wait(10)
