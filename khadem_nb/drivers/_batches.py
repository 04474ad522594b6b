"""Writes asked for in one turn of the event loop, sent together; and retries through an outage.

A worker settles many jobs in the same loop turn (a batch of no-ops, or every job a prefetch
claimed finishing together). :class:`TurnBatch` gathers what is asked for in one turn and hands
it to one ``send`` call: one round trip for the batch instead of one a job. Redis and
PostgreSQL settle through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from ..errors import DriverUnavailableError

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")



class TurnBatch(Generic[Item, Outcome]):
    """Gathers the items added in one loop turn and sends them with one ``send`` call, which
    returns one outcome (or the exception for that item) per item, in order."""

    def __init__(self, send: Callable[[list[Item]], Awaitable[Sequence[Outcome | Exception]]]) -> None:
        self._send_batch = send
        self._pending: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def add(self, item: Item) -> Outcome:
        """Send ``item`` with the others of this loop turn; its outcome, or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._in_background(self._send(batch))

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task held until it ends (the loop keeps only weak references)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Item, asyncio.Future[Outcome]]]) -> None:
        try:
            outcomes: Sequence[Outcome | Exception] = await self._send_batch([item for item, _ in batch])
        except Exception as exc:
            outcomes = [exc] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller went away (cancelled)
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


async def through_outage(lease_s: float, make: Callable[[], Awaitable[Outcome]]) -> Outcome:
    """``await make()``, tried again with backoff while the server is away (a restart), until a
    job's lease would have run out (after that another worker may hold it, and the fence would
    refuse the write anyway)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lease_s
    delay = 0.05
    while True:
        try:
            return await make()
        except DriverUnavailableError:
            if loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
