"""The gateway's API through the official openai client, against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import CLIENT_KEY, POOL, RunningGateway, chat_body, gateway_config, wait_for

QUESTION = "Prove that the integral of a continuous function on [0, 1] exists, rigorously."


def sync_client(gateway: RunningGateway, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=30)


def test_routed_completion_names_the_answering_model(shared_gateway: RunningGateway, fake, router) -> None:
    client = sync_client(shared_gateway)
    raw = client.chat.completions.with_raw_response.create(
        model="entrorouter", messages=[{"role": "user", "content": QUESTION}]
    )
    completion = raw.parse()
    expected = router.route([QUESTION])[0].model
    assert raw.headers["x-entrorouter-model"] == completion.model == expected
    assert float(raw.headers["x-entrorouter-route-ms"]) > 0
    assert raw.headers["x-entrorouter-fallbacks"] == "0"
    assert completion.choices[0].message.content == f"[{expected}] {QUESTION}"
    assert fake.requests() == [(expected, QUESTION)]


def test_lambda_in_the_model_name_sets_the_trade_off(shared_gateway: RunningGateway, fake, router) -> None:
    client = sync_client(shared_gateway)
    texts = [QUESTION, "hi", "Write a haiku about autumn.", "Design a distributed consensus protocol."]
    chosen = {}
    for lam in (0.0, 5.0):
        for text in texts:
            raw = client.chat.completions.with_raw_response.create(
                model=f"entrorouter:{lam}", messages=[{"role": "user", "content": text}]
            )
            chosen[lam, text] = raw.headers["x-entrorouter-model"]
            assert chosen[lam, text] == router.route([text], lam)[0].model
    assert any(chosen[0.0, t] != chosen[5.0, t] for t in texts), "λ changed nothing: the test proves nothing"


def test_a_target_retention_in_the_model_name(shared_gateway: RunningGateway, fake, router) -> None:
    client = sync_client(shared_gateway)
    target = round(router.calibration.max_target() - 0.05, 3)
    raw = client.chat.completions.with_raw_response.create(
        model=f"entrorouter@{target}", messages=[{"role": "user", "content": QUESTION}]
    )
    expected = router.route([QUESTION], target_retention=target)[0].model
    assert raw.headers["x-entrorouter-model"] == expected
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="entrorouter@1.4", messages=[{"role": "user", "content": QUESTION}])
    assert error.value.code == "unreachable_target" and "highest reachable retention" in str(error.value)


def test_a_backend_name_passes_straight_through(shared_gateway: RunningGateway, fake) -> None:
    client = sync_client(shared_gateway)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-3b", messages=[{"role": "user", "content": QUESTION}]
    )
    assert raw.parse().model == raw.headers["x-entrorouter-model"] == "tiny-3b"
    assert "x-entrorouter-route-ms" not in raw.headers
    assert fake.counts()["tiny-3b"] == 1


def test_streaming_relays_every_chunk(shared_gateway: RunningGateway, fake, router) -> None:
    client = sync_client(shared_gateway)
    expected = router.route([QUESTION])[0].model
    with client.chat.completions.with_streaming_response.create(
        model="entrorouter", messages=[{"role": "user", "content": QUESTION}], stream=True
    ) as response:
        assert response.headers["x-entrorouter-model"] == expected
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    assert {c.model for c in chunks} == {expected}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"[{expected}] {QUESTION}"
    assert len(chunks) > 5  # chunk by chunk, not one buffered blob


def test_async_client_plain_and_streaming(shared_gateway: RunningGateway, fake) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=shared_gateway.base_url, api_key=CLIENT_KEY, max_retries=0) as client:
            completion = await client.chat.completions.create(
                model="entrorouter", messages=[{"role": "user", "content": "async hello"}]
            )
            assert completion.choices[0].message.content == f"[{completion.model}] async hello"
            stream = await client.chat.completions.create(
                model="entrorouter:0.2",
                messages=[{"role": "user", "content": "async stream"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == f"[{chunks[0].model}] async stream"

    asyncio.run(asyncio.wait_for(main(), 60))


def test_tools_content_parts_and_unknown_fields_pass_through_untouched(shared_gateway: RunningGateway, fake) -> None:
    body = {
        "model": "entrorouter",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                ],
            },
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "auto",
        "temperature": 0.25,
        "x_vendor_extension": {"nested": [1, 2.5, None, "é"]},
    }
    with shared_gateway.client() as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    answered = response.headers["x-entrorouter-model"]
    assert fake.bodies() == [{**body, "model": answered}]
    assert fake.requests() == [(answered, "What is in this image?")]


def test_the_answer_names_the_pool_model_when_the_backend_calls_it_otherwise(router_dir: Path) -> None:
    """A backend's upstream id (``model:``) differs from its pool name: the client sees the pool name."""
    from entrorouter.testing.fake_backend import FakeBackend

    with FakeBackend({f"{m}-2026-01": 0.7 for m in POOL}) as upstream:
        backends = [{"name": m, "base_url": upstream.base_url, "model": f"{m}-2026-01"} for m in POOL]
        config = gateway_config(router_dir, upstream.base_url, backends=backends)
        with RunningGateway(config) as gateway, gateway.client() as client:
            answer = client.post("/v1/chat/completions", json=chat_body("x", model="mini-api")).json()
            routed = client.post("/v1/chat/completions", json=chat_body("x")).json()
        assert upstream.requests()[0][0] == "mini-api-2026-01"
    assert answer["model"] == "mini-api"
    assert routed["model"] in POOL


