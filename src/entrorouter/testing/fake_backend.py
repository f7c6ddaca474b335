"""A fake OpenAI-compatible backend: a real HTTP server on 127.0.0.1, for tests and benchmarks.

Start one in a background thread, or in its own process (benchmarks: the server then does
not share the client's GIL). The port is ephemeral; ``base_url`` ends in ``/v1`` like a
real provider's::

    from entrorouter.testing.fake_backend import FakeBackend

    with FakeBackend({"strong": 0.9, "weak": 0.4}) as fake:            # thread
        fake.base_url                                   # "http://127.0.0.1:PORT/v1"
    with FakeBackend({"strong": 0.9}, subprocess=True) as fake: ...    # own process

Both stop by themselves after ``lifetime_s`` (default 600 s); a subprocess also stops when
its parent goes away (it watches its stdin).

Endpoints
---------
* ``POST /v1/chat/completions`` — non-streaming, or streaming with ``"stream": true``
  (SSE ``data: {chunk}`` lines ending with ``data: [DONE]``; a final usage chunk when
  ``stream_options.include_usage`` is true). Unknown model: 404 with an OpenAI error body.
* ``GET /v1/models`` — the configured models. ``GET /health`` — ``{"status": "ok"}``.
* ``/_fake/...`` — the control endpoints behind the methods below.

With ``api_key="k"`` every ``/v1`` request must carry ``Authorization: Bearer k`` (else 401).

Deterministic answers
---------------------
A model is configured with an accuracy in [0, 1]. For a prompt (the text of the last user
message) the true answer is :func:`true_answer`: the sum of the integers in the prompt, so
"What is 17 + 25?" -> 42. Model ``m`` is right on ``prompt`` iff :func:`is_correct` (a hash
of both, compared with the accuracy), and then answers ``"... The answer is 42.\\n#### 42"``;
when wrong it answers 43. In thread mode ``answer_fn(model, prompt) -> str`` replaces this.
``usage`` counts :func:`token_count` tokens (ceil(chars / 4)) of every message, and of the
answer.

Behaviours (switchable at runtime, per model or for all models with ``model=None``)
----------------------------------------------------------------------------------
* ``fake.answer(model=None)`` — answer normally (the default);
* ``fake.stall(seconds, model=None, times=None)`` — sleep, then answer;
* ``fake.fail(status=500, model=None, times=None, retry_after=None)`` — an OpenAI-style
  error with that status (and a ``Retry-After`` header when given);
* ``fake.drop(model=None, times=None, after_chunks=1)`` — close the connection mid-answer:
  streaming after ``after_chunks`` SSE chunks, non-streaming after the headers;
* ``fake.slow(seconds, model=None, times=None)`` — stream the answer with a pause of
  ``seconds`` before each SSE chunk (non-streaming: answer normally).
* ``fake.raw(body, model=None, times=None)`` — answer 200 with ``body`` as it is (a body
  that is no chat completion, or not JSON), streaming or not.

``times=N`` applies a behaviour to the model's next N requests only ("fail the first N
calls, then succeed"); ``None`` keeps it until changed.

Counters
--------
``fake.counts()`` — chat requests received per model (failed, stalled and dropped ones
included); ``fake.requests()`` — ``(model, prompt)`` for each chat request, in arrival order;
``fake.bodies()`` — the JSON body of each chat request, as received, in arrival order;
``fake.peak_in_flight(model=None)`` — the most chat requests in flight at once, for one
model or over all models (to check concurrency limits);
``fake.reset()`` — clear counters and log and go back to answering normally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import socket
import subprocess as _subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import httpx

from entrorouter.messages import message_text

AnswerFn = Callable[[str, str], str]

CONTROL_PREFIX = "/_fake"
_INTEGER = re.compile(r"-?\d+")


# ------------------------------------------------------------------ deterministic answers
def true_answer(prompt: str) -> int:
    """The right answer to ``prompt`` for the fake models: the sum of its integers."""
    return sum(int(n) for n in _INTEGER.findall(prompt))


def is_correct(model: str, prompt: str, accuracy: float) -> bool:
    """Whether ``model`` (with that accuracy) answers ``prompt`` correctly; deterministic."""
    draw = zlib.crc32(f"{model}\x00{prompt}".encode()) / 2**32
    return draw < accuracy


def default_answer(model: str, prompt: str, accuracy: float) -> str:
    value = true_answer(prompt) + (0 if is_correct(model, prompt, accuracy) else 1)
    return f"Let me work it out. The answer is {value}.\n#### {value}"


def token_count(text: str) -> int:
    """Tokens the fake reports for ``text``: ceil(chars / 4), at least 1."""
    return max(1, math.ceil(len(text) / 4))


def prompt_of(messages: list[Any]) -> str:
    """The text of the last user message (what the fake models answer)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


