"""OutcomeTable statistics and the missing-outcome rules."""

from __future__ import annotations

import numpy as np
import pytest

from entrorouter.data.table import OutcomeTable


def table() -> OutcomeTable:
    return OutcomeTable.from_arrays(
        query_ids=["a", "b", "c", "d"],
        queries=["1", "2", "3", "4"],
        models=["cheap", "mid", "strong"],
        scores=np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, np.nan, 0]], dtype=float),
        costs=np.array([[1, 2, 10], [1, 2, 10], [1, 2, 10], [1, np.nan, 10]], dtype=float),
        splits=["train", "train", "test", "test"],
    )


def test_stats_average_observed_outcomes_only() -> None:
    stats = table().model_stats()
    assert stats.loc["mid", "accuracy"] == pytest.approx(2 / 3)  # the NaN is not a wrong answer
    assert stats.loc["mid", "coverage"] == pytest.approx(0.75)
    assert table().strongest_model() == "strong"
    assert table().cheapest_model() == "cheap"


def test_split_and_subset() -> None:
    test = table().split("test")
    assert list(test.query_ids) == ["c", "d"]
    with pytest.raises(KeyError):
        OutcomeTable.from_arrays(query_ids=["a"], queries=["x"], models=["m"], scores=[[1.0]], costs=[[1.0]]).split(
            "test"
        )


def test_to_long_skips_missing() -> None:
    long = table().to_long()
    assert len(long) == 11
    assert set(long.columns) == {"query_id", "query", "model", "score", "cost", "split"}


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="scores has shape"):
        OutcomeTable.from_arrays(query_ids=["a"], queries=["x"], models=["m", "n"], scores=[[1.0]], costs=[[1.0, 1.0]])
    with pytest.raises(ValueError, match="unique"):
        OutcomeTable.from_arrays(
            query_ids=["a"],
            queries=["x"],
            models=["m", "m"],
            scores=[[1.0, 1.0]],
            costs=[[1.0, 1.0]],
        )
