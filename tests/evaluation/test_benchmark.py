"""The benchmark on a slice of real data: schema, files, and no peeking at test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from entrorouter.data.datasets import load_source
from entrorouter.data.io import write_table
from entrorouter.errors import EntroRouterError
from entrorouter.evaluation.benchmark import Benchmark, BenchmarkConfig

from ..conftest import FAST

ROUTER_FIELDS = {"accuracy", "cost", "retained", "cost_reduction", "aiq", "apgr", "entropy", "usage", "curve"}


@pytest.fixture(scope="module")
def routerbench_slice(data_dir: Path):
    table = load_source("routerbench_subset", data_dir_path=data_dir)
    rng = np.random.default_rng(0)
    train, test = table.split("train"), table.split("test")
    return train.subset(rng.permutation(train.n_queries)[:500]), test.subset(rng.permutation(test.n_queries)[:250])


def config(**overrides) -> BenchmarkConfig:
    return BenchmarkConfig(
        encoder="hashed-tfidf", train_config={k: v for k, v in FAST.items() if k != "encoder"}, n_boot=200, **overrides
    )


def test_benchmark_cli_writes_results_report_and_plots(routerbench_slice, tmp_path: Path) -> None:
    train, test = routerbench_slice
    write_table(train, tmp_path / "train.parquet")
    write_table(test, tmp_path / "test.parquet")
    fast = tmp_path / "fast.json"
    fast.write_text(json.dumps({k: v for k, v in FAST.items() if k != "encoder"}))
    out = tmp_path / "bench"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "entrorouter.cli",
            "benchmark",
            "--train",
            str(tmp_path / "train.parquet"),
            "--test",
            str(tmp_path / "test.parquet"),
            "--out",
            str(out),
            "--encoder",
            "hashed-tfidf",
            "--config",
            str(fast),
            "--ablations",
            "--routers",
            "knn,mlp,cascade,entrorouter",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    for key in ("dataset", "n_train", "n_test", "strongest_model", "strongest_accuracy", "strongest_cost", "routers"):
        assert key in results
    assert results["n_test"] == 250
    assert set(results["routers"]) == {"oracle", "random", "knn", "mlp", "cascade", "entrorouter"}
    for name, r in results["routers"].items():
        assert set(r) >= ROUTER_FIELDS, name
        assert abs(sum(r["usage"].values()) - 1) < 1e-6
        assert r["retained"] == pytest.approx(r["accuracy"] / results["strongest_accuracy"])
    from entrorouter.evaluation.benchmark import ABLATIONS

    assert set(results["ablations"]) == set(ABLATIONS)
    # Logs that are read keep their training curve (the final fit's, fold 0's for the ablation
    # row); the other folds' fits are not logged.
    assert results["routers"]["entrorouter"]["training_curve"]
    assert results["ablations"]["entrorouter"]["training_curve"]
    assert results["ablations"]["soft_sft_only"]["training_curve"]
    for name in ("report.md", "curves.png", "usage.png", "entropy.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "## Headline: cost reduction at 98.3% retention" in report and "## Ablations" in report
    assert "old rule" in report
    assert "### What the guarantee costs (EntroRouter)" in report
    assert results["aiq_vs_best_baseline"]["ci"][0] <= results["aiq_vs_best_baseline"]["difference"]


def test_operating_points_never_look_at_test(routerbench_slice) -> None:
    train, test = routerbench_slice
    scrambled = test.subset(np.arange(test.n_queries))
    rng = np.random.default_rng(1)
    observed = scrambled.observed
    scrambled.scores = np.where(observed, rng.integers(0, 2, size=observed.shape).astype(float), np.nan)
    cfg = config(routers=["knn", "mlp", "cascade"])
    real = Benchmark(train, test, cfg).run()
    fake = Benchmark(train, scrambled, cfg).run()
    for name in ("knn", "mlp", "cascade"):
        assert real["routers"][name]["knob"] == fake["routers"][name]["knob"]
        assert real["routers"][name]["calibration"] == fake["routers"][name]["calibration"]
        assert real["routers"][name]["legacy_rule"]["knob"] == fake["routers"][name]["legacy_rule"]["knob"]
        assert chosen_without_test(real["routers"][name]) == chosen_without_test(fake["routers"][name])
    # ... while the test measurements do change with the test outcomes.
    assert real["routers"]["mlp"]["accuracy"] != fake["routers"]["mlp"]["accuracy"]


def chosen_without_test(result: dict) -> dict:
    """Each certificate's point as chosen: its place, out-of-fold figures and deployed knob; no test figure."""
    return {
        statement: None if c is None else {k: v for k, v in c.items() if k.startswith("oof_") or k in ("index", "knob")}
        for statement, c in result["certificates"].items()
    }


