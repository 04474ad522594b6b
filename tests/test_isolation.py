"""Process isolation: jobs in child processes that timeouts and cancels really stop."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import make_manager
from jobs import BlockingSleep, BusyLoop, Echo, ExitHard, Isolated, IsolatedSleep, Segfault
from test_cancel import wait_status, wait_stopped

from khadem_nb import ConfigError, JobStatus, QueueJob, QueueManager
from khadem_nb.runtime.isolation import TERMINATE_GRACE_S


@pytest.fixture(params=["memory", "sqlite"])
async def isolated_manager(request: pytest.FixtureRequest, tmp_path: Path) -> QueueManager:
    manager = await make_manager(request.param, tmp_path)
    yield manager
    await manager.purge()
    await manager.close()


async def test_isolated_job_runs_in_a_child_and_reports_progress(isolated_manager: QueueManager) -> None:
    manager = isolated_manager
    ids = [await manager.dispatch(Isolated({"n": i})) for i in range(4)]
    worker = await manager.start_worker(run_in_background=True, delay=0.02, concurrency=2)
    records = await manager.wait(ids, timeout=60)
    await worker.stop()
    pids = {r.result["pid"] for r in records}
    assert os.getpid() not in pids and len(pids) <= 2  # two children, reused
    assert [r.result["value"] for r in records] == [{"n": i} for i in range(4)]
    assert all(r.meta.get("progress") == 0.5 and r.meta.get("note") == "half way" for r in records)


@pytest.mark.parametrize("job", [Segfault(), ExitHard()], ids=["segfault", "os._exit"])
async def test_a_crash_fails_only_its_job(isolated_manager: QueueManager, job: QueueJob) -> None:
    manager = isolated_manager
    crashed = await manager.dispatch(job)
    fine = await manager.dispatch(Isolated("after"))
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    records = await manager.wait([crashed, fine], timeout=60)
    assert worker.running
    await worker.stop()
    assert records[0].status is JobStatus.FAILED and records[0].failure == "crashed"
    assert "isolated process" in (records[0].error or "")
    if isinstance(job, Segfault):
        assert "SIGSEGV" in (records[0].error or "")
    assert records[1].status is JobStatus.COMPLETED


async def test_timeout_kills_the_child_within_the_grace(isolated_manager: QueueManager) -> None:
    manager = isolated_manager
    job_id = await manager.dispatch(IsolatedSleep())
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    started = time.monotonic()
    record = (await manager.wait([job_id], timeout=60))[0]
    elapsed = time.monotonic() - started
    await worker.stop()
    assert record.status is JobStatus.FAILED and record.failure == "timed_out"
    assert elapsed < 0.5 + TERMINATE_GRACE_S + 2.0  # the child ignored SIGTERM: SIGKILL came


async def test_cancel_kills_a_busy_loop(isolated_manager: QueueManager, tmp_path: Path) -> None:
    manager = isolated_manager
    marker = tmp_path / "busy.pid"
    job_id = await manager.dispatch(BusyLoop(60, str(marker)))
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    await wait_status(manager, job_id, JobStatus.ACTIVE)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    child = int(marker.read_text())
    assert await manager.cancel(job_id) == [job_id]
    await wait_stopped(manager, job_id)
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(child, 0)
            await asyncio.sleep(0.05)
    after = await manager.dispatch(Echo("after"))
    assert (await manager.wait([after], timeout=10))[0].status is JobStatus.COMPLETED
    await worker.stop()


class ShortBlockingSleep(BlockingSleep):
    timeout = 0.1


async def test_in_thread_timeout_says_the_thread_runs_on(tmp_path: Path) -> None:
    manager = await make_manager("memory", tmp_path)
    job_id = await manager.dispatch(ShortBlockingSleep(0.6))
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    record = (await manager.wait([job_id], timeout=10))[0]
    assert record.failure == "timed_out" and "its thread runs on" in (record.error or "")
    assert manager.executor.orphaned_threads == 1
    await asyncio.sleep(0.8)
    assert manager.executor.orphaned_threads == 0  # it returned: no longer counted
    await worker.stop()
    await manager.close()


def test_unknown_isolation_is_refused() -> None:
    with pytest.raises(ConfigError, match="none, process"):
        class Bad(QueueJob):
            isolation = "thread"


async def test_worker_isolation_default(tmp_path: Path) -> None:
    manager = await make_manager("memory", tmp_path)
    with pytest.raises(ConfigError, match="none, process"):
        await manager.start_worker(run_in_background=True, isolation="gpu")
    job_id = await manager.dispatch(Echo("where"))
    worker = await manager.start_worker(run_in_background=True, delay=0.02, isolation="process")
    record = (await manager.wait([job_id], timeout=60))[0]
    await worker.stop()
    await manager.close()
    assert record.status is JobStatus.COMPLETED and record.result == "where"


async def test_code_that_cannot_be_sent_fails_before_a_child_starts(tmp_path: Path) -> None:
    manager = await make_manager("memory", tmp_path)
    lock = threading.Lock()

    class HoldsALock(QueueJob):
        isolation = "process"

        async def handle(self) -> bool:
            return lock.locked()

    HoldsALock.__module__ = "__main__"  # as if a notebook cell defined it: sent by value
    job_id = await manager.dispatch(HoldsALock())
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    record = (await manager.wait([job_id], timeout=30))[0]
    await worker.stop()
    assert record.status is JobStatus.FAILED
    assert "cannot be sent to an isolated process" in (record.error or "")
    assert manager.executor._pool is not None and manager.executor._pool.size == 0
    await manager.close()
