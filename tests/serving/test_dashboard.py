"""The live dashboard: its JSON under the client keys, and the page in a real headless Chromium.

The browser test drives Debian's ``chromium`` over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no port, no extra package) and skips when it is not
installed. ``ENTROROUTER_DASHBOARD_SCREENSHOT=docs/dashboard.png`` also keeps the screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from .conftest import CLIENT_KEY, POOL, RunningGateway, gateway_config, wait_for

PROMPTS = [
    "What is 17 + 25?",
    "Write a Python function that reverses a linked list.",
    "Summarise the causes of the French revolution in two sentences.",
    "Prove that the square root of 2 is irrational.",
    "hi",
    "Translate 'good morning' into German.",
]


@pytest.fixture
def gateway(router_dir, fake):
    config = gateway_config(router_dir, fake.base_url, circuit_breaker={"failure_threshold": 1, "cooldown_s": 60})
    with RunningGateway(config) as running:
        yield running


def send(gateway: RunningGateway, n: int) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    for i in range(n):
        client.chat.completions.create(model="entrorouter", messages=[{"role": "user", "content": PROMPTS[i % 6]}])


def test_stats_need_a_client_key_and_count_traffic(gateway, fake, router):
    with gateway.client(headers={"authorization": "Bearer wrong"}) as anonymous:
        assert anonymous.get("/dashboard/stats").status_code == 401
    with gateway.client() as client:
        empty = client.get("/dashboard/stats").json()
        assert empty["requests_total"] == 0 and empty["routing_ms"] == {"p50": None, "p99": None}
        fake.fail(500, model=POOL[-1])  # the strongest model fails: fallback, then its circuit opens
        send(gateway, 12)
        stats = client.get("/dashboard/stats").json()
        page = client.get("/dashboard")
    assert stats["requests_total"] == 12 and stats["requests_per_s"] > 0
    assert sum(stats["share"].values()) == pytest.approx(1.0)
    assert sum(stats["requests_by_model_total"].values()) == 12
    assert 0 < stats["routing_ms"]["p50"] <= stats["routing_ms"]["p99"]
    assert stats["upstream_ms"]["p50"] > 0
    saving = stats["saving"]
    assert saving["strongest_model"] == gateway.gateway.router.strongest == router.trained_on["strongest_model"]
    routed, strongest = saving["predicted_cost_usd"], saving["predicted_cost_strongest_usd"]
    assert saving["fraction"] == pytest.approx(1 - routed / strongest)
    if stats["requests_by_model_total"][POOL[-1]]:
        assert stats["fallbacks_total"] >= 1 and stats["open_circuits"] == [POOL[-1]]
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "://" not in page.text  # self-contained: no CDN, no external resource


# ------------------------------------------------------------------ the browser
class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, user_data_dir: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:  # runs in the child: the pipe ends become fds 3 and 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--remote-debugging-pipe",
            "--window-size=1280,900",
            f"--user-data-dir={user_data_dir}",
        ]
        self.process = subprocess.Popen(
            [shutil.which("chromium"), *flags, "about:blank"],
            preexec_fn=fds,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def call(self, method: str, timeout_s: float = 20, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            assert left > 0, f"chromium did not answer {method}"
            if select.select([self._from_chrome], [], [], left)[0]:
                chunk = os.read(self._from_chrome, 1 << 20)
                assert chunk, "chromium exited"
                self._buffer += chunk

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.navigate", url=url)

    def text(self, element_id: str) -> str | None:
        visible = "(e => e && !e.closest('[hidden]') ? e.textContent : null)"
        expression = f"{visible}(document.getElementById('{element_id}'))"
        return self.call("Runtime.evaluate", expression=expression)["result"].get("value")

    def wait_text(self, element_id: str, condition: Any, timeout_s: float = 20) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.text(element_id)
            if value is not None and condition(value):
                return value
            assert time.monotonic() < deadline, f"#{element_id} stayed {value!r}"
            time.sleep(0.1)

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def chromium(tmp_path):
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    browser = Chromium(tmp_path / "profile")
    yield browser
    browser.close()


def test_dashboard_in_headless_chromium(gateway, fake, chromium, tmp_path):
    # Without a key the page asks for one; the form stores it and the numbers appear.
    chromium.open(f"{gateway.url}/dashboard?refresh=300")
    wait_for(lambda: chromium.text("key") is not None, 20, "the key form")
    chromium.call(
        "Runtime.evaluate",
        expression=f"document.getElementById('key').value = {json.dumps(CLIENT_KEY)};"
        "document.getElementById('key-form').requestSubmit();",
    )
    assert chromium.wait_text("total", lambda v: v == "0") == "0"

    # Traffic flows: the open page's numbers move on their own.
    fake.fail(500, model=POOL[-1])
    send(gateway, 9)
    chromium.wait_text("total", lambda v: v == "9")
    assert float(chromium.wait_text("rps", lambda v: float(v) > 0)) > 0
    assert chromium.wait_text("routing", lambda v: "/" in v)
    send(gateway, 6)
    chromium.wait_text("total", lambda v: v == "15")

    # A second tab with the key in the URL fragment needs no form.
    chromium.open(f"{gateway.url}/dashboard?refresh=300#key={CLIENT_KEY}")
    chromium.wait_text("total", lambda v: v == "15")
    shot = base64.b64decode(chromium.call("Page.captureScreenshot", format="png")["data"])
    assert shot.startswith(b"\x89PNG")
    (tmp_path / "dashboard.png").write_bytes(shot)
    keep = os.environ.get("ENTROROUTER_DASHBOARD_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(shot)
