"""The one path every job runs through, for workers and the sync driver alike.

decode -> on_job_start -> middleware -> handle (with timeout) -> settle through the driver
-> monitor -> on_job_complete / on_job_error. A failure anywhere in a job, a hook or the
monitor is contained here: it becomes the job's error or a log line, never a worker crash.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
import threading
import time
import traceback as tb_module
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..drivers.base import QueueDriver
from ..errors import (
    JobCancelledError,
    JobCrashedError,
    JobTimeoutError,
    KhademError,
    Preempted,
    RetryJob,
    SerializationError,
    UnknownJobError,
)
from ..features.dependencies import upstream_of
from ..job import CANCELLED, Failure, JobRecord, QueueJob
from ..limits import DURATIONS, cut_text
from ..middleware import MiddlewareChain
from ..monitor import QueueMonitor
from ..serializer import QueueJobSerializer, check_size
from .batching import BatchGate
from .context import CHECKPOINT, ENDED, ORPHANED, JobContext, current_job
from .isolation import ChildRaised, ProcessPool
from .kinds import lacks, note_kind, shipped
from .shipping import CodeLoader

logger = logging.getLogger(__name__)
GIVE_BACK_S = 1.0  # a job given back by a worker that lacks it is due again after this
SNOOZES = "snoozes"  # the record's meta key counting its snoozes (``Snooze``)

Hook = Callable[..., Any]


@dataclass(slots=True)
class WorkerHooks:
    """Callbacks, sync or async. Failures inside them are logged and otherwise ignored."""

    on_job_start: Hook | None = None  # (job)
    on_job_complete: Hook | None = None  # (job, result)
    on_job_error: Hook | None = None  # (job, error, traceback_text) - every failed attempt
    on_error: Hook | None = None  # (error, traceback_text) - worker-level errors


class JobExecutor:
    """Runs one claimed record to a settled state."""

    def __init__(self, driver: QueueDriver, serializer: QueueJobSerializer, monitor: QueueMonitor,
                 middleware: MiddlewareChain, hooks: WorkerHooks, threads: ThreadPoolExecutor,
                 loader: CodeLoader | None = None) -> None:
        self.driver = driver
        self.serializer = serializer
        self.monitor = monitor
        self.middleware = middleware
        self.hooks = hooks
        self.threads = threads
        self.loader = loader  # shipped code, for jobs this process has no factory for
        self._is_async: dict[type, bool] = {}
        #: the jobs running here, by id: what ``abort`` stops
        self.running: dict[str, JobContext] = {}
        self.preempting = False  # a worker of this executor is stopping (``preempt``)
        #: when a job it lacks was last given back (its workers read the kinds again: ``kinds``)
        self.kinds_learned_at = float("-inf")
        self._doomed: set[str] = set()  # claimed here, cancelled before they started
        self._thread_lock = threading.Lock()
        self._orphans = 0  # threads of timed-out sync jobs still running
        #: sync jobs whose ``handle`` runs on a pool thread now, by id (a thread cannot be
        #: stopped: a worker process that must end exits with these still running)
        self._on_threads: dict[str, JobRecord] = {}
        self._pool: ProcessPool | None = None  # children of isolated jobs, started on first use
        self._gates: dict[str, BatchGate] = {}  # batched kinds met here, by job name
        #: each job name's factory when its batch size was read, and that size (``batch_size_of``)
        self._batch_sizes: dict[str, tuple[Any, int | None]] = {}
        #: called with each record this process settles (used by notebook handles to wake up)
        self.listeners: list[Callable[[JobRecord], None]] = []

    async def execute(self, record: JobRecord, loop: asyncio.AbstractEventLoop | None = None,
                      isolation: str = "none", task: asyncio.Task[Any] | None = None,
                      resources: dict[str, list[int]] | None = None) -> None:
        """Run ``record`` to a settled state; on cancellation give it back to the queue.

        ``loop`` is the running loop when the caller knows it (a worker does): asking asyncio
        for it costs a ``getpid()`` system call on every job; ``task`` is the task that runs
        this call, when the caller knows it (what an abort cancels). ``isolation`` is where a job
        that does not say runs (``"process"``: see ``isolation``). A job cancelled while it runs
        (:meth:`abort`) stops and is settled so; one cancelled before it started never runs.
        ``resources``: the worker's units the job holds (``context().resources``).
        """
        started = time.perf_counter()
        built = self._begin(record)
        job = built if isinstance(built, QueueJob) else await self._unbuilt(record, built, started)
        if job is None:
            return
        if self.hooks.on_job_start is not None:
            await self._run_hook(self.hooks.on_job_start, job)
        context = JobContext(record, self.driver, loop or asyncio.get_running_loop(), task,
                             (job.isolation or isolation) == "process", resources)
        context.serializer = self.serializer
        context.preempted = self.preempting
        self.running[record.id] = context  # what abort() finds
        token = current_job.set(context)
        failure: Exception | None = None
        try:
            result = await (self._start(job, record, context) if record.feed is None
                            else self._start_fed(job, record, context))
            encoded = self._finished(record, result)
        except asyncio.CancelledError:
            failure = await self._interrupted(record, context, started)
        except Exception as exc:  # every job failure, middleware failure or bad result lands here
            failure = exc
        finally:
            self.running.pop(record.id, None)
            current_job.reset(token)
            if context.output or context.curves is not None:  # kept with the record, then settled
                record.meta.update(context.stored_meta())
        if context.cancelled:
            await self._stop(record, started)
        elif failure is not None:
            await self._settle_failure(record, job, failure, _format(failure), started, retryable=True)
        elif await self.driver.complete(record, encoded) and record.status is not CANCELLED:
            self._completed(record, started)
            if self.hooks.on_job_complete is not None:
                await self._run_hook(self.hooks.on_job_complete, job, result)
        else:  # lost its lease, or cancelled while it ran and stopped by this settle
            self._not_completed(record, started)

    def _finished(self, record: JobRecord, result: Any) -> Any:
        """The stored result of a job that returned ``result``; its checkpoint, no longer
        needed, is unpointed (and so collected)."""
        if record.meta.get(CHECKPOINT) is not None:
            record.meta[CHECKPOINT] = None
        return None if result is None else self._encoded_result(record, result)

    def _encoded_result(self, record: JobRecord, result: Any) -> Any:
        """``result`` as stored JSON data; ``SerializationError`` for a value JSON cannot hold
        or one over ``queue.max_payload``."""
        encoded = self.serializer.encode_large(result, f"result of {record.name}")
        check_size(encoded, self.driver.settings.max_payload, f"the result of {record.name}")
        return encoded

    async def _interrupted(self, record: JobRecord, context: JobContext, started: float) -> Exception:
        """The job's task was cancelled: the abort of a cancelled job becomes its failure;
        anything else (the worker stopping) gives the job back to the queue and goes on up."""
        if context.cancelled and context.task is not None and context.task.uncancel() == 0:
            return JobCancelledError(record)
        del self.running[record.id]
        await asyncio.shield(self._give_back(record, started))
        raise asyncio.CancelledError

    def _not_completed(self, record: JobRecord, started: float) -> None:
        if record.status is CANCELLED:
            self._cancelled(record, started)
        else:
            self._stale(record, (time.perf_counter() - started) * 1000)

    def preempt(self) -> None:
        """Tell every job running here, and every job that starts from now on, that its worker
        is stopping (``preempted()``)."""
        self.preempting = True
        for context in self.running.values():
            context.preempted = True

    def abort(self, job_id: str) -> bool:
        """Stop the job ``job_id`` if it runs here (it was cancelled); whether it does."""
        context = self.running.get(job_id)
        if context is None:
            return False
        context.cancel()
        return True

    def doom(self, job_id: str) -> None:
        """``job_id``, claimed here and not started, was cancelled: it never starts."""
        self._doomed.add(job_id)

    async def _stop(self, record: JobRecord, started: float) -> None:
        """Settle a job stopped because it was cancelled: the driver keeps it cancelled and
        records when it stopped (any settle by its holder does that)."""
        self._doomed.discard(record.id)
        if await self.driver.fail(record, "cancelled", None, None) and record.status is CANCELLED:
            self._cancelled(record, started)
        else:
            self._stale(record, (time.perf_counter() - started) * 1000)

    def _cancelled(self, record: JobRecord, started: float) -> None:
        logger.info("job %s (%s) stopped: it was cancelled", record.name, record.id)
        counted = getattr(self.monitor, "job_cancelled", None)  # optional in QueueMonitor
        if counted is not None:
            safe_call(counted, record, (time.perf_counter() - started) * 1000)
        if self.listeners:
            self._notify(record)

    def _start(self, job: QueueJob, record: JobRecord, context: JobContext) -> Awaitable[Any]:
        """What to await to run the job: through middleware, or its timeout, or ``handle``."""
        if record.status is CANCELLED or (self._doomed and record.id in self._doomed):
            context.cancelled = True  # cancelled after its claim, before it started: it never does
            return _refuse(record)
        if self.middleware.items:
            return self._run_through_middleware(job, record, context)
        if record.timeout_s is None and self._is_async.get(type(job)) and not context.isolated:
            return job.handle()
        return self._invoke(job, record, context)

    async def _start_fed(self, job: QueueJob, record: JobRecord, context: JobContext) -> Any:
        """Run a job given what it is fed of the jobs it ran after (``dependencies``)."""
        job.take_upstream(await upstream_of(self.driver, record), record.feed or "")
        return await self._start(job, record, context)

    def _begin(self, record: JobRecord) -> QueueJob | SerializationError:
        """Count the start and rebuild the job, or return why it cannot be rebuilt."""
        try:
            self.monitor.job_started(record)
        except Exception:
            logger.exception("queue monitor raised")
        try:
            job = self.serializer.decode_job(record.name, record.payload)
        except SerializationError as exc:
            return exc
        job.attempt = record.attempt
        if hasattr(job, "created_at"):
            job.created_at = record.created_at
        return job

    async def _unbuilt(self, record: JobRecord, error: SerializationError,
                       started: float) -> QueueJob | None:
        """The job of a record this process has no factory for, rebuilt from the code shipped
        under its digest; else ``None`` once the job is given back for a worker that runs it
        (``kinds``), or failed with why where no worker can help (a payload that does not
        decode, shipped code that is gone or refused)."""
        reason: KhademError = error
        unknown = isinstance(error, UnknownJobError)
        runs_shipped = shipped(record.code) and self.loader is not None
        if unknown and not runs_shipped and not self.driver.runs_at_dispatch:
            await self._leave_to_others(record, started)
            return None
        if unknown and record.code and self.loader is not None:
            try:
                given = self.serializer.decode_loaded(record.payload)
                job = await self.loader.job_for(record, self.driver, given)
                if job is not None:
                    job.attempt = record.attempt
                    return job
                reason = UnknownJobError(f"{error} (no code was shipped under its digest {record.code})")
            except KhademError as exc:  # a refused check, a storage fault
                reason = exc
            except (KeyError, TypeError, ValueError) as exc:
                reason = SerializationError(f"payload of job {record.name!r} could not be decoded: {exc!r}")
        await self._settle_failure(record, None, reason, _format(reason), started, retryable=False)
        return None

    async def _leave_to_others(self, record: JobRecord, started: float) -> None:
        """Give back, without spending an attempt, a job this process lacks: its kind is
        noted, so this process's claims (and, within ``kinds.READ_EVERY_S``, every worker's)
        leave it to workers that run it."""
        logger.warning("gave job %s back: this worker does not run %r (%s)", record.id, record.name,
                       lacks(record.name))
        try:
            await note_kind(self.driver, record)
        except Exception as exc:  # the next dispatch or claim notes it
            logger.warning("could not note the kind of job %s: %r", record.id, exc)
        self.kinds_learned_at = time.monotonic()
        await self._give_back(record, started, GIVE_BACK_S)

    def _completed(self, record: JobRecord, started: float) -> None:
        try:
            self.monitor.job_completed(record, (time.perf_counter() - started) * 1000)
        except Exception:
            logger.exception("queue monitor raised")
        if self.listeners:
            self._notify(record)

    async def _run_through_middleware(self, job: QueueJob, record: JobRecord, context: JobContext) -> Any:
        outcome: list[Any] = []

        async def innermost() -> Any:
            outcome.append(await self._invoke(job, record, context))
            return outcome[0]

        await self.middleware.run(job, innermost)
        if not outcome:
            raise RuntimeError("a middleware returned without calling next(); the job did not run")
        return outcome[0]

    async def _invoke(self, job: QueueJob, record: JobRecord, context: JobContext) -> Any:
        awaitable = self._start_handle(job, context)
        if record.timeout_s is None:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, record.timeout_s)
        except TimeoutError:
            note = ""
            if context.in_thread and self._orphaned(context):
                note = ("; its thread runs on until handle() returns (isolation='process' stops "
                        "a job at its timeout)")
            raise JobTimeoutError(
                f"job {record.name!r} ran longer than its timeout of {record.timeout_s:g}s{note}"
            ) from None

    def _start_handle(self, job: QueueJob, context: JobContext) -> Awaitable[Any]:
        if job.batch_size is not None:  # its work is one share of its kind's next batched call
            return self._gate_of(context.record.name, job).submit(job)
        if context.isolated:
            if self._pool is None:
                self._pool = ProcessPool()
            return self._pool.run(job, context.record, context)
        cls = type(job)
        is_async = self._is_async.get(cls)
        if is_async is None:
            is_async = self._is_async[cls] = inspect.iscoroutinefunction(job.handle)
        if is_async:
            return job.handle()
        context.in_thread = True
        run = contextvars.copy_context().run
        loop = asyncio.get_running_loop()
        self._on_threads[context.record.id] = context.record
        return loop.run_in_executor(self.threads, self._on_thread, run, job.handle, context)

    def _gate_of(self, name: str, job: QueueJob) -> BatchGate:
        """The gate that gathers the jobs named ``name`` into batched calls."""
        gate = self._gates.get(name)
        if gate is None or (gate.size, gate.wait_s) != (job.batch_size, job.batch_wait):  # a cell run again
            gate = self._gates[name] = BatchGate(job.batch_size or 1, job.batch_wait, lambda: self.threads)
        return gate

    def batch_size_of(self, name: str) -> int | None:
        """The batch size of the jobs named ``name`` (``None``: each runs alone), read from the
        job class or job function registered for it, before one of them runs; what the worker
        asks of every job it claims, so kept by name with the factory it was read from (a cell
        run again registers another)."""
        factory = self.serializer.factories.get(name)
        known = self._batch_sizes.get(name)
        if known is not None and known[0] is factory:
            return known[1]
        owner = getattr(factory, "__self__", None)  # a job class's from_json, a job function's _rebuild
        size = getattr(owner, "batch_size", None)
        self._batch_sizes[name] = (factory, size if isinstance(size, int) else None)
        return self._batch_sizes[name][1]

    def _on_thread(self, run: Callable[..., Any], handle: Callable[[], Any], context: JobContext) -> Any:
        """Run a sync job's ``handle`` on a pool thread; count its end if it outlived its timeout."""
        try:
            return run(handle)
        finally:
            self._on_threads.pop(context.record.id, None)
            with self._thread_lock:
                if context.thread_state == ORPHANED:
                    self._orphans -= 1
                context.thread_state = ENDED

    def _orphaned(self, context: JobContext) -> bool:
        """A sync job timed out: whether its thread still runs (then counted in
        ``orphaned_threads`` until it returns)."""
        with self._thread_lock:
            if context.thread_state == ENDED:
                return False
            context.thread_state = ORPHANED
            self._orphans += 1
            return True

    async def close(self) -> None:
        """Stop the children of isolated jobs."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def jobs_on_threads(self) -> list[JobRecord]:
        """The sync jobs whose code still runs on a pool thread."""
        return list(self._on_threads.values())

    @property
    def orphaned_threads(self) -> int:
        """Threads of sync jobs that timed out and still run: each holds a pool thread."""
        return self._orphans

    async def _settle_failure(self, record: JobRecord, job: QueueJob | None, exc: BaseException,
                              text: str, started: float, *, retryable: bool) -> None:
        if await self._gave_way(record, job, exc, started):
            return
        if isinstance(exc, RetryJob) and not exc.count_attempt:
            retryable = False  # snoozed as often as it may: it fails, saying so
        duration_ms = (time.perf_counter() - started) * 1000
        error, kind = _describe(exc), failure_kind(exc)
        delay = self._retry_delay(job, record, exc) if retryable and job is not None else None
        if delay is not None:
            settled = await self.driver.retry(record, delay, error, text, kind)
            if settled and record.status is not CANCELLED:
                safe_call(self.monitor.job_retried, record, duration_ms)
        else:
            settled = await self.driver.fail(record, error, text, kind)
            if settled and record.status is not CANCELLED:
                safe_call(self.monitor.job_failed, record, duration_ms)
        if settled and record.status is CANCELLED:  # cancelled while it ran: it stopped
            self._cancelled(record, started)
            return
        if not settled:
            self._stale(record, duration_ms)
        elif self.listeners:
            self._notify(record)
        if job is not None and not isinstance(exc, RetryJob):
            await self._run_hook(self.hooks.on_job_error, job, exc, text)
        logger.log(logging.INFO if delay is not None else logging.WARNING,
                   "job %s (%s) attempt %d %s: %s", record.name, record.id, record.attempt,
                   f"will retry in {delay:g}s" if delay is not None else "failed", error)

    def _retry_delay(self, job: QueueJob, record: JobRecord, exc: BaseException) -> float | None:
        if record.attempt >= record.max_attempts:
            return None
        if isinstance(exc, RetryJob):
            return _bounded(exc.delay, "RetryJob(delay=...)") if exc.delay is not None else _safe_delay(job)
        if not job.should_retry:
            return None
        return _safe_delay(job)

    async def _gave_way(self, record: JobRecord, job: QueueJob | None, exc: BaseException,
                        started: float) -> bool:
        """Put back without spending an attempt a job preempted (checkpointed) or snoozing
        within its ``max_snoozes``; whether it was."""
        if isinstance(exc, Preempted):
            await self._give_back(record, started)
            return True
        if isinstance(exc, RetryJob) and not exc.count_attempt and self._snooze(record, job, exc):
            await self._give_back(record, started, _bounded(exc.delay or 0.0, "Snooze(seconds)"))
            return True
        return False

    @staticmethod
    def _snooze(record: JobRecord, job: QueueJob | None, exc: RetryJob) -> bool:
        """Count a snooze in the record; whether it is within the job's ``max_snoozes`` (else
        ``exc`` says so and the job fails)."""
        limit = job.max_snoozes if job is not None else QueueJob.max_snoozes
        snoozes = int(record.meta.get(SNOOZES, 0)) + 1
        if snoozes > limit:
            exc.args = (f"snoozed {snoozes - 1} times, the job's max_snoozes: {exc.reason}",)
            return False
        record.meta[SNOOZES] = snoozes
        return True

    async def _give_back(self, record: JobRecord, started: float, delay_s: float = 0.0) -> None:
        duration_ms = (time.perf_counter() - started) * 1000
        try:
            await self.driver.release(record, delay_s)
        except Exception:  # the lease will expire and another worker reclaims it
            logger.exception("could not release job %s on stop; its lease will expire", record.id)
        safe_call(self.monitor.job_retried, record, duration_ms)

    def _notify(self, record: JobRecord) -> None:
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                logger.exception("settle listener %r raised", listener)

    def _stale(self, record: JobRecord, duration_ms: float) -> None:
        logger.warning("job %s (%s) finished after its lease was lost; another worker owns it, "
                       "this result was discarded", record.name, record.id)
        safe_call(self.monitor.job_retried, record, duration_ms)

    async def _run_hook(self, hook: Hook | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            value = hook(*args)
            if inspect.isawaitable(value):
                await value
        except Exception:
            logger.exception("callback %r raised; the worker carries on", hook)


def _safe_delay(job: QueueJob) -> float:
    try:
        return _bounded(job.get_next_retry_delay(), f"{type(job).__name__}.get_next_retry_delay()")
    except Exception:
        logger.exception("%s.get_next_retry_delay() raised; retrying after 1s", type(job).__name__)
        return 1.0


def _bounded(delay: Any, source: str) -> float:
    """A retry delay within what every driver stores (0 s to ``limits.DURATIONS["delay"]``):
    a longer one is shortened, a negative one is 0, one that is not a number is 1 s."""
    low, high = DURATIONS["delay"]
    try:
        seconds = float(delay)
    except (TypeError, ValueError):
        seconds = math.nan
    if math.isnan(seconds):
        logger.warning("%s gave %r, not a number of seconds; retrying after 1s", source, delay)
        return 1.0
    return min(max(low, seconds), high)


async def _refuse(record: JobRecord) -> Any:
    """What a job cancelled before it started runs instead of its body."""
    raise JobCancelledError(record)


def failure_kind(exc: BaseException) -> str:
    """The ``Failure`` kind of an attempt that ended with ``exc``."""
    if isinstance(exc, JobTimeoutError):
        return Failure.TIMED_OUT.value
    if isinstance(exc, JobCrashedError):
        return Failure.CRASHED.value
    return Failure.RAISED.value


def _describe(exc: BaseException) -> str:
    """The error a record keeps: the exception's type and message, cut to ``TEXT_LIMIT``."""
    if isinstance(exc, ChildRaised):
        return cut_text(exc.description)
    text = str(exc)
    return cut_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _format(exc: BaseException) -> str:
    """The traceback a record keeps, cut to ``TEXT_LIMIT``."""
    if isinstance(exc, ChildRaised):
        return cut_text(exc.child_traceback)
    return cut_text("".join(tb_module.format_exception(exc)))


def safe_call(method: Callable[..., Any], *args: Any) -> None:
    """Call a monitor method; a broken monitor is logged, never allowed to stop a job."""
    try:
        method(*args)
    except Exception:
        logger.exception("queue monitor %r raised", method)
