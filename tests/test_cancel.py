"""Cancel on every driver: pending jobs never start, running ones stop, finished ones stay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import make_manager
from jobs import RUN_LOG, BlockingSleep, Cooperative, Echo, PollsCancelled, Sleep

from khadem_nb import ConfigError, JobCancelledError, JobNotFoundError, JobStatus, QueueManager


async def wait_status(manager: QueueManager, job_id: str, *statuses: JobStatus,
                      timeout: float = 10.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (await manager.statuses([job_id]))[0]
        if status in statuses:
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {statuses}; it is {status}")


async def wait_stopped(manager: QueueManager, job_id: str, timeout: float = 10.0) -> None:
    """Until the worker that held a cancelled job confirmed it stopped (its token is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = await manager.get_job(job_id)
        if record.status is JobStatus.CANCELLED and record.token is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} was not stopped: {record}")




async def test_queued_and_scheduled_jobs_are_cancelled_and_never_run(queued_manager: QueueManager) -> None:
    manager = queued_manager
    queued = await manager.dispatch(Echo("queued"))
    scheduled = await manager.dispatch(Echo("scheduled"), delay=0.2)
    kept = await manager.dispatch(Echo("kept"))
    assert await manager.cancel([queued, scheduled]) == [queued, scheduled]
    for job_id, was in ((queued, "queued"), (scheduled, "scheduled")):
        record = await manager.get_job(job_id)
        assert record.status is JobStatus.CANCELLED
        assert record.error == f"cancelled (was {was})"
        assert record.finished_ms is not None and record.token is None
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    await manager.wait([kept], timeout=10)
    await asyncio.sleep(0.3)  # past the scheduled job's time
    await worker.stop()
    assert RUN_LOG == ["kept"]
    counts = await manager.counts()
    assert counts["cancelled"] == 2 and counts["completed"] == 1
    assert counts["queued"] == counts["scheduled"] == counts["active"] == 0
    assert {r.id for r in await manager.jobs("cancelled")} == {queued, scheduled}
    with pytest.raises(JobCancelledError) as caught:
        await _result(manager, queued)
    assert caught.value.record is not None and caught.value.record.id == queued


async def _result(manager: QueueManager, job_id: str) -> object:
    from khadem_nb.runtime.waiting import outcome

    return outcome((await manager.wait([job_id], timeout=5))[0])


async def test_cancel_is_idempotent_and_leaves_finished_jobs(queued_manager: QueueManager) -> None:
    manager = queued_manager
    done = await manager.dispatch(Echo("done"))
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    await manager.wait([done], timeout=10)
    await worker.stop()
    pending = await manager.dispatch(Echo("pending"))
    before = await manager.get_job(done)
    assert await manager.cancel([done, pending]) == [pending]
    assert await manager.cancel(pending) == []  # twice is the same as once
    assert await manager.get_job(done) == before
    first = await manager.get_job(pending)
    assert await manager.cancel([pending, pending]) == []
    assert await manager.get_job(pending) == first


@pytest.mark.parametrize("job", [Sleep(30), Cooperative(30), PollsCancelled(30)],
                         ids=["async", "progress", "polls-cancelled"])
async def test_running_job_is_stopped_and_the_worker_goes_on(queued_manager: QueueManager,
                                                             job: object) -> None:
    manager = queued_manager
    worker = await manager.start_worker(run_in_background=True, delay=0.02, concurrency=2)
    running = await manager.dispatch(job)  # type: ignore[arg-type]
    await wait_status(manager, running, JobStatus.ACTIVE)
    await asyncio.sleep(0.1)  # the job is inside its body
    started = time.monotonic()
    assert await manager.cancel(running) == [running]
    record = await manager.get_job(running)
    assert record.status is JobStatus.CANCELLED and record.error == "cancelled (was active)"
    await wait_stopped(manager, running)
    assert time.monotonic() - started < 5
    after = await manager.dispatch(Echo("after"))
    assert (await manager.wait([after], timeout=10))[0].status is JobStatus.COMPLETED
    assert worker.running
    await worker.stop()
    record = await manager.get_job(running)
    assert record.status is JobStatus.CANCELLED and record.result is None
    assert record.started_ms is not None and record.finished_ms is not None
    if isinstance(job, Cooperative):
        assert record.meta.get("progress", 0) > 0  # what it had done when it stopped


async def test_a_job_that_ignores_cancel_stays_cancelled(queued_manager: QueueManager) -> None:
    """A sync job that neither reports progress nor checks cancelled() runs to its end; its
    result is dropped and the record stays cancelled."""
    manager = queued_manager
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    job_id = await manager.dispatch(BlockingSleep(0.4))
    await wait_status(manager, job_id, JobStatus.ACTIVE)
    assert await manager.cancel(job_id) == [job_id]
    await wait_stopped(manager, job_id)
    await worker.stop()
    record = await manager.get_job(job_id)
    assert record.status is JobStatus.CANCELLED and record.result is None


async def test_cancel_all_queued(queued_manager: QueueManager) -> None:
    manager = queued_manager
    ids = [await manager.dispatch(Echo(i)) for i in range(5)]
    later = await manager.dispatch(Echo("later"), delay=60)
    assert sorted(await manager.cancel_all("queued")) == sorted([*ids, later])
    assert (await manager.counts())["cancelled"] == 6
    assert await manager.cancel_all("all") == []


async def test_bad_input(queued_manager: QueueManager) -> None:
    manager = queued_manager
    with pytest.raises(JobNotFoundError, match="nope"):
        await manager.cancel("nope")
    real = await manager.dispatch(Echo(1))
    with pytest.raises(JobNotFoundError, match="missing-one"):
        await manager.cancel([real, "missing-one"])
    assert (await manager.get_job(real)).status is JobStatus.QUEUED  # nothing was cancelled
    with pytest.raises(ConfigError, match="no job ids"):
        await manager.cancel([])
    with pytest.raises(ConfigError, match="int 5"):
        await manager.cancel([real, 5])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="job id"):
        await manager.cancel(5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="queued, active, all"):
        await manager.cancel_all("running")


async def test_sync_driver_cancel_changes_finished_jobs_not(tmp_path: Path) -> None:
    manager = await make_manager("sync", tmp_path)
    job_id = await manager.dispatch(Echo("ran at once"))
    assert await manager.cancel(job_id) == []
    assert (await manager.get_job(job_id)).status is JobStatus.COMPLETED
    await manager.close()
