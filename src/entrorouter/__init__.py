"""EntroRouter: learn which LLM should answer each request.

Importing the package is cheap: heavy modules (torch, sentence-transformers) load
only when the names below are first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["OutcomeTable", "RouteResult", "Router", "TrainConfig", "read_table", "write_table"]

_LAZY = {
    "OutcomeTable": "entrorouter.data.table",
    "read_table": "entrorouter.data.io",
    "write_table": "entrorouter.data.io",
    "Router": "entrorouter.router",
    "RouteResult": "entrorouter.router",
    "TrainConfig": "entrorouter.router.config",
}

if TYPE_CHECKING:
    from entrorouter.data.io import read_table, write_table
    from entrorouter.data.table import OutcomeTable
    from entrorouter.router import Router, RouteResult
    from entrorouter.router.config import TrainConfig


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'entrorouter' has no attribute {name!r}")
