"""Waiting for jobs: ``QueueManager.wait`` and ``dispatch_and_wait`` on every driver, and the
settle notices Redis publishes to other processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import make_manager
from jobs import RUN_LOG, Boom, Echo, Flaky, Noop

from khadem_nb import (
    ConfigError,
    JobFailedError,
    JobNotFoundError,
    JobStatus,
    QueueManager,
    ResultTimeoutError,
)
from khadem_nb.drivers.base import NO_RESULT


async def start_worker(manager: QueueManager) -> None:
    if not manager.driver.runs_at_dispatch:
        await manager.start_worker(run_in_background=True, delay=0.02)


async def test_dispatch_and_wait_returns_the_result(manager: QueueManager) -> None:
    await start_worker(manager)
    assert await manager.dispatch_and_wait(Echo({"x": [1, 2.5]}), timeout=10) == {"x": [1, 2.5]}
    assert await manager.dispatch_and_wait(Flaky(succeed_on=2), timeout=10) == {"attempt": 2}


async def test_dispatch_and_wait_raises_the_failure_with_its_record(manager: QueueManager) -> None:
    await start_worker(manager)
    with pytest.raises(JobFailedError, match="disk on fire") as caught:
        await manager.dispatch_and_wait(Boom("disk on fire"), timeout=10)
    record = caught.value.record
    assert record.status is JobStatus.FAILED and record.attempt == 3
    assert record.traceback is not None and "disk on fire" in record.traceback


async def test_wait_returns_records_in_the_order_asked(manager: QueueManager) -> None:
    ids = [await manager.dispatch(Echo(i)) for i in range(6)]
    failing = await manager.dispatch(Boom("no"))
    await start_worker(manager)
    records = await manager.wait([*reversed(ids), failing], timeout=10)
    assert [r.result for r in records[:-1]] == list(reversed(range(6)))
    assert [r.status for r in records] == [JobStatus.COMPLETED] * 6 + [JobStatus.FAILED]


async def test_timeout_leaves_the_job_queued(queued_manager: QueueManager) -> None:
    with pytest.raises(ResultTimeoutError, match="1 of 1 job"):
        await queued_manager.dispatch_and_wait(Noop(), timeout=0.2)
    [queued] = await queued_manager.jobs("queued")  # nothing lost: a worker runs it later
    await start_worker(queued_manager)
    [record] = await queued_manager.wait([queued.id], timeout=10)
    assert record.status is JobStatus.COMPLETED


async def test_bad_input_to_waiting(manager: QueueManager) -> None:
    with pytest.raises(ConfigError, match="timeout must be a non-negative duration"):
        await manager.dispatch_and_wait(Noop(), timeout=-1)
    with pytest.raises(ConfigError, match="timeout must be seconds"):
        await manager.wait([], timeout="soon")  # type: ignore[arg-type]
    assert sum((await manager.counts()).values()) == 0  # the bad call pushed nothing
    with pytest.raises(JobNotFoundError, match="no job with id 'no-such-job'"):
        await manager.wait(["no-such-job"], timeout=5)


async def test_redis_waiter_hears_other_processes_settles(tmp_path: Path) -> None:
    """A waiter whose process runs no worker is told each settle and its new status by the
    settle script's PUBLISH (a retry says 'scheduled', a finish 'completed' or 'failed')."""
    waiter = await make_manager("redis", tmp_path)
    workers = QueueManager(waiter.settings)  # a second connection: what another machine does
    await workers.init()
    heard: list[tuple[str, JobStatus | None, Any]] = []
    ids = [await waiter.dispatch(Flaky(succeed_on=2)), await waiter.dispatch(Boom("x"))]
    unwatch = await waiter.driver.watch(ids, lambda *notice: heard.append(notice))
    try:
        await workers.start_worker(run_in_background=True, delay=0.02)
        records = await waiter.wait(ids, timeout=10)
        await asyncio.sleep(0.05)  # the last notice may trail the record read
    finally:
        unwatch()
        await workers.close()
        await waiter.driver.purge()
        await waiter.close()
    assert [r.status for r in records] == [JobStatus.COMPLETED, JobStatus.FAILED]
    assert [(s, r) for i, s, r in heard if i == ids[0]] == [
        (JobStatus.SCHEDULED, NO_RESULT), (JobStatus.COMPLETED, {"attempt": 2})]
    assert [(s, r) for i, s, r in heard if i == ids[1]] == [
        (JobStatus.SCHEDULED, NO_RESULT)] * 2 + [(JobStatus.FAILED, NO_RESULT)]


async def test_redis_notice_carries_small_results_only(tmp_path: Path) -> None:
    """``dispatch_and_wait`` from a process without workers: a small result arrives in the
    settle notice, a large one (over 1 KB of JSON) is read from the record; both are whole."""
    waiter = await make_manager("redis", tmp_path)
    workers = QueueManager(waiter.settings)
    await workers.init()
    try:
        await workers.start_worker(run_in_background=True, delay=0.02)
        small, large = {"x": "tab\there, line\nthere"}, {"x": "y" * 5000}
        assert await waiter.dispatch_and_wait(Echo(small), timeout=10) == small
        assert await waiter.dispatch_and_wait(Echo(large), timeout=10) == large
        heard: list[tuple[str, JobStatus | None, Any]] = []
        records = [waiter.build_record(Echo(small)), waiter.build_record(Echo(large))]
        ids = [r.id for r in records]
        unwatch = await waiter.driver.watch(ids, lambda *notice: heard.append(notice))
        await waiter.push(records)  # watched first: the workers may finish them at once
        await waiter.wait(ids, timeout=10)
        await asyncio.sleep(0.05)
        unwatch()
    finally:
        await workers.close()
        await waiter.driver.purge()
        await waiter.close()
    assert sorted((i == ids[0], r) for i, s, r in heard) == [(False, NO_RESULT), (True, small)]


@pytest.mark.parametrize("driver", ["memory", "redis"])
async def test_waiting_on_more_jobs_than_retention_keeps(driver: str, tmp_path: Path) -> None:
    """A sweep larger than ``queue.retention``: finished records are dropped while the group
    still runs. ``wait_done`` counts what it heard finish; ``wait``, which must return records,
    says which are gone and why."""
    manager = await make_manager(driver, tmp_path, retention=5)
    try:
        ids = await manager.dispatch_many([Echo(i) for i in range(30)])
        await manager.start_worker(run_in_background=True, delay=0.02)
        await manager.wait_done(ids, timeout=20)
        assert sorted(RUN_LOG) == list(range(30))
        with pytest.raises(JobNotFoundError, match=r"no job .*dropped by retention \(queue.retention\)"):
            await manager.wait(ids, timeout=5)
    finally:
        await manager.driver.purge()
        await manager.close()
