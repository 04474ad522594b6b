"""The abstract driver every storage implements.

The public settles (``complete``, ``fail``, ``retry``, ``release``) each build one
:class:`Settlement` that names its verb, and hand it to the one primitive each driver
implements, ``_settle``; the field changes of every verb are made in one place,
:meth:`Settlement.apply`. Every write after a claim is fenced by the claim's token: a driver
refuses it when the stored token differs (the lease was lost and the job claimed again), and
the refusal is counted in ``stale_acks``.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from .. import limits
from .._ids import new_token
from .._time import now_ms
from ..config import QueueSettings, parse_config
from ..errors import ConfigError
from ..features import search
from ..features.capabilities import Runs
from ..features.flow import RULES_KEY, LaneRule, LaneUse
from ..features.resources import OFFER_TTL_S, Offer
from ..features.schedules import FIRE, STALE, Schedule, ScheduleState, fire_verdict
from ..features.search import JobPage, JobQuery
from ..features.unique import Lock
from ..job import ACTIVE, CANCELLED, COMPLETED, FAILED, QUEUED, SCHEDULED, JobRecord, JobStatus
from ..limits import PRIORITY_RANGE
from ._kv import MAX_KEY, check_key, check_ttl, check_value, rules_of
from ._layout import Layout

OFFERS_KEY = "offers/"  # the keyed store's prefix of workers' resource offers
CODE_KEY = "code/"  # the keyed store's prefix of shipped code envelopes, by digest
CODE_DIGEST = re.compile(r"[0-9a-f]{32}\Z")  # what a code fingerprint looks like
SCHEDULES_KEY = "schedules/"  # the keyed store's prefix of schedule definitions, by id
FIRED_KEY = "fired/"  # and of each schedule's last fired slot and its job (JSON), by id

logger = logging.getLogger(__name__)


class _NoResult:
    def __repr__(self) -> str:
        return "NO_RESULT"


#: what a settle notice carries as the result when it carries none (the record has it)
NO_RESULT: Any = _NoResult()
#: told of a settle: the job's id, its new status if known, and its (encoded) result if carried
SettleNotice = Callable[[str, JobStatus | None, Any], None]
#: told that a job this process may hold was cancelled: the job's id
AbortNotice = Callable[[str], None]
#: stops an abort subscription
Unsubscribe = Callable[[], Awaitable[None]]

LEASE_LOST_ERROR = "lease expired {n} time(s): the worker holding it died or stalled; giving up"


class Verb(str, Enum):
    """What a settle does to a held job; drivers act on the verb, never on field values."""

    COMPLETE = "complete"  # finished: its result is stored
    FAIL = "fail"  # failed for good: kept with its error, retryable by hand
    RETRY = "retry"  # an attempt failed: back to the queue after a delay, its error kept
    RELEASE = "release"  # given back (a worker stopping, a snooze): the attempt does not count

    def __str__(self) -> str:
        return self.value


PAUSED_PREFIX = "paused/"  # the keyed store's flag of a paused queue (``pause``)
COMPLETE, FAIL, RETRY, RELEASE = Verb.COMPLETE, Verb.FAIL, Verb.RETRY, Verb.RELEASE


@dataclass(slots=True)
class Settlement:
    """One settle of a held job: its verb, when it happened, and what it carries."""

    verb: Verb
    at_ms: int
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    delay_s: float = 0.0
    failure: str | None = None  # the kind of a failed attempt (FAIL, RETRY)

    @property
    def delay_ms(self) -> int:
        return int(self.delay_s * 1000) if self.verb is RETRY or self.verb is RELEASE else 0

    def apply(self, record: JobRecord) -> None:
        """Make this settle's field changes on ``record``: the one place they are made."""
        verb = self.verb
        record.token = record.lease_ms = None
        if verb is COMPLETE:
            record.status = COMPLETED
            record.result = self.result
            record.finished_ms = self.at_ms
            record.error = record.traceback = record.failure = None
        elif verb is FAIL:
            record.status = FAILED
            record.finished_ms = self.at_ms
            record.error, record.traceback, record.failure = self.error, self.traceback, self.failure
        elif verb is RETRY:
            record.status = SCHEDULED if self.delay_s > 0 else QUEUED
            record.available_ms = self.at_ms + self.delay_ms
            record.started_ms = record.finished_ms = None
            record.error, record.traceback, record.failure = self.error, self.traceback, self.failure
        else:
            record.status = SCHEDULED if self.delay_s > 0 else QUEUED
            record.attempt = max(0, record.attempt - 1)
            record.available_ms = self.at_ms + self.delay_ms
            record.started_ms = None

    def stop(self, record: JobRecord) -> None:
        """What any settle by its holder does to a job cancelled while it ran: the job stays
        cancelled (its error says why), its result or error is dropped, and it records when it
        really stopped."""
        record.status = CANCELLED
        record.token = record.lease_ms = None
        record.finished_ms = self.at_ms


