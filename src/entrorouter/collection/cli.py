"""`entrorouter collect`: build an outcome table from live endpoints.

Exit codes: 0 every pair has a score; 1 the table was written but some pairs failed (run
the command again to retry them) or no query got any answer; 2 bad input (nothing
written); 130 interrupted (progress saved; run the command again to continue).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from entrorouter.collection.run import CollectResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="send a query set to every model of a pool, grade the answers, write an outcome table",
        description="Send each query to each backend of pool.yaml, grade the answers and write "
        "the outcome table. Resumable: progress is kept beside the table in OUT.progress.sqlite; "
        "rerun the same command to continue. See docs/collect.md.",
    )
    parser.add_argument("--queries", required=True, type=Path, help="queries (.jsonl, .csv or .parquet)")
    parser.add_argument("--config", required=True, type=Path, help="pool.yaml: backends, prices, graders")
    parser.add_argument("--out", required=True, type=Path, help="outcome table (.parquet, .csv or .jsonl)")
    parser.add_argument(
        "--concurrency", type=int, help="calls in flight over all backends (default: pool.yaml, else 64)"
    )
    parser.add_argument(
        "--grader",
        help="grader of the queries that name none (e.g. exact, numeric, choice, f1, code, judge)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a file at --out that an earlier collect of this table did not write",
    )
    parser.set_defaults(handler=cmd_collect)


def cmd_collect(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console

    from entrorouter.collection.run import CollectInterrupted, collect

    console = Console(stderr=True, soft_wrap=True)  # soft wrap: messages stay one line in logs
    try:
        result = collect(
            args.queries,
            args.config,
            args.out,
            concurrency=args.concurrency,
            grader=args.grader,
            console=console,
            force=args.force,
        )
    except CollectInterrupted as exc:
        print(f"entrorouter: {exc}", file=sys.stderr)
        return 130
    print_summary(result, Console(soft_wrap=True))
    return 0 if result.complete else 1


def print_summary(result: CollectResult, console: Console) -> None:
    """The per-model table and what happened."""
    from rich.table import Table

    table = Table(title="collect summary", title_justify="left")
    for column in ("model", "answered", "errors", "accuracy", "mean cost $", "mean latency s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for summary in result.table.models.values():
        table.add_row(
            summary.model,
            str(summary.answered),
            str(summary.errors),
            _fmt(summary.accuracy, ".3f"),
            _fmt(summary.mean_cost, ".3g"),
            _fmt(summary.mean_latency_s, ".2f"),
        )
    console.print(table)
    counts = result.counts
    console.print(
        f"this run: {counts.sent} calls sent, {counts.call_errors} failed, {counts.graded} graded, "
        f"{counts.grading_errors} grading failures; {result.already_done} of {result.total_pairs} "
        "pairs were already done",
        highlight=False,
    )
    report = result.table
    for left_out, why in (
        (report.left_out, "no model answered them"),
        (report.ungraded, "answered, but no answer could be graded (see the store's errors; rerun to grade again)"),
    ):
        if left_out:
            shown = ", ".join(left_out[:5]) + (", ..." if len(left_out) > 5 else "")
            console.print(f"[yellow]{len(left_out)} queries left out of the table: {why} ({shown})[/]", highlight=False)
    if report.path is None:
        console.print("[red]no query has an outcome; no table written[/]")
        return
    console.print(
        f"wrote {report.path}: {report.n_queries} queries x {len(report.models)} models ({report.n_rows} rows)",
        highlight=False,
    )
    if report.errors:
        console.print(
            f"[yellow]{report.errors} pairs have no score (see the 'error' column); run the same "
            f"command again to retry them (progress: {result.store})[/]",
            highlight=False,
        )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
