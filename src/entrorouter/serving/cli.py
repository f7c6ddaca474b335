"""`entrorouter serve`: run the OpenAI-compatible routing gateway.

Only argparse is imported here; the server, the router and torch load when the command
runs, so ``entrorouter --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from entrorouter.serving.config import GatewayConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve a trained router as an OpenAI-compatible gateway",
        description="Serve a trained router as an OpenAI-compatible gateway (see docs/gateway.md).",
    )
    serve.add_argument("--config", required=True, type=Path, help="gateway YAML (see examples/gateway.yaml)")
    serve.add_argument("--host", help="interface to listen on (default: server.host, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port, else 8000)")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from entrorouter.serving.app import Gateway, create_app
    from entrorouter.serving.config import load_gateway_config
    from entrorouter.serving.logs import configure_logging

    config = load_gateway_config(args.config)
    configure_logging(config.logging.level)
    gateway = Gateway.load(config)
    gateway.start_router()  # before the socket opens: a router that cannot route fails in one line
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(gateway),
            host=args.host or config.server.host,
            port=config.server.port if args.port is None else args.port,
            loop=_event_loop(),
            backlog=4096,
            **server_settings(config),
        )
    )
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal.
    server.run()
    return 0 if server.started else 1


def server_settings(config: GatewayConfig) -> dict[str, Any]:
    """The uvicorn settings of the gateway's HTTP server (the tests' in-thread server uses them too)."""
    return {
        "http": "httptools",
        "lifespan": "on",
        "log_config": None,  # configure_logging sets JSON logs
        "access_log": False,  # the gateway logs each request itself, without bodies
        "timeout_graceful_shutdown": config.server.drain_timeout_s,
        "timeout_keep_alive": config.server.keep_alive_s,
    }


def _event_loop() -> str:
    try:
        import uvloop  # noqa: F401  # the faster loop where it is installed (not on Windows)
    except ImportError:
        return "asyncio"
    return "uvloop"
