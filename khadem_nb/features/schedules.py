"""Periodic jobs: a schedule names a job, when it runs (cron or a fixed period), and what a
missed or overlapping run does.

Time is cut into *slots*: the times a cron expression matches (in the schedule's time zone,
parsed by cronsim), or the multiples of a period since the epoch. Every worker of the queue
looks at the schedules and offers each due slot to its driver (``QueueDriver.fire``), which
stores the slot's job only if the schedule's last fired slot is older, and takes the slot's
lock (``slot_lock``) in one atomic step with storing it: a slot fires once whatever the number
of workers, and a schedule survives the loss of any of them. A tick's job carries the key
``schedule:<id>@<slot ms>``.

- ``overlap="skip"`` (the default): a slot whose previous run is still queued or running is
  passed over; ``"queue"``: it is stored and waits until the previous run ends (a lane of one,
  see ``flow``); ``"allow"``: it runs alongside.
- ``catchup``: after downtime, ``"latest"`` (the default) fires the latest missed slot once,
  ``"all"`` fires every missed slot (at most MAX_CATCHUP), ``"none"`` fires none (only slots
  that come due while a worker looks).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import limits
from ..draft import Draft
from ..errors import ConfigError
from ..job import ACTIVE, QUEUED, SCHEDULED, JobRecord, JobStatus
from .flow import SCHEDULE_LANE, LaneRule
from .unique import Lock, canonical_key

OVERLAPS = ("skip", "queue", "allow")
CATCHUPS = ("latest", "all", "none")
MAX_CATCHUP = 100  # missed slots ``catchup="all"`` fires at most, the newest ones
LOOK_EVERY_S = 1.0  # a worker looks at the schedules at least this often
RELIST_EVERY_S = 5.0  # and reads them again from the driver at least this often
MIN_EVERY_S = 0.1  # the shortest period
MAX_ID = 200  # characters of a schedule id
#: the rule of the lane an ``overlap="queue"`` schedule's jobs share
ONE_AT_A_TIME = LaneRule(concurrency=1).text()
NONE_GRACE_MS = 2_000  # with catchup="none", a slot this late still fires (a worker was busy)
#: how much longer than its period a slot's lock lives: past the time any worker may still
#: offer the slot (its view of the last fired slot is RELIST_EVERY_S old at most, and one
#: lost write of that slot leaves it one slot behind)
SLOT_LOCK_MARGIN_MS = 600_000
#: what a driver does with a slot offered to ``fire``
FIRE, PASS, STALE = "fire", "pass", "stale"


def fire_verdict(last_slot: int | None, last_status: JobStatus | None, slot_ms: int, overlap: str) -> str:
    """FIRE: store the slot's job; PASS: count the slot as fired and store nothing (its
    previous run is pending or running, with ``overlap="skip"``); STALE: it, or a later slot,
    fired already."""
    if last_slot is not None and last_slot >= slot_ms:
        return STALE
    if overlap == "skip" and last_status in (QUEUED, SCHEDULED, ACTIVE):
        return PASS
    return FIRE


@dataclass(frozen=True, slots=True)
class Schedule:
    """A stored schedule: its id, the job it stores at each slot, and when and how."""

    id: str
    job: Draft  # the job of every slot, encoded and checked when the schedule was saved
    cron: str | None = None
    every_ms: int | None = None
    tz: str = "UTC"
    overlap: str = "skip"
    catchup: str = "latest"
    created_ms: int = 0

    @property
    def queue(self) -> str:
        return self.job.queue

    @property
    def spec(self) -> str:
        """When it runs, as people read it: ``*/5 * * * * (UTC)`` or ``every 300s``."""
        if self.cron is not None:
            return f"{self.cron} ({self.tz})"
        return f"every {(self.every_ms or 0) / 1000:g}s"

    def text(self) -> str:
        """The schedule as the stores keep it: JSON of its fields, its job's among them."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_text(cls, text: str | bytes) -> Schedule:
        """A stored schedule read back; ``ValueError``, ``KeyError`` or ``TypeError`` when it
        does not read (the stores then leave it out)."""
        data = json.loads(text)
        return cls(**{**data, "job": Draft(**data["job"])})

    # -- slots --------------------------------------------------------------------------------
    def latest_slot(self, now_ms: int) -> int | None:
        """The last slot at or before ``now_ms`` (``None`` if the cron never matched)."""
        if self.every_ms is not None:
            return now_ms - now_ms % self.every_ms
        from cronsim import CronSim

        start = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(self.tz)) + timedelta(microseconds=1)
        try:
            return _ms(next(CronSim(self.cron or "", start, reverse=True)))
        except StopIteration:
            return None

    def next_slot(self, now_ms: int) -> int | None:
        """The first slot after ``now_ms`` (``None`` if the cron never matches again)."""
        if self.every_ms is not None:
            return now_ms - now_ms % self.every_ms + self.every_ms
        from cronsim import CronSim

        start = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(self.tz))
        try:
            return _ms(next(CronSim(self.cron or "", start)))
        except StopIteration:
            return None

    def due_slots(self, last_slot: int | None, now_ms: int) -> list[int]:
        """The slots to offer now, oldest first, given the last one fired (``None``: none yet;
        slots before the schedule was made never fire)."""
        latest = self.latest_slot(now_ms)
        floor = max(last_slot if last_slot is not None else -1, self.created_ms - 1)
        if latest is None or latest <= floor:
            return []
        if self.catchup == "none":
            return [latest] if now_ms - latest <= NONE_GRACE_MS else []
        if self.catchup == "latest":
            return [latest]
        return self._slots_between(floor, latest)

    def _slots_between(self, floor: int, latest: int) -> list[int]:
        """Every slot after ``floor`` up to ``latest``, the newest MAX_CATCHUP of them."""
        if self.every_ms is not None:
            period = self.every_ms
            first = max(floor - floor % period + period, latest - (MAX_CATCHUP - 1) * period)
            return list(range(first, latest + 1, self.every_ms))
        from cronsim import CronSim

        slots: list[int] = []
        back = CronSim(self.cron or "", datetime.fromtimestamp(latest / 1000, ZoneInfo(self.tz))
                       + timedelta(microseconds=1), reverse=True)
        for moment in back:
            slot = _ms(moment)
            if slot <= floor or len(slots) == MAX_CATCHUP:
                break
            slots.append(slot)
        return slots[::-1]

    def slot_lock(self, slot_ms: int, now_ms: int) -> Lock:
        """The lock a slot's job is stored with: once taken, no other job of that slot is
        stored while it lives (whatever the job's status), one period and SLOT_LOCK_MARGIN_MS."""
        following = self.next_slot(slot_ms)
        period = 0 if following is None else following - slot_ms
        return Lock(f"{self.queue}\tschedule\t{self.id}@{slot_ms}", (), now_ms + period + SLOT_LOCK_MARGIN_MS)

    def tick(self, slot_ms: int, now_ms: int) -> JobRecord:
        """The job of one slot: a new record of the schedule's job, keyed by the slot."""
        record = self.job.record(now_ms)
        record.key = f"schedule:{self.id}@{slot_ms}"
        record.meta = {"schedule": self.id, "slot_ms": slot_ms}
        if self.overlap == "queue":
            record.lane, record.lane_rule = f"{SCHEDULE_LANE}{self.id}", ONE_AT_A_TIME
        return record


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A schedule and what its store knows of its runs: the last slot fired and its job."""

    schedule: Schedule
    last_slot: int | None = None
    last_job: str | None = None


@dataclass(slots=True)
class ScheduleInfo:
    """What ``schedules()`` lists of one schedule."""

    id: str
    job: str
    spec: str
    next_run: datetime | None
    last_run: datetime | None
    last_status: str | None
    overlap: str
    catchup: str
    queue: str
    last_job: str | None = None


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def make_schedule(template: Draft, *, cron: Any, every: Any, schedule_id: Any, tz: Any,
                  overlap: Any, catchup: Any, now_ms: int) -> Schedule:
    """A checked schedule; ``ConfigError`` naming a bad value and the valid forms."""
    if (cron is None) == (every is None):
        raise ConfigError("a schedule takes one of cron='*/5 * * * *' or every=seconds/timedelta, not "
                          f"{'both' if cron is not None else 'neither'}")
    zone = check_tz(tz)
    every_ms = None
    if every is not None:
        seconds = _every_seconds(every)
        every_ms = int(seconds * 1000)
    else:
        check_cron(cron, zone)
    if overlap not in OVERLAPS:
        raise ConfigError(f"overlap must be one of {', '.join(OVERLAPS)}, got {overlap!r}")
    return Schedule(_schedule_id(schedule_id, template), template, cron, every_ms, zone, overlap,
                    _catchup(catchup), now_ms)


def _catchup(catchup: Any) -> str:
    """``catchup`` as one of CATCHUPS (``None``: ``"latest"``, ``True``: ``"all"``, ``False``:
    ``"none"``)."""
    words: dict[Any, str] = {None: "latest", True: "all", False: "none"}
    catch = catchup if isinstance(catchup, str) else words.get(catchup)
    if catch not in CATCHUPS:
        raise ConfigError(f"catchup must be one of {', '.join(CATCHUPS)} (or True for 'all', False for "
                          f"'none'), got {catchup!r}")
    return catch


def _schedule_id(schedule_id: Any, template: Draft) -> str:
    """``schedule_id``, or the job name and a digest of its arguments."""
    if schedule_id is None:
        return canonical_key(template.name, template.payload)
    if not isinstance(schedule_id, str) or not schedule_id or len(schedule_id) > MAX_ID:
        raise ConfigError(f"a schedule id must be a non-empty string of at most {MAX_ID} characters, "
                          f"got {schedule_id!r}")
    return schedule_id


def check_tz(tz: Any) -> str:
    if not isinstance(tz, str):
        raise ConfigError(f"tz must be an IANA time zone name like 'UTC' or 'Europe/Paris', got {tz!r}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {tz!r}; use an IANA name like 'UTC' or "
                          "'Europe/Paris'") from None
    return tz


def check_cron(cron: Any, tz: str) -> str:
    from cronsim import CronSim, CronSimError

    if not isinstance(cron, str):
        raise ConfigError(f"cron must be a cron expression like '*/5 * * * *', got {cron!r}")
    try:
        CronSim(cron, datetime.now(ZoneInfo(tz)))
    except CronSimError as exc:
        raise ConfigError(f"bad cron expression {cron!r} ({exc}); five fields: minute hour day month "
                          "weekday, like '*/5 * * * *'") from None
    return cron


def _every_seconds(every: Any) -> float:
    if isinstance(every, timedelta):
        seconds = every.total_seconds()
    elif isinstance(every, int | float) and not isinstance(every, bool):
        seconds = float(every)
    else:
        raise ConfigError(f"every must be seconds or a timedelta, got {every!r}")
    if not MIN_EVERY_S <= seconds <= limits.YEAR_S:
        raise ConfigError(f"every must be between {MIN_EVERY_S:g} s and a year, got {every!r}")
    return seconds


def info_of(state: ScheduleState, last: JobRecord | None, now_ms: int) -> ScheduleInfo:
    """How ``schedules()`` shows one schedule."""
    s = state.schedule
    after = now_ms if state.last_slot is None else max(now_ms, state.last_slot)
    following = s.next_slot(after)
    return ScheduleInfo(
        id=s.id, job=s.job.name, spec=s.spec, queue=s.queue, overlap=s.overlap, catchup=s.catchup,
        next_run=None if following is None else datetime.fromtimestamp(following / 1000, UTC),
        last_run=None if state.last_slot is None else datetime.fromtimestamp(state.last_slot / 1000, UTC),
        last_status=None if last is None else last.status.value, last_job=state.last_job)

