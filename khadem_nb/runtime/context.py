"""The job currently running in this context: lets code inside a job report progress."""

from __future__ import annotations

import asyncio
import logging
import math
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .._time import now_ms
from ..errors import JobCancelledError, JobError, KhademError
from ..features.telemetry import REPORTS, WATCHED, WATCHED_FLUSH_S, Curves
from ..limits import cut_text

if TYPE_CHECKING:
    from ..drivers.base import QueueDriver
    from ..job import JobRecord
    from ..serializer import QueueJobSerializer

logger = logging.getLogger(__name__)

OUTPUT_LIMIT = 2**20  # characters of a job's output kept with its record (the last ones)
CHECKPOINT = "checkpoint"  # the record's meta key that points at the job's latest checkpoint
OUTPUT_FLUSH_S = 1.0  # a running job's new output reaches its record at most this much later
RUNNING, ENDED, ORPHANED = 0, 1, 2  # a sync job's thread: runs, returned, outlived its timeout


class JobContext:
    """What a running job can reach: its record, and the driver that stores it.

    One is built for every job run, so it has slots and makes its output list only when the
    job first writes. ``cancel()`` stops the job: the task awaiting it is cancelled, except for
    a sync job on a thread, which cannot be interrupted and sees ``cancelled`` instead.
    """

    __slots__ = ("armed", "cancelled", "curves", "driver", "flushed", "in_thread", "isolated", "loop",
                 "output", "output_chars", "output_cut", "preempted", "record", "resources", "serializer",
                 "task", "thread_state")

    def __init__(self, record: JobRecord, driver: QueueDriver, loop: asyncio.AbstractEventLoop,
                 task: asyncio.Task[Any] | None = None, isolated: bool = False,
                 resources: dict[str, list[int]] | None = None) -> None:
        self.record = record
        self.driver = driver
        self.loop = loop
        self.task = task  # the task awaiting the job, cancelled by ``cancel`` (if known)
        self.output: list[str] | None = None
        self.output_chars = 0
        self.curves: Curves | None = None  # what the job reported (``report``), once it has
        self.armed = False  # a flush of its output and reports to its record is due
        self.cancelled = False  # the job was cancelled: it stops as soon as it can
        self.in_thread = False  # a sync job runs on a thread: cancel only sets ``cancelled``
        self.thread_state = RUNNING  # of that thread: ENDED, or ORPHANED by a timeout
        self.isolated = isolated  # runs in a child process (``isolation``)
        #: the worker's resource units this job holds, like ``{"gpu": [2]}`` (``resources``)
        self.resources: dict[str, list[int]] = resources or {}
        self.preempted = False  # its worker is stopping: checkpoint and raise Preempted
        self.serializer: QueueJobSerializer | None = None  # encodes checkpoints (set by the executor)

    def cancel(self) -> None:
        """Stop the job: cancel its task, or tell a job running on a thread (``cancelled()``,
        and ``progress()`` raises)."""
        if self.cancelled:
            return
        self.cancelled = True
        if not self.in_thread and self.task is not None:
            self.task.cancel(ABORTED)

    def write_output(self, text: str) -> None:
        """Keep printed output and log lines of the job: the last OUTPUT_LIMIT characters, the
        cut marked. From any thread. While the job runs, what it wrote reaches its record at
        most OUTPUT_FLUSH_S later (``_flush``)."""
        if self.output is None:
            self.output = []
            self.output_cut = self.flushed = 0
            self._start_flushing()
        self.output.append(text)
        self.output_chars += len(text)
        if self.output_chars > 2 * OUTPUT_LIMIT:
            joined = "".join(self.output)
            self.output[:] = [joined[-OUTPUT_LIMIT:]]
            self.output_cut += len(joined) - OUTPUT_LIMIT
            self.output_chars = OUTPUT_LIMIT

    def captured_output(self) -> str | None:
        """The output kept, with a first line that says how much was cut, if any was."""
        if not self.output:
            return None
        text = "".join(self.output)
        cut = self.output_cut + max(0, len(text) - OUTPUT_LIMIT)
        return f"[... {cut} characters cut ...]\n{text[-OUTPUT_LIMIT:]}" if cut else text

    def report(self, step: Any, metrics: dict[str, Any]) -> None:
        """Keep numbers the job reports at a step (``telemetry``); they reach its record with
        its output, at most OUTPUT_FLUSH_S later (WATCHED_FLUSH_S when a pruner reads them).
        From any thread."""
        if self.cancelled:
            raise JobCancelledError(message=f"job {self.record.name!r} ({self.record.id}) was cancelled")
        if self.curves is None:
            self.curves = Curves()
            self._start_flushing()
        self.curves.add(step, metrics, now_ms())

    def stored_meta(self) -> dict[str, Any]:
        """The output and reports the record gets when the job ends (its settle stores them)."""
        meta: dict[str, Any] = {}
        if self.output:
            meta["output"] = self.captured_output()
        if self.curves is not None:
            meta[REPORTS] = self.curves.stored()
        return meta

    def _start_flushing(self) -> None:
        if self.driver is not None and not self.armed:
            self.armed = True
            self.loop.call_soon_threadsafe(self._arm_flush)

    def _arm_flush(self) -> None:
        watched = self.curves is not None and self.record.meta.get(WATCHED)
        self.loop.call_later(WATCHED_FLUSH_S if watched else OUTPUT_FLUSH_S, self._flush)

    def _flush(self) -> None:
        """Store the output written and the reports made since the last flush while the job
        still runs here: one write for both."""
        if self.record.token is None or self.record.status != "active":
            return  # settled: its settle stored them
        meta: dict[str, Any] = {}
        if self.output is not None and self.output_cut + self.output_chars != self.flushed:
            self.flushed = self.output_cut + self.output_chars
            meta["output"] = self.captured_output()
        if self.curves is not None and self.curves.changed:
            meta[REPORTS] = self.curves.stored()
        if meta:
            self._schedule(self.driver.update_meta(self.record, meta))
        self._arm_flush()

    def checkpoint(self, state: Any) -> None:
        """Save ``state`` (large parts to the artifact store) and point the record at it,
        fenced by the lease token: ``JobError`` when this worker no longer holds the job. A
        sync job's thread waits for the write; an async job's write is awaited before its
        settle (which stores the pointer too)."""
        if self.cancelled:
            raise JobCancelledError(message=f"job {self.record.name!r} ({self.record.id}) was cancelled")
        if self.serializer is None or self.driver is None:
            raise KhademError("checkpoint() needs a job run by a worker")
        encoded = self.serializer.encode_large(state, f"checkpoint of {self.record.name}")
        self.record.meta[CHECKPOINT] = encoded
        write = self.driver.update_meta(self.record, {CHECKPOINT: encoded})
        if self._on_loop():
            task = self.loop.create_task(write)
            task.add_done_callback(lambda done: _checkpoint_refused(self.record, done))
            return
        if not asyncio.run_coroutine_threadsafe(write, self.loop).result():
            raise JobError(_refused(self.record))

    def restore(self) -> Any:
        """The job's latest checkpoint (its values loaded), or ``None``."""
        stored = self.record.meta.get(CHECKPOINT)
        if stored is None:
            return None
        if self.serializer is None:
            raise KhademError("restore() needs a job run by a worker")
        return self.serializer.decode_loaded(stored)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def set_progress(self, fraction: float, note: str | None = None) -> None:
        if self.cancelled:
            raise JobCancelledError(message=f"job {self.record.name!r} ({self.record.id}) was cancelled")
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or math.isnan(fraction):
            raise KhademError(f"progress must be a number between 0 and 1, got {fraction!r}")
        meta: dict[str, Any] = {"progress": min(1.0, max(0.0, float(fraction)))}
        if note is not None:
            meta["note"] = cut_text(str(note))
        self.record.meta.update(meta)
        self._schedule(self.driver.update_meta(self.record, meta))

    def _schedule(self, coro: Any) -> None:
        if self._on_loop():
            task = self.loop.create_task(coro)
            task.add_done_callback(_log_failure)
        else:  # called from a sync job's worker thread
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            future.add_done_callback(_log_failure)


