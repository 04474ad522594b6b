"""What the dashboard shows, computed once a second however many pages poll it.

``Overview.read`` gathers counts per queue and status, the running jobs, the latest failures and
throughput over the last hour. Throughput comes from finished records: each refresh reads the
newest completed and failed records and keeps their finish times by id for an hour (a record
seen twice counts once). When every record a read returned was new, some may have been missed,
so the next read takes twice as many (up to ``MAX_WINDOW``); the chart counts what retention
keeps long enough to be read.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..job import JobRecord, JobStatus
from ..manager import QueueManager
from ..metrics import finished_series

REFRESH_S = 1.0  # the overview is computed at most this often
HOUR_MS = 3_600_000
BUCKET_MS = 60_000  # one bar a minute
MIN_WINDOW, MAX_WINDOW = 200, 20_000  # finished records one refresh reads, per status
RUNNING_SHOWN = 50
FAILURES_SHOWN = 20


class FinishedLog:
    """Finish times of the jobs seen finished in the last hour, by id."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, bool]] = {}
        self.window = MIN_WINDOW

    def add(self, records: list[JobRecord], now_ms: int) -> None:
        new = 0
        for record in records:
            if record.id not in self.seen and record.finished_ms is not None:
                self.seen[record.id] = (record.finished_ms, record.status is JobStatus.FAILED)
                new += 1
        if records and new == len(records):
            self.window = min(MAX_WINDOW, self.window * 2)
        elif new < len(records) // 4:
            self.window = max(MIN_WINDOW, self.window // 2)
        cutoff = now_ms - HOUR_MS
        self.seen = {job_id: point for job_id, point in self.seen.items() if point[0] >= cutoff}


class Overview:
    """The dashboard's one computation, shared by every client for ``REFRESH_S``."""

    def __init__(self, manager: QueueManager) -> None:
        self.manager = manager
        self.log = FinishedLog()
        self._lock = asyncio.Lock()
        self._cached: dict[str, Any] | None = None
        self._cached_at = 0.0

    async def read(self) -> dict[str, Any]:
        async with self._lock:
            if self._cached is None or time.monotonic() - self._cached_at >= REFRESH_S:
                self._cached = await self._compute()
                self._cached_at = time.monotonic()
            return self._cached

    async def _compute(self) -> dict[str, Any]:
        manager = self.manager
        queues = await manager.driver.queue_names() or [manager.settings.name]
        counts = {queue: await manager.counts(queue) for queue in queues}
        window = self.log.window
        completed = await manager.driver.jobs(JobStatus.COMPLETED, limit=window)
        failed = await manager.driver.jobs(JobStatus.FAILED, limit=window)
        now_ms = time.time_ns() // 1_000_000
        self.log.add(completed + failed, now_ms)
        done, broke = finished_series(self.log.seen.values(), now_ms, BUCKET_MS, HOUR_MS // BUCKET_MS)
        running = await manager.driver.jobs(JobStatus.ACTIVE, limit=RUNNING_SHOWN)
        return {
            "now_ms": now_ms,
            "queue_url": manager.settings.redacted_url(),
            "counts": counts,
            "totals": {status.value: sum(c[status.value] for c in counts.values()) for status in JobStatus},
            "throughput": {"bucket_s": BUCKET_MS // 1000, "completed": done, "failed": broke},
            "running": [running_row(r, now_ms) for r in reversed(running)],
            "failures": [failure_row(r) for r in reversed(failed[-FAILURES_SHOWN:])],
        }


def running_row(record: JobRecord, now_ms: int) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "queue": record.queue,
            "progress": record.meta.get("progress"), "note": record.meta.get("note"),
            "attempt": record.attempt, "running_s": (now_ms - (record.started_ms or now_ms)) / 1000}


def failure_row(record: JobRecord) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "queue": record.queue, "error": record.error,
            "failure": record.failure, "traceback": record.traceback, "finished_ms": record.finished_ms,
            "attempt": record.attempt}


def record_json(record: JobRecord) -> dict[str, Any]:
    """A record for the job page and the API: the stored fields, output and times included."""
    data = record.to_dict()
    data["status"] = record.status.value
    data["output"] = record.meta.get("output")
    return data