def test_the_certificates_run_from_no_margin_to_the_chosen_point(routerbench_slice) -> None:
    """The weaker the statement, the smaller its margin and the cheaper its point; the strongest,
    a batch of the test set's size, is the chosen point itself. On a slice of 500 training queries
    a batch guarantee of 98.3% is out of reach, so the target here is 95%."""
    train, test = routerbench_slice
    result = Benchmark(train, test, config(routers=["knn"], target_retention=0.95)).run_routers()["knn"]
    certificates = result["certificates"]
    assert all(certificates[s] is not None for s in ("estimate", "expected", "batch"))
    reached = [certificates[s]["index"] for s in ("estimate", "expected", "batch")]
    assert reached[0] >= reached[1] >= reached[2] and reached[0] > reached[2]
    assert certificates["estimate"]["oof_retained"] >= 0.95
    chosen = certificates["batch"]
    assert result["calibration"]["certified"]
    assert chosen["oof_cost_reduction"] == result["calibration"]["cost_reduction"]
    assert (chosen["knob"], chosen["retained"], chosen["cost_reduction"]) == (
        result["knob"],
        result["retained"],
        result["cost_reduction"],
    )


def test_a_statement_out_of_reach_certifies_nothing(routerbench_slice) -> None:
    """At 98.3% the slice's out-of-fold estimate still reaches the target, but no batch guarantee
    does: that certificate is None, and the calibration says the point is not certified."""
    train, test = routerbench_slice
    result = Benchmark(train, test, config(routers=["knn"])).run_routers()["knn"]
    assert result["certificates"]["estimate"]["oof_retained"] >= 0.983
    assert result["certificates"]["batch"] is None and not result["calibration"]["certified"]


def test_the_old_rules_point_is_the_same_without_its_test_curve(routerbench_slice) -> None:
    """The resplit study skips the old rule's test curve; its point, and the new rule's, must not move."""
    train, test = routerbench_slice
    with_curve, without = (
        Benchmark(train, test, config(routers=["knn", "entrorouter"], legacy_curves=curves)).run_routers()
        for curves in (True, False)
    )
    for name in ("knn", "entrorouter"):
        assert "aiq" in with_curve[name]["legacy_rule"] and "aiq" not in without[name]["legacy_rule"]
        assert without[name]["legacy_rule"] == {k: v for k, v in with_curve[name]["legacy_rule"].items() if k != "aiq"}
        for key in ("knob", "retained", "cost_reduction", "aiq", "calibration"):
            assert without[name][key] == with_curve[name][key], (name, key)
    with pytest.raises(EntroRouterError, match="ablations"):
        config(legacy_curves=False, ablations=True)


def test_threshold_router_only_for_two_models(data_dir: Path) -> None:
    table = load_source("routellm_2model", data_dir_path=data_dir)
    rng = np.random.default_rng(0)
    train, test = table.split("train"), table.split("test")
    train, test = (
        train.subset(rng.permutation(train.n_queries)[:400]),
        test.subset(rng.permutation(test.n_queries)[:200]),
    )
    results = Benchmark(train, test, config(routers=["threshold"])).run()
    threshold = results["routers"]["threshold"]
    costs = [c for c, _ in threshold["curve"]]
    # The sweep goes from (nearly) all-weak to all-strong.
    assert min(costs) < 0.2 * results["strongest_cost"] and max(costs) == pytest.approx(results["strongest_cost"])


