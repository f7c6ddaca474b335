"""Reliability against misbehaving backends: retries, fallback, circuits, broken streams, shutdown.

The fake backend is told to fail, stall, rate-limit or drop the connection for the model
the router picks, and the tests check what the client sees and what the backend received.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import CLIENT_KEY, RunningGateway, chat_body, gateway_config, wait_for

TEXT = "Compute the eigenvalues of a 3x3 symmetric matrix step by step."


@pytest.fixture(scope="module")
def ranking(router) -> tuple[str, ...]:
    """The router's fallback order for TEXT at its default λ: the tests steer around it."""
    return router.route([TEXT])[0].ranking


def post(gateway: RunningGateway, body: dict, timeout: float = 30) -> httpx.Response:
    with gateway.client(timeout=timeout) as client:
        return client.post("/v1/chat/completions", json=body)


@pytest.fixture(scope="module")
def retrying_gateway(router_dir: Path, _fake_server):
    config = gateway_config(
        router_dir,
        _fake_server.base_url,
        backend={"max_retries": 2, "timeout_s": 0.5},
        circuit_breaker={"failure_threshold": 100},
    )
    with RunningGateway(config) as gateway:
        yield gateway


def test_retries_5xx_then_succeeds_on_the_same_backend(retrying_gateway, fake) -> None:
    fake.fail(503, model="mini-api", times=2)
    response = post(retrying_gateway, chat_body("x", model="mini-api"))
    assert response.status_code == 200
    assert fake.counts()["mini-api"] == 3
    assert retrying_gateway.metric("entrorouter_upstream_retries_total", backend="mini-api") >= 2


def test_honours_a_short_retry_after(retrying_gateway, fake) -> None:
    fake.fail(429, model="mini-api", times=1, retry_after=0.4)
    started = time.monotonic()
    response = post(retrying_gateway, chat_body("x", model="mini-api"))
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.4
    assert fake.counts()["mini-api"] == 2


def test_a_long_retry_after_falls_back_at_once(retrying_gateway, fake, ranking) -> None:
    fake.fail(429, model=ranking[0], retry_after=120)
    started = time.monotonic()
    response = post(retrying_gateway, chat_body(TEXT))
    assert time.monotonic() - started < 5
    assert response.status_code == 200
    assert response.headers["x-entrorouter-model"] == ranking[1]
    assert response.headers["x-entrorouter-fallbacks"] == "1"
    assert fake.counts()[ranking[0]] == 1  # not retried: it asked for two minutes


def test_persistent_5xx_falls_back_along_the_ranking(retrying_gateway, fake, ranking) -> None:
    fake.fail(500, model=ranking[0])
    fake.fail(502, model=ranking[1])
    response = post(retrying_gateway, chat_body(TEXT))
    assert response.status_code == 200
    assert response.headers["x-entrorouter-model"] == response.json()["model"] == ranking[2]
    assert response.headers["x-entrorouter-fallbacks"] == "2"
    counts = fake.counts()
    assert counts[ranking[0]] == counts[ranking[1]] == 3  # 1 call + 2 retries each
    assert retrying_gateway.metric("entrorouter_fallbacks_total", backend=ranking[0], reason="failed") >= 1


def test_a_stalled_backend_times_out_and_falls_back(retrying_gateway, fake, ranking) -> None:
    fake.stall(5, model=ranking[0])
    started = time.monotonic()
    response = post(retrying_gateway, chat_body(TEXT))
    assert response.status_code == 200 and response.headers["x-entrorouter-model"] == ranking[1]
    assert time.monotonic() - started < 4  # 3 attempts x 0.5 s read timeout, plus backoff


def test_a_request_the_backend_refuses_is_returned_not_retried(retrying_gateway, fake, ranking) -> None:
    fake.fail(400, model=ranking[0])
    response = post(retrying_gateway, chat_body(TEXT))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "fake failure 400"
    assert fake.counts()[ranking[0]] == 1 and fake.counts()[ranking[1]] == 0


