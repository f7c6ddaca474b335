"""`entrorouter train | evaluate | quickstart`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entrorouter.batch.engines import ENGINES
from entrorouter.data.cli import DATA_DIR_HELP
from entrorouter.errors import EntroRouterError
from entrorouter.router.cli import knob_arguments, load_router, resolve_lam

if TYPE_CHECKING:
    from entrorouter import Router
    from entrorouter.data.table import OutcomeTable


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train an EntroRouter on an outcome table")
    train.add_argument(
        "--data",
        required=True,
        help="outcome table (CSV/JSONL/Parquet, long or wide) or dataset name",
    )
    train.add_argument("--out", required=True, type=Path, help="router directory to write")
    train.add_argument(
        "--lam", type=float, help="default trade-off λ (default: the cheapest λ certified for the target retention)"
    )
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--config", type=Path, help="JSON/YAML file of TrainConfig fields")
    _encoder_argument(train)
    train.add_argument("--engine", choices=ENGINES, default="local", help="where to embed the table (default local)")
    train.add_argument("--ray-address", help="with --engine ray: join this Ray cluster (default: a local Ray)")
    _split_argument(train, "train")
    _data_dir_argument(train)
    train.set_defaults(handler=cmd_train)

    evaluate = subparsers.add_parser("evaluate", help="accuracy, cost and retention of a router on a table")
    evaluate.add_argument("--router", required=True, type=Path, help="router directory")
    evaluate.add_argument("--data", required=True, help="outcome table or dataset name")
    evaluate.add_argument("--json", type=Path, dest="json_out", help="also write the results as JSON here")
    knob_arguments(evaluate)
    _split_argument(evaluate, "test")
    _data_dir_argument(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    quick = subparsers.add_parser(
        "quickstart",
        help="train on a table (or the simulated demo pool) and print the headline table",
    )
    quick.add_argument("--data", help="outcome table or dataset name (default: the simulated demo pool)")
    quick.add_argument(
        "--out",
        type=Path,
        help="where to save the router (default: runs/quickstart for the demo pool, runs/quickstart-<DATA> "
        "otherwise, so each dataset keeps its own router)",
    )
    quick.add_argument("--force", action="store_true", help="replace what an existing --out folder holds")
    _encoder_argument(quick)
    quick.add_argument("--seed", type=int, default=0, help="random seed of training and of the demo pool (default 0)")
    _data_dir_argument(quick)
    quick.set_defaults(handler=cmd_quickstart)


def _split_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--split",
        default="auto",
        help=f"rows to use: a split name, 'all', or 'auto' (= '{default}' when the table has that split, else all)",
    )


def _data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)


def _encoder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder",
        help="query encoder: minilm (default), minilm-full, minilm-onnx, minilm-static, minilm-ft, hashed-tfidf "
        "or st:<folder>",
    )


def check_arguments(config: Any, out: Path) -> None:
    """Everything about the arguments that can fail, checked before any work is announced."""
    from entrorouter.data.io import check_output_location
    from entrorouter.features.encoders import make_encoder

    if out.exists() and not out.is_dir():
        raise EntroRouterError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not _is_router_folder(out):
        raise EntroRouterError(
            f"--out {out} holds files that are not a saved router; training writes config.json and its weights "
            "there: choose a new or empty folder (a router's folder is replaced)"
        )
    check_output_location(out / "config.json", "--out")
    encoder = make_encoder(config.encoder)  # an unknown name fails here
    folder = getattr(encoder, "path", None)
    if isinstance(folder, Path) and not folder.is_dir():
        raise EntroRouterError(f"--encoder {config.encoder}: no such folder {folder}")


def _is_router_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a saved router (whose files a new training run may replace)."""
    from entrorouter.router.model import CONFIG_FILE, FORMAT

    try:
        return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def command_prefix() -> str:
    """How to run `entrorouter` again, as this process was run (so a printed hint works when pasted)."""
    import shlex
    import shutil

    program = Path(sys.argv[0])
    if program.name == "entrorouter":
        on_path = shutil.which("entrorouter")
        if on_path and Path(on_path).resolve() == program.resolve():
            return "entrorouter"
        return shlex.quote(str(program))
    return f"{shlex.quote(sys.executable)} -m entrorouter.cli"


def select_split(table: OutcomeTable, split: str, default: str) -> OutcomeTable:
    """Apply ``--split``: 'all', a split name, or 'auto' (``default`` if present, else all rows)."""
    names = set() if table.splits is None else set(table.splits) - {None}
    if split == "all" or (split == "auto" and default not in names):
        return table
    name = default if split == "auto" else split
    if name not in names:
        raise EntroRouterError(f"table {table.name!r} has no split {name!r} (splits: {sorted(names) or 'none'})")
    return table.split(name)


