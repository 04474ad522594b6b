"""Batched jobs: the jobs of one batched kind that start close together run as one call.

A job kind with ``batch_size`` (``@q.job(batch=64, batch_wait=0.05)``) is still claimed, run
and settled one record at a time: each keeps its own record, timeout, retries, result and
failure, its middleware and hooks. Only the call of its work is shared: where a job would call
``handle()``, it joins its kind's :class:`BatchGate`, which gathers the jobs that join within
``batch_wait`` seconds of the first, up to ``batch_size``, and calls ``handle_batch`` once with
all of them. The call returns one result per job, in order; an exception instance in place of a
result fails that job alone, an exception raised fails every job of the call.

The worker lets the jobs of a batched kind wait in their gate without holding a consumer each
(``QueueWorker``), so a batch fills beyond the worker's concurrency.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import BatchResultError
from ..job import QueueJob

logger = logging.getLogger(__name__)


class BatchGate:
    """Gathers the jobs of one batched kind into calls of ``handle_batch``."""

    def __init__(self, size: int, wait_s: float, threads: Callable[[], ThreadPoolExecutor]) -> None:
        self.size = size
        self.wait_s = wait_s
        self.threads = threads  # the executor's pool for sync calls, as it is at each call
        self._forming: list[tuple[QueueJob, asyncio.Future[Any]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._calls: set[asyncio.Task[None]] = set()  # batches being called, kept until they end

    @property
    def waiting(self) -> int:
        """Jobs in the batch now forming."""
        return len(self._forming)

    async def submit(self, job: QueueJob) -> Any:
        """Run ``job`` as part of a batch: its own result, or its own exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._forming.append((job, future))
        if len(self._forming) >= self.size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush)
        try:
            return await future
        except asyncio.CancelledError:  # cancelled or timed out: it leaves a batch not yet called
            self._forming = [(j, f) for j, f in self._forming if f is not future]
            if not self._forming and self._timer is not None:
                self._timer.cancel()
                self._timer = None
            raise

    def _flush(self) -> None:
        """Call the forming batch (full, or its wait is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._forming = self._forming, []
        if not batch:
            return
        # a context of its own: no job's ``kn.progress`` context leaks into the shared call
        task = asyncio.get_running_loop().create_task(self._call(batch), context=contextvars.Context())
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, batch: Sequence[tuple[QueueJob, asyncio.Future[Any]]]) -> None:
        jobs = [job for job, _ in batch]
        try:
            results = await self._results(jobs)
        except Exception as exc:  # the whole call failed: so does each of its jobs
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # cancelled or timed out while the call ran: its result is dropped
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _results(self, jobs: list[QueueJob]) -> Sequence[Any]:
        handle_batch: Callable[[list[QueueJob]], Any] = type(jobs[0]).handle_batch
        if inspect.iscoroutinefunction(handle_batch):
            results = await handle_batch(jobs)
        else:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self.threads(), handle_batch, jobs)
        if isinstance(results, Awaitable):  # a sync method that returned a coroutine
            results = await results
        if not isinstance(results, list | tuple) or len(results) != len(jobs):
            got = f"{len(results)} results" if isinstance(results, list | tuple) else type(results).__name__
            raise BatchResultError(f"{type(jobs[0]).__name__}.handle_batch returned {got} for {len(jobs)} "
                                   "jobs; it returns a list with one result (or exception) per job, in order")
        return results
