"""Jobs (what users write) and job records (what drivers store)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, Self, TypeVar

from . import limits
from ._time import ms_to_datetime
from .errors import ConfigError, SerializationError
from .retry import BackoffPolicy, ExponentialBackoff
from .serializer import dumps

WIRE_VERSION = 1
E = TypeVar("E", bound=Enum)


class JobStatus(str, Enum):
    """Where a job is in its life."""

    WAITING = "waiting"  # waits for the jobs it runs after (``dispatch(job, after=[...])``)
    QUEUED = "queued"  # ready to run
    SCHEDULED = "scheduled"  # waiting for its time (delay or retry backoff)
    ACTIVE = "active"  # held by a worker under a lease
    COMPLETED = "completed"
    FAILED = "failed"  # exhausted its attempts, or could not run at all; kept, retryable by hand
    CANCELLED = "cancelled"  # withdrawn by ``cancel()``: never started, or stopped while running

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | JobStatus) -> JobStatus:
        return _member(cls, value, "job status", "statuses")


# The members as module constants for the hot paths: on Python 3.11 every ``JobStatus.X`` goes
# through ``EnumType``'s Python-level ``__getattr__``, and a job reads a dozen of them.
QUEUED, SCHEDULED, ACTIVE = JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.ACTIVE
WAITING = JobStatus.WAITING
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED})
PENDING_STATUSES = (QUEUED, SCHEDULED)
CANCELLABLE_STATUSES = frozenset({WAITING, QUEUED, SCHEDULED, ACTIVE})


class Failure(str, Enum):
    """Why an attempt failed: the ``failure`` of a failed (or retried) record."""

    RAISED = "raised"  # the job (or its middleware, or decoding it) raised
    TIMED_OUT = "timed_out"  # it ran past its ``timeout``
    CRASHED = "crashed"  # its isolated process died (a segfault, ``os._exit``, killed)
    LOST = "lost"  # its lease expired more than ``queue.max_reclaims`` times

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | Failure) -> Failure:
        return _member(cls, value, "failure kind", "kinds")


def _member(cls: type[E], value: Any, what: str, plural: str) -> E:
    """``cls(value)``, or a ``ConfigError`` naming the value and the valid ones."""
    from .errors import ConfigError

    try:
        return cls(value)
    except ValueError:
        valid = ", ".join(str(member.value) for member in cls)
        raise ConfigError(f"unknown {what} {value!r}; valid {plural}: {valid}") from None


def cancel_error(reason: str, was: JobStatus | str) -> str:
    """The ``error`` a cancelled record carries: the reason, and the status it was cancelled in
    (``(was active)`` says that it had started)."""
    return f"{reason} (was {was})"


class QueueJob:
    """Base class for jobs.

    Subclasses implement ``handle()`` (``async def`` runs on the event loop; a plain ``def``
    runs in a worker thread, never on the loop) and are registered by class name when defined.
    ``to_json``/``from_json`` default to the instance attributes and ``cls(**data)``; override
    them when the constructor does not take its attributes by name.

    Retry policy lives in class attributes (override them, or make them properties).
    """

    max_attempts: ClassVar[int] = 1
    #: how long to wait before the next attempt: a policy (``FixedBackoff(5)``,
    #: ``ExponentialBackoff(...)``); ``None`` builds an exponential one from the three below
    retry_backoff: ClassVar[BackoffPolicy | None] = None
    retry_delay: ClassVar[float] = 1.0
    max_retry_delay: ClassVar[float] = 3600.0
    retry_jitter: ClassVar[bool] = False
    should_retry: ClassVar[bool] = True
    #: how often ``raise Snooze(s)`` (or ``RetryJob(count_attempt=False)``) may put it back
    #: without spending an attempt; once more, it fails saying so
    max_snoozes: ClassVar[int] = 1000
    priority: ClassVar[int] = 0
    timeout: ClassVar[float | None] = None
    #: seconds a finished record (its result or error) is kept, beside the queue's retention
    keep_result: ClassVar[float | None] = None
    queue: ClassVar[str | None] = None
    job_name_override: ClassVar[str | None] = None
    #: where ``handle`` runs: ``"process"`` (a child process that a timeout or a cancel can
    #: stop, see ``isolation``), ``"none"`` (in the worker), or ``None`` (the worker's default)
    isolation: ClassVar[str | None] = None
    #: at most this many of this job are held (claimed, running) at once by all workers of its
    #: queue, per ``limit_key()``; ``None``: no limit
    concurrency: ClassVar[int | None] = None
    #: at most this many start in any window, across all workers: ``"30/min"``, ``"10/s"``, ``"5/h"``
    rate: ClassVar[str | None] = None
    #: claim the due jobs of different ``limit_key()`` keys in turns, one of each per turn, so
    #: one key's 10,000 queued jobs do not hold back another key's 10
    fair: ClassVar[bool] = False
    #: units of named resources one run holds, like ``{"gpu": 1}``; only a worker with that many
    #: free claims it, and the job sees its units in ``context().resources``
    resources: ClassVar[Mapping[str, int] | None] = None
    #: run in calls of up to this many jobs of this kind (``handle_batch``, see
    #: ``runtime.batching``); ``None``: each job alone (``handle``)
    batch_size: ClassVar[int | None] = None
    #: seconds the first job of a batch waits for more before the call (0 to 60)
    batch_wait: ClassVar[float] = 0.05

    attempt: int = 0  # set by the worker before handle(): 1 on the first run
    #: what a job dispatched to run after others is given of them, set by the worker before
    #: ``handle()`` (``dependencies``): its parent's result (``then``), or one dict per parent
    #: (``reduce``); ``None`` for a job given nothing
    upstream: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(cls.__dict__.get("isolation"), str | None):  # a property is checked when read
            limits.check_isolation(cls.__dict__.get("isolation"), f"{cls.__name__}.isolation")
        _check_flow(cls)
        if not inspect.isabstract(cls) and not cls.__dict__.get("_abstract_job", False):
            from .registry import job_factories

            job_factories.register(cls.job_name(), cls.from_json)

    @classmethod
    def job_name(cls) -> str:
        """The name records carry; the class name unless ``job_name_override`` is set."""
        return cls.job_name_override or cls.__name__

    def limit_key(self) -> str | None:
        """What ``concurrency`` and ``rate`` count per (``None``: one count for the job kind),
        from the job's arguments: ``return self.tenant`` gives each tenant its own limit."""
        return None

    async def handle(self) -> Any:
        """Do the work; the return value is stored as the job's result."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")

    @classmethod
    def handle_batch(cls, jobs: list[Self]) -> Any:
        """Do the work of ``jobs`` (a kind with ``batch_size``) in one call, sync or async:
        return a list with one result per job, in order; an exception instance in a job's
        place fails that job alone (its retries apply), an exception raised fails them all."""
        raise NotImplementedError(f"{cls.__name__} sets batch_size and must implement handle_batch()")

    def to_json(self) -> dict[str, Any]:
        """The job's arguments as a dict; defaults to its public instance attributes."""
        data = {}
        for key, value in vars(self).items():  # a loop, not a comprehension: no function per call
            if not key.startswith("_") and key not in _META:
                data[key] = value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Rebuild a job from :meth:`to_json` output; defaults to ``cls(**data)``."""
        return cls(**data)

    def code_entry(self) -> Any:
        """The definition this job runs, fingerprinted and (from a cell) shipped: its class."""
        return type(self)

    def take_upstream(self, given: Any, feed: str) -> None:
        """Receive what this job is given of its parents before it runs (``feed`` says what it
        is, see ``dependencies.FEEDS``): kept as ``self.upstream`` (a job function binds it to
        its first parameter instead)."""
        self.upstream = given

    def isolated_entry(self) -> tuple[Any, dict[str, Any], str]:
        """What an isolated process needs to run this job: the code to send (here the class,
        rebuilt there with ``from_json``), its JSON arguments, and which of the two it is."""
        args = {"data": self.to_json(), "attempt": self.attempt, "upstream": self.upstream}
        return type(self), args, "class"

    def get_next_retry_delay(self) -> float:
        """Seconds to wait after attempt ``self.attempt`` failed: ``retry_backoff``'s delay, or
        by default ``retry_delay`` doubled after each failed attempt, up to ``max_retry_delay``."""
        policy = self.retry_backoff
        if policy is None:
            policy = ExponentialBackoff(self.retry_delay, 2.0, self.max_retry_delay, self.retry_jitter)
        return policy.delay_s(self.attempt)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_json().items())
        return f"{type(self).__name__}({args})"


def _check_flow(cls: type[QueueJob]) -> None:
    """Refuse a bad ``concurrency``, ``rate`` or ``resources`` when the class is defined (a
    property is checked at dispatch)."""
    where = cls.__name__
    own = cls.__dict__
    if isinstance(own.get("queue"), str):
        limits.queue_name(own["queue"], f"{where}.queue")
    if not isinstance(own.get("concurrency"), property):
        limits.check_concurrency(own.get("concurrency"), f"{where}.concurrency")
    if not isinstance(own.get("rate"), property):
        limits.parse_rate(own.get("rate"), f"{where}.rate")
    if not isinstance(own.get("resources"), property):
        limits.check_resources(own.get("resources"), f"{where}.resources")
    if not isinstance(own.get("fair", False), bool | property):
        raise ConfigError(f"{where}.fair must be True or False, got {own['fair']!r}")
    if "batch_size" in own or "batch_wait" in own:
        size, _ = limits.check_batch(cls.batch_size, cls.batch_wait, where)
        if size is not None and not own.get("_abstract_job", False) \
                and cls.handle_batch.__func__ is QueueJob.handle_batch.__func__:  # type: ignore[attr-defined]
            raise ConfigError(f"{where} sets batch_size and must implement handle_batch(cls, jobs), "
                              "which returns one result per job")
        if size is not None and cls.isolation == "process":
            raise ConfigError(f"{where}: a batched kind runs in the worker; isolation='process' cannot "
                              "be combined with batch_size")


class QueueJobWithMetadata(QueueJob):
    """A job that retries by default and knows its attempt number and creation time."""

    _abstract_job = True
    max_attempts: ClassVar[int] = 3
    created_at: datetime | None = None


_META = frozenset({"attempt", "created_at", "upstream"})


@dataclass(slots=True)
class JobRecord:
    """What every driver stores for one job. Times are integer ms since the epoch (UTC)."""

    id: str
    name: str
    payload: Any
    queue: str = "default"
    priority: int = 0
    attempt: int = 0
    max_attempts: int = 1
    status: JobStatus = JobStatus.QUEUED
    created_ms: int = 0
    available_ms: int = 0
    started_ms: int | None = None
    finished_ms: int | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    timeout_s: float | None = None
    token: str | None = None
    lease_ms: int | None = None
    reclaims: int = 0
    key: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: why the last attempt failed (a ``Failure`` value) on failed and retried records
    failure: str | None = None
    #: the fingerprint of the job's code (``shipping.fingerprint``); shipped code is stored
    #: under it, and a record that runs shipped code adds its dispatcher's seal after a dot
    #: (``shipping.job_seal``)
    code: str | None = None
    #: how long the record is kept once finished (``keep_result``), in ms; ``None``: as the
    #: queue's retention says
    keep_ms: int | None = None
    #: the lane whose limits this job counts against (``flow``); ``None``: it has none
    lane: str | None = None
    #: the lane's rule as JSON text (``flow.LaneRule``)
    lane_rule: str | None = None
    #: the ids of the jobs this one runs after (``dependencies``); ``None``: it runs when due
    parents: list[str] | None = None
    #: what a parent that failed or was cancelled does to it: ``"cancel"`` or ``"run"``
    on_upstream_failure: str | None = None
    #: what it is given of its parents when it runs (``dependencies.FEEDS``); ``None``: nothing
    feed: str | None = None

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the job's code, without a shipped job's seal."""
        return None if self.code is None else self.code.partition(".")[0]

    @property
    def duration_ms(self) -> float | None:
        if self.started_ms is None or self.finished_ms is None:
            return None
        return float(self.finished_ms - self.started_ms)

    @property
    def created_at(self) -> datetime | None:
        return ms_to_datetime(self.created_ms)

    def to_dict(self) -> dict[str, Any]:
        """The record as a dict of plain values (statuses as text)."""
        data = {name: getattr(self, name) for name in _WIRE_FIELDS}
        data["job"] = self.name
        data["status"] = self.status.value
        data["v"] = WIRE_VERSION
        return data

    def to_wire(self) -> str:
        """The record as compact JSON text (payload and result are already encoded)."""
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        if data.get("v") != WIRE_VERSION:
            raise SerializationError(f"job record has wire version {data.get('v')!r}; expected 1")
        try:
            fields = {k: data[k] for k in _WIRE_FIELDS if k in data}
            fields["name"] = data["job"]
            fields["status"] = JobStatus(data["status"])
            return cls(**fields)
        except (KeyError, ValueError, TypeError) as exc:
            raise SerializationError(f"malformed job record: {exc!r}") from exc

    @classmethod
    def from_wire(cls, text: str | bytes) -> JobRecord:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationError(f"job record is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SerializationError(f"job record is {type(data).__name__}, not an object")
        return cls.from_dict(data)

    def copy(self) -> JobRecord:
        """A shallow copy with its own ``meta`` dict."""
        return dataclasses.replace(self, meta=dict(self.meta))

    def extra_json(self, cache: dict[tuple[Any, ...], str | None] | None = None) -> str | None:
        """The fields of EXTRA_FIELDS that are set, as one JSON object (``None`` when none is):
        how a driver stores them, in one field. ``cache``: texts made for earlier records of a
        batch, by their values (records of one job class share them)."""
        values = _extra_values(self)
        if cache is not None:
            try:
                found = cache.get(values, _UNSET)
            except TypeError:  # a list among them (parents): not kept
                cache = None
            else:
                if found is not _UNSET:
                    return found
        extra = {}
        for name, value in zip(EXTRA_FIELDS, values, strict=True):
            if value is not None:
                extra[name] = value
        text = dumps(extra) if extra else None
        if cache is not None:
            cache[values] = text
        return text

    def read_extra(self, text: str | bytes | None) -> str | None:
        """Set the fields of EXTRA_FIELDS from what ``extra_json`` stored; a field that does not
        read is left unset. What is wrong, or ``None``."""
        if text is None:
            return None
        try:
            extra = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return f"its extra fields are not JSON ({exc})"
        return self.apply_extra(extra)

    def apply_extra(self, extra: Any) -> str | None:
        """Set the fields of EXTRA_FIELDS that ``extra`` (a parsed ``extra_json``) holds; what
        is wrong, or ``None``."""
        if not isinstance(extra, dict):
            return f"its extra fields are {type(extra).__name__}, not an object"
        problems = []
        for name, value in extra.items():
            read = EXTRA_FIELDS.get(name)
            if read is None or value is None:  # a field of a later version, or unset
                continue
            try:
                setattr(self, name, read(value))
            except (TypeError, ValueError) as exc:
                problems.append(f"{name} is {value!r}, {exc}")
        return "; ".join(problems) or None

_WIRE_FIELDS = tuple(f.name for f in dataclasses.fields(JobRecord) if f.name not in ("name", "status"))


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not text")
    return value


def _texts(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("not a list of text")
    return list(value)


#: the record fields that no claim, index or filter reads, and how each reads back (a
#: ``TypeError`` saying what it is not, and the record is quarantined): every
#: driver keeps them together in one JSON field (``JobRecord.extra_json``), so a new one is
#: declared here and on ``JobRecord``, and nowhere in the drivers
EXTRA_FIELDS: dict[str, Callable[[Any], Any]] = {
    "timeout_s": _seconds,
    "code": _text,
    "parents": _texts,
    "feed": _text,
}
_extra_values = operator.attrgetter(*EXTRA_FIELDS)
_UNSET = "\0not in the cache"  # a text no extra_json makes
