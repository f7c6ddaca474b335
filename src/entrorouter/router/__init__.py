"""Everything a saved router needs at routing time, and nothing else.

A router is loaded, routes and is saved from here: the query encoder handle
(:mod:`entrorouter.features`), the capability estimators, the policy's weights
(:mod:`entrorouter.policy.weights`), the cost predictor and the calibration curve that
turns a retention target into a λ. This package imports nothing from ``training``,
``evaluation`` or ``baselines``: those build routers (``Router.fit`` imports training on
first use) and read them, so the gateway and ``entrorouter route`` load only what routing
needs. Routing is NumPy: torch is loaded only by an encoder that runs on it (``minilm``).

The names below load on first use, so that :mod:`entrorouter.router.calibration` can be
imported alone: the gateway process reads retention targets with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["FORMAT_VERSION", "RouteResult", "Router", "RoutingInputs"]

if TYPE_CHECKING:
    from entrorouter.router.model import FORMAT_VERSION, Router, RouteResult, RoutingInputs


def __getattr__(name: str) -> Any:
    if name in __all__:
        from entrorouter.router import model

        return getattr(model, name)
    raise AttributeError(f"module 'entrorouter.router' has no attribute {name!r}")
