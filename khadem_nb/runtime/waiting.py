"""Waiting until jobs have finished (completed or failed), on any driver.

Three things wake a waiter: settles by workers of this process (the executor's listeners), settle
notices from other processes where the driver hears them (``QueueDriver.watch``; Redis
publishes each settled id with its new status), and polling with backoff as the fallback for
drivers that cannot hear other processes. A notice that names a finished status ends the wait
for that job without reading it again; only the final records are read, in one call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ..artifacts.store import load
from ..drivers.base import NO_RESULT, QueueDriver
from ..errors import JobCancelledError, JobFailedError, JobNotFoundError, ResultTimeoutError
from ..job import TERMINAL_STATUSES, JobRecord, JobStatus
from ..serializer import decode_value

POLL_MIN_S, POLL_MAX_S = 0.02, 0.5  # polling for jobs other processes run, when nothing is heard
WAKE_BATCH_S = 0.01  # a group woken by a notice without a status gathers more before re-reading
NOT_FOUND_HINT = ": never stored here, or finished and dropped by retention (queue.retention)"


class SettleNotices:
    """Collects notices about the awaited ids: which finished, and whether one needs a re-read."""

    def __init__(self, job_ids: Sequence[str]) -> None:
        self.wanted = set(job_ids)
        self.fresh: list[str] = []  # ids finished since the waiter last looked
        self.results: dict[str, Any] = {}  # encoded results of completions whose notice carried them
        self.unclear = False  # a notice without a status arrived: statuses must be read again
        self.event = asyncio.Event()

    def __call__(self, job_id: str, status: JobStatus | None, result: Any = NO_RESULT) -> None:
        if job_id not in self.wanted:
            return
        if status is None:
            self.unclear = True
        elif status in TERMINAL_STATUSES:
            self.fresh.append(job_id)
            if status is JobStatus.COMPLETED and result is not NO_RESULT:
                self.results[job_id] = result
        else:  # retried or given back: still pending, nothing to look at
            return
        self.event.set()

    def take_fresh(self) -> list[str]:
        """Ids finished since the last call (so a waiter on many jobs never rescans them all)."""
        fresh, self.fresh = self.fresh, []
        return fresh


async def wait_for_jobs(driver: QueueDriver, listeners: list[Callable[[JobRecord], None]],
                        job_ids: Sequence[str], timeout: float | None, *, location: str) -> list[JobRecord]:
    """Wait until every job in ``job_ids`` is completed or failed and return their records.

    ``listeners`` are the executor's settle listeners of this process. Raises
    ``ResultTimeoutError`` after ``timeout`` seconds and ``JobNotFoundError`` for an unknown id.
    """
    ids = list(dict.fromkeys(job_ids))
    await wait_for_finish(driver, listeners, ids, timeout, location=location)
    return await read_records(driver, ids, location)


async def wait_for_finish(driver: QueueDriver, listeners: list[Callable[[JobRecord], None]],
                          job_ids: Sequence[str], timeout: float | None, *, location: str) -> None:
    """Wait until every job in ``job_ids`` is completed or failed, reading no records (a job
    that finished and was then dropped by retention still counts as finished)."""
    ids = list(dict.fromkeys(job_ids))
    notices = SettleNotices(ids)
    async with watch(driver, listeners, notices):
        await wait_until_finished(driver, ids, timeout, notices, location, read_first=True)


@contextlib.asynccontextmanager
async def watch(driver: QueueDriver, listeners: list[Callable[[JobRecord], None]],
                notices: SettleNotices) -> AsyncIterator[SettleNotices]:
    """Feed ``notices`` with local settles and with what the driver hears from other processes."""

    def local(record: JobRecord) -> None:
        notices(record.id, record.status, record.result)

    unwatch = await driver.watch(list(notices.wanted), notices)
    listeners.append(local)
    try:
        yield notices
    finally:
        listeners.remove(local)
        unwatch()


async def wait_until_finished(driver: QueueDriver, ids: list[str], timeout: float | None,
                              notices: SettleNotices, location: str, *, read_first: bool) -> None:
    """Return once no id in ``ids`` is pending. ``read_first=False`` is for ``notices`` watched
    since before the jobs were pushed (``dispatch_and_wait``): nothing can have been missed, so
    statuses are read only when a wait times out or a notice had none."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    pending, read, poll = set(ids), read_first, POLL_MIN_S
    while True:
        notices.event.clear()  # notices from here on wake the wait below
        pending.difference_update(notices.take_fresh())  # before a read: retention may drop them
        if read and pending:
            pending = set(await _unfinished(driver, list(pending), location))
        if not pending:
            return
        wait = poll if deadline is None else min(poll, deadline - loop.time())
        if wait <= 0:
            raise ResultTimeoutError(f"{len(pending)} of {len(ids)} job(s) still unfinished "
                                     f"after {timeout:g}s")
        woken = await woken_within(notices.event, wait)
        read = not woken or notices.unclear  # a silent timeout polls; a clear notice needs no read
        notices.unclear = False
        if woken and len(pending) > 1:  # many jobs settling: gather more before looking again
            await asyncio.sleep(WAKE_BATCH_S)
        poll = min(POLL_MAX_S, poll * 1.5)