class QueueDriver(ABC):
    """Storage for job records, with claim (reserve) and settle operations."""

    #: jobs run inside ``dispatch`` (the sync driver)
    runs_at_dispatch: ClassVar[bool] = False
    #: claims carry a lease that the worker must renew with ``heartbeat``
    uses_leases: ClassVar[bool] = False
    #: priorities this driver orders, ``[-max_priority, max_priority]``; checked at dispatch
    max_priority: ClassVar[int] = PRIORITY_RANGE[1]
    #: the storage layout versions it writes and works on (``_layout``); 0 where it stores none
    layout: ClassVar[Layout] = Layout(0, 0)
    #: ``queue.auto_migrate``'s default: whether opening may upgrade an older layout
    auto_migrates: ClassVar[bool] = True

    def __init__(self, settings: QueueSettings | str | Mapping[str, Any] | None = None) -> None:
        """``settings`` takes what ``QueueManager`` takes: a queue URL, a config dict with a
        ``queue`` section, ``QueueSettings``, or ``None`` for the defaults."""
        self.settings = parse_config(settings)
        self.stale_acks = 0
        #: the time settles and claims read, in ms since the epoch: the wall clock, or a
        #: test's virtual clock (``khadem_nb.testing``)
        self.clock: Callable[[], int] = now_ms
        #: the layout versions of the last ``open`` that created or upgraded the storage: (found,
        #: now), found ``None`` for a new storage; ``None`` when it found the layout as it is
        self.layout_change: tuple[int | None, int] | None = None

    def check_priority(self, priority: Any) -> int:
        """``priority`` as an int, or ``ConfigError`` if this driver cannot order it."""
        try:
            return limits.priority(priority, self.max_priority)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (the {self.settings.driver!r} driver)") from None

    def default_prefetch(self, concurrency: int) -> int:
        """Jobs a worker claims ahead of its free consumers when not told otherwise.

        None here: in one process a prefetched job would only show as running while it waits.
        Drivers whose claims cross a network prefetch so claiming overlaps running.
        """
        return 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect or create storage; raise a clear error naming the location if it is bad.
        An older layout is upgraded where ``auto_migrate`` allows (``_layout.plan``)."""

    @property
    def auto_migrate(self) -> bool:
        """Whether opening may upgrade the storage's layout: ``queue.auto_migrate``, else the
        driver's default."""
        setting = self.settings.auto_migrate
        return self.auto_migrates if setting is None else setting

    async def layout_statements(self) -> list[str]:
        """The statements ``khadem-nb migrate`` would run, for a DBA to read or run by hand;
        ``ConfigError`` on a driver whose layout is not SQL."""
        raise ConfigError(f"the {self.settings.driver} driver's layout is not SQL: run "
                          "`khadem-nb migrate` without --sql")

    async def close(self) -> None:
        """Release connections and files."""

    def interrupt_waits(self) -> None:
        """Make every ``reserve`` that is waiting for work return early (used on stop)."""

    # -- producing ---------------------------------------------------------------------------
    @abstractmethod
    async def push(self, records: Sequence[JobRecord]) -> None:
        """Store new records (QUEUED or SCHEDULED) in one go."""

    async def push_in(self, connection: Any, records: Sequence[JobRecord]) -> None:
        """Store new records inside the application's own open transaction on ``connection``
        (PostgreSQL); other drivers have no such transaction and refuse."""
        raise ConfigError(f"dispatch(connection=...) needs the postgres driver; the {self.settings.driver!r} "
                          "driver stores jobs on its own")

    async def push_chunks(self, chunks: Iterable[Sequence[JobRecord]]) -> None:
        """Store chunks of new records, in order.

        Here they are gathered into one ``push``, which stays all-or-nothing where ``push`` is
        (SQLite: one transaction). A driver that can store one chunk while the next is being
        built (Redis) takes the next chunk from ``chunks`` only once the one before is sent.
        """
        await self.push([record for chunk in chunks for record in chunk])

    async def check_parents(self, queue: str, parent_ids: Sequence[str]) -> None:
        """Refuse, with a ``ConfigError`` naming why, parents (stored here) that a job of
        ``queue`` cannot wait for on this driver; every parent will do here."""

    # -- consuming ---------------------------------------------------------------------------
    @abstractmethod
    async def reserve(self, queues: Sequence[str], limit: int, wait_s: float,
                      free: Mapping[str, int] | None = None, runs: Runs | None = None) -> list[JobRecord]:
        """Claim up to ``limit`` due jobs, the first queue that has any first.

        Claimed records come back ACTIVE with a fresh ``token``, ``attempt`` incremented and
        ``started_ms`` set. Waits up to ``wait_s`` seconds for work, without busy polling where
        the storage allows it. Expired leases are reclaimed here (or by a sweep).

        Jobs with limits (``record.lane``) are claimed only as their lane's rule allows at this
        moment, counted across every process (``flow``), and before the others of their queue;
        ``free`` is the claiming worker's free resource units: a job that needs more is left.
        ``runs``: the jobs the claiming worker can run (``features.capabilities``); the others
        are left for workers that can, and do not hold back the jobs behind them. ``None``: it
        runs any.
        """

    def take_ready(self, queues: Sequence[str], limit: int,
                   free: Mapping[str, int] | None = None, runs: Runs | None = None) -> list[JobRecord]:
        """Claim, as :meth:`reserve` would, jobs this process has at hand, without waiting and
        without I/O; ``[]`` where a claim needs I/O (every durable driver) or nothing is at
        hand. The one fast branch of the interface: a lone consumer on an in-process queue
        claims through it without a coroutine (see bench/RESULTS.md)."""
        return []

    async def heartbeat(self, records: Sequence[JobRecord]) -> list[bool]:
        """Extend the leases of held records; ``False`` where the lease was lost."""
        return [True for _ in records]

    async def complete(self, record: JobRecord, result: Any) -> bool:
        """Settle a held job as completed with its (encoded) ``result``."""
        if await self._settle(record, Settlement(COMPLETE, self.clock(), result)):  # the hottest settle
            return True
        self.stale_acks += 1
        return False

    async def fail(self, record: JobRecord, error: str, traceback: str | None,
                   failure: str | None = "raised") -> bool:
        """Settle a held job as failed for good, keeping its error and the kind of failure."""
        settlement = Settlement(FAIL, self.clock(), error=error, traceback=traceback, failure=failure)
        return self._counted(await self._settle(record, settlement))

    async def retry(self, record: JobRecord, delay_s: float, error: str, traceback: str | None,
                    failure: str | None = "raised") -> bool:
        """Put a failed attempt back, due after ``delay_s``; the error is kept as the last one."""
        settlement = Settlement(RETRY, self.clock(), error=error, traceback=traceback, delay_s=delay_s,
                                failure=failure)
        return self._counted(await self._settle(record, settlement))

    async def release(self, record: JobRecord, delay_s: float = 0.0) -> bool:
        """Give a claimed job back (a worker stopping, a job snoozing for ``delay_s``): the
        attempt does not count."""
        return self._counted(await self._settle(record, Settlement(RELEASE, self.clock(), delay_s=delay_s)))

    def _counted(self, settled: bool) -> bool:
        if not settled:
            self.stale_acks += 1
        return settled

    @abstractmethod
    async def _settle(self, record: JobRecord, settlement: Settlement) -> bool:
        """Make ``settlement`` happen to the stored job if it is ACTIVE under ``record.token``,
        and to ``record`` itself (``settlement.apply``); report whether it was. A job cancelled
        while held under that token is stopped instead (``settlement.stop``, on both), which
        also reports ``True``: the caller sees ``record.status`` CANCELLED. A job no longer held
        under that token (its lease was lost and it was claimed again, or it was settled
        already) is left exactly as it is, and so is ``record``."""

    # -- cancelling --------------------------------------------------------------------------
    @abstractmethod
    async def cancel(self, job_ids: Sequence[str], reason: str) -> list[str]:
        """Cancel the jobs among ``job_ids`` that are QUEUED, SCHEDULED or ACTIVE; return their
        ids in the order given. Each is one atomic change against claims: a pending job becomes
        CANCELLED and never starts; an ACTIVE one becomes CANCELLED at once, keeps its token
        until its holder stops it (any settle of the holder then stops it, see ``_settle``),
        and its holder is told (``listen_aborts``, or ``aborted`` when it polls). The error of
        each says ``reason`` and the status it was cancelled in (``job.cancel_error``). Jobs
        finished, cancelled already or missing are left as they are."""

    async def listen_aborts(self, queues: Sequence[str], notice: AbortNotice) -> Unsubscribe | None:
        """Call ``notice(id)`` whenever a running job of ``queues`` is cancelled, by this process
        or another; returns how to stop listening, or ``None`` where this driver cannot tell
        (the worker then polls :meth:`aborted`)."""
        return None

    async def aborted(self, records: Sequence[JobRecord]) -> list[str]:
        """The ids among held ``records`` whose jobs were cancelled."""
        statuses = await self.statuses([r.id for r in records])
        return [r.id for r, status in zip(records, statuses, strict=True) if status is CANCELLED]

    # -- flow control ------------------------------------------------------------------------
    @abstractmethod
    async def lane_use(self, queue: str, lanes: Mapping[str, LaneRule]) -> dict[str, LaneUse]:
        """How much of each of ``queue``'s ``lanes`` is in use now: its jobs held under a live
        lease, and its starts within its rate's window (``flow``)."""

    async def offer(self, worker: str, offered: Mapping[str, int], free: Mapping[str, int]) -> None:
        """Tell that ``worker`` offers ``offered`` resource units, ``free`` of them now; an
        empty ``offered`` withdraws its offer (it stops). An offer lives OFFER_TTL_S in the
        keyed store (``offers/<worker>``), so a worker that died drops out by itself."""
        key = f"{OFFERS_KEY}{worker}"
        if not offered:
            await self.kv_delete(key)
            return
        told = {"offered": dict(offered), "free": dict(free), "seen": self.clock()}
        await self.kv_put(key, json.dumps(told).encode(), ttl_s=OFFER_TTL_S)

    async def offers(self) -> list[Offer]:
        """The live offers of workers with resources, by worker name (a damaged one is left out)."""
        found = []
        for key, value in (await self.kv_scan(OFFERS_KEY)).items():
            try:
                told = json.loads(value)
                found.append(Offer(key[len(OFFERS_KEY):], dict(told["offered"]), dict(told["free"]),
                                   int(told["seen"])))
            except (ValueError, TypeError, KeyError):
                continue
        return sorted(found, key=lambda offer: offer.worker)

    # -- schedules ---------------------------------------------------------------------------
    # A schedule lives in the keyed store: its definition under ``schedules/<id>``, its last
    # fired slot and that slot's job under ``fired/<id>`` (JSON). A slot's job is stored with
    # the slot's lock (``Schedule.slot_lock``) by ``push_keyed``: that one atomic step is what
    # makes a slot fire once across every worker.
    async def save_schedule(self, schedule: Schedule) -> None:
        """Store ``schedule`` by its id, replacing one of the same id (its last fired slot is
        kept, so an unchanged schedule saved again by every process start fires on)."""
        await self.kv_put(f"{SCHEDULES_KEY}{schedule.id}", schedule.text().encode())

    async def schedule_states(self) -> list[ScheduleState]:
        """Every stored schedule with its last fired slot and that slot's job, by id; one whose
        definition does not read is left out, with a warning."""
        fired = await self.kv_scan(FIRED_KEY)
        states = []
        for key, text in sorted((await self.kv_scan(SCHEDULES_KEY)).items()):
            try:
                schedule = Schedule.from_text(text)
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("the stored schedule %r cannot be read (%r); it is left out", key, exc)
                continue
            states.append(ScheduleState(schedule, *_fired(fired.get(f"{FIRED_KEY}{schedule.id}"))))
        return states

    async def remove_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; whether there was one. Jobs it stored stay as they are."""
        await self.kv_delete(f"{FIRED_KEY}{schedule_id}")
        return await self.kv_delete(f"{SCHEDULES_KEY}{schedule_id}")

    async def fire(self, schedule: Schedule, slot_ms: int, record: JobRecord) -> bool:
        """Store ``record``, the job of one slot of ``schedule``, with the slot's lock, unless the
        schedule's last fired slot is that one or later, or the lock is taken (``False``:
        another worker fired it). With ``overlap="skip"`` a slot whose previous job is still
        pending or running is recorded as fired and stores nothing (``False``). A schedule
        removed by the time its slot is offered fires nothing."""
        if await self.kv_get(f"{SCHEDULES_KEY}{schedule.id}") is None:
            return False
        last_slot, last_job = await self._fired_state(schedule.id)
        status = None
        if schedule.overlap == "skip" and last_job is not None:
            status = (await self.statuses([last_job]))[0]
        verdict = fire_verdict(last_slot, status, slot_ms, schedule.overlap)
        if verdict == STALE:
            return False
        if verdict == FIRE:
            if await self.push_keyed(record, schedule.slot_lock(slot_ms, self.clock())) is not None:
                return False
            last_job = record.id
        recorded, _ = await self._fired_state(schedule.id)
        if recorded is None or recorded < slot_ms:  # a later slot recorded meanwhile stays
            fired = {"slot": slot_ms, "job": last_job}
            await self.kv_put(f"{FIRED_KEY}{schedule.id}", json.dumps(fired).encode())
        return verdict == FIRE

    async def _fired_state(self, schedule_id: str) -> tuple[int | None, str | None]:
        return _fired(await self.kv_get(f"{FIRED_KEY}{schedule_id}"))

    # -- queue-wide pause ----------------------------------------------------------------------
    # A paused queue's jobs are not claimed by any worker, wherever it runs: the flag is the
    # keyed store's ``paused/<queue>``, read inside each driver's claim (its transaction, its
    # Lua script, its lock), so no claim that starts after ``pause`` returns takes a job.
    async def pause(self, queue: str) -> None:
        """Stop every claim of ``queue``'s jobs until ``resume``."""
        await self.kv_put(f"{PAUSED_PREFIX}{queue}", b"1")

    async def resume(self, queue: str) -> bool:
        """Let ``queue``'s jobs be claimed again; whether it was paused."""
        resumed = await self.kv_delete(f"{PAUSED_PREFIX}{queue}")
        if resumed:
            self.wake_claims()
        return resumed

    async def paused_queues(self) -> list[str]:
        """The names of the paused queues, sorted."""
        return sorted(key[len(PAUSED_PREFIX):] for key in await self.kv_scan(PAUSED_PREFIX))

    def wake_claims(self) -> None:
        """Claims of this process waiting for work look again (jobs may have become claimable)."""

    # -- the rules of job kinds ----------------------------------------------------------------
    # A job kind's lane rule (``flow``) as its code defines it now, ``rules/<queue>/<name>`` in
    # the keyed store: every claim reads it for the kind's lanes, so a new ``concurrency``,
    # ``rate`` or ``fair`` applies to the jobs already queued; a job dispatched before any rule
    # was stored keeps its record's own.
    async def set_lane_rule(self, queue: str, name: str, rule: str) -> None:
        """Store the lane rule (``LaneRule.text``) of job kind ``name`` in ``queue``; a name too
        long for a key is left to its records' own rule."""
        key = f"{RULES_KEY}{queue}/{name}"
        if len(key) <= MAX_KEY:
            await self.kv_put(key, rule.encode())
        self.rules_changed()
        self.wake_claims()  # a looser rule may let waiting jobs start

    def rules_changed(self) -> None:
        """This process stored a kind's rule: its claims read the stored rules again at once
        (a driver that keeps them a moment, ``_lanes.StoredRules``, forgets them)."""

    async def lane_rules(self, queue: str) -> dict[str, str]:
        """The lane rules stored for ``queue``'s job kinds: name -> rule text."""
        prefix = f"{RULES_KEY}{queue}/"
        return rules_of(prefix, await self.kv_scan(prefix))

    # -- the keyed store -----------------------------------------------------------------------
    # Bytes under short text keys (``_kv.check_key``), each with an optional lifetime in
    # seconds, in the queue's own storage: what a feature keeps beside the jobs. An expired
    # value reads as absent at once and is removed by the driver in time.
    async def kv_put(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing what is there."""
        await self._kv_write(check_key(key), check_value(value), check_ttl(ttl_s), only_new=False)

    async def kv_put_new(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        """Store ``value`` under ``key`` only if no live value is there, in one atomic step
        against every other process; whether it was stored."""
        return await self._kv_write(check_key(key), check_value(value), check_ttl(ttl_s), only_new=True)

    @abstractmethod
    async def _kv_write(self, key: str, value: bytes, ttl_s: float | None, *, only_new: bool) -> bool:
        """Store ``value`` under ``key`` (both checked) for ``ttl_s`` seconds (checked; ``None``:
        for good) by the storage's clock; with ``only_new``, only if no live value is there, in
        one atomic step against every other process. Whether it was stored."""

    @abstractmethod
    async def kv_get(self, key: str) -> bytes | None:
        """The live value under ``key``, or ``None``."""

    @abstractmethod
    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        """Every live value whose key starts with ``prefix`` (``""``: all), by key."""

    @abstractmethod
    async def kv_delete(self, key: str) -> bool:
        """Remove ``key``; whether a live value was there."""

    # -- shipped code ------------------------------------------------------------------------
    async def store_code(self, digest: str, envelope: bytes) -> None:
        """Keep a shipped code envelope under its digest, once (storing it again changes
        nothing), in the keyed store (``code/<digest>``)."""
        await self.kv_put_new(f"{CODE_KEY}{digest}", envelope)

    async def load_code(self, digest: str) -> bytes | None:
        """The envelope stored under ``digest``, or ``None``."""
        return await self.kv_get(f"{CODE_KEY}{digest}") if CODE_DIGEST.match(digest) else None

    # -- inspecting --------------------------------------------------------------------------
    @abstractmethod
    async def get(self, job_id: str) -> JobRecord | None:
        """The stored record with this id, or ``None``."""

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """Records for many ids, in order (``None`` where missing)."""
        return [await self.get(job_id) for job_id in job_ids]

    async def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        """Only the status of each job (``None`` where missing): cheap polling for waits."""
        return [None if r is None else r.status for r in await self.get_many(job_ids)]

    @abstractmethod
    async def jobs(self, status: JobStatus | None = None, queue: str | None = None,
                   limit: int | None = None) -> list[JobRecord]:
        """Records in creation order; with ``limit``, the newest ``limit`` of them."""

    async def trim(self) -> None:
        """Apply retention now: the queue's (by count and age) and each record's own
        ``keep_ms``. Drivers also do it as jobs settle (every settle, or every few hundred and
        at least every 10 s, depending on the driver)."""

    async def search(self, query: JobQuery) -> JobPage:
        """A page of the jobs ``query`` asks for, newest first (``features.search``): here a
        bounded scan of the newest SCAN_LIMIT records of its status; SQLite and PostgreSQL
        answer it in SQL over every record."""
        limit = search.SCAN_LIMIT
        records = await self.jobs(query.status, query.queue, limit=limit)
        return search.scan_page(records, query, scanned_all=len(records) < limit)

    async def finished_counts(self, since_ms: int, bucket_ms: int) -> dict[int, tuple[int, int]]:
        """Jobs that finished at or after ``since_ms``, in windows of ``bucket_ms``: window
        index -> (completed, failed). Counts what retention keeps: dropped records are gone."""
        buckets: dict[int, tuple[int, int]] = {}
        for status in (COMPLETED, FAILED):
            for record in await self.jobs(status):
                add_finish(buckets, record.finished_ms, status is FAILED, since_ms, bucket_ms)
        return buckets

    async def queue_names(self) -> list[str]:
        """The named queues that hold records here, sorted (a driver may also name queues it
        knows of that hold none, as Redis does with the queues registered under its prefix)."""
        return sorted({record.queue for record in await self.jobs()})

    async def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        """How many records are in each status (every status present as a key). Counted from
        ``jobs`` here; drivers count in their storage."""
        counts = empty_counts()
        for record in await self.jobs(queue=queue):
            counts[record.status] += 1
        return counts

    async def rough_counts(self, queue: str | None = None) -> RoughCounts:
        """Counts as ``counts`` gives them, at a cost that stays small however many records a
        status holds (for a dashboard that refreshes every second): where one status holds
        more than EXACT_COUNT_LIMIT records, a driver may give a figure that is not exact and
        say so in the second value, ``"≈"`` for an estimate (PostgreSQL's, from its statistics)
        or ``"≥"`` for a lower bound (SQLite). Exact here."""
        return await self.counts(queue), {}

    @abstractmethod
    async def push_keyed(self, record: JobRecord, lock: Lock) -> str | None:
        """Store ``record`` and give it ``lock.key``, in one atomic step, unless a live lock
        holds the key (``unique.lock_is_live``: not expired, and its job in one of the lock's
        statuses, or any status for a lock that holds whatever): then store nothing and return
        the id of the lock's job. Unique jobs and schedules' slots take their locks here."""

    @abstractmethod
    async def requeue(self, job_ids: Iterable[str]) -> int:
        """Put FAILED records back as QUEUED with a fresh attempt budget; return how many."""

    @abstractmethod
    async def forget(self, job_ids: Sequence[str]) -> int:
        """Delete the finished records (completed, failed, cancelled) among ``job_ids``;
        return how many. Pending and running jobs are left as they are."""

    async def update_meta(self, record: JobRecord, meta: dict[str, Any]) -> bool:
        """Merge ``meta`` (progress, notes, output) into a held record, fenced by its token."""
        return True

    async def find_by_keys(self, keys: Sequence[str]) -> dict[str, JobRecord]:
        """The newest record for each sweep key that has one."""
        wanted = set(keys)
        found: dict[str, JobRecord] = {}
        for record in await self.jobs():
            if record.key in wanted:
                found[record.key] = record
        return found

    async def watch(self, job_ids: Sequence[str], notice: SettleNotice) -> Callable[[], None]:
        """Call ``notice(id, status, result)`` when any of ``job_ids`` is settled by another
        process; returns an unwatch. ``status`` is the job's new status (``None`` if not known),
        ``result`` its encoded result if the notice carries it, else ``NO_RESULT``.

        Drivers that cannot hear other processes do nothing here and callers poll.
        """
        return lambda: None

    @abstractmethod
    async def purge(self) -> None:
        """Delete every record of this queue's storage (tests, fresh starts)."""


def claim(record: JobRecord, now: int, lease_s: float | None) -> JobRecord:
    """Mark ``record`` as claimed now (shared by drivers that claim in Python)."""
    record.status = ACTIVE
    record.attempt += 1
    record.started_ms = now
    record.finished_ms = None
    record.token = new_token()
    record.lease_ms = now + int(lease_s * 1000) if lease_s else None
    return record


def add_finish(buckets: dict[int, tuple[int, int]], finished_ms: int | None, failed: bool, since_ms: int,
               bucket_ms: int, count: int = 1) -> None:
    """Count ``count`` jobs finished at ``finished_ms`` into their window of ``buckets``."""
    if finished_ms is None or finished_ms < since_ms:
        return
    index = (finished_ms - since_ms) // bucket_ms
    completed, broke = buckets.get(index, (0, 0))
    buckets[index] = (completed, broke + count) if failed else (completed + count, broke)


def retention_cutoffs(settings: QueueSettings) -> tuple[int | None, int | None]:
    """Finish times (ms) before which completed and failed records are dropped; ``None`` where
    ``queue.retention_age`` / ``queue.failed_retention_age`` set no age limit."""
    now = now_ms()
    completed, failed = settings.retention_age_s, settings.failed_retention_age_s
    return (None if completed is None else now - int(completed * 1000),
            None if failed is None else now - int(failed * 1000))


def retention_pass_interval(settings: QueueSettings) -> float:
    """Seconds between retention passes of drivers that trim in batches: often enough that
    records outlive their age limit by at most half of it, and at least every 10 s."""
    ages = [a for a in (settings.retention_age_s, settings.failed_retention_age_s) if a]
    return min([10.0, *(a / 2 for a in ages)])


def _fired(text: bytes | None) -> tuple[int | None, str | None]:
    """A schedule's last fired slot and its job, from what ``fire`` keeps (``None``s if unread)."""
    try:
        state = json.loads(text) if text is not None else {}
        return int(state["slot"]), state.get("job")
    except (ValueError, TypeError, KeyError):
        return None, None


#: above this many records of one status, ``rough_counts`` may estimate rather than count
EXACT_COUNT_LIMIT = 100_000
#: counts by status, and the statuses whose figure is not exact: "≈" estimated, "≥" at least
RoughCounts = tuple[dict[JobStatus, int], dict[JobStatus, str]]


def empty_counts() -> dict[JobStatus, int]:
    return dict.fromkeys(JobStatus, 0)
