"""Helpers shared by the drivers that store whole records: how a waiting record reads, and
what an expired lease and a cancel do to a record."""

from __future__ import annotations

from .._time import now_ms
from ..job import ACTIVE, CANCELLED, Failure, JobRecord, JobStatus, cancel_error
from .base import LEASE_LOST_ERROR


def due_view(record: JobRecord) -> JobRecord:
    """A waiting record as a reader should see it: scheduled until its time, queued after."""
    if record.status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
        record.status = JobStatus.SCHEDULED if record.available_ms > now_ms() else JobStatus.QUEUED
    return record


def reclaim(record: JobRecord, now: int, max_reclaims: int) -> JobRecord:
    """A record whose lease expired: back to the queue, or failed after too many reclaims."""
    record.token = None
    record.lease_ms = None
    if record.reclaims >= max_reclaims:
        record.status = JobStatus.FAILED
        record.finished_ms = now
        record.error = LEASE_LOST_ERROR.format(n=record.reclaims + 1)
        record.traceback = None
        record.failure = Failure.LOST.value
    else:
        record.reclaims += 1
        record.status = JobStatus.QUEUED
        record.available_ms = now
        record.started_ms = None
    return record


def cancel(record: JobRecord, now: int, reason: str) -> JobStatus:
    """Make a WAITING, QUEUED, SCHEDULED or ACTIVE record CANCELLED; return the status it had. An active
    one keeps its token, so its holder's next settle is recognised and stops it."""
    was = due_view(record).status
    record.status = CANCELLED
    record.finished_ms = now
    record.lease_ms = None
    record.error, record.traceback = cancel_error(reason, was), None
    if was is not ACTIVE:
        record.token = None
    return was
