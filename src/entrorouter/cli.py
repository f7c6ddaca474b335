"""The `entrorouter` command line.

Each concern registers its own sub-commands (``register(subparsers)`` in its ``cli``
module), so this file only wires them together and turns user errors into one line on
stderr with exit code 2. A command imports only its own concern's CLI module, and those
import their heavy parts when the command runs, so nothing heavy loads at import time.
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

# Each concern's CLI module and the sub-commands it registers; order is the --help order.
COMMAND_MODULES = {
    "entrorouter.data.cli": ("data",),
    "entrorouter.training.cli": ("train", "evaluate", "quickstart"),
    "entrorouter.router.cli": ("route",),
    "entrorouter.evaluation.cli": ("benchmark",),
    "entrorouter.serving.cli": ("serve",),
    "entrorouter.collection.cli": ("collect",),
}


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only the module that owns it is imported (so that
    ``entrorouter route`` loads no training code), else every command's module (for --help)."""
    parser = _Parser(
        prog="entrorouter",
        description="Learn which LLM should answer each request, prove it, and serve it.",
    )
    parser.add_argument("--version", action="version", version=f"entrorouter {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    owners = [name for name, commands in COMMAND_MODULES.items() if command in commands]
    for name in owners or COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
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
