"""On-disk cache of query embeddings, keyed by encoder and text.

Layout: ``<root>/<encoder.cache_id>/<random>.safetensors``, each shard holding ``keys``
(first 16 bytes of SHA-256 of the text) and ``vectors``. New vectors go to a new shard
written atomically, so concurrent processes never corrupt each other; a shard is never
modified after it is written. Root: ``$ENTROROUTER_CACHE_DIR`` or ``~/.cache/entrorouter``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from entrorouter.data.atomic import atomic_path
from entrorouter.features.encoders import Encoder

CACHE_DIR_ENV = "ENTROROUTER_CACHE_DIR"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "entrorouter")


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


def key_array(keys: Sequence[bytes]) -> np.ndarray:
    """(n, 16) uint8 array of :func:`text_key` keys, the form safetensors stores."""
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16)


class EmbeddingCache:
    """Embeds texts with an encoder, reusing vectors computed before."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "embeddings"
        self._index: dict[str, dict[bytes, np.ndarray]] = {}
        self._seen_shards: dict[str, set[str]] = {}

    def _load(self, cache_id: str) -> dict[bytes, np.ndarray]:
        """The in-memory index for one encoder, refreshed with shards written since."""
        from safetensors.numpy import load_file

        index = self._index.setdefault(cache_id, {})
        seen = self._seen_shards.setdefault(cache_id, set())
        folder = self.root / cache_id
        if folder.is_dir():
            for shard in sorted(folder.glob("*.safetensors")):
                if shard.name in seen:
                    continue
                tensors = load_file(str(shard))
                for key, vector in zip(tensors["keys"], tensors["vectors"], strict=True):
                    index[key.tobytes()] = vector
                seen.add(shard.name)
        return index

    def embed(
        self,
        encoder: Encoder,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        progress: bool = False,
    ) -> np.ndarray:
        """(n, dim) float32 vectors for ``texts``, encoding only those not cached yet."""
        texts = list(texts)
        if not encoder.cacheable:
            return encoder.encode(texts, batch_size=batch_size, progress=progress)
        todo = self.missing(encoder, texts)
        if todo:
            self.add(encoder, todo, encoder.encode(todo, batch_size=batch_size, progress=progress))
        index = self._load(encoder.cache_id)
        if not texts:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        return np.stack([index[text_key(t)] for t in texts]).astype(np.float32, copy=False)

    def missing(self, encoder: Encoder, texts: Sequence[str]) -> list[str]:
        """The distinct texts of ``texts`` that have no cached vector yet (first occurrence order)."""
        index = self._load(encoder.cache_id)
        todo: dict[bytes, str] = {}
        for text in texts:
            key = text_key(text)
            if key not in index and key not in todo:
                todo[key] = text
        return list(todo.values())

    def add(self, encoder: Encoder, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors computed elsewhere (e.g. on Ray workers) as one new shard."""
        keys = [text_key(t) for t in texts]
        self._write_shard(encoder.cache_id, keys, vectors)
        self._load(encoder.cache_id).update(zip(keys, vectors, strict=True))

    def _write_shard(self, cache_id: str, keys: list[bytes], vectors: np.ndarray) -> None:
        from safetensors.numpy import save_file

        name = f"{uuid.uuid4().hex}.safetensors"
        with atomic_path(self.root / cache_id / name) as tmp:
            save_file({"keys": key_array(keys), "vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, str(tmp))
        self._seen_shards.setdefault(cache_id, set()).add(name)