# ------------------------------------------------------------------ server state
@dataclass
class Behaviour:
    """What a model does with its next requests (see the module docstring)."""

    kind: str = "answer"  # answer | stall | fail | drop | slow | raw
    seconds: float = 0.0
    body: str = ""  # kind "raw": the 200 answer's body, sent as it is
    status: int = 500
    retry_after: str | None = None
    after_chunks: int = 1
    times: int | None = None  # remaining requests it applies to; None: until changed

    def __post_init__(self) -> None:
        if self.kind not in {"answer", "stall", "fail", "drop", "slow", "raw"}:
            raise ValueError(f"unknown behaviour {self.kind!r}")


class FakeState:
    """Models, behaviours and counters; lives in the server's event loop (one thread)."""

    def __init__(self, models: Mapping[str, float], answer_fn: AnswerFn | None = None) -> None:
        self.accuracy = dict(models)
        self.answer_fn = answer_fn
        self.behaviours = {model: Behaviour() for model in self.accuracy}
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()  # most requests in flight at once, per model and "*"
        self.bodies: list[Any] = []

    def answer(self, model: str, prompt: str) -> str:
        if self.answer_fn is not None:
            return self.answer_fn(model, prompt)
        return default_answer(model, prompt, self.accuracy[model])

    def next_behaviour(self, model: str) -> Behaviour:
        """The behaviour for this request, consuming one of its ``times``."""
        current = self.behaviours[model]
        if current.times is None:
            return current
        if current.times <= 1:
            self.behaviours[model] = Behaviour()
        else:
            self.behaviours[model] = replace(current, times=current.times - 1)
        return current

    def set_behaviour(self, model: str | None, behaviour: Behaviour) -> None:
        if model is not None and model not in self.accuracy:
            raise KeyError(model)
        for name in [model] if model is not None else list(self.accuracy):
            self.behaviours[name] = replace(behaviour)

    def reset(self) -> None:
        self.behaviours = {model: Behaviour() for model in self.accuracy}
        self.counts.clear()
        self.log.clear()
        self.bodies.clear()
        self.peak.clear()

    def started(self, model: str) -> None:
        self.counts[model] += 1
        for key in (model, "*"):
            self.in_flight[key] += 1
            self.peak[key] = max(self.peak[key], self.in_flight[key])

    def finished(self, model: str) -> None:
        for key in (model, "*"):
            self.in_flight[key] -= 1


# ------------------------------------------------------------------ ASGI application
def build_app(state: FakeState, api_key: str | None = None) -> Callable[..., Any]:
    """The ASGI app. Plain ASGI (no framework): it must send partial bodies to drop calls."""

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path.startswith("/v1/") and api_key is not None:
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            if auth != f"Bearer {api_key}":
                await _send_error(send, 401, "invalid API key", "invalid_request_error")
                return
        if path == "/v1/chat/completions" and method == "POST":
            await _chat(state, await _read_json(receive), send)
        elif path == "/v1/models" and method == "GET":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in state.accuracy]
            await _send_json(send, 200, {"object": "list", "data": data})
        elif path == "/health":
            await _send_json(send, 200, {"status": "ok"})
        elif path == f"{CONTROL_PREFIX}/behaviour" and method == "POST":
            await _control(state, await _read_json(receive), send)
        elif path == f"{CONTROL_PREFIX}/stats" and method == "GET":
            stats = {"counts": dict(state.counts), "log": state.log, "peak": dict(state.peak)}
            await _send_json(send, 200, stats)
        elif path == f"{CONTROL_PREFIX}/bodies" and method == "GET":
            await _send_json(send, 200, {"bodies": state.bodies})
        elif path == f"{CONTROL_PREFIX}/reset" and method == "POST":
            state.reset()
            await _send_json(send, 200, {"ok": True})
        else:
            await _send_error(send, 404, f"no route {method} {path}", "invalid_request_error")

    return app


async def _read_json(receive: Callable[..., Any]) -> Any:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    try:
        return json.loads(b"".join(chunks) or b"null")
    except ValueError:
        return None


