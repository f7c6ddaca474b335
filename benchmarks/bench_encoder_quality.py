"""Do other encoders, capability ensembles or training settings route as well as the default? Validation only.

    ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_encoder_quality.py

Every encoder against ``minilm`` (the default: first 128 tokens, torch with int8 linear
layers): ``minilm-full`` (256 tokens, float32) and ``minilm-onnx`` (the same network in
ONNX Runtime, int8, 128 tokens) by default; ``--encoders minilm minilm-onnx minilm-static``
adds the static table distilled from MiniLM (512 tokens). ``--capabilities`` compares
EntroRouter's capability ensembles the same way (the first is the reference): dropping the
kNN part (``mlp+logistic``) removes most of the arrays one routing decision reads, which is
what a routed request waits for in the gateway (``results/gateway.md``). ``--policy-seeds``
compares EntroRouter with one policy against the mean of several (``TrainConfig.policy_seeds``),
which is about its chosen point more than its AIQ. ``--train-settings`` compares any other
``TrainConfig`` fields, one JSON object per setting (``'{}'``, the shipped values, first). A
setting is one encoder with one ensemble, one number of policies and one set of other
fields; the baselines do not depend on the last three, so they are fitted once per encoder.
On MMLU-Pro and the RouterBench subset by default (``--datasets``). The test splits
are never loaded: for each seed a dataset's train split is cut into 80% for fitting and 20%
held out, and `Benchmark` (which itself carves its operating-point validation from the 80%)
reports every router's AIQ, and its chosen point, on the held-out 20%. Writes
``benchmarks/results/encoder_quality.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from entrorouter.data.atomic import write_text_atomic
from entrorouter.data.datasets import load_source
from entrorouter.errors import ConfigError
from entrorouter.evaluation.benchmark import Benchmark, BenchmarkConfig
from entrorouter.router.config import POOLINGS, TrainConfig
from entrorouter.threads import chosen_threads, limit_threads

REFERENCE = "minilm"
ENCODERS = (REFERENCE, "minilm-full", "minilm-onnx")
DATASETS = ("routerbench_subset", "mmlu_pro")
ROUTERS = ["knn", "logistic", "mlp", "entrorouter"]
#: TrainConfig fields that a flag of their own varies; --train-settings refuses them.
OWN_FLAGS = {"encoder": "--encoders", "capability": "--capabilities", "policy_seeds": "--policy-seeds"}
Fields = tuple[tuple[str, Any], ...]  # TrainConfig fields set apart from their shipped values
Setting = tuple[str, str, int, Fields]  # encoder, EntroRouter's capability ensemble, its policies, other fields


def say(message: str) -> None:
    print(f"  {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--encoders", nargs="+", default=list(ENCODERS), help=f"the first is the reference ({REFERENCE})"
    )
    parser.add_argument(
        "--capabilities",
        nargs="+",
        default=[TrainConfig.capability],
        help=f"EntroRouter's capability ensembles; the first is the reference ({TrainConfig.capability})",
    )
    parser.add_argument(
        "--policy-seeds",
        nargs="+",
        type=int,
        default=[TrainConfig.policy_seeds],
        help=f"EntroRouter's numbers of policies; the first is the reference ({TrainConfig.policy_seeds})",
    )
    parser.add_argument(
        "--train-settings",
        nargs="+",
        default=["{}"],
        help="EntroRouter's other TrainConfig fields, one JSON object per setting (e.g. '{\"anchor_temperature\": "
        "0.05}'); the first is the reference (default {}: the shipped values)",
    )
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=TrainConfig.calibration_pooling,
        help="how every router's fold routers are pooled into its out-of-fold curve (BenchmarkConfig.pooling; "
        f"default {TrainConfig.calibration_pooling})",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument(
        "--routers", nargs="+", default=ROUTERS, help="routers to compare (entrorouter is by far the slowest)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encoder_quality.md"))
    args = parser.parse_args()
    limit_threads(chosen_threads())  # ENTROROUTER_THREADS, for torch and NumPy's BLAS alike
    train_settings: list[Fields] = []
    for text in args.train_settings:  # fail before any fit
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            raw = None
        if not isinstance(raw, dict):
            parser.error(f"--train-settings: expected a JSON object of TrainConfig fields, got {text!r}")
        flagged = sorted(set(raw) & set(OWN_FLAGS))
        if flagged:  # it would silently win over that flag's values
            parser.error(f"--train-settings: set {flagged[0]!r} with {OWN_FLAGS[flagged[0]]}, not here")
        try:
            TrainConfig.from_dict(raw, source=repr(text))
        except ConfigError as exc:
            parser.error(f"--train-settings: {exc}")
        train_settings.append(tuple(raw.items()))

    settings = [
        (encoder, capability, policies, fields)
        for encoder in args.encoders
        for capability in args.capabilities
        for policies in args.policy_seeds
        for fields in train_settings
    ]
    measured: dict[tuple[str, Setting, str], list[dict[str, float]]] = {}
    for dataset in args.datasets:
        train = load_source(dataset).split("train")
        for seed in range(args.seeds):
            held_out = np.zeros(train.n_queries, dtype=bool)
            held_out[np.random.default_rng(100 + seed).permutation(train.n_queries)[: train.n_queries // 5]] = True
            baselines: dict[str, dict[str, dict[str, float]]] = {}  # by encoder: they ignore the rest
            for setting in settings:
                encoder, capability, policies, fields = setting
                routers = [r for r in args.routers if r == "entrorouter" or encoder not in baselines]
                config = BenchmarkConfig(
                    seed=seed,
                    routers=routers,
                    encoder=encoder,
                    n_boot=100,
                    pooling=args.pooling,
                    train_config={"capability": capability, "policy_seeds": policies, **dict(fields)},
                )
                results = Benchmark(
                    train.subset(~held_out), train.subset(held_out), config, dataset=dataset, progress=say
                ).run()
                rows = {
                    r: {key: results["routers"][r][key] for key in ("aiq", "retained", "cost_reduction")}
                    for r in routers
                }
                baselines.setdefault(encoder, {r: row for r, row in rows.items() if r != "entrorouter"})
                for router in args.routers:
                    measured.setdefault((dataset, setting, router), []).append(
                        rows.get(router) or baselines[encoder][router]
                    )
                scores = ", ".join(f"{r} {measured[dataset, setting, r][-1]['aiq']:.4f}" for r in args.routers)
                print(f"{dataset} seed {seed} {label(args, setting)}: {scores}", flush=True)
        write_report(args, settings, measured, args.datasets[: args.datasets.index(dataset) + 1])
    return 0


def label(args: argparse.Namespace, setting: Setting) -> str:
    """A setting's name in the report: what varies in this run (the encoder when nothing does)."""
    encoder, capability, policies, fields = setting
    parts = [
        part
        for part, varies in (
            (encoder, len(args.encoders) > 1),
            (capability, len(args.capabilities) > 1),
            (f"{policies} polic{'y' if policies == 1 else 'ies'}", len(args.policy_seeds) > 1),
            (", ".join(f"{k}={v}" for k, v in fields) or "shipped", len(args.train_settings) > 1),
        )
        if varies
    ]
    return ", ".join(parts) or encoder


