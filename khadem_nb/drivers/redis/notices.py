"""Notices over pub/sub: settles for waiters, aborts for workers.

settle.lua (and cancel.lua) publish one message per call on ``{prefix:queue}:notify:settled``:
a line per job, ``id<TAB>status``, plus ``<TAB>result_json`` for a completion whose result is
small, so that a waiter in another process neither polls the status nor, for such a result,
reads the record. One subscriber per driver hears every settle under the key prefix; a
subscription that dies only makes waiters fall back to polling.

cancel.lua publishes the ids of running jobs it cancelled on ``{prefix:queue}:notify:abort``;
a worker subscribes to the channels of its queues. A message it misses (its subscription was
down) reaches it through the heartbeat instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence

from ...job import JobStatus
from .._watchers import SettleWatchers
from ..base import NO_RESULT, AbortNotice, SettleNotice
from .connection import RedisConnection
from .keys import abort_channels, settle_channels

logger = logging.getLogger(__name__)

SETTLED_STATES = {s.value: s for s in JobStatus}  # status words as the scripts write them


class SettleListener:
    """Fans the settle channel out to the notices registered per job id."""

    def __init__(self, connection: RedisConnection, prefix: str) -> None:
        self.connection = connection
        self.prefix = prefix
        self._watchers = SettleWatchers()
        self._task: asyncio.Task[None] | None = None

    async def watch(self, job_ids: Sequence[str], notice: SettleNotice) -> Callable[[], None]:
        """Call ``notice`` when any of ``job_ids`` settles; returns an unwatch."""
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            subscribed = loop.create_future()
            self._task = loop.create_task(self._listen(subscribed))
            await subscribed
        return self._watchers.add(job_ids, notice)

    async def _listen(self, subscribed: asyncio.Future[None]) -> None:
        pubsub = self.connection.client.pubsub()
        try:
            await pubsub.psubscribe(settle_channels(self.prefix))
            subscribed.set_result(None)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    self.tell(message["data"].decode())
        except Exception as exc:
            if not subscribed.done():
                subscribed.set_result(None)
            logger.debug("settle listener stopped: %r", exc)
        finally:
            await pubsub.aclose()

    def tell(self, message: str) -> None:
        """Pass one settle message on: a line per job, ``id<TAB>status[<TAB>result]``. A
        message without tabs (space-separated bare ids) names jobs whose status is unknown."""
        lines = message.split("\n") if "\t" in message else message.split()
        for line in lines:
            job_id, _, rest = line.partition("\t")
            if job_id not in self._watchers:  # nobody here waits for it: its result stays unread
                continue
            state, _, result_text = rest.partition("\t")
            result = json.loads(result_text) if result_text else NO_RESULT
            self._watchers.tell(job_id, SETTLED_STATES.get(state), result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class AbortListener:
    """Hears the abort channels of some queues and tells ``notice`` each id."""

    def __init__(self, connection: RedisConnection, prefix: str, queues: Sequence[str],
                 notice: AbortNotice) -> None:
        self.connection = connection
        self.channels = abort_channels(prefix, queues)
        self.notice = notice
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe, and return once the subscription is in place."""
        loop = asyncio.get_running_loop()
        subscribed = loop.create_future()
        self._task = loop.create_task(self._listen(subscribed))
        try:
            await subscribed
        except asyncio.CancelledError:  # the worker stopped meanwhile: nobody will close it later
            await self.close()
            raise

    async def _listen(self, subscribed: asyncio.Future[None]) -> None:
        pubsub = self.connection.client.pubsub()
        try:
            await pubsub.subscribe(*self.channels)
            if not subscribed.done():  # its waiter may have been cancelled meanwhile
                subscribed.set_result(None)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    for job_id in message["data"].decode().split("\n"):
                        self.notice(job_id)
        except Exception as exc:
            if not subscribed.done():
                subscribed.set_result(None)
            logger.warning("abort listener stopped (%r); cancels reach running jobs at the next "
                           "heartbeat", exc)
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
