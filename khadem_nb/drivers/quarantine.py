"""What a durable driver does with a stored record it cannot read whole.

Storage can be damaged by hand, by a bug elsewhere or by a disk: a field that is not JSON, a
status no version wrote, a count stored as text. Such a record is never allowed to stop the
queue. It is read as far as it can be, its damaged fields are reset to their defaults, its
payload is replaced by the reason, and its error says ``stored record unreadable: <reason>``.
Readers (``jobs()``, ``counts()``, ``get_job()``) show it with that reason; a claim hands it to
a worker, which fails it at once with the reason (no retry can help); the jobs behind it run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

from ..job import JobRecord, JobStatus
from ..serializer import UnreadablePayload

logger = logging.getLogger(__name__)

UNREADABLE = "stored record unreadable: "
_DEFAULTS = JobRecord(id="", name="", payload=None)
_TEXT = ("id", "name", "queue")
_INTEGERS = ("priority", "attempt", "max_attempts", "created_ms", "available_ms", "reclaims")
_OPTIONAL_INTEGERS = ("started_ms", "finished_ms", "lease_ms")
_OPTIONAL_TEXT = ("token", "key", "error", "traceback")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sound(r: JobRecord) -> bool:
    """Whether every field of ``r`` has its type: one expression, as every claim asks it."""
    return (type(r.id) is str and type(r.name) is str and type(r.queue) is str
            and type(r.priority) is int and type(r.attempt) is int and type(r.max_attempts) is int
            and type(r.created_ms) is int and type(r.available_ms) is int and type(r.reclaims) is int
            and (r.started_ms is None or type(r.started_ms) is int)
            and (r.finished_ms is None or type(r.finished_ms) is int)
            and (r.lease_ms is None or type(r.lease_ms) is int)
            and (r.token is None or type(r.token) is str) and (r.key is None or type(r.key) is str)
            and (r.error is None or type(r.error) is str)
            and (r.traceback is None or type(r.traceback) is str)
            and (r.timeout_s is None or type(r.timeout_s) in (int, float))
            and type(r.status) is JobStatus and type(r.meta) is dict)


def field_problems(record: JobRecord) -> list[str]:
    """What is wrong with the fields of a record read back from storage (nothing: ``[]``)."""
    if _sound(record):
        return []
    problems = [f"{name} is {getattr(record, name)!r}, not text" for name in _TEXT
                if not isinstance(getattr(record, name), str)]
    problems += [f"{name} is {getattr(record, name)!r}, not an integer" for name in _INTEGERS
                 if not _is_int(getattr(record, name))]
    problems += [f"{name} is {getattr(record, name)!r}, not an integer" for name in _OPTIONAL_INTEGERS
                 if getattr(record, name) is not None and not _is_int(getattr(record, name))]
    problems += [f"{name} is {getattr(record, name)!r}, not text" for name in _OPTIONAL_TEXT
                 if getattr(record, name) is not None and not isinstance(getattr(record, name), str)]
    if not isinstance(record.status, JobStatus):
        problems.append(f"status {record.status!r} is not one of {', '.join(s.value for s in JobStatus)}")
    if record.timeout_s is not None and (isinstance(record.timeout_s, bool)
                                         or not isinstance(record.timeout_s, int | float)):
        problems.append(f"timeout_s is {record.timeout_s!r}, not a number")
    if not isinstance(record.meta, dict):
        problems.append(f"meta is {type(record.meta).__name__}, not an object")
    return problems


def checked(record: JobRecord, problems: Iterable[str] = ()) -> JobRecord:
    """``record`` as it is when its fields are sound; else quarantined with every problem
    (``problems`` found while decoding it, then those of its fields)."""
    found = [*problems, *field_problems(record)]
    return quarantine(record, found) if found else record


def quarantine(record: JobRecord, problems: list[str]) -> JobRecord:
    """Reset the damaged fields of ``record`` and give it the reason as payload and error."""
    reason = UNREADABLE + "; ".join(problems)
    for field in dataclasses.fields(JobRecord):
        name = field.name
        if name != "status" and any(problem.startswith(name + " ") for problem in problems):
            setattr(record, name, getattr(_DEFAULTS, name) if name != "meta" else {})
    if not isinstance(record.status, JobStatus):
        record.status = JobStatus.FAILED  # no worker would claim it: show it failed, retryable
    if not isinstance(record.id, str) or not record.id:
        record.id = "(unreadable)"
    record.payload = UnreadablePayload(reason)
    record.error = reason
    logger.warning("job %s: %s", record.id, reason)
    return record


def unreadable(job_id: str, queue: str, reason: str) -> JobRecord:
    """A record for a job of which nothing but its id could be read: failed, with the reason."""
    return JobRecord(id=job_id, name="(unreadable)", payload=UnreadablePayload(UNREADABLE + reason),
                     queue=queue, status=JobStatus.FAILED, error=UNREADABLE + reason)