def test_list_models_and_health(shared_gateway: RunningGateway) -> None:
    models = sync_client(shared_gateway).models.list()
    assert [m.id for m in models.data] == ["entrorouter", *POOL]
    assert [sync_client(shared_gateway).models.retrieve(m.id).id for m in models.data] == [m.id for m in models.data]
    with pytest.raises(openai.NotFoundError):
        sync_client(shared_gateway).models.retrieve("gpt-9")
    with httpx.Client(base_url=shared_gateway.url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert set(ready.json()["backends"]) == set(POOL)
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models/entrorouter").status_code == 401


def test_readyz_is_503_when_no_backend_is_reachable(router_dir: Path) -> None:
    unreachable = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
    with (
        RunningGateway(gateway_config(router_dir, unreachable)) as gateway,
        httpx.Client(base_url=gateway.url) as client,
    ):
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["router"] is True and ready.json()["ready"] is False


def test_metrics_cover_requests_latency_and_circuits(shared_gateway: RunningGateway, fake) -> None:
    with shared_gateway.client() as client:
        assert client.post("/v1/chat/completions", json=chat_body("metrics please")).status_code == 200
        with client.stream("POST", "/v1/chat/completions", json=chat_body("stream", stream=True)) as r:
            r.read()
        text = client.get("/metrics").text
    for name in (
        "entrorouter_requests_total",
        "entrorouter_errors_total",
        "entrorouter_routing_seconds_bucket",
        "entrorouter_routing_batch_size_bucket",
        "entrorouter_routing_queue_seconds_bucket",
        "entrorouter_router_inference_seconds_bucket",
        "entrorouter_upstream_seconds_bucket",
        "entrorouter_time_to_first_token_seconds_bucket",
        "entrorouter_fallbacks_total",
        "entrorouter_circuit_open",
        "entrorouter_in_flight_requests",
    ):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_total')}" in text, name
    assert 'entrorouter_circuit_open{backend="tiny-3b"} 0.0' in text


# ------------------------------------------------------------------ bad input
def test_missing_or_wrong_key_is_401(shared_gateway: RunningGateway) -> None:
    with pytest.raises(openai.AuthenticationError) as error:
        sync_client(shared_gateway, key="wrong").chat.completions.create(
            model="entrorouter", messages=[{"role": "user", "content": "x"}]
        )
    assert error.value.status_code == 401 and error.value.code == "invalid_api_key"
    with httpx.Client(base_url=shared_gateway.url) as client:
        for headers in ({}, {"authorization": CLIENT_KEY}, {"authorization": f"Basic {CLIENT_KEY}"}):
            response = client.post("/v1/chat/completions", json=chat_body("x"), headers=headers)
            assert response.status_code == 401


def test_unknown_model_is_404(shared_gateway: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as error:
        sync_client(shared_gateway).chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert error.value.code == "model_not_found"


def test_malformed_json_and_invalid_fields_are_400(shared_gateway: RunningGateway) -> None:
    with shared_gateway.client() as client:
        response = client.post("/v1/chat/completions", content=b'{"model": "entrorouter", "messages": [')
        assert response.status_code == 400
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        response = client.post("/v1/chat/completions", json=chat_body("x", model="entrorouter:-1"))
        assert response.status_code == 400 and response.json()["error"]["param"] == "model"
    with pytest.raises(openai.BadRequestError):
        sync_client(shared_gateway).chat.completions.create(model="entrorouter", messages=[])


def test_a_lone_surrogate_is_400_naming_its_field_not_a_500(shared_gateway: RunningGateway, fake) -> None:
    # Valid JSON syntax, but not Unicode: the body could not be encoded again for the backend.
    raw = b'{"model": "mini-api", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}'
    paired = b'{"model": "mini-api", "messages": [{"role": "user", "content": "hi \\ud83d\\ude00"}]}'
    with shared_gateway.client() as client:
        response = client.post("/v1/chat/completions", content=raw)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
        assert response.json()["error"]["param"] == "messages[0].content"
        assert fake.counts()["mini-api"] == 0
        assert client.post("/v1/chat/completions", content=paired).status_code == 200  # a pair is one character


def test_a_number_beyond_float_range_is_400_not_forwarded_as_infinity(shared_gateway: RunningGateway, fake) -> None:
    raw = b'{"model": "mini-api", "messages": [{"role": "user", "content": "x"}], "temperature": 1e999}'
    with shared_gateway.client() as client:
        response = client.post("/v1/chat/completions", content=raw)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    assert "out of range" in response.json()["error"]["message"]
    assert fake.counts()["mini-api"] == 0


def test_body_over_the_limit_is_413(router_dir: Path, _fake_server) -> None:
    config = gateway_config(router_dir, _fake_server.base_url, limits={"max_body_bytes": 2000})
    with RunningGateway(config) as gateway, gateway.client() as client:
        assert client.post("/v1/chat/completions", json=chat_body("x" * 1000)).status_code == 200
        response = client.post("/v1/chat/completions", json=chat_body("x" * 3000))
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

        def chunked():  # no content-length: the limit holds while reading
            yield json.dumps(chat_body("y" * 3000)).encode()

        assert client.post("/v1/chat/completions", content=chunked()).status_code == 413


def test_a_stalled_or_abandoned_body_frees_its_slot(router_dir: Path, _fake_server, caplog) -> None:
    config = gateway_config(router_dir, _fake_server.base_url, limits={"body_timeout_s": 0.5})
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
        'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model": '
    ).encode()
    with caplog.at_level(logging.INFO), RunningGateway(config) as gateway:
        # Stalled: 408 once body_timeout_s has passed (before, the slot was held until the client left).
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as stalled:
            stalled.sendall(head)
            reply = b""
            while b"request_timeout" not in reply and (chunk := stalled.recv(65536)):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply
        # Abandoned half-way: a client that left, as after its body (before, two tracebacks).
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as gone:
            gone.sendall(head)
        left = {"model": "none", "kind": "client_left"}
        wait_for(lambda: gateway.metric("entrorouter_errors_total", **left) == 1, 10, "the client_left count")
        wait_for(lambda: gateway.metric("entrorouter_in_flight_requests") == 0, 10, "the slots to be free")
        assert gateway.metric("entrorouter_rejected_total", reason="body_timeout") == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_bug_is_a_500_with_the_request_id_logged_and_counted(
    shared_gateway: RunningGateway, monkeypatch, caplog
) -> None:
    async def bug(*args: object) -> None:  # injected: no known input reaches this path any more
        raise RuntimeError("injected fault")

    monkeypatch.setattr(shared_gateway.gateway.dispatcher, "complete", bug)
    before = shared_gateway.metric("entrorouter_errors_total", model="mini-api", kind="internal_error")
    with caplog.at_level(logging.INFO, logger="entrorouter.serving"), shared_gateway.client() as client:
        body, headers = chat_body("x", model="mini-api"), {"x-request-id": "r-1"}
        response = client.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
        assert response.headers["x-request-id"] == "r-1"
        wait_for(lambda: any(r.getMessage() == "chat completion" for r in caplog.records), message="the log line")
    [line] = [r.fields for r in caplog.records if r.getMessage() == "chat completion"]
    assert line["request_id"] == "r-1" and line["status"] == 500 and line["error"] == "internal_error"
    [bug_report] = [r for r in caplog.records if r.exc_info]
    assert bug_report.fields["request_id"] == "r-1"
    after = shared_gateway.metric("entrorouter_errors_total", model="mini-api", kind="internal_error")
    assert after == before + 1


def test_unknown_paths_and_methods_get_openai_errors(shared_gateway: RunningGateway) -> None:
    with shared_gateway.client() as client:
        assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"
        response = client.get("/v1/chat/completions")
        assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
extra_fields = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda k: k not in {"model", "messages", "stream"}), json_value, max_size=4
)
content = st.text(min_size=1, max_size=40) | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}), min_size=1, max_size=3
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=content, extra=extra_fields, model=st.sampled_from(["entrorouter", "entrorouter:0.7", "mini-api"]))
def test_property_any_valid_body_is_forwarded_exactly(shared_gateway: RunningGateway, fake, content, extra, model):
    fake.reset()
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    with shared_gateway.client() as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert fake.bodies() == [{**body, "model": response.headers["x-entrorouter-model"]}]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_value | st.fixed_dictionaries({"model": json_value, "messages": json_value}))
def test_property_any_invalid_body_is_a_4xx_with_an_openai_error(shared_gateway: RunningGateway, body) -> None:
    with shared_gateway.client() as client:
        response = client.post("/v1/chat/completions", json=body)
    if response.status_code == 200:  # hypothesis built a valid request: fine
        return
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


