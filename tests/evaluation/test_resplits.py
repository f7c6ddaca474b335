"""The resplit study on slices of real data: one row per router, the same with side-by-side jobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from entrorouter.data.datasets import load_source
from entrorouter.evaluation.benchmark import BenchmarkConfig
from entrorouter.evaluation.resplits import against_the_targets, render_resplits, run_resplit_studies, summarise


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
        for split in study["resplits"]:  # the chosen point is a point of the held-out curve
            if split[name]["retained"] >= config.target_retention:
                assert split[name]["hindsight_cost_reduction"] >= split[name]["cost_reduction"] - 1e-12, name
    report = render_resplits(study, command="entrorouter benchmark --resplits 2")
    assert "| knn |" in report and "| logistic |" in report
    assert "the resplits of slice, small ran in one queue, 2 at a time" in report


def test_the_cli_writes_the_study_of_each_dataset_and_adds_it_to_the_report(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The study's resplits.md, and the fixed split's report.md in the same folder gains its violation rates."""
    from entrorouter.cli import main
    from entrorouter.evaluation.report import render_report

    out = tmp_path / "reports"
    flags = ["--routers", "knn,cascade", "--encoder", "hashed-tfidf", "--folds", "2", "--jobs", "1"]
    source = ["--dataset", "routerbench_subset", "--data-dir", str(data_dir), "--out", str(out)]
    assert main(["benchmark", *source, *flags]) == 0
    assert "Not measured for this run: `entrorouter benchmark --dataset routerbench_subset --resplits 10" in (
        (out / "report.md").read_text()
    )
    assert main(["benchmark", *source, *flags, "--resplits", "1"]) == 0
    study = json.loads((out / "resplits.json").read_text())
    assert study["dataset"] == "routerbench_subset" and study["n_resplits"] == 1
    assert set(study["summary"]) == {"knn", "cascade"} and study["finished_after_seconds"] <= study["study_seconds"]
    report = (out / "resplits.md").read_text()
    assert "Time: 1 resplit of " in report and "| cascade |" in report
    table = report[report.index("A violation is") :]
    fixed_split = (out / "report.md").read_text()
    assert "## The guarantee over resplits" in fixed_split and table in fixed_split
    assert "## Headline: cost reduction at 98.3% retention" in fixed_split  # the rest of the report is kept

    results = json.loads((out / "results.json").read_text())
    assert main(["benchmark", *source, *flags]) == 0  # a rerun of the fixed split reads the study beside it
    assert table in (out / "report.md").read_text()
    results["config"]["folds"] = 3
    other = render_report(results, command=results["command"], seconds=1.0, resplit_study=study)
    assert "was run with other settings (folds 2 (this run: 3))" in other and table not in other
    results["config"]["folds"] = 2
    del study["queue"]  # a study written before the one queue of all datasets
    older = render_report(results, command=results["command"], seconds=1.0, resplit_study=study)
    assert "lacks the field 'queue': rerun `entrorouter benchmark --dataset routerbench_subset" in older

    del results["strongest_accuracy"]  # a results.json edited by hand: the study is kept, the report untouched
    (out / "results.json").write_text(json.dumps(results))
    (out / "resplits.json").unlink()
    before = (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["benchmark", *source, *flags, "--resplits", "1"]) == 0
    warning = capsys.readouterr().err
    assert f"{out / 'results.json'} lacks the field 'strongest_accuracy'" in warning
    assert warning.count("lacks the field") == 1  # once, though the study writes its files twice
    assert (out / "resplits.json").exists() and (out / "report.md").read_text() == before


def figures(cost_reduction: float, retained: float = 0.99, *, certified: bool = True) -> dict[str, float | bool | None]:
    """One router's figures on one resplit, as ``_one_resplit`` records them."""
    return {
        "retained": retained,
        "cost_reduction": cost_reduction,
        "certified": certified,
        "legacy_retained": retained,
        "legacy_cost_reduction": cost_reduction,
        "aiq": 0.5,
        "hindsight_cost_reduction": cost_reduction + 0.1,
    }


def test_against_the_targets_compares_with_the_routers_that_keep_their_promise() -> None:
    """The best rival is the best router that is certified on most resplits and not broken; the
    paper's bar is judged at the paper's retention only."""
    per_split = [
        {
            "entrorouter": figures(0.30 + 0.01 * r),
            "steady": figures(0.25 + 0.02 * r),
            "never_certified": figures(0.60, certified=False),
            "broken": figures(0.50, retained=0.85),  # misses on every resplit
        }
        for r in range(4)
    ]
    study = {"n_resplits": 4, "target_retention": 0.983, "delta": 0.1}
    study["summary"] = summarise(per_split, 0.983, 0.1)
    text = "\n".join(against_the_targets(study))
    assert "missed the 98.3% target on 0/4 resplits (p = 1.00, certified on 100%): within δ = 0.1" in text
    assert "31.5%, is the highest of the routers that keep their promise" in text
    assert "the best of the others, steady, saves 28.0% (EntroRouter − steady: +3.5 pts" in text
    assert "48.25% at a guaranteed 98.3%: not reached (31.5%). In hindsight its held-out curves allowed 41.5%" in text

    for split in per_split:
        split["steady"]["cost_reduction"] = 0.40
    study["summary"] = summarise(per_split, 0.9, 0.1)
    study["target_retention"] = 0.9  # another target: no paper's bar
    text = "\n".join(against_the_targets(study))
    assert "is not the highest" in text and "steady, saves 40.0%" in text and "paper" not in text

    for split in per_split:
        split["entrorouter"]["retained"] = 0.8
    study["summary"] = summarise(per_split, 0.9, 0.1)
    text = "\n".join(against_the_targets(study))
    assert "missed the 90.0% target on 4/4 resplits (p = 0.00, certified on 100%): the promise does not hold" in text
