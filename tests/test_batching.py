"""Batched jobs: a kind with ``batch_size`` runs in calls of up to that many jobs, gathered
within ``batch_wait``, beyond the worker's concurrency; each job keeps its own record, result,
failure and retries; a job cancelled while it waits leaves the batch; the notebook's
``@q.job(batch=)`` calls the function with lists; and ``khadem-nb worker`` processes batch too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import QUEUED_DRIVERS, driver_config, need_redis
from jobs import Square, SquareAsync
from procs import finish, start_worker

import khadem_nb as kn
from khadem_nb import ConfigError, JobStatus, QueueJob, QueueManager


async def settle_all(manager: QueueManager, ids: list[str], timeout: float = 20) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [await manager.get_job(i) for i in ids]
        if all(r.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED) for r in records):
            return records
        await asyncio.sleep(0.02)
    raise AssertionError("jobs did not settle")


async def test_a_batched_kind_runs_in_calls_beyond_the_concurrency() -> None:
    Square.calls.clear()
    async with QueueManager("memory://") as manager:
        ids = [await manager.dispatch(Square(n)) for n in [*range(20), -5]]
        worker = await manager.start_worker(run_in_background=True, concurrency=2)
        try:
            records = await settle_all(manager, ids)
        finally:
            await worker.stop()
    results = {r.payload["n"]: r for r in records}
    assert all(results[n].result["square"] == n * n for n in range(20))
    assert results[-5].status is JobStatus.FAILED and "negative: -5" in (results[-5].error or "")
    assert sum(Square.calls) == 21 and max(Square.calls) == 8  # calls of 8, with 2 consumers
    assert len(Square.calls) <= 5
    assert {r.result["shared"] for r in records if r.result} <= set(Square.calls)


async def test_consumers_wait_for_room_rather_than_in_a_batch_that_cannot_fill() -> None:
    """Beyond two batches of a kind held, a consumer waits for room with its job: every call of
    a backlog of 64 is full, none a short one gathered by consumers that could not claim more."""
    Square.calls.clear()
    async with QueueManager("memory://") as manager:
        ids = [await manager.dispatch(Square(n)) for n in range(64)]
        worker = await manager.start_worker(run_in_background=True, concurrency=2)
        try:
            await settle_all(manager, ids)
        finally:
            await worker.stop()
    assert Square.calls == [8] * 8


async def test_a_raising_call_fails_its_jobs_each_with_its_retries() -> None:
    SquareAsync.calls.clear()
    async with QueueManager("memory://") as manager:
        lucky = [await manager.dispatch(SquareAsync(n)) for n in (12, 13, 14)]
        worker = await manager.start_worker(run_in_background=True, concurrency=1)
        try:
            records = await settle_all(manager, lucky)
            assert [r.result for r in records] == [144, 169, 196]  # the retry ran them again
            assert all(r.attempt == 2 for r in records)
            assert SquareAsync.calls[0] == [12, 13, 14]
            broken = [await manager.dispatch(SquareAsync(n)) for n in (98, 99)]
            records = await settle_all(manager, broken)
        finally:
            await worker.stop()
    assert [r.status for r in records] == [JobStatus.FAILED, JobStatus.FAILED]
    assert all("returned 1 results for 2 jobs" in (r.error or "") for r in records)


async def test_a_job_cancelled_while_it_waits_leaves_its_batch() -> None:
    class Slow(QueueJob):
        batch_size: ClassVar[int | None] = 10
        batch_wait: ClassVar[float] = 1.0
        seen: ClassVar[list[int]] = []

        def __init__(self, n: int) -> None:
            self.n = n

        @classmethod
        def handle_batch(cls, jobs: list[Any]) -> list[int]:
            cls.seen.extend(job.n for job in jobs)
            return [job.n for job in jobs]

    async with QueueManager("memory://") as manager:
        ids = [await manager.dispatch(Slow(n)) for n in range(3)]
        worker = await manager.start_worker(run_in_background=True, concurrency=4)
        try:
            await asyncio.sleep(0.3)  # all three wait for the batch
            assert (await manager.get_job(ids[1])).status is JobStatus.ACTIVE
            await manager.cancel(ids[1])
            records = await settle_all(manager, ids)
        finally:
            await worker.stop()
    assert [r.status for r in records] == [JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.COMPLETED]
    assert sorted(Slow.seen) == [0, 2]


def test_a_notebook_function_is_called_with_lists() -> None:
    q = kn.Queue()
    calls: list[list[float]] = []

    @q.job(batch=16, batch_wait=0.1)
    def scale(x: float, factor: float = 2.0) -> list[float]:
        calls.append(list(x))
        return [v * f for v, f in zip(x, factor, strict=True)]

    q.start(concurrency=2)
    try:
        group = scale.map([{"x": float(i)} for i in range(40)])
        group.wait(timeout=20)
        assert group.results()["result"].tolist() == [2.0 * i for i in range(40)]
    finally:
        q.stop()
    assert sum(len(c) for c in calls) == 40 and max(len(c) for c in calls) == 16


async def test_bad_batch_settings_are_refused() -> None:
    for size, wait, message in ((0, 0.05, "batch size must be a whole number"),
                                ("8", 0.05, "batch size must be a whole number"),
                                (8, -1, "batch wait must be seconds"), (8, 61, "batch wait must be seconds")):
        with pytest.raises(ConfigError, match=message):
            type("Bad", (QueueJob,), {"batch_size": size, "batch_wait": wait,
                                       "handle_batch": classmethod(lambda cls, jobs: [])})
    with pytest.raises(ConfigError, match="must implement handle_batch"):
        type("NoBatchHandle", (QueueJob,), {"batch_size": 8})
    with pytest.raises(ConfigError, match="isolation='process' cannot"):
        type("Isolated", (QueueJob,), {"batch_size": 8, "isolation": "process",
                                        "handle_batch": classmethod(lambda cls, jobs: [])})
    q = kn.Queue()
    with pytest.raises(ConfigError, match="batch size must be a whole number"):
        q.job(batch=-1)(lambda x: x)
    with pytest.raises(ConfigError, match="isolation='process' cannot"):
        q.job(batch=4, isolation="process")(lambda x: x)


@pytest.mark.parametrize("driver", [d for d in QUEUED_DRIVERS if d in ("sqlite", "redis", "postgres")])
async def test_worker_processes_batch_on_durable_drivers(driver: str, tmp_path: Path) -> None:
    """Two ``khadem-nb worker`` processes (concurrency 2 each) drain 64 batched jobs: every
    result is right, and calls held more jobs than a worker has consumers."""
    if driver == "redis":
        need_redis()
    config = driver_config(driver, tmp_path)
    async with QueueManager(config) as manager:
        await manager.driver.purge()
        ids = [await manager.dispatch(Square(n)) for n in range(64)]
        url = manager.settings.url if driver != "sqlite" else f"sqlite:///{config['queue']['path']}"
        if driver == "redis":
            url = f"{config['queue']['url']}?prefix={config['queue']['prefix']}"
        procs = [start_worker(url, "--burst", "--concurrency", "2") for _ in range(2)]
        finish(procs)
        records = [await manager.get_job(i) for i in ids]
        await manager.driver.purge()
    assert [r.result["square"] for r in records] == [n * n for n in range(64)]
    assert max(r.result["shared"] for r in records) > 2
