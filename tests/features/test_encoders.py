"""Encoders and the embedding cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from entrorouter.errors import EntroRouterError
from entrorouter.features.cache import EmbeddingCache
from entrorouter.features.encoders import HashedTfidfEncoder, encoder_from_state, make_encoder

TEXTS = [
    "What is the integral of x squared?",
    "Write a python function to sort a list",
    "Who won the war of 1812?",
]


def test_hashed_tfidf_is_deterministic_and_saved() -> None:
    encoder = make_encoder("hashed-tfidf").fit(TEXTS)
    x = encoder.encode(TEXTS)
    assert x.shape == (3, 512) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    # Similar texts are closer than unrelated ones.
    near = encoder.encode(["What is the integral of x cubed?"])[0]
    assert near @ x[0] > near @ x[1]
    config, tensors = encoder.state()
    again = encoder_from_state(config, tensors)
    np.testing.assert_array_equal(again.encode(TEXTS), x)


def test_hashed_tfidf_requires_fit() -> None:
    with pytest.raises(RuntimeError):
        HashedTfidfEncoder().encode(TEXTS)


def test_unknown_encoder() -> None:
    with pytest.raises(EntroRouterError, match="unknown encoder 'bert'"):
        make_encoder("bert")
    with pytest.raises(EntroRouterError, match="holds no sentence-transformers model"):
        _ = make_encoder("st:/nonexistent").dim


@pytest.mark.slow
def test_minilm_loads_offline_and_cache_reuses_vectors(tmp_path: Path) -> None:
    encoder = make_encoder("minilm")
    cache = EmbeddingCache(tmp_path)
    first = cache.embed(encoder, TEXTS)
    assert first.shape == (3, 384)
    assert len(list((tmp_path / encoder.cache_id).glob("*.safetensors"))) == 1
    # A fresh cache object (another process) reads the shard instead of encoding again.
    fresh = EmbeddingCache(tmp_path)
    encoder.encode = None  # any call to the model would now fail
    np.testing.assert_allclose(fresh.embed(encoder, [TEXTS[2], TEXTS[0]]), first[[2, 0]], rtol=1e-6)


@pytest.mark.slow
def test_fast_minilm_reads_the_head_and_stays_close_to_the_full_model() -> None:
    fast, full = make_encoder("minilm"), make_encoder("minilm-full")
    assert fast.cache_id != full.cache_id  # their vectors never share a cache
    long_text = TEXTS[0] + " and then" * 300  # far past 128 tokens
    a, b = fast.encode([*TEXTS, long_text]), full.encode([*TEXTS, long_text])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert float((a[:3] * b[:3]).sum(axis=1).min()) > 0.85  # int8 changes vectors a little, not the meaning
    np.testing.assert_allclose(fast.encode([long_text + " extra words at the very end"]), a[3:], atol=1e-6)
    # The saved state rebuilds the same variant.
    for encoder in (fast, full):
        config, tensors = encoder.state()
        assert encoder_from_state(config, tensors).cache_id == encoder.cache_id


@pytest.mark.slow
def test_onnx_minilm_is_exported_once_batch_independent_and_close_to_minilm(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ENTROROUTER_CACHE_DIR", str(tmp_path))
    encoder = make_encoder("minilm-onnx")
    long_text = TEXTS[0] + " and then" * 300  # far past 128 tokens
    vectors = encoder.encode([*TEXTS, long_text])
    exported = list((tmp_path / "onnx").glob("*.onnx"))
    assert [p.name for p in exported] == [f"{encoder.cache_id}.onnx"]  # exported locally, cached
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # A text's vector does not depend on its batch mates, nor on what follows token 128.
    np.testing.assert_array_equal(encoder.encode([TEXTS[1]])[0], vectors[1])
    np.testing.assert_array_equal(encoder.encode([long_text + " extra words at the very end"])[0], vectors[3])
    reference = make_encoder("minilm").encode(TEXTS)
    assert float((vectors[:3] * reference).sum(axis=1).min()) > 0.85  # the same network, int8 either way
    # A saved router rebuilds it from the cache, without exporting again.
    stamp = exported[0].stat().st_mtime_ns
    rebuilt = encoder_from_state(*encoder.state())
    np.testing.assert_array_equal(rebuilt.encode(TEXTS), vectors[:3])
    assert exported[0].stat().st_mtime_ns == stamp


def test_a_router_saved_with_another_onnx_export_is_refused() -> None:
    pytest.importorskip("onnxruntime")
    config = {"kind": "minilm-onnx", "cache_id": "model-0000000000000000-onnx0-t128-int8"}
    with pytest.raises(EntroRouterError, match="trained with encoder 'model-0000000000000000-onnx0-t128-int8'"):
        encoder_from_state(config, {})


def test_minilm_onnx_without_onnxruntime_is_a_clear_error(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(EntroRouterError, match="minilm-onnx needs onnxruntime"):
        make_encoder("minilm-onnx")
