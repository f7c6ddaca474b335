"""Where batch work runs: in this process (``local``) or on Ray actors (``ray``).

Both engines take a *worker factory* — a picklable callable that builds the object doing
the work (a loaded router, an encoder) — and a stream of ``(key, payload)`` items, and
yield ``(key, result)`` pairs. The local engine builds one worker and calls it in order.
The Ray engine builds one worker per actor, once, in the actor's ``__init__`` (so a
router is loaded once per actor, not per batch), keeps at most ``2 × workers`` items in
flight (the driver's memory stays bounded whatever the input size) and yields results as
they finish. Results are keyed, so callers never depend on completion order; the same
worker code runs on both engines, which is why their outputs are identical.

We use Ray's actors (Ray Core) rather than a Ray Data pipeline: the driver must read the
input itself to number rows, report bad ones and skip chunks finished before a kill, and
Ray Data's readers neither number rows nor resume.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from entrorouter.errors import EntroRouterError

ENGINES = ("local", "ray")
Key = TypeVar("Key")
WorkerFactory = Callable[[], Callable[[Any], Any]]


def run_local(make_worker: WorkerFactory, items: Iterable[tuple[Key, Any]]) -> Iterator[tuple[Key, Any]]:
    """Build one worker here and feed it the items in order."""
    worker = make_worker()
    for key, payload in items:
        yield key, worker(payload)


def run_ray(
    make_worker: WorkerFactory,
    items: Iterable[tuple[Key, Any]],
    *,
    address: str | None = None,
    workers: int | None = None,
) -> Iterator[tuple[Key, Any]]:
    """One worker per Ray actor (``workers`` of them, one CPU each), results as they finish.

    ``address`` joins an existing cluster; without one a local Ray is started (or the one
    this process already runs is reused) and shut down again afterwards if we started it.
    """
    ray = import_ray()
    started_here = False
    if not ray.is_initialized():
        init: dict[str, Any] = {"address": address} if address else {"num_cpus": workers or os.cpu_count() or 1}
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **init)
        except ConnectionError as exc:
            raise EntroRouterError(f"--ray-address {address}: cannot join the Ray cluster ({exc})") from None
        started_here = True
    try:
        n_workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor_class = ray.remote(num_cpus=1)(_Actor)
        actors = [actor_class.remote(make_worker) for _ in range(n_workers)]
        yield from _pump(ray, actors, iter(items))
    finally:
        if started_here:
            ray.shutdown()


def _pump(ray: Any, actors: list[Any], items: Iterator[tuple[Key, Any]]) -> Iterator[tuple[Key, Any]]:
    """Keep every actor busy with up to two items (one running, one queued) and yield results."""
    pending: dict[Any, tuple[Key, Any]] = {}  # object ref -> (key, actor)
    idle = [actor for actor in actors for _ in range(2)]
    exhausted = False
    while True:
        while idle and not exhausted:
            item = next(items, None)
            if item is None:
                exhausted = True
                break
            actor = idle.pop()
            pending[actor.run.remote(item[1])] = (item[0], actor)
        if not pending:
            return
        (done,), _ = ray.wait(list(pending), num_returns=1)
        key, actor = pending.pop(done)
        idle.append(actor)
        try:
            result = ray.get(done)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, EntroRouterError) else None
            if cause is not None:
                raise cause from None
            raise
        yield key, result


class _Actor:
    """A Ray actor holding one worker, built once when the actor starts."""

    def __init__(self, make_worker: WorkerFactory) -> None:
        import torch

        torch.set_num_threads(1)  # one CPU per actor; more threads would fight each other
        self.worker = make_worker()

    def run(self, payload: Any) -> Any:
        return self.worker(payload)


def run_engine(
    engine: str,
    make_worker: WorkerFactory,
    items: Iterable[tuple[Key, Any]],
    *,
    ray_address: str | None = None,
    workers: int | None = None,
) -> Iterator[tuple[Key, Any]]:
    """Dispatch to :func:`run_local` or :func:`run_ray` by name."""
    if engine == "local":
        if ray_address:
            raise EntroRouterError("--ray-address needs --engine ray")
        return run_local(make_worker, items)
    if engine == "ray":
        return run_ray(make_worker, items, address=ray_address, workers=workers)
    raise EntroRouterError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise EntroRouterError("--engine ray needs Ray: pip install 'entrorouter[ray]' (or --engine local)") from None
    return ray
