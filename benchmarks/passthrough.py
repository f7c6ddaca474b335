"""The floor for any gateway: a bare uvicorn pass-through, for ``bench_gateway.py``.

    python benchmarks/passthrough.py --port 9000 --upstream http://127.0.0.1:8001/v1 [--client aiohttp]

It answers any GET with 200 (readiness) and forwards POST bodies to the upstream unchanged and returns the
upstream's status and body (no parsing, auth, logging, metrics or streaming relay), with
the same server settings as ``entrorouter serve`` (uvloop, httptools, one process). The
upstream call goes through httpx (the issue's reference) or aiohttp (what the gateway uses).
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

CLIENTS = ("httpx", "aiohttp")


class HttpxClient:
    def __init__(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self.client = httpx.AsyncClient(limits=limits, timeout=30)

    async def post(self, url: str, body: bytes) -> tuple[int, str, bytes]:
        response = await self.client.post(url, content=body, headers={"content-type": "application/json"})
        return response.status_code, response.headers.get("content-type", "application/json"), response.content

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpClient:
    def __init__(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

    async def post(self, url: str, body: bytes) -> tuple[int, str, bytes]:
        async with self.session.post(url, data=body, headers={"content-type": "application/json"}) as response:
            return response.status, response.headers.get("content-type", "application/json"), await response.read()

    async def aclose(self) -> None:
        await self.session.close()


def build_app(upstream: str, client_name: str = "httpx") -> Any:
    client: HttpxClient | AiohttpClient | None = None
    url = f"{upstream}/chat/completions"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal client
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    client = AiohttpClient() if client_name == "aiohttp" else HttpxClient()
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
        status, content_type, content = await client.post(url, body)
        headers = [(b"content-type", content_type.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the backend's base URL (ending in /v1)")
    parser.add_argument("--client", choices=CLIENTS, default="httpx", help="HTTP client of the upstream call (httpx)")
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.upstream, args.client),
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