def test_datasets_side_by_side_give_the_figures_of_one_at_a_time(data_dir: Path, tmp_path: Path) -> None:
    from entrorouter.evaluation.cli import run_fixed_splits

    table = load_source("routerbench_subset", data_dir_path=data_dir)
    rows = np.random.default_rng(1).permutation(table.n_queries)
    tables = {"first": table.subset(rows[:500]), "second": table.subset(rows[500:800])}
    bench_config = config(routers=["knn", "logistic", "mf"])
    for jobs in (1, 2):
        outs = {name: tmp_path / f"jobs{jobs}" / name for name in tables}
        run_fixed_splits(tables, bench_config, outs, command="entrorouter benchmark", jobs=jobs)

    def figures(path: Path) -> dict:
        """results.json without its timings."""
        return json.loads(
            (path / "results.json").read_text(),
            object_hook=lambda d: {k: v for k, v in d.items() if not k.endswith("seconds")},
        )

    for name in tables:
        one_at_a_time, side_by_side = figures(tmp_path / "jobs1" / name), figures(tmp_path / "jobs2" / name)
        assert one_at_a_time["dataset"] == name and one_at_a_time["n_test"] > 0
        assert side_by_side == one_at_a_time
        assert (tmp_path / "jobs2" / name / "report.md").stat().st_size > 0


@pytest.mark.parametrize("source", [["--dataset", "all"], ["--train", "train.csv", "--test", "test.csv"]])
def test_an_unwritable_out_fails_before_any_work(
    source: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrorouter.cli import main

    (tmp_path / "a_file").write_text("not a folder")
    code = main(["benchmark", *source, "--out", str(tmp_path / "a_file" / "reports")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--out" in err and "is a file, not a folder" in err


def test_an_unknown_router_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from entrorouter.cli import main

    no_data = tmp_path / "no_data"  # had it loaded the datasets first, this would be the error
    no_data.mkdir()
    out = tmp_path / "reports"
    args = ["--dataset", "all", "--routers", "knn,bogus", "--data-dir", str(no_data), "--out", str(out)]
    code = main(["benchmark", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown router(s) ['bogus']" in err
    assert not out.exists()


def test_a_config_that_sets_the_encoder_points_to_the_encoder_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrorouter.cli import main

    config = tmp_path / "config.json"
    config.write_text('{"encoder": "minilm-static", "sft_epochs": 2}')
    out = tmp_path / "reports"
    code = main(["benchmark", "--dataset", "all", "--config", str(config), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "use --encoder minilm-static" in err and str(config) in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--routers", "entrorouter_ft", "--resplits", "3"], "--resplits measures cross-fitted operating points"),
        (["--routers", "entrorouter_ft", "--finetune-seconds", "0"], "--finetune-seconds must be > 0, got 0.0"),
    ],
)
def test_the_fine_tuned_router_s_flags_fail_before_any_work(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrorouter.cli import main

    no_data = tmp_path / "no_data"
    no_data.mkdir()
    out = tmp_path / "reports"
    code = main(["benchmark", "--dataset", "all", *flags, "--data-dir", str(no_data), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_more_folds_than_training_queries_fail_before_any_embedding(
    routerbench_slice, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrorouter.cli import main

    train, test = routerbench_slice
    paths = [write_table(table, tmp_path / f"{name}.parquet") for name, table in (("train", train), ("test", test))]
    out = tmp_path / "reports"
    # Each of the 501 folds would be fitted and swept: hours of work on mostly empty folds.
    args = ["--train", str(paths[0]), "--test", str(paths[1]), "--folds", "501", "--out", str(out)]
    code = main(["benchmark", *args])
    err = capsys.readouterr().err
    assert code == 2 and "--folds 501 is more than the 500 training queries" in err and "Traceback" not in err
    assert not out.exists()
