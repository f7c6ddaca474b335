"""Choosing an operating point (a λ) on validation data so that it holds on test.

A point is *accepted* when it keeps ``target`` of the strongest model's accuracy with
confidence: the ``quantile`` of its paired-bootstrap retention (resampling validation
queries, the router and the strongest model on the same resample) must reach the target.
Among accepted points the cheapest wins; if none is accepted, the most accurate one.
The bootstrap replaces a fixed safety margin: it is wide on small validation sets and
narrow on large ones, which is exactly where a plain "retained ≥ target" rule misfires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OperatingPoint:
    index: int  # position in the candidate list
    accuracy: float
    cost: float
    retained: float  # point estimate
    retained_lower: float  # bootstrap quantile
    accepted: bool


def select_operating_point(
    candidate_scores: Sequence[np.ndarray],
    candidate_costs: Sequence[np.ndarray],
    strongest_scores: np.ndarray,
    *,
    target: float,
    quantile: float | None = 0.2,
    n_boot: int = 500,
    seed: int = 0,
) -> OperatingPoint:
    """Pick among candidates given per-query validation scores/costs of each (see module doc).

    ``quantile=None`` is the plain rule: the point estimate of retention must reach the target.
    """
    if not candidate_scores:
        raise ValueError("no candidate operating points")
    n = len(strongest_scores)
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, n, size=(n_boot, n))
    strong = strongest_scores[boot].mean(axis=1)
    points = []
    for i, (scores, costs) in enumerate(zip(candidate_scores, candidate_costs, strict=True)):
        acc = float(np.mean(scores))
        with np.errstate(divide="ignore", invalid="ignore"):
            retained_boot = scores[boot].mean(axis=1) / strong
        retained = acc / float(np.mean(strongest_scores)) if np.mean(strongest_scores) > 0 else float("nan")
        lower = retained if quantile is None else float(np.nanquantile(retained_boot, quantile))
        points.append(OperatingPoint(i, acc, float(np.mean(costs)), retained, lower, lower >= target))
    accepted = [p for p in points if p.accepted]
    if accepted:
        return min(accepted, key=lambda p: (p.cost, -p.accuracy))
    return max(points, key=lambda p: (p.accuracy, -p.cost))
