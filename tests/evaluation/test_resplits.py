"""The resplit study on a slice of real data: one row per router, the same with side-by-side jobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from entrorouter.data.datasets import load_source
from entrorouter.evaluation.benchmark import BenchmarkConfig
from entrorouter.evaluation.resplits import render_resplits, run_resplits


@pytest.fixture(scope="module")
def routerbench_slice(data_dir: Path):
    table = load_source("routerbench_subset", data_dir_path=data_dir)
    return table.subset(np.random.default_rng(0).permutation(table.n_queries)[:600])


def test_jobs_run_the_same_resplits_side_by_side(routerbench_slice) -> None:
    config = BenchmarkConfig(encoder="hashed-tfidf", folds=2, routers=["knn", "logistic", "mf"], n_boot=50)
    studies = [
        run_resplits(routerbench_slice, config, n_resplits=2, test_fraction=0.3, dataset="slice", jobs=jobs)
        for jobs in (1, 2)
    ]
    assert studies[0]["resplits"] == studies[1]["resplits"]
    study = json.loads(json.dumps(studies[1]))  # what resplits.json holds
    assert set(study["summary"]) == {"knn", "logistic", "mf"}
    for name, row in study["summary"].items():
        assert 0 <= row["violations"] <= 2 and 0 <= row["violation_p_value"] <= 1, name
        retained = [split[name]["retained"] for split in study["resplits"]]
        assert row["violations"] == sum(r < config.target_retention for r in retained)
    report = render_resplits(study, command="entrorouter benchmark --resplits 2", seconds=1.0)
    assert "| knn |" in report and "| logistic |" in report
