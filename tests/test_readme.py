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


def test_the_constraints_pin_every_dependency_within_what_pyproject_allows() -> None:
    """constraints.txt (what the README's commands install) names one version of each dependency,
    extras included, and each version is one pyproject.toml accepts."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            assert canonicalize_name(name) not in pins, f"{name} pinned twice"
            pins[canonicalize_name(name)] = version
    for requirement in wanted:
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement.name}=={version}"
    assert "-c constraints.txt" in readme_commands()[0] and "-c constraints.txt" in readme_commands()[1]