def _refused(record: JobRecord) -> str:
    return (f"checkpoint of job {record.name!r} ({record.id}) refused: this worker no longer holds it "
            "(its lease was lost and another worker may run it)")


def _checkpoint_refused(record: JobRecord, done: Any) -> None:
    if done.cancelled():
        return
    if done.exception() is not None:
        logger.warning("could not store the checkpoint of job %s: %r", record.id, done.exception())
    elif not done.result():
        logger.warning("%s", _refused(record))


def _log_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        logger.warning("could not store job progress: %r", fut.exception())


class _LocalContext(JobContext):
    """A job run in the foreground, outside any queue (``JobHandle.debug``): progress is kept
    in the record in memory only."""

    __slots__ = ()

    def set_progress(self, fraction: float, note: str | None = None) -> None:
        self.record.meta["progress"] = fraction
        if note is not None:
            self.record.meta["note"] = cut_text(str(note))


def local_context(record: JobRecord) -> JobContext:
    return _LocalContext(record, None, None)  # type: ignore[arg-type]


current_job: ContextVar[JobContext | None] = ContextVar("khadem_current_job", default=None)
#: the message of the ``CancelledError`` that aborts a cancelled job's task
ABORTED = "khadem: job cancelled"


def progress(fraction: float, note: str | None = None) -> None:
    """Record the running job's progress (0..1) and an optional note; stored with its record.
    Raises ``JobCancelledError`` once the job was cancelled, so a job stops at its next call."""
    context = current_job.get()
    if context is None:
        raise KhademError("progress() was called outside a running job")
    context.set_progress(fraction, note)


