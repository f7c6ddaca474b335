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


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('{"anchor_temperature": -1}', "config field 'anchor_temperature': expected a number > 0, got -1"),
        (
            '{"anchor_temperature_end": 0}',
            "config field 'anchor_temperature_end': expected None or a number > 0, got 0",
        ),
        ('{"policy_seeds": 1}', "set 'policy_seeds' with --policy-seeds, not here"),
        ('{"anchor_temp": 0.05}', "unknown field(s) ['anchor_temp']"),
        ("anchor_temperature=0.05", "expected a JSON object of TrainConfig fields, got 'anchor_temperature=0.05'"),
    ],
)
def test_a_bad_training_setting_is_refused_before_any_fit(setting: str, message: str) -> None:
    script = REPO / "benchmarks" / "bench_encoder_quality.py"
    done = subprocess.run(
        [sys.executable, str(script), "--train-settings", "{}", setting, "--datasets", "no_such_dataset"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
