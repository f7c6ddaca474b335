"""Embedding large tables on a batch engine (this process or Ray actors), filling the cache.

Training embeds every query of the table once; on a big table that is most of the time
of ``entrorouter train``. :func:`embed_texts` splits the texts still missing from the
embedding cache into chunks and encodes them on :mod:`entrorouter.batch.engines` — one
encoder per Ray actor, rebuilt from the fitted encoder's saved state so every actor
computes exactly the vectors this process would — then stores pretrained encoders'
vectors in the cache (so a later run, or ``evaluate``, finds them there).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from entrorouter.batch.engines import run_engine
from entrorouter.features.cache import EmbeddingCache
from entrorouter.features.encoders import Encoder, encoder_from_state

EMBED_CHUNK_SIZE = 1024


class _Encode:
    """The worker: an encoder rebuilt from its state, encoding one chunk of texts per call."""

    def __init__(self, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        self.encoder = encoder_from_state(config, tensors)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts)


class _EncoderFactory:
    """A picklable ``() -> _Encode`` carrying the fitted encoder's state to each actor."""

    def __init__(self, encoder: Encoder) -> None:
        self.config, self.tensors = encoder.state()

    def __call__(self) -> _Encode:
        return _Encode(self.config, self.tensors)


def embed_texts(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    cache: EmbeddingCache | None = None,
    chunk_size: int = EMBED_CHUNK_SIZE,
) -> np.ndarray:
    """(n, dim) float32 embeddings of ``texts`` by the fitted ``encoder``, computed on ``engine``."""
    texts = [str(t) for t in texts]
    cache = cache if cache is not None else EmbeddingCache()
    todo = cache.missing(encoder, texts) if encoder.cacheable else list(dict.fromkeys(texts))

    def chunks() -> Iterator[tuple[int, list[str]]]:
        for start in range(0, len(todo), chunk_size):
            yield start, todo[start : start + chunk_size]

    vectors: dict[str, np.ndarray] = {}
    for start, chunk_vectors in run_engine(
        engine, _EncoderFactory(encoder), chunks(), ray_address=ray_address, workers=workers
    ):
        chunk = todo[start : start + chunk_size]
        if encoder.cacheable:
            cache.add(encoder, chunk, chunk_vectors)
        else:
            vectors.update(zip(chunk, chunk_vectors, strict=True))
    if encoder.cacheable:
        return cache.embed(encoder, texts)
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return np.stack([vectors[t] for t in texts]).astype(np.float32, copy=False)
