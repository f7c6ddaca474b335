"""The risk-controlled choice of λ (router/calibration.py): known answers, the scan, the guarantee."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from entrorouter.errors import EntroRouterError
from entrorouter.router.calibration import Calibration, pool_folds, spend_aligned, spend_matched


def curve(retentions: list[float], n: int, *, seed: int = 0, strong_acc: float = 0.8) -> Calibration:
    """A calibration curve whose λ_j keeps (in expectation) ``retentions[j]`` of a strong model, cost falling with j."""
    rng = np.random.default_rng(seed)
    strong = (rng.random(n) < strong_acc).astype(float)
    scores = []
    for r in retentions:
        # Lose a random share of the strong model's correct answers.
        keep = rng.random(n) < r
        scores.append(strong * keep)
    costs = [np.full(n, 1.0 - j / len(retentions)) for j in range(len(retentions))]
    return Calibration.from_outcomes(np.arange(len(retentions), dtype=float), scores, costs, strong, np.ones(n))


def test_accepts_the_cheapest_point_that_clearly_holds() -> None:
    cal = curve([1.0, 0.999, 0.995, 0.95, 0.90], n=20_000)
    assert cal.index_for(0.983) == 2
    assert cal.lam_for(0.983) == 2.0
    assert cal.index_for(0.94) == 3


def test_the_scan_stops_at_the_first_failure_even_if_a_later_point_passes() -> None:
    # λ_2 fails; λ_3 would pass on its own, but fixed-sequence testing never gets there.
    cal = curve([1.0, 0.999, 0.90, 0.999, 0.80], n=20_000)
    assert cal.certified(0.983) == 2
    assert cal.index_for(0.983) == 1


def test_rejects_points_whose_estimate_passes_but_bound_does_not() -> None:
    # 316 of the strong model's 320 correct answers kept on 400 queries: 98.75% retained, a
    # point estimate above 98.3%, but too few queries for the 90% lower bound to reach it.
    strong = np.r_[np.ones(320), np.zeros(80)]
    nearly = strong.copy()
    nearly[:4] = 0.0
    cal = Calibration.from_outcomes(
        np.array([0.0, 1.0]), [strong, nearly], [np.ones(400), np.zeros(400)], strong, np.ones(400)
    )
    assert cal.retention[1] == pytest.approx(316 / 320)
    assert cal.retention_lower()[1] < 0.983
    assert cal.index_for(0.983) == 0


def test_unreachable_target_names_the_highest_reachable_retention() -> None:
    cal = curve([0.97, 0.9], n=5_000)
    with pytest.raises(EntroRouterError, match=r"highest reachable retention is 0\.9[0-9]+"):
        cal.lam_for(0.983)
    assert cal.max_target() < 0.983
    assert cal.lam_for(cal.max_target() - 1e-6) == 0.0


def test_lower_bounds_tighten_with_more_queries_and_round_trip_through_json() -> None:
    small, large = curve([1.0, 0.99], n=500), curve([1.0, 0.99], n=50_000)
    assert (large.retention[1] - large.retention_lower()[1]) < (small.retention[1] - small.retention_lower()[1])
    again = Calibration.from_dict(large.to_dict())
    assert again.lam_for(0.97) == large.lam_for(0.97)
    np.testing.assert_allclose(again.retention_lower(), large.retention_lower())


def test_a_finite_future_batch_widens_the_bound() -> None:
    base = curve([1.0, 0.99], n=5_000)
    finite = Calibration.from_dict({**base.to_dict(), "future_queries": 1_000})
    assert finite.retention_lower()[1] < base.retention_lower()[1]


def test_coverage_over_many_resplits_of_a_simulated_pool() -> None:
    """The guarantee, checked: choose λ on a calibration half, measure on a test half; over many
    resplits the share of test halves below the target stays within δ (plus sampling error)."""
    rng = np.random.default_rng(7)
    target, delta, n, trials = 0.95, 0.1, 2_000, 300
    # A pool where λ_j has true retention 1 − 0.01·j: the correct cut lies between j = 5 and j = 6.
    grid = np.arange(12, dtype=float)
    true_retention = 1 - 0.01 * grid
    violations = 0
    for _ in range(trials):
        strong = (rng.random(2 * n) < 0.7).astype(float)
        keep = rng.random((len(grid), 2 * n)) < true_retention[:, None]
        scores = strong * keep
        costs = np.tile(np.linspace(1, 0.1, len(grid))[:, None], (1, 2 * n))
        cal = Calibration.from_outcomes(
            grid, scores[:, :n], costs[:, :n], strong[:n], np.ones(n), delta=delta, future_queries=n
        )
        j = max(cal.certified(target) - 1, 0)
        test_retention = scores[j, n:].mean() / strong[n:].mean()
        violations += test_retention < target
    rate = violations / trials
    assert rate <= delta + 2 * np.sqrt(delta * (1 - delta) / trials)
    assert rate > 0  # the rule is not vacuous: it does go close to the target


def test_rejects_bad_settings() -> None:
    with pytest.raises(EntroRouterError, match="delta"):
        curve([1.0], n=10).__class__.from_dict({**curve([1.0], n=10).to_dict(), "delta": 1.5})
    with pytest.raises(EntroRouterError, match="target retention"):
        curve([1.0], n=10).lam_for(0.0)


def test_spend_matching_picks_the_cheapest_knob_that_still_spends_the_certified_amount() -> None:
    deployed = np.array([6.0, 4.5, 4.6, 3.0, 2.5])  # a noisy bump at knob 2 must not count
    assert spend_matched(np.array([5.0, 4.0, 3.0, 2.0, 7.0]), deployed).tolist() == [0, 2, 3, 4, 0]


def test_a_deployed_curve_routes_with_the_refits_lambda_and_round_trips_through_json() -> None:
    cal = curve([1.0, 0.999, 0.995, 0.95, 0.90], n=20_000)  # mean costs 1.0, 0.8, 0.6, 0.4, 0.2
    # The refit spends less than the fold routers at every λ: λ_2's spend (0.6) is reached at its λ_1.
    deployed = cal.with_deployed_spend(np.array([0.9, 0.65, 0.45, 0.3, 0.1]))
    assert cal.lam_for(0.983) == 2.0
    assert deployed.lam_for(0.983) == 1.0
    assert Calibration.from_dict(deployed.to_dict()).lam_for(0.983) == 1.0
    assert Calibration.from_dict(cal.to_dict()).deployed_lams is None


def recorded(values: np.ndarray) -> tuple[list[int], Callable[[int], float]]:
    """A lookup of ``values`` that lists the indices it was asked for, in order."""
    asked: list[int] = []

    def look_up(j: int) -> float:
        asked.append(j)
        return float(values[j])

    return asked, look_up


def test_one_deployed_knob_equals_the_whole_curves_and_asks_only_for_the_knobs_it_needs() -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        g = int(rng.integers(1, 12))
        cal = curve(list(np.linspace(1.0, 0.9, g)), n=50, seed=trial)
        # Bumpy curves on both sides: the certified costs and the refit's spend need not fall.
        cal = replace(cal, mean_cost=rng.choice([0.2, 0.4, 0.6, 0.8], g) + rng.random(g) / 10)
        spend = rng.choice([0.2, 0.4, 0.6, 0.8], g) + rng.random(g) / 10
        whole = cal.deployed_indices(spend)
        for index in range(g):
            asked, spend_at = recorded(spend)
            deployed = cal.deployed_index(index, spend_at)
            assert deployed == whole[index]
            # In scan order, and no further than one knob past the answer.
            assert asked == list(range(len(asked))) and len(asked) <= deployed + 2


def test_folds_pooled_at_equal_spend_each_give_the_knob_that_spends_the_pooled_level() -> None:
    # Fold B's router spends twice what fold A's does at every knob (a drifted trade-off).
    planned = np.array([[4.0, 3.0, 2.0, 1.0], [8.0, 6.0, 4.0, 2.0]])
    # Levels (equal fold sizes): 6, 4.5, 3, 1.5; A reaches none of the first two, so its first knob.
    assert spend_aligned(planned, np.array([10, 10])).tolist() == [[0, 0, 1, 2], [1, 1, 2, 3]]
    # A fold three times the size weighs three times: levels 5, 3.75, 2.5, 1.25.
    assert spend_aligned(planned, np.array([30, 10])).tolist() == [[0, 0, 1, 2], [1, 2, 2, 3]]
    # (Levels 7, 5.25, 3.5, 1.75 when B weighs three times.)
    assert spend_aligned(planned, np.array([10, 30])).tolist() == [[0, 0, 0, 2], [0, 1, 2, 3]]

    rows = [np.array([True, False, True]), np.array([False, True, False])]
    values = [np.array([[10, 11], [20, 21], [30, 31], [40, 41]]), np.array([[1], [2], [3], [4]])]
    at_same_knob = pool_folds(values, rows)
    assert at_same_knob.tolist() == [[10, 1, 11], [20, 2, 21], [30, 3, 31], [40, 4, 41]]
    at_equal_spend = pool_folds(values, rows, planned)  # A has 2 rows, B 1: levels 16/3, 4, 8/3, 4/3
    assert at_equal_spend.tolist() == [[10, 2, 11], [10, 3, 11], [20, 3, 21], [30, 4, 31]]