def report(step: int | None = None, **metrics: float) -> None:
    """Record numbers of the running job at a step: ``kn.report(epoch, loss=0.31, val_loss=0.4)``
    (``step`` left out: the step after the last one). They reach the job's record while it runs,
    about once a second (``telemetry``). Raises ``JobCancelledError`` once the job was cancelled
    (or pruned), and ``ReportError`` for a name that is not an identifier or a value that is not
    a finite number (NaN is kept as NaN)."""
    context = current_job.get()
    if context is None:
        raise KhademError("report() was called outside a running job")
    context.report(step, metrics)


def checkpoint(state: Any) -> None:
    """Save the running job's state (a dict of numbers, arrays, bytes, DataFrames or a file
    path; large parts go to the artifact store) and point its record at it, fenced by the
    holder's lease. ``restore()`` gives it back, in this attempt or the next one. Old
    checkpoints are collected once a newer one is written, and when the job completes."""
    context = current_job.get()
    if context is None:
        raise KhademError("checkpoint() was called outside a running job")
    context.checkpoint(state)


def restore() -> Any:
    """The running job's latest checkpoint (``checkpoint``), or ``None`` for a first start."""
    context = current_job.get()
    if context is None:
        raise KhademError("restore() was called outside a running job")
    return context.restore()


def preempted() -> bool:
    """Whether the running job's worker was told to stop (SIGTERM, SIGINT, SIGUSR1 as Slurm's
    warning, ``q.stop()``): time to ``checkpoint`` and ``raise Preempted`` (``False`` outside
    a job)."""
    context = current_job.get()
    return context is not None and context.preempted


def context() -> JobContext:
    """The running job's context: its ``record``, its ``resources`` units; ``KhademError``
    outside a job."""
    found = current_job.get()
    if found is None:
        raise KhademError("context() was called outside a running job")
    return found


def cancelled() -> bool:
    """Whether the running job was cancelled (``False`` outside a job): a sync job that does not
    call ``progress()`` polls this to stop early."""
    context = current_job.get()
    return context is not None and context.cancelled
