"""How should ``minilm-static`` distil its table? A quick proxy on validation folds.

    ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_static_recipe.py

Variants of the recipe (token outputs L2-normalised or not; PCA to 256 or all 384
components; token weights: none, Zipf ``log(1 + rank)`` with the vocabulary order as rank,
SIF ``a / (a + p)`` with a Zipf ``p``), each scored by how well its query vectors predict
each model's per-query score on held-out queries: Brier skill (1 − Brier / Brier of the
per-model mean) of a ridge regression and of a 25-nearest-neighbour mean, averaged over
models. Train splits only (the test splits are never loaded): the held-out 20% of seed s is
the one ``bench_encoder_quality.py`` uses for its seed s. ``minilm`` (from the embedding
cache) is the reference. Cheap enough to compare many recipes; the routers' AIQ
(``bench_encoder_quality.py``) is the real test of the chosen one. Writes
``benchmarks/results/static_recipe.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from entrorouter.data.atomic import write_text_atomic
from entrorouter.data.datasets import load_source
from entrorouter.features.cache import EmbeddingCache
from entrorouter.features.encoders import _special_tokens, _token_outputs, make_encoder, minilm_path, principal_axes
from entrorouter.threads import chosen_threads, limit_threads

VARIANTS = [
    {"normalise": False, "dim": 256, "weight": "none"},
    {"normalise": False, "dim": 256, "weight": "zipf"},
    {"normalise": False, "dim": 256, "weight": "sif1e-3"},
    {"normalise": True, "dim": 256, "weight": "none"},
    {"normalise": True, "dim": 256, "weight": "zipf"},
    {"normalise": True, "dim": 256, "weight": "sif1e-2"},
    {"normalise": True, "dim": 256, "weight": "sif1e-3"},
    {"normalise": True, "dim": 384, "weight": "none"},  # the recipe of STATIC_RECIPE_VERSION 1
]


def token_weights(kind: str, vocab_size: int) -> np.ndarray:
    rank = np.arange(vocab_size, dtype=np.float64)  # WordPiece order approximates frequency rank
    if kind == "zipf":
        return np.log1p(rank)
    if kind.startswith("sif"):
        a = float(kind[3:])
        r = np.maximum(rank - 998, 1)  # ids below 999 are [PAD], [unusedN] and the specials
        p = (1 / r) / (1 / r).sum()
        return a / (a + p)
    return np.ones(vocab_size)


def table(outputs: np.ndarray, special: np.ndarray, variant: dict) -> np.ndarray:
    rows = outputs[~special]
    if variant["normalise"]:
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    out = np.zeros((special.size, variant["dim"]), dtype=np.float64)
    out[~special] = principal_axes(rows, variant["dim"])
    return (out * token_weights(variant["weight"], special.size)[:, None]).astype(np.float32)


def embed(tokenizer: Tokenizer, special: np.ndarray, rows: np.ndarray, texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), rows.shape[1]), dtype=np.float32)
    for i, text in enumerate(texts):
        ids = np.asarray(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        ids = ids[~special[ids]]
        if ids.size:
            vector = rows[ids].sum(axis=0)
            out[i] = vector / max(float(np.linalg.norm(vector)), 1e-12)
    return out


def skills(x: np.ndarray, scores: np.ndarray, fit: np.ndarray, held: np.ndarray) -> tuple[float, float]:
    """Brier skill of ridge regression and of a 25-NN mean, over all models."""
    y = np.nan_to_num(scores)
    base = ((y[held] - y[fit].mean(axis=0)) ** 2).mean()
    a = np.hstack([x[fit], np.ones((fit.sum(), 1))])
    b = np.hstack([x[held], np.ones((held.sum(), 1))])
    weights = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ y[fit])
    ridge = np.clip(b @ weights, 0, 1)
    nearest = np.argsort(-(x[held] @ x[fit].T), axis=1)[:, :25]
    knn = y[fit][nearest].mean(axis=1)
    return 1 - ((y[held] - ridge) ** 2).mean() / base, 1 - ((y[held] - knn) ** 2).mean() / base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/static_recipe.md"))
    args = parser.parse_args()
    limit_threads(chosen_threads())  # ENTROROUTER_THREADS, for torch and NumPy's BLAS alike
    tokenizer = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tokenizer.enable_truncation(512)
    tokenizer.no_padding()
    special = _special_tokens(tokenizer)
    outputs = np.zeros((special.size, 384))
    outputs[~special] = _token_outputs(minilm_path(), np.flatnonzero(~special), normalise=False)
    reference, cache = make_encoder("minilm"), EmbeddingCache()
    names = ["minilm (reference)"] + [
        f"normalise={v['normalise']} dim={v['dim']} weight={v['weight']}" for v in VARIANTS
    ]
    results: dict[str, list[float]] = {name: [] for name in names}
    columns = []
    for dataset in ("routerbench_subset", "mmlu_pro"):
        train = load_source(dataset).split("train")
        texts = [str(q) for q in train.queries]
        vectors = [cache.embed(reference, texts)] + [
            embed(tokenizer, special, table(outputs, special, v), texts) for v in VARIANTS
        ]
        for seed in range(args.seeds):
            held = np.zeros(train.n_queries, dtype=bool)
            held[np.random.default_rng(100 + seed).permutation(train.n_queries)[: train.n_queries // 5]] = True
            columns += [f"{dataset} s{seed} ridge", f"{dataset} s{seed} 25-NN"]
            for name, x in zip(names, vectors, strict=True):
                results[name] += skills(x, train.scores, ~held, held)
            print(f"{dataset} seed {seed} done", flush=True)
    lines = [
        "# `minilm-static` recipe: Brier skill of simple predictors on validation folds",
        "",
        "Command: `ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python "
        "benchmarks/bench_static_recipe.py`. Train splits only; higher is better.",
        "",
        "| recipe | " + " | ".join(columns) + " | mean |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for name, values in results.items():
        lines.append(f"| {name} | {' | '.join(f'{v:.4f}' for v in values)} | {np.mean(values):.4f} |")
    lines += [
        "",
        "The last row is the recipe `minilm-static` ships (`STATIC_RECIPE_VERSION` 1). This is a cheap proxy;",
        "the routers' AIQ (`encoder_quality.md`) is the real test of the chosen recipe.",
        "",
    ]
    report = "\n".join(lines)
    write_text_atomic(args.out, report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
