"""`collect` as a Python call: validate everything, check the backends, run, write the table.

Nothing is created before the inputs are valid and every backend answered: a bad query
file, pool.yaml, grader, an output location that cannot take the table, or an unreachable
backend raises an :class:`~entrorouter.errors.EntroRouterError`, sends nothing and leaves no
file behind. A file at the output that this command did not write (it has no progress
store beside it) is never overwritten without ``force``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from entrorouter.backends import require_api_key
from entrorouter.collection.config import CollectConfig, load_config
from entrorouter.collection.engine import Collector, NoProgress, Plan, RunCounts, check_backends
from entrorouter.collection.graders import Grader, Judge, grader_class, make_graders
from entrorouter.collection.output import TableReport, remove_stale_temporaries, write_outcome_table
from entrorouter.collection.progress import ProgressDisplay
from entrorouter.collection.queries import Query, load_queries
from entrorouter.collection.store import ProgressStore, store_path_for
from entrorouter.data.io import check_output_location, table_format
from entrorouter.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console


class CollectInterrupted(Exception):
    """The run was stopped (Ctrl-C, SIGTERM); finished pairs are safe in the store."""


@dataclass
class CollectResult:
    """What a run did and what the table holds."""

    out: Path
    store: Path
    total_pairs: int
    already_done: int
    counts: RunCounts
    table: TableReport
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every (query, model) pair has a score."""
        return self.table.path is not None and self.table.errors == 0


def collect(
    queries: str | os.PathLike[str],
    config: str | os.PathLike[str] | CollectConfig,
    out: str | os.PathLike[str],
    *,
    concurrency: int | None = None,
    grader: str | None = None,
    console: Console | None = None,
    force: bool = False,
) -> CollectResult:
    """Send every missing (query, model) pair, grade it, and write the outcome table.

    ``grader`` (the CLI's ``--grader``) grades the queries that name no grader; it wins
    over pool.yaml's ``grader``. With a ``console``, warnings and a progress bar go to it.
    ``force`` lets it replace an output file it did not write.
    Raises :class:`CollectInterrupted` when stopped by a signal.
    """
    out = Path(out)
    table_format(out)  # a bad extension fails now, not after an hour of calls
    check_output(out, force=force)
    cfg = config if isinstance(config, CollectConfig) else load_config(config)
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"--concurrency: expected an integer >= 1, got {concurrency}")
    default_grader = _default_grader(grader, cfg)
    query_list = load_queries(queries, default_grader)
    graders = make_graders({q.grader for q in query_list}, cfg.grader_options, cfg.source, retry=cfg.retry)
    for i, backend in enumerate(cfg.backends):
        require_api_key(backend, f"{cfg.source}: backends[{i}] ({backend.name})")
    for grader in graders.values():
        if isinstance(grader, Judge) and grader.backend is not None:
            require_api_key(grader.backend, f"{cfg.source}: graders.judge.backend")
    try:
        return asyncio.run(_run(query_list, cfg, graders, out, concurrency or cfg.concurrency, console, str(queries)))
    except (KeyboardInterrupt, asyncio.CancelledError):  # stopped before the store was open
        raise CollectInterrupted(_interrupted_message(out)) from None


def check_output(out: Path, *, force: bool) -> None:
    """Refuse, before any call, an output the table cannot be written to or must not replace."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; expected a table file path")
    check_output_location(out, "--out")
    if out.exists() and not store_path_for(out).exists() and not force:
        raise ConfigError(
            f"--out {out}: a file this command did not write is there; pass --force to replace it, "
            "or choose another path"
        )


def _default_grader(flag: str | None, cfg: CollectConfig) -> str | None:
    for name, where in ((flag, "--grader"), (cfg.grader, f"{cfg.source}: grader")):
        if name is not None:
            try:
                grader_class(name)
            except KeyError as exc:
                raise ConfigError(f"{where}: {exc.args[0]}") from None
            return name
    return None


async def _run(
    queries: list[Query],
    cfg: CollectConfig,
    graders: dict[str, Grader],
    out: Path,
    concurrency: int,
    console: Console | None,
    source: str,
) -> CollectResult:
    task = asyncio.current_task()
    if task is not None and threading.current_thread() is threading.main_thread():
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # like Ctrl-C
    judges = [g.backend for g in graders.values() if isinstance(g, Judge) and g.backend is not None]
    warnings = await check_backends([*cfg.backends, *judges], cfg.source)
    if console is not None:
        for warning in warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    store_path = store_path_for(out)
    with ProgressStore(store_path) as store:
        remove_stale_temporaries(out)  # left by a run killed while writing the table
        plan = Plan(queries, cfg.backends, graders, cfg.request, store)
        planned = plan.count()
        if console is not None:
            console.print(
                f"{planned.total} pairs: {planned.done} already done, {planned.to_send} to send, "
                f"{planned.to_grade} to grade again (progress: {store_path})",
                highlight=False,
            )
        totals = {name: n for name, n in planned.per_backend.items() if n}
        display = nullcontext(NoProgress()) if console is None else ProgressDisplay(totals, console)
        try:
            with display as progress:
                collector = Collector(store, graders, cfg.request, concurrency, progress, cfg.retry)
                counts = await collector.run(plan, planned)
        except asyncio.CancelledError:
            raise CollectInterrupted(_interrupted_message(out, len(store))) from None
        table = write_outcome_table(store, queries, cfg.backends, out, _table_meta(cfg, source))
    return CollectResult(out, store_path, planned.total, planned.done, counts, table, warnings)


def _interrupted_message(out: Path, recorded: int | None = None) -> str:
    saved = "finished pairs are saved" if recorded is None else f"{recorded} pairs are recorded"
    return f"interrupted: {saved} in {store_path_for(out)}; run the same command again to continue"


def _table_meta(cfg: CollectConfig, queries: str) -> dict[str, object]:
    """Parquet metadata: how the table was made (prices, request fields; never keys)."""
    return {
        "source": "entrorouter collect",
        "queries": queries,
        "cost": "per call: usage tokens x the pool.yaml price (US$ per 1M tokens) at the time of writing",
        "prices": {b.name: {"model": b.model, "input": b.input_price, "output": b.output_price} for b in cfg.backends},
        "request": cfg.request,
    }
