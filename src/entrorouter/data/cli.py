"""`entrorouter data download | import | inspect | validate`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from entrorouter.errors import EntroRouterError

MAX_PROBLEMS = 50
DATA_DIR_HELP = (
    "folder of the public datasets (default: $ENTROROUTER_DATA_DIR, else the per-user folder "
    "`entrorouter data download` fills)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="import, inspect and validate outcome tables")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    down = sub.add_parser(
        "download",
        help="fetch a public dataset from its pinned upstream source into the per-user data folder",
    )
    down.add_argument(
        "name",
        help="mmlu_pro, routerbench_subset, routellm_2model, or a larger variant (mmlu_pro_full, routerbench_full)",
    )
    down.add_argument(
        "--out",
        type=Path,
        help="data folder to put it in (default: $ENTROROUTER_DATA_DIR, else ~/.local/share/entrorouter)",
    )
    down.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        help="import a copy already on disk (a folder laid out like the dataset) instead of downloading",
    )
    down.add_argument(
        "--mirror",
        help="base URL laid out as REPO/COMMIT/PATH (default: $ENTROROUTER_DATA_MIRROR, else GitHub raw files)",
    )
    down.set_defaults(handler=cmd_download)

    imp = sub.add_parser("import", help="turn a dataset or a table file into a Parquet outcome table")
    imp.add_argument(
        "source",
        help="a dataset name (mmlu_pro, routerbench_subset, routellm_2model, demo) or a file",
    )
    imp.add_argument("--out", required=True, type=Path, help="output table (.parquet, .csv or .jsonl)")
    imp.add_argument("--data-dir", help=DATA_DIR_HELP)
    imp.set_defaults(handler=cmd_import)

    ins = sub.add_parser("inspect", help="per-model accuracy and cost, strongest, cheapest, oracle, random")
    ins.add_argument("table", help="an outcome table file or a dataset name")
    ins.add_argument("--split", help="only this split (e.g. train, test)")
    ins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ins.add_argument("--data-dir", help=DATA_DIR_HELP)
    ins.set_defaults(handler=cmd_inspect)

    val = sub.add_parser(
        "validate", help="check a table file; list every problem (file, row, column) in row order, exit 2 if any"
    )
    val.add_argument("table", type=Path, help="the outcome table file (.parquet, .csv or .jsonl)")
    val.add_argument(
        "--max-problems",
        type=int,
        default=MAX_PROBLEMS,
        help=f"list at most this many problems (default {MAX_PROBLEMS}); the total is always counted",
    )
    val.set_defaults(handler=cmd_validate)


def cmd_download(args: argparse.Namespace) -> int:
    from entrorouter.data.datasets import ALIASES, DATA_DIR_ENV, user_data_dir
    from entrorouter.data.download import install, load_sources

    sources = load_sources()
    name = ALIASES.get(args.name, args.name)
    if name not in sources:
        raise EntroRouterError(f"no public dataset named {args.name!r} (known: {', '.join(sources)})")
    root = args.out or Path(os.environ.get(DATA_DIR_ENV) or user_data_dir())
    source = sources[name]
    how = f"importing {args.from_dir}" if args.from_dir else f"downloading {len(source.files)} files"
    print(f"{name} (pinned to {source.repo}@{source.commit[:12]}): {how}", file=sys.stderr)
    folder = install(source, root, from_dir=args.from_dir, mirror=args.mirror)
    print(f"{name} is in {folder} (license: {source.license}); use it by name, e.g. entrorouter data inspect {name}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from entrorouter.data.datasets import load_source
    from entrorouter.data.io import check_output_location, table_format, write_table

    table_format(args.out)  # fail on a bad extension or place before doing any work
    check_output_location(args.out, "--out", inputs=[args.source])
    table = load_source(args.source, data_dir_path=args.data_dir)
    write_table(table, args.out)
    print(
        f"wrote {args.out}: {table.n_queries} queries x {table.n_models} models, "
        f"{table.observed.mean():.1%} of outcomes observed"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from entrorouter.data.io import table_problems

    if args.max_problems < 1:
        raise EntroRouterError(f"--max-problems: expected an integer >= 1, got {args.max_problems}")
    table, problems = table_problems(args.table)
    if problems:
        for problem in problems[: args.max_problems]:
            print(f"entrorouter: error: {problem}", file=sys.stderr)
        shown = "" if len(problems) <= args.max_problems else f" (the first {args.max_problems} listed)"
        print(f"{args.table}: {len(problems)} problem(s){shown}", file=sys.stderr)
        return 2
    assert table is not None
    splits = "" if table.splits is None else f", splits {sorted(set(table.splits) - {None})}"
    print(
        f"OK {args.table}: {table.n_queries} queries x {table.n_models} models, "
        f"{table.observed.mean():.1%} of outcomes observed{splits}"
    )
    unseen = table.unobserved_models()
    if unseen:  # a valid file, but no router can be trained on it as it is
        print(f"warning: model(s) {unseen} have no outcome at all; train refuses such a table", file=sys.stderr)
    return 0


def table_summary(table) -> dict:
    """Per-model stats and the reference routers, as plain data."""
    from entrorouter.evaluation.metrics import reference

    ref = reference(table)
    stats = table.model_stats()
    return {
        "name": table.name,
        "n_queries": table.n_queries,
        "n_models": table.n_models,
        "observed": float(table.observed.mean()),
        "models": {m: {k: float(v) for k, v in row.items()} for m, row in stats.iterrows()},
        "strongest": {
            "model": ref.strongest,
            "accuracy": ref.strongest_accuracy,
            "cost": ref.strongest_cost,
        },
        "cheapest": {
            "model": ref.cheapest,
            "accuracy": ref.cheapest_accuracy,
            "cost": ref.cheapest_cost,
        },
        "oracle": {"accuracy": ref.oracle_accuracy, "cost": ref.oracle_cost},
        "random": {"accuracy": ref.random_accuracy, "cost": ref.random_cost},
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from entrorouter.data.datasets import load_source

    table = load_source(args.table, data_dir_path=args.data_dir)
    if args.split:
        if table.splits is None or args.split not in set(table.splits):
            raise EntroRouterError(f"{args.table}: no split named {args.split!r}")
        table = table.split(args.split)
    summary = table_summary(table)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    console = Console()
    view = Table(
        title=f"{table.name}: {table.n_queries} queries x {table.n_models} models ({summary['observed']:.1%} observed)"
    )
    for column in ("model", "accuracy", "mean cost (US$)", "coverage"):
        view.add_column(column, justify="left" if column == "model" else "right")
    for model, row in sorted(summary["models"].items(), key=lambda kv: -kv[1]["accuracy"]):
        view.add_row(model, f"{row['accuracy']:.3f}", f"{row['mean_cost']:.3g}", f"{row['coverage']:.1%}")
    console.print(view)
    for label in ("strongest", "cheapest"):
        point = summary[label]
        console.print(f"{label:>9}: {point['model']}  accuracy {point['accuracy']:.3f}  cost {point['cost']:.3g}")
    for label in ("oracle", "random"):
        point = summary[label]
        console.print(f"{label:>9}: accuracy {point['accuracy']:.3f}  cost {point['cost']:.3g}")
    return 0