async def _send_json(
    send: Callable[..., Any], status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _send_body(send, status, json.dumps(payload).encode(), headers)


async def _send_body(
    send: Callable[..., Any], status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Callable[..., Any], status: int, message: str, kind: str, retry_after: str | None = None
) -> None:
    headers = [(b"retry-after", retry_after.encode())] if retry_after is not None else []
    payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    await _send_json(send, status, payload, headers)


async def _control(state: FakeState, payload: Any, send: Callable[..., Any]) -> None:
    try:
        model = payload.pop("model", None)
        state.set_behaviour(model, Behaviour(**payload))
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        await _send_error(send, 400, f"bad behaviour: {exc!r}", "invalid_request_error")
        return
    await _send_json(send, 200, {"ok": True})


async def _chat(state: FakeState, body: Any, send: Callable[..., Any]) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        await _send_error(send, 400, "expected a JSON body with 'messages'", "invalid_request_error")
        return
    model = body.get("model")
    if model not in state.accuracy:
        await _send_error(send, 404, f"the model {model!r} does not exist", "invalid_request_error")
        return
    prompt = prompt_of(body["messages"])
    state.log.append((model, prompt))
    state.bodies.append(body)
    state.started(model)
    try:
        await _respond(state, model, prompt, body, send)
    finally:
        state.finished(model)


async def _respond(state: FakeState, model: str, prompt: str, body: dict[str, Any], send: Callable[..., Any]) -> None:
    """Answer one chat request according to the model's current behaviour."""
    behaviour = state.next_behaviour(model)
    if behaviour.kind == "stall":
        await asyncio.sleep(behaviour.seconds)
    elif behaviour.kind == "fail":
        kind = "rate_limit_error" if behaviour.status == 429 else "server_error"
        await _send_error(send, behaviour.status, f"fake failure {behaviour.status}", kind, behaviour.retry_after)
        return
    if behaviour.kind == "raw":
        await _send_body(send, 200, behaviour.body.encode())
        return
    content = state.answer(model, prompt)
    prompt_tokens = sum(token_count(message_text(m)) for m in body["messages"])
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": token_count(content),
        "total_tokens": prompt_tokens + token_count(content),
    }
    completion_id = f"chatcmpl-fake-{state.counts.total()}"
    drop = behaviour.kind == "drop"
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = _stream_chunks(completion_id, model, content, usage if include_usage else None)
        chunk_delay = behaviour.seconds if behaviour.kind == "slow" else 0.0
        await _send_stream(send, chunks, behaviour.after_chunks if drop else None, chunk_delay)
        return
    payload = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage,
    }
    if drop:
        # Promise a body, send none, return: the server closes the connection mid-response.
        headers = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        return
    await _send_json(send, 200, payload)


def _stream_chunks(completion_id: str, model: str, content: str, usage: dict[str, int] | None) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    pieces = re.findall(r"\S+\s*|\s+", content) or [""]
    chunks = [chunk({"role": "assistant", "content": ""}, None)]
    chunks += [chunk({"content": piece}, None) for piece in pieces]
    chunks.append(chunk({}, "stop"))
    if usage is not None:
        chunks.append({**chunk({}, None), "choices": [], "usage": usage})
    return chunks


