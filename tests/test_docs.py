"""The documentation site: ``mkdocs build --strict`` (a broken link, a page left out of the
navigation or a docstring mkdocstrings cannot read fails it), the CLI reference made from the
commands' own help, and a docstring on every public name."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import khadem_nb

ROOT = Path(__file__).resolve().parent.parent


def test_every_public_name_and_its_public_methods_say_what_they_do() -> None:
    undocumented = []
    for name in khadem_nb.__all__:
        obj = getattr(khadem_nb, name)
        if name.startswith("__") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            undocumented.append(name)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, member in vars(obj).items():
                public = not attr.startswith("_") and inspect.isfunction(member)
                if public and not (member.__doc__ or "").strip():
                    undocumented.append(f"{name}.{attr}")
    assert undocumented == []


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    if shutil.which("mkdocs") is None and subprocess.run([sys.executable, "-m", "mkdocs", "--version"],
                                                         capture_output=True).returncode != 0:
        pytest.fail('mkdocs is missing: pip install -e ".[docs]" (the dev extra includes it)')
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    cli = (site / "cli" / "index.html").read_text()
    assert "khadem-nb worker" in cli and "--trust-code" in cli  # from the parser itself
    api = (site / "api" / "index.html").read_text()
    assert "dispatch_many" in api and "claim_turns" not in api  # public names, not internals
    assert (site / "tutorials" / "01-quick-start" / "index.html").exists()
