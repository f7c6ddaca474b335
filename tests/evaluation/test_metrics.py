"""Metric functions against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from entrorouter.data.table import OutcomeTable
from entrorouter.evaluation.metrics import (
    aiq,
    apgr,
    best_cost_reduction,
    entropy,
    expert_suppression,
    hull_area,
    oracle_rankings,
    random_routing,
    realize,
    reference,
    upper_hull,
)


def test_upper_hull_drops_points_below_the_chain() -> None:
    hull = upper_hull([(0, 0), (1, 1), (0.5, 0.2), (0.5, 0.9), (0.2, 0.1)])
    assert hull.tolist() == [[0, 0], [0.5, 0.9], [1, 1]]


def test_hull_area_hand_computed() -> None:
    # Points (0, 0.5) and (0.5, 1): trapezoid 0.5*(0.5+1)/2 = 0.375, then flat at 1 over
    # [0.5, 1] = 0.5, total 0.875.
    assert hull_area([(0.0, 0.5), (0.5, 1.0)]) == pytest.approx(0.875)
    # A single point at x=0 extends flat: area = its accuracy.
    assert hull_area([(0.0, 0.7)]) == pytest.approx(0.7)
    # Nothing left of the first point: (0.5, 1) alone covers only [0.5, 1].
    assert hull_area([(0.5, 1.0)]) == pytest.approx(0.5)
    # A dominated point does not lower the area.
    assert hull_area([(0.0, 0.5), (0.5, 1.0), (0.25, 0.1)]) == pytest.approx(0.875)


def table() -> OutcomeTable:
    # cheap is right on q0, q1; strong on q0, q1, q2; nobody on q3.
    return OutcomeTable.from_arrays(
        query_ids=list("abcd"),
        queries=list("abcd"),
        models=["cheap", "strong"],
        scores=np.array([[1, 1], [1, 1], [0, 1], [0, 0]], dtype=float),
        costs=np.array([[1, 10], [1, 10], [1, 10], [1, 10]], dtype=float),
    )


def test_best_cost_reduction_reads_only_the_points_that_keep_the_target() -> None:
    # (cost, accuracy) with the strongest model at 0.8 accuracy and 10.0 cost; 98% of 0.8 is 0.784.
    curve = [(10.0, 0.80), (6.0, 0.79), (4.0, 0.785), (3.0, 0.70), (1.0, 0.60)]
    best = best_cost_reduction(curve, strongest_accuracy=0.8, strongest_cost=10.0, target=0.98)
    assert best == pytest.approx(0.6)  # the cheapest point that keeps it; not the cheaper misses
    assert best_cost_reduction(curve, strongest_accuracy=0.8, strongest_cost=10.0, target=1.01) is None


def test_reference_points() -> None:
    ref = reference(table())
    assert (ref.strongest, ref.strongest_accuracy, ref.strongest_cost) == ("strong", 0.75, 10)
    assert (ref.cheapest, ref.cheapest_accuracy, ref.cheapest_cost) == ("cheap", 0.5, 1)
    # Oracle: cheap for q0, q1; strong for q2; cheapest (cheap) when nobody is right.
    assert ref.oracle_accuracy == 0.75 and ref.oracle_cost == pytest.approx((1 + 1 + 10 + 1) / 4)
    assert random_routing(table()) == (pytest.approx(0.625), pytest.approx(5.5))
    assert ref.retained(0.6) == pytest.approx(0.8)
    assert ref.cost_reduction(4.0) == pytest.approx(0.6)


def test_aiq_and_apgr() -> None:
    ref = reference(table())
    curve = [(1.0, 0.5), (5.5, 0.75)]  # cheap alone, then half-way cost at the strong accuracy
    # normalised x: 0 and 0.5 -> area 0.5*(0.5+0.75)/2 + 0.5*0.75 = 0.6875
    assert aiq(curve, ref) == pytest.approx(0.6875)
    # PGR: 0 at x=0, 1 at x=0.5 -> 0.25 + 0.5 = 0.75
    assert apgr(curve, ref) == pytest.approx(0.75)


def test_realize_falls_back_past_missing_outcomes() -> None:
    t = table()
    t.scores[0, 1] = np.nan
    t.costs[0, 1] = np.nan
    routed = realize(t, np.array([[1, 0]] * 4))
    assert routed.answered.tolist() == [0, 1, 1, 1]  # q0's strong outcome is missing
    assert routed.accuracy == pytest.approx(0.75)
    assert oracle_rankings(t)[0, 0] == 0


def test_entropy_and_suppression() -> None:
    assert entropy(np.array([0.5, 0.5])) == pytest.approx(np.log(2))
    assert entropy(np.array([1.0, 0.0])) == 0.0
    share, suppressed = expert_suppression(np.array([0.5, 0.3, 0.01, 0.19]), np.array([0.9, 0.1, 0.0, 0.001]))
    assert suppressed == [3] and share == pytest.approx(1 / 3)
