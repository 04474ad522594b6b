"""``QueueFake``: record what an application dispatches, run it on purpose, move time on purpose.

The fake puts a :class:`FakeDriver` in the manager's place: an in-memory queue on a
:class:`VirtualClock` that also keeps a :class:`DispatchedJob` for every job pushed. Jobs are
encoded by the manager as for any driver, and the fake decodes them again, so an argument that
cannot travel fails in the test as it would in production. ``run_next`` and ``run_all`` run the
recorded jobs through the manager's own executor (middleware, callbacks, retries, the monitor);
``advance`` moves the clock, so delays and retry backoff come due without sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._time import ms_to_datetime, now_ms, seconds_of
from ..drivers.base import QueueDriver
from ..drivers.memory import MemoryDriver
from ..errors import ConfigError, JobFailedError, KhademError
from ..job import FAILED, QUEUED, SCHEDULED, JobRecord, JobStatus, QueueJob
from ..manager import QueueManager
from ..serializer import QueueJobSerializer, dumps

if TYPE_CHECKING:
    from ..config import QueueSettings
    from ..notebook.queue import Queue

#: what ``run_all`` runs at most before it concludes a job dispatches jobs without end
RUN_ALL_LIMIT = 10_000
#: dispatched jobs an assertion message lists at most
LISTED = 20


class VirtualClock:
    """Milliseconds since the epoch that move only when told; starts at the wall clock."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.ms = now_ms() if start_ms is None else start_ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


@dataclass(frozen=True)
class DispatchedJob:
    """One recorded dispatch: the job's arguments after the JSON round trip (a job function's
    keyword arguments), and the job decoded from them (``None`` where this process has no
    factory for its name)."""

    id: str
    name: str
    params: Any
    job: QueueJob | None
    queue: str
    priority: int
    delay_s: float
    max_attempts: int

    def describe(self) -> str:
        """One line for assertion messages: name, arguments, queue, delay and priority."""
        if isinstance(self.params, dict):
            args = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        else:
            args = repr(self.params)
        extras = f"queue={self.queue!r}"
        if self.delay_s:
            extras += f" delay={self.delay_s:g}s"
        if self.priority:
            extras += f" priority={self.priority}"
        return f"{self.name}({args}) {extras}"


class FakeDriver(MemoryDriver):
    """An in-memory queue on a virtual clock that records every job pushed to it. Jobs whose
    names are not in ``fakes`` (when it is given) go on to ``real`` instead."""

    def __init__(self, real: QueueDriver, settings: QueueSettings, serializer: QueueJobSerializer,
                 fakes: set[str] | None) -> None:
        super().__init__(settings)
        self.real = real
        self.serializer = serializer
        self.fakes = fakes
        self.virtual_clock = VirtualClock()
        self.clock = self.virtual_clock
        self.recorded: list[DispatchedJob] = []

    def fakes_job(self, name: str) -> bool:
        return self.fakes is None or name in self.fakes

    async def push(self, records: Sequence[JobRecord]) -> None:
        faked, passed = self._split(records)
        if passed:
            await self.real.push(passed)
        if faked:
            await super().push(faked)

    async def push_in(self, connection: Any, records: Sequence[JobRecord]) -> None:
        """Faked jobs are recorded at once (there is no transaction to wait for); the rest go
        into the application's transaction on the real driver."""
        faked, passed = self._split(records)
        if passed:
            await self.real.push_in(connection, passed)
        if faked:
            await super().push(faked)

    def _split(self, records: Sequence[JobRecord]) -> tuple[list[JobRecord], list[JobRecord]]:
        faked = [r for r in records if self.fakes_job(r.name)]
        self.recorded.extend(self._recorded(r) for r in faked)
        return faked, [r for r in records if not self.fakes_job(r.name)]

    def _recorded(self, record: JobRecord) -> DispatchedJob:
        from ..notebook.functions import FunctionCall

        text = dumps(record.payload)
        job: QueueJob | None
        try:
            job = self.serializer.decode_job(record.name, json.loads(text))
        except KhademError:
            job = None
        params = job.kwargs if isinstance(job, FunctionCall) else json.loads(text)
        return DispatchedJob(record.id, record.name, params, job, record.queue, record.priority,
                             (record.available_ms - record.created_ms) / 1000, record.max_attempts)

    def claim_next(self) -> JobRecord | None:
        """Claim the due job that comes first: highest priority, then the longest due."""
        now = self.clock()
        due = [r for r in self._records.values()
               if (r.status is QUEUED or r.status is SCHEDULED) and r.available_ms <= now]
        if not due:
            return None
        first = min(due, key=lambda r: (-r.priority, r.available_ms, r.created_ms))
        claimed = self.take_ready([first.queue], 1)
        return claimed[0] if claimed else None

    # jobs let through live in the real driver: reads of their ids go there
    async def get(self, job_id: str) -> JobRecord | None:
        return (await self.get_many([job_id]))[0]

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        found = await super().get_many(job_ids)
        missing = [job_id for job_id, record in zip(job_ids, found, strict=True) if record is None]
        if not missing:
            return found
        elsewhere = dict(zip(missing, await self.real.get_many(missing), strict=True))
        return [record or elsewhere.get(job_id) for job_id, record in zip(job_ids, found, strict=True)]

    async def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        return [None if record is None else record.status for record in await self.get_many(job_ids)]

    async def close(self) -> None:
        await self.real.close()


