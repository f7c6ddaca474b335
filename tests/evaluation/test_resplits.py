"""The resplit study on slices of real data: one row per router, the same with side-by-side jobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from entrorouter.data.datasets import load_source
from entrorouter.evaluation.benchmark import BenchmarkConfig
from entrorouter.evaluation.resplits import render_resplits, run_resplit_studies


@pytest.fixture(scope="module")
def routerbench_slice(data_dir: Path):
    table = load_source("routerbench_subset", data_dir_path=data_dir)
    return table.subset(np.random.default_rng(0).permutation(table.n_queries)[:600])


def test_jobs_run_the_same_resplits_side_by_side(routerbench_slice) -> None:
    """Two tables' resplits in one queue: each table's study is the same whether its resplits ran
    one at a time or two side by side, mixed with the other table's."""
    tables = {"slice": routerbench_slice, "small": routerbench_slice.subset(np.arange(300))}
    config = BenchmarkConfig(encoder="hashed-tfidf", folds=2, routers=["knn", "logistic", "mf"], n_boot=50)
    reported: list[str] = []
    runs = [
        run_resplit_studies(
            tables, config, n_resplits=2, jobs=jobs, on_study=lambda study: reported.append(study["dataset"])
        )
        for jobs in (1, 2)
    ]
    assert list(runs[1]) == ["slice", "small"]  # the biggest table first
    assert sorted(reported) == ["slice", "slice", "small", "small"]  # each table once per run, when done
    for name in tables:
        assert runs[0][name]["resplits"] == runs[1][name]["resplits"], name
    study = json.loads(json.dumps(runs[1]["slice"]))  # what resplits.json holds
    assert study["test_fraction"] == pytest.approx(np.mean(routerbench_slice.splits == "test"))
    assert len(study["resplit_seconds"]) == 2 and study["finished_after_seconds"] <= study["study_seconds"]
    assert set(study["summary"]) == {"knn", "logistic", "mf"}
    for name, row in study["summary"].items():
        assert 0 <= row["violations"] <= 2 and 0 <= row["violation_p_value"] <= 1, name
        retained = [split[name]["retained"] for split in study["resplits"]]
        assert row["violations"] == sum(r < config.target_retention for r in retained)
    report = render_resplits(study, command="entrorouter benchmark --resplits 2")
    assert "| knn |" in report and "| logistic |" in report
    assert "the resplits of slice, small ran in one queue, 2 at a time" in report


def test_the_cli_writes_the_study_of_each_dataset(data_dir: Path, tmp_path: Path) -> None:
    from entrorouter.cli import main

    out = tmp_path / "reports"
    flags = ["--resplits", "1", "--routers", "knn,cascade", "--encoder", "hashed-tfidf", "--folds", "2", "--jobs", "1"]
    code = main(
        ["benchmark", "--dataset", "routerbench_subset", *flags, "--data-dir", str(data_dir), "--out", str(out)]
    )
    assert code == 0
    study = json.loads((out / "resplits.json").read_text())
    assert study["dataset"] == "routerbench_subset" and study["n_resplits"] == 1
    assert set(study["summary"]) == {"knn", "cascade"} and study["finished_after_seconds"] <= study["study_seconds"]
    report = (out / "resplits.md").read_text()
    assert "Time: 1 resplit of " in report and "| cascade |" in report
