"""Autoscaling: a number of launched workers that follows the queue's backlog.

``Autoscaler`` runs a loop on the queue's event loop (the notebook's kernel, or ``khadem-nb
autoscale``). Every ``interval`` it reads the queue's counts and its workers' entries, and
keeps the live workers it launched between ``min`` and ``max``: it launches enough for the
due and running jobs (``ceil((queued + active) / concurrency)``, counting only the due jobs
whose resource needs its workers meet), at most ``step`` a round,
never more than that; it retires a worker idle for ``idle_timeout`` while more than ``min``
live. A launch that fails is logged and kept in ``last_error``, and the next launch waits
longer each time (``BACKOFF_S`` doubling), so a refused key or a full cluster is never retried
in a tight loop.

Two autoscalers of one queue do not fight: the one that holds the keyed store's lease
``autoscale/<queue>`` leads and renews it every round; another with the same limits stands by
and takes over when the lease lapses; one with other limits is refused, naming the leader.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import limits
from ..errors import ConfigError, LaunchError
from ..features.flow import rule_of
from ..job import JobStatus
from ..manager import QueueManager
from ..runtime.presence import read_entries
from . import launch
from .handle import LaunchedWorker
from .spec import START_TIMEOUT_S, LaunchSpec

logger = logging.getLogger(__name__)

LEASE_PREFIX = "autoscale/"
BACKOFF_S = (5.0, 300.0)  # the wait after a failed launch, doubling from the first to the second
SAMPLE_EVERY_S = 10.0  # how often the due jobs' resource needs are looked at
SAMPLED = 200  # and how many of them


@dataclass(frozen=True)
class Limits:
    """What an autoscaler keeps: between ``low`` and ``high`` workers launched by ``on``."""

    on: str
    low: int
    high: int
    idle_timeout_s: float

    def as_json(self) -> dict[str, Any]:
        return {"on": self.on, "min": self.low, "max": self.high, "idle_timeout": self.idle_timeout_s}


def check_limits(on: str, low: Any, high: Any, idle_timeout: Any) -> Limits:
    low, high = limits.count(low, "min"), limits.count(high, "max")
    if low > high:
        raise ConfigError(f"autoscale min ({low}) must not exceed max ({high})")
    return Limits(on, low, high, limits.seconds(idle_timeout, "idle_timeout"))


@dataclass
class ScaleState:
    """What the autoscaler has seen and done, for ``status()``."""

    leading: bool = False
    launched: list[LaunchedWorker] = field(default_factory=list)
    retiring: list[LaunchedWorker] = field(default_factory=list)  # asked to exit, still running
    idle_since: dict[str, float] = field(default_factory=dict)
    last_error: str | None = None
    retry_at: float = 0.0
    failures: int = 0
    rounds: int = 0
    share: float = 1.0  # of the due jobs, those a launched worker could run (``_runnable_share``)
    sampled_at: float = float("-inf")


class Autoscaler:
    """Keeps between ``min`` and ``max`` launched workers of a queue, from its backlog."""

    def __init__(self, manager: QueueManager, spec: LaunchSpec, scale: Limits, *,
                 options: Mapping[str, Any] | None = None, queue: str | None = None,
                 interval: float = 1.0, step: int | None = None, timeout: float = START_TIMEOUT_S) -> None:
        self.manager = manager
        self.spec = spec
        self.limits = scale
        self.options = dict(options or {})
        self.queue = queue or manager.settings.name
        self.interval = limits.seconds(interval, "worker delay")
        self.step = limits.count(step if step is not None else max(1, scale.high), "workers")
        self.timeout = timeout
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.state = ScaleState()
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_key(self) -> str:
        return f"{LEASE_PREFIX}{self.queue}"

    def __repr__(self) -> str:
        live = sum(1 for w in self.state.launched if w.alive)
        role = "leads" if self.state.leading else "stands by"
        scale = self.limits
        return f"<autoscaler {scale.on} {scale.low}..{scale.high} of {self.queue!r}: {role}, {live} live>"

    # -- running -----------------------------------------------------------------------------
    async def check_leader(self) -> None:
        """``ConfigError`` when another autoscaler with other limits leads this queue."""
        leader = await self._leader()
        if leader is None or leader.get("id") == self.identity:
            return
        theirs = leader.get("limits")
        if theirs != self.limits.as_json():
            raise ConfigError(f"autoscaler {leader.get('id')} leads queue {self.queue!r} with {theirs}; "
                              "stop it (q.autoscale(None) there) or ask for the same limits")

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="khadem-autoscale")
        return self._task

    async def run(self) -> None:
        """Rounds every ``interval`` until cancelled; a round's fault is logged, never fatal."""
        try:
            while True:
                try:
                    await self.round()
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    logger.warning("autoscaler round failed: %r", exc)
                await asyncio.sleep(self.interval)
        finally:
            if self.state.leading:
                await self._let_go()

    async def stop(self, *, retire: bool = True) -> None:
        """Stop scaling; with ``retire`` the workers it launched finish their jobs and exit."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if retire:
            for worker in self.state.launched:
                if worker.alive:
                    await self.manager.retire(worker.name)

    async def round(self) -> None:
        self.state.rounds += 1
        if not await self._lead():
            return
        counts = await self.manager.counts(self.queue)
        entries = {e["name"]: e for e in await read_entries(self.manager.driver)}
        self.state.retiring = [w for w in self.state.retiring if w.alive]
        mine = self._live(entries)
        wanted = self.wanted(counts, await self._runnable_share(counts))
        if len(mine) < wanted:
            await self._grow(min(wanted - len(mine), self.step))
        else:
            await self._shrink(mine, entries, wanted)

    def wanted(self, counts: Mapping[str, int], share: float = 1.0) -> int:
        """Workers the backlog needs: the due jobs its workers could run (``share`` of them)
        and the running ones, over each worker's concurrency, within the limits."""
        jobs = math.ceil(counts.get("queued", 0) * share) + counts.get("active", 0)
        return max(self.limits.low, min(self.limits.high, math.ceil(jobs / self.spec.concurrency)))

    async def _runnable_share(self, counts: Mapping[str, int]) -> float:
        """Of the due jobs, the share a launched worker could run: those that ask for no more
        resource units than it offers (a job needing ``gpu=1`` does not call for workers that
        offer none). Read from the oldest SAMPLED due jobs at most every SAMPLE_EVERY_S."""
        if not counts.get("queued"):
            return 1.0
        now = time.monotonic()
        if now >= self.state.sampled_at + SAMPLE_EVERY_S:
            self.state.sampled_at = now
            queued = await self.manager.driver.jobs(JobStatus.QUEUED, self.queue, SAMPLED)
            offered = dict(self.spec.resources)
            runnable = sum(1 for r in queued
                           if r.lane_rule is None or rule_of(r.lane_rule).fits(offered) >= 1)
            self.state.share = runnable / len(queued) if queued else 1.0
        return self.state.share

    def _live(self, entries: Mapping[str, Mapping[str, Any]]) -> list[LaunchedWorker]:
        """The workers it launched that run or wait to (a Slurm job in line), forgetting the rest."""
        live: list[LaunchedWorker] = []
        for worker in self.state.launched:
            entry = entries.get(worker.name)
            ended = (entry.get("state") in ("gone", "failed") if entry is not None
                     else not worker.alive)
            (self.state.retiring if ended else live).append(worker)  # ended ones are let go once reaped
        self.state.launched = live
        return live

    async def _grow(self, n: int) -> None:
        now = time.monotonic()
        if now < self.state.retry_at:
            return
        try:
            started = await launch(self.manager.driver, self.spec, n, self.limits.on, timeout=self.timeout,
                                   options=self.options)
        except LaunchError as exc:
            self.state.failures += 1
            self.state.last_error = str(exc)
            wait = min(BACKOFF_S[1], BACKOFF_S[0] * 2 ** (self.state.failures - 1))
            self.state.retry_at = time.monotonic() + wait
            logger.error("autoscaler could not launch %d worker(s), next try in %.0fs: %s", n, wait, exc)
            return
        self.state.failures = 0
        self.state.launched.extend(started)
        logger.info("autoscaler launched %d worker(s) on %s", n, self.limits.on)

    async def _shrink(self, mine: list[LaunchedWorker], entries: Mapping[str, Mapping[str, Any]],
                      wanted: int) -> None:
        """Retire workers idle for ``idle_timeout`` while more than ``wanted`` live."""
        now = time.monotonic()
        seen = self.state.idle_since
        for worker in mine:
            state = (entries.get(worker.name) or {}).get("state")
            if state == "idle":
                seen.setdefault(worker.name, now)
            else:
                seen.pop(worker.name, None)
        spare = len(mine) - wanted
        for worker in mine:
            if spare <= 0:
                break
            if now - seen.get(worker.name, now) >= self.limits.idle_timeout_s:
                await self.manager.retire(worker.name)
                seen.pop(worker.name, None)
                self.state.launched.remove(worker)
                self.state.retiring.append(worker)
                spare -= 1
                logger.info("autoscaler retired idle worker %s", worker.name)

    # -- leading -----------------------------------------------------------------------------
    async def _leader(self) -> dict[str, Any] | None:
        raw = await self.manager.driver.kv_get(self.lease_key)
        try:
            found = json.loads(raw) if raw else None
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    async def _lead(self) -> bool:
        """Take or renew the lease; whether this autoscaler leads this round."""
        lease = json.dumps({"id": self.identity, "limits": self.limits.as_json()}).encode()
        ttl = max(10.0, 5 * self.interval)
        driver = self.manager.driver
        if self.state.leading:
            leader = await self._leader()
            self.state.leading = leader is None or leader.get("id") == self.identity
            if self.state.leading:
                await driver.kv_put(self.lease_key, lease, ttl_s=ttl)
        else:
            self.state.leading = await driver.kv_put_new(self.lease_key, lease, ttl_s=ttl)
        return self.state.leading

    async def _let_go(self) -> None:
        try:
            leader = await self._leader()
            if leader is not None and leader.get("id") == self.identity:
                await self.manager.driver.kv_delete(self.lease_key)
        except Exception as exc:  # it lapses on its own
            logger.debug("could not give up the autoscaler's lease: %r", exc)
        self.state.leading = False

    def handles(self) -> list[LaunchedWorker]:
        """Every worker it launched that may still run (retiring ones too)."""
        return [*self.state.launched, *self.state.retiring]

    def status(self) -> dict[str, Any]:
        """Its limits, whether it leads, its live workers, its last launch error."""
        return {**self.limits.as_json(), "queue": self.queue, "leading": self.state.leading,
                "workers": [w.name for w in self.state.launched], "last_error": self.state.last_error,
                "rounds": self.state.rounds}
