"""A job encoded and checked but not yet stored: what a dispatch builds first, and what a
schedule keeps to build the job of each of its slots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._ids import new_job_id
from .job import QUEUED, SCHEDULED, JobRecord


@dataclass(slots=True)
class Draft:
    """A job encoded and checked, everything about it that can be wrong, not yet a record
    (no id, no creation time)."""

    name: str
    payload: Any
    queue: str
    priority: int
    max_attempts: int
    delay_ms: int
    timeout_s: float | None
    key: str | None
    code: str
    keep_ms: int | None = None
    lane: str | None = None
    lane_rule: str | None = None
    #: the jobs it runs after, what their failure does, what it is given (``dependencies``)
    parents: list[str] | None = None
    on_upstream_failure: str | None = None
    feed: str | None = None

    def record(self, now: int) -> JobRecord:
        """The record of this job, created at ``now``, with a fresh id."""
        # JobRecord's first ten fields in order: keyword arguments to its 21-field constructor
        # cost a memory-queue job more than 5 % end to end (see bench/RESULTS.md)
        record = JobRecord(new_job_id(), self.name, self.payload, self.queue, self.priority, 0,
                           self.max_attempts, SCHEDULED if self.delay_ms > 0 else QUEUED, now,
                           now + self.delay_ms)
        if self.timeout_s is not None:
            record.timeout_s = self.timeout_s
        if self.key is not None:
            record.key = self.key
        record.code = self.code
        if self.keep_ms is not None:
            record.keep_ms = self.keep_ms
        if self.lane is not None:
            record.lane, record.lane_rule = self.lane, self.lane_rule
        if self.parents:
            record.parents, record.on_upstream_failure = self.parents, self.on_upstream_failure
            record.feed = self.feed
        return record
