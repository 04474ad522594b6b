"""The wheel and the sdist a release is made of: built from this tree, checked by twine, and the
wheel installed into a fresh virtual environment with no source tree near it, where it runs
``khadem-nb --version``, ``khadem-nb demo`` and a round trip on Redis and on PostgreSQL (so its
Lua scripts, the dashboard's static files and ``py.typed`` are in it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need_postgres, need_redis, schema_for

import khadem_nb

ROOT = Path(__file__).resolve().parent.parent
ROUND_TRIP = textwrap.dedent('''
    import asyncio, sys
    from pathlib import Path
    import khadem_nb
    from khadem_nb import QueueJob, QueueManager

    class Double(QueueJob):
        def __init__(self, n):
            self.n = n

        async def handle(self):
            return self.n * 2

    async def main(url):
        manager = await QueueManager(url).init()
        try:
            await manager.driver.purge()
            worker = await manager.start_worker(concurrency=2, run_in_background=True)
            assert await manager.dispatch_and_wait(Double(21), timeout=30) == 42
            await worker.stop()
            await manager.driver.purge()
        finally:
            await manager.close()

    package = Path(khadem_nb.__file__).parent
    assert (package / "py.typed").exists()
    assert list((package / "drivers" / "redis" / "lua").glob("*.lua"))
    assert list((package / "dashboard" / "static").iterdir())
    for url in sys.argv[1:]:
        asyncio.run(main(url))
    print("round trips:", len(sys.argv) - 1, "from", package)
''')


MEETS_REQUIREMENTS = textwrap.dedent('''
    from importlib.metadata import requires, version
    from packaging.requirements import Requirement

    for text in requires("khadem_nb"):
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found = version(requirement.name)
            assert requirement.specifier.contains(found, prereleases=True), (text, found)
''')


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A wheel and an sdist built from a copy of the tree (the build leaves nothing in it)."""
    folder = tmp_path_factory.mktemp("dist")
    source = folder / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "*.egg-info", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache", "artifacts"))
    out = folder / "out"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                   check=True, capture_output=True, timeout=300)
    yield out


def test_the_wheel_and_sdist_pass_twine_check(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"]
    assert all(khadem_nb.__version__ in f.name for f in files)  # the version written once
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_wheel_installs_and_runs_without_the_source_tree(dist: Path, tmp_path: Path) -> None:
    redis_url = need_redis()
    postgres = need_postgres()
    pg_url = f"{postgres}{'&' if '?' in postgres else '?'}schema={schema_for(tmp_path)}"
    env_dir = tmp_path / "venv"
    # the machine's packages stand in for the wheel's dependencies (no download); the wheel
    # itself goes into the venv's own site-packages, ahead of the editable checkout
    venv.create(env_dir, with_pip=True, system_site_packages=True)
    python, script = env_dir / "bin" / "python", env_dir / "bin" / "khadem-nb"
    [wheel] = dist.glob("*.whl")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: str | Path) -> str:
        done = subprocess.run([str(a) for a in args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel)
    run(python, "-c", MEETS_REQUIREMENTS)  # the machine's packages meet the wheel's own requirements
    where = run(python, "-c", "import khadem_nb; print(khadem_nb.__file__)")
    assert where.startswith(str(env_dir)), where
    assert run(script, "--version").strip() == f"khadem-nb {khadem_nb.__version__}"
    assert "300 ridge fits" in run(script, "demo")
    (work / "round_trip.py").write_text(ROUND_TRIP)
    assert "round trips: 2" in run(python, "round_trip.py", f"{redis_url}?prefix=khadem-wheel-test", pg_url)
