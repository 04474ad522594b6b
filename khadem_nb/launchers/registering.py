"""Waiting for launched workers to register: each writes its entry among the queue's workers
(``presence``) once it has opened the queue. A worker that exits first, or does not register
within the start timeout, is a ``LaunchError`` carrying its last output lines, and its entry
says ``failed`` so that ``workers()`` shows it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ..drivers.base import QueueDriver
from ..errors import LaunchError
from ..runtime.presence import PRESENCE_PREFIX, announce
from .handle import LaunchedWorker

OUTPUT_SETTLE_S = 0.5  # how long a worker that exited gets for its last output to arrive


async def wait_registered(driver: QueueDriver, workers: Sequence[LaunchedWorker], timeout: float) -> None:
    """Return once every worker of ``workers`` wrote its entry (or waits in a batch system's
    line); ``LaunchError`` naming the first that exited at start or did not register within
    ``timeout`` (it is stopped)."""
    deadline = time.monotonic() + timeout
    waiting = {w.name: w for w in workers}
    while waiting:
        registered = await driver.kv_scan(PRESENCE_PREFIX)
        for name, worker in list(waiting.items()):
            if f"{PRESENCE_PREFIX}{name}" in registered:
                del waiting[name]
                await worker.registered()
            elif worker.waits_in_line():
                del waiting[name]
        for worker in list(waiting.values()):
            if worker.exited():
                await asyncio.sleep(OUTPUT_SETTLE_S)
                status = worker.exit_status()
                await fail(driver, worker, "exited at start" if status is None
                           else f"exited with status {status} at start")
        if waiting and time.monotonic() > deadline:
            worker = next(iter(waiting.values()))
            await worker.terminate(grace=0)
            await fail(driver, worker, f"did not register within {timeout:g}s")
        if waiting:
            await asyncio.sleep(0.1)


async def fail(driver: QueueDriver, worker: LaunchedWorker, why: str) -> None:
    """Mark ``worker`` failed (its entry too) and raise its ``LaunchError``."""
    worker.failure = worker.last_lines()
    await announce(driver, {"name": worker.name, "host": worker.host, "launcher": worker.launcher,
                            "state": "failed", "started": None, "last_seen": None, "output": worker.failure})
    raise LaunchError(f"worker {worker.name} ({worker.launcher} on {worker.host}) {why}; its last output:\n"
                      f"{worker.failure}")
