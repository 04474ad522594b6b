"""The part of every worker that keeps time: it reads schedules from the driver and at each due
slot offers the slot's job to ``QueueDriver.fire``, which stores it once across all workers;
and now and then it ends jobs waiting for a parent whose record is gone (``dependencies``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ..drivers.base import QueueDriver
from ..features.dependencies import end_orphans
from ..features.schedules import LOOK_EVERY_S, RELIST_EVERY_S, ScheduleState
from ._tasks import stop_if_cancelled

logger = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0
ORPHANS_EVERY_S = 60.0  # between looks for waiting jobs whose parent is gone


class Ticker:
    """Fires the due slots of the schedules of ``queues``; runs until cancelled."""

    def __init__(self, driver: QueueDriver, queues: Sequence[str]) -> None:
        self.driver = driver
        self.queues = set(queues)
        self._states: list[ScheduleState] = []
        self._last: dict[str, int] = {}  # schedule id -> the last slot offered here or stored
        self._listed_at = float("-inf")
        self._orphans_at = float("-inf")
        self._failures = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() >= self._listed_at + RELIST_EVERY_S:
                    await self._list()
                    self._listed_at = loop.time()
                if loop.time() >= self._orphans_at + ORPHANS_EVERY_S:
                    self._orphans_at = loop.time()
                    if ended := await end_orphans(self.driver, self.queues):
                        logger.warning("ended %d job(s) waiting for a parent whose record is gone", ended)
                wait_s = await self._fire_due()
                self._failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the storage is away: try again later, never stop the worker
                stop_if_cancelled()
                self._failures += 1
                if self._failures == 1:
                    logger.warning("could not fire schedules (%s); trying again", exc)
                wait_s = min(MAX_BACKOFF_S, 0.5 * 2 ** min(self._failures, 6))
            await asyncio.sleep(wait_s)

    async def _list(self) -> None:
        self._states = [s for s in await self.driver.schedule_states() if s.schedule.queue in self.queues]
        for state in self._states:
            if state.last_slot is not None:
                self._last[state.schedule.id] = max(self._last.get(state.schedule.id, state.last_slot),
                                                    state.last_slot)

    async def _fire_due(self) -> float:
        """Offer every due slot; return the seconds until the next one (at most LOOK_EVERY_S)."""
        wait_ms = LOOK_EVERY_S * 1000
        for state in self._states:
            schedule = state.schedule
            now = self.driver.clock()
            for slot in schedule.due_slots(self._last.get(schedule.id), now):
                await self.driver.fire(schedule, slot, schedule.tick(slot, now))
                self._last[schedule.id] = slot
            following = schedule.next_slot(self.driver.clock())
            if following is not None:
                wait_ms = min(wait_ms, following - self.driver.clock())
        return max(0.005, wait_ms / 1000)