JobTarget = type[QueueJob] | Any  # a QueueJob subclass or a job function (``@q.job``)


class QueueFake:
    """Records every dispatch of a manager (or a notebook ``Queue``) instead of storing it.

    >>> with QueueFake(manager) as fake:
    ...     await signup("ada@example.org")
    ...     fake.assert_dispatched(SendEmailJob, where=lambda job: job.to == "ada@example.org")
    ...     await fake.run_all()

    ``only=[SendEmailJob, ...]`` fakes those jobs and lets the others through to the real
    driver. Workers started before the fake keep the driver they started with.
    """

    def __init__(self, target: QueueManager | Queue, *, only: Iterable[JobTarget] | None = None) -> None:
        self.manager, self._queue = _manager_of(target)
        self._only = None if only is None else {job_name(t, "QueueFake(only=...)") for t in only}
        self._driver: FakeDriver | None = None

    @classmethod
    def install(cls, target: QueueManager | Queue, *, only: Iterable[JobTarget] | None = None) -> QueueFake:
        """A fake installed now; ``uninstall()`` puts the real driver back."""
        return cls(target, only=only)._install()

    def _install(self) -> QueueFake:
        if self._queue is not None:
            self._queue.run(self._queue.opened())
        real = self.manager.driver
        if isinstance(real, FakeDriver):
            raise ConfigError("this manager is faked already: uninstall its QueueFake (or leave its "
                              "`with` block) before installing another")
        self._driver = FakeDriver(real, self.manager.settings, self.manager.serializer, self._only)
        self.manager.replace_driver(self._driver)
        return self

    def uninstall(self) -> None:
        """Put the real driver back; the recorded jobs stay readable on this fake."""
        if self._driver is not None and self.manager.driver is self._driver:
            self.manager.replace_driver(self._driver.real)

    def __enter__(self) -> QueueFake:
        return self._install()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.uninstall()

    @property
    def driver(self) -> FakeDriver:
        if self._driver is None:
            raise KhademError("this QueueFake is not installed: use `with QueueFake(...)` or "
                              "QueueFake.install(...)")
        return self._driver

    # -- what was dispatched -------------------------------------------------------------------
    @property
    def jobs(self) -> list[DispatchedJob]:
        """Every recorded dispatch, in order."""
        return list(self.driver.recorded)

    def dispatched(self, target: JobTarget | None = None, *, where: Callable[[Any], bool] | None = None,
                   queue: str | None = None, delay: float | timedelta | None = None) -> list[DispatchedJob]:
        """The recorded dispatches of ``target`` (all when ``None``) that match the filters.
        ``where`` is given the job for a job class and the arguments for a job function."""
        name = None if target is None else job_name(target, "dispatched")
        delay_s = None if delay is None else seconds_of(delay, name="delay")
        return [d for d in self.driver.recorded
                if (name is None or d.name == name) and (queue is None or d.queue == queue)
                and (delay_s is None or abs(d.delay_s - delay_s) < 0.001)
                and (where is None or where(_where_argument(d, target)))]

    def assert_dispatched(self, target: JobTarget, times: int | None = None, *,
                          where: Callable[[Any], bool] | None = None, queue: str | None = None,
                          delay: float | timedelta | None = None) -> None:
        """Fail unless ``target`` was dispatched (exactly ``times`` times, when given) matching
        the filters; the message lists what was dispatched."""
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
            raise ValueError(f"times must be a non-negative int or None, got {times!r}")
        found = len(self.dispatched(target, where=where, queue=queue, delay=delay))
        if (times is None and found) or found == times:
            return
        wanted = "at least once" if times is None else _times(times)
        raise AssertionError(f"expected {job_name(target, 'assert_dispatched')} dispatched {wanted}"
                             f"{_filters(where, queue, delay)}, found {_times(found)}. {self._listing()}")

    def assert_not_dispatched(self, target: JobTarget, *, where: Callable[[Any], bool] | None = None,
                              queue: str | None = None, delay: float | timedelta | None = None) -> None:
        """Fail if ``target`` was dispatched matching the filters."""
        found = len(self.dispatched(target, where=where, queue=queue, delay=delay))
        if found:
            raise AssertionError(f"expected {job_name(target, 'assert_not_dispatched')} not dispatched"
                                 f"{_filters(where, queue, delay)}, found {_times(found)}. {self._listing()}")

    def assert_nothing_dispatched(self) -> None:
        """Fail if any job was dispatched."""
        if self.driver.recorded:
            raise AssertionError(f"expected nothing dispatched. {self._listing()}")

    def _listing(self) -> str:
        recorded = self.driver.recorded
        if not recorded:
            return "Nothing was dispatched."
        lines = [f"  {d.describe()}" for d in recorded[:LISTED]]
        if len(recorded) > LISTED:
            lines.append(f"  ... and {len(recorded) - LISTED} more")
        return f"Dispatched ({len(recorded)}):\n" + "\n".join(lines)

    # -- running -------------------------------------------------------------------------------
    async def run_next(self) -> JobRecord | None:
        """Run the due job that comes first (highest priority, then the longest due) through
        the manager's executor; its record after the run, or ``None`` when nothing is due."""
        if self._queue is not None:
            return await self._queue.run_async(self._run_next())
        return await self._run_next()

    async def _run_next(self) -> JobRecord | None:
        record = self.driver.claim_next()
        if record is None:
            return None
        await self.manager.executor.execute(record)
        return await self.driver.get(record.id)

    async def run_all(self, raise_errors: bool = True) -> list[JobRecord]:
        """Run due jobs until none is due, including jobs they dispatch; the record of each run,
        in order. Jobs backed off or delayed into the future wait for :meth:`advance`. With
        ``raise_errors``, a job that failed for good raises ``JobFailedError`` at the end."""
        ran: list[JobRecord] = []
        while (record := await self.run_next()) is not None:
            ran.append(record)
            if len(ran) >= RUN_ALL_LIMIT:
                raise KhademError(f"run_all ran {RUN_ALL_LIMIT} jobs and more are due: does a job "
                                  "dispatch another without end?")
        last = {record.id: record for record in ran}
        failed = [record for record in last.values() if record.status is FAILED]
        if raise_errors and failed:
            raise JobFailedError(failed[0])
        return ran

    # -- time ----------------------------------------------------------------------------------
    def advance(self, duration: float | timedelta) -> None:
        """Move the queue's clock forward: delays and retry backoff come due without sleeping."""
        seconds = seconds_of(duration, name="advance")
        if seconds < 0:
            raise ValueError(f"advance takes a non-negative duration (time only moves forward), "
                             f"got {duration!r}")
        self.driver.virtual_clock.advance(seconds)

    @property
    def now(self) -> datetime:
        """The queue's time, as an aware UTC datetime."""
        moment = ms_to_datetime(self.driver.clock())
        assert moment is not None
        return moment


