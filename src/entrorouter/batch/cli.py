"""The ``--batch`` flags of ``entrorouter route`` (registered by the route command) and their handler."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from entrorouter.batch import DEFAULT_CHUNK_SIZE
from entrorouter.batch.engines import ENGINES
from entrorouter.errors import EntroRouterError


def add_batch_arguments(route: argparse.ArgumentParser) -> None:
    group = route.add_argument_group("batch routing (a file of queries instead of one query)")
    group.add_argument("--batch", type=Path, metavar="IN", help="CSV/JSONL/Parquet of queries to route")
    group.add_argument("--out", type=Path, metavar="OUT.parquet", help="where to write one decision per query")
    group.add_argument("--id-column", default="id", help="column of query ids (default: id)")
    group.add_argument("--text-column", default="text", help="column of query texts (default: text)")
    group.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help=f"rows per chunk (default {DEFAULT_CHUNK_SIZE})"
    )
    group.add_argument("--engine", choices=ENGINES, default="local", help="local (default) or ray")
    group.add_argument("--ray-address", help="join this Ray cluster (default: start a local Ray)")
    group.add_argument("--workers", type=int, help="Ray actors, one CPU each (default: the cluster's CPUs)")


def cmd_route_batch(args: argparse.Namespace, router: Any, lam: float) -> int:
    """Route ``--batch`` into ``--out`` at ``lam``; exit 1 when some rows were bad (they are listed)."""
    from entrorouter.batch.routing import BAD_ROWS_SHOWN, route_file

    if args.query is not None:
        raise EntroRouterError("give a query or --batch, not both")
    if args.out is None:
        raise EntroRouterError("--batch needs --out OUT.parquet")
    summary = route_file(
        args.router,
        args.batch,
        args.out,
        lam=lam,
        id_column=args.id_column,
        text_column=args.text_column,
        chunk_size=args.chunk_size,
        engine=args.engine,
        ray_address=args.ray_address,
        workers=args.workers,
    )
    resumed = f" ({summary.resumed_chunks} chunks kept from an interrupted run)" if summary.resumed_chunks else ""
    print(f"routed {summary.routed} queries into {args.out} in {summary.seconds:.1f}s{resumed}")
    if not summary.bad_rows:
        return 0
    for row, problem in summary.bad_rows[:BAD_ROWS_SHOWN]:
        print(f"{args.batch}, row {row}: {problem}", file=sys.stderr)
    more = len(summary.bad_rows) - BAD_ROWS_SHOWN
    print(
        f"{len(summary.bad_rows)} bad row(s) left out{f' ({more} more not shown)' if more > 0 else ''}",
        file=sys.stderr,
    )
    return 1
