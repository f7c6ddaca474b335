"""Soft Supervision and hard-label targets."""

from __future__ import annotations

import math

import torch

from entrorouter.training.trainer import RoutingData, entropy, hard_targets, soft_targets

NAN = math.nan


def data(scores, costs) -> RoutingData:
    s, c = torch.tensor(scores), torch.tensor(costs)
    zeros = torch.zeros_like(s)
    return RoutingData(features=torch.zeros(len(s), 2), scores=s, cost=c, capability=zeros, cost_pred=zeros)


def test_soft_target_spreads_over_suitable_models_and_prefers_cheap() -> None:
    d = data([[1.0, 1.0, 0.0]], [[0.1, 1.0, 0.01]])
    p = soft_targets(d, tau=1.0, temperature=0.5, smoothing=0.0)[0]
    assert p[2] == 0  # unsuitable
    assert p[0] > p[1] > 0  # both suitable, the cheaper one more likely
    assert torch.isclose(p.sum(), torch.tensor(1.0))


def test_empty_suitable_set_favours_cheapest() -> None:
    d = data([[0.0, 0.0, 0.0]], [[0.5, 1.0, 0.01]])
    p = soft_targets(d, tau=1.0, temperature=0.1, smoothing=0.0)[0]
    assert int(p.argmax()) == 2


def test_smoothing_and_missing_outcomes() -> None:
    d = data([[1.0, NAN, 0.0]], [[0.1, NAN, 0.01]])
    p = soft_targets(d, tau=1.0, temperature=0.5, smoothing=0.3)[0]
    assert torch.isclose(p[1], torch.tensor(0.1))  # missing: only the ε share
    assert torch.isclose(p[2], torch.tensor(0.1))
    assert torch.isclose(p.sum(), torch.tensor(1.0))


def test_hard_target_is_cheapest_correct() -> None:
    d = data([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [[0.5, 0.2, 0.01], [0.5, 0.2, 0.01]])
    h = hard_targets(d, tau=1.0)
    assert h.argmax(1).tolist() == [1, 2]
    soft = soft_targets(d, tau=1.0, temperature=0.25, smoothing=0.05)
    # The soft target starts from visibly higher entropy than the one-hot one.
    assert (entropy(soft.log()) > 0.3).all()
