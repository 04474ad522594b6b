"""``QueueManager``: the main interface: configure, dispatch, run workers, inspect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import limits
from ._ids import job_ids
from ._time import now_ms, to_seconds
from .artifacts.opening import QueueArtifacts
from .artifacts.store import ArtifactStore, load
from .config import QueueSettings, parse_config, worker_settings
from .draft import Draft
from .drivers.base import QueueDriver
from .errors import ConfigError, DuplicateJobError, JobNotFoundError, KhademError
from .factory import QueueFactory
from .features.dependencies import check_feed, check_policy, parent_ids
from .features.flow import job_lane
from .features.schedules import ScheduleInfo, info_of, make_schedule
from .features.unique import Lock, running_key, unique_rule
from .features.why_waiting import wait_reasons
from .job import ACTIVE, FAILED, QUEUED, SCHEDULED, WAITING, Failure, JobRecord, JobStatus, QueueJob
from .middleware import Middleware, MiddlewareChain, MiddlewareFunc
from .monitor import BasicQueueMonitor, QueueMonitor
from .registry import job_factories
from .runtime.collecting import collect_artifacts
from .runtime.execution import Hook, JobExecutor, WorkerHooks
from .runtime.kinds import KindNotes, runs_reasons
from .runtime.presence import ask_retire, read_entries
from .runtime.shipping import CodeLoader, CodeShipper
from .runtime.waiting import (
    SettleNotices,
    outcome,
    read_records,
    wait_for_finish,
    wait_for_jobs,
    wait_until_finished,
    wait_until_idle,
    watch,
)
from .runtime.worker import QueueWorker
from .serializer import QueueJobSerializer, check_size, decode_value

logger = logging.getLogger(__name__)
#: what ``cancel_all`` takes: a word, and the statuses it covers
CANCEL_SCOPES = {"queued": (WAITING, QUEUED, SCHEDULED), "active": (ACTIVE,),
                 "all": (WAITING, QUEUED, SCHEDULED, ACTIVE)}

MAX_ATTEMPTS = limits.COUNTS["max_attempts"][1]
PRIORITY_RANGE = limits.PRIORITY_RANGE
REPLACE_TRIES = 3  # a replacing dispatch cancels the holder and tries again, at most this often
DISPATCH_CHUNK = 200  # records built at a time by dispatch_many (see bench/RESULTS.md)


@dataclass(slots=True)
class Dispatch:
    """One dispatch built and checked by ``QueueManager.prepare``, not yet stored: its record,
    and for a unique job the lock it is stored with and what a held key does."""

    record: JobRecord
    lock: Lock | None = None
    on_conflict: str = "skip"


class QueueManager:
    """Owns one driver, the executor shared by its workers, middleware and the monitor.

    ``config`` is parsed at :meth:`init`, where a bad value raises :class:`ConfigError`.
    """

    def __init__(self, config: Any = None, *, monitor: QueueMonitor | None = None) -> None:
        self._config = config
        self.monitor: QueueMonitor = monitor if monitor is not None else BasicQueueMonitor()
        self.middleware = MiddlewareChain()
        self.hooks = WorkerHooks()
        self.serializer = QueueJobSerializer(job_factories)
        self._settings: QueueSettings | None = None
        self._driver: QueueDriver | None = None
        self._executor: JobExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._workers: list[QueueWorker] = []
        self._shipper: CodeShipper | None = None
        self._kinds = KindNotes()  # the job kinds this process dispatched (``runtime.kinds``)
        self._loader: CodeLoader | None = None
        self._class_codes: dict[type, str] = {}  # fingerprints of job classes that are their code
        self._queue_names: set[str] = set()  # queue names dispatched to, checked (limits.queue_name)
        self._artifacts = QueueArtifacts(lambda: self._built_settings)
        self.serializer.artifacts = self._artifacts
        #: called with each new record as it is dispatched, before it is stored; a hook may add
        #: to ``record.meta``, which every driver stores with the job (``tracing`` does)
        self.dispatch_hooks: list[Callable[[JobRecord], None]] = []

    # -- setup -------------------------------------------------------------------------------
    async def init(self) -> QueueManager:
        """Parse the config, build and open the driver. Idempotent."""
        if self._driver is not None:
            return self
        settings = parse_config(self._config)
        loader = CodeLoader(settings)  # a worker that trusts code without a secret fails here
        driver = QueueFactory.resolve(settings)
        try:
            await driver.open()
        except BaseException:  # refused (a layout it cannot work on, a bad file): nothing stays open
            with contextlib.suppress(Exception):
                await driver.close()
            raise
        self._settings, self._driver, self._loader = settings, driver, loader
        if settings.artifacts is not None:  # a store given that cannot be opened fails here
            try:
                await asyncio.to_thread(self.serializer.store_of)
            except BaseException:
                self._driver = None
                await driver.close()
                raise
        return self

    @property
    def artifacts(self) -> ArtifactStore | None:
        """The queue's artifact store (``queue.artifacts``, else the driver's default: a folder
        beside a file or SQLite queue, a temporary folder for a memory queue, none on Redis or
        PostgreSQL), opened on first use; ``None`` where there is none."""
        return self.serializer.store_of()

    @property
    def shipper(self) -> CodeShipper:
        """Fingerprints job code and, with ``queue.ship_code``, ships it (see ``shipping``)."""
        if self._shipper is None:
            self._shipper = CodeShipper(self._settings or parse_config(self._config))
        return self._shipper

    @property
    def settings(self) -> QueueSettings:
        if self._settings is None:
            raise KhademError("QueueManager.init() has not been awaited yet")
        return self._settings

    @property
    def driver(self) -> QueueDriver:
        if self._driver is None:
            raise KhademError("QueueManager.init() has not been awaited yet")
        return self._driver

    def _new_record(self, draft: Draft, now: int) -> JobRecord:
        """The record of ``draft``, created at ``now``, as each dispatch hook leaves it."""
        record = draft.record(now)
        for hook in self.dispatch_hooks:
            hook(record)
        return record

    @property
    def _built_settings(self) -> QueueSettings:
        """The settings, read from the config before ``init()`` too: a dispatch is built (and
        a notebook builds records) before the queue opens."""
        return self._settings or self.shipper.settings

    def _now_ms(self) -> int:
        """The driver's clock (a test's virtual one under ``QueueFake``); the wall clock while
        no driver is open yet (a notebook queue builds records before it opens)."""
        return now_ms() if self._driver is None else self._driver.clock()

    def replace_driver(self, driver: QueueDriver) -> QueueDriver:
        """Put ``driver`` in this manager's place for dispatches, reads and jobs run from now on
        (the testing kit's ``QueueFake`` does); return the driver it replaces. Workers already
        running keep the driver they started with."""
        replaced = self.driver
        self._driver = driver
        if self._executor is not None:
            self._executor.driver = driver
        return replaced

    def use(self, middleware: Middleware | MiddlewareFunc) -> QueueManager:
        """Add middleware around every job run; the first added runs outermost."""
        self.middleware.add(middleware)
        return self

    @property
    def executor(self) -> JobExecutor:
        if self._executor is None:
            self._threads = ThreadPoolExecutor(max_workers=32, thread_name_prefix="khadem-job")
            self._executor = JobExecutor(self.driver, self.serializer, self.monitor,
                                         self.middleware, self.hooks, self._threads, self._loader)
        return self._executor

    def set_thread_pool_size(self, size: int) -> None:
        """Bound the threads that run sync ``handle()`` methods (default 32)."""
        if size < 1:
            raise ConfigError(f"thread pool size must be >= 1, got {size}")
        old = self._threads
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="khadem-job")
        self.executor.threads = self._threads
        if old is not None:
            old.shutdown(wait=False)

    # -- producing ---------------------------------------------------------------------------
    def build_record(self, job: QueueJob, *, delay: float | timedelta | None = None,
                     queue: str | None = None, priority: int | None = None,
                     max_attempts: int | None = None, key: str | None = None,
                     encoded: tuple[str, Any] | None = None) -> JobRecord:
        """Encode ``job`` into a record ready to push (raises SerializationError at once);
        ``encoded``: its name and payload, already encoded by the caller (a sweep encodes each
        argument once). A record of ``prepare`` without its options of storing."""
        draft = self._draft(job, delay, queue, priority, max_attempts, key, encoded=encoded)
        return self._new_record(draft, self._now_ms())

    def _draft(self, job: QueueJob, delay: float | timedelta | None, queue: str | None,
               priority: int | None, max_attempts: int | None, key: str | None,
               keep_result: float | timedelta | None = None,
               encoded: tuple[str, Any] | None = None) -> Draft:
        """Everything about a job that can be wrong, encoded and checked; no id or time yet."""
        name, payload = self.serializer.encode_job(job) if encoded is None else encoded
        if payload:  # no arguments always fit
            check_size(payload, self._built_settings.max_payload, f"the arguments of {name}")
        delay_ms = 0 if delay is None else int(limits.seconds(delay, "delay") * 1000)
        # each option's usual case is checked inline; the full check names what is wrong
        attempts = job.max_attempts if max_attempts is None else max_attempts
        if attempts.__class__ is not int or not 1 <= attempts <= MAX_ATTEMPTS:
            attempts = limits.count(attempts, "max_attempts")
        level = job.priority if priority is None else priority
        driver = self._driver  # without one yet: the widest range here, the driver's at push
        limit = PRIORITY_RANGE[1] if driver is None else driver.max_priority
        if level.__class__ is not int or abs(level) > limit:
            level = limits.priority(level, limit) if driver is None else driver.check_priority(level)
        timeout = job.timeout
        timeout_s = None if timeout is None else limits.seconds(timeout, "timeout")
        if queue is None:
            queue = job.queue or self._built_settings.name
        if queue not in self._queue_names:  # each name is checked once per manager
            self._queue_names.add(limits.queue_name(queue))
        code = self._class_codes.get(job.__class__) or self._code_of(job)
        shipper = self._shipper or self.shipper
        if shipper.shipped and code in shipper.shipped:  # bound to this dispatch (shipping.job_seal)
            code = shipper.sealed(code, queue, name, payload)
        keep = job.keep_result if keep_result is None else keep_result
        keep_ms = None if keep is None else int(limits.seconds(keep, "keep_result") * 1000)
        draft = Draft(name, payload, queue, level, attempts, delay_ms, timeout_s, key, code, keep_ms)
        if job.concurrency is not None or job.rate is not None or job.resources or job.fair:
            draft.lane, draft.lane_rule = job_lane(job, name)
        return draft

    def _code_of(self, job: QueueJob) -> str:
        """The fingerprint of ``job``'s code, kept per class where the class is the code."""
        code = self.shipper.code_of(job)
        if job.code_entry() is job.__class__:
            self._class_codes[job.__class__] = code
        return code

    async def dispatch(self, job: QueueJob, delay: float | timedelta | None = None, *,
                       queue: str | None = None, priority: int | None = None,
                       max_attempts: int | None = None, connection: Any = None,
                       unique: bool | str | None = None, unique_for: float | timedelta | None = None,
                       unique_key: str | None = None, on_conflict: str = "skip",
                       keep_result: float | timedelta | None = None, after: Any = None,
                       on_upstream_failure: str = "cancel", feed: str | None = None,
                       key: str | None = None) -> str:
        """Queue ``job`` (after ``delay``) and return its id. On ``sync`` it runs before returning.

        ``after`` (ids, handles or groups of jobs stored here, in any queue): the job waits
        (status ``waiting``) until every one of them has ended, then runs; one that fails or is
        cancelled cancels it at once, unless ``on_upstream_failure="run"``. ``feed`` says what
        it is given of them in ``job.upstream`` (see ``then`` and ``reduce``). An id not stored
        here raises ``JobNotFoundError`` and nothing is stored.

        ``key``: the record's key, by which ``find_by_keys`` finds it again (resumable work).

        ``connection`` (PostgreSQL): the application's own psycopg connection; the job is
        written inside its open transaction and exists exactly when that transaction commits.

        ``unique`` (``True``/``"until_done"``: while the same job waits or runs; ``"queued"``:
        while it waits) stores the job only if no live job of this queue holds its unique key:
        ``unique_key``, or the job name and its arguments; ``unique_for`` seconds end the hold
        sooner. ``unique="running"`` stores it always, and runs one job of the key at a time:
        the others wait in the queue. On a conflict ``on_conflict`` says what happens: ``"skip"`` returns the
        holder's id, ``"replace"`` cancels the holder and stores this one, ``"error"`` raises
        ``DuplicateJobError``. The check and the store are one atomic step on every driver.

        ``keep_result`` (seconds; default the job's ``keep_result``) limits how long the
        finished record, its result or error, is kept, beside the queue's retention.
        """
        prepared = self._prepare(job, delay, queue, priority, max_attempts, unique, unique_for, unique_key,
                                 on_conflict, keep_result, after, on_upstream_failure, feed, key, None)
        record = prepared.record
        if prepared.lock is None and connection is None and record.parents is None:
            await self.push((record,))  # store's plain case, without a coroutine more a dispatch
            return record.id
        return await self.store(prepared, connection=connection)

    def prepare(self, job: QueueJob, delay: float | timedelta | None = None, *,
                queue: str | None = None, priority: int | None = None, max_attempts: int | None = None,
                unique: bool | str | None = None, unique_for: float | timedelta | None = None,
                unique_key: str | None = None, on_conflict: str = "skip",
                keep_result: float | timedelta | None = None, after: Any = None,
                on_upstream_failure: str = "cancel", feed: str | None = None, key: str | None = None,
                encoded: tuple[str, Any] | None = None) -> Dispatch:
        """The one builder of a dispatch: ``job`` encoded (``encoded``: its name and payload,
        encoded already by the caller) and every option of ``dispatch`` checked, once, into a
        record and the lock a unique one is stored with. Nothing is read or stored here: a
        bad value raises before any I/O, and ``store`` stores what this returns."""
        return self._prepare(job, delay, queue, priority, max_attempts, unique, unique_for, unique_key,
                             on_conflict, keep_result, after, on_upstream_failure, feed, key, encoded)

    def _prepare(self, job: QueueJob, delay: float | timedelta | None, queue: str | None,
                 priority: int | None, max_attempts: int | None, unique: bool | str | None,
                 unique_for: float | timedelta | None, unique_key: str | None, on_conflict: str,
                 keep_result: float | timedelta | None, after: Any, on_upstream_failure: str,
                 feed: str | None, key: str | None, encoded: tuple[str, Any] | None) -> Dispatch:
        """``prepare`` with its arguments in order: a dispatch passes fourteen of them, and by
        position they cost it less than by keyword (bench/regression.py)."""
        draft = self._draft(job, delay, queue, priority, max_attempts, key, keep_result, encoded=encoded)
        if unique == "running":  # a claim-time rule: the job is always stored, one runs at a time
            shared = running_key(unique_for, unique_key, on_conflict, draft.name, draft.payload)
            draft.lane, draft.lane_rule = job_lane(job, draft.name, shared)
        if after is not None or feed is not None or on_upstream_failure != "cancel":
            parents = parent_ids([] if after is None else after)
            policy, draft.feed = check_policy(on_upstream_failure), check_feed(feed, parents)
            if parents:
                draft.parents, draft.on_upstream_failure = parents, policy
        record = self._new_record(draft, self._now_ms())
        if unique == "running" or (unique is None and unique_for is None and unique_key is None
                                   and on_conflict == "skip"):
            return Dispatch(record)
        lock = unique_rule(True if unique is None else unique, unique_for, unique_key, on_conflict,
                           name=draft.name, payload=draft.payload, queue=draft.queue,
                           now_ms=record.created_ms)
        return Dispatch(record, lock, on_conflict)

    async def store(self, dispatch: Dispatch, *, connection: Any = None) -> str:
        """Store what ``prepare`` built, and return the job's id (or, for a unique job whose
        key is held, what ``on_conflict`` says). ``connection``: see ``dispatch``. The parents
        a job names must be stored here (``JobNotFoundError``)."""
        record = dispatch.record
        if connection is not None and dispatch.lock is not None:
            raise ConfigError("unique dispatch does not take connection= (the lock is taken outside "
                              "the application's transaction)")
        if connection is not None and record.parents:
            raise ConfigError("dispatch(connection=...) does not take after= (the parents are "
                              "locked in a transaction of the driver's own)")
        if record.parents:
            await self._check_stored(record.parents)
            await self.driver.check_parents(record.queue, record.parents)
        if dispatch.lock is not None:
            return await self._push_unique(record, dispatch.lock, dispatch.on_conflict)
        if connection is not None:
            await self._push_in(connection, [record])
            return record.id
        await self.push((record,))
        return record.id

    async def _check_stored(self, job_ids: list[str]) -> None:
        """``JobNotFoundError`` naming the first of ``job_ids`` not stored here."""
        statuses = await self.driver.statuses(job_ids)
        missing = [job_id for job_id, status in zip(job_ids, statuses, strict=True) if status is None]
        if missing:
            more = f" (and {len(missing) - 1} more ids not found)" if len(missing) > 1 else ""
            raise JobNotFoundError(f"no job with id {missing[0]!r} in {self.settings.redacted_url()}{more}")

    async def then(self, parent: Any, job: QueueJob, **options: Any) -> str:
        """Dispatch ``job`` to run when ``parent`` (an id or a handle) completes, given the
        parent's result as ``job.upstream``; a failed or cancelled parent cancels it. Takes
        ``dispatch``'s options; returns its id."""
        return await self.dispatch(job, after=[parent], feed="result", **options)

    async def reduce(self, parents: Any, job: QueueJob, *, include_failed: bool = True,
                     **options: Any) -> str:
        """Dispatch ``job`` to run once after every one of ``parents`` has ended (completed,
        failed or cancelled), given one dict per parent as ``job.upstream`` (``id``, ``job``,
        ``key``, ``params``, ``result``, ``status``, ``failure``, ``duration_ms``, ``attempt``,
        ``error``, ``code``); ``include_failed=False`` gives completed ones only. Takes
        ``dispatch``'s options; returns its id."""
        feed = "results" if include_failed else "completed_results"
        return await self.dispatch(job, after=parents, on_upstream_failure="run", feed=feed, **options)

    async def _push_unique(self, record: JobRecord, rule: Lock, on_conflict: str) -> str:
        """Store ``record`` under ``rule``; what a conflict does is ``on_conflict``'s."""
        await self._send_unsent_code([record])
        holder = ""
        for _ in range(REPLACE_TRIES):
            found = await self.driver.push_keyed(record, rule)
            if found is None:
                await self._stored([record])
                return record.id
            holder = found
            if on_conflict == "skip":
                return holder
            if on_conflict == "error":
                raise DuplicateJobError(rule.shown_key, holder)
            await self.driver.cancel([holder], "replaced by a unique dispatch of the same job")
        raise DuplicateJobError(rule.shown_key, holder)  # other dispatches kept winning

    async def _push_in(self, connection: Any, records: Sequence[JobRecord]) -> None:
        await self._send_unsent_code(records)
        await self.driver.push_in(connection, records)
        self._count_queued(records)

    async def dispatch_many(self, jobs: Iterable[QueueJob], delay: float | timedelta | None = None,
                            *, queue: str | None = None, connection: Any = None,
                            keep_result: float | timedelta | None = None) -> list[str]:
        """Queue many jobs; every job is encoded and checked before any is stored.

        The records are then built a chunk at a time as the driver takes them: on Redis each
        chunk is built while the one before is being stored, and if Redis goes away midway
        (``DriverUnavailableError``) the chunks already stored stay queued; SQLite stores all
        of them in one transaction or none.
        """
        drafts = [self._draft(job, delay, queue, None, None, None, keep_result) for job in jobs]
        if connection is not None:  # all in the application's transaction (PostgreSQL)
            now = self._now_ms()
            written = [self._new_record(draft, now) for draft in drafts]
            await self._push_in(connection, written)
            return [r.id for r in written]
        records: list[JobRecord] = []

        def chunks() -> Iterator[list[JobRecord]]:
            for start in range(0, len(drafts), DISPATCH_CHUNK):
                now = self._now_ms()
                chunk = [self._new_record(draft, now) for draft in drafts[start : start + DISPATCH_CHUNK]]
                records.extend(chunk)
                yield chunk

        if drafts:
            await self.shipper.send(self.driver)
            await self._note_kinds(drafts)
            await self.driver.push_chunks(chunks())
            await self._stored(records)
        return [r.id for r in records]

    async def push(self, records: Sequence[JobRecord]) -> None:
        """Store prepared records and count them; on ``sync``, run them now."""
        if not records:
            return
        await self._send_unsent_code(records)
        await self.driver.push(records)
        await self._stored(records)

    async def _send_unsent_code(self, records: Sequence[JobRecord] | Sequence[Draft]) -> None:
        """Shipped code envelopes not stored yet, and the kinds of ``records`` not noted yet,
        go before the jobs that need them."""
        if self._shipper is not None and self._shipper.unsent:
            await self._shipper.send(self.driver)
        if self._kinds.unnoted(records):
            await self._note_kinds(records)

    async def _note_kinds(self, jobs: Sequence[JobRecord] | Sequence[Draft]) -> None:
        """Note the job kinds of ``jobs`` where workers read them (``runtime.kinds``); the
        sync driver runs jobs at dispatch and has no fleet to tell."""
        if not self.driver.runs_at_dispatch:
            await self._kinds.note(self.driver, jobs)

    async def follow_kind_rule(self, queue: str, name: str, rule: str) -> bool:
        """A job kind this process dispatched to ``queue`` is defined again with lane rule
        ``rule`` (``flow.kind_rule``): its queued jobs follow it from the next claim on, on every
        worker. Whether the rule changed."""
        if self.driver.runs_at_dispatch:
            return False
        return await self._kinds.follow(self.driver, queue, name, rule)

    async def _stored(self, records: Sequence[JobRecord]) -> None:
        """What follows storing new records: they are counted, and on ``sync`` they run now."""
        self._count_queued(records)
        if self.driver.runs_at_dispatch:
            await self._run_now({r.queue for r in records})

    def _count_queued(self, records: Sequence[JobRecord]) -> None:
        job_queued = self.monitor.job_queued
        for record in records:  # stored: a broken monitor must not hide them
            try:
                job_queued(record)
            except Exception:
                logger.exception("queue monitor %r raised", job_queued)

    async def _run_now(self, queues: set[str]) -> None:
        while claimed := await self.driver.reserve(sorted(queues), 1, 0):
            await self.executor.execute(claimed[0])

    # -- workers -----------------------------------------------------------------------------
    async def start_worker(self, max_jobs: int | None = None, delay: float | timedelta | None = None,
                           timeout: float | timedelta | None = None, *, concurrency: int | None = None,
                           queues: Sequence[str] | None = None, burst: bool = False,
                           prefetch: int | None = None, isolation: str | None = None,
                           resources: Any = None, run_in_background: bool = False,
                           on_error: Hook | None = None, on_job_start: Hook | None = None,
                           on_job_complete: Hook | None = None,
                           on_job_error: Hook | None = None) -> QueueWorker:
        """Start a worker; with ``run_in_background`` return at once, else wait until it stops.

        ``max_jobs`` stops it after that many jobs, ``timeout`` after that many seconds,
        ``delay`` is the longest it waits for new work between checks; with ``burst`` it stops
        once no job is due (jobs held back only by a concurrency slot or a rate window are
        waited for). ``isolation="process"`` runs jobs that do not choose their
        isolation in child processes. ``resources`` (``{"gpu": 4}`` or ``"gpu=4"``): units this
        worker offers to jobs that ask for them; it claims only jobs that fit what is free.
        """
        options = worker_settings(self.settings.workers, max_jobs=max_jobs, delay=delay,
                                  timeout=timeout, concurrency=concurrency, burst=burst,
                                  prefetch=prefetch, isolation=isolation, resources=resources)
        names = limits.queue_names(queues) if queues else [self.settings.name]
        self._set_hooks(on_error, on_job_start, on_job_complete, on_job_error)
        worker = QueueWorker(self.driver, self.executor, self.settings, options, names, self.hooks)
        self._workers.append(worker)
        worker.start()
        if not run_in_background:
            await worker.run()
        return worker

    def _set_hooks(self, *hooks: Hook | None) -> None:
        names = ("on_error", "on_job_start", "on_job_complete", "on_job_error")
        for name, hook in zip(names, hooks, strict=True):
            if hook is not None:
                if not callable(hook):
                    raise ConfigError(f"{name} must be callable, got {hook!r}")
                setattr(self.hooks, name, hook)

    @property
    def workers(self) -> list[QueueWorker]:
        return [w for w in self._workers if w.running]

    async def stop_worker(self, grace: float = 10.0) -> None:
        """Stop every worker this manager started (idempotent)."""
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.stop(grace) for w in workers))

    async def close(self) -> None:
        """Stop workers, the children of isolated jobs, and close the driver."""
        await self.stop_worker()
        if self._executor is not None:
            await self._executor.close()
        if self._driver is not None:
            await self._driver.close()
        if self._threads is not None:
            self._threads.shutdown(wait=False)
        self._artifacts.close()

    async def list_workers(self) -> list[dict[str, Any]]:
        """Every worker of this queue that wrote its entry in the last hour, from any process
        or machine (``presence``; ``workers`` is this process's own): name, host, pid, launcher,
        state (idle, busy, gone), queues, concurrency, resources, jobs done, started and last
        seen (epoch ms), the job names it runs and whether it trusts shipped code."""
        return await read_entries(self.driver)

    async def retire(self, name: str = "all") -> None:
        """Ask the worker ``name`` (``"all"``: every worker running now, wherever it runs) to
        finish the jobs in hand and exit; it hears it within PRESENCE_EVERY_S seconds."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"retire() takes a worker's name or 'all', got {name!r}")
        await ask_retire(self.driver, name)

    async def pause_queue(self, queue: str | None = None) -> None:
        """Pause ``queue`` (default: this manager's) for every worker, wherever it runs: no
        claim that starts after this returns takes its jobs; running jobs finish, dispatch goes
        on. A queue with no job yet may be paused."""
        await self.driver.pause(limits.queue_name(queue or self.settings.name))

    async def resume_queue(self, queue: str | None = None) -> bool:
        """Let every worker claim ``queue``'s jobs again; whether it was paused."""
        return await self.driver.resume(limits.queue_name(queue or self.settings.name))

    async def paused_queues(self) -> list[str]:
        """The names of the paused queues, sorted."""
        return await self.driver.paused_queues()

    async def trim(self) -> int:
        """Apply retention now, then collect the artifact store: the objects no record refers
        to any more and older than ``queue.artifact_grace`` go away. How many objects did."""
        await self.driver.trim()
        return await collect_artifacts(self.driver, self._artifacts)

    # -- inspecting --------------------------------------------------------------------------
    def get_metrics(self) -> dict[str, Any]:
        """The nine metrics of this process (see :class:`BasicQueueMonitor`)."""
        return self.monitor.get_metrics()

    def reset_metrics(self) -> None:
        """Start this process's metrics from zero."""
        self.monitor.reset()

    async def jobs(self, status: str | JobStatus | None = None, *, queue: str | None = None,
                   limit: int | None = None) -> list[JobRecord]:
        """Stored job records, oldest first (``limit`` keeps the newest)."""
        parsed = None if status is None else JobStatus.parse(status)
        return await self.driver.jobs(parsed, _queue_filter(queue), limit)

    # -- schedules ---------------------------------------------------------------------------
    async def schedule(self, job: QueueJob | type[QueueJob], *, cron: str | None = None,
                       every: float | timedelta | None = None, id: str | None = None,
                       tz: str = "UTC", overlap: str = "skip", catchup: bool | str | None = None,
                       queue: str | None = None, priority: int | None = None) -> str:
        """Store a schedule that dispatches ``job`` (an instance, or a class built with no
        arguments) at each slot of ``cron`` (in time zone ``tz``) or of ``every`` (seconds or a
        timedelta); return its id (``id``, or the job name and a digest of its arguments).
        Saving an id again replaces that schedule and keeps its last fired slot. Every worker of
        the queue fires it, each slot once (see ``schedules``); ``overlap`` and ``catchup`` say
        what a slow or a missed run does."""
        instance = job() if isinstance(job, type) else job
        draft = self._draft(instance, None, queue, priority, None, None)
        made = make_schedule(draft, cron=cron, every=every, schedule_id=id, tz=tz, overlap=overlap,
                             catchup=catchup, now_ms=self._now_ms())
        await self._send_unsent_code([draft])
        await self.driver.save_schedule(made)
        return made.id

    async def schedules(self) -> list[ScheduleInfo]:
        """Every stored schedule: id, job, when it runs, its next and last run and how the last
        run ended."""
        states = await self.driver.schedule_states()
        lasts = await self.driver.get_many([s.last_job for s in states if s.last_job is not None])
        by_id = {r.id: r for r in lasts if r is not None}
        now = self._now_ms()
        return [info_of(s, by_id.get(s.last_job or ""), now) for s in states]

    async def unschedule(self, schedule_id: str) -> bool:
        """Remove a schedule; whether there was one. Jobs it dispatched stay."""
        return await self.driver.remove_schedule(schedule_id)

    async def why_waiting(self, records: Sequence[JobRecord]) -> dict[str, str]:
        """Why each due job among ``records`` is not running yet, where its limits hold it back
        (job id -> ``"limit train 2/2"``, ``"rate 30/min"``, ``"needs gpu=1, none free"``,
        ``"unique: same job running"``, ``"no live worker runs 'train' (workers run: ...)"``);
        jobs that only wait for a free worker are left out."""
        reasons = await wait_reasons(self.driver, records)
        if any(r.status is QUEUED and r.id not in reasons for r in records):
            unrunnable = runs_reasons(records, await read_entries(self.driver))
            reasons = {**unrunnable, **reasons}
        return reasons

    async def get_job(self, job_id: str) -> JobRecord:
        """The record of job ``job_id`` in any queue; ``JobNotFoundError`` when there is none."""
        record = await self.driver.get(job_id)
        if record is None:
            raise JobNotFoundError(f"no job with id {job_id!r} in {self.settings.redacted_url()}")
        return record

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """The records of ``job_ids``, in order, read in one driver call."""
        return await read_records(self.driver, job_ids, self.settings.redacted_url())

    # -- waiting ---------------------------------------------------------------------------
    async def wait(self, job_ids: Sequence[str], timeout: float | timedelta | None = None) -> list[JobRecord]:
        """Wait until every job is completed or failed and return their records, in order.

        Woken by this process's workers, by settle notices from other processes where the
        driver hears them (Redis), else by polling. ``ResultTimeoutError`` after ``timeout``.
        """
        return await wait_for_jobs(self.driver, self.executor.listeners, job_ids,
                                   to_seconds(timeout, name="timeout"),
                                   location=self.settings.redacted_url())

    async def wait_done(self, job_ids: Sequence[str], timeout: float | timedelta | None = None) -> None:
        """Wait until every job is completed or failed, without reading their records: a job
        that finished and was then dropped by retention still counts (a sweep larger than
        ``queue.retention``). ``ResultTimeoutError`` after ``timeout``."""
        await wait_for_finish(self.driver, self.executor.listeners, job_ids,
                              to_seconds(timeout, name="timeout"), location=self.settings.redacted_url())

    async def wait_idle(self, queue: str | None = None, timeout: float | timedelta | None = None) -> None:
        """Wait until ``queue`` (every queue if ``None``) has nothing queued, scheduled or
        running. ``ResultTimeoutError`` after ``timeout``."""
        seconds = to_seconds(timeout, name="timeout")
        await wait_until_idle(self.driver, self.executor.listeners, _queue_filter(queue), seconds)

    async def dispatch_and_wait(self, job: QueueJob, timeout: float | timedelta | None = None, *,
                                queue: str | None = None, priority: int | None = None,
                                max_attempts: int | None = None) -> Any:
        """Queue ``job``, wait for a worker to finish it and return its result.

        Raises ``JobFailedError`` (with the record) if it failed for good, ``ResultTimeoutError``
        after ``timeout``. Settle notices are watched before the push, so nothing is read until
        the job has finished, and nothing at all when the notice carries the result (Redis, for
        results up to 1 KB of JSON; a worker in this process always does).
        """
        seconds = to_seconds(timeout, name="timeout")
        record = self.build_record(job, queue=queue, priority=priority, max_attempts=max_attempts)
        notices, location = SettleNotices([record.id]), self.settings.redacted_url()
        async with watch(self.driver, self.executor.listeners, notices):
            await self.push([record])
            await wait_until_finished(self.driver, [record.id], seconds, notices, location,
                                      read_first=False)
        if record.id in notices.results:  # the settle notice carried the result: nothing to read
            return load(decode_value(notices.results[record.id]))
        return outcome((await read_records(self.driver, [record.id], location))[0])

    async def counts(self, queue: str | None = None) -> dict[str, int]:
        """How many jobs are in each status (every status present), in ``queue`` or in all."""
        return {status.value: n for status, n in (await self.driver.counts(_queue_filter(queue))).items()}

    async def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        """Each job's status, read in one call; ``None`` for an id that is not stored (never
        dispatched here, or finished and dropped by retention)."""
        return await self.driver.statuses(job_ids)

    async def find_by_keys(self, keys: Sequence[str]) -> dict[str, JobRecord]:
        """The newest record stored for each sweep key that has one (resumable sweeps)."""
        return await self.driver.find_by_keys(keys)

    async def purge(self) -> None:
        """Delete every record of this queue's storage: queued, running, finished and failed."""
        await self.driver.purge()

    async def retry_failed(self, job_ids: Iterable[str] | None = None, *,
                           kind: str | Failure | None = None) -> int:
        """Requeue failed jobs (all of them, or the given ids) with a fresh attempt budget;
        with ``kind``, only those that failed that way (``raised``, ``timed_out``, ``crashed``,
        ``lost``)."""
        wanted = None if kind is None else Failure.parse(kind).value
        if job_ids is None or wanted is not None:
            failed = await (self.driver.jobs(FAILED) if job_ids is None else self.get_jobs(list(job_ids)))
            job_ids = [r.id for r in failed if r.status is FAILED and wanted in (None, r.failure)]
        count = await self.driver.requeue(list(job_ids))
        if count and self.driver.runs_at_dispatch:
            await self._run_now({self.settings.name})
        return count

    async def forget(self, job_id_or_ids: str | Iterable[str]) -> int:
        """Delete finished records (completed, failed or cancelled) by id; return how many.
        Pending and running jobs, and ids not stored here, are left alone."""
        return await self.driver.forget(job_ids(job_id_or_ids, "forget()"))

    async def purge_failed(self, *, queue: str | None = None) -> int:
        """Delete every failed record of ``queue`` (every queue if ``None``); return how many."""
        failed = await self.driver.jobs(FAILED, _queue_filter(queue))
        return await self.driver.forget([r.id for r in failed]) if failed else 0

    # -- cancelling ------------------------------------------------------------------------
    async def cancel(self, job_id_or_ids: str | Iterable[str], *, reason: str = "cancelled") -> list[str]:
        """Cancel jobs; returns the ids this call cancelled. A queued or scheduled job becomes
        ``cancelled`` and never starts; a running one becomes ``cancelled`` at once and its
        worker stops it (see ``QueueDriver.cancel``). A finished or already cancelled job is
        left as it is and its id is not returned. ``JobNotFoundError`` names ids not stored
        here (and nothing is cancelled then)."""
        ids = job_ids(job_id_or_ids, "cancel()")
        if not isinstance(reason, str) or not reason:
            raise ConfigError(f"cancel(reason=...) must be a non-empty string, got {reason!r}")
        await self._check_stored(ids)
        return await self.driver.cancel(ids, reason)

    async def cancel_all(self, status: str = "queued", *, queue: str | None = None,
                         reason: str = "cancelled") -> list[str]:
        """Cancel every job of ``queue`` (every queue if ``None``) in ``status``: ``"queued"``
        (waiting for other jobs, queued and scheduled; waiting ones first, so a reduce is not
        released by its points being cancelled), ``"active"`` (running), or ``"all"`` (both)."""
        if status not in CANCEL_SCOPES:
            raise ConfigError(f"cancel status must be one of {', '.join(CANCEL_SCOPES)}, got {status!r}")
        wanted = CANCEL_SCOPES[status]
        queue = _queue_filter(queue)
        found = [r.id for s in wanted for r in await self.driver.jobs(s, queue)]
        return await self.driver.cancel(found, reason) if found else []

    async def __aenter__(self) -> QueueManager:
        return await self.init()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _queue_filter(queue: str | None) -> str | None:
    """A queue name given to narrow a read or a cancel, checked like one given to dispatch."""
    return None if queue is None else limits.queue_name(queue)
