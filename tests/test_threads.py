"""Torch threads: the idle cores by default, ENTROROUTER_THREADS when set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from entrorouter.threads import chosen_threads, default_threads


@pytest.mark.parametrize(
    ("cores", "load", "threads"),
    [(2, 0.2, 2), (2, 0.8, 1), (2, 11.7, 1), (16, 4.0, 12), (16, 0.0, 16), (1, 0.0, 1)],
)
def test_default_is_the_idle_cores(cores: int, load: float, threads: int) -> None:
    assert default_threads(cores, load) == threads


def test_the_environment_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTROROUTER_THREADS", "3")
    assert chosen_threads() == 3


def test_torch_in_a_command_uses_the_chosen_count() -> None:
    code = (
        "import os, sys; from entrorouter.threads import apply_threads; n = apply_threads(); "
        "import torch; sys.exit(0 if torch.get_num_threads() == n == 1 else 1)"
    )
    env = {"ENTROROUTER_THREADS": "1", "PATH": "/usr/bin:/bin"}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0


def test_a_bad_value_is_a_one_line_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "entrorouter.cli", "data", "inspect", "demo"],
        env={"ENTROROUTER_THREADS": "two", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "entrorouter: error: ENTROROUTER_THREADS must be a positive integer, got 'two'"


def test_libraries_with_their_own_pools_get_the_same_count_without_importing_torch() -> None:
    """ONNX Runtime's thread count follows the one setting, and asking loads no torch."""
    code = (
        "import os, sys; os.environ['OMP_NUM_THREADS'] = '3'; from entrorouter.threads import current_threads; "
        "n = current_threads(); loaded = 'torch' in sys.modules; import torch; torch.set_num_threads(2); "
        "sys.exit(0 if (n, loaded, current_threads()) == (3, False, 2) else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_a_worker_process_can_limit_every_pool() -> None:
    """Router workers and resplit jobs: torch's threads and NumPy's BLAS, both capped."""
    code = (
        "import sys, numpy, torch; from threadpoolctl import threadpool_info; "
        "from entrorouter.threads import limit_threads; limit_threads(1); "
        "blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']; "
        "sys.exit(0 if torch.get_num_threads() == 1 and blas and set(blas) == {1} else 1)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0
