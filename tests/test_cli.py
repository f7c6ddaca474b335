"""The `entrorouter` command line, run as a real subprocess."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from entrorouter.data.io import write_table

from .conftest import FAST


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrorouter.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def demo_file(demo_table, tmp_path_factory) -> Path:
    return write_table(demo_table, tmp_path_factory.mktemp("tables") / "demo.parquet")


@pytest.fixture(scope="module")
def fast_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "fast.json"
    path.write_text(json.dumps(FAST))
    return path


def test_train_evaluate_route(demo_file: Path, fast_config: Path, tmp_path: Path) -> None:
    router_dir = tmp_path / "router"
    trained = run(
        "train",
        "--data",
        str(demo_file),
        "--out",
        str(router_dir),
        "--config",
        str(fast_config),
        "--seed",
        "3",
    )
    assert trained.returncode == 0, trained.stderr
    assert {p.name for p in router_dir.iterdir()} == {
        "config.json",
        "weights.safetensors",
        "training_log.jsonl",
    }
    assert json.loads((router_dir / "config.json").read_text())["train_config"]["seed"] == 3

    out = tmp_path / "eval.json"
    evaluated = run("evaluate", "--router", str(router_dir), "--data", str(demo_file), "--json", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(out.read_text())
    assert result["n_queries"] == 160  # --split auto picked the test split
    assert 0 < result["accuracy"] <= 1 and result["strongest_model"] == "frontier-api"

    routed = run("route", "--router", str(router_dir), "What is the derivative of a polynomial?", "--json")
    assert routed.returncode == 0, routed.stderr
    decision = json.loads(routed.stdout)
    assert decision["model"] == decision["ranking"][0]


def test_data_commands(demo_file: Path, tmp_path: Path) -> None:
    inspected = run("data", "inspect", str(demo_file), "--json")
    assert inspected.returncode == 0, inspected.stderr
    summary = json.loads(inspected.stdout)
    assert summary["strongest"]["model"] == "frontier-api"
    assert summary["oracle"]["accuracy"] >= summary["strongest"]["accuracy"]
    assert run("data", "validate", str(demo_file)).returncode == 0
    out = tmp_path / "demo.csv"
    assert run("data", "import", "demo", "--out", str(out)).returncode == 0
    assert out.exists()


def test_bad_table_gives_one_line_and_no_output(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("query_id,query,model,score,cost\nq,t,a,2,1\n")
    validated = run("data", "validate", str(bad))
    assert validated.returncode == 2 and "Traceback" not in validated.stderr
    assert validated.stderr.splitlines() == [
        f"entrorouter: error: {bad}, row 1, column 'score': expected a score in [0, 1], got 2",
        f"{bad}: 1 problem(s)",
    ]
    out = tmp_path / "out.parquet"
    assert_user_error(run("data", "import", str(bad), "--out", str(out)), "row 1")
    assert not out.exists()
    router_dir = tmp_path / "router"
    assert_user_error(run("train", "--data", str(bad), "--out", str(router_dir)), "bad.csv")
    assert not router_dir.exists()


def test_user_errors(demo_file: Path, tmp_path: Path) -> None:
    assert_user_error(run("route", "--router", str(tmp_path), "hi"), "config.json")
    assert_user_error(run("data", "import", "demo", "--out", str(tmp_path / "t.xlsx")), "unsupported file type")
    bad_config = tmp_path / "c.json"
    # Each of the last two was once a traceback in RL: a geometric β_t from 0 (division by zero), and
    # group-relative advantages over one sample (NaN).
    refused = (
        ({"estimator": "ppo"}, "estimator"),
        ({"beta_start": 0}, "beta_end"),
        ({"estimator": "rloo", "group_size": 1}, "group_size"),
    )
    for settings, field in refused:
        bad_config.write_text(json.dumps(settings))
        train = run("train", "--data", str(demo_file), "--out", str(tmp_path / "r"), "--config", str(bad_config))
        assert_user_error(train, f"config field {field!r}")
    assert_user_error(run("evaluate", "--router", str(tmp_path), "--data", "nope.csv"), "config.json")
    usage = run("train", "--data")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


@pytest.mark.slow
def test_quickstart_on_the_demo_pool(tmp_path: Path) -> None:
    result = run("quickstart", "--out", str(tmp_path / "qs"), "--encoder", "hashed-tfidf")
    assert result.returncode == 0, result.stderr
    assert "SIMULATED" in result.stdout
    for row in ("EntroRouter", "strongest: frontier-api", "cheapest: tiny-3b", "random", "oracle"):
        assert row in result.stdout
    assert (tmp_path / "qs" / "config.json").exists()
    assert re.search(
        r"target: keep 98\.3% of the strongest model's accuracy .* keeps \d+\.\d%: (met|NOT met)", result.stdout
    )
    # The printed hint works as printed.
    hint = result.stdout.split("try: ")[1].strip()
    routed = subprocess.run(hint, shell=True, capture_output=True, text=True, timeout=300)
    assert routed.returncode == 0 and routed.stdout.startswith("model: "), routed.stderr
    # A folder that already holds a router is not replaced without --force.
    again = run("quickstart", "--out", str(tmp_path / "qs"), "--encoder", "hashed-tfidf")
    assert_user_error(again, "already holds files", "--force")
    assert "training" not in again.stdout


def test_quickstart_keeps_one_folder_per_dataset() -> None:
    from entrorouter.training.cli import quickstart_out

    def out(data: str | None) -> Path:
        return quickstart_out(argparse.Namespace(out=None, data=data, force=False))

    assert out(None) == Path("runs/quickstart")
    assert out("routerbench") == Path("runs/quickstart-routerbench_subset")
    assert out("tables/mine.parquet") == Path("runs/quickstart-mine")


def test_arguments_are_checked_before_training_is_announced(demo_file: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for extra, fragment in (
        (["--encoder", "nope"], "unknown encoder 'nope'"),
        (["--encoder", f"st:{tmp_path / 'absent'}"], "no such folder"),
    ):
        result = run("train", "--data", str(demo_file), "--out", str(tmp_path / "r"), *extra)
        assert_user_error(result, fragment)
        assert "training on" not in result.stdout
    result = run("train", "--data", str(demo_file), "--out", str(tmp_path / "file" / "r"))
    assert_user_error(result, "is a file, not a folder")
    assert "training on" not in result.stdout


def test_every_argument_has_help_text() -> None:
    from entrorouter.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    missing += walk(sub, f"{path} {name}")
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
        return missing

    assert walk(build_parser(), "entrorouter") == []


def test_each_command_is_listed_under_the_module_that_registers_it() -> None:
    # build_parser imports only the module listed for the command given, so the two must agree.
    import importlib

    from entrorouter.cli import COMMAND_MODULES

    for module, commands in COMMAND_MODULES.items():
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(subparsers)
        assert tuple(subparsers.choices) == commands, module


def test_target_retention_from_the_command_line(tiny_router: Path, demo_file: Path, tmp_path: Path) -> None:
    from entrorouter.router import Router

    router = Router.load(tiny_router)
    target = f"{router.calibration.max_target() - 0.1:.3f}"
    routed = run("route", "--router", str(tiny_router), "--target-retention", target, "Integrate x^2", "--json")
    assert routed.returncode == 0, routed.stderr
    lam = router.lam_for(None, float(target))
    assert json.loads(routed.stdout)["model"] == router.route(["Integrate x^2"], lam=lam)[0].model

    out = tmp_path / "eval.json"
    args = ("evaluate", "--router", str(tiny_router), "--data", str(demo_file), "--json", str(out))
    evaluated = run(*args, "--target-retention", target)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(out.read_text())
    assert result["lam"] == lam and result["target_retention"] == float(target)

    assert_user_error(run(*args, "--target-retention", "1.4"), "highest reachable retention")
    on_train = run(*args, "--split", "train")
    assert on_train.returncode == 0 and "were training queries of this router" in on_train.stderr
    beyond = run("route", "--router", str(tiny_router), "--lam", "50", "Integrate x^2")
    assert beyond.returncode == 0 and "beyond the range the router was trained for" in beyond.stderr


def test_an_output_that_would_replace_the_input_is_refused(tiny_router: Path, tmp_path: Path) -> None:
    table = tmp_path / "good.csv"
    run("data", "import", "demo", "--out", str(table))
    before = table.read_bytes()
    evaluated = run(
        "evaluate", "--router", str(tiny_router), "--data", str(table), "--json", str(tmp_path / "." / table.name)
    )
    assert_user_error(evaluated, "--json", "is also the input file")
    assert_user_error(run("data", "import", str(table), "--out", str(table)), "--out", "is also the input file")
    assert table.read_bytes() == before


def test_unwritable_outputs_are_refused_before_any_work(demo_file: Path, tmp_path: Path) -> None:
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "file").write_text("x")
    for output, fragment in (("folder", "is a folder"), ("file/out", "is a file, not a folder")):
        out = str(tmp_path / output)
        evaluated = run(
            "evaluate", "--router", str(tmp_path / "no-router"), "--data", str(demo_file), "--json", f"{out}.json"
        )
        assert_user_error(evaluated, f"--json {out}.json", fragment)  # before the router is even loaded
        assert_user_error(run("data", "import", "demo", "--out", f"{out}.csv"), f"--out {out}.csv", fragment)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_user_error(run("data", "import", "demo", "--out", str(locked / "t.csv")), "permission denied")


def test_headline_when_the_strongest_model_scores_nothing_and_costs_nothing(
    tiny_router: Path, demo_table, tmp_path: Path
) -> None:
    frame = demo_table.split("test").to_long()
    table = tmp_path / "zero.csv"
    frame.assign(score=0.0, cost=0.0).to_csv(table, index=False)
    report = tmp_path / "eval.json"
    evaluated = run("evaluate", "--router", str(tiny_router), "--data", str(table), "--json", str(report))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "n/a" in evaluated.stdout and "Traceback" not in evaluated.stderr
    strict = json.loads(report.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert strict["retained"] is None and strict["cost_reduction"] is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sft_epochs": "two"}, "config field 'sft_epochs': expected an integer, got 'two'"),
        ({"sft_epochs": 1.5}, "config field 'sft_epochs': expected an integer, got 1.5"),
        ({"seed": True}, "config field 'seed': expected an integer, got True"),
        ({"hidden": None}, "config field 'hidden': expected an integer, got None"),
        ({"encoder": 5}, "config field 'encoder': expected text, got 5"),
        ({"target_retention": "high"}, "config field 'target_retention': expected a number, got 'high'"),
        ({"lam": "low"}, "config field 'lam': expected a number or null, got 'low'"),
        ({"anchor_residual": 1}, "config field 'anchor_residual': expected true or false, got 1"),
    ],
)
def test_config_values_of_the_wrong_type_are_refused(settings: dict, message: str, tmp_path: Path) -> None:
    from entrorouter.errors import ConfigError
    from entrorouter.router.config import TrainConfig

    config = tmp_path / "c.json"
    config.write_text(json.dumps(settings))
    with pytest.raises(ConfigError) as info:
        TrainConfig.load(config)
    assert str(info.value) == f"{config}: {message}"


def test_config_types_that_are_accepted_and_a_config_folder(demo_file: Path, tmp_path: Path) -> None:
    from entrorouter.router.config import TrainConfig

    assert TrainConfig.from_dict({"target_retention": 1, "lam": None, "future_queries": None}).target_retention == 1
    trained = run("train", "--data", str(demo_file), "--out", str(tmp_path / "r"), "--config", str(tmp_path))
    assert_user_error(trained, str(tmp_path), "a folder, not a config file")


def test_train_replaces_a_router_but_never_other_files(demo_file: Path, fast_config: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"someone else": 1}')
    refused = run("train", "--data", str(demo_file), "--out", str(mine), "--config", str(fast_config))
    assert_user_error(refused, "holds files that are not a saved router")
    assert (mine / "config.json").read_text() == '{"someone else": 1}'  # before: overwritten
    for _ in range(2):  # the second run replaces the first's router
        trained = run("train", "--data", str(demo_file), "--out", str(tmp_path / "r"), "--config", str(fast_config))
        assert trained.returncode == 0, trained.stderr
