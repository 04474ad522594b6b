"""Waiting for work in storage that other processes write to (files, SQLite, PostgreSQL).

Where other processes cannot wake us, an idle ``reserve`` polls, backing off from 5 ms to
100 ms; pushes and retries made by this process wake it at once, and so do PostgreSQL's
notices (its driver polls seldom while they arrive).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..job import JobRecord

POLL_FIRST_S, POLL_MAX_S = 0.005, 0.1


class PollingWaits:
    """The wake-up event and poll loop shared by the file and SQLite drivers."""

    def __init__(self, poll_max_s: float = POLL_MAX_S) -> None:
        self._event: asyncio.Event | None = None
        self._generation = 0
        self.poll_max_s = poll_max_s  # the longest idle wait between two claims

    def _current(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def wake(self) -> None:
        """New work is there (pushed or requeued by this process)."""
        self._current().set()

    def interrupt(self) -> None:
        """Make every waiting ``reserve`` return now."""
        self._generation += 1
        self.wake()

    async def reserve(self, claim: Callable[[], Awaitable[list[JobRecord]]],
                      wait_s: float) -> list[JobRecord]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        generation = self._generation
        poll = POLL_FIRST_S
        while True:
            event = self._current()
            event.clear()
            claimed = await claim()
            remaining = deadline - loop.time()
            if claimed or remaining <= 0 or generation != self._generation:
                return claimed
            try:
                await asyncio.wait_for(event.wait(), min(poll, remaining))
            except TimeoutError:
                poll = min(self.poll_max_s, poll * 2)
