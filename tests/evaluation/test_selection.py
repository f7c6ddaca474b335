"""Operating-point selection on validation data."""

from __future__ import annotations

import numpy as np

from entrorouter.evaluation.selection import select_operating_point


def test_picks_the_cheapest_point_that_holds_with_confidence() -> None:
    rng = np.random.default_rng(0)
    strong = (rng.random(2000) < 0.8).astype(float)
    keeps_all = strong.copy()
    loses_some = np.where(rng.random(2000) < 0.1, 0.0, strong)  # ~90% retained
    point = select_operating_point(
        [strong, keeps_all, loses_some],
        [np.full(2000, 10.0), np.full(2000, 5.0), np.full(2000, 1.0)],
        strong,
        target=0.983,
    )
    assert point.index == 1 and point.accepted


def test_small_validation_sets_are_treated_with_caution() -> None:
    strong = np.array([1.0] * 40 + [0.0] * 10)
    nearly = strong.copy()
    nearly[0] = 0.0  # retained 39/40 = 97.5% < target... with noise the bound is lower still
    point = select_operating_point([strong, nearly], [np.full(50, 10.0), np.full(50, 1.0)], strong, target=0.97)
    assert point.index == 0  # point estimate 97.5% passes, the bootstrap bound does not


def test_falls_back_to_most_accurate_when_nothing_holds() -> None:
    strong = np.ones(100)
    a, b = np.r_[np.ones(80), np.zeros(20)], np.r_[np.ones(90), np.zeros(10)]
    point = select_operating_point([a, b], [np.ones(100), np.full(100, 2.0)], strong, target=0.99)
    assert point.index == 1 and not point.accepted