def test_when_every_backend_fails_the_client_gets_502(retrying_gateway, fake, ranking) -> None:
    fake.fail(500)
    response = post(retrying_gateway, chat_body(TEXT))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "backend_failed" and ranking[0] in error["message"]
    assert sum(fake.counts().values()) == 3 * 3  # fallback.max_backends (3) x (1 + 2 retries)
    with pytest.raises(openai.InternalServerError):
        openai.OpenAI(base_url=retrying_gateway.base_url, api_key=CLIENT_KEY, max_retries=0).chat.completions.create(
            model="tiny-3b", messages=[{"role": "user", "content": "x"}]
        )


def test_a_broken_non_streaming_answer_falls_back(retrying_gateway, fake, ranking) -> None:
    fake.drop(model=ranking[0])
    response = post(retrying_gateway, chat_body(TEXT))
    assert response.status_code == 200 and response.headers["x-entrorouter-model"] == ranking[1]


# ------------------------------------------------------------------ circuit breaker
def test_circuit_opens_skips_the_backend_and_recovers_after_a_probe(router_dir: Path, fake, ranking) -> None:
    config = gateway_config(
        router_dir,
        fake.base_url,
        backend={"max_retries": 0},
        circuit_breaker={"failure_threshold": 2, "cooldown_s": 0.5},
    )
    chosen = ranking[0]
    with RunningGateway(config) as gateway:
        fake.fail(500, model=chosen)
        direct = chat_body("x", model=chosen)
        assert [post(gateway, direct).status_code for _ in range(2)] == [502, 502]
        assert gateway.metric("entrorouter_circuit_open", backend=chosen) == 1

        refused = post(gateway, direct)  # open: not even sent
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "backend_unavailable"
        routed = post(gateway, chat_body(TEXT))  # routed requests skip it
        assert routed.status_code == 200 and routed.headers["x-entrorouter-model"] == ranking[1]
        assert fake.counts()[chosen] == 2
        assert gateway.metric("entrorouter_fallbacks_total", backend=chosen, reason="circuit_open") == 2

        fake.answer(model=chosen)
        time.sleep(0.6)  # the cool-down: the next request is the half-open probe
        probe = post(gateway, chat_body(TEXT))
        assert probe.status_code == 200 and probe.headers["x-entrorouter-model"] == chosen
        assert gateway.metric("entrorouter_circuit_open", backend=chosen) == 0


