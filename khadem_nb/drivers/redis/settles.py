"""Settles on Redis: each settle names its verb, and the settles of one loop turn go together.

Every settle asked for in the same turn of the event loop is gathered (``TurnBatch``), and one
``settle.lua`` call per queue settles them all: one round trip and one argument packing for a
batch. A settle that fails because Redis went away is tried again with backoff until the job's
lease would have run out anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ...config import QueueSettings
from ...job import JobRecord
from .._batches import TurnBatch, through_outage
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
        self._batch: TurnBatch[tuple[str, list[Any]], int] = TurnBatch(self._send)

    async def settle(self, record: JobRecord, settlement: Settlement) -> int:
        """Send ``settlement`` fenced by ``record.token``: 1 where Redis applied it, 2 where
        the job was cancelled while held and is now stopped, 0 where it was left as it was."""
        item = (record.queue, wire.settle_args(record, settlement))
        return int(await through_outage(self.settings.lease_s, lambda: self._batch.add(item)))

    async def _send(self, batch: list[tuple[str, list[Any]]]) -> list[int | Exception]:
        by_queue: dict[str, list[int]] = {}
        for index, (queue, _) in enumerate(batch):
            by_queue.setdefault(queue, []).append(index)
        outcomes: list[int | Exception] = [0] * len(batch)
        for queue, unordered in by_queue.items():
            # the plain completions first, then the other settles (settle.lua's layout)
            plain = [i for i in unordered if len(batch[i][1]) == PLAIN_WIDTH]
            order = plain + [i for i in unordered if len(batch[i][1]) != PLAIN_WIDTH]
            args = [*self._retention_args, len(plain), *(a for i in order for a in batch[i][1])]
            try:
                flags = await self._run(queue, args)
            except Exception as exc:
                for i in order:
                    outcomes[i] = exc
                continue
            for i, flag in zip(order, flags, strict=True):
                outcomes[i] = int(flag)
        return outcomes
