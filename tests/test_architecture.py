"""Where the pipeline's config may be named: the library's models take their own configs, the tasks the parts
they need (a model spec, the data source, the evaluation settings), so only the entry points see it whole."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Its definition, the flows (the CLI is one of them) and the tests.
ALLOWED = ("lookalike_models/config.py", "flows/", "tests/")


def python_sources() -> list[Path]:
    skip = {".venv", ".git", "build", "node_modules"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def test_the_nightly_config_is_named_only_by_the_flows_the_cli_and_its_definition():
    naming = re.compile(r"\bNightlyConfig\b")
    offenders = [
        str(path.relative_to(ROOT))
        for path in python_sources()
        if not str(path.relative_to(ROOT)).startswith(ALLOWED) and naming.search(path.read_text())
    ]
    assert not offenders, f"NightlyConfig named outside the entry points: {offenders}"
    assert naming.search((ROOT / "flows" / "nightly_refresh.py").read_text())  # the scan does see the flows
