"""End to end on real data: EntroRouter trained on the RouterBench subset's train split,
measured once on its test split (default config, MiniLM features, seed 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrorouter.data.datasets import load_source
from entrorouter.router import Router
from entrorouter.router.config import TrainConfig


@pytest.mark.slow
def test_entrorouter_beats_simple_references_on_routerbench(data_dir: Path, tmp_path: Path) -> None:
    table = load_source("routerbench_subset", data_dir_path=data_dir)
    router = Router(TrainConfig(seed=0)).fit(table.split("train"))
    router.save(tmp_path / "router")
    result = Router.load(tmp_path / "router").evaluate(table.split("test"))

    assert result["accuracy"] > result["random_accuracy"]
    assert result["accuracy"] > result["cheapest_accuracy"]
    assert result["retained"] >= 0.95
    assert result["cost"] < result["strongest_cost"]
