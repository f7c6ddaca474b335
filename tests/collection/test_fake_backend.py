"""The fake OpenAI-compatible backend itself (shared with the gateway's tests)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from entrorouter.testing.fake_backend import FakeBackend, default_answer, is_correct, token_count, true_answer


def chat(fake: FakeBackend, model: str, prompt: str, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    return httpx.post(fake.base_url + "/chat/completions", json=body, timeout=10)


def test_deterministic_answers_with_usage(fake: FakeBackend) -> None:
    prompt = "What is 40 + 2?"
    body = chat(fake, "medium", prompt).json()
    content = body["choices"][0]["message"]["content"]
    assert content == default_answer("medium", prompt, 0.6)
    assert content.endswith(f"#### {42 if is_correct('medium', prompt, 0.6) else 43}")
    assert true_answer(prompt) == 42
    assert body["usage"] == {
        "prompt_tokens": token_count(prompt),
        "completion_tokens": token_count(content),
        "total_tokens": token_count(prompt) + token_count(content),
    }
    assert chat(fake, "medium", prompt).json()["choices"][0]["message"]["content"] == content
    models = httpx.get(fake.base_url + "/models").json()
    assert [m["id"] for m in models["data"]] == ["strong", "medium", "weak"]
    missing = chat(fake, "nope", prompt)
    assert missing.status_code == 404 and "does not exist" in missing.json()["error"]["message"]


def test_streaming_and_a_dropped_stream(fake: FakeBackend) -> None:
    body = {
        "model": "strong",
        "messages": [{"role": "user", "content": "What is 1 + 1?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", fake.base_url + "/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == default_answer("strong", "What is 1 + 1?", 0.9)
    assert chunks[-1]["usage"]["completion_tokens"] == token_count(text)

    fake.drop(model="strong", times=1, after_chunks=2)
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", fake.base_url + "/chat/completions", json=body) as r,
    ):
        for _ in r.iter_lines():
            pass
    assert chat(fake, "strong", "x").status_code == 200  # times=1: back to normal


def test_failures_stalls_and_counters(fake: FakeBackend) -> None:
    fake.fail(429, model="weak", times=2, retry_after=3)
    first = chat(fake, "weak", "a")
    assert first.status_code == 429 and first.headers["retry-after"] == "3"
    assert first.json()["error"]["type"] == "rate_limit_error"
    assert chat(fake, "weak", "b").status_code == 429
    assert chat(fake, "weak", "c").status_code == 200
    fake.fail(503)
    assert chat(fake, "strong", "d").status_code == 503
    fake.answer()
    fake.stall(0.3, model="medium")
    start = time.monotonic()
    assert chat(fake, "medium", "e").status_code == 200
    assert time.monotonic() - start >= 0.3
    fake.drop(model="medium")
    with pytest.raises(httpx.RemoteProtocolError):
        chat(fake, "medium", "f")
    assert fake.counts() == {"strong": 1, "medium": 2, "weak": 3}
    assert fake.requests()[:2] == [("weak", "a"), ("weak", "b")]
    assert fake.peak_in_flight() == 1
    with pytest.raises(ValueError, match="bad behaviour"):
        fake.fail(500, model="not-a-model")


def test_api_key_and_lifetime() -> None:
    with FakeBackend({"m": 1.0}, api_key="sekret", lifetime_s=1.0) as fake:
        assert chat(fake, "m", "x").status_code == 401
        ok = httpx.post(
            fake.base_url + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": "Bearer sekret"},
        )
        assert ok.status_code == 200
        time.sleep(2.0)  # past its lifetime: it stopped by itself
        with pytest.raises(httpx.ConnectError):
            httpx.get(fake.url + "/health", timeout=2)


def test_subprocess_mode() -> None:
    with FakeBackend({"a": 0.5, "b": 1.0}, subprocess=True, api_key="k") as fake:
        headers = {"authorization": "Bearer k"}
        body = {"model": "b", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
        response = httpx.post(fake.base_url + "/chat/completions", json=body, headers=headers)
        assert response.json()["choices"][0]["message"]["content"].endswith("#### 4")
        fake.fail(500, model="a", times=1)
        body["model"] = "a"
        assert httpx.post(fake.base_url + "/chat/completions", json=body, headers=headers).status_code == 500
        assert fake.counts() == {"a": 1, "b": 1}
        process = fake._process
    assert process is not None and process.poll() is not None  # stopped with the context
    with pytest.raises(ValueError, match="thread mode"):
        FakeBackend({"a": 1.0}, subprocess=True, answer_fn=lambda m, p: "")
