"""``QueueWorker``: consumer tasks that claim jobs and hand them to the executor.

``start()`` spawns ``concurrency`` consumer tasks (plus a heartbeat task on drivers with
leases) and returns. Idle consumers wait in line; one fetch loop claims a batch sized for all
of them and hands each record to exactly one. With ``prefetch``, up to that many more jobs are
claimed ahead into a buffer, so the next claim travels while a batch runs (the worker then
holds at most ``concurrency + prefetch`` jobs, all heartbeated).

``run()`` waits until the worker stops: ``max_jobs`` claimed, ``timeout`` elapsed, or
``stop()`` called. ``stop()`` is idempotent: it stops claiming, lets running jobs finish for
``grace`` seconds, then cancels them; their jobs and any prefetched ones go back to the queue.
No signal handlers are installed here (the CLI does that; a kernel must not).

A job cancelled while this worker holds it is stopped here (:meth:`QueueWorker.abort`): the
driver tells the worker at once where it can (``listen_aborts``), else the worker asks it every
ABORT_POLL_S while it holds jobs; a heartbeat that finds a lease gone asks too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import traceback
from collections import deque
from collections.abc import Sequence
from typing import Any

from .. import limits
from .._time import now_ms
from ..config import QueueSettings, WorkerSettings
from ..drivers.base import QueueDriver
from ..errors import DriverError, KhademError
from ..features.resources import OFFER_EVERY_S, ResourcePool
from ..features.why_waiting import frees_up, wait_reasons
from ..job import QUEUED, SCHEDULED, JobRecord
from ._tasks import stop_if_cancelled
from .collecting import collect_now_and_then
from .execution import JobExecutor, WorkerHooks
from .kinds import WorkerKinds
from .presence import NAME_ENV, PRESENCE_EVERY_S, PRESENCE_PREFIX, announce, entry, retire_asked
from .ticker import Ticker

logger = logging.getLogger(__name__)

MAX_ERROR_BACKOFF_S = 5.0
BURST_TRIES = 5  # failed claims in a row after which a burst worker gives up
BURST_LOOKED = 100  # queued jobs a burst worker looks at, after an empty claim, to see why they wait
BURST_SOON_MS = 1000  # a burst worker waits for the retries of its jobs due this soon
YIELD_EVERY = 64  # jobs run between two turns given to the loop's other tasks, at least
ABORT_POLL_S = 0.2  # how often a worker asks a driver that cannot tell it about cancelled jobs
RECENT_KEPT = 200  # jobs the worker remembers for the panel's timeline
#: beside the consumers until the stop
SERVICE_TASKS = ("khadem-heartbeat", "khadem-aborts", "khadem-ticks", "khadem-artifacts",
                 "khadem-presence")
BATCHED = "khadem-batched-"  # the name of a task on which a job waits for its batch (and its id)
STOP_WAIT_S = 5.0  # how long a stop waits for cancelled tasks to end before leaving them behind


class QueueWorker:
    """Processes jobs from ``queues`` (checked in order) until stopped or a limit is reached."""

    def __init__(self, driver: QueueDriver, executor: JobExecutor, settings: QueueSettings,
                 worker: WorkerSettings, queues: Sequence[str], hooks: WorkerHooks) -> None:
        self.driver = driver
        self.executor = executor
        self.settings = settings
        self.options = worker
        self.queues = list(queues)
        self.hooks = hooks
        self.processed = 0
        self._claims_left = worker.max_jobs
        self._active: dict[str, JobRecord] = {}  # running jobs, kept where leases need renewing
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._claiming = asyncio.Event()
        self._claiming.set()
        self._stop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop its tasks run on, from start()
        self._consumers_left = 0
        self._buffer: deque[JobRecord] = deque()  # claimed by a batch reserve, not started yet
        self._fetcher: asyncio.Task[None] | None = None  # claims for idle consumers, one batch at a time
        self._idle: deque[asyncio.Future[JobRecord | None]] = deque()  # consumers waiting for a job
        self._dropping: set[asyncio.Task[None]] = set()  # settles of cancelled buffered jobs
        self._batched: dict[str, int] = {}  # jobs waiting for their batch on tasks of their own, by kind
        self._batch_ahead = 0  # the batch size of the last claim's batched jobs: see _wanted
        self._batch_room = asyncio.Event()  # set when a batched job ends: see _room_for_batch
        self._batched_kinds = executor.serializer.factories.batched  # the registry's own set, kept current
        #: what it runs, and the filter its claims need (``kinds``)
        self.kinds = WorkerKinds(driver, self.queues, executor)
        self._errors = 0
        #: the last jobs each consumer ran, as (consumer, record): the panel's timeline
        self.recent: deque[tuple[str, JobRecord]] = deque(maxlen=RECENT_KEPT)
        self._drained = False  # burst mode: a reserve found nothing due
        self._retry_due_ms = 0  # burst mode: when the latest quick retry of a job it ran is due
        #: why a burst worker gave up: its claims failed BURST_TRIES times in a row
        self.failure: KhademError | None = None
        # Jobs claimed ahead into the buffer, so the next claim travels while this batch runs.
        self._prefetch = driver.default_prefetch(worker.concurrency) if worker.prefetch is None \
            else worker.prefetch
        #: the resource units this worker offers (``--resources``) and its jobs hold
        self.resources = ResourcePool(dict(worker.resources)) if worker.resources else None
        # nobody to claim a batch for, and no units to count: the lone consumer's fast path
        self._lone = worker.concurrency == 1 and not self._prefetch and self.resources is None
        #: fires the due slots of the schedules of its queues (``schedules``)
        self.ticker = Ticker(driver, self.queues)
        #: how this worker names itself in its resource offer (``QueueDriver.offer``)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        #: its name among the queue's workers (``presence``): its launcher's, else ``name``
        self.presence_name = os.environ.get(NAME_ENV) or self.name
        self.launcher: str | None = None  # who started it ("kernel", a launcher's name), if known
        self.started_ms = now_ms()
        self._told: tuple[dict[str, int], float] | None = None  # the free units last offered, when

    def __repr__(self) -> str:
        """What a notebook shows for ``q.start()``: ``4 workers on memory:// (running)``."""
        n = self.options.concurrency
        state = "paused" if self.running and self.paused else "running" if self.running else "stopped"
        return f"{n} worker{'s' if n != 1 else ''} on {self.settings.redacted_url()} ({state})"

    # -- control -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._done.is_set()

    @property
    def prefetch(self) -> int:
        """Jobs this worker claims ahead of its free consumers."""
        return self._prefetch

    @property
    def paused(self) -> bool:
        return not self._claiming.is_set()

    def start(self) -> None:
        """Spawn the consumer tasks on the running loop and return at once."""
        if self._tasks:
            return
        loop = self._loop = asyncio.get_running_loop()
        self.executor.preempting = False  # a worker stopped before is not this one
        self._consumers_left = self.options.concurrency
        for index in range(self.options.concurrency):
            consumer = self._consume(f"worker {index}")
            self._tasks.append(loop.create_task(consumer, name=f"khadem-consumer-{index}"))
        if self.driver.uses_leases:
            self._tasks.append(loop.create_task(self._heartbeat(), name="khadem-heartbeat"))
        self._tasks.append(loop.create_task(self._watch_aborts(), name="khadem-aborts"))
        self._tasks.append(loop.create_task(self._stay_present(), name="khadem-presence"))
        if not self.options.burst and not self.driver.runs_at_dispatch:  # fires the queues' schedules
            self._tasks.append(loop.create_task(self.ticker.run(), name="khadem-ticks"))
            artifacts = self.executor.serializer.artifacts
            if artifacts is not None:  # collects the queue's artifact store now and then
                self._tasks.append(loop.create_task(collect_now_and_then(self.driver, artifacts),
                                                    name="khadem-artifacts"))
        if self.options.timeout_s is not None:
            loop.call_later(self.options.timeout_s, self.request_stop)

    async def run(self) -> None:
        """Start (if needed) and wait until the worker has stopped. A burst worker whose claims
        kept failing raises why (its storage is down, damaged or read-only)."""
        self.start()
        await self._done.wait()
        if self.failure is not None:
            raise self.failure

    def pause(self) -> None:
        """Stop claiming new jobs; running ones finish."""
        self._claiming.clear()
        self.driver.interrupt_waits()

    def resume(self) -> None:
        """Claim jobs again after ``pause``."""
        self._claiming.set()

    def request_stop(self) -> None:
        """Ask the worker to stop after its running jobs (non-blocking)."""
        if self._stop_task is None and self._tasks:
            self._stop_task = asyncio.get_running_loop().create_task(self.stop())

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, wait up to ``grace`` seconds for running jobs, then cancel them."""
        grace = limits.seconds(grace, "grace")
        if not self._tasks or self._done.is_set():
            self._done.set()
            return
        if self._stopping.is_set():  # a second stop: cut the grace short if asked to
            if grace <= 0:
                for task in self._tasks:
                    task.cancel()
            await self._done.wait()
            return
        self._stopping.set()
        self.executor.preempt()  # running jobs see preempted(): they may checkpoint and give way
        self._claiming.set()  # let paused consumers see the stop
        self._batch_room.set()  # and consumers waiting for room for a batch
        self.driver.interrupt_waits()
        if self.executor.running:
            await self._announce("stopping")  # its running jobs may take the grace
        consumers = [t for t in self._tasks if t.get_name() not in SERVICE_TASKS]
        _, pending = await asyncio.wait(consumers, timeout=grace) if consumers else (set(), set())
        for task in pending:
            task.cancel()
        for task in self._tasks:
            if task.get_name() in SERVICE_TASKS:
                task.cancel()
        await _ended([*self._tasks, *([self._fetcher] if self._fetcher is not None else [])])
        buffered, self._buffer = list(self._buffer), deque()
        await self._release(buffered)
        await self._withdraw_offer()
        await self._leave_presence()
        self._done.set()

    async def _release(self, records: Sequence[JobRecord]) -> None:
        """Give claimed jobs that never started back to the queue (their attempt not counted)."""
        for record in records:
            self._give_back_units(record)
            try:
                await self.driver.release(record)
            except Exception:  # its lease will expire and another worker reclaims it
                logger.exception("could not give job %s back to the queue", record.id)

    # -- loops -------------------------------------------------------------------------------
    async def _consume(self, name: str) -> None:
        task = asyncio.current_task()  # what an abort of the job this consumer runs cancels
        try:
            while not self._stopping.is_set() and not (self._drained and not self._buffer):
                if not self._claiming.is_set():  # paused
                    await self._claiming.wait()
                    continue
                record = self._claim_ready() if self._lone else None
                if record is None:
                    record = await self._next_record()
                if record is None:
                    if self._drained or self._claims_exhausted():
                        break
                elif record.name in self._batched_kinds and self.executor.batch_size_of(record.name):
                    await self._to_its_batch(record)  # this consumer claims on meanwhile
                else:
                    await self._execute(record, task)
                    self._after_a_job(record)
                    self.recent.append((name, record))
                    if not self.processed % YIELD_EVERY:  # claims and jobs that never wait (memory,
                        await asyncio.sleep(0)  # SQLite on the loop) would otherwise hold the loop
            batched = [t for t in self._tasks if t.get_name().startswith(BATCHED)]
            if batched and not self._stopping.is_set():  # a burst ends when its batches have
                await asyncio.wait(batched)
        finally:
            self._consumers_left -= 1
            if self._consumers_left == 0 and not self._stopping.is_set():
                self.request_stop()

    async def _to_its_batch(self, record: JobRecord) -> None:
        """Start ``record``, of a batched kind, on a task of its own once fewer than two batches
        of its kind (one called, one gathering) are held, which bounds the jobs a worker holds
        for batches. The consumer waits for that room here rather than in the gate: a batch it
        joined could not fill while it waited in it. A worker stopping meanwhile gives the
        record back with its buffer."""
        size = self.executor.batch_size_of(record.name) or 1
        try:
            while self._batched.get(record.name, 0) >= 2 * size:
                if self._stopping.is_set():
                    self._buffer.appendleft(record)
                    return
                self._batch_room.clear()
                await self._batch_room.wait()
        except asyncio.CancelledError:
            self._buffer.appendleft(record)
            raise
        self._run_batched(record)

    def _run_batched(self, record: JobRecord) -> None:
        """Run ``record`` on a task of its own (stopped, aborted and waited for like a consumer)."""
        name = record.name
        self._batched[name] = self._batched.get(name, 0) + 1

        async def run() -> None:
            await self._execute(record, asyncio.current_task())
            self.recent.append(("batch", record))

        task = asyncio.get_running_loop().create_task(run(), name=f"{BATCHED}{record.id}")
        self._tasks.append(task)

        def ended(done: asyncio.Task[None]) -> None:
            self._batched[name] -= 1
            self._batch_room.set()
            if done in self._tasks:
                self._tasks.remove(done)

        task.add_done_callback(ended)

    def _claim_ready(self) -> JobRecord | None:
        """The one fast branch of claiming, for a lone consumer: a job the driver has at hand
        in this process (``QueueDriver.take_ready``), taken without a coroutine; ``None`` sends
        the consumer to :meth:`_next_record`. The loop has just seen no stop and no pause."""
        if self._drained or self._claims_exhausted() or self.kinds.stale():
            return None
        records = self.driver.take_ready(self.queues, 1, None, self.kinds.current())
        if not records:
            return None
        self._errors = 0
        if self._claims_left is not None:
            self._claims_left -= 1
        return records[0]

    async def _next_record(self) -> JobRecord | None:
        """The next claimed job, or ``None`` when this consumer should look at its loop again.

        Every claim that may wait goes through :meth:`_claim`. A lone consumer without prefetch
        claims for itself. Otherwise idle consumers wait in line and one fetcher task claims a
        batch for all of them and for the prefetch buffer: each record wakes exactly one.
        """
        if self._buffer:
            return self._take_buffered()
        if self._drained or self._claims_exhausted():  # the loop has just seen no stop or pause
            return None
        if self._lone:
            claimed = await self._claim(max(1, self._batch_ahead))
            self._buffer.extend(claimed[1:])
            return claimed[0] if claimed else None
        waiter: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        self._ensure_fetcher()
        try:
            return await waiter
        except asyncio.CancelledError:  # a record handed over just now goes back for release
            handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
            if handed is not None:
                self._buffer.appendleft(handed)
            raise

    def _take_buffered(self) -> JobRecord:
        record = self._buffer.popleft()
        ahead = max(self._prefetch, self._batch_ahead)
        if ahead and not self._lone and len(self._buffer) < ahead:  # top the buffer up
            self._ensure_fetcher()
        return record

    def _ensure_fetcher(self) -> None:
        if self._fetcher is None or self._fetcher.done():
            self._fetcher = asyncio.get_running_loop().create_task(self._fetch_loop())

    async def _fetch_loop(self) -> None:
        """Claim while consumers wait or the prefetch has room; then release whoever waits."""
        try:
            await asyncio.sleep(0)  # let every idle consumer line up before sizing the batch
            while self._wanted() > 0 and self._may_claim():
                await self._fetch_batch()
        finally:
            while self._idle:
                waiter = self._idle.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    async def _fetch_batch(self) -> None:
        """Reserve what is wanted and hand each record to a waiting consumer (or the buffer).

        The fetch loop goes straight on to the next claim when more is wanted, so with
        prefetch the next request leaves before this batch runs and the server works while
        Python does.
        """
        for record in await self._claim(max(1, self._wanted())):
            while self._idle and self._idle[0].done():  # its consumer was cancelled
                self._idle.popleft()
            if self._idle:
                self._idle.popleft().set_result(record)
            else:
                self._buffer.append(record)

    async def _claim(self, limit: int) -> list[JobRecord]:
        """Reserve up to ``limit`` jobs (fewer when ``max_jobs`` is near). Errors are logged
        here (once per outage) and backed off; a claim that lands while paused is given back."""
        if self._claims_left is not None:
            limit = min(limit, self._claims_left)
        pool = self.resources
        try:
            runs = await self.kinds.claim_filter()
            if pool is not None:
                await self._tell_offer(pool)
            free = None if pool is None else pool.free()
            records = await self.driver.reserve(self.queues, limit, self.options.delay_s, free, runs)
            if pool is not None:
                for record in records:  # taken now, so the next claim sees them gone
                    pool.take(record.id, record.lane_rule)
        except Exception as exc:
            stop_if_cancelled()
            self._errors += 1
            if self.options.burst and self._errors >= BURST_TRIES:
                self._give_up(exc)
                return []
            await self._report_error(exc, self._errors)
            return []
        self._count_claimed(records)
        if not records and self.options.burst:
            self._drained = not await self._held_back_for_a_while()
        if records and self.paused:  # paused while this claim was on its way: claim nothing
            if self._claims_left is not None:
                self._claims_left += len(records)
            await self._release(records)
            return []
        return records

    async def _tell_offer(self, pool: ResourcePool) -> None:
        """Tell the driver what this worker offers and has free, when that changed or every
        OFFER_EVERY_S (an offer is live for OFFER_TTL_S): what says why a job waits for units."""
        free, now = pool.free(), time.monotonic()
        if self._told is not None and self._told[0] == free and now < self._told[1] + OFFER_EVERY_S:
            return
        self._told = (free, now)
        await self.driver.offer(self.name, pool.offered, free)

    async def _withdraw_offer(self) -> None:
        if self.resources is not None:
            try:
                await self.driver.offer(self.name, {}, {})
            except Exception as exc:  # it expires on its own
                logger.debug("could not withdraw the resource offer: %r", exc)

    def _after_a_job(self, record: JobRecord) -> None:
        """Burst mode: claim again after a job, which may have queued a retry or released a
        child, and wait for its retry if it is due within BURST_SOON_MS."""
        if not self.options.burst:
            return
        self._drained = False
        if record.status in (QUEUED, SCHEDULED) and record.available_ms <= now_ms() + BURST_SOON_MS:
            self._retry_due_ms = max(self._retry_due_ms, record.available_ms)

    async def _held_back_for_a_while(self) -> bool:
        """Burst mode, after a claim found nothing: whether queued jobs wait only for what frees
        up by itself (a lane's slot, a rate window, a quick retry of a job this worker ran), so
        the worker waits for them rather than stopping. Jobs that need units this worker does
        not offer never keep it."""
        if now_ms() < self._retry_due_ms + BURST_SOON_MS:  # the retry's claim may lag its due time
            return True
        try:
            queued = [r for q in self.queues for r in await self.driver.jobs(QUEUED, q, limit=BURST_LOOKED)]
            reasons = await wait_reasons(self.driver, queued)
        except Exception as exc:  # the storage is away: the claims' own failures decide
            stop_if_cancelled()
            logger.debug("could not read why jobs wait: %r", exc)
            return False
        return any(frees_up(reason) for reason in reasons.values())

    def _give_up(self, exc: Exception) -> None:
        """A burst worker stops after BURST_TRIES failed claims in a row, keeping why."""
        failure = exc if isinstance(exc, KhademError) else DriverError(f"claims keep failing: {exc!r}")
        self.failure = failure
        self._drained = True
        logger.error("burst worker gives up after %d failed claims in a row: %s", self._errors, failure)

    def _count_claimed(self, records: Sequence[JobRecord]) -> None:
        self._errors = 0
        if self._claims_left is not None:
            self._claims_left -= len(records)
        if self._batched_kinds:
            self._batch_ahead = self._largest_batch(records)

    def _largest_batch(self, records: Sequence[JobRecord]) -> int:
        """The largest batch size among the batched kinds of ``records`` (0: none is batched)."""
        kinds = {r.name for r in records} & self._batched_kinds
        sizes = {self.executor.batch_size_of(name) for name in kinds}
        return max((size for size in sizes if size), default=0)

    def _wanted(self) -> int:
        """Jobs to claim: one per waiting consumer, plus room left in the prefetch buffer, which
        holds a whole batch while the last claim brought jobs of a batched kind (so a batch fills
        from one claim, not from one claim a consumer)."""
        return len(self._idle) + max(self._prefetch, self._batch_ahead) - len(self._buffer)

    def _may_claim(self) -> bool:
        return not (self._drained or self._stopping.is_set() or not self._claiming.is_set()
                    or self._claims_exhausted())

    def _claims_exhausted(self) -> bool:
        return self._claims_left is not None and self._claims_left <= 0

    async def _execute(self, record: JobRecord, task: asyncio.Task[None] | None) -> None:
        if self.driver.uses_leases:  # what the heartbeat renews
            self._active[record.id] = record
        units = None if self.resources is None else self.resources.units_of(record.id)
        try:
            await self.executor.execute(record, self._loop, self.options.isolation, task, units)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the driver failed while settling: the lease will expire
            await self._report_error(exc, 1)
        finally:
            self._active.pop(record.id, None)
            self._give_back_units(record)
            self.processed += 1

    def _give_back_units(self, record: JobRecord) -> None:
        if self.resources is not None:
            self.resources.give_back(record.id)

    async def _report_error(self, exc: Exception, consecutive: int) -> None:
        text = "".join(traceback.format_exception(exc))
        if consecutive <= 1:
            logger.error("worker error (will retry with backoff): %s", exc)
        if self.hooks.on_error is not None:
            try:
                value = self.hooks.on_error(exc, text)
                if asyncio.iscoroutine(value):
                    await value
            except Exception:
                logger.exception("on_error callback raised")
        backoff = min(MAX_ERROR_BACKOFF_S, 0.1 * 2 ** min(consecutive, 10))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), backoff)

    # -- cancelled jobs ------------------------------------------------------------------------
    def abort(self, job_id: str) -> None:
        """The job ``job_id`` was cancelled: stop it if it runs here, drop it if it waits in
        the prefetch buffer (it never starts), and make sure it never starts if it was claimed
        here and is on its way to a consumer."""
        if self.executor.abort(job_id):
            return
        for record in self._buffer:
            if record.id == job_id:
                self._buffer.remove(record)
                self._drop(record)
                return
        if job_id in self._active:
            self.executor.doom(job_id)

    def _drop(self, record: JobRecord) -> None:
        """Settle a buffered job that was cancelled before it started (it stays cancelled)."""
        self._give_back_units(record)

        async def stop() -> None:
            try:
                await self.driver.release(record)  # stops it: cancelled under this worker's token
            except Exception:  # it stays cancelled; only its stop time is not recorded
                logger.exception("could not settle cancelled job %s", record.id)

        assert self._loop is not None
        task = self._loop.create_task(stop())
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    async def _watch_aborts(self) -> None:
        """Hear of cancelled jobs from the driver, or ask it while jobs are held."""
        try:
            unsubscribe = await self.driver.listen_aborts(self.queues, self.abort)
        except Exception as exc:
            stop_if_cancelled()
            logger.warning("cannot listen for cancels (%s); asking every %gs instead", exc, ABORT_POLL_S)
            unsubscribe = None
        if unsubscribe is not None:
            try:
                await asyncio.Event().wait()  # until the stop cancels this task
            finally:
                await asyncio.shield(unsubscribe())
        while True:
            await asyncio.sleep(ABORT_POLL_S)
            await self._ask_aborted(self._held())

    def _held(self) -> list[JobRecord]:
        running = [c.record for c in self.executor.running.values()]
        return [*running, *(r for r in self._active.values() if r.id not in self.executor.running),
                *self._buffer]

    async def _ask_aborted(self, held: Sequence[JobRecord]) -> None:
        if not held:
            return
        try:
            cancelled = await self.driver.aborted(held)
        except Exception as exc:
            stop_if_cancelled()
            logger.debug("could not ask for cancelled jobs: %r", exc)
            return
        for job_id in cancelled:
            self.abort(job_id)

    async def _leave_presence(self) -> None:
        """A worker that stops takes its entry away (one killed leaves it, to read ``gone``)."""
        try:
            await self.driver.kv_delete(f"{PRESENCE_PREFIX}{self.presence_name}")
        except Exception as exc:  # it expires on its own
            logger.debug("could not remove this worker's presence: %r", exc)

    async def _announce(self, state: str) -> None:
        resources = self.resources.offered if self.resources is not None else {}
        runs = self.kinds.runs()
        try:
            await announce(self.driver, entry(
                self.presence_name, state=state, started_ms=self.started_ms, queues=self.queues,
                concurrency=self.options.concurrency, resources=resources, jobs_done=self.processed,
                launcher=self.launcher, runs=sorted(runs.names), trusts_code=runs.shipped))
        except Exception as exc:
            stop_if_cancelled()
            logger.debug("could not write this worker's presence: %r", exc)

    async def _stay_present(self) -> None:
        """Write this worker's entry among the queue's workers now and every PRESENCE_EVERY_S
        (``presence``); stop, finishing the jobs in hand, once a retirement is asked of it."""
        while not self._stopping.is_set():
            try:
                await self._announce("busy" if self.executor.running else "idle")
                if await retire_asked(self.driver, self.presence_name, self.started_ms):
                    logger.info("worker %s retired: it finishes the jobs in hand, then stops",
                                self.presence_name)
                    self.request_stop()
                    return
            except Exception as exc:  # _announce logs its own failures; this is the retire read
                stop_if_cancelled()
                logger.debug("could not read whether this worker is retired: %r", exc)
            await asyncio.sleep(PRESENCE_EVERY_S)

    async def _heartbeat(self) -> None:
        interval = self.settings.heartbeat_s
        while True:
            await asyncio.sleep(interval)
            held = [*self._active.values(), *self._buffer]
            if not held:
                continue
            try:
                alive = await self.driver.heartbeat(held)
            except Exception as exc:
                stop_if_cancelled()
                logger.warning("heartbeat failed (%s); leases may expire", exc)
                continue
            lost = [r for r, ok in zip(held, alive, strict=True)
                    if not ok and self._active.get(r.id) is r]  # not merely just settled
            if lost:
                await self._ask_aborted(lost)  # a cancel whose notice was missed
            for record in lost:
                if record.id not in self.executor.running or not self.executor.running[record.id].cancelled:
                    logger.warning("lost the lease on job %s (%s); its result will be discarded",
                                   record.name, record.id)


async def _ended(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Wait for cancelled ``tasks`` to end, cancelling again any that swallowed its cancel, for
    at most STOP_WAIT_S; a task still running then is named in the log and left behind (its
    job, if any, goes back to the queue when its lease expires)."""
    deadline = asyncio.get_running_loop().time() + STOP_WAIT_S
    pending = {t for t in tasks if not t.done()}
    while pending:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            logger.error("worker stopped; %d task(s) ignored their cancel and are left behind: %s",
                         len(pending), ", ".join(sorted(t.get_name() for t in pending)))
            return
        _, pending = await asyncio.wait(pending, timeout=min(left, 0.05))
        for task in pending:
            task.cancel()