# ------------------------------------------------------------------ streams
def test_a_stream_cut_mid_way_ends_with_an_error_event(shared_gateway, fake, ranking, caplog) -> None:
    fake.drop(model=ranking[0], after_chunks=3)
    client = openai.OpenAI(base_url=shared_gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    received = []
    with pytest.raises(openai.APIError, match="failed mid-stream"):
        for chunk in client.chat.completions.create(
            model="entrorouter", messages=[{"role": "user", "content": TEXT}], stream=True
        ):
            received.append(chunk)
    assert len(received) == 3 and received[0].model == ranking[0]

    fake.drop(model=ranking[0], after_chunks=2)
    with caplog.at_level(logging.WARNING, logger="entrorouter.serving"), shared_gateway.client() as http:
        body, headers = chat_body(TEXT, stream=True), {"x-request-id": "cut-2"}
        lines = http.post("/v1/chat/completions", json=body, headers=headers).text.strip().split("\n\n")
    assert len(lines) == 3 and '"code":"stream_interrupted"' in lines[-1]
    assert "cut-2" in [r.fields["request_id"] for r in caplog.records if r.getMessage() == "stream interrupted"]
    assert "[DONE]" not in lines[-1]
    assert shared_gateway.metric("entrorouter_errors_total", model=ranking[0], kind="stream_interrupted") >= 2


def test_a_stream_that_fails_before_its_first_event_falls_back(shared_gateway, fake, ranking) -> None:
    fake.drop(model=ranking[0], after_chunks=0)
    client = openai.OpenAI(base_url=shared_gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    chunks = list(
        client.chat.completions.create(model="entrorouter", messages=[{"role": "user", "content": TEXT}], stream=True)
    )
    assert {c.model for c in chunks} == {ranking[1]}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == f"[{ranking[1]}] {TEXT}"


def test_a_client_leaving_mid_stream_releases_the_backend(router_dir: Path, fake, ranking) -> None:
    config = gateway_config(router_dir, fake.base_url, backend={"max_concurrency": 1}, limits={"backend_wait_s": 0.5})
    chosen = ranking[0]
    with RunningGateway(config) as gateway:
        fake.slow(0.2, model=chosen)  # ~20 chunks, 0.2 s apart: the client leaves long before the end
        body = chat_body(TEXT, stream=True)
        with gateway.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["x-entrorouter-model"] == chosen
            next(response.iter_lines())
        wait_for(lambda: gateway.metric("entrorouter_in_flight_requests") == 0, 10, "the stream to be released")
        fake.answer(model=chosen)
        # The backend's only slot is free again: a direct request does not wait for it.
        response = post(gateway, chat_body("again", model=chosen))
        assert response.status_code == 200


def test_a_saturated_backend_is_skipped(router_dir: Path, fake, ranking) -> None:
    config = gateway_config(router_dir, fake.base_url, backend={"max_concurrency": 1}, limits={"backend_wait_s": 0.3})
    with RunningGateway(config) as gateway:
        fake.stall(1.5, model=ranking[0], times=1)
        first = threading.Thread(target=post, args=(gateway, chat_body(TEXT)))
        first.start()
        wait_for(lambda: fake.counts()[ranking[0]] == 1, 10, "the first request to hold the slot")
        second = post(gateway, chat_body(TEXT))
        first.join(10)
        assert second.status_code == 200 and second.headers["x-entrorouter-model"] == ranking[1]
        assert gateway.metric("entrorouter_fallbacks_total", backend=ranking[0], reason="saturated") == 1


def test_over_the_in_flight_limit_new_requests_get_503(router_dir: Path, fake) -> None:
    config = gateway_config(router_dir, fake.base_url, limits={"max_in_flight": 1})
    with RunningGateway(config) as gateway:
        fake.stall(1.0, model="mini-api", times=1)
        first = threading.Thread(target=post, args=(gateway, chat_body("x", model="mini-api")))
        first.start()
        wait_for(lambda: fake.counts()["mini-api"] == 1, 10, "the first request")
        response = post(gateway, chat_body("y", model="mini-api"))
        first.join(10)
        assert response.status_code == 503 and response.json()["error"]["code"] == "overloaded"
        assert response.headers["retry-after"] == "1"


# ------------------------------------------------------------------ shutdown
def test_shutdown_drains_in_flight_requests(router_dir: Path, fake, ranking) -> None:
    config = gateway_config(router_dir, fake.base_url, server={"drain_timeout_s": 10})
    gateway = RunningGateway(config).start()
    fake.stall(1.0, model="mini-api", times=1)
    fake.slow(0.05, model=ranking[0], times=1)
    results: dict[str, httpx.Response] = {}

    def call(key: str, body: dict) -> None:
        results[key] = post(gateway, body)

    threads = [
        threading.Thread(target=call, args=("plain", chat_body("x", model="mini-api"))),
        threading.Thread(target=call, args=("stream", chat_body(TEXT, stream=True))),
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: fake.counts()["mini-api"] == 1 and fake.counts()[ranking[0]] == 1, 10, "both requests")
    started = time.monotonic()
    gateway.stop()
    for thread in threads:
        thread.join(10)
    assert results["plain"].status_code == 200
    assert results["stream"].status_code == 200 and results["stream"].text.endswith("data: [DONE]\n\n")
    assert time.monotonic() - started < 10
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway.url}/healthz", timeout=2)


# ------------------------------------------------------------------ router workers
def test_a_killed_router_worker_is_restarted_and_routing_goes_on(router_dir: Path, fake, tmp_path: Path) -> None:
    copy = tmp_path / "router"
    shutil.copytree(router_dir, copy)
    with RunningGateway(gateway_config(copy, fake.base_url)) as gateway, gateway.client() as client:
        os.kill(gateway.gateway.batcher.pids[0], signal.SIGKILL)
        routed = client.post("/v1/chat/completions", json=chat_body(TEXT), timeout=120)
        assert routed.status_code == 200  # failed over to the restarted worker
        assert gateway.metric("entrorouter_router_restarts_total", worker="0") == 1
        assert client.get("/healthz").status_code == 200

        shutil.rmtree(copy)  # from now on a restart cannot load the router
        os.kill(gateway.gateway.batcher.pids[0], signal.SIGKILL)
        routed = client.post("/v1/chat/completions", json=chat_body(TEXT), timeout=120)
        assert routed.status_code == 500 and routed.json()["error"]["code"] == "routing_failed"
        assert client.get("/healthz").status_code == 503
        assert client.get("/readyz").status_code == 503
        named = client.post("/v1/chat/completions", json=chat_body(TEXT, model="mini-api"))
        assert named.status_code == 200  # requests that name a backend need no router


# ------------------------------------------------------------------ clients and rate limits
def test_a_client_leaving_before_the_first_byte_frees_the_backend_at_once(router_dir: Path, fake, caplog) -> None:
    config = gateway_config(
        router_dir,
        fake.base_url,
        backend={"max_concurrency": 1, "timeout_s": 10, "max_retries": 2},
        limits={"backend_wait_s": 0.5},
        circuit_breaker={"failure_threshold": 1},  # one failure counted would open the circuit
    )
    with caplog.at_level(logging.INFO, logger="entrorouter.serving"), RunningGateway(config) as gateway:
        fake.stall(8, model="mini-api", times=1)
        with gateway.client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json=chat_body("x", model="mini-api"))
        wait_for(lambda: gateway.metric("entrorouter_in_flight_requests") == 0, 3, "the request to be dropped")
        assert gateway.metric("entrorouter_errors_total", model="mini-api", kind="client_left") == 1
        # The slot is free (no 0.5 s wait, no 503) and the circuit stayed closed.
        started = time.monotonic()
        response = post(gateway, chat_body("again", model="mini-api"))
        assert response.status_code == 200 and time.monotonic() - started < 0.5
        assert gateway.metric("entrorouter_circuit_open", backend="mini-api") == 0
        assert fake.counts()["mini-api"] == 2  # the abandoned call was not retried
    records = [r for r in caplog.records if getattr(r, "fields", {}).get("error") == "client_left"]
    assert len(records) == 1 and records[0].fields["status"] == 499