async def _send_stream(
    send: Callable[..., Any], chunks: list[dict[str, Any]], drop_after: int | None, chunk_delay_s: float = 0.0
) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i, item in enumerate(chunks):
        if drop_after is not None and i >= drop_after:
            return  # returning before the last body message makes uvicorn drop the connection
        if chunk_delay_s:
            await asyncio.sleep(chunk_delay_s)
        await send({"type": "http.response.body", "body": f"data: {json.dumps(item)}\n\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


# ------------------------------------------------------------------ serving
def _listening_socket() -> socket.socket:
    # Explicit IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets whose proto says TCP;
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


def _uvicorn_server(app: Callable[..., Any]) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="critical",  # dropped connections are deliberate; keep test output clean
        access_log=False,
        lifespan="off",
        loop="asyncio",
        http="h11",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


class FakeBackend:
    """A fake OpenAI-compatible server; see the module docstring for the full API."""

    def __init__(
        self,
        models: Mapping[str, float],
        *,
        subprocess: bool = False,
        api_key: str | None = None,
        answer_fn: AnswerFn | None = None,
        lifetime_s: float = 600.0,
    ) -> None:
        if not models:
            raise ValueError("a fake backend needs at least one model")
        if subprocess and answer_fn is not None:
            raise ValueError("answer_fn needs the thread mode (a function cannot cross processes)")
        self.models = dict(models)
        self.api_key = api_key
        self.lifetime_s = lifetime_s
        self._subprocess = subprocess
        self._answer_fn = answer_fn
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._process: _subprocess.Popen[bytes] | None = None
        self._control: httpx.Client | None = None
        self.port: int | None = None

    # ----------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        if self.port is None:
            raise RuntimeError("the fake backend is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def start(self) -> FakeBackend:
        if self._subprocess:
            self._start_process()
        else:
            self._start_thread()
        self._control = httpx.Client(base_url=self.url + CONTROL_PREFIX, timeout=10)
        return self

    def _start_thread(self) -> None:
        sock = _listening_socket()
        self.port = sock.getsockname()[1]
        self._server = _uvicorn_server(build_app(FakeState(self.models, self._answer_fn), self.api_key))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"fake-backend-{self.port}", daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self._stop_thread_server)
        self._timer.daemon = True
        self._timer.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake backend did not start")
            time.sleep(0.005)

    def _stop_thread_server(self) -> None:
        self._server.should_exit = True

    def _start_process(self) -> None:
        spec = ",".join(f"{name}={acc}" for name, acc in self.models.items())
        command = [sys.executable, "-m", "entrorouter.testing.fake_backend", "--models", spec]
        command += ["--lifetime-s", str(self.lifetime_s)]
        env = dict(os.environ)
        if self.api_key is not None:
            env["FAKE_BACKEND_API_KEY"] = self.api_key  # not on the command line (ps shows it)
        self._process = _subprocess.Popen(command, stdin=_subprocess.PIPE, stdout=_subprocess.PIPE, env=env)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self._process.wait(timeout=10)
            raise RuntimeError(f"the fake backend process exited with code {self._process.returncode}")
        self.port = int(json.loads(line)["port"])

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._thread is not None:
            self._stop_thread_server()
            self._thread.join(timeout=10)
            self._thread = None
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()  # the child exits when its stdin closes
            try:
                self._process.wait(timeout=10)
            except _subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    def __enter__(self) -> FakeBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------- control
    def _post(self, path: str, payload: dict[str, Any]) -> None:
        if self._control is None:
            raise RuntimeError("the fake backend is not started")
        response = self._control.post(path, json=payload)
        if response.status_code != 200:
            raise ValueError(response.json()["error"]["message"])

    def set_behaviour(self, behaviour: Behaviour, model: str | None = None) -> None:
        self._post("/behaviour", {"model": model, **asdict(behaviour)})

    def answer(self, model: str | None = None) -> None:
        self.set_behaviour(Behaviour(), model)

    def stall(self, seconds: float, model: str | None = None, times: int | None = None) -> None:
        self.set_behaviour(Behaviour("stall", seconds=seconds, times=times), model)

    def fail(
        self,
        status: int = 500,
        model: str | None = None,
        times: int | None = None,
        retry_after: float | str | None = None,
    ) -> None:
        retry = None if retry_after is None else str(retry_after)
        self.set_behaviour(Behaviour("fail", status=status, retry_after=retry, times=times), model)

    def drop(self, model: str | None = None, times: int | None = None, after_chunks: int = 1) -> None:
        self.set_behaviour(Behaviour("drop", after_chunks=after_chunks, times=times), model)

    def slow(self, seconds: float, model: str | None = None, times: int | None = None) -> None:
        self.set_behaviour(Behaviour("slow", seconds=seconds, times=times), model)

    def raw(self, body: str, model: str | None = None, times: int | None = None) -> None:
        self.set_behaviour(Behaviour("raw", body=body, times=times), model)

    def _stats(self) -> dict[str, Any]:
        if self._control is None:
            raise RuntimeError("the fake backend is not started")
        return self._control.get("/stats").json()

    def counts(self) -> dict[str, int]:
        """Chat requests received per model (every model listed, 0 included)."""
        received = self._stats()["counts"]
        return {model: int(received.get(model, 0)) for model in self.models}

    def peak_in_flight(self, model: str | None = None) -> int:
        """Most chat requests in flight at once, for ``model`` or over all models (None)."""
        return int(self._stats()["peak"].get(model or "*", 0))

    def requests(self) -> list[tuple[str, str]]:
        """``(model, prompt)`` of every chat request, in arrival order."""
        return [(model, prompt) for model, prompt in self._stats()["log"]]

    def bodies(self) -> list[Any]:
        """The JSON body of every chat request, as received, in arrival order."""
        if self._control is None:
            raise RuntimeError("the fake backend is not started")
        return self._control.get("/bodies").json()["bodies"]

    def reset(self) -> None:
        self._post("/reset", {})


# ------------------------------------------------------------------ subprocess entry point
def _parse_models(spec: str) -> dict[str, float]:
    models = {}
    for item in spec.split(","):
        name, _, accuracy = item.rpartition("=")
        models[name] = float(accuracy)
    return models


async def _serve_until_parent_exits(app: Callable[..., Any], lifetime_s: float) -> None:
    sock = _listening_socket()
    server = _uvicorn_server(app)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving  # re-raises the startup failure
            return
        await asyncio.sleep(0.005)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)

    def wait_for_stdin_eof() -> None:
        sys.stdin.buffer.read()
        server.should_exit = True

    threading.Thread(target=wait_for_stdin_eof, daemon=True).start()
    asyncio.get_running_loop().call_later(lifetime_s, setattr, server, "should_exit", True)
    await serving


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI-compatible backend.")
    parser.add_argument("--models", required=True, help="name=accuracy,name=accuracy,...")
    parser.add_argument("--lifetime-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    state = FakeState(_parse_models(args.models))
    app = build_app(state, os.environ.get("FAKE_BACKEND_API_KEY"))
    asyncio.run(_serve_until_parent_exits(app, args.lifetime_s))


if __name__ == "__main__":
    main()
