"""The public surface: a sorted, complete ``__all__``, typing marker, CLI help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import khadem_nb
from khadem_nb import errors


def test_all_is_sorted_and_complete() -> None:
    exported = khadem_nb.__all__
    assert exported == sorted(exported)
    public = {n for n, obj in vars(khadem_nb).items() if not n.startswith("_")
              and getattr(obj, "__module__", "").startswith("khadem_nb")}
    assert public <= set(exported)
    for name in exported:
        assert getattr(khadem_nb, name) is not None


def test_every_error_derives_from_the_root() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.KhademError)
        assert name in errors.__doc__  # drawn in the hierarchy


def test_package_is_typed() -> None:
    assert (Path(khadem_nb.__file__).parent / "py.typed").exists()


def test_cli_help_explains_each_command() -> None:
    out = subprocess.run([sys.executable, "-m", "khadem_nb.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("demo", "worker", "stats"):
        assert command in out


def test_worker_help_shows_relative_and_absolute_sqlite_urls() -> None:
    out = subprocess.run([sys.executable, "-m", "khadem_nb.cli", "worker", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "sqlite:///runs.db" in out and "sqlite:////abs/runs.db" in out
    assert "working directory" in " ".join(out.split())


def test_demo_runs_a_real_sweep() -> None:
    run = subprocess.run([sys.executable, "-m", "khadem_nb.cli", "demo"],
                         capture_output=True, text=True, check=True, timeout=120)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("khadem-nb demo: 300 ridge fits on memory://")
    grid = lines[lines.index("mean test error by alpha (rows) and n_samples (columns), over 10 seeds") + 3:]
    assert [row.split()[0] for row in grid[:6]] == ["0", "0.01", "0.1", "1", "10", "100"]
    assert grid[0].split()[1] == "NaN"  # alpha 0 with 5 samples never completes
    failed = lines[lines.index("failed points (kept with their error after 3 attempts)") + 2]
    assert failed.split()[:3] == ["0", "5", "ValueError:"] and failed.split()[-1] == "10"
    metrics = lines[lines.index("metrics") + 3]
    # 300 points: 10 underdetermined fail on all 3 attempts (2 retries each); the 30 points of
    # the flaky seed fail once (one of them is also underdetermined): 29 + 2 + 9 * 2 retries
    assert metrics.split()[:4] == ["khadem_nb.demo.fit_ridge", "290", "10", "49"]
    assert "300/300 100%" in run.stderr


def test_the_redis_key_schema_agrees_with_the_lua_constants() -> None:
    """``keys.KEY_NAMES`` is the order of every script's KEYS; ``_common.lua`` names the same
    positions ``K_<NAME>`` (1-based)."""
    from khadem_nb.drivers.redis.keys import KEY_NAMES, lua_key_constants

    assert lua_key_constants() == {f"K_{name.upper()}": i + 1 for i, name in enumerate(KEY_NAMES)}


def test_the_installed_redis_py_is_the_range_the_connection_module_is_written_for() -> None:
    """``connection.py`` uses redis-py below its public API; the range it supports is pinned
    in pyproject.toml, and the suite runs against a release inside it."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    from khadem_nb.drivers.redis.connection import REDIS_PY_RANGE

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    pinned = next(Requirement(d) for d in pyproject["project"]["dependencies"] if d.startswith("redis"))
    assert str(pinned.specifier) == ",".join(sorted(REDIS_PY_RANGE))
    assert pinned.specifier.contains(version("redis"))
