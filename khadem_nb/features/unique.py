"""Unique jobs: a dispatch that names a unique key is stored only while no live job holds it.

A *lock* ties a unique key (per named queue) to the job that took it, the statuses in which that
job still holds it, and an optional expiry. A lock is live while its job exists in one of those
statuses and the expiry has not passed; a dead lock is taken over by the next dispatch. Each
driver checks and takes a lock in one atomic step with storing the job (``push_keyed``), so
concurrent dispatches from many processes store one job. Schedules take the same kind of lock
for each slot they fire, one that holds while it lives whatever its job's status.

- ``unique="queued"``: held while the job waits (for other jobs, queued or scheduled); once it
  starts, the same job may be dispatched again.
- ``unique=True`` or ``"until_done"``: held while it waits or runs.
- ``unique="running"`` takes no lock: every dispatch is stored, and the claim runs one job of
  the key at a time (a lane of concurrency 1, see ``flow``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .. import limits
from ..errors import ConfigError
from ..job import ACTIVE, QUEUED, SCHEDULED, WAITING, JobStatus
from ..serializer import canonical_json

#: the statuses in which a lock's job holds it, by ``unique=`` value
MODES: dict[object, tuple[JobStatus, ...]] = {
    "queued": (WAITING, QUEUED, SCHEDULED),
    "until_done": (WAITING, QUEUED, SCHEDULED, ACTIVE),
    True: (WAITING, QUEUED, SCHEDULED, ACTIVE),
}
CONFLICTS = ("skip", "replace", "error")


#: how a stored lock that holds whatever its job's status writes its statuses
ANY_STATUS = "*"


@dataclass(frozen=True, slots=True)
class Lock:
    """What ``QueueDriver.push_keyed`` takes with a job: the key (it names the queue), the
    statuses of the job in which it holds (``()``: it holds whatever the status, even once the
    job is gone), and when it expires (ms since the epoch, or ``None``)."""

    key: str
    holds: tuple[JobStatus, ...]
    expires_ms: int | None

    @property
    def shown_key(self) -> str:
        """The key as the dispatch named it (``key`` also names the queue)."""
        return self.key.split("\t", 1)[1]

    @property
    def holds_text(self) -> str:
        """The statuses as one comma-separated word list, as the stores keep them (ANY_STATUS
        for a lock that holds whatever its job's status)."""
        return ",".join(status.value for status in self.holds) if self.holds else ANY_STATUS


def canonical_key(name: str, payload: Any) -> str:
    """``name`` and a digest of the canonical JSON of ``payload`` (keys sorted at every level):
    the same arguments give the same key in any process."""
    canonical = canonical_json(payload)
    return f"{name}:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


def unique_rule(unique: object, unique_for: Any, unique_key: Any, on_conflict: Any, *, name: str,
                payload: Any, queue: str, now_ms: int) -> Lock:
    """The rule of one dispatch; ``ConfigError`` naming the value and the valid forms."""
    if not (unique is True or (isinstance(unique, str) and unique in MODES)):
        raise ConfigError(f"unique must be True, 'queued', 'running' or 'until_done' (or left out), "
                          f"got {unique!r}")
    if on_conflict not in CONFLICTS:
        raise ConfigError(f"on_conflict must be one of {', '.join(CONFLICTS)}, got {on_conflict!r}")
    if unique_key is not None and (not isinstance(unique_key, str) or not unique_key):
        raise ConfigError(f"unique_key must be a non-empty string, got {unique_key!r}")
    expires = None
    if unique_for is not None:
        expires = now_ms + int(limits.seconds(unique_for, "unique_for") * 1000)
    key = unique_key if unique_key is not None else canonical_key(name, payload)
    return Lock(f"{queue}\t{key}", MODES[unique], expires)


def running_key(unique_for: Any, unique_key: Any, on_conflict: Any, name: str, payload: Any) -> str:
    """The key of a ``unique="running"`` dispatch, whose duplicates wait rather than conflict:
    ``unique_key``, or the job name and its (encoded) arguments."""
    if unique_for is not None or on_conflict != "skip":
        raise ConfigError('unique="running" takes no unique_for or on_conflict: a duplicate is stored and '
                          "waits until the running job of its key has finished")
    if unique_key is not None:
        if not isinstance(unique_key, str) or not unique_key:
            raise ConfigError(f"unique_key must be a non-empty string, got {unique_key!r}")
        return unique_key
    return canonical_key(name, payload)


def lock_is_live(holds_text: str, status: JobStatus | None, expires_ms: int | None, now_ms: int) -> bool:
    """Whether a stored lock still holds: it has not expired, and it holds whatever its job's
    status (ANY_STATUS) or its job exists in one of ``holds_text``'s statuses (comma-separated)."""
    if expires_ms is not None and now_ms >= expires_ms:
        return False
    if holds_text == ANY_STATUS:
        return True
    return status is not None and status.value in holds_text.split(",")