# ------------------------------------------------------------------ logs and secrets
def test_logs_are_json_without_message_bodies(shared_gateway: RunningGateway, fake, caplog) -> None:
    secret_prompt = "my secret medical question 8c1f"
    with caplog.at_level(logging.INFO, logger="entrorouter.serving"), shared_gateway.client() as client:
        client.post("/v1/chat/completions", json=chat_body(secret_prompt))
        # The line is written just after the response has gone out.
        wait_for(lambda: any(r.getMessage() == "chat completion" for r in caplog.records), message="the log line")
    records = [r for r in caplog.records if r.getMessage() == "chat completion"]
    assert records[-1].fields["status"] == 200
    from entrorouter.serving.logs import JsonFormatter

    line = JsonFormatter().format(records[-1])
    assert json.loads(line)["chosen"] in POOL
    assert all(secret_prompt not in JsonFormatter().format(r) for r in caplog.records)


def test_include_text_adds_the_routed_text_to_the_log(router_dir: Path, _fake_server, caplog) -> None:
    config = gateway_config(router_dir, _fake_server.base_url, logging={"include_text": True})
    with (
        caplog.at_level(logging.INFO, logger="entrorouter.serving"),
        RunningGateway(config) as gateway,
        gateway.client() as client,
    ):
        client.post("/v1/chat/completions", json=chat_body("route me, please"))
    records = [r for r in caplog.records if r.getMessage() == "chat completion"]
    assert records[-1].fields["text"] == "route me, please"


