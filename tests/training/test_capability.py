"""Offline capability estimates never see a training query's own outcome."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from entrorouter.router.capability import KnnCapability, MlpCapability, make_capability


def clustered(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    group = rng.integers(2, size=n)
    centers = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    x = centers[group] + 0.05 * rng.standard_normal((n, 4))
    # model 0 solves group 0, model 1 solves group 1
    scores = np.stack([group == 0, group == 1], axis=1).astype(float)
    return x.astype(np.float32), scores


def test_knn_learns_the_structure_and_is_leave_one_out() -> None:
    x, s = clustered()
    knn = KnnCapability(k=10, prior_strength=1.0, n_clusters=2)
    oof = knn.fit(x, s)
    assert ((oof[:, 0] > 0.5) == (s[:, 0] == 1)).mean() > 0.95
    # Flip one query's outcome: its own out-of-fold estimate must not move.
    flipped = s.copy()
    flipped[0] = 1 - flipped[0]
    oof2 = KnnCapability(k=10, prior_strength=1.0, n_clusters=2).fit(x, flipped)
    np.testing.assert_allclose(oof2[0], oof[0], atol=1e-6)
    new = knn.predict(np.array([[1.0, 0, 0, 0]], dtype=np.float32))
    assert new[0, 0] > 0.8 and new[0, 1] < 0.2


def test_knn_handles_missing_outcomes() -> None:
    x, s = clustered()
    s[:, 1] = np.nan  # model 1 never observed: estimates fall back to the prior
    est = KnnCapability(k=10, prior_strength=2.0, n_clusters=2).fit(x, s)
    assert np.isfinite(est).all()


def test_mlp_cross_fitting_and_state_round_trip() -> None:
    x, s = clustered(300)
    mlp = MlpCapability(hidden=16, epochs=200, folds=3)
    oof = mlp.fit(x, s)
    assert ((oof[:, 1] > 0.5) == (s[:, 1] == 1)).mean() > 0.9
    again = MlpCapability(hidden=16)
    again.load_tensors(mlp.tensors())
    np.testing.assert_allclose(again.predict(x[:5]), mlp.predict(x[:5]), rtol=1e-6)


class _OtherNet(nn.Module):
    """A net that is not a SuccessNet (as a baseline's ``make_net`` may build): never stacked."""

    def __init__(self, in_dim: int, n_models: int) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, 3)
        self.models = nn.Parameter(torch.randn(n_models, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x) @ self.models.T


class _OtherCapability(MlpCapability):
    def make_net(self, in_dim: int, n_models: int) -> nn.Module:
        return _OtherNet(in_dim, n_models)


@pytest.mark.parametrize("kind", ["mlp", "logistic", "other net"])
def test_the_stacked_ensemble_predicts_the_mean_of_its_nets(kind: str) -> None:
    """Routing runs the bagged nets as one stacked forward pass: the same numbers as net by net."""
    x, s = clustered(150)
    make = _OtherCapability if kind == "other net" else MlpCapability
    mlp = make(hidden=0 if kind == "logistic" else 16, epochs=20, folds=3)
    mlp.fit(x, s)
    assert len(mlp.nets) == 4
    queries = np.random.default_rng(1).standard_normal((7, 4)).astype(np.float32)
    net_by_net = np.mean([MlpCapability._apply(net, queries) for net in mlp.nets], axis=0)
    for rows in (slice(0, 1), slice(0, 7)):
        np.testing.assert_allclose(mlp.predict(queries[rows]), net_by_net[rows], rtol=1e-5, atol=1e-6)
    mlp.fit_final(x, 1 - s)  # new nets: the stacked copy must follow them
    np.testing.assert_allclose(mlp.predict(queries), MlpCapability._apply(mlp.nets[0], queries), rtol=1e-5, atol=1e-6)


def test_mean_of_estimators() -> None:
    x, s = clustered(120)
    both = make_capability("knn+mlp", knn_k=8, prior_strength=1.0, n_clusters=2, folds=2, seed=0)
    est = both.fit(x, s)
    assert est.shape == s.shape and set(both.tensors()) >= {"knn.train_x", "mlp.0.net.0.weight", "mlp.2.net.0.weight"}


def test_knn_predicts_from_the_k_nearest_training_queries() -> None:
    """Routing-time estimates: the k most cosine-similar training queries' mean score, smoothed
    towards the query's cluster prior (written out here with a full sort)."""
    x, s = clustered(120)
    s[::7, 0] = np.nan  # some outcomes missing
    knn = KnnCapability(k=5, prior_strength=2.0, n_clusters=2)
    knn.fit(x, s)
    queries = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float32)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    train = x / np.linalg.norm(x, axis=1, keepdims=True)
    nearest = np.argsort(-(unit @ train.T), axis=1)[:, :5]
    observed = ~np.isnan(s)
    hits = np.where(observed, s, 0.0)[nearest].sum(1)
    prior = knn._prior(knn._assign(unit))
    expected = (hits + 2.0 * prior) / (observed[nearest].sum(1) + 2.0)
    np.testing.assert_allclose(knn.predict(queries), expected, rtol=1e-5)
    np.testing.assert_allclose(knn.predict(queries[:1]), expected[:1], rtol=1e-5)  # alone as in a batch


