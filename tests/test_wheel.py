"""The wheel and the sdist a release is made of: built from this tree, checked by twine, and the
wheel installed into a fresh virtual environment with no source tree near it, where it runs
``khadem-nb --version``, ``khadem-nb demo`` and a round trip on Redis and on PostgreSQL (so its
Lua scripts, the dashboard's static files, the panel's script and ``py.typed`` are in it)."""

from __future__ import annotations

import os
import shutil
import site
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
    assert (package / "notebook" / "panel.js").exists()  # the panel's browser side
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
    anywhere = shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache")

    def left_out(folder: str, names: list[str]) -> set[str]:  # screenshots and builds at the top only
        top = {"artifacts", "build", "dist", "site"} if Path(folder) == ROOT else set()
        return set(anywhere(folder, names)) | (top & set(names))

    shutil.copytree(ROOT, source, ignore=left_out)
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
    venv.create(env_dir, with_pip=True)
    python, script = env_dir / "bin" / "python", env_dir / "bin" / "khadem-nb"
    # the packages of the environment running the suite stand in for the wheel's dependencies
    # (no download): their folders follow the venv's own on its path. Their .pth files are not
    # read there, so the editable checkout's finder stays out and the wheel is what imports.
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = [p for p in (*site.getsitepackages(), site.getusersitepackages()) if Path(p).is_dir()]
    (Path(inner) / "outer-environment.pth").write_text("\n".join(outer) + "\n")
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
