"""The Binder setup, checked without Docker: scripts lint clean, repo2docker reads the config,
and the tutorials that use what ``binder/start`` provides (its own Redis on a spare port: the
quick start and the scaling-out tutorial) run under it. Every tutorial also runs in the suite
itself (nbval over ``notebooks/``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_redis_server_binary
from redis_servers import spare_port

ROOT = Path(__file__).parent.parent
BINDER = ROOT / "binder"

pytestmark = pytest.mark.slow


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(found).exists(), f"{name} is not installed (it is in the dev extra)"
    return found


def test_scripts_pass_shellcheck() -> None:
    run = subprocess.run([_tool("shellcheck"), str(BINDER / "start"), str(BINDER / "postBuild")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    for script in ("start", "postBuild"):
        text = (BINDER / script).read_text()
        assert "set -euo pipefail" in text and os.access(BINDER / script, os.X_OK)


def test_requirements_are_pinned_and_remote() -> None:
    lines = [line.strip() for line in (BINDER / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines
    for line in lines:
        assert "==" in line, f"not pinned: {line}"
        assert not line.startswith(("-e", ".", "file:", "/")), f"local reference: {line}"
    assert (BINDER / "apt.txt").read_text().split() == ["redis-server"]
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_requirements_hold_every_dependency_of_the_package() -> None:
    """postBuild installs khadem_nb with --no-deps: each of its dependencies must be pinned."""
    import re
    import tomllib

    project = tomllib.loads((BINDER.parent / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[\[<>=!~ ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    pinned = {line.split("==")[0].strip().lower() for line in lines
              if "==" in line and not line.startswith("#")}
    assert wanted <= pinned, f"not pinned for Binder: {sorted(wanted - pinned)}"


def test_repo2docker_reads_the_config(tmp_path: Path) -> None:
    run = subprocess.run([_tool("repo2docker"), "--no-build", "--debug", str(ROOT)], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    out = run.stdout + run.stderr
    assert "redis-server" in out
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in out
    assert "./binder/postBuild" in out
    assert 'R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' in out


@pytest.mark.timeout(600)  # runs the tutorials in a pytest of its own
def test_tutorials_run_under_binder_start(tmp_path: Path) -> None:
    need_redis_server_binary()  # binder/start starts one
    port = spare_port()
    env = {**os.environ, "KHADEM_REDIS_PORT": str(port), "TMPDIR": str(tmp_path)}
    env.pop("KHADEM_REDIS_URL", None)  # binder/start provides it
    cmd = [str(BINDER / "start"), sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
           "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with", "notebooks/sanitize.cfg",
           "-o", "addopts=", "notebooks/01-quick-start.ipynb", "notebooks/04-scaling-out.ipynb"]
    try:
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        log = (tmp_path / f"khadem-redis-{port}.log").read_text()
        assert "Ready to accept connections" in log
        stats = subprocess.run(["redis-cli", "-p", str(port), "info", "commandstats"],
                               capture_output=True, text=True).stdout
        assert "cmdstat_evalsha" in stats, "the Redis tutorial did not use the binder/start Redis"
        left = subprocess.run(["redis-cli", "-p", str(port), "dbsize"], capture_output=True, text=True).stdout
        assert left.strip() == "0", "the Redis tutorial left keys behind"
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
    probe = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
    assert "PONG" not in probe.stdout, "the tutorial Redis was left running"