def write_report(
    args: argparse.Namespace,
    settings: list[Setting],
    measured: dict[tuple[str, Setting, str], list[dict[str, float]]],
    datasets: list[str],
) -> None:
    reference, *others = settings
    names = {setting: f"`{label(args, setting)}`" for setting in settings}
    lines = [
        f"# Routing quality: {', '.join(names[s] for s in others)} against {names[reference]}",
        "",
        "Command: `ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/bench_encoder_quality.py{''.join(' ' + shlex.quote(a) for a in sys.argv[1:])}`.",
        "",
        f"**Train splits only** (the test splits are never loaded): for seeds 0–{args.seeds - 1}, 80% of a "
        "dataset's train split fits every router and 20% is held out; AIQ on the held-out 20% (mean, then per "
        "seed). A faster setting can replace the default only when its mean AIQ is within 0.003 of the reference "
        "and its chosen point saves about as much at the target (the point is what a user gets; AIQ alone let "
        "through a setting whose point saved 1–2 points less: `policy_seeds_two.md`); a setting that is not "
        "faster only when its point saves more than retraining alone moves it (1–2 points) and its AIQ is no "
        "more than 0.003 lower. "
        "Chosen point: the point each router certifies for 98.3% retention on the 80% (cross-fitted, folds "
        f"pooled at equal {args.pooling}), measured on the held-out 20% (mean over seeds).",
    ]
    for dataset in datasets:
        lines += [
            "",
            f"## {dataset}",
            "",
            "| router | "
            + " | ".join(f"AIQ {names[s]}" for s in settings)
            + " | "
            + " | ".join(f"{names[s]} − {names[reference]}" for s in others)
            + " | "
            + " | ".join(f"chosen point {names[s]}: retained / cost reduction" for s in settings)
            + " |",
            "|---|" + "---|" * (3 * len(settings) - 1),
        ]
        for router in args.routers:
            rows = {s: measured[dataset, s, router] for s in settings}
            aiq = {s: np.array([row["aiq"] for row in rows[s]]) for s in settings}
            cells = [f"{v.mean():.4f} ({' '.join(f'{x:.4f}' for x in v)})" for v in aiq.values()]
            gaps = [f"{aiq[s].mean() - aiq[reference].mean():+.4f}" for s in others]
            points = [
                f"{np.mean([r['retained'] for r in rows[s]]):.1%} / "
                f"{np.mean([r['cost_reduction'] for r in rows[s]]):.1%}"
                for s in settings
            ]
            lines.append(f"| {router} | {' | '.join(cells)} | {' | '.join(gaps)} | {' | '.join(points)} |")
    lines.append("")
    report = "\n".join(lines)
    write_text_atomic(args.out, report)
    print(report)


if __name__ == "__main__":
    sys.exit(main())
