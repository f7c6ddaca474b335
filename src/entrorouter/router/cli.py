"""`entrorouter route`: one query, or a file of them.

Kept apart from the training commands so that routing from the command line imports what
a saved router needs and nothing of training, evaluation or the baselines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from entrorouter.batch.cli import add_batch_arguments, cmd_route_batch
from entrorouter.errors import EntroRouterError

if TYPE_CHECKING:
    from entrorouter import Router


def register(subparsers: argparse._SubParsersAction) -> None:
    route = subparsers.add_parser("route", help="route one query, or a file of them (--batch)")
    route.add_argument("--router", required=True, type=Path, help="router directory")
    route.add_argument("query", nargs="?", help="the query text, quoted (or --batch FILE)")
    knob_arguments(route)
    route.add_argument(
        "--cost-weight",
        type=float,
        default=0.0,
        help="extra request-time cost penalty γ (default 0)",
    )
    route.add_argument("--json", action="store_true", help="print JSON")
    add_batch_arguments(route)
    route.set_defaults(handler=cmd_route)


def knob_arguments(parser: argparse.ArgumentParser) -> None:
    knob = parser.add_mutually_exclusive_group()
    knob.add_argument("--lam", type=float, help="trade-off λ (default: the router's)")
    knob.add_argument(
        "--target-retention",
        type=float,
        help="share of the strongest model's accuracy to keep, e.g. 0.98: the router's calibration curve "
        "turns it into the cheapest λ certified for it",
    )


def resolve_lam(router: Router, args: argparse.Namespace) -> float:
    """λ from --lam / --target-retention / the router's default, warning when beyond the trained range."""
    lam = router.lam_for(args.lam, args.target_retention)
    if lam > router.config.lam_max:
        print(
            f"warning: λ = {lam:.4g} is beyond the range the router was trained for "
            f"([0, {router.config.lam_max:.4g}]); its decisions there are extrapolated",
            file=sys.stderr,
        )
    return lam


def load_router(path: Path, *, cache: bool = False) -> Router:
    from entrorouter import Router
    from entrorouter.features.cache import EmbeddingCache

    router = Router.load(path)
    if cache:
        router.cache = EmbeddingCache()
    return router


def cmd_route(args: argparse.Namespace) -> int:
    router = load_router(args.router)
    lam = resolve_lam(router, args)
    if args.batch is not None:
        return cmd_route_batch(args, router, lam)
    if args.query is None or not args.query.strip():
        raise EntroRouterError("the query is empty (give a query, or --batch FILE)")
    result = router.route([args.query], lam=lam, cost_weight=args.cost_weight)[0]
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"model: {result.model}")
    print("ranking (fallback order):")
    for i, model in enumerate(result.ranking, 1):
        print(f"  {i:>2}. {model:<40} p = {result.probabilities[model]:.3f}")
    return 0
