"""The Redis driver: many processes on many machines, at-least-once, on Redis or Redis Cluster.

Every state change is one Lua script (``lua/``) that reads the clock with ``TIME``, so client
clocks never matter, and every script declares all the keys it touches, which share one hash
tag per queue (``keys``), so the driver runs unchanged on Redis Cluster.

- Dispatch: ``enqueue.lua`` stores a batch of jobs; a bulk dispatch streams its chunks on one
  connection, so Redis stores one while Python builds the next (``wire`` builds them).
- Claim: ``reserve.lua`` claims a batch under a lease and a fresh token and, at most every
  lease/4 seconds, puts back jobs whose lease expired (or fails them after
  ``queue.max_reclaims``). Idle workers block on a notify list, not by polling; a worker left
  waiting is registered for hand-off, so a dispatch that finds it claims the job for it.
- Settle: ``settles`` batches the settles of one loop turn; each names its verb; each is fenced
  by the claim's token; ``notices`` tells waiters in other processes.
- Cancel: ``cancel.lua`` cancels pending and running jobs in one step against claims; the
  workers holding running ones hear it on the abort channel (``notices``).
- Lookup: a job id does not name its queue, so ``directory`` says where to look.

``docs/redis.md`` describes the layout, the hand-off and the lease protocol in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..._ids import new_token
from ..._time import now_ms
from ...config import QueueSettings
from ...errors import ConfigError, CorruptQueueError, DriverError
from ...features.capabilities import Runs
from ...features.flow import LaneRule, LaneUse
from ...features.schedules import ScheduleState
from ...features.unique import Lock
from ...job import TERMINAL_STATUSES, JobRecord, JobStatus
from ...serializer import dumps
from .._kv import check_key, check_prefix, rules_of
from .._layout import UPGRADE, Layout, plan
from .._records import due_view
from ..base import (
    FIRED_KEY,
    LEASE_LOST_ERROR,
    SCHEDULES_KEY,
    AbortNotice,
    QueueDriver,
    Settlement,
    SettleNotice,
    Unsubscribe,
    add_finish,
    empty_counts,
)
from . import wire
from .connection import Outgoing, RedisConnection
from .directory import QueueDirectory
from .keys import (
    COLUMNS,
    KEY_INDEX,
    KEY_NAMES,
    KEY_TYPES,
    STATUS_SETS,
    code_key,
    item_key_patterns,
    kv_key,
    kv_pattern,
    layout_key,
    legacy_keys,
    queue_keys,
    workers_key,
)
from .notices import SETTLED_STATES, AbortListener, SettleListener
from .settles import SettleBatcher

logger = logging.getLogger(__name__)
T = TypeVar("T")

FETCH_CHUNK = 2000  # records read per script call
MAX_PRIORITY = 4000  # ready scores are -priority * 1e12 + seq: exact in a double up to this
PUSH_CHUNK = 200  # jobs per enqueue call; a bigger push streams its chunks
CANCEL_CHUNK = 5000  # jobs per cancel.lua call: Redis serves other clients between calls
EXPIRY_PASS_S = 5.0  # how often settles of records with a lifetime of their own look for expired ones
MAX_WINDOWS = 1440  # windows one finished_counts call counts at most (a day of minutes)
LOCK_PASS_S = 10.0  # a worker drops its queues' dead unique locks this often (unlock.lua)
LOCK_CHUNK = 1000  # lock fields looked at per unlock.lua call
LOCK_PASS_CHUNKS = 10  # unlock.lua calls per queue in one worker's pass (trim() looks at them all)
MAX_WAIT_S = 1.0  # longest block on a notify list: other queues and sweeps are looked at as often


@dataclass(frozen=True)
class _Claim:
    """What reserve.lua is told of the claiming worker: its free resource units (JSON, or '')
    and the jobs it runs (``runs_json``, or '' for any)."""

    free: str
    runs: str


@functools.lru_cache(maxsize=16)
def runs_json(runs: Runs) -> str:
    """``runs`` as reserve.lua reads it: {"n": {name: true, ...}, "s": runs shipped code};
    made once per filter (a worker keeps one ``Runs`` while what it runs stays the same)."""
    return dumps({"n": {name: True for name in runs.names}, "s": runs.shipped})


class RedisDriver(QueueDriver):
    """At-least-once queue on Redis (standalone or Cluster)."""

    uses_leases: ClassVar[bool] = True
    #: the prefix's layout versions: 1 is the first that stores its version (``{prefix}:layout``);
    #: a prefix written before (0) holds the same keys, so this release works on it as it is
    layout: ClassVar[Layout] = Layout(1, 0)
    auto_migrates: ClassVar[bool] = False  # an upgrade is a deploy step (docs/upgrades.md)
    max_priority: ClassVar[int] = MAX_PRIORITY

    def __init__(self, settings: QueueSettings | str | Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        settings = self.settings
        self.url = settings.redacted_url()
        self.connection = RedisConnection(settings)
        self.queues = QueueDirectory(settings.prefix, settings.name)  # where get() looks for an id
        self._layout_key = layout_key(settings.prefix)
        self.settles = SettleBatcher(settings, functools.partial(self._run, "settle"))
        self.notices = SettleListener(self.connection, settings.prefix)
        self._keys: dict[str, list[str]] = {}
        self._encoded_keys: dict[str, list[bytes]] = {}
        self._lease_ms = int(settings.lease_s * 1000)
        # reserve.lua's fixed arguments: max reclaims, sweep interval (ms), lease-lost error
        self._reserve_constants = [settings.max_reclaims, max(100, int(settings.lease_s * 250)),
                                   LEASE_LOST_ERROR.replace("{n}", "%d")]
        # how this driver registers for hand-off (enqueue.lua): its lease and a unique name
        self._waiter = f"{self._lease_ms}|{new_token()}"
        self._registered: set[str] = set()  # queues whose K_WAITING may hold self._waiter
        self._next_expiry_pass = 0.0  # monotonic time of the next look for expired records
        self._next_lock_pass = time.monotonic() + LOCK_PASS_S  # of the next drop of dead unique locks
        self._lock_cursors: dict[str, str] = {}  # where each queue's next pass over its locks starts
        self._generation = 0  # bumped by interrupt_waits: a reserve under an older one claims nothing
        self._reserving = 0  # reserve calls in flight
        self._interrupted = False  # interrupt_waits called, and the hand-off line not left since
        self._leaving: asyncio.Task[None] | None = None  # leave.lua calls after an interrupt
        self._queue_was_empty = False  # the last claim came back short: wait before claiming
        self._next_due_at: float | None = None  # loop time when the next delayed job is due
        self._legacy_moved = False  # schedules of earlier versions moved into the keyed store

    @property
    def client(self) -> Any:
        """The redis-py client (``redis.asyncio.Redis`` or ``RedisCluster``)."""
        return self.connection.client

    @property
    def cluster(self) -> bool:
        return self.connection.cluster

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        await self.connection.open()
        found = await self._stored_layout()
        if plan(found, self.layout, self.auto_migrate, self.settings.redacted_url()) == UPGRADE:
            await self._on([], lambda: self.client.set(self._layout_key, str(self.layout.current)))
            self.layout_change = (found, self.layout.current)
        await self._move_legacy_code()

    async def _stored_layout(self) -> int | None:
        """The prefix's layout version (its ``layout`` key; 0 where queues exist without one:
        written before versions were stored); ``None`` where no job was ever stored (the first
        dispatch writes the key, with the registry of queues)."""
        stored, queues = await self._on([], lambda: self._layout_and_queues())
        if stored is not None:
            try:
                return int(stored)
            except ValueError:
                where = self.settings.redacted_url()
                shown = stored[:40].decode(errors="replace")
                raise CorruptQueueError(f"the layout key {self._layout_key!r} at {where} holds {shown!r}, "
                                        "not a version number") from None
        return 0 if queues else None

    async def _layout_and_queues(self) -> tuple[bytes | None, int]:
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self._layout_key)
        pipe.exists(self.queues.key)
        stored, queues = await pipe.execute()
        return stored, int(queues)

    async def _move_legacy_code(self) -> None:
        """Move shipped code that versions before the keyed store kept in ``{prefix}:code`` (a
        hash by digest) into the keyed store, once: a moved field is deleted, so a later open
        finds the hash gone."""
        legacy = code_key(self.settings.prefix)
        found = await self._on([], lambda: self.client.hgetall(legacy))
        for digest, envelope in found.items():
            await self.store_code(digest.decode() if isinstance(digest, bytes) else str(digest), envelope)
            await self._on([], functools.partial(self.client.hdel, legacy, digest))

    async def close(self) -> None:
        await self.notices.close()
        if self.connection.client is not None:
            await self._unregister()
            await self.connection.close()

    async def watch(self, job_ids: Sequence[str], notice: SettleNotice) -> Callable[[], None]:
        return await self.notices.watch(job_ids, notice)

    def default_prefetch(self, concurrency: int) -> int:
        """Half as many jobs as consumers: while one half waits for its settles, the other runs
        jobs claimed ahead, so Python and Redis work at once (see bench/RESULTS.md)."""
        return concurrency // 2

    # -- keys and scripts ----------------------------------------------------------------------
    def keys(self, queue: str) -> list[str]:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = queue_keys(self.settings.prefix, queue)
            self._encoded_keys[queue] = [k.encode() for k in keys]
            self.queues.saw(queue)
        return keys

    def _key(self, queue: str, name: str) -> str:
        return self.keys(queue)[KEY_INDEX[name]]

    def _script_keys(self, queue: str) -> list[bytes]:
        """The queue's keys, encoded once."""
        self.keys(queue)
        return self._encoded_keys[queue]

    async def _run(self, script: str, queue: str, args: Sequence[Any]) -> Any:
        try:
            return await self.connection.run_script(script, queue, self._script_keys(queue), args)
        except CorruptQueueError as exc:
            raise await self._named(exc, [queue]) from None

    async def _on(self, queues: str | Sequence[str], make: Callable[[], Awaitable[T]]) -> T:
        """Run a command on the keys of ``queues``; a damaged key is named in the error."""
        try:
            return await self.connection.call(make)
        except CorruptQueueError as exc:
            raise await self._named(exc, [queues] if isinstance(queues, str) else queues) from None

    async def _named(self, exc: CorruptQueueError, queues: Sequence[str]) -> CorruptQueueError:
        """``exc`` with the damaged keys of ``queues`` named."""
        damage = [found for queue in queues if (found := await self._damage(queue))]
        return CorruptQueueError(f"{exc}: {'; '.join(damage) or 'no key looks damaged now'}")

    async def _damage(self, queue: str) -> str:
        """Which keys of ``queue`` hold the wrong kind of value, said so the user can repair
        or delete them (``""`` if none does)."""
        keys = self.keys(queue)

        async def types() -> Any:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.type(key)
            pipe.get(keys[KEY_INDEX["seq"]])
            return await pipe.execute()

        try:
            *found, seq = await self.connection.call(types)
        except DriverError as exc:
            return f"its keys could not be checked ({exc})"
        kinds = wire.text(found)
        wrong = [f"{key} is a {kind}, not a {KEY_TYPES[name]}"
                 for name, key, kind in zip(KEY_NAMES, keys, kinds, strict=True)
                 if kind not in ("none", KEY_TYPES[name])]
        if seq is not None and not seq.lstrip(b"-").isdigit():
            wrong.append(f"{keys[KEY_INDEX['seq']]} holds {seq[:40]!r}, not a number")
        return "; ".join(wrong) + " (repair or delete these keys)" if wrong else ""

    # -- producing -----------------------------------------------------------------------------
    async def push(self, records: Sequence[JobRecord]) -> None:
        for record in records:  # built before the manager had this driver: checked here, all first
            self.check_priority(record.priority)
        chunks = [records[i : i + PUSH_CHUNK] for i in range(0, len(records), PUSH_CHUNK)]
        await (self._enqueue_each(chunks) if len(chunks) <= 1 else self.push_chunks(chunks))

    async def push_keyed(self, record: JobRecord, lock: Lock) -> str | None:
        """enqueue.lua checks and takes the lock and stores the job in one script."""
        self.check_priority(record.priority)
        await self._left()
        await self._announce([record.queue])
        value = f"{record.id}|{lock.holds_text}|{-1 if lock.expires_ms is None else lock.expires_ms}"
        held = await self._run("enqueue", record.queue, wire.enqueue_args([record], [lock.key, value]))
        return held.decode() if isinstance(held, bytes) else None

    async def schedule_states(self) -> list[ScheduleState]:
        await self._move_legacy_schedules()
        return await super().schedule_states()

    async def remove_schedule(self, schedule_id: str) -> bool:
        await self._move_legacy_schedules()
        return await super().remove_schedule(schedule_id)

    async def _move_legacy_schedules(self) -> None:
        """Move the schedules that versions before the keyed store kept in each queue's
        ``schedules`` and ``ticks`` hashes into the keyed store, once a process."""
        if self._legacy_moved:
            return
        for queue in await self._all_queues():
            specs_key, ticks_key = legacy_keys(self.settings.prefix, queue)
            specs = await self._on(queue, functools.partial(self.client.hgetall, specs_key))
            ticks = await self._on(queue, functools.partial(self.client.hgetall, ticks_key)) if specs else {}
            for schedule_id, spec in specs.items():
                sid = schedule_id.decode()
                if await self.kv_put_new(f"{SCHEDULES_KEY}{sid}", spec) and ticks.get(schedule_id):
                    slot, _, job = ticks[schedule_id].decode().partition("|")
                    fired = {"slot": int(slot), "job": job or None}
                    await self.kv_put(f"{FIRED_KEY}{sid}", json.dumps(fired).encode())
            if specs:
                await self._on(queue, functools.partial(self.client.delete, specs_key, ticks_key))
        self._legacy_moved = True

    async def push_chunks(self, chunks: Iterable[Sequence[JobRecord]]) -> None:
        await self._left()
        if self.cluster:  # no single connection pool to hold a connection from: call by call
            await self._enqueue_each(chunks)
            return
        try:
            await self.connection.send_in_order(self._enqueue_commands(chunks))
        except CorruptQueueError as exc:
            self.queues.forget_announced()
            raise await self._named(exc, self.queues.known) from None
        except BaseException:
            self.queues.forget_announced()  # an SADD sent may not have been stored
            raise

    async def _left(self) -> None:
        """Wait for a worker of this driver that was just paused or stopped to leave the
        hand-off line, so a dispatch that follows cannot hand it a job it will not run."""
        if self._leaving is not None and not self._leaving.done():
            await self._leaving

    async def _enqueue_each(self, chunks: Iterable[Sequence[JobRecord]]) -> None:
        """One enqueue script call per queue of each chunk, each awaited before the next."""
        await self._left()
        for chunk in chunks:
            by_queue = wire.by_queue(chunk)
            await self._announce(by_queue)
            for queue, queued in by_queue.items():
                await self._run("enqueue", queue, wire.enqueue_args(queued))

    async def _announce(self, queues: Iterable[str]) -> None:
        """Register queues this process has not announced yet, before any job of theirs is
        stored, so none is stored where ``get`` cannot find it."""
        new = self.queues.to_announce(queues)
        if new:
            await self.connection.call(functools.partial(self.client.set, self._layout_key,
                                                         str(self.layout.current), nx=True))
            await self.connection.call(functools.partial(self.client.sadd, self.queues.key, *new))
            self.queues.announced(new)

    def _enqueue_commands(self, chunks: Iterable[Sequence[JobRecord]]) -> Iterator[Outgoing]:
        """The commands of a streamed enqueue, each chunk built only when the one before is sent.
        A new queue is registered before its jobs are stored, so none is stored unfindable."""
        for chunk in chunks:
            by_queue = wire.by_queue(chunk)
            new = self.queues.to_announce(by_queue)
            if new:
                yield ("SET", self._layout_key, str(self.layout.current), "NX")
                yield ("SADD", self.queues.key, *new)
                self.queues.announced(new)
            for queue, queued in by_queue.items():
                yield self.connection.packed_script("EVAL", "enqueue", queue, self._script_keys(queue),
                                                    wire.enqueue_args(queued))

    # -- consuming -----------------------------------------------------------------------------
    def interrupt_waits(self) -> None:
        """Paused or stopping: waits return, and this driver leaves the hand-off line once no
        claim of it is in flight (a claim in flight may register it again)."""
        self._generation += 1
        self._interrupted = True
        if not self._reserving:
            self._leave_handoff()

    def _leave_handoff(self) -> None:
        self._interrupted = False
        if self._registered and self.client is not None:
            self._leaving = asyncio.get_running_loop().create_task(self._unregister())

    async def _unregister(self) -> None:
        """Leave the hand-off line of every queue this driver waited on (leave.lua gives back
        jobs handed off that nobody will pop). Best effort: an entry left behind expires within
        about a second, and a job handed to it is reclaimed when its lease runs out."""
        from redis.exceptions import RedisError

        queues, self._registered = self._registered, set()
        for queue in queues:
            with contextlib.suppress(RedisError, OSError, TimeoutError, DriverError):
                await asyncio.wait_for(self._run("leave", queue, [self._waiter]), 2.0)

    async def reserve(self, queues: Sequence[str], limit: int, wait_s: float,
                      free: Mapping[str, int] | None = None, runs: Runs | None = None) -> list[JobRecord]:
        self._reserving += 1
        try:
            if time.monotonic() >= self._next_lock_pass:
                await self._drop_dead_locks(queues)
            claim = _Claim("" if free is None else dumps(dict(free)), "" if runs is None else runs_json(runs))
            return await self._reserve(queues, limit, wait_s, claim)
        finally:
            self._reserving -= 1
            if self._interrupted and not self._reserving:  # paused or stopped: leave the line
                self._leave_handoff()

    async def _reserve(self, queues: Sequence[str], limit: int, wait_s: float,
                       claim: _Claim) -> list[JobRecord]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        generation = self._generation
        if wait_s > 0 and self._queue_was_empty:  # nothing was left a moment ago: wait first, so
            # no empty claim runs ahead of our settles
            handed = await self._wait_for_work(queues, wait_s, claim)
            if handed:
                self._queue_was_empty = False
                return handed
        while True:
            if generation != self._generation:  # paused or stopping while it waited: claim nothing
                return []
            claimed = await self._claim(queues, limit, wait_s, claim)
            self._queue_was_empty = len(claimed) < limit
            remaining = deadline - loop.time()
            if claimed or remaining <= 0 or generation != self._generation:
                return claimed
            handed = await self._wait_for_work(queues, remaining, claim)
            if handed:
                self._queue_was_empty = False
                return handed

    async def _claim(self, queues: Sequence[str], limit: int, wait_s: float,
                     claim: _Claim) -> list[JobRecord]:
        """Claim from each queue in turn; on the first, register for hand-off while waiting
        (unless the claim is filtered by ``Runs``: a dispatch hands off without asking what
        the waiter runs)."""
        claimed: list[JobRecord] = []
        for queue in queues:
            first = queue == queues[0] and not claim.runs
            register_ms = int(min(wait_s, MAX_WAIT_S) * 1000) + 100 if first and wait_s > 0 else 0
            if register_ms:
                self._registered.add(queue)
            # the token prefix is unique per claim; the script numbers the jobs after it
            args = [limit - len(claimed), self._lease_ms, new_token(), *self._reserve_constants,
                    self._waiter if first else "", register_ms, claim.free, claim.runs]
            rows = await self._run("reserve", queue, args)
            if queue == queues[0]:
                due_in_ms = int(rows[1])
                self._next_due_at = None if due_in_ms < 0 else loop_time() + due_in_ms / 1000
            claimed += wire.claimed_records(queue, rows, self.settings.lease_s)
            if len(claimed) >= limit:
                break
        return claimed

    async def _wait_for_work(self, queues: Sequence[str], timeout: float, claim: _Claim) -> list[JobRecord]:
        """Block on the first queue's hand-off and notify lists (no polling): returns a job
        handed off by a dispatch, or nothing once woken by a dispatch or retry, by the next
        delayed job falling due, or after at most a second (other queues, sweeps)."""
        keys = self.keys(queues[0])
        handoff = keys[KEY_INDEX["handoff"]]
        wait = min(timeout, MAX_WAIT_S)
        if self._next_due_at is not None:
            wait = min(wait, self._next_due_at - loop_time())
        wait = max(0.01, wait)
        lists = [keys[KEY_INDEX["notify"]]] if claim.runs else [handoff, keys[KEY_INDEX["notify"]]]
        popped = await self._on(queues[0], lambda: self.client.blpop(lists, timeout=wait))
        if popped is None or popped[0].decode() != handoff:
            return []
        return [wire.handed_off_record(queues[0], popped[1], self.settings.lease_s)]

    async def heartbeat(self, records: Sequence[JobRecord]) -> list[bool]:
        alive: dict[str, bool] = {}
        by_queue: dict[str, list[JobRecord]] = {}
        for record in records:
            by_queue.setdefault(record.queue, []).append(record)
        for queue, held in by_queue.items():
            args: list[Any] = [int(self.settings.lease_s * 1000)]
            for record in held:
                args += [record.id, record.token or ""]
            flags = await self._run("heartbeat", queue, args)
            alive.update({r.id: bool(f) for r, f in zip(held, flags, strict=True)})
        return [alive[r.id] for r in records]

    async def _settle(self, record: JobRecord, settlement: Settlement) -> bool:
        outcome = await self.settles.settle(record, settlement)
        if outcome == 1:
            settlement.apply(record)
            if record.keep_ms is not None and record.status in TERMINAL_STATUSES:
                await self._keep_until(record, settlement.at_ms + record.keep_ms)
        elif outcome == 2:
            settlement.stop(record)
        return outcome != 0

    async def _keep_until(self, record: JobRecord, expires_ms: int) -> None:
        """Note when a finished record with a lifetime of its own expires; pass over the
        queue's expired ones at most every ``EXPIRY_PASS_S``."""
        key = self.keys(record.queue)[KEY_INDEX["expiring"]]
        await self._on(record.queue, lambda: self.client.zadd(key, {record.id: expires_ms}))
        if time.monotonic() >= self._next_expiry_pass:
            await self.trim()

    async def _drop_dead_locks(self, queues: Sequence[str], chunks: int | None = LOCK_PASS_CHUNKS) -> None:
        """Drop the unique locks of ``queues`` that no live job holds (``unlock.lua``), in
        chunks of LOCK_CHUNK fields, each chunk one atomic step against dispatches. A pass
        looks at ``chunks`` chunks at most (``None``: the whole hash) and the next one goes on
        from there, so a queue with a million live locks costs a worker a bounded amount of
        work every LOCK_PASS_S."""
        self._next_lock_pass = time.monotonic() + LOCK_PASS_S
        for queue in queues:
            cursor, looked = self._lock_cursors.get(queue, "0"), 0
            while chunks is None or looked < chunks:
                found = await self._run("unlock", queue, [cursor, LOCK_CHUNK])
                cursor = found.decode() if isinstance(found, bytes) else str(found)
                looked += 1
                if cursor == "0":
                    break
            self._lock_cursors[queue] = cursor

    async def trim(self) -> None:
        """Retention by count and age runs in settle.lua; this forgets the finished records whose
        own ``keep_ms`` ran out (``forget.lua``, which also takes them off ``expiring``), and
        drops unique locks that no live job holds."""
        self._next_expiry_pass = time.monotonic() + EXPIRY_PASS_S
        queues = await self._all_queues()
        await self._drop_dead_locks(queues, chunks=None)
        for queue in queues:
            due = await self._on(queue, functools.partial(self.client.zrangebyscore,
                                                          self.keys(queue)[KEY_INDEX["expiring"]], "-inf",
                                                          now_ms(), start=0, num=1000))
            if due:
                await self._run("forget", queue, wire.text(due))

    # -- cancelling ----------------------------------------------------------------------------
    async def cancel(self, job_ids: Sequence[str], reason: str) -> list[str]:
        """Each job is cancelled in its own queue (found as ``get`` finds it), by cancel.lua."""
        ids = list(dict.fromkeys(job_ids))
        cancelled: set[str] = set()
        for queue, found in (await self._by_queue(ids)).items():
            for start in range(0, len(found), CANCEL_CHUNK):
                chunk = found[start : start + CANCEL_CHUNK]
                flags = await self._run("cancel", queue, [reason, *chunk])
                cancelled.update(i for i, flag in zip(chunk, flags, strict=True) if flag)
        return [job_id for job_id in ids if job_id in cancelled]

    async def check_parents(self, queue: str, parent_ids: Sequence[str]) -> None:
        """Parents must be jobs of the child's own queue: the scripts that end a parent and
        release its children touch only the keys of one queue (one Cluster slot)."""
        elsewhere = {q: ids for q, ids in (await self._by_queue(parent_ids)).items() if q != queue}
        if elsewhere:
            other, ids = next(iter(elsewhere.items()))
            raise ConfigError(f"after= names job {ids[0]} of queue {other!r}; on the redis driver a job "
                              f"waits only for jobs of its own queue ({queue!r}), whose keys share one "
                              "hash slot")

    async def _by_queue(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """The ids of each queue, for the ids that name a job."""
        async def queue_of(queue: str, chunk: Sequence[str]) -> list[str | None]:
            return [None if s is None else queue for s in await self._statuses_in(queue, chunk)]

        by_queue: dict[str, list[str]] = {}
        for job_id, queue in zip(ids, await self.queues.find(ids, queue_of, self._registered_queues),
                                 strict=True):
            if queue is not None:
                by_queue.setdefault(queue, []).append(job_id)
        return by_queue

    async def listen_aborts(self, queues: Sequence[str], notice: AbortNotice) -> Unsubscribe | None:
        listener = AbortListener(self.connection, self.settings.prefix, queues, notice)
        await listener.start()
        return listener.close

    async def update_meta(self, record: JobRecord, meta: dict[str, Any]) -> bool:
        merged = {**record.meta, **meta}
        return bool(await self._run("meta", record.queue, [record.id, record.token or "", dumps(merged)]))

    # -- inspecting ------------------------------------------------------------------------------
    async def _fetch(self, queue: str, ids: Sequence[str]) -> list[JobRecord | None]:
        if not ids:
            return []
        width, records = len(COLUMNS), []
        for start in range(0, len(ids), FETCH_CHUNK):  # short scripts: Redis serves others between
            chunk = ids[start : start + FETCH_CHUNK]
            rows = await self._run("fetch", queue, chunk)
            records += [wire.record_from_columns(queue, job_id, rows[i * width : (i + 1) * width])
                        for i, job_id in enumerate(chunk)]
        return records

    async def get(self, job_id: str) -> JobRecord | None:
        return (await self.get_many([job_id]))[0]

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """Each id is looked for in the default queue, then in the others (see redis_queues)."""
        return await self.queues.find(job_ids, self._fetch, self._registered_queues)

    async def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        return await self.queues.find(job_ids, self._statuses_in, self._registered_queues)

    async def _statuses_in(self, queue: str, job_ids: Sequence[str]) -> list[JobStatus | None]:
        found = []
        for start in range(0, len(job_ids), FETCH_CHUNK):
            found += await self._run("statuses", queue, job_ids[start : start + FETCH_CHUNK])
        return [SETTLED_STATES[w.decode()] if w else None for w in found]

    async def _registered_queues(self) -> list[str]:
        """The queue names every driver under this prefix has dispatched to; none (with a
        warning) while the registry key holds the wrong kind of value."""
        try:
            return wire.text(await self.connection.call(lambda: self.client.smembers(self.queues.key)))
        except CorruptQueueError as exc:
            logger.warning("the queue registry %s is damaged (%s): only the queues this process "
                           "used are searched; delete the key to repair it", self.queues.key, exc)
            return []

    async def _all_queues(self) -> list[str]:
        return await self.queues.everywhere(self._registered_queues)

    async def finished_counts(self, since_ms: int, bucket_ms: int) -> dict[int, tuple[int, int]]:
        """Counted in the completed and failed sets, which are scored by finish time: one
        ZCOUNT per window and status, all in one round trip."""
        queues = await self._all_queues()
        windows = min(MAX_WINDOWS, max(1, (now_ms() - since_ms) // bucket_ms + 1))

        async def run() -> Any:
            pipe = self.client.pipeline(transaction=False)
            for name in queues:
                keys = self.keys(name)
                for status in ("completed", "failed"):
                    for i in range(windows):
                        start = since_ms + i * bucket_ms
                        pipe.zcount(keys[KEY_INDEX[status]], start, f"({start + bucket_ms}")
            return await pipe.execute()

        values = iter(await self._on(queues, run))
        buckets: dict[int, tuple[int, int]] = {}
        for _ in queues:
            for failed in (False, True):
                for i in range(windows):
                    start = since_ms + i * bucket_ms
                    add_finish(buckets, start, failed, since_ms, bucket_ms, int(next(values)))
        return {i: counts for i, counts in buckets.items() if counts != (0, 0)}

    async def queue_names(self) -> list[str]:
        return sorted(await self._all_queues())

    async def jobs(self, status: JobStatus | None = None, queue: str | None = None,
                   limit: int | None = None) -> list[JobRecord]:
        """Records of ``queue``, or of every queue under the prefix (merged by creation time)."""
        if queue is not None:
            return await self._list_queue(status, queue, limit)
        records = [r for q in await self._all_queues() for r in await self._list_queue(status, q, limit)]
        records.sort(key=lambda r: r.created_ms)
        return records[-limit:] if limit else records

    async def _list_queue(self, status: JobStatus | None, queue: str,
                          limit: int | None) -> list[JobRecord]:
        keys = self.keys(queue)
        key = keys[KEY_INDEX["all" if status is None else STATUS_SETS[status]]]
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            ids = await self._on(queue, lambda: self.client.zrange(key, 0, -1))
            if status is JobStatus.QUEUED:  # priority 0 waits in the line, limited jobs in their
                line = keys[KEY_INDEX["line"]]  # lanes (see _common.lua)
                ids += await self._on(queue, lambda: self.client.lrange(line, 0, -1))
                ids += await self._run("lanes", queue, ["waiting"])
            records = [r for r in await self._fetch(queue, wire.text(ids)) if r is not None]
            records.sort(key=lambda r: r.created_ms)
            if status is JobStatus.QUEUED:  # due delayed jobs count as queued until promoted
                records += await self._due_delayed(queue)
                records.sort(key=lambda r: r.created_ms)
            return records[-limit:] if limit else records
        start = -limit if limit else 0
        ids = await self._on(queue, lambda: self.client.zrange(key, start, -1))
        records = [r for r in await self._fetch(queue, wire.text(ids)) if r is not None]
        if status is not None:
            records.sort(key=lambda r: r.created_ms)
        return [due_view(r) for r in records]

    async def _due_delayed(self, queue: str) -> list[JobRecord]:
        key = self.keys(queue)[KEY_INDEX["delayed"]]
        ids = await self._on(queue, lambda: self.client.zrangebyscore(key, "-inf", now_ms()))
        return [due_view(r) for r in await self._fetch(queue, wire.text(ids)) if r is not None]

    async def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        """Counts of ``queue``, or summed over every queue under the prefix, in one round trip."""
        queues = [queue] if queue is not None else await self._all_queues()
        per_queue = len(STATUS_SETS) + 2

        async def run() -> Any:
            pipe = self.client.pipeline(transaction=False)
            for name in queues:
                keys = self.keys(name)
                for status in JobStatus:
                    pipe.zcard(keys[KEY_INDEX[STATUS_SETS[status]]])
                pipe.llen(keys[KEY_INDEX["line"]])
                pipe.zcount(keys[KEY_INDEX["delayed"]], "-inf", now_ms())
            return await pipe.execute()

        values = await self._on(queues, run)
        counts = empty_counts()
        for name in queues:  # jobs waiting in lanes (see _common.lua)
            counts[JobStatus.QUEUED] += int(await self._run("lanes", name, ["count"]))
        for start in range(0, len(values), per_queue):
            *sets, line, due = (int(n) for n in values[start : start + per_queue])
            for status, n in zip(JobStatus, sets, strict=True):
                counts[status] += n
            counts[JobStatus.QUEUED] += line + due  # due delayed jobs count as queued
            counts[JobStatus.SCHEDULED] -= due
        return counts

    async def requeue(self, job_ids: Iterable[str]) -> int:
        """Failed jobs back to their own queues (each found as ``get`` finds it)."""
        by_queue = await self._by_queue(list(dict.fromkeys(job_ids)))
        return sum([int(await self._run("requeue", queue, found)) for queue, found in by_queue.items()])

    async def forget(self, job_ids: Sequence[str]) -> int:
        """Finished records deleted from their own queues (each found as ``get`` finds it)."""
        by_queue = await self._by_queue(list(dict.fromkeys(job_ids)))
        return sum([int(await self._run("forget", queue, found)) for queue, found in by_queue.items()])

    async def find_by_keys(self, keys: Sequence[str]) -> dict[str, JobRecord]:
        if not keys:
            return {}
        queue = self.settings.name
        index = self.keys(queue)[KEY_INDEX["keys"]]
        ids = await self._on(queue, lambda: self.client.hmget(index, list(keys)))
        pairs = [(k, i.decode()) for k, i in zip(keys, ids, strict=True) if i is not None]
        records = await self._fetch(queue, [i for _, i in pairs])
        return {k: r for (k, _), r in zip(pairs, records, strict=True) if r is not None}

    # -- shipped code --------------------------------------------------------------------------
    async def lane_use(self, queue: str, lanes: Mapping[str, LaneRule]) -> dict[str, LaneUse]:
        args: list[Any] = ["use"]
        for lane, rule in lanes.items():
            args += [lane, -1 if rule.rate is None else rule.rate.window_ms]
        values = [int(v) for v in await self._run("lanes", queue, args)]
        return {lane: LaneUse(values[2 * i], values[2 * i + 1]) for i, lane in enumerate(lanes)}

    # -- the keyed store: one string a key, its lifetime Redis's own expiry ----------------------
    async def _kv_write(self, key: str, value: bytes, ttl_s: float | None, *, only_new: bool) -> bool:
        name, px = kv_key(self.settings.prefix, key), None if ttl_s is None else max(1, int(ttl_s * 1000))
        return bool(await self._on([], lambda: self.client.set(name, value, px=px, nx=only_new)))

    async def kv_get(self, key: str) -> bytes | None:
        name = kv_key(self.settings.prefix, check_key(key))
        found = await self._on([], lambda: self.client.get(name))
        return found if isinstance(found, bytes) else None

    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        start = len(kv_key(self.settings.prefix, ""))
        pattern = kv_pattern(self.settings.prefix, check_prefix(prefix))

        async def scan() -> dict[str, bytes]:
            names = [name async for name in self.client.scan_iter(match=pattern, count=1000)]
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.get(name)
            values = await pipe.execute() if names else []
            return {(n.decode() if isinstance(n, bytes) else n)[start:]: v
                    for n, v in zip(names, values, strict=True) if isinstance(v, bytes)}

        return await self._on([], scan)

    async def kv_delete(self, key: str) -> bool:
        name = kv_key(self.settings.prefix, check_key(key))
        return bool(await self._on([], lambda: self.client.delete(name)))

    async def pause(self, queue: str) -> None:
        """The queue's own ``paused`` key (read by ``reserve.lua`` and ``enqueue.lua``, under the
        queue's hash tag as a script's keys must be on Cluster) and the keyed store's flag, which
        ``paused_queues`` lists. The queue is registered, so ``purge`` finds its key."""
        await self._announce([queue])
        key = self._key(queue, "paused")
        await self._on(queue, lambda: self.client.set(key, b"1"))
        await super().pause(queue)

    async def resume(self, queue: str) -> bool:
        key = self._key(queue, "paused")
        removed = await self._on(queue, lambda: self.client.delete(key))
        listed = await super().resume(queue)
        return bool(removed) or listed

    async def set_lane_rule(self, queue: str, name: str, rule: str) -> None:
        """The queue's own ``rules`` hash (name -> rule text), which ``reserve.lua`` reads for
        every lane of the kind."""
        await self._announce([queue])
        key = self._key(queue, "rules")
        await self._on(queue, lambda: self.client.hset(key, name, rule.encode()))
        self.wake_claims()

    async def lane_rules(self, queue: str) -> dict[str, str]:
        key = self._key(queue, "rules")
        found = await self._on(queue, lambda: self.client.hgetall(key))
        return rules_of("", {k.decode(errors="replace"): v for k, v in found.items()})

    async def purge(self) -> None:
        """Delete every queue under the prefix, the registry of them, the code store and the
        keyed store."""
        queues = await self._all_queues()
        keys = [key for queue in queues for key in self.keys(queue)]
        keys += [key for queue in queues for key in legacy_keys(self.settings.prefix, queue)]
        keys += [self.queues.key, code_key(self.settings.prefix), workers_key(self.settings.prefix),
                 self._layout_key]
        pattern = kv_pattern(self.settings.prefix, "")
        keys += [key async for key in self.client.scan_iter(match=pattern, count=1000)]
        for queue in queues:  # each lane's own keys
            for pattern in item_key_patterns(self.settings.prefix, queue):
                keys += [key async for key in self.client.scan_iter(match=pattern, count=1000)]
        await self.connection.call(lambda: self._delete(keys))
        self.queues.forget_announced()

    async def _delete(self, keys: list[str]) -> None:
        if self.connection.cluster:  # one DEL may not span slots
            for key in keys:
                await self.client.delete(key)
        else:
            await self.client.delete(*keys)


def loop_time() -> float:
    return asyncio.get_running_loop().time()