def _train_config(args: argparse.Namespace):
    from entrorouter.router.config import TrainConfig

    config = TrainConfig.load(args.config) if getattr(args, "config", None) else TrainConfig()
    overrides: dict[str, Any] = {}
    for field in ("lam", "seed", "encoder"):
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = value
    return TrainConfig.from_dict({**config.to_dict(), **overrides}, source="command line")


def cmd_train(args: argparse.Namespace) -> int:
    from entrorouter import Router
    from entrorouter.data.datasets import load_source

    config = _train_config(args)
    check_arguments(config, args.out)
    table = select_split(load_source(args.data, data_dir_path=args.data_dir), args.split, "train")
    print(f"training on {table.name}: {table.n_queries} queries x {table.n_models} models (encoder {config.encoder})")
    started = time.perf_counter()
    features = None
    if args.engine != "local":
        from entrorouter.features.distributed import embed_texts
        from entrorouter.features.encoders import make_encoder

        texts = [str(q) for q in table.queries]
        encoder = make_encoder(config.encoder).fit(texts)  # what fit() builds: the same vectors
        features = embed_texts(encoder, texts, engine=args.engine, ray_address=args.ray_address)
    router = Router(config).fit(table, features=features, progress=True)
    router.save(args.out)
    best = max(
        (r["val_reward"] for r in router.training_log if r.get("event") == "validation"),
        default=float("nan"),
    )
    print(
        f"saved router to {args.out} in {time.perf_counter() - started:.1f}s: default λ {router.lam:.4g}, "
        f"best validation reward {best:.4f}; log in {args.out / 'training_log.jsonl'}"
    )
    _print_calibration(router)
    return 0


