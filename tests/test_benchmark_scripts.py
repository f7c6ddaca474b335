"""Every benchmark script still starts: its imports from the project and from its sibling
scripts resolve, and it answers --help (a renamed helper once broke bench_deploy.py unseen)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO

SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_the_script_answers_help(script) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