def test_a_named_backends_429_reaches_the_client_with_its_retry_after(retrying_gateway, fake, ranking) -> None:
    fake.fail(429, model="mini-api", retry_after=120)
    response = post(retrying_gateway, chat_body("x", model="mini-api"))
    assert response.status_code == 429 and response.headers["retry-after"] == "120"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=retrying_gateway.base_url, api_key=CLIENT_KEY, max_retries=0).chat.completions.create(
            model="mini-api", messages=[{"role": "user", "content": "x"}]
        )
    fake.fail(429, model=ranking[0], retry_after=120)  # a routed request still falls back
    routed = post(retrying_gateway, chat_body(TEXT))
    assert routed.status_code == 200 and routed.headers["x-entrorouter-model"] == ranking[1]


@pytest.mark.parametrize(
    "body",
    [
        '{"id": "x", "choices": [], "usage": {"prompt_tokens": NaN}}',  # NaN would reach the client
        "{}",  # JSON, but no chat completion
    ],
)
def test_an_answer_that_is_no_chat_completion_falls_back(retrying_gateway, fake, ranking, body: str) -> None:
    fake.raw(body, model=ranking[0])
    response = post(retrying_gateway, chat_body(TEXT))
    assert response.status_code == 200 and response.headers["x-entrorouter-model"] == ranking[1]
    assert response.headers["x-entrorouter-fallbacks"] == "1"


def test_the_502_names_each_failure_but_no_backend_address(router_dir: Path, caplog) -> None:
    config = gateway_config(router_dir, "http://127.0.0.1:9/v1", backend={"max_retries": 0})  # nothing listens
    with caplog.at_level(logging.WARNING, logger="entrorouter.serving"), RunningGateway(config) as gateway:
        response = post(gateway, chat_body(TEXT))
    assert response.status_code == 502
    # Each backend named once, with the kind of failure (it was "name: backend 'name': <error naming the host>").
    failure = r"[\w.-]+: ClientConnectorError"
    assert re.fullmatch(f"every backend tried failed: {failure}(; {failure})*", response.json()["error"]["message"])
    details = [r.fields["reason"] for r in caplog.records if r.getMessage() == "backend failed"]
    assert details and all("127.0.0.1:9" in d for d in details)  # the operator's log keeps the address
