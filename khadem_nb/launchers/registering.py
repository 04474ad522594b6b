"""Waiting for launched workers to register: each writes its entry among the queue's workers
(``presence``) once it has opened the queue. A worker that exits first, or does not register
within the start timeout, is a ``LaunchError`` carrying its last output lines, and its entry
says ``failed`` so that ``workers()`` shows it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from .._time import now_ms
from ..drivers.base import QueueDriver
from ..errors import LaunchError
from ..runtime.presence import announce, read_entries
from .handle import LaunchedWorker

IN_LINE_S = 86_400.0  # how long a batch job waiting in its cluster's line reads "starting"
OUTPUT_SETTLE_S = 0.5  # how long a worker that exited gets for its last output to arrive


async def announce_starting(driver: QueueDriver, workers: Sequence[LaunchedWorker], timeout: float, *,
                            again: bool = False) -> None:
    """Each worker's entry, ``starting`` until it writes its own (or its start timeout passes).
    Written only where the worker has not written its own yet, unless ``again`` (a batch job
    still waiting in line, whose entry says ``starting`` already)."""
    now = now_ms()
    for worker in workers:
        await announce(driver, {"name": worker.name, "host": worker.host, "launcher": worker.launcher,
                                "state": "starting", "started": None, "last_seen": now,
                                "until": now + int(timeout * 1000)}, only_new=not again)


async def wait_registered(driver: QueueDriver, workers: Sequence[LaunchedWorker], timeout: float) -> None:
    """Return once every worker of ``workers`` wrote its entry (or waits in a batch system's
    line); ``LaunchError`` naming the first that exited at start or did not register within
    ``timeout`` (it is stopped)."""
    deadline = time.monotonic() + timeout
    await announce_starting(driver, workers, timeout)
    waiting = {w.name: w for w in workers}
    while waiting:
        registered = await _registered(driver)
        for name, worker in list(waiting.items()):
            if name in registered:
                del waiting[name]
                await worker.registered()
            elif worker.waits_in_line():
                del waiting[name]
                await announce_starting(driver, [worker], IN_LINE_S, again=True)
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


async def _registered(driver: QueueDriver) -> set[str]:
    """The names of the workers that wrote their own entry."""
    entries = await read_entries(driver)
    return {str(e["name"]) for e in entries if e.get("state") not in ("starting", "failed")}


async def fail(driver: QueueDriver, worker: LaunchedWorker, why: str) -> None:
    """Mark ``worker`` failed (its entry too) and raise its ``LaunchError``."""
    worker.failure = worker.last_lines()
    await announce(driver, {"name": worker.name, "host": worker.host, "launcher": worker.launcher,
                            "state": "failed", "started": None, "last_seen": None, "output": worker.failure})
    raise LaunchError(f"worker {worker.name} ({worker.launcher} on {worker.host}) {why}; its last output:\n"
                      f"{worker.failure}")
