"""Settles on Redis: each settle names its verb, and the settles of one loop turn go together.

Every settle asked for in the same turn of the event loop is gathered, and one ``settle.lua``
call per queue settles them all: one round trip and one argument packing for a batch. A settle
that fails because Redis went away is tried again with backoff until the job's lease would
have run out anyway (after that another worker may hold it, and the fence would refuse it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from ...config import QueueSettings
from ...errors import DriverUnavailableError
from ...job import JobRecord
from ..base import Settlement
from . import wire

#: runs settle.lua on a queue with the given arguments
RunSettle = Callable[[str, Sequence[Any]], Awaitable[Any]]
#: how many values settle.lua reads for a completion that carries no meta (see wire.settle_args)
PLAIN_WIDTH = 3


class SettleBatcher:
    """Gathers the settles of one loop turn and sends them as one script call per queue."""

    def __init__(self, settings: QueueSettings, run: RunSettle) -> None:
        self.settings = settings
        self._run = run
        self._retention_args = wire.retention_args(settings)
        self._pending: list[tuple[str, list[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def settle(self, record: JobRecord, settlement: Settlement) -> int:
        """Send ``settlement`` fenced by ``record.token``: 1 where Redis applied it, 2 where
        the job was cancelled while held and is now stopped, 0 where it was left as it was."""
        args = wire.settle_args(record, settlement)
        return int(await self._through_outage(lambda: self._queued(record.queue, args)))

    async def _queued(self, queue: str, args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((queue, args, future))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._in_background(self._send(batch))

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task held until it ends (the loop keeps only weak references)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[str, list[Any], asyncio.Future[Any]]]) -> None:
        by_queue: dict[str, list[tuple[list[Any], asyncio.Future[Any]]]] = {}
        for queue, args, future in batch:
            by_queue.setdefault(queue, []).append((args, future))
        for queue, unordered in by_queue.items():
            # the plain completions first, then the other settles (settle.lua's layout)
            plain = [item for item in unordered if len(item[0]) == PLAIN_WIDTH]
            items = plain + [item for item in unordered if len(item[0]) != PLAIN_WIDTH]
            args = [*self._retention_args, len(plain), *(a for job_args, _ in items for a in job_args)]
            try:
                flags = await self._run(queue, args)
            except Exception as exc:
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), flag in zip(items, flags, strict=True):
                if not future.done():
                    future.set_result(flag)

    async def _through_outage(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Try ``make`` again through an outage, with backoff, until a lease would have expired."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.lease_s
        delay = 0.05
        while True:
            try:
                return await make()
            except DriverUnavailableError:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
