"""Do the fast encoders route as well as the default one? Validation data only.

    ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_encoder_quality.py

Every encoder against ``minilm`` (the default: first 128 tokens, torch with int8 linear
layers): ``minilm-full`` (256 tokens, float32) and ``minilm-onnx`` (the same network in
ONNX Runtime, int8, 128 tokens) by default; ``--encoders minilm minilm-onnx minilm-static``
adds the static table distilled from MiniLM (512 tokens). On MMLU-Pro and the RouterBench subset. The test splits
are never loaded: for each seed a dataset's train split is cut into 80% for fitting and 20%
held out, and `Benchmark` (which itself carves its operating-point validation from the 80%)
reports every router's AIQ on the held-out 20%. Writes ``benchmarks/results/encoder_quality.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from entrorouter.data.atomic import write_text_atomic
from entrorouter.data.datasets import load_source
from entrorouter.evaluation.benchmark import Benchmark, BenchmarkConfig

REFERENCE = "minilm"
ENCODERS = (REFERENCE, "minilm-full", "minilm-onnx")
DATASETS = ("routerbench_subset", "mmlu_pro")
ROUTERS = ["knn", "logistic", "mlp", "entrorouter"]


def say(message: str) -> None:
    print(f"  {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--encoders", nargs="+", default=list(ENCODERS), help=f"the first is the reference ({REFERENCE})"
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument(
        "--routers", nargs="+", default=ROUTERS, help="routers to compare (entrorouter is by far the slowest)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encoder_quality.md"))
    args = parser.parse_args()

    aiq: dict[tuple[str, str, str], list[float]] = {}
    for dataset in args.datasets:
        train = load_source(dataset).split("train")
        for seed in range(args.seeds):
            held_out = np.zeros(train.n_queries, dtype=bool)
            held_out[np.random.default_rng(100 + seed).permutation(train.n_queries)[: train.n_queries // 5]] = True
            for encoder in args.encoders:
                config = BenchmarkConfig(seed=seed, routers=args.routers, encoder=encoder, n_boot=100)
                results = Benchmark(
                    train.subset(~held_out), train.subset(held_out), config, dataset=dataset, progress=say
                ).run()
                for router in args.routers:
                    aiq.setdefault((dataset, encoder, router), []).append(results["routers"][router]["aiq"])
                scores = ", ".join(f"{r} {aiq[dataset, encoder, r][-1]:.4f}" for r in args.routers)
                print(f"{dataset} seed {seed} {encoder}: {scores}", flush=True)
        write_report(args, aiq, args.datasets[: args.datasets.index(dataset) + 1])  # each dataset as it is done
    return 0


def write_report(args: argparse.Namespace, aiq: dict[tuple[str, str, str], list[float]], datasets: list[str]) -> None:
    reference, *others = args.encoders

    lines = [
        f"# Encoder quality: {', '.join(f'`{e}`' for e in others)} against `{reference}`",
        "",
        "Command: `ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/bench_encoder_quality.py{''.join(' ' + a for a in sys.argv[1:])}`.",
        "",
        f"**Train splits only** (the test splits are never loaded): for seeds 0–{args.seeds - 1}, 80% of a "
        "dataset's train split fits every router and 20% is held out; AIQ on the held-out 20% (mean, then per "
        "seed). A fast encoder qualifies as the default when its mean AIQ is within 0.003 of the reference.",
    ]
    for dataset in datasets:
        lines += [
            "",
            f"## {dataset}",
            "",
            "| router | "
            + " | ".join(f"AIQ `{e}`" for e in args.encoders)
            + " | "
            + " | ".join(f"`{e}` − `{reference}`" for e in others)
            + " |",
            "|---|" + "---|" * (2 * len(args.encoders) - 1),
        ]
        for router in args.routers:
            values = {e: np.array(aiq[dataset, e, router]) for e in args.encoders}
            cells = [f"{v.mean():.4f} ({' '.join(f'{x:.4f}' for x in v)})" for v in values.values()]
            gaps = [f"{values[e].mean() - values[reference].mean():+.4f}" for e in others]
            lines.append(f"| {router} | {' | '.join(cells)} | {' | '.join(gaps)} |")
    lines.append("")
    report = "\n".join(lines)
    write_text_atomic(args.out, report)
    print(report)


if __name__ == "__main__":
    sys.exit(main())