def test_backend_keys_never_reach_clients_or_logs(router_dir: Path, monkeypatch, caplog) -> None:
    from entrorouter.testing.fake_backend import FakeBackend

    secret = "sk-backend-secret-5d2a"
    monkeypatch.setenv("ENTROROUTER_TEST_BACKEND_KEY", secret)
    with FakeBackend(dict.fromkeys(POOL, 0.5), api_key=secret) as keyed:
        config = gateway_config(router_dir, keyed.base_url, backend={"api_key_env": "ENTROROUTER_TEST_BACKEND_KEY"})
        with caplog.at_level(logging.DEBUG), RunningGateway(config) as gateway, gateway.client() as client:
            ok = client.post("/v1/chat/completions", json=chat_body("hello"))
            assert ok.status_code == 200  # the key was sent to the backend
            monkeypatch.setenv("ENTROROUTER_TEST_BACKEND_KEY", "sk-rotated-wrong")  # read per call: now 401s
            failed = client.post("/v1/chat/completions", json=chat_body("hello"))
            assert failed.status_code == 502
            monkeypatch.delenv("ENTROROUTER_TEST_BACKEND_KEY")  # unset at runtime: a backend failure, not a 500
            unset = client.post("/v1/chat/completions", json=chat_body("hello"))
            assert unset.status_code == 502 and "is not set" in unset.json()["error"]["message"]
            # A key with a control character cannot go into a header (it was a 500 with tracebacks).
            monkeypatch.setenv("ENTROROUTER_TEST_BACKEND_KEY", "sk-line1\nline2")
            broken = client.post("/v1/chat/completions", json=chat_body("hello"))
            assert broken.status_code == 502 and "control character" in broken.json()["error"]["message"]
            monkeypatch.setenv("ENTROROUTER_TEST_BACKEND_KEY", secret + "\n")  # a secret file's newline: stripped
            assert client.post("/v1/chat/completions", json=chat_body("hello")).status_code == 200
            seen = [ok.text, failed.text, str(ok.headers), client.get("/metrics").text, client.get("/readyz").text]
    seen += [r.getMessage() + json.dumps(getattr(r, "fields", {}), default=str) for r in caplog.records]
    assert not any(secret in s or "sk-rotated-wrong" in s for s in seen)
