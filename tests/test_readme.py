"""The README's commands are the ones CI runs."""

from __future__ import annotations

import re

from .conftest import REPO


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks]


def test_ci_runs_the_readme_test_command() -> None:
    setup_and_run, setup_and_test = readme_commands()[:2]
    assert setup_and_run.endswith("entrorouter quickstart")
    assert "pytest" in setup_and_test and "../shared/data" in setup_and_test
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert setup_and_test in ci_lines
