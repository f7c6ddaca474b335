"""Routing metrics: realised accuracy/cost, reference routers, AIQ, APGR, entropy, suppression.

Every router is scored by the same rule: for each query, the first model of its ranking
that has a recorded outcome answers (a missing outcome is an unavailable backend; see
:mod:`entrorouter.data.table`).

Curve metrics use a cost axis normalised per table: ``x = (cost - c_weak) / (c_strong -
c_weak)`` with ``c_weak`` the mean cost of the cheapest single model and ``c_strong`` that
of the strongest. The *hull* of a set of (x, accuracy) points is the upper convex hull
(Andrew's monotone chain) of the points plus ``(1, best accuracy)`` — paying more never
forces lower accuracy — and is 0 left of the cheapest point.

* **AIQ** = area under the hull over x in [0, 1] (RouterBench's average improvement in quality).
* **APGR** = area under ``(hull - a_weak) / (a_strong - a_weak)`` over x in [0, 1]
  (RouteLLM's average performance gap recovered, with cost instead of % strong calls).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from entrorouter.data.table import OutcomeTable

SUPPRESSION_MIN_ORACLE_SHARE = 0.02  # a model is "needed" if it is the cheapest correct one this often
SUPPRESSION_MAX_USAGE = 0.005  # ... and "suppressed" if it receives less routing than this


@dataclass(frozen=True)
class Routed:
    """The realised outcome of routing every query of a table."""

    answered: np.ndarray  # (n,) index of the model that answered
    scores: np.ndarray  # (n,) its score
    costs: np.ndarray  # (n,) its cost (US$)

    @property
    def accuracy(self) -> float:
        return float(self.scores.mean())

    @property
    def cost(self) -> float:
        return float(self.costs.mean())

    def usage(self, n_models: int) -> np.ndarray:
        return np.bincount(self.answered, minlength=n_models) / max(len(self.answered), 1)


def realize(table: OutcomeTable, rankings: np.ndarray) -> Routed:
    """Answer each query with the first model of its ranking that has an outcome.

    ``rankings`` is (n, r) model indices in order of preference (r <= K); a ranking that
    covers every model always finds one, since every query has at least one outcome.
    """
    rankings = np.asarray(rankings, dtype=np.int64)
    if rankings.ndim == 1:
        rankings = rankings[:, None]
    observed = table.observed[np.arange(table.n_queries)[:, None], rankings]
    if not observed.any(axis=1).all():
        # Complete short rankings with the remaining models in pool order.
        full = np.array([_complete(r, table.n_models) for r in rankings])
        return realize(table, full)
    first = observed.argmax(axis=1)
    answered = rankings[np.arange(len(rankings)), first]
    rows = np.arange(table.n_queries)
    return Routed(answered, table.scores[rows, answered], table.costs[rows, answered])


def _complete(ranking: np.ndarray, n_models: int) -> np.ndarray:
    rest = [k for k in range(n_models) if k not in set(ranking.tolist())]
    return np.concatenate([ranking, np.array(rest, dtype=np.int64)])


def rankings_from_scores(utility: np.ndarray) -> np.ndarray:
    """Full rankings (best first) from a (n, K) utility matrix; ties keep pool order."""
    return np.argsort(-utility, axis=1, kind="stable")


# ------------------------------------------------------------ reference routers
def single_model_rankings(table: OutcomeTable, model: int) -> np.ndarray:
    """Always ``model``; where its outcome is missing, fall back by global accuracy."""
    accuracy = table.model_stats()["accuracy"].to_numpy()
    order = [model, *[int(k) for k in np.argsort(-accuracy, kind="stable") if k != model]]
    return np.tile(np.array(order), (table.n_queries, 1))


def oracle_rankings(table: OutcomeTable) -> np.ndarray:
    """The cheapest model reaching the query's best score (the upper bound), then by cost."""
    scores = np.where(table.observed, table.scores, -np.inf)
    costs = np.where(table.observed, table.costs, np.inf)
    best = scores.max(axis=1, keepdims=True)
    # Primary key: reaches the best score; secondary: cheaper.
    key = np.where(scores >= best, 0.0, 1.0) * 1e9 + np.nan_to_num(costs, posinf=1e18)
    return np.argsort(key, axis=1, kind="stable")


def random_routing(table: OutcomeTable) -> tuple[float, float]:
    """Expected accuracy and cost of picking a model uniformly among those with an outcome."""
    obs = table.observed
    n_obs = obs.sum(axis=1)
    acc = (np.where(obs, table.scores, 0.0).sum(axis=1) / n_obs).mean()
    cost = (np.where(obs, table.costs, 0.0).sum(axis=1) / n_obs).mean()
    return float(acc), float(cost)


