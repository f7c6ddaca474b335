"""The floor for any gateway: a bare uvicorn + httpx pass-through, for ``bench_gateway.py``.

    python benchmarks/passthrough.py --port 9000 --upstream http://127.0.0.1:8001/v1

It answers any GET with 200 (readiness) and forwards POST bodies to the upstream unchanged and returns the
upstream's status and body (no parsing, auth, logging, metrics or streaming relay), with
the same server settings as ``entrorouter serve`` (uvloop, httptools, one process).
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import uvicorn


def build_app(upstream: str) -> Any:
    client: httpx.AsyncClient | None = None
    url = f"{upstream}/chat/completions"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal client
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
                    client = httpx.AsyncClient(limits=limits, timeout=30)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    assert client is not None
                    await client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["method"] == "GET":  # the benchmark's readiness probe
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        assert client is not None
        response = await client.post(url, content=body, headers={"content-type": "application/json"})
        headers = [(b"content-type", response.headers.get("content-type", "application/json").encode())]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": response.content})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the backend's base URL (ending in /v1)")
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