async def wait_until_idle(driver: QueueDriver, listeners: list[Callable[[JobRecord], None]],
                          queue: str | None, timeout: float | None) -> None:
    """Return once ``queue`` (every queue if ``None``) has nothing queued, scheduled or
    running. Woken by settles of this process, else by polling the counts with backoff."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    settled = asyncio.Event()

    def local(record: JobRecord) -> None:
        settled.set()

    listeners.append(local)
    try:
        poll = POLL_MIN_S
        while True:
            settled.clear()
            counts = await driver.counts(queue)
            busy = {s.value: n for s, n in counts.items() if s not in TERMINAL_STATUSES and n}
            if not busy:
                return
            wait = poll if deadline is None else min(poll, deadline - loop.time())
            if wait <= 0:
                raise ResultTimeoutError(f"queue still busy after {timeout:g}s: {busy}")
            await woken_within(settled, wait)
            poll = min(POLL_MAX_S, poll * 1.5)
    finally:
        listeners.remove(local)


async def woken_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):  # unlike wait_for, no task of its own
            return await event.wait()
    return False


async def _unfinished(driver: QueueDriver, pending: list[str], location: str) -> list[str]:
    statuses = await driver.statuses(pending)
    if None in statuses:
        missing = pending[statuses.index(None)]
        raise JobNotFoundError(f"no job with id {missing!r} in {location}{NOT_FOUND_HINT}")
    return [i for i, s in zip(pending, statuses, strict=True) if s not in TERMINAL_STATUSES]


async def read_records(driver: QueueDriver, ids: Sequence[str], location: str) -> list[JobRecord]:
    """The records of ``ids`` in one driver call; ``JobNotFoundError`` names a missing one."""
    records = await driver.get_many(ids)
    missing = [job_id for job_id, r in zip(ids, records, strict=True) if r is None]
    if missing:
        raise JobNotFoundError(f"no job with id {missing[0]!r} (of {len(missing)} missing) in "
                               f"{location}{NOT_FOUND_HINT}")
    return [r for r in records if r is not None]


def outcome(record: JobRecord) -> Any:
    """The decoded result of a finished record, the values it keeps in the artifact store
    loaded; ``JobFailedError`` if it failed, ``JobCancelledError`` if it was cancelled."""
    if record.status is JobStatus.FAILED:
        raise JobFailedError(record)
    if record.status is JobStatus.CANCELLED:
        raise JobCancelledError(record)
    if record.status is not JobStatus.COMPLETED:
        raise ResultTimeoutError(f"job {record.id} is still {record.status.value}")
    return load(decode_value(record.result))
