"""The listening connection of a PostgreSQL queue: wake-ups, cancels and settle notices."""


from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..._ids import new_token
from ...errors import DriverError
from ...job import JobStatus
from .._polling import PollingWaits
from .._watchers import SettleWatchers
from ..base import (
    NO_RESULT,
    AbortNotice,
    SettleNotice,
    Unsubscribe,
)

if TYPE_CHECKING:
    from .driver import PostgresDriver

logger = logging.getLogger(__name__)

SETTLED = {s.value: s for s in JobStatus}  # status words as the settle notices carry them
POLL_LISTENING_S = 1.0  # longest idle wait while notices arrive (delayed jobs falling due)
POLL_FALLBACK_S = 0.25  # longest idle wait when LISTEN does not work here


class Listener:
    """One connection that LISTENs for work and for cancels; reconnects after a restart."""

    def __init__(self, driver: PostgresDriver, waits: PollingWaits) -> None:
        self.driver = driver
        self.waits = waits
        self.working = False  # the self-test at open heard its own notice
        self.connected = False  # listening now (false while the server is away)
        self._aborts: list[AbortNotice] = []
        self._watchers = SettleWatchers()
        self._task: asyncio.Task[None] | None = None
        self._proved: asyncio.Event | None = None
        self._probe = f"self-test {new_token()}"

    async def start(self) -> None:
        """Listen, and prove it works by notifying ourselves (behind a transaction-pooling
        proxy LISTEN does nothing); without proof, idle waits poll with backoff."""
        self._proved = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._listen_forever())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                while not self._proved.is_set():
                    with contextlib.suppress(DriverError):
                        await self.driver.notify(self.driver.channel, self._probe)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            await self._proved.wait()
        self.working = self._proved.is_set()
        if self.working:
            self.waits.poll_max_s = POLL_LISTENING_S
        else:
            logger.warning("PostgreSQL at %s: LISTEN/NOTIFY does not reach this process (a transaction-"
                           "pooling proxy?); idle workers poll with backoff instead", self.driver._where())

    def on_settle(self, job_ids: Sequence[str], notice: SettleNotice) -> Callable[[], None]:
        return self._watchers.add(job_ids, notice)

    def on_abort(self, notice: AbortNotice) -> Unsubscribe:
        self._aborts.append(notice)

        async def unsubscribe() -> None:
            if notice in self._aborts:
                self._aborts.remove(notice)

        return unsubscribe

    async def _listen_forever(self) -> None:
        import psycopg

        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.driver.listen_url or self.driver.conninfo(),
                                                             autocommit=True)
                try:
                    await conn.execute(f"LISTEN {self.driver.channel}")
                    await conn.execute(f"LISTEN {self.driver.abort_channel}")
                    await conn.execute(f"LISTEN {self.driver.settled_channel}")
                    self.connected, delay = True, 0.1
                    self.waits.wake()  # work may have come while we did not listen
                    async for notice in conn.notifies():
                        self._tell(notice.channel, notice.payload)
                finally:
                    self.connected = False
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server went away: listen again once it is back
                logger.warning("PostgreSQL listener at %s lost (%s); reconnecting in %.1fs",
                               self.driver._where(), exc, delay)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    def _tell(self, channel: str, payload: str) -> None:
        if channel == self.driver.settled_channel:
            if self._watchers:
                self._tell_settled(payload)
            return
        if channel == self.driver.abort_channel:
            for job_id in payload.split("\n"):
                for notice in list(self._aborts):
                    notice(job_id)
            return
        if payload == self._probe and self._proved is not None:
            self._proved.set()
        self.waits.wake()

    def _tell_settled(self, payload: str) -> None:
        for line in payload.split("\n"):
            job_id, _, status = line.partition("\t")
            self._watchers.tell(job_id, SETTLED.get(status), NO_RESULT)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
