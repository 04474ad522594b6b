"""In-process queue: a heap per queue for ready jobs, one for delayed jobs, and a condition.

Payloads are stored as JSON text and parsed again at claim, so a job behaves the same here as
on a durable driver (and mutating an argument after dispatch changes nothing). Nothing survives the
process. Finished records beyond ``queue.retention`` are dropped oldest first (completed ones
only: failed records stay until retried or purged).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from .._time import now_ms
from ..config import QueueSettings
from ..job import JobRecord, JobStatus
from ..serializer import dumps
from .base import QueueDriver, claim, empty_counts

# The C scanner behind json.loads, without its Python wrappers: payloads here are our own output.
_parse_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


class MemoryDriver(QueueDriver):
    """The default driver: one process, priority (higher first), FIFO within one, delays."""

    def __init__(self, settings: QueueSettings) -> None:
        super().__init__(settings)
        self._records: dict[str, JobRecord] = {}
        self._ready: dict[str, list[tuple[int, int, str]]] = {}
        self._delayed: dict[str, list[tuple[int, int, str]]] = {}
        self._completed: deque[str] = deque()
        self._seq = itertools.count()
        self._condition: asyncio.Condition | None = None
        self._wake_generation = 0
        self._waiting = 0

    def _cond(self) -> asyncio.Condition:
        if self._condition is None:
            self._condition = asyncio.Condition()
        return self._condition

    async def push(self, records: Sequence[JobRecord]) -> None:
        for record in records:  # the driver owns pushed records from here on
            record.payload = dumps(record.payload)
            self._records[record.id] = record
            self._enqueue(record)
        await self._notify(len(records))

    def _enqueue(self, record: JobRecord) -> None:
        seq = next(self._seq)
        if record.available_ms > now_ms() and self._honours_delay():
            record.status = JobStatus.SCHEDULED
            heapq.heappush(self._delayed.setdefault(record.queue, []), (record.available_ms, seq, record.id))
        else:
            record.status = JobStatus.QUEUED
            heapq.heappush(self._ready.setdefault(record.queue, []), (-record.priority, seq, record.id))

    def _honours_delay(self) -> bool:
        return True

    def interrupt_waits(self) -> None:
        self._wake_generation += 1
        if self._condition is not None:
            asyncio.get_running_loop().create_task(self._notify_all())

    async def _notify_all(self) -> None:
        cond = self._cond()
        async with cond:
            cond.notify_all()

    async def reserve(self, queues: Sequence[str], limit: int, wait_s: float) -> list[JobRecord]:
        claimed = self._take(queues, limit)  # fast path: no lock when work is there
        if claimed or wait_s <= 0:
            return claimed
        deadline = time.monotonic() + wait_s
        generation = self._wake_generation
        cond = self._cond()
        async with cond:
            while True:
                claimed = self._take(queues, limit)
                remaining = deadline - time.monotonic()
                if claimed or remaining <= 0 or generation != self._wake_generation:
                    return claimed
                self._waiting += 1
                try:
                    await asyncio.wait_for(cond.wait(), min(remaining, self._until_next_due(queues)))
                except TimeoutError:
                    pass
                finally:
                    self._waiting -= 1

    def _take(self, queues: Sequence[str], limit: int) -> list[JobRecord]:
        claimed: list[JobRecord] = []
        now = now_ms()
        for queue in queues:
            self._promote_due(queue, now)
            heap = self._ready.get(queue)
            while heap and len(claimed) < limit:
                record = self._records.get(heapq.heappop(heap)[2])
                if record is not None and record.status is JobStatus.QUEUED:
                    claimed.append(self._thaw(claim(record, now, None)))
            if len(claimed) >= limit:
                break
        return claimed

    @staticmethod
    def _thaw(stored: JobRecord) -> JobRecord:
        record = stored.copy()
        record.payload = _parse_json(stored.payload, 0)[0]
        return record

    def _promote_due(self, queue: str, now: int) -> None:
        delayed = self._delayed.get(queue)
        while delayed and delayed[0][0] <= now:
            record = self._records.get(heapq.heappop(delayed)[2])
            if record is not None and record.status is JobStatus.SCHEDULED:
                record.status = JobStatus.QUEUED
                entry = (-record.priority, next(self._seq), record.id)
                heapq.heappush(self._ready.setdefault(queue, []), entry)

    def _until_next_due(self, queues: Sequence[str]) -> float:
        due = [self._delayed[q][0][0] for q in queues if self._delayed.get(q)]
        return max(0.001, (min(due) - now_ms()) / 1000) if due else 3600.0

    async def _settle(self, record: JobRecord, token: str | None) -> bool:
        stored = self._records.get(record.id)
        if stored is None or stored.status is not JobStatus.ACTIVE or stored.token != token:
            return False
        record.token = None
        updated = record  # the worker is done with its copy: store it, payload frozen again
        updated.payload = stored.payload
        self._records[record.id] = updated
        if updated.status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            self._enqueue(updated)
            await self._notify(1)
        elif updated.status is JobStatus.COMPLETED:
            self._remember_completed(updated.id)
        return True

    async def _notify(self, n: int) -> None:
        if not self._waiting or not n:
            return
        cond = self._cond()
        async with cond:
            cond.notify(n)

    def _remember_completed(self, job_id: str) -> None:
        self._completed.append(job_id)
        while len(self._completed) > self.settings.retention:
            old = self._records.get(self._completed.popleft())
            if old is not None and old.status is JobStatus.COMPLETED:
                del self._records[old.id]

    async def update_meta(self, record: JobRecord, meta: dict[str, Any]) -> bool:
        stored = self._records.get(record.id)
        if stored is None or stored.token != record.token:
            return False
        stored.meta.update(meta)
        return True

    async def get(self, job_id: str) -> JobRecord | None:
        stored = self._records.get(job_id)
        return None if stored is None else self._view(stored)

    def _view(self, stored: JobRecord) -> JobRecord:
        view = self._thaw(stored)
        if view.status is JobStatus.SCHEDULED and view.available_ms <= now_ms():
            view.status = JobStatus.QUEUED
        return view

    async def list(self, status: JobStatus | None = None, queue: str | None = None,
                   limit: int | None = None) -> list[JobRecord]:
        views = (self._view(r) for r in self._records.values() if queue is None or r.queue == queue)
        selected = [v for v in views if status is None or v.status is status]
        return selected[-limit:] if limit else selected

    async def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        counts = empty_counts()
        for record in await self.list(queue=queue):
            counts[record.status] += 1
        return counts

    async def requeue(self, job_ids: Iterable[str]) -> int:
        count = 0
        for job_id in job_ids:
            stored = self._records.get(job_id)
            if stored is not None and stored.status is JobStatus.FAILED:
                stored.attempt = 0
                stored.reclaims = 0
                stored.available_ms = now_ms()
                stored.finished_ms = None
                self._enqueue(stored)
                count += 1
        await self._notify(count)
        return count

    async def purge(self) -> None:
        self._records.clear()
        self._ready.clear()
        self._delayed.clear()
        self._completed.clear()
