"""Checkpoints and preemption: ``kn.checkpoint`` saves a job's state (large parts in the artifact
store) fenced by its lease, ``kn.restore`` gives it back in the next attempt, a worker told to
stop sets ``kn.preempted()``, and a job that raises ``kn.Preempted`` goes back to the queue
without spending an attempt; its next attempt resumes from its last checkpoint. Checked with
real ``khadem-nb worker`` processes sent SIGTERM (and SIGUSR1, Slurm's warning) mid-run."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import QUEUED_DRIVERS, driver_config
from jobs import Counts, StaleCheckpoint
from procs import finish, start_worker

import khadem_nb as kn
from khadem_nb import JobStatus, KhademError, QueueManager

UNINTERRUPTED = {"total": 5050, "w": float(2000 * 5050)}
PROCESS_DRIVERS = ("sqlite", "redis", "postgres")


def url_of(config: dict[str, dict[str, object]]) -> str:
    section = config["queue"]
    if "url" in section:
        return str(section["url"]) + (f"?prefix={section['prefix']}" if "prefix" in section else "")
    return f"sqlite:///{section['path']}"


async def wait_for(predicate_of, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate_of():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("driver", QUEUED_DRIVERS)
async def test_a_stopped_worker_gives_a_checkpointed_job_back_without_an_attempt(driver: str,
                                                                                tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    async with QueueManager(driver_config(driver, tmp_path)) as manager:
        await manager.driver.purge()
        job_id = await manager.dispatch(Counts(str(log), pause=0.01), max_attempts=1)
        worker = await manager.start_worker(run_in_background=True)

        async def checkpointed() -> bool:
            return (await manager.get_job(job_id)).meta.get("checkpoint") is not None

        await wait_for(checkpointed)
        await worker.stop(grace=10)
        record = await manager.get_job(job_id)
        assert record.status is JobStatus.QUEUED and record.attempt == 0  # no attempt spent
        worker = await manager.start_worker(run_in_background=True)
        try:
            done = (await manager.wait([job_id], timeout=60))[0]
        finally:
            await worker.stop()
        assert done.status is JobStatus.COMPLETED and done.result == UNINTERRUPTED
        assert done.attempt == 1 and done.meta.get("checkpoint") is None  # unpointed once done
        steps = [int(line) for line in log.read_text().split()]
        assert sorted(set(steps)) == list(range(1, 101)) and len(steps) == 100  # nothing redone
        await manager.driver.purge()


@pytest.mark.parametrize("driver", PROCESS_DRIVERS)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_worker_process_signalled_mid_run_resumes_from_the_checkpoint(driver: str, signum: int,
                                                                        tmp_path: Path) -> None:
    config = driver_config(driver, tmp_path)
    url, log = url_of(config), tmp_path / "steps.log"

    async def dispatch() -> str:
        async with QueueManager(config) as manager:
            await manager.driver.purge()
            return await manager.dispatch(Counts(str(log), pause=0.02))

    async def checkpointed(job_id: str, at_least: int) -> None:
        async with QueueManager(config) as manager:
            async def enough() -> bool:
                stored = (await manager.get_job(job_id)).meta.get("checkpoint")
                return stored is not None and stored["step"] >= at_least
            await wait_for(enough)

    async def result(job_id: str) -> kn.JobRecord:
        async with QueueManager(config) as manager:
            try:
                return (await manager.wait([job_id], timeout=60))[0]
            finally:
                await manager.driver.purge()

    job_id = asyncio.run(dispatch())
    for at_least in (20, 50):  # preempted twice, at different steps
        worker = start_worker(url, "--grace", "20")
        asyncio.run(checkpointed(job_id, at_least))
        os.kill(worker.pid, signum)
        finish([worker], timeout=60)
    finish([start_worker(url, "--burst")], timeout=60)
    done = asyncio.run(result(job_id))
    assert done.status is JobStatus.COMPLETED and done.result == UNINTERRUPTED
    assert done.attempt == 1  # the two preemptions spent none
    steps = [int(line) for line in log.read_text().split()]
    assert sorted(set(steps)) == list(range(1, 101)) and len(steps) == 100


async def test_restore_gives_the_last_checkpoint_to_the_next_attempt(tmp_path: Path) -> None:
    """A retried attempt (an attempt spent) also starts from the checkpoint; checkpoint()
    outside a job is a clear error."""
    log = tmp_path / "steps.log"

    class FailsOnce(Counts):
        retry_delay = 0.01

        def handle(self) -> dict[str, object]:
            if kn.restore() is None:
                total = sum(range(31))
                kn.checkpoint({"step": 30, "total": total, "w": np.full(2000, float(total))})
                raise RuntimeError("crashed after its checkpoint")
            return super().handle()

    async with QueueManager("memory://") as manager:
        job_id = await manager.dispatch(FailsOnce(str(log), pause=0.0), max_attempts=2)
        worker = await manager.start_worker(run_in_background=True)
        try:
            done = (await manager.wait([job_id], timeout=30))[0]
        finally:
            await worker.stop()
    assert done.status is JobStatus.COMPLETED and done.result == UNINTERRUPTED and done.attempt == 2
    assert [int(line) for line in log.read_text().split()] == list(range(31, 101))
    with pytest.raises(KhademError, match="checkpoint\\(\\) was called outside a running job"):
        kn.checkpoint({"step": 1})


@pytest.mark.parametrize("driver", PROCESS_DRIVERS)
async def test_a_stale_holder_cannot_move_the_checkpoint(driver: str, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A holder whose token is no longer the record's: its checkpoint is refused (the job
    fails there with why), and so is its settle, so the record stays with its lease, which
    expires for another worker to reclaim the job."""
    async with QueueManager(driver_config(driver, tmp_path)) as manager:
        await manager.driver.purge()
        stale = await manager.dispatch(StaleCheckpoint(), max_attempts=1)
        await manager.start_worker(burst=True)
        record = await manager.get_job(stale)
        await manager.driver.purge()
    assert record.status is JobStatus.ACTIVE and record.meta.get("checkpoint") is None
    assert "refused: this worker no longer holds it" in caplog.text
