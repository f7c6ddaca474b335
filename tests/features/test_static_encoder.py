"""The ``minilm-static`` encoder: a token table distilled once from the packaged MiniLM.

The real distillation (one MiniLM pass over the whole vocabulary, about 20 s on one
thread) runs once per test session, in the session's own cache folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from entrorouter.errors import EntroRouterError
from entrorouter.features import encoders
from entrorouter.features.cache import default_cache_dir
from entrorouter.features.encoders import (
    ENCODER_NAMES,
    StaticMiniLMEncoder,
    distil_static_table,
    encoder_from_state,
    make_encoder,
    minilm_path,
    principal_axes,
)

TEXTS = [
    "What is the integral of x squared?",
    "Write a python function to sort a list",
    "Who won the war of 1812?",
    "",  # no token at all
]


@pytest.fixture(scope="module")
def static() -> StaticMiniLMEncoder:
    """The encoder with its table distilled (once) into the session's cache folder."""
    encoder = make_encoder("minilm-static")
    assert isinstance(encoder, StaticMiniLMEncoder)
    encoder.encode(TEXTS[:1])
    return encoder


def test_principal_axes_are_deterministic_centred_and_sign_fixed() -> None:
    rows = np.random.default_rng(0).standard_normal((200, 12)) @ np.diag(np.arange(12, 0, -1.0))
    projected = principal_axes(rows, 5)
    assert projected.shape == (200, 5) and projected.dtype == np.float32
    np.testing.assert_allclose(projected.mean(axis=0), 0.0, atol=1e-5)
    variances = projected.var(axis=0)
    assert np.all(np.diff(variances) <= 1e-6)  # leading axes first
    # Flipping every input row's sign flips the projection, yet each axis keeps its sign
    # convention, so a rotation of the input space cannot flip columns at random.
    np.testing.assert_array_equal(principal_axes(rows, 5), projected)
    np.testing.assert_allclose(principal_axes(rows * 3.0, 5), projected * 3.0, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot keep 13"):
        principal_axes(rows, 13)


def test_distillation_on_a_vocabulary_slice() -> None:
    ids = np.arange(2000, 2064)
    table = distil_static_table(minilm_path(), 16, token_ids=ids)
    assert table.shape == (30522, 16) and table.dtype == np.float32
    assert not table[:2000].any() and not table[2064:].any() and np.all(np.abs(table[ids]).sum(axis=1) > 0)
    np.testing.assert_array_equal(distil_static_table(minilm_path(), 16, token_ids=ids), table)


def test_registered_and_refuses_a_router_of_another_recipe() -> None:
    assert "minilm-static" in ENCODER_NAMES
    encoder = make_encoder("minilm-static")
    assert encoder.cache_id.endswith(f"-static{encoders.STATIC_RECIPE_VERSION}-d384-t512")
    config = {"kind": "minilm-static", "cache_id": "model-0000000000000000-static0-d256-t512"}
    with pytest.raises(EntroRouterError, match="trained with encoder 'model-0000000000000000-static0-d256-t512'"):
        encoder_from_state(config, {})
    assert encoder_from_state(*encoder.state()).cache_id == encoder.cache_id


@pytest.mark.slow
def test_vectors_are_normalised_and_independent_of_batch_mates(static: StaticMiniLMEncoder) -> None:
    long_text = TEXTS[0] + " and then" * 600  # past 512 tokens
    vectors = static.encode([*TEXTS, long_text])
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 1, 2, 4]], axis=1), 1.0, rtol=1e-5)
    assert not vectors[3].any()  # an empty text embeds as zeros
    for i, text in enumerate([*TEXTS, long_text]):
        np.testing.assert_array_equal(static.encode([text])[0], vectors[i])
    np.testing.assert_array_equal(static.encode([long_text + " words after token 512"])[0], vectors[4])
    # Related queries are closer than unrelated ones.
    near = static.encode(["What is the integral of x cubed?"])[0]
    assert near @ vectors[0] > near @ vectors[2]


@pytest.mark.slow
def test_the_table_is_distilled_once_and_reused(static: StaticMiniLMEncoder, monkeypatch) -> None:
    tables = list((default_cache_dir() / "static").glob("*.safetensors"))
    assert [p.name for p in tables] == [f"{static.cache_id}.safetensors"]
    assert not list((default_cache_dir() / "static").glob("*.tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("distilled again")

    monkeypatch.setattr(encoders, "distil_static_table", fail)
    fresh = make_encoder("minilm-static")  # another process would start like this
    np.testing.assert_array_equal(fresh.encode(TEXTS), static.encode(TEXTS))
    rebuilt = encoder_from_state(*static.state())
    np.testing.assert_array_equal(rebuilt.encode(TEXTS), static.encode(TEXTS))


@pytest.mark.slow
def test_routing_time_does_not_import_torch(static: StaticMiniLMEncoder) -> None:
    code = (
        "import sys; from entrorouter.features.encoders import make_encoder; "
        "v = make_encoder('minilm-static').encode(['hello there']); "
        "print(v.shape, sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))"
    )
    env = {**os.environ, "ENTROROUTER_CACHE_DIR": str(default_cache_dir())}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 384) []"


@pytest.mark.slow
def test_a_router_trained_on_it_round_trips(static: StaticMiniLMEncoder, demo_table, tmp_path: Path) -> None:
    from entrorouter.router import Router
    from entrorouter.router.config import TrainConfig

    fast = {"capability": "knn", "sft_epochs": 2, "rl_iterations": 4, "hidden": 64, "calibration_folds": 0, "lam": 0.1}
    train = demo_table.split("train")
    router = Router(TrainConfig(encoder="minilm-static", **fast)).fit(train.subset(np.arange(300)))
    path = router.save(tmp_path / "static-router")
    again = Router.load(path)
    assert again.encoder.state()[0] == {"kind": "minilm-static", "cache_id": static.cache_id}
    queries = list(demo_table.split("test").queries[:20])
    for a, b in zip(router.route(queries), again.route(queries), strict=True):
        assert a.ranking == b.ranking
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-7)
