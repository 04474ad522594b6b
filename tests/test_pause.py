"""Queue-wide pause: a paused queue's jobs are claimed by no worker, in this process or any
other, while dispatch goes on; resume lets every worker drain them. The flag is read inside
each driver's claim, so a claim that starts after ``pause_queue`` returns takes nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SHARED_DRIVERS, driver_config
from jobs import RUN_LOG, Echo
from procs import env, finish, start_worker

from khadem_nb import JobStatus, QueueManager


async def test_a_paused_queue_is_claimed_by_no_worker_until_resumed(queued_manager: QueueManager) -> None:
    manager = queued_manager
    worker = await manager.start_worker(run_in_background=True, concurrency=3, delay=0.02)
    try:
        await manager.pause_queue()
        assert await manager.paused_queues() == ["default"]
        ids = [await manager.dispatch(Echo(i)) for i in range(5)]  # dispatch goes on
        await asyncio.sleep(0.5)
        assert RUN_LOG == [] and (await manager.counts())["queued"] == 5
        await manager.pause_queue("later")  # a queue with no job yet may be paused
        assert await manager.paused_queues() == ["default", "later"]
        assert await manager.resume_queue() is True
        done = await manager.wait(ids, timeout=30)
        assert [r.status for r in done] == [JobStatus.COMPLETED] * 5
        assert await manager.resume_queue() is False  # not paused: nothing to do
        assert await manager.resume_queue("later") is True
        assert await manager.paused_queues() == []
    finally:
        await worker.stop()


@pytest.mark.parametrize("driver", SHARED_DRIVERS)
def test_a_pause_from_the_command_line_stops_three_worker_processes(driver: str, tmp_path: Path) -> None:
    config = driver_config(driver, tmp_path)
    section = config["queue"]
    url = {"sqlite": f"sqlite:///{section.get('path')}", "file": f"file://{section.get('path')}",
           "redis": f"{section.get('url')}?prefix={section.get('prefix')}"}.get(driver, section.get("url"))
    cli = [sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING"]

    async def dispatch(n: int) -> list[str]:
        async with QueueManager(config) as manager:
            return [await manager.dispatch(Echo(i)) for i in range(n)]

    async def statuses(ids: list[str]) -> list[JobStatus | None]:
        async with QueueManager(config) as manager:
            return await manager.statuses(ids)

    workers = [start_worker(url, "--concurrency", "2") for _ in range(3)]
    try:
        asyncio.run(dispatch(3))  # the workers are up and claiming
        paused = subprocess.run([*cli, "pause", "--queue-url", url], env=env(), capture_output=True,
                                text=True, timeout=60)
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
        ids = asyncio.run(dispatch(30))
        time.sleep(1.5)
        assert set(asyncio.run(statuses(ids))) == {JobStatus.QUEUED}
        resumed = subprocess.run([*cli, "resume", "--queue-url", url], env=env(), capture_output=True,
                                 text=True, timeout=60)
        assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
        deadline = time.monotonic() + 60
        while set(asyncio.run(statuses(ids))) != {JobStatus.COMPLETED}:
            assert time.monotonic() < deadline, "the resumed queue did not drain"
            time.sleep(0.2)
        again = subprocess.run([*cli, "resume", "--queue-url", url], env=env(), capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 0 and "was not paused" in again.stdout
    finally:
        for worker in workers:
            worker.terminate()
        finish(workers, timeout=60)

        async def purge() -> None:
            async with QueueManager(config) as manager:
                await manager.driver.purge()
        asyncio.run(purge())


def test_the_panel_pauses_the_queue_everywhere_and_says_so(tmp_path: Path) -> None:
    import khadem_nb as kn

    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        panel = q.panel()
        assert (panel.buttons[0]["name"], panel.buttons[0]["label"]) == ("pause", "Pause here")
        panel.click("pause_queue")
        deadline = time.monotonic() + 10
        while not q.paused_everywhere:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        while not (snap := q.run(panel.snapshot())).queue_paused:  # the panel reads the flag every 2 s
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "queue paused everywhere" in panel._summary_html(snap)
        panel.click("resume_queue")
        while q.paused_everywhere:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        q.pause(everywhere=True)
        assert q.paused_everywhere and q.resume(everywhere=True) is True
        panel.close()
    finally:
        q.close()
