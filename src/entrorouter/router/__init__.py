"""Everything a saved router needs at routing time, and nothing else.

A router is loaded, routes and is saved from here: the query encoder handle
(:mod:`entrorouter.features`), the capability estimators, the policy
(:mod:`entrorouter.policy`), the cost predictor and the calibration curve that turns a
retention target into a λ. This package imports nothing from ``training``, ``evaluation``
or ``baselines``: those build routers (``Router.fit`` imports training on first use) and
read them, so the gateway and ``entrorouter route`` load only what routing needs.
"""

from entrorouter.router.model import FORMAT_VERSION, Router, RouteResult, RoutingInputs

__all__ = ["FORMAT_VERSION", "RouteResult", "Router", "RoutingInputs"]
