"""The calibration curve, and the risk-controlled choice of λ for a retention target.

Users ask for a retention target ("keep 98% of my strongest model"), not for a λ. This
module turns one into the other with a rule that states its guarantee (DESIGN §3.7).

**The curve.** Every training query is routed *out of fold* (K-fold cross-fitting: the
router that routes a query never saw its outcome) at every λ of a fine grid, and paired
with the strongest model S on the same query. Per λ the curve keeps sufficient statistics
of the per-query scores — means, variances and the covariance of the router's score ``s``
and S's score ``t`` — and the mean costs. That is all a later choice needs, so a saved
router can turn any target into a λ without its training data.

**The rule** (Learn-then-Test, fixed-sequence testing). Retention is a ratio,
``E[s] / E[t]``, but "retention ≥ T" is the linear statement ``E[s − T·t] ≥ 0``, so each λ
gets a one-sided test of ``H_λ: E[s − T·t] < 0`` from the paired differences
``d = s − T·t``: it is rejected (λ certified) when ``mean(d) − z₁₋δ·sd(d)·√(1/n + 1/m) ≥ 0``.
The grid is scanned from the most expensive λ (0) to the cheapest and the scan stops at the
first λ that is not certified; the cheapest certified λ is chosen. Testing in a fixed
order needs no multiplicity correction, however fine the grid.

**What is guaranteed, and what is not.** If future queries are exchangeable with the
training queries, the chosen λ keeps the target with probability ≥ 1 − δ (asymptotically:
the test uses the normal approximation of a mean, fine for the hundreds to thousands of
queries a routing table has; Hoeffding-style bounds would be exact but far wider):

* with ``future_queries = m``: retention measured on a future batch of m queries (the
  benchmark sets m to its test set's size, which is what its resplit study checks);
* with ``future_queries = None``: the expected retention on future traffic (m → ∞).

**Deployed at the certified spend.** The curve measures the fold routers; the router that
is used is refitted on all training rows, and a refit's λ does not mean exactly what a fold
router's λ meant (a trained policy's trade-off drifts by a few points of cost from fit to
fit). So a λ of the curve is deployed as the refitted router's λ that spends, on the
training queries, at least what the fold routers spent there out of fold
(:func:`spend_matched`; ``deployed_lams``): the certificate is "a router of this kind
spending this much keeps the target", and the refit, better informed than the fold
routers, spends it. On validation splits this removed the refit's random drift in both
directions (a violation at 97.2% and timid points at 100.6%).

**Pooling the folds** (``calibration_pooling``; the benchmark's ``--pooling``). The K fold
routers are K fits, and a trained policy's trade-off drifts from fit to fit: at one λ one fold
router may spend twice what another does.
Pooled at the same λ ("knob"), the curve's point is then a mixture of a cheap and an expensive
router, which lies below either one's curve. Pooled at the same *predicted* spend ("spend":
:func:`spend_aligned`), each fold contributes its router's knob that plans to spend what the
folds together plan to spend there (predicted costs only, never a score). Every decision
pooled is still a fold router's decision on queries it never learned from; what the other
folds add is the spend level, a mean of predicted costs on their own queries (whose routers
did learn from this fold), which picks which of this fold's out-of-fold decisions pool at a
point: a far weaker tie than a query's outcome reaching its own decision, which pooling at
the same knob rules out altogether.

Not guaranteed: traffic that drifts away from the training distribution; that the refit,
at the same spend, is at least as accurate as the fold routers (it learned from more rows,
but it is not literally the same router); retention per query or per task (only the
average over queries is covered).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from entrorouter.errors import EntroRouterError

DEFAULT_DELTA = 0.1


def lambda_grid(lam_min: float = 1e-3, lam_max: float = 2.0, n: int = 160) -> np.ndarray:
    """λ = 0 and ``n`` log-spaced λ in [lam_min, lam_max], ascending: the fine trade-off knob
    that calibration curves (and the benchmark's λ routers) are measured along."""
    return np.concatenate([[0.0], np.geomspace(lam_min, lam_max, n)])


@dataclass(frozen=True)
class Calibration:
    """Out-of-fold statistics per λ (ascending λ: most accurate and expensive first)."""

    lams: np.ndarray  # (G,) knob values in scan order (for a router: ascending λ)
    n: int  # paired queries behind every statistic
    mean_score: np.ndarray  # (G,) E[s]
    var_score: np.ndarray  # (G,) Var[s]
    cov_score: np.ndarray  # (G,) Cov[s, t]
    mean_cost: np.ndarray  # (G,)
    strong_mean: float  # E[t]
    strong_var: float  # Var[t]
    strong_cost: float
    delta: float = DEFAULT_DELTA
    future_queries: int | None = None
    deployed_lams: np.ndarray | None = None  # (G,) the refit's λ spending what each λ spent (None: λ itself)

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise EntroRouterError(f"calibration delta must be in (0, 1), got {self.delta}")
        if self.future_queries is not None and self.future_queries < 1:
            raise EntroRouterError(f"future_queries must be None or >= 1, got {self.future_queries}")
        if len(self.lams) == 0:
            raise EntroRouterError("calibration needs at least one λ")
        if self.deployed_lams is not None and len(self.deployed_lams) != len(self.lams):
            raise EntroRouterError(f"calibration has {len(self.deployed_lams)} deployed λ for {len(self.lams)} λ")

    # ------------------------------------------------------------- building
    @classmethod
    def from_outcomes(
        cls,
        lams: np.ndarray,
        scores: np.ndarray,
        costs: np.ndarray,
        strong_scores: np.ndarray,
        strong_costs: np.ndarray,
        **options: Any,
    ) -> Calibration:
        """From (G, n) per-query scores and costs at each λ and S's (n,) outcomes on the same queries."""
        scores, costs = np.asarray(scores, dtype=np.float64), np.asarray(costs, dtype=np.float64)
        t = np.asarray(strong_scores, dtype=np.float64)
        n = t.shape[0]
        if scores.shape != (len(lams), n) or costs.shape != scores.shape:
            raise ValueError(f"scores/costs must be ({len(lams)}, {n}), got {scores.shape} and {costs.shape}")
        if n < 2:
            raise EntroRouterError("calibration needs at least 2 queries")
        centred_t = t - t.mean()
        centred_s = scores - scores.mean(axis=1, keepdims=True)
        return cls(
            lams=np.asarray(lams, dtype=np.float64),
            n=n,
            mean_score=scores.mean(axis=1),
            var_score=centred_s.var(axis=1, ddof=1),
            cov_score=(centred_s * centred_t).sum(axis=1) / (n - 1),
            mean_cost=costs.mean(axis=1),
            strong_mean=float(t.mean()),
            strong_var=float(t.var(ddof=1)),
            strong_cost=float(np.mean(strong_costs)),
            **options,
        )

    # ------------------------------------------------------------ the curve
    @property
    def retention(self) -> np.ndarray:
        """(G,) point estimate of retention E[s] / E[t]."""
        return self.mean_score / self.strong_mean if self.strong_mean > 0 else np.full(len(self.lams), np.nan)

    @property
    def cost_reduction(self) -> np.ndarray:
        """(G,) 1 − E[cost] / E[cost of S]."""
        return 1 - self.mean_cost / self.strong_cost if self.strong_cost > 0 else np.zeros(len(self.lams))

    def _margin(self, target: float | np.ndarray, delta: float) -> np.ndarray:
        """(G,) mean(d) − z·se(d) for d = s − target·t (target: one, or one per λ); ≥ 0 certifies."""
        mean_d = self.mean_score - target * self.strong_mean
        var_d = self.var_score + target**2 * self.strong_var - 2 * target * self.cov_score
        scale = 1 / self.n + (0 if self.future_queries is None else 1 / self.future_queries)
        return mean_d - NormalDist().inv_cdf(1 - delta) * np.sqrt(np.maximum(var_d, 0.0) * scale)

    def retention_lower(self, delta: float | None = None) -> np.ndarray:
        """(G,) the highest target each λ alone would certify: a (1 − δ) lower bound of its retention."""
        delta = self.delta if delta is None else delta
        lo, hi = np.zeros(len(self.lams)), np.full(len(self.lams), 2.0)
        for _ in range(50):  # the margin falls as the target rises: bisect every λ at once
            mid = (lo + hi) / 2
            ok = self._margin(mid, delta) >= 0
            lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
        return lo

    # ------------------------------------------------------------ the choice
    def certified(self, target: float, delta: float | None = None) -> int:
        """How many λ of the grid the fixed-sequence scan certifies (0: not even the first)."""
        passed = self._margin(target, self.delta if delta is None else delta) >= 0
        return len(passed) if passed.all() else int(np.argmin(passed))

    def index_for(self, target: float, delta: float | None = None) -> int:
        """Grid index of the cheapest λ the scan certifies for ``target``; an error if none is."""
        if not 0 < target <= 1.5:
            raise EntroRouterError(f"target retention must be a fraction such as 0.98, got {target}")
        count = self.certified(target, delta)
        if count == 0:
            raise EntroRouterError(
                f"target retention {target:.4g} is not reachable with confidence {1 - (delta or self.delta):.0%}: "
                f"the highest reachable retention is {self.max_target(delta):.4f} "
                f"(at λ = {self.lams[0]:.4g}, estimated {self.retention[0]:.4f})"
            )
        return count - 1

    def deployed_lam(self, index: int) -> float:
        """The λ the refitted router routes with for grid point ``index`` (see the module doc)."""
        return float((self.lams if self.deployed_lams is None else self.deployed_lams)[index])

    def lam_for(self, target: float, delta: float | None = None) -> float:
        """The λ that keeps ``target`` of the strongest model's accuracy (see the module doc)."""
        return self.deployed_lam(self.index_for(target, delta))

    def deployed_indices(self, deployed_cost: np.ndarray) -> np.ndarray:
        """(G,) the knob each point deploys at, given the refit's mean cost ``deployed_cost`` (G,) at each
        knob (:func:`spend_matched`); a point never deploys cheaper than a later (cheaper) point does,
        so a lower target never gets a more expensive knob."""
        matched = spend_matched(self.mean_cost, deployed_cost)
        return np.minimum.accumulate(matched[::-1])[::-1]

    def deployed_index(self, index: int, deployed_cost_at: Callable[[int], float]) -> int:
        """:meth:`deployed_indices` ``[index]`` alone, asking ``deployed_cost_at(j)`` for the refit's
        mean cost at knob j in scan order and only as far as the answer needs.

        Point ``index`` deploys at the last knob before the refit's running-minimum spend falls
        below the highest certified cost of this point and the points after it (no point deploys
        cheaper than a later one); the knobs past that one cannot change the answer. The
        benchmark learns the refit's spend by routing its training queries at each knob, so it
        routes them only up to the deployed knob, not along the whole grid."""
        needed = float(np.max(self.mean_cost[index:]))
        spend = math.inf
        for j in range(len(self.lams)):
            spend = min(spend, float(deployed_cost_at(j)))
            if spend < needed:
                return max(j - 1, 0)
        return len(self.lams) - 1

    def with_deployed_spend(self, deployed_cost: np.ndarray) -> Calibration:
        """This curve, its λ deployed where the refit spends ``deployed_cost`` (:meth:`deployed_indices`)."""
        return replace(self, deployed_lams=self.lams[self.deployed_indices(deployed_cost)])

    def max_target(self, delta: float | None = None) -> float:
        """The highest target any λ can be certified for (that of the first, most accurate λ)."""
        return float(self.retention_lower(delta)[0])

    # -------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the readable curve (retention, its lower bound, cost reduction) alongside."""

        def floats(values: np.ndarray) -> list[float]:
            return [float(v) for v in values]

        return {
            "n": self.n,
            "delta": self.delta,
            "future_queries": self.future_queries,
            "strong_mean": self.strong_mean,
            "strong_var": self.strong_var,
            "strong_cost": self.strong_cost,
            "lams": floats(self.lams),
            "mean_score": floats(self.mean_score),
            "var_score": floats(self.var_score),
            "cov_score": floats(self.cov_score),
            "mean_cost": floats(self.mean_cost),
            "retention": floats(self.retention),
            "retention_lower": floats(self.retention_lower()),
            "cost_reduction": floats(self.cost_reduction),
            "deployed_lams": None if self.deployed_lams is None else floats(self.deployed_lams),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "calibration") -> Calibration:
        try:
            return cls(
                lams=np.asarray(raw["lams"], dtype=np.float64),
                n=int(raw["n"]),
                mean_score=np.asarray(raw["mean_score"], dtype=np.float64),
                var_score=np.asarray(raw["var_score"], dtype=np.float64),
                cov_score=np.asarray(raw["cov_score"], dtype=np.float64),
                mean_cost=np.asarray(raw["mean_cost"], dtype=np.float64),
                strong_mean=float(raw["strong_mean"]),
                strong_var=float(raw["strong_var"]),
                strong_cost=float(raw["strong_cost"]),
                delta=float(raw["delta"]),
                future_queries=None if raw.get("future_queries") is None else int(raw["future_queries"]),
                deployed_lams=None if raw.get("deployed_lams") is None else np.asarray(raw["deployed_lams"], float),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EntroRouterError(f"{source}: missing or invalid calibration field ({exc})") from None


def spend_matched(certified_cost: np.ndarray, deployed_cost: np.ndarray) -> np.ndarray:
    """(G,) for each point of a curve, the cheapest knob of the deployed router that still spends
    at least that point's ``certified_cost``; ``deployed_cost`` (G,) is the deployed router's mean
    cost at each knob on the training queries. Knobs are in scan order (most expensive first);
    the deployed costs are made non-increasing first, so a noisy bump cannot send the match
    back up the curve. Where even the first knob spends less, the first knob."""
    spend = np.minimum.accumulate(np.asarray(deployed_cost, dtype=np.float64))
    # spend is non-increasing: the knobs spending ≥ c are a prefix; the match is its last knob.
    enough = np.searchsorted(-spend, -np.asarray(certified_cost, dtype=np.float64), side="right")
    return np.maximum(enough - 1, 0)


def planned_spend(predicted_cost: np.ndarray, answered: np.ndarray) -> np.ndarray:
    """(G,) a fold router's planned spend along its knobs: the mean predicted cost (n, K) of the
    model it chose (G, n) for each of its held-out queries, at each knob."""
    return np.take_along_axis(predicted_cost, answered.T, axis=1).mean(axis=0)


def spend_aligned(fold_spend: np.ndarray, fold_sizes: np.ndarray) -> np.ndarray:
    """(F, G) for each of F fold routers and each point of a grid of G knobs, the fold's knob that
    pools into that point when folds are pooled at equal spend (the module doc's "spend").

    ``fold_spend`` (F, G): each fold router's :func:`planned_spend` on its held-out queries;
    ``fold_sizes`` (F,): how many queries it held out. Point g is the folds' pooled planned
    spend at knob g (non-increasing); each fold takes its cheapest knob that still plans to
    spend that much (:func:`spend_matched`)."""
    levels = np.minimum.accumulate(np.average(fold_spend, axis=0, weights=fold_sizes))
    return np.stack([spend_matched(levels, spend) for spend in fold_spend])


def pool_folds(
    fold_values: Sequence[np.ndarray], fold_rows: Sequence[np.ndarray], fold_spend: np.ndarray | None = None
) -> np.ndarray:
    """(G, n) out-of-fold values: each fold router's (G, n_f) per-query values along its knobs,
    put in its rows (boolean masks over the n queries), pooled at the same knob, or with
    ``fold_spend`` (F, G) at equal planned spend (:func:`spend_aligned`)."""
    n_knobs = fold_values[0].shape[0]
    if fold_spend is None:
        knobs = np.tile(np.arange(n_knobs), (len(fold_values), 1))
    else:
        knobs = spend_aligned(fold_spend, np.array([rows.sum() for rows in fold_rows]))
    pooled = np.empty((n_knobs, len(fold_rows[0])), dtype=fold_values[0].dtype)
    for values, rows, fold_knobs in zip(fold_values, fold_rows, knobs, strict=True):
        pooled[:, rows] = values[fold_knobs]
    return pooled
