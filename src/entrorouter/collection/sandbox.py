"""Run model-written Python against unit tests in a child process with limits.

The child is a fresh ``python -I -B`` (isolated: no user site, no PYTHON* variables, no
script directory on ``sys.path``) started in a new temporary directory, with an empty
environment (API keys never reach generated code), stdin closed and output to a file.
Before the program runs it sets resource limits (address space, CPU seconds, file size,
open files, no core dumps) and installs an audit hook that refuses sockets, process
creation (subprocess, fork, exec, spawn, os.system), signals to other processes and
ctypes. The parent kills the whole process group at the wall-clock limit.

This guards against accidents — a test that hangs, eats memory or calls the network —
not against code written to escape: run untrusted code inside a container or VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

OUTPUT_LIMIT_BYTES = 1 << 20  # the child may write this much (stdout, files) before SIGXFSZ

_RUNNER = r"""
import resource, sys

def _limit(kind, value):
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass  # a platform without this limit, or a hard limit already lower

memory_bytes, cpu_seconds, output_bytes = (int(arg) for arg in sys.argv[1:4])
_limit(resource.RLIMIT_AS, memory_bytes)
_limit(resource.RLIMIT_CPU, cpu_seconds)
_limit(resource.RLIMIT_FSIZE, output_bytes)
_limit(resource.RLIMIT_NOFILE, 64)
_limit(resource.RLIMIT_CORE, 0)

_BLOCKED_PREFIXES = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn",
                     "os.fork", "os.system", "os.kill", "os.killpg", "pty.", "ctypes.")

def _guard(event, args):
    if event.startswith(_BLOCKED_PREFIXES):
        raise PermissionError(f"not allowed in the code grader's sandbox: {event}")

import runpy  # before the hook: importing is fine, but keep the guarded part minimal

sys.addaudithook(_guard)
sys.argv = ["program.py"]  # what the program sees (unittest.main() parses it)
runpy.run_path("program.py", run_name="__main__")  # a real __main__, as unittest.main() expects
"""


@dataclass(frozen=True)
class SandboxResult:
    """How a program ended: ``passed`` means exit status 0 within the limits."""

    passed: bool
    returncode: int | None
    timed_out: bool
    output: str  # the last 2,000 characters of stdout + stderr


async def run_python(program: str, *, timeout_s: float, memory_mb: int) -> SandboxResult:
    """Run ``program`` (solution and tests in one file) in a limited child process."""
    with tempfile.TemporaryDirectory(prefix="entrorouter-code-") as workdir:
        work = Path(workdir)
        (work / "runner.py").write_text(_RUNNER, encoding="utf-8")
        (work / "program.py").write_text(program, encoding="utf-8")
        limits = [str(memory_mb * 1024 * 1024), str(max(1, math.ceil(timeout_s))), str(OUTPUT_LIMIT_BYTES)]
        with (work / "output.txt").open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-B",
                "runner.py",
                *limits,
                cwd=work,
                env={"PATH": os.defpath, "LANG": "C.UTF-8"},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a kill reaches every child
            )
            timed_out = False
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                timed_out = True
            finally:
                if process.returncode is None:  # timed out, or our run was cancelled
                    _kill_group(process.pid)
                    await asyncio.shield(process.wait())
        text = (work / "output.txt").read_bytes()[-2000:].decode("utf-8", errors="replace")
    return SandboxResult(process.returncode == 0 and not timed_out, process.returncode, timed_out, text)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(pid, signal.SIGKILL)
