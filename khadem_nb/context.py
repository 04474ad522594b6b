"""The job currently running in this context: lets code inside a job report progress."""

from __future__ import annotations

import asyncio
import logging
import math
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .errors import KhademError

if TYPE_CHECKING:
    from .drivers.base import QueueDriver
    from .job import JobRecord

logger = logging.getLogger(__name__)

OUTPUT_LIMIT = 64 * 1024  # characters of a job's output kept with its record


class JobContext:
    """What a running job can reach: its record, and the driver that stores it.

    One is built for every job run, so it has slots and makes its output list only when the
    job first writes.
    """

    __slots__ = ("driver", "loop", "output", "output_chars", "record")

    def __init__(self, record: JobRecord, driver: QueueDriver, loop: asyncio.AbstractEventLoop) -> None:
        self.record = record
        self.driver = driver
        self.loop = loop
        self.output: list[str] | None = None
        self.output_chars = 0

    def write_output(self, text: str) -> None:
        """Keep printed output and log lines of the job (the last OUTPUT_LIMIT characters)."""
        if self.output is None:
            self.output = []
        self.output.append(text)
        self.output_chars += len(text)
        if self.output_chars > 2 * OUTPUT_LIMIT:
            joined = "".join(self.output)[-OUTPUT_LIMIT:]
            self.output[:] = [joined]
            self.output_chars = len(joined)

    def captured_output(self) -> str | None:
        return "".join(self.output)[-OUTPUT_LIMIT:] if self.output else None

    def set_progress(self, fraction: float, note: str | None = None) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or math.isnan(fraction):
            raise KhademError(f"progress must be a number between 0 and 1, got {fraction!r}")
        meta: dict[str, Any] = {"progress": min(1.0, max(0.0, float(fraction)))}
        if note is not None:
            meta["note"] = str(note)
        self.record.meta.update(meta)
        self._schedule(self.driver.update_meta(self.record, meta))

    def _schedule(self, coro: Any) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            task = self.loop.create_task(coro)
            task.add_done_callback(_log_failure)
        else:  # called from a sync job's worker thread
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            future.add_done_callback(_log_failure)


def _log_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        logger.warning("could not store job progress: %r", fut.exception())


current_job: ContextVar[JobContext | None] = ContextVar("khadem_current_job", default=None)


def progress(fraction: float, note: str | None = None) -> None:
    """Record the running job's progress (0..1) and an optional note; stored with its record."""
    context = current_job.get()
    if context is None:
        raise KhademError("progress() was called outside a running job")
    context.set_progress(fraction, note)
