"""`Router.evaluate` and `entrorouter evaluate`: a router's accuracy, cost and retention on a table.

Evaluation needs realised outcomes and the metrics of :mod:`entrorouter.evaluation.metrics`,
which a router never needs at routing time; so it lives here and reads the router.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from entrorouter.data.table import OutcomeTable
from entrorouter.errors import EntroRouterError
from entrorouter.evaluation.metrics import Reference, entropy, expert_suppression, oracle_usage, realize, reference

if TYPE_CHECKING:
    from entrorouter.router import Router


def evaluate_router(
    router: Router,
    table: OutcomeTable,
    lam: float,
    *,
    features: np.ndarray | None = None,
    cost_weight: float = 0.0,
) -> dict[str, Any]:
    """Route every query of ``table`` at ``lam`` and score the choices (missing outcomes: see metrics.realize)."""
    router.check_fitted()
    table = table.select_models(router.models)
    unseen = table.unobserved_models()
    if unseen:  # the router may choose them, and what it then gets cannot be measured
        raise EntroRouterError(
            f"table {table.name!r} has no outcome for model(s) {unseen} of the router's pool on the rows "
            "evaluated; evaluate on rows where every model was tried"
        )
    texts = [str(q) for q in table.queries]
    if features is None:
        features = router.embed(texts)
    probs, rankings = router.rank(router.inputs(features, texts), lam, cost_weight=cost_weight)
    report = evaluation_report(table, realize(table, rankings), probs, lam=lam)
    report["trained_on_share"] = float(router.trained_on_queries(texts).mean()) if texts else 0.0
    return report


def evaluation_report(
    table: OutcomeTable,
    routed: Any,
    probs: np.ndarray | None,
    *,
    lam: float | None,
    ref: Reference | None = None,
) -> dict[str, Any]:
    """The `evaluate` JSON: router accuracy/cost next to the strongest model's."""
    ref = ref or reference(table)
    usage = routed.usage(table.n_models)
    suppression, suppressed = expert_suppression(oracle_usage(table), usage)
    return {
        "table": table.name,
        "n_queries": table.n_queries,
        "lam": lam,
        "accuracy": routed.accuracy,
        "cost": routed.cost,
        "strongest_model": ref.strongest,
        "strongest_accuracy": ref.strongest_accuracy,
        "strongest_cost": ref.strongest_cost,
        # null where the ratio is not defined (the strongest model scores or costs 0): JSON has no NaN
        "retained": _defined(ref.retained(routed.accuracy)),
        "cost_reduction": _defined(ref.cost_reduction(routed.cost)),
        "cheapest_model": ref.cheapest,
        "cheapest_accuracy": ref.cheapest_accuracy,
        "cheapest_cost": ref.cheapest_cost,
        "oracle_accuracy": ref.oracle_accuracy,
        "oracle_cost": ref.oracle_cost,
        "random_accuracy": ref.random_accuracy,
        "random_cost": ref.random_cost,
        "entropy": float(entropy(probs, axis=1).mean()) if probs is not None else 0.0,
        "usage": {m: float(u) for m, u in zip(table.models, usage, strict=True)},
        "expert_suppression": suppression,
        "suppressed_models": [table.models[k] for k in suppressed],
    }


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else value
