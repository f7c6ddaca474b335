"""K-fold cross-fitting of the calibration curve: no query's own outcome reaches its decision."""

from __future__ import annotations

import numpy as np
import pytest

from entrorouter.data.splits import stratified_folds
from entrorouter.features.encoders import make_encoder
from entrorouter.router import Router
from entrorouter.router.calibration import lambda_grid
from entrorouter.router.capability import FoldPlan
from entrorouter.router.config import TrainConfig
from entrorouter.training.fit import fold_choices, pooled_choices

from ..conftest import CALIBRATED


@pytest.mark.parametrize("pooling", ["knob", "spend"])
def test_a_fold_s_own_outcomes_never_change_its_out_of_fold_choices(demo_table, pooling: str) -> None:
    table = demo_table.split("train").subset(np.arange(240))
    # knn+logistic: the leave-one-out estimator and the memoised, fold-aligned nets.
    settings = {"capability": "knn+logistic", "sft_epochs": 1, "rl_iterations": 1, "calibration_pooling": pooling}
    router = Router(TrainConfig(**{**CALIBRATED, **settings}))
    router.encoder = make_encoder("hashed-tfidf").fit([str(q) for q in table.queries])
    features = router.encoder.encode([str(q) for q in table.queries])
    grid = lambda_grid(n=8)
    folds = stratified_folds(table, router.config.calibration_folds, router.config.seed)
    before = fold_choices(router, table, features, grid, FoldPlan(folds, router.config.calibration_folds))

    # Rewrite every outcome of fold 0 (flip right and wrong answers).
    fold0 = folds == 0
    changed = table.subset(np.arange(table.n_queries))
    changed.scores = table.scores.copy()
    changed.scores[fold0] = 1.0 - table.scores[fold0]
    after = fold_choices(router, changed, features, grid, FoldPlan(folds, router.config.calibration_folds))

    # Fold 0 is routed by parts fitted on the other folds only: its decisions are unchanged...
    np.testing.assert_array_equal(before[0].answered, after[0].answered)
    np.testing.assert_array_equal(before[0].planned_spend, after[0].planned_spend)
    # ...while the other folds' routers, which did learn from fold 0, do change (so the test can fail).
    assert any((b.answered != a.answered).any() for b, a in zip(before[1:], after[1:], strict=True))
    # The pooled curve is made of those decisions only: at the same knob, fold 0's are untouched.
    pooled = pooled_choices(before, router.config)
    if pooling == "knob":
        np.testing.assert_array_equal(pooled[:, fold0], before[0].answered)
    else:  # at equal spend each point takes one of fold 0's knobs, cheaper (or the same) down the grid
        picked = [
            next(k for k in range(len(grid)) if (before[0].answered[k] == column).all()) for column in pooled[:, fold0]
        ]
        assert picked == sorted(picked)


def test_folds_are_balanced_and_stratified(demo_table) -> None:
    folds = stratified_folds(demo_table, 5, seed=0)
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    for task in np.unique(demo_table.tasks.astype(str)):
        per_task = np.bincount(folds[demo_table.tasks.astype(str) == task], minlength=5)
        assert per_task.max() - per_task.min() <= 1


def test_a_router_trained_with_spend_pooling_keeps_that_curve(demo_table) -> None:
    table = demo_table.split("train").subset(np.arange(240))
    curves = {}
    for pooling in ("knob", "spend"):
        config = TrainConfig(**{**CALIBRATED, "calibration_pooling": pooling})
        router = Router(config).fit(table)
        assert router.calibration.n == table.n_queries
        curves[pooling] = router.calibration.mean_cost
    # Same fold routers (same seeds), pooled differently: the curve is not the same.
    assert not np.array_equal(curves["knob"], curves["spend"])
