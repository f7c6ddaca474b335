"""How many torch threads a command uses.

Measured (``benchmarks/bench_threads.py``, ``benchmarks/results/threads.md``): on an idle
2-core machine two threads embed faster than one, but on one shared with other work two
threads per process were many times slower than one, because each op waits for the
thread that lost its core. So the default is the number of idle cores (cores minus the
1-minute load average, rounded), at least one and at most every core; on a busy machine
that is one thread. ``ENTROROUTER_THREADS`` overrides it.
"""

from __future__ import annotations

import os
import sys

from entrorouter.errors import EntroRouterError

THREADS_ENV = "ENTROROUTER_THREADS"


def default_threads(cores: int, load_average: float) -> int:
    """The idle cores of a machine with ``cores`` cores at this 1-minute load, in [1, cores]."""
    return max(1, min(cores, int(cores - load_average + 0.5)))


def chosen_threads() -> int:
    """``ENTROROUTER_THREADS`` when set, else :func:`default_threads` for this machine now."""
    value = os.environ.get(THREADS_ENV)
    if value:
        if not value.isdigit() or int(value) < 1:
            raise EntroRouterError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return int(value)
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform: assume a shared machine
        return 1
    return default_threads(usable_cores(), load)


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def apply_threads() -> int:
    """Make torch use :func:`chosen_threads` threads, without importing torch; return the count.

    Set through ``OMP_NUM_THREADS``, which torch reads when it is imported (so a command
    that never needs torch does not pay for loading it) and which worker processes inherit.
    An ``OMP_NUM_THREADS`` the user set is kept unless ``ENTROROUTER_THREADS`` is set too.
    """
    if os.environ.get("OMP_NUM_THREADS") and not os.environ.get(THREADS_ENV):
        return int(os.environ["OMP_NUM_THREADS"]) if os.environ["OMP_NUM_THREADS"].isdigit() else 1
    threads = chosen_threads()
    _set_torch_threads(threads)
    return threads


def limit_threads(threads: int) -> None:
    """Use ``threads`` threads in this process from now on, in every pool: torch's (now if it
    is loaded, else when it is imported), and NumPy's BLAS, which routing runs on (for worker
    processes that each get a share of the cores)."""
    from threadpoolctl import threadpool_limits

    _set_torch_threads(threads)
    threadpool_limits(threads)


def _set_torch_threads(threads: int) -> None:
    """``OMP_NUM_THREADS`` for a torch imported later (and for child processes), and torch
    itself when a caller inside Python has imported it already."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def current_threads() -> int:
    """The threads torch uses, or would use once loaded (``OMP_NUM_THREADS``, as
    :func:`apply_threads` sets it, else :func:`chosen_threads`): for libraries with thread
    pools of their own (ONNX Runtime), so that one setting holds for every encoder, and
    without importing torch for it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else chosen_threads()