def weights_of_the_k_nearest(sims: np.ndarray, k: int) -> np.ndarray:
    """Each training row's weight among the k nearest: 1 above the k-th similarity, and the
    places left shared equally by the rows tied at it (copies of one text tie exactly)."""
    kth = np.sort(sims, axis=1)[:, ::-1][:, k - 1 : k]
    above = sims > kth + 1e-9
    tied = np.abs(sims - kth) <= 1e-9
    left = k - above.sum(1, keepdims=True)
    return above + tied * left / tied.sum(1, keepdims=True)


def test_copies_of_a_training_query_share_the_kth_place() -> None:
    """Copies of one text tie for every query: where they straddle the k-th place, each place
    gets their mean outcome, so the estimate depends neither on the rows' order nor on how a
    batch rounds the similarities (which decided which copy was taken)."""
    x, s = clustered(120)
    s[::7, 0] = np.nan
    x[40:50] = x[3]  # ten copies of query 3, with outcomes of their own
    x[60:64] = x[4]  # and four of query 4
    knn = KnnCapability(k=8, prior_strength=2.0, n_clusters=2)
    oof = knn.fit(x, s)
    queries = np.concatenate([x[3:5] + 0.01, clustered(30, seed=2)[0]])  # the copies are nearest

    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float64)  # noqa: E731
    observed = ~np.isnan(s)
    filled = np.where(observed, s, 0.0)
    weights = weights_of_the_k_nearest(unit(queries) @ unit(x).T, 8)
    straddled = ((weights > 0) & (weights < 1)).any(axis=1)
    assert straddled[0] and straddled[2:].any()  # eleven copies for 8 places; others by chance
    prior = knn._prior(knn._assign(unit(queries).astype(np.float32)))
    expected = (weights @ filled + 2.0 * prior) / (weights @ observed + 2.0)
    np.testing.assert_allclose(knn.predict(queries), expected, rtol=1e-5)
    one_by_one = np.concatenate([knn.predict(q[None]) for q in queries])
    np.testing.assert_array_equal(one_by_one, knn.predict(queries))

    # Leave-one-out: a copy's estimate keeps the other copies, never its own outcome.
    sims = unit(x) @ unit(x).T
    np.fill_diagonal(sims, -np.inf)
    weights = weights_of_the_k_nearest(sims, 8)
    own_prior = knn._prior(knn._assign(unit(x).astype(np.float32)), own_sum=filled, own_count=observed)
    expected = (weights @ filled + 2.0 * own_prior) / (weights @ observed + 2.0)
    np.testing.assert_allclose(oof, expected, rtol=1e-5)

    shuffled = np.random.default_rng(0).permutation(len(x))
    again = KnnCapability(k=8, prior_strength=2.0, n_clusters=2)
    np.testing.assert_allclose(again.fit(x[shuffled], s[shuffled]), oof[shuffled], rtol=1e-5)


def test_knn_fit_final_predicts_as_fit_does() -> None:
    x, s = clustered()
    queries = clustered(20, seed=1)[0]
    full = KnnCapability(k=10, prior_strength=1.0, n_clusters=2)
    full.fit(x, s)
    table_only = KnnCapability(k=10, prior_strength=1.0, n_clusters=2).fit_final(x, s)
    np.testing.assert_array_equal(table_only.predict(queries), full.predict(queries))


def test_a_net_is_trained_once_per_settings_and_rows() -> None:
    from entrorouter.router.capability import FoldPlan

    x, s = clustered(120)
    labels = np.arange(120) % 3
    plan = FoldPlan(labels, 3)
    settings = {"hidden": 8, "epochs": 3, "folds": 3, "seed": 5}
    alone = MlpCapability(**settings).fit_final(x, s)  # no plan: trained here
    first = MlpCapability(**settings).fit_final(x, s, plan)
    assert len(plan.nets) == 1
    second = MlpCapability(**settings).fit_final(x, s, plan)  # another router, same settings and rows
    assert len(plan.nets) == 1 and second.nets[0] is first.nets[0]
    np.testing.assert_array_equal(second.predict(x), alone.predict(x))
    # The bagged estimator's net on every row has the same seed: shared; its fold nets are new.
    bagged = MlpCapability(**settings)
    bagged.fit(x, s, plan)
    assert len(plan.nets) == 1 + 3
    # A router fitted without fold 0 gets the bagged fold-0 net: the same rows, so the same seed.
    held = labels == 0
    without_fold_0 = MlpCapability(**settings).fit_final(x[~held], s[~held], plan.subset(~held))
    assert len(plan.nets) == 1 + 3 and without_fold_0.nets[0] is bagged.nets[1]
    # Another seed: another net.
    MlpCapability(**{**settings, "seed": 6}).fit_final(x, s, plan)
    assert len(plan.nets) == 1 + 3 + 1
