"""The README's two set-up commands are the ones CI and users run."""

from __future__ import annotations

import re

from safealign.cli import CONF_DIR as CONF

REPO = CONF.parent


def quickstart_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_exactly_two_setup_commands():
    run, test = quickstart_commands()
    assert run.startswith("pip install torch==2.13.0 && ") and run.endswith("python recipes/dpo.py")
    assert test.startswith("pip install torch==2.13.0 && ") and "pytest" in test


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci


def test_every_config_group_is_documented():
    docs = (CONF / "README.md").read_text()
    for group in sorted(p for p in CONF.iterdir() if p.is_dir()):
        assert f"## `{group.name}`" in docs, group.name
        for option in group.glob("*.yaml"):
            assert f"`{option.stem}`" in docs, f"{group.name}/{option.name}"
