"""Lint, types and layers are part of the suite: ruff (with a complexity limit), mypy --strict,
and import-linter's contract that the package's layers point one way (pyproject.toml,
docs/architecture.md): a module that imports from a layer above its own fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "ruff", "check", "khadem_nb", "tests", "bench"],
        [sys.executable, "-m", "mypy"],
        [sys.executable, "-c", LINT_IMPORTS],
    ],
    ids=["ruff", "mypy", "layers"],
)
def test_code_quality(command: list[str]) -> None:
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