def job_name(target: Any, caller: str) -> str:
    """The name records carry for a job class or a job function; ``TypeError`` otherwise."""
    from ..notebook.functions import JobFunction

    if isinstance(target, type) and issubclass(target, QueueJob):
        return target.job_name()
    if isinstance(target, JobFunction):
        return target.name
    raise TypeError(f"{caller} takes a QueueJob subclass or a job function (made with @q.job), "
                    f"got {target!r}")


def _where_argument(dispatched: DispatchedJob, target: Any) -> Any:
    """What ``where`` is given: the job for a job class, the arguments for a job function."""
    if isinstance(target, type) and dispatched.job is not None:
        return dispatched.job
    return dispatched.params


def _manager_of(target: Any) -> tuple[QueueManager, Queue | None]:
    from ..notebook.queue import Queue

    if isinstance(target, QueueManager):
        return target, None
    if isinstance(target, Queue):
        return target.manager, target
    raise TypeError(f"QueueFake takes a QueueManager or a khadem_nb Queue, got {target!r}")


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _filters(where: Callable[[Any], bool] | None, queue: str | None,
             delay: float | timedelta | None) -> str:
    parts = [f"where={getattr(where, '__name__', where)}" if where is not None else "",
             f"queue={queue!r}" if queue is not None else "",
             f"delay={delay!r}" if delay is not None else ""]
    shown = ", ".join(p for p in parts if p)
    return f" ({shown})" if shown else ""
