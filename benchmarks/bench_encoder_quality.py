"""Does the fast encoder route as well as the full one? Validation data only.

    ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_encoder_quality.py

The default encoder ``minilm`` (first 128 tokens, int8 linear layers) against the
unmodified ``minilm-full`` (256 tokens, float32), on MMLU-Pro. The test split is never
loaded: for each seed the train split is cut into 80% for fitting and 20% held out, and
`Benchmark` (which itself carves its operating-point validation from the 80%) reports
every router's AIQ on the held-out 20%. Writes ``benchmarks/results/encoder_quality.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from entrorouter.data.datasets import load_source
from entrorouter.evaluation.benchmark import Benchmark, BenchmarkConfig

ENCODERS = ("minilm", "minilm-full")
ROUTERS = ["knn", "logistic", "mlp", "entrorouter"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encoder_quality.md"))
    args = parser.parse_args()

    train = load_source("mmlu_pro").split("train")
    aiq: dict[tuple[str, str], list[float]] = {}
    for seed in range(args.seeds):
        held_out = np.zeros(train.n_queries, dtype=bool)
        held_out[np.random.default_rng(100 + seed).permutation(train.n_queries)[: train.n_queries // 5]] = True
        for encoder in ENCODERS:
            config = BenchmarkConfig(seed=seed, routers=ROUTERS, encoder=encoder, n_boot=100)
            results = Benchmark(train.subset(~held_out), train.subset(held_out), config, dataset="mmlu_pro").run()
            for router in ROUTERS:
                aiq.setdefault((encoder, router), []).append(results["routers"][router]["aiq"])
            print(f"seed {seed} {encoder}: " + ", ".join(f"{r} {aiq[encoder, r][-1]:.4f}" for r in ROUTERS), flush=True)

    lines = [
        "# Encoder quality: `minilm` (128 tokens, int8) vs `minilm-full` (256 tokens, float32)",
        "",
        "Command: `ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python "
        "benchmarks/bench_encoder_quality.py`.",
        "",
        f"MMLU-Pro **train split only** (the test split is never loaded): for seeds 0–{args.seeds - 1}, 80% of it "
        "fits every router and 20% is held out; AIQ on the held-out 20% (mean, then per seed).",
        "",
        "| router | " + " | ".join(f"AIQ `{e}`" for e in ENCODERS) + " | difference (fast − full) |",
        "|---|" + "---|" * (len(ENCODERS) + 1),
    ]
    for router in ROUTERS:
        fast, full = (np.array(aiq[e, router]) for e in ENCODERS)
        cells = [f"{v.mean():.4f} ({' '.join(f'{x:.4f}' for x in v)})" for v in (fast, full)]
        lines.append(f"| {router} | {' | '.join(cells)} | {fast.mean() - full.mean():+.4f} |")
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
