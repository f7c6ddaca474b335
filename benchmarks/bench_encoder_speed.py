"""Per-query encoder cost, side by side: ``minilm`` (torch, int8), ``minilm-onnx`` (ONNX Runtime, int8)
and ``minilm-static`` (a distilled token table: tokenizer, lookup and mean in numpy).

    ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_encoder_speed.py

One text per call (how the gateway's router workers embed, and what keeps a vector
independent of its batch mates), one thread, interleaved in rounds so that every encoder
sees the same machine load: short chat prompts, and MMLU-Pro questions with their options
(median about 155 tokens, of which the networks read 128 and the static table up to 512).
Reports median ms per text and each encoder's speed-up over the first, with the load
average. Writes ``benchmarks/results/encoder_speed.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from entrorouter.data.atomic import write_text_atomic
from entrorouter.data.datasets import load_source
from entrorouter.features.encoders import make_encoder

ENCODERS = ("minilm", "minilm-onnx", "minilm-static")
SHORT = [
    "What is the capital of Australia?",
    "Write a Python function that checks whether a string is a palindrome.",
    "Compute the derivative of x^3 sin(x).",
    "Is a verbal contract legally binding?",
    "Explain the difference between TCP and UDP.",
    "Write a haiku about the sea.",
]


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=int, default=60, help="texts of each kind per round")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), help="the first is the reference")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encoder_speed.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    mmlu = [str(q) for q in load_source("mmlu_pro").split("train").queries[: args.texts]]
    kinds = {"short chat prompts": [f"{SHORT[i % len(SHORT)]} (#{i})" for i in range(args.texts)], "MMLU-Pro": mmlu}
    names = list(args.encoders)
    encoders = {name: make_encoder(name) for name in names}
    for encoder in encoders.values():
        encoder.encode(SHORT)  # load (export or distil, once) and warm up
    load_before = load()
    ms: dict[tuple[str, str], list[float]] = {}
    cpu_ms: dict[tuple[str, str], list[float]] = {}  # CPU time of this process: what a busy machine cannot inflate
    for _ in range(args.rounds):
        for kind, texts in kinds.items():
            for name, encoder in encoders.items():
                started, cpu = time.perf_counter(), time.process_time()
                encoder.encode(texts)
                ms.setdefault((kind, name), []).append((time.perf_counter() - started) * 1000 / len(texts))
                cpu_ms.setdefault((kind, name), []).append((time.process_time() - cpu) * 1000 / len(texts))
    lines = [
        f"# Encoder speed: {' vs '.join(f'`{n}`' for n in names)}, one text per call, 1 thread",
        "",
        "Command: `ENTROROUTER_THREADS=1 ENTROROUTER_DATA_DIR=../shared/data .venv/bin/python "
        "benchmarks/bench_encoder_speed.py`.",
        "",
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load()} on {os.cpu_count()} CPUs (a shared "
        f"machine: read the ratio, not the absolute figures). Median over {args.rounds} interleaved rounds of "
        f"{args.texts} texts. Wall: elapsed time per text; CPU: this process's CPU time per text (the cost "
        "itself, which waiting for a core on a busy machine does not inflate).",
        "",
        "| texts | "
        + " | ".join(f"`{n}` ms/text" for n in names)
        + " | "
        + " | ".join(f"`{n}` speed-up" for n in names[1:])
        + " |",
        "|---|" + "---|" * (2 * len(names) - 1),
    ]
    for kind in kinds:
        for clock, values in (("wall", ms), ("CPU", cpu_ms)):
            medians = [statistics.median(values[kind, name]) for name in names]
            speedups = [f"{medians[0] / m:.1f}x" for m in medians[1:]]
            cells = " | ".join(f"{m:.3f}" for m in medians)
            lines.append(f"| {kind}, {clock} | {cells} | {' | '.join(speedups)} |")
    lines.append("")
    report = "\n".join(lines)
    write_text_atomic(args.out, report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
