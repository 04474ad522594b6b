"""The one exception hierarchy of khadem_nb.

::

    KhademError
    ├── ConfigError                 bad or unknown configuration (raised at init)
    ├── SerializationError          a value that cannot travel as JSON
    │   └── UnknownJobError         a job name with no registered factory
    ├── DriverError                 the storage behind a queue misbehaves
    │   ├── DriverUnavailableError  the storage cannot be reached (server down, timeout)
    │   ├── CorruptQueueError       the storage is not what it should be (bad file, not a database)
    │   └── SchemaVersionError      the storage's layout is newer than this release knows, or
    │                               older and ``queue.auto_migrate`` is off (run ``khadem-nb migrate``)
    ├── JobError                    about one job
    │   ├── JobNotFoundError        no record with that id
    │   ├── JobTimeoutError         a job ran past its timeout
    │   ├── JobCrashedError         the process of an isolated job died under it
    │   ├── ShippedCodeError        shipped code refused: names the check that failed
    │   ├── DuplicateJobError       a unique dispatch met a live job holding its key
    │   ├── ReportError             a job's ``report()`` names a bad metric, value or step
    │   ├── BatchResultError        a batched call returned other than one result per job
    │   ├── JobFailedError          waiting on a job that ended failed (carries the record)
    │   ├── JobCancelledError       a job was cancelled: raised by waits and, inside a
    │   │                           cancelled job, by ``progress()`` (carries the record if known)
    │   └── ResultTimeoutError      waiting on a job took longer than asked (also a TimeoutError)
    ├── LaunchError                 a launcher could not start a worker (its own message)
    ├── RetryJob                    control flow: raise inside ``handle`` to retry, optionally
    │   │                           after ``delay`` seconds, without counting it as an error
    │   └── Snooze                  control flow: run again after ``seconds``, no attempt spent
    └── Preempted                   control flow: raise inside a job its stopping worker
                                    preempts: it goes back to the queue, no attempt spent

Messages name the bad value and, where there is a choice, the valid ones. One warning
category sits beside the tree: ``CodeChangedWarning`` (a sweep reused results of older code).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import JobRecord


class KhademError(Exception):
    """Root of every exception khadem_nb raises on purpose."""


class ConfigError(KhademError, ValueError):
    """A configuration value is unknown, missing or out of range."""


class SerializationError(KhademError, TypeError):
    """A value cannot be encoded to (or decoded from) the queue's JSON format."""


class UnknownJobError(SerializationError):
    """A record names a job that has no factory registered in this process."""


class DriverError(KhademError):
    """The storage behind a queue failed."""


class DriverUnavailableError(DriverError, ConnectionError):
    """The storage cannot be reached within the allowed time."""


class CorruptQueueError(DriverError):
    """The storage exists but does not hold a readable queue."""


class SchemaVersionError(DriverError):
    """The storage's layout version is not one this release works with: newer than it knows
    (upgrade khadem_nb), or older while ``queue.auto_migrate`` is off (``khadem-nb migrate``).
    ``found`` and ``known`` are the two versions."""

    def __init__(self, message: str, found: int, known: int) -> None:
        super().__init__(message)
        self.found = found
        self.known = known

    def __reduce__(self) -> tuple[type, tuple[str, int, int]]:
        return (type(self), (str(self), self.found, self.known))


class JobError(KhademError):
    """Something about one job."""


class JobNotFoundError(JobError, LookupError):
    """No job record has the given id."""


class JobTimeoutError(JobError, TimeoutError):
    """A job ran longer than its ``timeout``."""


class JobCrashedError(JobError):
    """The process an isolated job ran in died (a segfault, ``os._exit``, a kill)."""


class ShippedCodeError(JobError):
    """A worker refused a job's shipped code; ``check`` names the check that failed (``trust``,
    ``seal``, ``format``, ``signature``, ``digest``, ``python``, ``versions``). Nothing was
    unpickled."""

    def __init__(self, check: str, reason: str) -> None:
        self.check = check
        super().__init__(f"shipped code refused ({check} check): {reason}")


class ReportError(JobError, ValueError):
    """A report a job made cannot be kept: a metric name that is not an identifier, a value
    that is not a finite number, a bad step (``telemetry``)."""


class BatchResultError(JobError):
    """A batched kind's ``handle_batch`` returned other than one result per job (``batching``)."""


class DuplicateJobError(JobError):
    """A unique dispatch met a live job holding its key (``on_conflict="error"``); ``job_id`` is
    that job's id."""

    def __init__(self, key: str, job_id: str) -> None:
        self.key = key
        self.job_id = job_id
        super().__init__(f"a job with unique key {key!r} is already queued or running: {job_id}")


class JobFailedError(JobError):
    """A waited-on job ended failed; ``record`` holds its error and traceback."""

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        super().__init__(f"job {record.name!r} ({record.id}) failed: {record.error}")


class JobCancelledError(JobError):
    """A job was cancelled. Waiting on it raises this with its ``record``; inside a job being
    cancelled, ``progress()`` raises it (``record`` is then ``None``) so the job stops there."""

    def __init__(self, record: JobRecord | None = None, message: str | None = None) -> None:
        self.record = record
        if message is None:
            message = "job was cancelled" if record is None else \
                f"job {record.name!r} ({record.id}) was cancelled: {record.error}"
        super().__init__(message)


class ResultTimeoutError(JobError, TimeoutError):
    """Waiting for a job's result took longer than the given timeout."""


class RetryJob(KhademError):
    """Raise inside ``handle()`` to run the job again later.

    The attempt still counts against ``max_attempts``. ``delay`` (seconds) overrides the
    job's backoff for this one retry.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested", *,
                 count_attempt: bool = True) -> None:
        self.delay = delay
        self.reason = reason
        #: ``False``: the attempt is not spent (a snooze, bounded by ``max_snoozes``)
        self.count_attempt = count_attempt
        super().__init__(reason if delay is None else f"{reason} (in {delay:g}s)")


class Snooze(RetryJob):
    """Raise inside a job whose input is not ready yet: it goes back to the queue and runs
    again after ``seconds``, without spending an attempt. The record counts its snoozes
    (``meta["snoozes"]``); past the job's ``max_snoozes`` (1,000 by default) it fails saying so."""

    def __init__(self, seconds: float, reason: str = "snoozed") -> None:
        super().__init__(seconds, reason, count_attempt=False)


class Preempted(KhademError):
    """Raise inside a job when ``preempted()`` says its worker is stopping, once its state is
    saved with ``checkpoint()``: the job goes back to the queue without spending an attempt,
    and its next attempt starts from ``restore()``."""

    def __init__(self, reason: str = "preempted: the worker is stopping") -> None:
        super().__init__(reason)


class LaunchError(KhademError):
    """A launcher could not start a worker: its own message, and the worker's last output
    lines where it exited at start."""


class CodeChangedWarning(UserWarning):
    """A sweep run again reused finished points computed by an older version of its code."""


__all__ = [  # the tree; CodeChangedWarning, a warning, is exported by the package itself
    "ConfigError",
    "CorruptQueueError",
    "DriverError",
    "DriverUnavailableError",
    "DuplicateJobError",
    "JobCancelledError",
    "JobCrashedError",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "JobTimeoutError",
    "KhademError",
    "ResultTimeoutError",
    "RetryJob",
    "SchemaVersionError",
    "SerializationError",
    "ShippedCodeError",
    "Snooze",
    "UnknownJobError",
]
