"""What the dashboard shows, computed once a second however many pages poll it.

``Overview.read`` gathers counts per queue and status, the running jobs, the latest failures and
throughput over the last hour. Throughput is counted by the driver in one-minute windows of
finish time (``QueueDriver.finished_counts``: set counts on Redis, one GROUP BY in SQL). The
overview keeps the highest count it has seen for each minute, so a minute stays counted after
retention drops its records, as long as a refresh saw them first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..job import JobRecord, JobStatus
from ..manager import QueueManager

logger = logging.getLogger(__name__)

REFRESH_S = 1.0  # the overview is computed at most this often
QUEUES_REFRESH_S = 10.0  # the queue names are read this often (a scan of every record in SQL)
BUCKET_MS = 60_000  # one bar a minute
BUCKETS = 60  # an hour
RUNNING_SHOWN = 50
FAILURES_SHOWN = 20
WORKERS_SHOWN = 100
WORKER_FIELDS = ("name", "host", "launcher", "state", "concurrency", "jobs_done", "last_seen", "python")


class MinuteCounts:
    """Completed and failed jobs per minute (minutes since the epoch), the highest seen."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[int, int]] = {}

    async def refresh(self, manager: QueueManager, now_ms: int) -> tuple[list[int], list[int]]:
        first = now_ms // BUCKET_MS - BUCKETS + 1
        counted = await manager.driver.finished_counts(first * BUCKET_MS, BUCKET_MS)
        for index, (completed, failed) in counted.items():
            old = self.seen.get(first + index, (0, 0))
            self.seen[first + index] = (max(old[0], completed), max(old[1], failed))
        self.seen = {minute: counts for minute, counts in self.seen.items() if minute >= first}
        series = [self.seen.get(first + i, (0, 0)) for i in range(BUCKETS)]
        return [c for c, _ in series], [f for _, f in series]


class Overview:
    """The dashboard's one computation, shared by every client for ``REFRESH_S``."""

    def __init__(self, manager: QueueManager) -> None:
        self.manager = manager
        self.minutes = MinuteCounts()
        self._lock = asyncio.Lock()
        self._cached: dict[str, Any] | None = None
        self._cached_at = 0.0
        self._queues: list[str] = []
        self._queues_at = -1.0  # monotonic time of the last read of the queue names (-1: none yet)
        self._reading: asyncio.Task[None] | None = None

    def forget(self) -> None:
        """Compute afresh at the next read (an action changed what the page shows)."""
        self._cached = None

    async def read(self) -> dict[str, Any]:
        async with self._lock:
            if self._cached is None or time.monotonic() - self._cached_at >= REFRESH_S:
                self._cached = await self._compute()
                self._cached_at = time.monotonic()
            return self._cached

    async def _compute(self) -> dict[str, Any]:
        manager = self.manager
        await self._queue_names()
        paused = await manager.paused_queues()
        queues = sorted({*(self._queues or [manager.settings.name]), *paused})
        counts, marks = await self._counts(queues)
        now_ms = time.time_ns() // 1_000_000
        done, broke = await self.minutes.refresh(manager, now_ms)
        failed = await manager.driver.jobs(JobStatus.FAILED, limit=FAILURES_SHOWN)
        running = await manager.driver.jobs(JobStatus.ACTIVE, limit=RUNNING_SHOWN)
        return {
            "now_ms": now_ms,
            "queue_url": manager.settings.redacted_url(),
            "counts": counts,
            "totals": {status.value: sum(c[status.value] for c in counts.values()) for status in JobStatus},
            # the figures that are not exact (``QueueDriver.rough_counts``): "≈" or "≥", by queue
            # and status, and "*" for the totals
            "marks": marks,
            "throughput": {"bucket_s": BUCKET_MS // 1000, "completed": done, "failed": broke},
            "running": [running_row(r, now_ms) for r in reversed(running)],
            "workers": [worker_row(e) for e in await manager.list_workers()][:WORKERS_SHOWN],
            "paused": paused,
            "failures": [failure_row(r) for r in reversed(failed)],
        }

    async def _queue_names(self) -> None:
        """The queue names, read every QUEUES_REFRESH_S (in SQL a scan of every record): the
        first read is waited for, later ones run beside the refreshes, which use the names
        read last meanwhile."""
        if self._queues_at < 0:
            await self._read_queue_names()
        elif time.monotonic() - self._queues_at >= QUEUES_REFRESH_S and (
                self._reading is None or self._reading.done()):
            self._reading = asyncio.get_running_loop().create_task(self._read_queue_names())

    async def _read_queue_names(self) -> None:
        try:
            self._queues = await self.manager.driver.queue_names()
        except Exception as exc:  # the storage is away: the next refresh says so; try again later
            logger.warning("the dashboard could not read the queue names: %s", exc)
        self._queues_at = time.monotonic()

    async def _counts(self, queues: list[str]) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, str]]]:
        """Each queue's counts by status, cheap above EXACT_COUNT_LIMIT records a status
        (``rough_counts``: one queue in use is counted without a queue filter)."""
        driver = self.manager.driver
        counts: dict[str, dict[str, int]] = {}
        marks: dict[str, dict[str, str]] = {}
        for queue in queues:
            found, marked = await driver.rough_counts(None if len(queues) == 1 else queue)
            counts[queue] = {status.value: n for status, n in found.items()}
            marks[queue] = {status.value: mark for status, mark in marked.items()}
        totals: dict[str, str] = {}
        for marked_here in marks.values():
            for status, mark in marked_here.items():
                totals[status] = "≈" if "≈" in (mark, totals.get(status)) else mark
        marks["*"] = totals
        return counts, marks


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


def worker_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A worker's entry as the dashboard shows it: no package list, a failed worker's output."""
    row = {key: entry.get(key) for key in WORKER_FIELDS}
    row["queues"] = entry.get("queues") or []
    row["output"] = entry.get("output") if entry.get("state") == "failed" else None
    return row
