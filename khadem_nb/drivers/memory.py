"""In-process queue: a FIFO lane per priority for ready jobs, a heap for delayed ones, a condition.

Payloads are stored as JSON text and parsed again at claim, so a job behaves the same here as
on a durable driver (and mutating an argument after dispatch changes nothing). Counts per
status are kept as numbers, and every status can be listed without walking every record (what
a live panel asks for several times a second): pending jobs from the lanes and the heap,
completed ones from the retention deque, running and failed ones from small id sets.

Nothing survives the process. Completed records beyond ``queue.retention`` are dropped oldest
first; failed records stay until retried or purged, cancelled ones until purged. A cancelled
job's id stays in its lane or heap and is skipped when reached.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import json
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from .._ids import new_token
from ..config import QueueSettings
from ..features.capabilities import Runs
from ..features.dependencies import DependencyIndex, ended_reason, place_child, stop_child, stops_child
from ..features.flow import (
    RULES_KEY,
    ClaimPlan,
    LaneRule,
    LaneUse,
    kind_of_lane,
    recent_starts,
    rule_for,
    take_in_turns,
)
from ..features.unique import Lock, lock_is_live
from ..job import (
    ACTIVE,
    CANCELLABLE_STATUSES,
    CANCELLED,
    COMPLETED,
    FAILED,
    QUEUED,
    SCHEDULED,
    WAITING,
    JobRecord,
    JobStatus,
)
from ..limits import RATE_UNITS
from ..serializer import dumps
from . import _kv, _records
from .base import (
    RELEASE,
    RETRY,
    AbortNotice,
    QueueDriver,
    Settlement,
    Unsubscribe,
    add_finish,
    empty_counts,
    retention_cutoffs,
)

# Payload texts here are this module's own ``dumps`` output, so they are parsed by the scanner
# behind ``json.loads`` without its wrappers (whitespace checks, an ``end`` check): worth more
# than 5 % of a memory-queue job end to end (see bench/RESULTS.md).
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse_own_json(text: str) -> Any:
    return _scan_json(text, 0)[0]


PENDING = (QUEUED, SCHEDULED)
HELD = (WAITING, ACTIVE, FAILED, CANCELLED)  # kept as id sets; the rest are listed from heaps/deque
FINISHED = (COMPLETED, FAILED, CANCELLED)
PASSED_OVER = 1000  # ready jobs a claim filtered by ``Runs`` parks at most before it returns
LOCK_SWEEP_MIN = 1024  # unique locks kept before the memory driver first drops dead ones


def _older(record: JobRecord, cutoff_ms: int | None) -> bool:
    return cutoff_ms is not None and (record.finished_ms or 0) < cutoff_ms


class PriorityLanes:
    """Ready job ids of one queue: a FIFO lane per priority, the highest priority taken first."""

    __slots__ = ("_lanes", "_order")

    def __init__(self) -> None:
        self._lanes: dict[int, deque[str]] = {}
        # (negated priority, its lane), ascending: the highest priority first; only non-empty
        # lanes, so many distinct priorities never slow a claim
        self._order: list[tuple[int, deque[str]]] = []

    def append(self, priority: int, job_id: str) -> None:
        lane = self._lanes.get(priority)
        if lane is None:
            lane = self._lanes[priority] = deque()
            bisect.insort(self._order, (-priority, lane), key=_first)
        lane.append(job_id)

    def popleft(self) -> str | None:
        """The next id to claim, or ``None`` when every lane is empty."""
        order = self._order
        if not order:
            return None
        negated, lane = order[0]
        job_id = lane.popleft()
        if not lane:
            del self._lanes[-negated]
            del order[0]
        return job_id

    def __iter__(self) -> Iterator[str]:
        for _, lane in self._order:
            yield from lane

    def peek(self) -> str | None:
        """The id :meth:`popleft` would return, left in place."""
        return self._order[0][1][0] if self._order else None


def _first(pair: tuple[int, deque[str]]) -> int:
    return pair[0]


class MemoryDriver(QueueDriver):
    """The default driver: one process, priority (higher first), FIFO within one, delays."""

    def __init__(self, settings: QueueSettings | str | Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        settings = self.settings
        self._records: dict[str, JobRecord] = {}
        self._counts = empty_counts()
        self._held: dict[JobStatus, dict[str, None]] = {s: {} for s in HELD}
        self._active = self._held[ACTIVE]  # ids of claimed jobs, in the order they were claimed
        self._failed = self._held[FAILED]  # ids of failed jobs, in the order they failed
        self._aborts: list[AbortNotice] = []  # workers told at once of a running job cancelled
        #: locks of unique jobs and schedule slots: key -> (job id, statuses that hold it, expiry)
        self._locks: dict[str, tuple[str, str, int | None]] = {}
        self._locks_swept_at = LOCK_SWEEP_MIN  # locks held when dead ones are next dropped
        self._kv: dict[str, tuple[bytes, int | None]] = {}  # the keyed store: value, expiry ms
        self._kv_swept_at = LOCK_SWEEP_MIN  # values held when expired ones are next dropped
        self._paused: set[str] = set()  # the queues paused (``pause``): take_ready skips them
        #: (expiry ms, id) of finished records with a ``keep_ms`` of their own, soonest first
        self._expiring: list[tuple[int, str]] = []
        self._retention = settings.retention
        self._ready: dict[str, PriorityLanes] = {}
        #: ready jobs that a claim filtered by ``Runs`` passed over: queue -> job name -> their
        #: ids; every claim that can run the name takes them before ``_ready`` (they were ahead)
        self._parked: dict[str, dict[str, PriorityLanes]] = {}
        #: ready jobs with limits (``flow``): queue -> lane -> their ids
        self._limited: dict[str, dict[str, PriorityLanes]] = {}
        #: (queue, lane) -> jobs of the lane held now, and the start times of its rate window
        self._lane_held: dict[tuple[str, str], int] = {}
        self._lane_starts: dict[tuple[str, str], deque[int]] = {}
        self._reopens_at: int | None = None  # when a lane blocked by its rate may start again
        self._deps = DependencyIndex()  # waiting jobs and the parents they wait for
        self._delayed: dict[str, list[tuple[int, int, str]]] = {}
        self._completed: deque[str] = deque()
        # the payload JSON of each claimed job: the worker gets the stored record itself with its
        # payload parsed, and the text comes back when the job settles
        self._texts: dict[str, str] = {}
        self._seq = itertools.count()
        self._condition: asyncio.Condition | None = None
        self._wake_generation = 0
        self._waiting = 0
        self._queues: set[str] = set()
        self._aging = settings.retention_age_s is not None or settings.failed_retention_age_s is not None

    def _cond(self) -> asyncio.Condition:
        if self._condition is None:
            self._condition = asyncio.Condition()
        return self._condition

    # -- counts and held sets -----------------------------------------------------------------
    def _leave(self, record_id: str, status: JobStatus) -> None:
        self._counts[status] -= 1
        if status in HELD:
            del self._held[status][record_id]

    def _enter(self, record_id: str, status: JobStatus) -> None:
        self._counts[status] += 1
        if status in HELD:
            self._held[status][record_id] = None

    def _move(self, record: JobRecord, status: JobStatus) -> None:
        self._leave(record.id, record.status)
        record.status = status
        self._enter(record.id, status)

    def _forget(self, record: JobRecord) -> None:
        self._leave(record.id, record.status)
        del self._records[record.id]

    # -- producing -----------------------------------------------------------------------------
    async def push(self, records: Sequence[JobRecord]) -> None:
        self._store_new(records)
        if self._waiting:  # a claim waits on the condition
            await self._notify(len(records))

    def _store_new(self, records: Sequence[JobRecord]) -> None:
        now = 0  # read the clock only for a record due after its creation (a delayed one)
        for record in records:  # the driver owns pushed records from here on
            record.payload = dumps(record.payload)
            if record.parents:
                self._store_child(record)
                continue
            if record.available_ms > record.created_ms and not now:
                now = self.clock()
            self._enqueue(record, None, now or record.created_ms)

    def _store_child(self, record: JobRecord) -> None:
        """Store a job with parents: waiting, or judged at once against parents that ended."""
        records = self._records
        left = place_child(record, {p: None if (r := records.get(p)) is None else r.status
                                    for p in record.parents or ()}, self.clock())
        if record.status is CANCELLED or record.status is WAITING:
            records[record.id] = record
            self._enter(record.id, record.status)
            if left:
                self._deps.add(record.id, left)
        else:
            self._enqueue(record, None)

    def _upstream_ended(self, parent: JobRecord) -> int:
        """Tell the children of a job that just ended (and, through a child it cancels, that
        child's children): each is released, cancelled, or waits on. Returns how many became
        ready."""
        released, ended, now = 0, [parent], self.clock()
        while ended:
            record = ended.pop()
            for child_id, last in self._deps.ended(record.id):
                child = self._records.get(child_id)
                if child is None or child.status is not WAITING:
                    self._deps.drop(child_id)
                elif stops_child(child, record.status):
                    self._deps.drop(child_id)
                    self._leave(child_id, WAITING)
                    stop_child(child, ended_reason(record.id, record.status), now)
                    self._enter(child_id, CANCELLED)
                    ended.append(child)
                elif last:
                    self._deps.drop(child_id)
                    self._enqueue(child, WAITING, now)
                    released += 1
        return released

    def _enqueue(self, record: JobRecord, previous: JobStatus | None, now: int | None = None) -> None:
        if record.available_ms > (self.clock() if now is None else now) and self._honours_delay:
            status = record.status = SCHEDULED
            entry = (record.available_ms, next(self._seq), record.id)
            heapq.heappush(self._delayed.setdefault(record.queue, []), entry)
            self._queues.add(record.queue)
        else:
            status = record.status = QUEUED
            lanes: PriorityLanes | None
            if record.lane is not None and self._honours_limits:
                lanes = self._limited_lane(record.queue, record.lane)
            else:
                lanes = self._ready.get(record.queue)
                if lanes is None:
                    lanes = self._lanes(record.queue)
                    self._queues.add(record.queue)
            lanes.append(record.priority, record.id)
        if previous is not None:
            self._leave(record.id, previous)
        self._records[record.id] = record
        self._counts[status] += 1  # neither pending status is kept as an id set

    def _limited_lane(self, queue: str, lane: str) -> PriorityLanes:
        self._queues.add(queue)
        return self._limited.setdefault(queue, {}).setdefault(lane, PriorityLanes())

    def _lanes(self, queue: str) -> PriorityLanes:
        lanes = self._ready.get(queue)
        if lanes is None:
            lanes = self._ready[queue] = PriorityLanes()
        return lanes

    #: whether a job waits for its ``available_ms`` (the sync driver runs it at once)
    _honours_delay: ClassVar[bool] = True
    #: whether a job waits for its lane's limits (the sync driver runs one job at a time anyway)
    _honours_limits: ClassVar[bool] = True

    # -- consuming -----------------------------------------------------------------------------
    def interrupt_waits(self) -> None:
        self._wake_generation += 1
        if self._condition is not None:
            asyncio.get_running_loop().create_task(self._notify_all())

    async def pause(self, queue: str) -> None:
        self._paused.add(queue)

    async def resume(self, queue: str) -> bool:
        if queue not in self._paused:
            return False
        self._paused.discard(queue)
        await self._notify_all()
        return True

    async def paused_queues(self) -> list[str]:
        return sorted(self._paused)

    async def _notify_all(self) -> None:
        cond = self._cond()
        async with cond:
            cond.notify_all()

    async def _notify(self, n: int) -> None:
        if not self._waiting or not n:
            return
        cond = self._cond()
        async with cond:
            cond.notify(n)

    async def reserve(self, queues: Sequence[str], limit: int, wait_s: float,
                      free: Mapping[str, int] | None = None, runs: Runs | None = None) -> list[JobRecord]:
        claimed = self.take_ready(queues, limit, free, runs)  # fast path: no lock when work is there
        if claimed or wait_s <= 0:
            return claimed
        deadline = time.monotonic() + wait_s
        generation = self._wake_generation
        cond = self._cond()
        async with cond:
            while True:
                claimed = self.take_ready(queues, limit, free, runs)
                remaining = deadline - time.monotonic()
                if claimed or remaining <= 0 or generation != self._wake_generation:
                    return claimed
                self._waiting += 1
                try:
                    await asyncio.wait_for(cond.wait(), min(remaining, self._until_next_due(queues)))
                except TimeoutError:
                    pass
                finally:
                    self._waiting -= 1

    def take_ready(self, queues: Sequence[str], limit: int,
                   free: Mapping[str, int] | None = None, runs: Runs | None = None) -> list[JobRecord]:
        claimed: list[JobRecord] = []
        now = self.clock()
        delayed, ready = self._delayed, self._ready
        self._reopens_at = None
        for queue in queues:
            if queue in self._paused:
                continue
            if delayed.get(queue):
                self._promote_due(queue, now)
            if self._limited.get(queue):
                self._take_limited(queue, now, free, limit, claimed, runs)
                if len(claimed) == limit:
                    return claimed
            if self._parked.get(queue):
                self._take_parked(queue, now, limit, claimed, runs)
            lanes = ready.get(queue)
            if lanes is not None and len(claimed) < limit:
                if runs is None:
                    self._take_any(lanes, now, limit, claimed)
                else:
                    self._take_runnable(queue, lanes, now, limit, claimed, runs)
            if len(claimed) == limit:
                return claimed
        return claimed

    def _take_any(self, lanes: PriorityLanes, now: int, limit: int, claimed: list[JobRecord]) -> None:
        records = self._records
        while (job_id := lanes.popleft()) is not None:
            record = records.get(job_id)
            if record is not None and record.status is QUEUED:  # else requeued or gone
                claimed.append(self._hand_out(record, now))
                if len(claimed) == limit:
                    return

    def _take_runnable(self, queue: str, lanes: PriorityLanes, now: int, limit: int,
                       claimed: list[JobRecord], runs: Runs) -> None:
        """Claim, in order, the ready jobs ``runs`` allows; park those it passes over (at most
        PASSED_OVER a claim), so that they never hold back the jobs behind them."""
        parked = self._parked.setdefault(queue, {})
        passed = 0
        while len(claimed) < limit and passed < PASSED_OVER and (job_id := lanes.popleft()) is not None:
            record = self._records.get(job_id)
            if record is None or record.status is not QUEUED:
                continue
            if runs.allows(record.name, record.code):
                claimed.append(self._hand_out(record, now))
            else:
                parked.setdefault(record.name, PriorityLanes()).append(record.priority, job_id)
                passed += 1

    def _take_parked(self, queue: str, now: int, limit: int, claimed: list[JobRecord],
                     runs: Runs | None) -> None:
        """Claim the parked jobs of the names ``runs`` allows (any, without it)."""
        parked = self._parked[queue]
        for name, ids in list(parked.items()):
            while len(claimed) < limit and (job_id := ids.peek()) is not None:
                record = self._records.get(job_id)
                if record is not None and record.status is QUEUED and runs is not None \
                        and not runs.allows(record.name, record.code):
                    break
                ids.popleft()
                if record is not None and record.status is QUEUED:
                    claimed.append(self._hand_out(record, now))
            if ids.peek() is None:
                del parked[name]

    def _take_limited(self, queue: str, now: int, free: Mapping[str, int] | None, limit: int,
                      claimed: list[JobRecord], runs: Runs | None = None) -> None:
        """Claim the queue's limited jobs its lanes allow now, each lane in turn and fair lanes
        a job a turn (``flow.take_in_turns``); a lane whose first job ``runs`` does not allow
        is passed over. A fair lane served goes last: the lanes' order is their turn order."""
        plan = ClaimPlan(now, {lane: n for (q, lane), n in self._lane_held.items() if q == queue},
                         lambda lane, _: self._lane_starts.get((queue, lane), ()), free)
        lanes, records = self._limited[queue], self._records

        def take(lane: str, rule: LaneRule, n: int) -> int:
            ids, got = lanes[lane], 0
            while got < n and (job_id := ids.peek()) is not None:
                record = records.get(job_id)
                if record is None or record.status is not QUEUED:  # requeued or gone
                    ids.popleft()
                    continue
                if runs is not None and not runs.allows(record.name, record.code):
                    break
                if not plan.admit(lane, rule):
                    break
                ids.popleft()
                claimed.append(self._hand_out(record, now))
                got += 1
                self._lane_held[queue, lane] = self._lane_held.get((queue, lane), 0) + 1
                if rule.rate is not None:
                    self._lane_starts.setdefault((queue, lane), deque()).append(now)
            return got

        stored = self._stored_rules(queue, lanes)
        order = [(lane, rule_for(lane, head.lane_rule, stored))
                 for lane, ids in lanes.items() if (head := self._lane_head(ids)) is not None]
        for lane in take_in_turns(order, limit - len(claimed), take, {}):
            lanes[lane] = lanes.pop(lane)
        for lane in [lane for lane, ids in lanes.items() if ids.peek() is None]:
            del lanes[lane]
        if plan.reopens_in_ms is not None:
            reopens = now + plan.reopens_in_ms
            self._reopens_at = reopens if self._reopens_at is None else min(self._reopens_at, reopens)
        self._drop_old_starts(now)

    def _lane_head(self, ids: PriorityLanes) -> JobRecord | None:
        """The first queued record of a lane, dropping the ids before it that are gone."""
        while (job_id := ids.peek()) is not None:
            record = self._records.get(job_id)
            if record is not None and record.status is QUEUED:
                return record
            ids.popleft()
        return None

    def _stored_rules(self, queue: str, lanes: Iterable[str]) -> dict[str, str]:
        """The rules stored for the job kinds of ``lanes`` (``QueueDriver.set_lane_rule``)."""
        names = {name for lane in lanes if (name := kind_of_lane(lane)) is not None}
        found = {name: self._kv_live(f"{RULES_KEY}{queue}/{name}") for name in names}
        return {name: value.decode(errors="replace") for name, value in found.items() if value is not None}

    def _drop_old_starts(self, now: int) -> None:
        """Forget starts older than the longest rate window (an hour)."""
        for key, starts in list(self._lane_starts.items()):
            while starts and starts[0] <= now - RATE_UNITS["h"]:
                starts.popleft()
            if not starts:
                del self._lane_starts[key]

    def _let_go(self, record: JobRecord) -> bool:
        """A limited job is no longer held: its lane has room again. Whether it had a lane."""
        if record.lane is None:
            return False
        key = (record.queue, record.lane)
        held = self._lane_held.get(key, 0) - 1
        if held > 0:
            self._lane_held[key] = held
        else:
            self._lane_held.pop(key, None)
        return True

    def _hand_out(self, record: JobRecord, now: int) -> JobRecord:
        """Claim a QUEUED record: the stored record itself, its payload parsed; its JSON text
        is kept aside until it settles."""
        counts = self._counts
        counts[QUEUED] -= 1
        counts[ACTIVE] += 1
        self._active[record.id] = None
        record.status = ACTIVE  # as drivers.base.claim, without a lease
        record.attempt += 1
        record.started_ms = now
        record.finished_ms = None
        record.token = new_token()
        text = self._texts[record.id] = record.payload
        record.payload = _parse_own_json(text)
        return record

    def _promote_due(self, queue: str, now: int) -> None:
        delayed = self._delayed.get(queue)
        while delayed and delayed[0][0] <= now:
            record = self._records.get(heapq.heappop(delayed)[2])
            if record is not None and record.status is SCHEDULED:
                self._enqueue(record, SCHEDULED, now)

    def _until_next_due(self, queues: Sequence[str]) -> float:
        due = [self._delayed[q][0][0] for q in queues if self._delayed.get(q)]
        if self._reopens_at is not None:
            due.append(self._reopens_at)
        return max(0.001, (min(due) - self.clock()) / 1000) if due else 3600.0

    async def _settle(self, record: JobRecord, settlement: Settlement) -> bool:
        job_id = record.id
        stored = self._records.get(job_id)
        if job_id not in self._active or stored is None or stored.token != record.token:
            return self._stop(record, stored, settlement)
        settlement.apply(stored)  # the worker usually holds the stored record itself
        if stored is not record:
            settlement.apply(record)
        stored.payload = self._texts.pop(job_id)  # frozen again: the JSON text
        freed = stored.lane is not None and self._let_go(stored)
        if settlement.verb is RETRY or settlement.verb is RELEASE:
            self._enqueue(stored, ACTIVE)
            await self._notify(1)
            return True
        del self._active[job_id]
        status = stored.status
        counts = self._counts
        counts[ACTIVE] -= 1
        counts[status] += 1
        # a lane slot freed, and children released by this end, wake waiting claims
        woken = freed + (self._upstream_ended(stored) if job_id in self._deps.children else 0)
        if woken:
            await self._notify(woken)
        if stored.keep_ms is not None:
            heapq.heappush(self._expiring, (settlement.at_ms + stored.keep_ms, job_id))
        if self._expiring:
            self._expire()
        if status is COMPLETED:
            self._completed.append(job_id)
            if len(self._completed) > self._retention:
                self._trim_completed()
        else:
            self._failed[job_id] = None
        if self._aging or (self._failed and self.settings.failed_retention is not None):
            self._trim()
        return True

    def _expire(self) -> None:
        """Forget the finished records whose own ``keep_ms`` has run out."""
        now, expiring, records = self.clock(), self._expiring, self._records
        while expiring and expiring[0][0] <= now:
            record = records.get(heapq.heappop(expiring)[1])
            if record is not None and record.status in FINISHED:
                self._forget(record)

    async def trim(self) -> None:
        self._expire()
        self._trim_completed()
        self._trim()

    def _stop(self, record: JobRecord, stored: JobRecord | None, settlement: Settlement) -> bool:
        """The holder's settle of a job cancelled while it ran (see ``QueueDriver._settle``)."""
        if stored is None or stored.status is not CANCELLED or stored.token is None \
                or stored.token != record.token:
            return False
        stored.meta.update(record.meta)
        settlement.stop(stored)
        if stored is not record:
            settlement.stop(record)
        stored.payload = self._texts.pop(record.id, stored.payload)
        return True

    # -- cancelling ----------------------------------------------------------------------------
    async def cancel(self, job_ids: Sequence[str], reason: str) -> list[str]:
        now, cancelled, running, released = self.clock(), [], [], 0
        for job_id in job_ids:
            stored = self._records.get(job_id)
            if stored is None or stored.status not in CANCELLABLE_STATUSES:
                continue
            self._leave(job_id, stored.status)
            was = _records.cancel(stored, now, reason)
            if was is ACTIVE:
                running.append(job_id)
                self._let_go(stored)  # its lane's slot is free at once
            elif was is WAITING:
                self._deps.drop(job_id)
            self._enter(job_id, CANCELLED)
            cancelled.append(job_id)
            released += self._upstream_ended(stored)
        await self._notify(released)
        for job_id in running:
            for notice in list(self._aborts):
                notice(job_id)
        return cancelled

    async def listen_aborts(self, queues: Sequence[str], notice: AbortNotice) -> Unsubscribe | None:
        self._aborts.append(notice)

        async def unsubscribe() -> None:
            if notice in self._aborts:
                self._aborts.remove(notice)

        return unsubscribe

    def _trim_completed(self) -> None:
        """Drop the oldest completed records beyond ``queue.retention`` (the deque of ids in
        the order they finished may hold ids already gone)."""
        completed, records = self._completed, self._records
        while len(completed) > self._retention:
            old = records.get(completed.popleft())
            if old is not None and old.status is COMPLETED:
                del records[old.id]
                self._counts[COMPLETED] -= 1

    def _trim(self) -> None:
        """Apply the rest of retention: completed records by age, failed ones by count and age
        in the order they failed (their id set)."""
        completed_before, failed_before = retention_cutoffs(self.settings) if self._aging else (None, None)
        completed, records = self._completed, self._records
        while completed_before is not None and completed:
            old = records.get(completed[0])
            if old is not None and old.status is COMPLETED and not _older(old, completed_before):
                break
            completed.popleft()
            if old is not None and old.status is COMPLETED:
                self._forget(old)
        failed, keep = self._failed, self.settings.failed_retention
        while failed and ((keep is not None and len(failed) > keep) or failed_before is not None):
            old = records[next(iter(failed))]
            if (keep is not None and len(failed) > keep) or _older(old, failed_before):
                self._forget(old)
            else:
                break

    async def update_meta(self, record: JobRecord, meta: dict[str, Any]) -> bool:
        stored = self._records.get(record.id)
        if stored is None or stored.token != record.token:
            return False
        stored.meta.update(meta)
        return True

    # -- inspecting ----------------------------------------------------------------------------
    async def get(self, job_id: str) -> JobRecord | None:
        stored = self._records.get(job_id)
        return None if stored is None else self._view(stored)

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        return [None if (r := self._records.get(i)) is None else self._view(r) for i in job_ids]

    async def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        records = self._records
        return [None if (r := records.get(i)) is None else r.status for i in job_ids]

    def _view(self, stored: JobRecord) -> JobRecord:
        """A copy of a stored record for readers, its payload parsed."""
        view = stored.copy()
        view.payload = _parse_own_json(self._texts.get(stored.id, stored.payload))
        if view.status is SCHEDULED and view.available_ms <= self.clock():
            view.status = QUEUED
        return view

    def _candidates(self, status: JobStatus | None) -> Iterator[JobRecord]:
        if status is None:
            yield from self._records.values()
            return
        wanted = PENDING if status in PENDING else (status,)
        records = self._records
        stored = (r for i in dict.fromkeys(self._ids_of(status))
                  if (r := records.get(i)) is not None and r.status in wanted)
        yield from sorted(stored, key=lambda r: r.created_ms)

    def _ids_of(self, status: JobStatus) -> Iterable[str]:
        """Ids that may hold ``status`` (callers check): heaps, the completed deque, held sets."""
        if status in HELD:
            return self._held[status]
        if status is COMPLETED:
            return self._completed
        limited = (i for lanes in self._limited.values() for ids in lanes.values() for i in ids)
        parked = (i for names in self._parked.values() for ids in names.values() for i in ids)
        ready = itertools.chain(itertools.chain.from_iterable(self._ready.values()), limited, parked)
        delayed = (entry[2] for heap in self._delayed.values() for entry in heap)
        return itertools.chain(ready, delayed)

    async def jobs(self, status: JobStatus | None = None, queue: str | None = None,
                   limit: int | None = None) -> list[JobRecord]:
        if limit:
            return self._newest(status, queue, limit)
        stored = [r for r in self._candidates(status) if queue is None or r.queue == queue]
        return [v for v in map(self._view, stored) if status is None or v.status is status]

    def _newest(self, status: JobStatus | None, queue: str | None, limit: int) -> list[JobRecord]:
        """The newest ``limit`` records of ``status`` (and ``queue``), oldest first, read from the
        newest end of the records and no further than the last record whose stored status could
        match (the status counts say how many there are), so a panel asking for the 100 newest
        queued jobs of a 300,000-job queue reads about 100 records, not 300,000."""
        wanted = None if status is None else (PENDING if status in PENDING else (status,))
        left = len(self._records) if wanted is None else sum(self._counts[s] for s in wanted)
        now, found = self.clock(), list[JobRecord]()
        for record in reversed(self._records.values()):
            if left <= 0 or len(found) >= limit:
                break
            if wanted is not None and record.status not in wanted:
                continue
            left -= 1
            seen = QUEUED if record.status is SCHEDULED and record.available_ms <= now else record.status
            if (status is None or seen is status) and (queue is None or record.queue == queue):
                found.append(record)
        return [self._view(r) for r in sorted(found, key=lambda r: r.created_ms)]

    async def finished_counts(self, since_ms: int, bucket_ms: int) -> dict[int, tuple[int, int]]:
        buckets: dict[int, tuple[int, int]] = {}
        records = self._records
        for ids, failed in ((self._completed, False), (self._failed, True)):
            for job_id in ids:
                record = records.get(job_id)
                if record is not None and record.status is (FAILED if failed else COMPLETED):
                    add_finish(buckets, record.finished_ms, failed, since_ms, bucket_ms)
        return buckets

    async def queue_names(self) -> list[str]:
        return sorted({record.queue for record in self._records.values()})

    async def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        counts = empty_counts()
        if queue is not None and self._queues == {queue}:
            queue = None  # one queue in use: the global status index answers in O(1)
        if queue is None:
            counts.update(self._counts)
        else:
            for record in self._records.values():
                if record.queue == queue:
                    counts[record.status] += 1
        now = self.clock()
        scheduled = (self._records[e[2]] for heap in self._delayed.values() for e in heap)
        due = sum(1 for r in scheduled if r.status is SCHEDULED
                  and r.available_ms <= now and queue in (None, r.queue))
        counts[SCHEDULED] -= due
        counts[QUEUED] += due
        return counts

    async def requeue(self, job_ids: Iterable[str]) -> int:
        count = 0
        for job_id in job_ids:
            stored = self._records.get(job_id)
            if stored is not None and stored.status is FAILED:
                stored.attempt = 0
                stored.reclaims = 0
                stored.available_ms = self.clock()
                stored.finished_ms = None
                self._enqueue(stored, FAILED)
                count += 1
        await self._notify(count)
        return count

    async def forget(self, job_ids: Sequence[str]) -> int:
        count = 0
        for job_id in dict.fromkeys(job_ids):
            stored = self._records.get(job_id)
            if stored is not None and stored.status in FINISHED:
                self._forget(stored)  # an id left in the completed deque is skipped when reached
                count += 1
        return count

    async def push_keyed(self, record: JobRecord, lock: Lock) -> str | None:
        held = self._locks.get(lock.key)
        if held is not None:
            holder, holds, expires = held
            stored = self._records.get(holder)
            if lock_is_live(holds, None if stored is None else stored.status, expires, self.clock()):
                return holder
        self._locks[lock.key] = (record.id, lock.holds_text, lock.expires_ms)
        if len(self._locks) >= self._locks_swept_at:
            self._drop_dead_locks()
        await self.push([record])
        return None

    def _drop_dead_locks(self) -> None:
        """Forget the locks no live job holds, once the locks have doubled since the last time:
        amortised O(1) a unique dispatch, and never more locks than twice the live ones."""
        now = self.clock()
        for key, (holder, holds, expires) in list(self._locks.items()):
            stored = self._records.get(holder)
            if not lock_is_live(holds, None if stored is None else stored.status, expires, now):
                del self._locks[key]
        self._locks_swept_at = max(LOCK_SWEEP_MIN, 2 * len(self._locks))

    async def lane_use(self, queue: str, lanes: Mapping[str, LaneRule]) -> dict[str, LaneUse]:
        now = self.clock()
        return {lane: LaneUse(self._lane_held.get((queue, lane), 0),
                              recent_starts(self._lane_starts.get((queue, lane), ()), rule, now))
                for lane, rule in lanes.items()}

    # -- the keyed store -----------------------------------------------------------------------
    async def _kv_write(self, key: str, value: bytes, ttl_s: float | None, *, only_new: bool) -> bool:
        if only_new and self._kv_live(key) is not None:
            return False
        self._kv_set(key, value, _kv.expiry(self.clock(), ttl_s))
        return True

    async def kv_get(self, key: str) -> bytes | None:
        return self._kv_live(_kv.check_key(key))

    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        _kv.check_prefix(prefix)
        found = {}
        for key in [k for k in self._kv if k.startswith(prefix)]:
            value = self._kv_live(key)
            if value is not None:
                found[key] = value
        return found

    async def kv_delete(self, key: str) -> bool:
        found = self._kv_live(_kv.check_key(key))
        self._kv.pop(key, None)
        return found is not None

    def _kv_set(self, key: str, value: bytes, expires_ms: int | None) -> None:
        self._kv[key] = (value, expires_ms)
        if len(self._kv) >= self._kv_swept_at:  # amortised: expired values never pile up
            for stale in [k for k, (_, expires) in self._kv.items() if not _kv.live(expires, self.clock())]:
                del self._kv[stale]
            self._kv_swept_at = max(LOCK_SWEEP_MIN, 2 * len(self._kv))

    def _kv_live(self, key: str) -> bytes | None:
        """The value under ``key`` while it lives; an expired one is dropped."""
        entry = self._kv.get(key)
        if entry is None:
            return None
        if not _kv.live(entry[1], self.clock()):
            del self._kv[key]
            return None
        return entry[0]

    async def purge(self) -> None:
        self._kv.clear()
        self._locks.clear()
        self._deps.clear()
        self._expiring.clear()
        self._queues.clear()
        self._records.clear()
        self._counts = empty_counts()
        for ids in self._held.values():
            ids.clear()
        self._ready.clear()
        self._parked.clear()
        self._limited.clear()
        self._lane_held.clear()
        self._lane_starts.clear()
        self._delayed.clear()
        self._completed.clear()
        self._texts.clear()
