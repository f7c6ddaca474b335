"""Router API: route, evaluate, save/load round trip and loading errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from entrorouter.errors import EntroRouterError
from entrorouter.router import FORMAT_VERSION, Router
from entrorouter.router.config import TrainConfig

from .conftest import CALIBRATED, FAST


def test_route_returns_model_ranking_and_probabilities(tiny_router: Path, demo_table) -> None:
    router = Router.load(tiny_router)
    [result] = router.route("Prove rigorously how the integral relates to the series")
    assert result.model == result.ranking[0]
    assert sorted(result.ranking) == sorted(demo_table.models)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert router.route([]) == []
    for bad in (-1, float("nan"), 1e39):  # 1e39: float32 logits would overflow to NaN probabilities
        with pytest.raises(EntroRouterError, match=r"λ must be a number in \[0, 1e\+06\]"):
            router.route(["x"], lam=bad)
    [cheapest] = router.route(["x"], lam=1e6)
    assert np.isfinite(list(cheapest.probabilities.values())).all()


def test_cost_knob_moves_towards_cheaper_models(tiny_router: Path, demo_table) -> None:
    router = Router.load(tiny_router)
    queries = list(demo_table.split("test").queries[:100])
    prices = demo_table.split("train").model_stats()["mean_cost"]

    def mean_price(results) -> float:
        return float(np.mean([prices[r.model] for r in results]))

    base = router.route(queries, lam=0.0)
    assert mean_price(router.route(queries, lam=0.0, cost_weight=5.0)) < mean_price(base)


def test_save_load_round_trip(tiny_router: Path, demo_table, tmp_path: Path) -> None:
    router = Router.load(tiny_router)
    queries = list(demo_table.split("test").queries[:20])
    copy_path = router.save(tmp_path / "copy")
    again = Router.load(copy_path)
    assert again.models == router.models and again.lam == router.lam
    for a, b in zip(router.route(queries), again.route(queries), strict=True):
        assert a.ranking == b.ranking
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-7)
    config = json.loads((copy_path / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION and config["models"] == list(router.models)
    assert (copy_path / "training_log.jsonl").read_text().count("\n") == len(router.training_log)
    assert not list(copy_path.glob("*.pkl")) and not list(copy_path.glob("*.tmp"))


def test_evaluate_json_fields(tiny_router: Path, demo_table) -> None:
    result = Router.load(tiny_router).evaluate(demo_table.split("test"))
    for key in (
        "accuracy",
        "cost",
        "strongest_model",
        "strongest_accuracy",
        "strongest_cost",
        "retained",
        "cost_reduction",
        "entropy",
        "usage",
    ):
        assert key in result
    assert result["retained"] == pytest.approx(result["accuracy"] / result["strongest_accuracy"])
    assert result["cost_reduction"] == pytest.approx(1 - result["cost"] / result["strongest_cost"])
    assert sum(result["usage"].values()) == pytest.approx(1.0)


def broken_copy(tiny_router: Path, tmp_path: Path) -> Path:
    target = tmp_path / "broken"
    shutil.copytree(tiny_router, target)
    return target


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_load_errors(tiny_router: Path, tmp_path: Path) -> None:
    with pytest.raises(EntroRouterError, match="no router directory"):
        Router.load(tmp_path / "missing")
    path = broken_copy(tiny_router, tmp_path)
    with pytest.raises(EntroRouterError, match="trained for the pool"):
        Router.load(path, expected_models=["a", "b"])

    edit_config(path, format_version=99)
    with pytest.raises(EntroRouterError, match="format version 99"):
        Router.load(path)

    edit_config(path, format_version=FORMAT_VERSION, models=["only-one"])
    with pytest.raises(EntroRouterError, match="at least two distinct"):
        Router.load(path)

    shutil.rmtree(path)
    path = broken_copy(tiny_router, tmp_path)
    (path / "config.json").write_text("{ nope")
    with pytest.raises(EntroRouterError, match="invalid JSON"):
        Router.load(path)


def test_a_router_of_format_version_2_loads_its_lone_policy_as_member_0(demo_table, tmp_path: Path) -> None:
    lone = Router(TrainConfig(**FAST)).fit(demo_table.split("train")).save(tmp_path / "lone")
    path = broken_copy(lone, tmp_path)

    def old_name(name: str) -> str:
        return name.replace("policy.0.", "policy.", 1)

    tensors = load_file(str(path / "weights.safetensors"))
    save_file({old_name(k): v for k, v in tensors.items()}, str(path / "weights.safetensors"))
    config = json.loads((path / "config.json").read_text())
    # Version 2 knew neither setting: its routers were trained with one policy, pooled at equal knob.
    train_config = {k: v for k, v in config["train_config"].items() if k not in ("policy_seeds", "calibration_pooling")}
    edit_config(
        path,
        format_version=2,
        tensors={old_name(k): v for k, v in config["tensors"].items()},
        train_config=train_config,
    )
    assert "policy.head.bias" in json.loads((path / "config.json").read_text())["tensors"]
    queries = list(demo_table.split("test").queries[:20])
    loaded = Router.load(path)
    assert (loaded.config.policy_seeds, loaded.config.calibration_pooling) == (1, "knob")
    assert [r.model for r in loaded.route(queries)] == [r.model for r in Router.load(lone).route(queries)]


def test_tensor_shape_mismatch_is_reported(tiny_router: Path, tmp_path: Path) -> None:
    path = broken_copy(tiny_router, tmp_path)
    tensors = load_file(str(path / "weights.safetensors"))
    tensors["policy.0.head.bias"] = np.zeros(3, dtype=np.float32)
    save_file(tensors, str(path / "weights.safetensors"))
    with pytest.raises(EntroRouterError, match=r"'policy\.0\.head\.bias' has shape \[3\]"):
        Router.load(path)
    # Shapes that match config.json's list but not its policy settings.
    config = json.loads((path / "config.json").read_text())
    edit_config(path, train_config={**config["train_config"], "hidden": 7})
    save_file(load_file(str(tiny_router / "weights.safetensors")), str(path / "weights.safetensors"))
    with pytest.raises(
        EntroRouterError, match=r"policy weights do not fit the policy \(3 member\(s\) of hidden widths"
    ):
        Router.load(path)
    edit_config(path, train_config={**config["train_config"], "policy_seeds": 2})
    with pytest.raises(EntroRouterError, match=r"config.json says 2 of \[64, 64\]"):
        Router.load(path)
    (path / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(EntroRouterError, match="unreadable safetensors"):
        Router.load(path)
    (path / "weights.safetensors").unlink()
    with pytest.raises(EntroRouterError, match="missing"):
        Router.load(path)


def test_a_pool_mismatch_on_evaluate(tiny_router: Path, demo_table) -> None:
    router = Router.load(tiny_router)
    other = demo_table.split("test")
    other.models = tuple(f"x-{m}" for m in other.models)
    with pytest.raises(EntroRouterError, match="has no outcomes for model"):
        router.evaluate(other)


def test_evaluating_rows_where_a_pool_model_was_never_tried_is_refused(tiny_router: Path, demo_table) -> None:
    router = Router.load(tiny_router)
    test = demo_table.split("test")
    test.scores[:, -1] = np.nan  # before: measured against another "strongest" model, with a NumPy warning
    test.costs[:, -1] = np.nan
    with pytest.raises(EntroRouterError, match=rf"no outcome for model\(s\) \['{test.models[-1]}'\]"):
        router.evaluate(test)


def test_a_model_without_any_outcome_is_refused(demo_table) -> None:
    table = demo_table.split("train")
    table.scores[:, 0] = np.nan
    table.costs[:, 0] = np.nan
    with pytest.raises(EntroRouterError, match="no outcome at all for model"):
        Router(TrainConfig(encoder="hashed-tfidf")).fit(table)


@pytest.mark.parametrize("score", [0.0, 1.0])
def test_a_table_where_every_outcome_scores_the_same_is_refused(demo_table, score: float) -> None:
    table = demo_table.split("train")
    table.scores = np.where(table.observed, score, np.nan)  # before: a router that paid 6x for nothing
    with pytest.raises(EntroRouterError, match=f"every outcome has the score {score:g}"):
        Router(TrainConfig(encoder="hashed-tfidf")).fit(table)


def test_more_calibration_folds_than_queries_are_refused_before_any_work(demo_table) -> None:
    table = demo_table.split("train").subset(np.arange(30))
    router = Router(TrainConfig(encoder="hashed-tfidf", calibration_folds=31))
    with pytest.raises(EntroRouterError, match="calibration_folds = 31 is more than the 30 queries"):
        router.fit(table)
    assert router.encoder is None  # refused before the encoder was even built


def test_target_retention_knob(tiny_router: Path, demo_table) -> None:
    router = Router.load(tiny_router)
    calibration = router.calibration
    assert calibration is not None and calibration.n == demo_table.split("train").n_queries
    queries = list(demo_table.split("test").queries[:40])
    reachable = calibration.max_target()
    lam = router.lam_for(None, reachable - 0.1)
    assert lam >= router.lam_for(None, reachable - 0.01)  # a lower target allows a cheaper λ
    by_target = router.route(queries, target_retention=reachable - 0.1)
    assert [r.ranking for r in by_target] == [r.ranking for r in router.route(queries, lam=lam)]
    with pytest.raises(EntroRouterError, match="highest reachable retention"):
        router.route(queries, target_retention=min(reachable + 0.05, 1.5))
    with pytest.raises(EntroRouterError, match="either a λ or a target"):
        router.route(queries, lam=0.1, target_retention=0.9)
    result = router.evaluate(demo_table.split("test"), target_retention=reachable - 0.1)
    assert result["lam"] == lam and result["target_retention"] == reachable - 0.1
    # The simulated pool repeats some texts across its splits: exactly those are flagged.
    test_texts, train_texts = demo_table.split("test").queries, demo_table.split("train").queries
    assert result["trained_on_share"] == pytest.approx(np.isin(test_texts, train_texts).mean())
    assert router.evaluate(demo_table.split("train"))["trained_on_share"] == 1.0


@pytest.fixture(scope="module")
def ensemble_router(demo_table, tmp_path_factory) -> tuple[Router, Path]:
    """A small router with the default capability ensemble (kNN, bagged MLP and logistic nets),
    as trained and as saved."""
    from entrorouter.router.config import TrainConfig

    config = TrainConfig(**{**CALIBRATED, "capability": "knn+mlp+logistic", "capability_folds": 2})
    router = Router(config).fit(demo_table.split("train"))
    return router, router.save(tmp_path_factory.mktemp("routers") / "ensemble")


def test_a_saved_router_routes_exactly_as_the_trained_one(ensemble_router, demo_table) -> None:
    """Training leaves torch modules behind; the saved router has only their arrays."""
    trained, path = ensemble_router
    texts = [str(q) for q in demo_table.split("test").queries[:50]]
    assert Router.load(path).route(texts, lam=0.05) == trained.route(texts, lam=0.05)


def test_only_routing_code_is_loaded_to_route(ensemble_router) -> None:
    import subprocess
    import sys

    # Neither the training stack nor pandas (a quarter of a fresh `route`'s 2 s went to importing
    # it), nor torch (routing runs in NumPy; importing torch took half of a fresh `route`).
    _, path = ensemble_router
    unwanted = "(['training'], ['evaluation'], ['baselines'])"
    check = f"print(sorted(m for m in sys.modules if m.split('.')[1:2] in {unwanted} or m in ('pandas', 'torch')))"
    api = f"from entrorouter import Router; Router.load({str(path)!r}).route(['hi'], target_retention=0.5)"
    cli = f"from entrorouter.cli import main; main(['route', '--router', {str(path)!r}, 'hello'])"
    for call in (api, cli):
        code = f"import sys; {call}; {check}"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == "[]", call
