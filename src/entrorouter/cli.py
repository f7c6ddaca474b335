"""The `entrorouter` command line.

Each concern registers its own sub-commands (``register(subparsers)`` in its ``cli``
module), so this file only wires them together and turns user errors into one line on
stderr with exit code 2. Modules are imported when their command runs, so ``--help``
stays fast and nothing heavy loads at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from entrorouter import __version__
from entrorouter.errors import EntroRouterError
from entrorouter.progress import plain_progress_lines
from entrorouter.threads import apply_threads

# (module, doc) for each concern that adds sub-commands; order is the --help order.
COMMAND_MODULES = (
    "entrorouter.data.cli",  # data import / inspect / validate
    "entrorouter.training.cli",  # train, evaluate, route, quickstart
    "entrorouter.evaluation.cli",  # benchmark
    "entrorouter.serving.cli",  # serve
    "entrorouter.collection.cli",  # collect
)


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="entrorouter",
        description="Learn which LLM should answer each request, prove it, and serve it.",
    )
    parser.add_argument("--version", action="version", version=f"entrorouter {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a concern that is not built yet
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with plain_progress_lines():
            apply_threads()
            return int(args.handler(args) or 0)
    except EntroRouterError as exc:
        print(f"entrorouter: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("entrorouter: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
