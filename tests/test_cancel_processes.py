"""Cancel across processes: a `khadem-nb cancel` process stops jobs running in a `khadem-nb
worker` process, and cancels race claims without a job ever ending cancelled and completed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import need_redis
from jobs import BusyLoop, Cooperative, Echo, MarkStart, Sleep
from procs import env, kill, start_worker
from test_cancel import wait_status, wait_stopped

from khadem_nb import JobStatus, QueueJob, QueueManager

RACES = 1000


@pytest.fixture(params=["sqlite", "redis"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> QueueManager:
    """A manager whose ``url`` a worker process can open too."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/q.db"
    else:
        url = f"{need_redis()}?prefix=khadem-cancel-{tmp_path.name}"
    manager = await QueueManager(url).init()
    manager.url = url  # type: ignore[attr-defined]
    yield manager
    await manager.purge()
    await manager.close()


def cli_cancel(url: str, *args: str) -> list[str]:
    run = subprocess.run([sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING", "cancel",
                          "--queue-url", url, *args], env=env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


@pytest.mark.parametrize("job", [Sleep(60), Cooperative(60), BusyLoop(60)],
                         ids=["async", "cooperative-sync", "isolated-busy-loop"])
async def test_cancel_from_another_process_stops_a_worker_process_job(shared: QueueManager,
                                                                      job: QueueJob) -> None:
    manager = shared
    url = manager.url
    worker = start_worker(url, "--concurrency", "2")
    try:
        job_id = await manager.dispatch(job)
        await wait_status(manager, job_id, JobStatus.ACTIVE, timeout=30)
        await asyncio.sleep(0.3)  # inside its body (the isolated one in its child)
        assert cli_cancel(url, job_id) == [job_id]
        await wait_stopped(manager, job_id, timeout=15)
        record = await manager.get_job(job_id)
        assert record.status is JobStatus.CANCELLED and record.error == "cancelled (was active)"
        after = await manager.dispatch(Echo("after"))
        assert (await manager.wait([after], timeout=30))[0].status is JobStatus.COMPLETED
        assert worker.poll() is None  # the worker process goes on
    finally:
        kill(worker)


async def test_cancel_all_queued_from_the_cli(shared: QueueManager) -> None:
    manager = shared
    ids = [await manager.dispatch(Echo(i)) for i in range(3)]
    assert sorted(cli_cancel(manager.url, "--all-queued")) == sorted(ids)
    assert (await manager.counts())["cancelled"] == 3


async def test_cancel_races_claims(shared: QueueManager, tmp_path: Path) -> None:
    """RACES times: dispatch a job while idle workers wait to claim it, and cancel it at once.
    Whoever wins, a job ends either completed (cancel came too late: no id returned) or
    cancelled, never both; one cancelled before its claim never runs its body."""
    manager = shared
    starts = tmp_path / "starts.log"
    starts.touch()
    worker = start_worker(manager.url, "--concurrency", "4")
    try:
        warm = await manager.dispatch(Echo("warm"))
        await manager.wait([warm], timeout=30)
        returned: dict[str, float] = {}
        ids = []
        for _ in range(RACES):
            job_id = await manager.dispatch(MarkStart(str(starts)))
            ids.append(job_id)
            if await manager.cancel(job_id):
                returned[job_id] = time.time()
        records = await manager.wait(ids, timeout=120)
        deadline = time.monotonic() + 30
        while any(r.token for r in records) and time.monotonic() < deadline:  # stops confirmed
            await asyncio.sleep(0.1)
            records = await manager.get_jobs(ids)
    finally:
        kill(worker)
    ran: dict[str, list[float]] = {}
    for line in starts.read_text().split("\n"):
        if line:
            job_id, at = line.split()
            ran.setdefault(job_id, []).append(float(at))
    outcomes = {"completed": 0, "cancelled before its claim": 0, "cancelled while running": 0}
    for record in records:
        if record.id not in returned:  # the cancel came after it finished
            assert record.status is JobStatus.COMPLETED, record
            assert len(ran[record.id]) == 1
            outcomes["completed"] += 1
            continue
        assert record.status is JobStatus.CANCELLED and record.result is None, record
        assert record.token is None, record  # its worker confirmed the stop
        if record.error in ("cancelled (was queued)", "cancelled (was scheduled)"):
            assert record.id not in ran, f"{record.id} ran after it was cancelled while queued"
            outcomes["cancelled before its claim"] += 1
        else:
            assert record.error == "cancelled (was active)", record
            assert record.started_ms is not None and record.started_ms <= returned[record.id] * 1000 + 5
            outcomes["cancelled while running"] += 1
    assert sum(outcomes.values()) == RACES
    assert outcomes["cancelled before its claim"] > 0, outcomes
    print(f"\n{manager.settings.driver}: {outcomes}")