@dataclass(frozen=True)
class Reference:
    """The points every report compares against, computed on one table."""

    strongest: str
    strongest_accuracy: float
    strongest_cost: float
    cheapest: str
    cheapest_accuracy: float
    cheapest_cost: float
    oracle_accuracy: float
    oracle_cost: float
    random_accuracy: float
    random_cost: float

    def retained(self, accuracy: float) -> float:
        return accuracy / self.strongest_accuracy if self.strongest_accuracy > 0 else float("nan")

    def cost_reduction(self, cost: float) -> float:
        return 1.0 - cost / self.strongest_cost if self.strongest_cost > 0 else float("nan")

    def normalise_cost(self, cost: np.ndarray | float) -> np.ndarray:
        span = self.strongest_cost - self.cheapest_cost
        return (np.asarray(cost, dtype=np.float64) - self.cheapest_cost) / (span if span > 0 else 1.0)


def reference(table: OutcomeTable, *, strongest: str | None = None) -> Reference:
    """Strongest/cheapest single models (scored by :func:`realize`), oracle and random."""
    strongest = strongest or table.strongest_model()
    cheapest = table.cheapest_model()
    s = realize(table, single_model_rankings(table, table.model_index(strongest)))
    c = realize(table, single_model_rankings(table, table.model_index(cheapest)))
    o = realize(table, oracle_rankings(table))
    r_acc, r_cost = random_routing(table)
    return Reference(
        strongest,
        s.accuracy,
        s.cost,
        cheapest,
        c.accuracy,
        c.cost,
        o.accuracy,
        o.cost,
        r_acc,
        r_cost,
    )


# ------------------------------------------------------------------- curves
def upper_hull(points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Upper convex hull (Andrew's monotone chain), left to right, as an (m, 2) array."""
    pts = sorted({(float(x), float(y)) for x, y in points})
    hull: list[tuple[float, float]] = []
    for p in pts:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    return np.array(hull, dtype=np.float64).reshape(-1, 2)


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def hull_area(points: Sequence[tuple[float, float]], *, lo: float = 0.0, hi: float = 1.0) -> float:
    """Area over [lo, hi] under the hull of ``points`` + (hi, best y); 0 left of the first point."""
    pts = [(min(max(x, lo), hi), y) for x, y in points]
    if not pts:
        return 0.0
    best = max(y for _, y in pts)
    hull = upper_hull([*pts, (hi, best)])
    return float(np.trapezoid(hull[:, 1], hull[:, 0]))


def aiq(curve: Sequence[tuple[float, float]], ref: Reference) -> float:
    """AIQ of a (cost US$, accuracy) curve on the table ``ref`` was computed on."""
    return hull_area([(float(ref.normalise_cost(c)), a) for c, a in curve])


def apgr(curve: Sequence[tuple[float, float]], ref: Reference) -> float:
    """APGR of a (cost US$, accuracy) curve; 0 = no better than the cheapest model, 1 = strongest."""
    gap = ref.strongest_accuracy - ref.cheapest_accuracy
    if gap <= 0:
        return float("nan")
    pgr = [(float(ref.normalise_cost(c)), (a - ref.cheapest_accuracy) / gap) for c, a in curve]
    # The hull of PGR points is the hull of the accuracy points, shifted and scaled.
    return hull_area(pgr)


#: The paper's bar (README, "What the numbers mean"): keep 98.3% of the strongest model's accuracy
#: at 48.25% lower cost.
PAPER_TARGET_RETENTION = 0.983
PAPER_COST_REDUCTION = 0.4825


def best_cost_reduction(
    curve: Sequence[tuple[float, float]], *, strongest_accuracy: float, strongest_cost: float, target: float
) -> float | None:
    """The highest cost reduction among the (cost US$, accuracy) points of ``curve`` that keep
    ``target`` of the strongest model's accuracy; None when none does.

    On a test curve this is hindsight (choosing that point would be tuning on test): what a
    router's curve allows, beside what a choice made without test data got."""
    savings = [1 - cost / strongest_cost for cost, accuracy in curve if accuracy >= target * strongest_accuracy]
    return max(savings) if savings else None


# ------------------------------------------------------------ entropy, usage
def entropy(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=axis)


def expert_suppression(oracle_share: np.ndarray, usage: np.ndarray) -> tuple[float, list[int]]:
    """Share of "needed" models the router starves, and their indices.

    A model is needed if it is the cheapest correct model for at least 2% of the queries,
    and suppressed if it then receives less than 0.5% of the routing (DESIGN §3).
    """
    needed = np.flatnonzero(oracle_share >= SUPPRESSION_MIN_ORACLE_SHARE)
    suppressed = [int(k) for k in needed if usage[k] < SUPPRESSION_MAX_USAGE]
    return (len(suppressed) / len(needed) if len(needed) else 0.0), suppressed


def oracle_usage(table: OutcomeTable) -> np.ndarray:
    """How often each model is the cheapest correct one (queries nobody solves excluded)."""
    solvable = (np.where(table.observed, table.scores, 0.0) > 0).any(axis=1)
    first = oracle_rankings(table)[:, 0][solvable]
    return np.bincount(first, minlength=table.n_models) / max(int(solvable.sum()), 1)
