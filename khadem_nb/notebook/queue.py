"""``Queue``: the notebook facade over ``QueueManager``.

Every method is a plain call that works in a cell without ``await``, in a plain script, and
from other threads (see ``_loop``); waiting has an awaitable form too (``await h``,
``await g``, ``await q.join()``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import warnings
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .. import limits
from ..config import QueueSettings, parse_config
from ..errors import CodeChangedWarning, ConfigError, KhademError
from ..features.flow import kind_rule
from ..features.pruning import Pruner, watch_interval, watch_of
from ..features.telemetry import WATCHED
from ..job import TERMINAL_STATUSES, JobRecord, JobStatus
from ..launchers import START_TIMEOUT_S, LaunchedWorker, LaunchSpec, check_launcher, launch, spec_for
from ..launchers.autoscale import Autoscaler, check_limits
from ..launchers.handle import stop_all
from ..limits import checked_secret
from ..manager import Dispatch, QueueManager
from ..runtime import capture
from ..runtime.notifying import apprise_of
from ..runtime.presence import env_diff, imported_distributions
from ..runtime.worker import QueueWorker
from ._loop import LoopRunner
from .functions import JobFunction
from .handles import JobGroup, JobHandle
from .notifications import check_thresholds, watch_group, watch_queue

if TYPE_CHECKING:
    import pandas as pd

    from .optimize import Study
    from .panel import QueuePanel

logger = logging.getLogger(__name__)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

NOTEBOOK_RETENTION = 200_000  # finished records kept (unless queue.retention says otherwise)


CODE_CHANGES = ("warn", "rerun", "keep")  # what a sweep run again does with points of older code


def _with_artifacts(settings: QueueSettings, url: str | None,
                    options: Mapping[str, Any] | None) -> QueueSettings:
    """``settings`` with the artifact store given to ``kn.Queue`` (checked as the config is)."""
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"artifacts= must be an fsspec URL or a folder, got {type(url).__name__}")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError("artifacts_options= must be a mapping of fsspec options "
                          "(for S3: endpoint_url, key, secret, ...)")
    return replace(settings, artifacts=url if url is not None else settings.artifacts,
                   artifacts_options=dict(options) if options is not None else settings.artifacts_options)


def _with_shipping(settings: QueueSettings, ship_code: bool | None, ship_modules: Sequence[str] | None,
                   secret: str | None) -> QueueSettings:
    """``settings`` with the shipping options given to ``Queue`` (each checked as in a config)."""
    section: dict[str, Any] = {}
    if ship_code is not None:
        section["ship_code"] = ship_code
    if ship_modules is not None:
        section["ship_modules"] = ship_modules if isinstance(ship_modules, str) else list(ship_modules)
    if secret is not None:
        section["secret"] = secret
    if not section:
        return settings
    given = parse_config({"queue": {"driver": "memory", **section, "ship_code": False}})
    shipping = replace(settings, ship_code=settings.ship_code if ship_code is None else ship_code,
                       ship_modules=given.ship_modules or settings.ship_modules,
                       secret=given.secret if given.secret is not None else settings.secret)
    if shipping.ship_code:
        checked_secret(shipping.secret, "ship_code=True")
    return shipping


WORKER_COLUMNS = ["name", "host", "launcher", "state", "queues", "concurrency", "resources", "jobs_done",
                  "started", "last_seen", "python", "env_diff", "runs", "trusts_code", "output"]


class Queue:
    """A job queue for a notebook: memory by default, or any queue URL / config dict.

    >>> q = Queue()                          # or Queue("sqlite:///runs.db"), Queue("redis://...")
    >>> @q.job(max_attempts=3)
    ... def train(lr: float, epochs: int = 3) -> dict: ...
    >>> g = train.sweep(lr=[0.1, 0.01]); q.start(concurrency=4); g.wait(); g.results()
    """

    def __init__(self, url_or_config: Any = None, *, ship_code: bool | None = None,
                 ship_modules: Sequence[str] | None = None, secret: str | None = None,
                 artifacts: str | None = None,
                 artifacts_options: Mapping[str, Any] | None = None) -> None:
        """``ship_code=True`` sends the code of jobs defined in cells (and of ``ship_modules``)
        with them, signed with ``secret`` (or ``$KHADEM_SECRET``), so that `khadem-nb worker
        --trust-code` processes on other machines run them (see docs/shipping.md).
        ``artifacts`` is the artifact store's fsspec URL (``"s3://bucket/runs"``, a folder),
        ``artifacts_options`` what fsspec is given to open it (see docs/artifacts.md)."""
        settings = parse_config(url_or_config)  # bad config fails here, at once
        if settings.retention == QueueSettings().retention:
            # a sweep's results must outlive the sweep: keep more finished records than a service
            settings = replace(settings, retention=NOTEBOOK_RETENTION)
        settings = _with_shipping(settings, ship_code, ship_modules, secret)
        if artifacts is not None or artifacts_options is not None:
            settings = _with_artifacts(settings, artifacts, artifacts_options)
        self.settings = settings
        self.manager = QueueManager(self.settings)
        self._runner = LoopRunner()
        self._opened = False
        self._worker: QueueWorker | None = None
        self._captured = False
        self._panels: list[QueuePanel] = []
        #: groups watched for pruning or notifications, and the queue's own watch (``notify``)
        self._watches: set[Future[None] | asyncio.Task[None]] = set()
        self._queue_watch: Future[None] | asyncio.Task[None] | None = None
        #: the studies this kernel runs (``optimize``), oldest first: the panel shows the latest
        self.studies: list[Study] = []
        self._launched: list[LaunchedWorker] = []  # workers this queue started (``launch``)
        self._autoscaler: Autoscaler | None = None  # what ``autoscale`` started

    # -- running the manager's coroutines: what handles and panels use ------------------------
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` (a call on :attr:`manager`) on this queue's loop and return its value:
        from a cell, a plain script or another thread (see ``_loop``)."""
        return self._runner.run(self._opening(coro))

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on this queue's loop, from any loop."""
        return await self._runner.run_async(self._opening(coro))

    def run_soon(self, coro: Coroutine[Any, Any, T]) -> Future[T] | asyncio.Task[T]:
        """Start ``coro`` on this queue's loop without waiting for it (button callbacks, the
        panel's refresher). It is handed over as it is, so that cancelling the task before it
        starts never leaves ``coro`` unawaited; a coroutine that may run before the queue is
        open awaits :meth:`opened` itself."""
        return self._runner.submit(coro)

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` on this queue's loop, from any thread."""
        self._runner.loop.call_soon_threadsafe(callback)

    async def _opening(self, coro: Coroutine[Any, Any, T]) -> T:
        await self.opened()
        return await coro

    async def opened(self) -> None:
        """Initialise the manager (connect the driver) if that has not happened yet."""
        if self._opened:
            return
        await self.manager.init()
        self._opened = True

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._runner.loop

    # -- defining and dispatching jobs ---------------------------------------------------------
    @overload
    def job(self, fn: F, /) -> JobFunction: ...
    @overload
    def job(self, fn: None = None, /, **options: Any) -> Callable[[F], JobFunction]: ...

    def job(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorate a function (sync or async) as a job: ``@q.job`` or ``@q.job(max_attempts=3)``.

        Options: ``name``, ``max_attempts``, ``retry_delay``, ``retry_jitter``, ``priority``,
        ``timeout``, ``isolation`` (``"process"`` runs each call in a child process, which a
        timeout or a cancel stops), ``keep_result`` (seconds a finished call's record is kept),
        and flow control across every worker of the queue: ``concurrency`` (calls held at
        once), ``rate`` (``"30/min"``: starts per window), ``limit_key`` (a function of the
        call's arguments that the two count per, like ``lambda p: p["tenant"]``) and
        ``resources`` (``{"gpu": 1}``: units a call holds on the worker that runs it);
        ``fair=True`` (with ``limit_key``) claims the calls of different keys in turns, so one
        key's thousands of queued calls do not hold back another's few. Run the cell again
        with other limits and the calls already queued follow them.
        """
        valid = {"name", "max_attempts", "retry_delay", "retry_jitter", "priority", "timeout", "isolation",
                 "keep_result", "concurrency", "rate", "limit_key", "fair", "resources", "batch",
                 "batch_wait"}
        unknown = set(options) - valid
        if unknown:
            raise ConfigError(f"unknown @q.job options {sorted(unknown)}; valid: {sorted(valid)}")
        if fn is not None:
            return self._defined(JobFunction(self, fn, **options))
        return lambda f: self._defined(JobFunction(self, f, **options))

    def _defined(self, spec: JobFunction) -> JobFunction:
        """A job function defined, maybe again (a cell run again): where this kernel dispatched
        it before, its queued points follow its lane rule from now on (``flow``)."""
        if self._opened:
            self.run(self.manager.follow_kind_rule(self.settings.name, spec.name, kind_rule(spec, spec.name)))
        return spec

    def submit(self, spec: JobFunction, points: Sequence[dict[str, Any]], *, priority: int | None,
               delay: float | timedelta | None, max_attempts: int | None, resumable: bool,
               rerun_cancelled: bool = False, on_code_change: str = "warn",
               watched: bool = False) -> JobGroup:
        """Encode every point now (bad arguments raise here), then store them in one batch;
        ``watched``: a pruner reads their reports, so they store them more often
        (``telemetry.WATCHED``)."""
        if on_code_change not in CODE_CHANGES:
            raise ConfigError(f"on_code_change must be one of {', '.join(CODE_CHANGES)}, "
                              f"got {on_code_change!r}")
        records = [self._build_record(spec, params, priority, delay, max_attempts) for params in points]
        if watched:
            for record in records:
                record.meta[WATCHED] = True
        handles = [JobHandle(self, r.id, spec.name, params, r.key)
                   for r, params in zip(records, points, strict=True)]
        ids = self.run(self._store(records, resumable, rerun_cancelled, on_code_change))
        for handle, job_id in zip(handles, ids, strict=True):
            handle.id = job_id
        return JobGroup(self, handles)

    def dispatch_one(self, spec: JobFunction, params: dict[str, Any], **options: Any) -> JobHandle:
        """One call, through the manager's one road of a dispatch (``prepare``, which checks
        every option of ``QueueManager.dispatch`` once, then ``store``), its arguments encoded
        once; the handle of the job stored (or, unique, of the one holding its key)."""
        prepared = self.prepare_call(spec, params, **options)
        return JobHandle(self, self.run(self.manager.store(prepared)), spec.name, params, prepared.record.key)

    def prepare_call(self, spec: JobFunction, params: dict[str, Any], **options: Any) -> Dispatch:
        """One call built and checked for ``QueueManager.store`` (``QueueManager.prepare``), its
        arguments encoded once."""
        kwargs, key = self._encoded(spec, params)
        return self.manager.prepare(spec.make_call(params), queue=self.settings.name, key=key,
                                    encoded=(spec.name, {"kwargs": kwargs}), **options)

    def _build_record(self, spec: JobFunction, params: dict[str, Any], priority: int | None,
                      delay: float | timedelta | None, max_attempts: int | None) -> JobRecord:
        """The record of one point of a batch, each argument encoded once."""
        kwargs, key = self._encoded(spec, params)
        return self.manager.build_record(spec.make_call(params), delay=delay, queue=self.settings.name,
                                         priority=priority, max_attempts=max_attempts, key=key,
                                         encoded=(spec.name, {"kwargs": kwargs}))

    def _encoded(self, spec: JobFunction, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """A call's arguments encoded once, large ones kept in the artifact store: the same
        encoding names a bad argument in its error, makes the call's sweep key (an array's by
        its digest), and is the stored payload."""
        where = lambda name: f"argument {name!r} of {spec.name}()"  # noqa: E731 - named for the line
        kwargs = self.manager.serializer.encode_arguments(params, where)
        return kwargs, spec.key(kwargs)

    async def _store(self, records: list[JobRecord], resumable: bool, rerun_cancelled: bool,
                     on_code_change: str = "warn") -> list[str]:
        """Push new records; in a resumable batch reuse existing points and requeue failed ones
        (cancelled ones stay cancelled unless ``rerun_cancelled``: then they run anew). A
        finished point whose code differs from the code dispatched now is reused (``"warn"``,
        saying how many, or ``"keep"``) or run anew (``"rerun"``)."""
        ids = [r.id for r in records]
        if not resumable:
            await self.manager.push(records)
            return ids
        existing = await self.manager.find_by_keys([r.key for r in records if r.key])
        fresh, failed, older = [], [], 0
        for index, record in enumerate(records):
            found = existing.get(record.key or "")
            changed = (found is not None and found.status is JobStatus.COMPLETED
                       and found.fingerprint != record.fingerprint)
            if found is None or (rerun_cancelled and found.status is JobStatus.CANCELLED) \
                    or (changed and on_code_change == "rerun"):
                fresh.append(record)
                continue
            ids[index] = found.id
            older += changed
            if found.status is JobStatus.FAILED:
                failed.append(found.id)
        if failed:
            await self.manager.retry_failed(failed)
        await self.manager.push(fresh)
        if older and on_code_change == "warn":
            warnings.warn(f"{older} of the {len(records)} points reuse results of an older version of "
                          f"this job's code; sweep(..., on_code_change='rerun') runs them again, "
                          "'keep' reuses them without this warning", CodeChangedWarning, stacklevel=4)
        if fresh or failed:
            logger.info("sweep: %d new, %d failed requeued, %d reused", len(fresh), len(failed),
                        len(records) - len(fresh) - len(failed))
        return ids

    # -- waiting -------------------------------------------------------------------------------
    def join(self, timeout: float | None = None) -> Coroutine[Any, Any, None]:
        """``await q.join()``: wait until nothing is queued, scheduled or running."""
        return self.run_async(self.manager.wait_idle(self.settings.name, timeout))

    def wait(self, timeout: float | None = None) -> None:
        """Blocking form of :meth:`join`."""
        self.run(self.manager.wait_idle(self.settings.name, timeout))

    # -- workers ---------------------------------------------------------------------------------
    def start(self, concurrency: int = 4, *, queues: Sequence[str] | None = None,
              prefetch: int | None = None, resources: Mapping[str, int] | str | None = None) -> QueueWorker:
        """Start in-process workers (tasks on this loop) and return at once. Idempotent.

        ``prefetch`` defaults to ``queue.workers.prefetch`` or else 0 here, unlike
        ``khadem-nb worker`` on Redis: experiments are long, a job claimed ahead would wait in
        this kernel while other machines sit idle, and the panel would list it as running.
        ``resources`` (``{"gpu": 1}``): units these workers offer to jobs that ask for them.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if self._worker is not None and self._worker.running:
            if self._worker.options.concurrency != concurrency:
                logger.warning("workers already running with concurrency %d; call q.stop() first to "
                               "change it", self._worker.options.concurrency)
            return self._worker
        if not self._captured:
            capture.install()
            self._captured = True
        self._worker = self.run(self._start(concurrency, queues, prefetch, resources))
        return self._worker

    async def _start(self, concurrency: int, queues: Sequence[str] | None, prefetch: int | None,
                     resources: Mapping[str, int] | str | None) -> QueueWorker:
        self.manager.set_thread_pool_size(concurrency)
        if prefetch is None:
            prefetch = self.manager.settings.workers.prefetch or 0
        worker = await self.manager.start_worker(concurrency=concurrency, queues=queues, prefetch=prefetch,
                                                 run_in_background=True, delay=0.5, resources=resources)
        worker.launcher = "kernel"  # before its first entry among the queue's workers is written
        return worker

    @property
    def worker(self) -> QueueWorker | None:
        return self._worker

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.running

    def pause(self, everywhere: bool = False) -> None:
        """Stop this kernel's workers claiming new jobs; running jobs finish. With
        ``everywhere=True`` the queue itself is paused: every worker of it, on any machine,
        stops claiming (``manager.pause_queue``) until ``resume(everywhere=True)``."""
        if everywhere:
            self.run(self.manager.pause_queue(self.settings.name))
        elif self._worker is not None:
            self.call_soon(self._worker.pause)

    def resume(self, everywhere: bool = False) -> bool:
        """Let this kernel's workers claim again; with ``everywhere=True``, resume the queue for
        every worker (whether it was paused)."""
        if everywhere:
            return self.run(self.manager.resume_queue(self.settings.name))
        if self._worker is not None:
            self.call_soon(self._worker.resume)
        return True

    @property
    def paused(self) -> bool:
        """Whether this kernel's workers are paused (``paused_everywhere``: the queue)."""
        return self._worker is not None and self._worker.paused

    @property
    def paused_everywhere(self) -> bool:
        """Whether the queue itself is paused, for every worker."""
        return self.settings.name in self.run(self.manager.paused_queues())

    # -- notifications -------------------------------------------------------------------------
    def watch_group(self, group: JobGroup, sender: Any, events: Sequence[str], metric: str | None,
                    mode: str) -> None:
        """Watch ``group`` from this kernel until it ends, telling ``events`` (``JobGroup.notify``)."""
        self._keep_watching(self.run_soon(watch_group(self, group, sender, events, metric, mode)))

    def watch_study(self, told: Coroutine[Any, Any, None]) -> None:
        """Run ``told`` (a study's message at its end, ``Study.notify``) on this queue's loop."""
        self._keep_watching(self.run_soon(told))

    def notify(self, urls: str | Sequence[str], *, backlog: int | None = None,
               failure_rate: float | None = None, every: float = 60.0) -> None:
        """Send a message through apprise (any URL apprise knows, like ``"ntfy://topic"``) when
        this queue's due jobs reach ``backlog``, or when at least ``failure_rate`` (a share)
        of the jobs finished in the last 10 minutes failed (10 jobs at least); each at most
        once an hour, by whichever kernel or process watching the queue sees it first. Looked
        at every ``every`` seconds from this kernel; calling it again replaces the watch."""
        sender = apprise_of(urls)
        limits_ = check_thresholds(backlog, failure_rate, every)
        if self._queue_watch is not None:
            self._queue_watch.cancel()
        self._queue_watch = self.run_soon(watch_queue(self, sender, *limits_))
        self._keep_watching(self._queue_watch)

    def _keep_watching(self, task: Future[None] | asyncio.Task[None]) -> None:
        self._watches.add(task)
        task.add_done_callback(self._watches.discard)

    # -- pruning -------------------------------------------------------------------------------
    def watch_pruning(self, ids: Sequence[str], pruner: Pruner) -> None:
        """Watch the points ``ids`` of a group until all have ended, stopping those ``pruner``
        names (``features.pruning``), several times a second, from this kernel: the points run
        wherever their workers are. A cell run again watches its group again."""
        self._keep_watching(self.run_soon(self._prune(list(ids), pruner)))

    async def _prune(self, ids: list[str], pruner: Pruner) -> None:
        await self.opened()
        driver, watch = self.manager.driver, watch_of(pruner)
        while live := watch.live(ids):
            try:
                records = [r for r in await driver.get_many(live) if r is not None]
                for job_id, why in watch.look(records).items():
                    await driver.cancel([job_id], why)
                watch.seen.say_once(logger, "point")
                if len(records) < len(live) and all(r.status in TERMINAL_STATUSES for r in records):
                    return  # the rest are gone (retention, forget): nothing is left to watch
            except KhademError as exc:  # the storage is away: look again later
                logger.warning("pruning: could not read the group (%s); trying again", exc)
            await asyncio.sleep(watch_interval(len(live)))

    def stop(self, grace: float | timedelta = 10.0) -> None:
        """Stop the in-process workers; jobs still running after ``grace`` go back to the queue."""
        stopping = self._detach_worker(limits.seconds(grace, "grace"))
        if stopping is not None:
            self.run(stopping)

    def stop_soon(self, grace: float = 10.0) -> None:
        """Like :meth:`stop` without waiting (for callbacks such as the panel's Stop button)."""
        stopping = self._detach_worker(limits.seconds(grace, "grace"))
        if stopping is not None:
            self.run_soon(stopping)

    def _detach_worker(self, grace: float) -> Coroutine[Any, Any, None] | None:
        worker, self._worker = self._worker, None
        for panel in self._panels:
            panel.workers_stopped()
        if self._captured:
            capture.uninstall()
            self._captured = False
        return None if worker is None else worker.stop(grace)

    def retry_failed(self, kind: str | None = None) -> int:
        """Requeue every failed job of this queue with a fresh attempt budget; with ``kind``,
        only those that failed that way (``raised``, ``timed_out``, ``crashed``, ``lost``)."""
        return self.run(self.manager.retry_failed(kind=kind))

    def cancel(self, ids: str | Sequence[str] | None = None, *, status: str = "queued",
               reason: str = "cancelled") -> list[str]:
        """Cancel jobs: the given ids, or every job of this queue in ``status`` (``"queued"``:
        waiting for other jobs, queued and scheduled; ``"active"``: running; ``"all"``: both).
        Returns the ids cancelled."""
        if ids is not None:
            return self.run(self.manager.cancel(ids, reason=reason))
        return self.run(self.manager.cancel_all(status, queue=self.settings.name, reason=reason))

    def run_here(self, record: JobRecord) -> Any:
        """Run ``record``'s job in the foreground with the job's current definition (see
        ``JobHandle.debug``); nothing is stored."""
        from ..runtime.context import current_job, local_context

        job = self.manager.serializer.decode_job(record.name, record.payload)
        job.attempt = record.attempt
        token = current_job.set(local_context(record))
        try:
            value = job.handle()
            return self.run(value) if inspect.iscoroutine(value) else value
        finally:
            current_job.reset(token)

    def clear(self) -> None:
        """Delete every record of this queue's storage (queued, running, finished, failed)."""
        self.run(self.manager.purge())

    def close(self) -> None:
        """Stop workers (those it launched and did not detach too) and panels, and release
        the driver."""
        for panel in list(self._panels):
            panel.close()
        self.stop()
        self._drop_autoscaler(retire=False)
        self.run(stop_all(self._launched))
        if self._opened:
            self.run(self.manager.close())
            self._opened = False
        self._runner.close()

    # -- workers elsewhere ------------------------------------------------------------------------
    def launch(self, n: int = 1, *, on: str = "local", concurrency: int = 1, imports: Sequence[str] = (),
               resources: Mapping[str, int] | str | None = None, python: str | None = None,
               env: Mapping[str, str] | str | None = None, detach: bool = False,
               timeout: float = START_TIMEOUT_S, **options: Any) -> list[LaunchedWorker]:
        """Start ``n`` ``khadem-nb worker`` processes of this queue and return their handles
        (name, host, state, ``stop()``) once each has registered among the queue's workers.

        ``on``: ``"local"`` (this machine), ``"ssh://[user@]host[:port]"`` (another machine,
        options ``ssh_options`` for ``asyncssh.connect`` and ``connect_timeout``) or
        ``"slurm"`` (batch jobs; options ``partition``, ``time``, ``gres``, ``cpus``, ``mem``,
        ``account``, ``warning``, ``sbatch``, ``logs``). ``imports``: modules of job code the
        workers import; from a ``ship_code=True`` queue they run shipped code, the secret given
        through their environment or the SSH session, never a command line. ``python``: the
        workers' Python; ``env``: variables to set, or a shell command to run first
        (``"source ~/venv/bin/activate"``). ``LaunchError`` with the launcher's own message, or
        a worker's last output lines when it exits at start. They stop with this queue unless
        ``detach=True``."""
        workers = limits.count(n, "workers")
        check_launcher(on, options)
        spec = spec_for(self.settings, concurrency=concurrency, imports=imports, resources=resources,
                        env=env, python=python, detach=detach)
        seconds = limits.seconds(timeout, "timeout")
        launched = self.run(self._launch(spec, workers, on, seconds, options))
        for worker in launched:
            worker.runner = self.run
        self._launched.extend(launched)
        return launched

    async def _launch(self, spec: LaunchSpec, n: int, on: str, timeout: float,
                      options: Mapping[str, Any]) -> list[LaunchedWorker]:
        return await launch(self.manager.driver, spec, n, on, timeout=timeout, options=options)

    def autoscale(self, on: str | None = "local", *, min: int = 0, max: int = 4,
                  idle_timeout: float = 120.0, concurrency: int = 1, imports: Sequence[str] = (),
                  resources: Mapping[str, int] | str | None = None, python: str | None = None,
                  env: Mapping[str, str] | str | None = None, interval: float = 1.0, step: int | None = None,
                  timeout: float = START_TIMEOUT_S, **options: Any) -> Autoscaler | None:
        """Keep between ``min`` and ``max`` workers launched by ``on`` (as :meth:`launch`, whose
        options it takes), as many as the due and running jobs need, and retire those idle for
        ``idle_timeout`` seconds. It runs on this kernel's loop, checking every ``interval``;
        a launch that fails is logged and tried again later, ever less often (its message in
        ``status()["last_error"]``). ``q.autoscale(None)`` stops it and retires its workers.
        Another autoscaler of this queue with other limits is a ``ConfigError`` naming it."""
        self._drop_autoscaler(retire=on is None)
        if on is None:
            return None
        check_launcher(on, options)
        scale = check_limits(on, min, max, idle_timeout)
        spec = spec_for(self.settings, concurrency=concurrency, imports=imports, resources=resources,
                        env=env, python=python)
        scaler = Autoscaler(self.manager, spec, scale, options=options, queue=self.settings.name,
                            interval=interval, step=step, timeout=limits.seconds(timeout, "timeout"))
        self.run(self._start_autoscaler(scaler))
        self._autoscaler = scaler
        return scaler

    def _drop_autoscaler(self, *, retire: bool) -> None:
        """Stop the running autoscaler, if any (``retire``: its workers finish and exit); the
        workers it launched stay this queue's to stop at ``close``."""
        if self._autoscaler is not None:
            self.run(self._autoscaler.stop(retire=retire))
            self._launched.extend(self._autoscaler.handles())
            self._autoscaler = None

    async def _start_autoscaler(self, scaler: Autoscaler) -> None:
        await scaler.check_leader()
        scaler.start()

    def workers(self) -> pd.DataFrame:
        """The queue's workers, wherever they run (this kernel's, ``khadem-nb worker``
        processes, launched ones): name, host, launcher, state (starting, idle, busy,
        stopping, gone, failed), queues, concurrency, resources, jobs done, started, last
        seen, Python version, ``env_diff``: how its Python and the versions of the packages
        this kernel imported differ from this kernel's (``numpy 2.1.0 there, 2.2.1 here``;
        empty when they match), ``runs``: the job names it runs, ``trusts_code``: whether it
        runs shipped code, and ``output``: a failed worker's last output lines."""
        import pandas as pd

        rows = self.run(self.manager.list_workers())
        imported = imported_distributions()
        for row in rows:
            row["env_diff"] = env_diff(row, imported)
        frame = pd.DataFrame(rows, columns=WORKER_COLUMNS)
        for column in ("started", "last_seen"):
            frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
        return frame

    def retire(self, name: str = "all") -> None:
        """Ask the worker ``name`` (``"all"``: every worker running now) to finish the jobs in
        hand and exit, wherever it runs; it hears it within a few seconds."""
        self.run(self.manager.retire(name))

    # -- looking at it ---------------------------------------------------------------------------
    def jobs(self, status: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """One row per job (the newest ``limit``): status, why a queued job waits (its limits:
        ``"limit train 2/2"``, ``"rate 30/min"``, ``"needs gpu=1, none free"``), times,
        duration, progress, args, result, error and captured output."""
        from .frames import jobs_frame

        parsed = None if status is None else JobStatus.parse(status)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"limit must be a positive integer, got {limit!r}")
        return jobs_frame(*self.run(self._jobs_and_waits(parsed, limit)))

    async def _jobs_and_waits(self, status: JobStatus | None,
                              limit: int | None) -> tuple[list[JobRecord], dict[str, str]]:
        records = await self.manager.jobs(status, queue=self.settings.name, limit=limit)
        return records, await self.manager.why_waiting(records)

    def metrics(self) -> pd.DataFrame:
        """One row per job name plus a total: counts by status, retries, rates, durations (ms)."""
        from .frames import metrics_frame

        return metrics_frame(self.run(self.manager.jobs(queue=self.settings.name)))

    # -- schedules -----------------------------------------------------------------------------
    def cron(self, expression: str, /, *, tz: str = "UTC", id: str | None = None,
             overlap: str = "skip", catchup: bool | str | None = None,
             **options: Any) -> Callable[[F], JobFunction]:
        """Decorate a function of no arguments (or only defaults) as a job that every worker of
        this queue dispatches at each slot of ``expression`` in time zone ``tz``, each slot once:
        ``@q.cron("*/5 * * * *")``. ``id`` defaults to the function's job name; ``options`` are
        ``@q.job``'s."""
        return lambda fn: self._scheduled(fn, options, cron=expression, id=id, tz=tz, overlap=overlap,
                                          catchup=catchup)

    def every(self, period: float | timedelta, /, *, id: str | None = None,
              overlap: str = "skip", catchup: bool | str | None = None,
              **options: Any) -> Callable[[F], JobFunction]:
        """Like :meth:`cron`, at each multiple of ``period`` (seconds or a timedelta):
        ``@q.every(timedelta(minutes=5))``."""
        return lambda fn: self._scheduled(fn, options, every=period, id=id, overlap=overlap, catchup=catchup)

    def _scheduled(self, fn: Callable[..., Any], options: dict[str, Any], *, id: str | None,
                   **when: Any) -> JobFunction:
        spec: JobFunction = self.job(**options)(fn)
        call = spec.make_call(spec.bind((), {}))
        self.run(self.manager.schedule(call, id=id or spec.name, **when))
        return spec

    def schedules(self) -> pd.DataFrame:
        """One row per schedule: id, job, when it runs, next run, last run, how it ended."""
        from .frames import schedules_frame

        return schedules_frame(self.run(self.manager.schedules()))

    def unschedule(self, schedule_id: str) -> bool:
        """Remove a schedule (the jobs it dispatched stay); whether there was one."""
        return self.run(self.manager.unschedule(schedule_id))

    def counts(self) -> dict[str, int]:
        """Jobs by status in this queue's storage: ``{'queued': 3, 'active': 1, ...}``."""
        return self.run(self.manager.counts(self.settings.name))

    def panel(self, refresh: float = 0.5, metric: str | None = None) -> QueuePanel:
        """A live ipywidgets panel: counts, progress, throughput, running jobs, failures, buttons,
        and the curves of ``metric`` (``kn.report``; by default the first one a job reported)
        of the running and the last finished jobs."""
        from .panel import QueuePanel

        panel = QueuePanel(self, refresh_s=refresh, metric=metric)
        self._panels.append(panel)
        return panel

    def forget_panel(self, panel: QueuePanel) -> None:
        """A panel closed: stop telling it about the workers here."""
        if panel in self._panels:
            self._panels.remove(panel)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<khadem_nb.Queue {self.settings.redacted_url()} workers {state}>"

    def _repr_html_(self) -> str:
        counts = self.counts()
        cells = "".join(f"<td>{k}</td><td><b>{v}</b></td>" for k, v in counts.items())
        state = "running" if self.running else "stopped"
        return (f"<div><b>khadem_nb.Queue</b> <code>{self.settings.redacted_url()}</code> "
                f"workers {state}<table><tr>{cells}</tr></table></div>")

