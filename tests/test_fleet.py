"""The queue's workers, wherever they run: every worker writes its entry (``q.workers()``), a
retirement asked from the notebook stops a worker elsewhere after its jobs in hand, and
``q.launch(n, on="local")`` starts ``khadem-nb worker`` processes that register, run the
queue's jobs (shipped notebook code included) and stop with the queue; a worker that exits at
start is a ``LaunchError`` with its last output, and bad input gets a clear error."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import driver_config
from jobs import Echo
from procs import env, finish, start_worker

import khadem_nb as kn
from khadem_nb import ConfigError, JobStatus, QueueManager
from khadem_nb.errors import LaunchError


def wait_until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.parametrize("driver", ["sqlite", "redis", "postgres"])
def test_a_worker_elsewhere_is_listed_and_retired_from_the_notebook(driver: str, tmp_path: Path) -> None:
    config = driver_config(driver, tmp_path)
    section = config["queue"]
    url = f"sqlite:///{section['path']}" if driver == "sqlite" else (
        f"{section['url']}?prefix={section['prefix']}" if driver == "redis" else section["url"])
    q = kn.Queue(url)
    try:
        worker = start_worker(url, "--concurrency", "2")
        wait_until(lambda: len(q.workers()) == 1)
        seen = q.workers().iloc[0]
        assert seen["launcher"] == "manual" and seen["state"] in ("idle", "busy")
        listed = subprocess.run([sys.executable, "-m", "khadem_nb.cli", "workers", "--queue-url", url],
                                capture_output=True, text=True, timeout=60, env=env())
        assert listed.returncode == 0 and "1 worker(s)" in listed.stdout and seen["name"] in listed.stdout
        assert seen["concurrency"] == 2 and seen["queues"] == ["default"]
        q.start()
        wait_until(lambda: sorted(q.workers()["launcher"]) == ["kernel", "manual"])
        q.retire(seen["name"])
        finish([worker], timeout=30)  # it heard the retirement and exited by itself
        assert seen["name"] not in set(q.workers()["name"])  # a worker that stops takes its entry away
        q.stop()
    finally:
        q.run(q.manager.driver.purge())
        q.close()


def test_launched_local_workers_run_the_queue_and_stop_with_it(tmp_path: Path) -> None:
    """Launched from a queue that ships code, the workers trust shipped code: they start only
    because the secret reached them through their environment."""
    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}", ship_code=True, secret="a launch secret of sixteen+ bytes")
    try:
        launched = q.launch(2, concurrency=2, imports=["jobs"], env={"PYTHONPATH": env()["PYTHONPATH"]})
        assert [w.state for w in launched] == ["running", "running"]
        command = " ".join(launched[0].process.args)
        assert "--trust-code" in command and "sixteen" not in command
        frame = q.workers()
        assert sorted(frame["name"]) == sorted(w.name for w in launched)
        assert set(frame["launcher"]) == {"local"}
        ids = [q.run(q.manager.dispatch(Echo(i))) for i in range(20)]
        records = q.run(q.manager.wait(ids, timeout=60))
        assert [r.result for r in records] == list(range(20))
        wait_until(lambda: q.workers()["jobs_done"].sum() == 20)
    finally:
        q.close()
    assert [w.process.poll() is not None for w in launched] == [True, True]  # stopped with the queue


def test_a_worker_that_exits_at_start_is_a_launch_error(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        with pytest.raises(LaunchError, match=r"(?s)exited with status \d+ at start.*no_such_module_here"):
            q.launch(1, imports=["no_such_module_here"])
        failed = q.workers()
        assert list(failed["state"]) == ["failed"]
    finally:
        q.close()


def test_bad_launches_are_refused(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        with pytest.raises(ConfigError, match="concurrency must be between 1 and 10000, got -1"):
            q.launch(1, concurrency=-1)
        with pytest.raises(ConfigError, match="retire\\(\\) takes a worker's name or 'all'"):
            q.retire("")
    finally:
        q.close()
    memory = kn.Queue()
    try:
        with pytest.raises(LaunchError, match="a memory queue lives in this process only"):
            memory.launch(1)
    finally:
        memory.close()


async def test_in_process_workers_write_their_entries_and_retire_all(tmp_path: Path) -> None:
    async with QueueManager(driver_config("sqlite", tmp_path)) as manager:
        first = await manager.start_worker(run_in_background=True)
        second = await manager.start_worker(run_in_background=True)
        await asyncio.sleep(0.2)
        names = {entry["name"] for entry in await manager.list_workers()}
        assert names == {first.presence_name, second.presence_name}
        job = await manager.dispatch(Echo("x"))
        await manager.wait([job], timeout=10)
        await manager.retire("all")
        await asyncio.wait_for(asyncio.gather(first.run(), second.run()), 20)
        assert (await manager.get_job(job)).status is JobStatus.COMPLETED
        later = await manager.start_worker(run_in_background=True)  # started after: not retired
        await asyncio.sleep(0.3)
        assert later.running
        await later.stop()


def test_a_worker_whose_environment_differs_is_named(tmp_path: Path) -> None:
    """Every entry carries its Python and package versions; ``q.workers()`` says how a worker's
    differ from the kernel's for what the kernel imported (here a worker's entry as a worker
    with another numpy and another Python would write it)."""
    import json

    import numpy as np

    from khadem_nb.runtime.presence import PRESENCE_PREFIX

    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        q.start()
        wait_until(lambda: len(q.workers()) == 1)
        mine = q.workers().iloc[0]
        assert mine["env_diff"] == "" and mine["python"]
        raw = q.run(q.manager.driver.kv_get(f"{PRESENCE_PREFIX}{mine['name']}"))
        other = json.loads(raw)
        other.update(name="elsewhere", python="3.99.0", packages={**other["packages"], "numpy": "1.0.0"})
        q.run(q.manager.driver.kv_put(f"{PRESENCE_PREFIX}elsewhere", json.dumps(other).encode()))
        diff = q.workers().set_index("name").loc["elsewhere", "env_diff"]
        assert f"numpy 1.0.0 there, {np.__version__} here" in diff and "Python 3.99.0 there" in diff
    finally:
        q.close()


def test_launched_workers_are_in_the_panel_and_the_dashboard(tmp_path: Path) -> None:
    import httpx

    from khadem_nb.dashboard.app import allowed_hosts, create_app

    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        launched = q.launch(1, imports=["jobs"], env={"PYTHONPATH": env()["PYTHONPATH"]})
        panel = q.panel()
        snap = q.run(panel.snapshot())
        assert [(w[0], w[2]) for w in snap.workers] == [(launched[0].name, "local")]
        shown = panel._summary_html(snap)
        assert launched[0].name in shown and "<th>launcher</th>" in shown

        async def overview() -> dict:  # type: ignore[type-arg]
            app = create_app(q.manager, "t" * 32, hosts=allowed_hosts("127.0.0.1", 8642))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8642") as http:
                return (await http.get("/api/overview")).json()  # type: ignore[no-any-return]

        rows = q.run(overview())["workers"]
        assert [(r["name"], r["launcher"], r["state"]) for r in rows] == [(launched[0].name, "local", "idle")]
        assert "packages" not in rows[0]
        panel.close()
    finally:
        q.close()