def _print_calibration(router: Router) -> None:
    """What the calibration curve says about the default λ, and warnings a user should see."""
    calibration = router.calibration
    if calibration is None or router.config.lam is not None:  # a λ given by hand: nothing was chosen
        return
    target = router.config.target_retention
    if router.config.lam is None and not router.trained_on.get("target_reached", True):
        print(
            f"warning: no λ is certified to keep {target:.1%} of the strongest model "
            f"(the highest reachable is {calibration.max_target():.2%}); the default λ is the most accurate one",
            file=sys.stderr,
        )
        return
    index = calibration.index_for(target)
    lower = calibration.retention_lower()[index]
    print(
        f"calibration ({router.config.calibration_folds}-fold, {calibration.n} queries, out of fold): at λ "
        f"{calibration.lams[index]:.4g} (deployed as λ {router.lam:.4g}, the same spend) retention "
        f"{calibration.retention[index]:.2%} (≥ {lower:.2%} with "
        f"{1 - calibration.delta:.0%} confidence), cost reduction {calibration.cost_reduction[index]:.1%}"
    )
    if calibration.retention[index] - lower > 0.01:
        print(
            f"warning: with {calibration.n} training queries the retention of a λ is known only to about "
            f"±{calibration.retention[index] - lower:.1%}; the chosen λ is conservative. More outcomes "
            "give a cheaper certified point.",
            file=sys.stderr,
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from entrorouter.data.atomic import write_text_atomic
    from entrorouter.data.datasets import load_source
    from entrorouter.data.io import check_output_location

    if args.json_out:
        check_output_location(args.json_out, "--json", inputs=[args.data])
    router = load_router(args.router, cache=True)
    table = select_split(load_source(args.data, data_dir_path=args.data_dir), args.split, "test")
    lam = resolve_lam(router, args)
    result = router.evaluate(table, lam=lam) | {"target_retention": args.target_retention}
    if result["trained_on_share"] > 0:
        print(
            f"warning: {result['trained_on_share']:.0%} of these queries were training queries of this router; "
            "results on them are optimistic (use the table's test split, or --split)",
            file=sys.stderr,
        )
    _print_headline(result, title=f"{table.name}: {result['n_queries']} queries, λ = {result['lam']:.4g}")
    if args.json_out:
        write_text_atomic(args.json_out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 0


def quickstart_out(args: argparse.Namespace) -> Path:
    """Where quickstart saves its router: ``--out``, else a folder of the dataset's own."""
    from entrorouter.data.datasets import dataset_name

    if args.out is not None:
        if args.out.is_dir() and any(args.out.iterdir()) and not args.force:
            raise EntroRouterError(
                f"--out {args.out} already holds files (perhaps a router for another pool); "
                "pass --force to replace them, or choose another folder"
            )
        return args.out
    if args.data is None:
        return Path("runs/quickstart")
    name = dataset_name(args.data) or Path(args.data).stem
    return Path(f"runs/quickstart-{name}")


def cmd_quickstart(args: argparse.Namespace) -> int:
    from entrorouter import Router
    from entrorouter.data.datasets import load_source
    from entrorouter.data.demo import make_demo_table
    from entrorouter.router.config import TrainConfig

    config = TrainConfig(seed=args.seed, **({"encoder": args.encoder} if args.encoder else {}))
    out = quickstart_out(args)
    check_arguments(config, out)
    if args.data is None:
        table = make_demo_table(seed=args.seed)
        print(
            "No --data given: using the SIMULATED demo pool (8 fictional models, 6 domains, public "
            "2024 price tiers; see entrorouter/data/demo.py). These numbers are not measurements.\n"
            "Run on real data with: entrorouter quickstart --data TABLE (or a dataset name such as "
            "routerbench_subset, after `entrorouter data download routerbench_subset`)."
        )
    else:
        table = load_source(args.data, data_dir_path=args.data_dir)
    train, test = _train_test(table)
    print(
        f"training EntroRouter on {train.n_queries} queries x {train.n_models} models "
        f"(encoder {config.encoder}, seed {config.seed}); testing on {test.n_queries} held-out queries"
    )
    router = Router(config).fit(train, progress=True)
    router.save(out)
    result = router.evaluate(test)
    _print_headline(
        result, title=f"{table.name} — test split, λ = {router.lam:.4g} (deployed for the point certified on train)"
    )
    _print_calibration(router)
    target = config.target_retention
    retained = _ratio(result["accuracy"], result["strongest_accuracy"])
    if retained is None:
        outcome = "not defined: the strongest model answers none of the test queries"
    else:
        outcome = f"it keeps {retained:.1%}: {'met' if retained >= target else 'NOT met'}"
    print(
        f"target: keep {target:.1%} of the strongest model's accuracy (the paper's bar) at the λ certified on "
        f"cross-fitted training folds; on the test split {outcome}"
    )
    print(f'router saved to {out}; try: {command_prefix()} route --router {out} "your question"')
    return 0


def _train_test(table: OutcomeTable) -> tuple[OutcomeTable, OutcomeTable]:
    """The table's own train/test split, or every fifth query as test when it has none."""
    import numpy as np

    names = set() if table.splits is None else set(table.splits)
    if {"train", "test"} <= names:
        return table.split("train"), table.split("test")
    test = np.arange(table.n_queries) % 5 == 0
    return table.subset(~test), table.subset(test)


HEADLINE_LEGEND = (
    "retained = accuracy / strongest model's accuracy; cost reduction = 1 - cost / strongest model's cost "
    "(n/a where that is 0); oracle = cheapest correct model per query (a bound)"
)


def _ratio(part: float, whole: float) -> float | None:
    """``part / whole``; None (not defined) when ``whole`` is 0."""
    return part / whole if whole else None


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _print_headline(result: dict[str, Any], *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(title=title)
    for column in ("router", "accuracy", "cost / query (US$)", "retained", "cost reduction"):
        view.add_column(column, justify="left" if column == "router" else "right")
    s_acc, s_cost = result["strongest_accuracy"], result["strongest_cost"]

    def row(name: str, acc: float, cost: float) -> None:
        share = _ratio(cost, s_cost)
        reduction = None if share is None else 1 - share
        view.add_row(name, f"{acc:.3f}", f"{cost:.3g}", _percent(_ratio(acc, s_acc)), _percent(reduction))

    row("EntroRouter", result["accuracy"], result["cost"])
    row(f"strongest: {result['strongest_model']}", s_acc, s_cost)
    row(
        f"cheapest: {result['cheapest_model']}",
        result["cheapest_accuracy"],
        result["cheapest_cost"],
    )
    row("random", result["random_accuracy"], result["random_cost"])
    row("oracle (cheapest correct)", result["oracle_accuracy"], result["oracle_cost"])
    # Pipes and CI logs get a wide console, so rows are never wrapped mid-name.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(view)
    console.print(HEADLINE_LEGEND, highlight=False, soft_wrap=True)
    usage = sorted(result["usage"].items(), key=lambda kv: -kv[1])
    console.print("usage: " + ", ".join(f"{m} {u:.0%}" for m, u in usage if u >= 0.005))
