"""Flow control: how many of a job run at once, how many start per window, and what they hold.

A job kind with ``concurrency``, ``rate`` or ``resources`` (or a ``unique="running"`` dispatch)
puts each of its records in a *lane*: the job name, or the name and the job's ``limit_key()``.
A record carries its lane and the lane's rule (``LaneRule``, as JSON text) from dispatch on.
Every driver counts the jobs of a lane that are held (claimed and not yet settled) and the
starts of its recent window, and takes a limited job only when the rule allows one more; the
count and the claim are one atomic step (see docs/flow.md). ``ClaimPlan`` is that decision for
the drivers that make it in Python; Redis makes the same one in ``reserve.lua``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, JobError
from ..limits import (  # the checks the model runs live in limits; flow's rules build on them
    Rate,
    check_concurrency,
    check_resources,
    parse_rate,
)


def check_limit_key(value: Any, where: str = "limit_key") -> Callable[[dict[str, Any]], Any] | None:
    """A notebook job's ``limit_key``: ``None`` or a callable taking the call's arguments."""
    if value is None or callable(value):
        return value  # type: ignore[no-any-return]
    raise ConfigError(f"{where} must be a function of the job's arguments returning a string, like "
                      f"lambda params: params['tenant'] (or None), got {value!r}")


@dataclass(frozen=True, slots=True)
class LaneRule:
    """What limits one lane: jobs held at once, starts per window, units each job holds."""

    concurrency: int | None = None
    rate: Rate | None = None
    needs: tuple[tuple[str, int], ...] = ()
    #: the lanes of one kind take turns: one job of each per turn (``take_in_turns``)
    fair: bool = False

    def text(self) -> str:
        """The rule as the stores keep it: compact JSON with sorted keys."""
        data: dict[str, Any] = {}
        if self.concurrency is not None:
            data["c"] = self.concurrency
        if self.rate is not None:
            data["r"] = [self.rate.n, self.rate.window_ms]
        if self.needs:
            data["u"] = dict(self.needs)
        if self.fair:
            data["f"] = 1
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    def fits(self, free: Mapping[str, int]) -> int:
        """How many jobs of this lane fit in ``free`` units (a large number without needs)."""
        if not self.needs:
            return 1 << 30
        return min(free.get(name, 0) // units for name, units in self.needs)


@functools.lru_cache(maxsize=1024)
def rule_of(text: str) -> LaneRule:
    """The rule a record carries, read back; a damaged one lets one job of its lane run at a
    time, so its jobs still run and never stall the lane behind them."""
    return stored_rule(text) or LaneRule(concurrency=1)


@functools.lru_cache(maxsize=1024)
def stored_rule(text: str) -> LaneRule | None:
    """A rule read back from its text; ``None`` where the text is damaged."""
    try:
        data = json.loads(text)
        rate = data.get("r")
        concurrency = data.get("c")
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)):
            return None
        return LaneRule(concurrency, None if rate is None else Rate(int(rate[0]), int(rate[1])),
                        tuple(sorted((str(k), int(v)) for k, v in data.get("u", {}).items())),
                        bool(data.get("f")))
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return None


@functools.lru_cache(maxsize=256)
def lane_rule(concurrency: int | None, rate: str | None,
              resources: tuple[tuple[str, int], ...], fair: bool = False) -> str | None:
    """The rule text of a job kind's settings, or ``None`` when they limit nothing."""
    if concurrency is None and rate is None and not resources and not fair:
        return None
    return LaneRule(concurrency, parse_rate(rate), resources, fair).text()


#: lanes that are not a job kind's: a ``unique="running"`` key's and a schedule's. Their jobs
#: keep the rule they were dispatched with; a kind's lanes follow the kind's rule in the store
UNIQUE_LANE, SCHEDULE_LANE = "unique\t", "schedule\t"
RULES_KEY = "rules/"  # the keyed store's prefix of each job kind's lane rule (``rules/<queue>/<name>``)
NO_RULE = LaneRule().text()  # the rule of a kind that limits nothing now


def kind_of_lane(lane: str) -> str | None:
    """The job name whose rule a lane follows (``train`` of ``train\ttenant-a``), or ``None``
    for a lane that keeps its records' own rule."""
    if lane.startswith(UNIQUE_LANE) or lane.startswith(SCHEDULE_LANE):
        return None
    return lane.partition("\t")[0]


def kind_rule(job: Any, name: str) -> str:
    """The rule text of a job kind as this process defines it now (``NO_RULE`` without limits)."""
    fair = check_fair(getattr(job, "fair", False), f"{name}.fair")
    concurrency = check_concurrency(job.concurrency, f"{name}.concurrency")
    return lane_rule(concurrency, job.rate, _resources(job, name), fair) or NO_RULE


def _resources(job: Any, name: str) -> tuple[tuple[str, int], ...]:
    return tuple(check_resources(job.resources, f"{name}.resources").items()) if job.resources else ()


def check_fair(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be True or False, got {value!r}")
    return value


def rule_for(lane: str, own: str | None, stored: Mapping[str, str]) -> LaneRule:
    """The rule a claim applies to ``lane``: its kind's rule in the store (``stored``: name ->
    rule text, read at the claim) with the resource units its record carries, else the rule
    its record carries (``own``); a damaged stored rule is passed over."""
    dispatched = rule_of(own or "")
    name = kind_of_lane(lane) if stored else None
    text = None if name is None else stored.get(name)
    rule = None if text is None else stored_rule(text)
    if rule is None:
        return dispatched
    # the units stay as dispatched: they are what the job's own code needs, and the worker that
    # runs it takes them from its record
    return rule if rule.needs == dispatched.needs else dataclasses.replace(rule, needs=dispatched.needs)


#: what ``claim_turns`` asks its driver: claim up to ``n`` jobs of ``lane`` under ``rule``, and
#: answer how many it claimed
Turn = tuple[str, LaneRule, int]


def claim_turns(lanes: Iterable[tuple[str, LaneRule]], want: int,
                served: Mapping[str, int]) -> Generator[Turn, int, list[str]]:
    """The order in which a claim takes up to ``want`` jobs from ``lanes`` (in claim order):
    it yields ``(lane, rule, n)`` and is sent how many of the lane's jobs the driver claimed.

    Lanes of a fair rule take turns after the others: one job of each per turn, the lane served
    longest ago first (``served``: a stamp per lane, higher is later; a lane never served goes
    first), until ``want`` are claimed or no lane gives another, so one key's 10,000 queued jobs
    do not hold back another key's 10. A fair lane left alone takes what is left in one go.
    Returns the fair lanes served, the one served last last: the driver stamps them in that
    order (``take_in_turns`` drives it for a driver that claims without awaiting)."""
    taken = 0
    fair: list[tuple[str, LaneRule]] = []
    for lane, rule in lanes:
        if rule.fair:
            fair.append((lane, rule))
        elif taken < want:
            taken += yield lane, rule, want - taken
    fair.sort(key=lambda pair: served.get(pair[0], -1))  # stable: ties keep the claim order
    turns: list[str] = []
    while taken < want and fair:
        still: list[tuple[str, LaneRule]] = []
        for lane, rule in fair:
            if taken >= want:
                break
            got = yield lane, rule, (want - taken if len(fair) == 1 else 1)
            if got:
                taken += got
                turns.append(lane)
                still.append((lane, rule))
        fair = still
    return list(dict.fromkeys(reversed(turns)))[::-1]


def take_in_turns(lanes: Iterable[tuple[str, LaneRule]], want: int,
                  take: Callable[[str, LaneRule, int], int], served: Mapping[str, int]) -> list[str]:
    """``claim_turns`` driven by ``take(lane, rule, n)``, which claims and says how many."""
    turns = claim_turns(lanes, want, served)
    try:
        turn = next(turns)
        while True:
            turn = turns.send(take(*turn))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def job_lane(job: Any, name: str, running_key: str | None = None) -> tuple[str | None, str | None]:
    """The lane and rule text of one job (``(None, None)`` when it has no limit).

    ``running_key`` is the unique key of a ``unique="running"`` dispatch: its lane holds one
    job at a time. The job's ``limit_key()`` is called here, so a key function that raises or
    answers anything but a non-empty string fails the dispatch with that reason."""
    if running_key is not None:
        concurrency, rate = job.concurrency, job.rate
        if concurrency is not None or rate is not None:
            raise ConfigError(f'unique="running" runs one {name} at a time per key; it cannot be combined '
                              f"with the job's concurrency={concurrency!r} or rate={rate!r}")
        return f"{UNIQUE_LANE}{running_key}", LaneRule(1, None, _resources(job, name)).text()
    rule = kind_rule(job, name)
    if rule == NO_RULE:
        return None, None
    return _lane_key(job, name), rule


def _lane_key(job: Any, name: str) -> str:
    try:
        key = job.limit_key()
    except Exception as exc:
        raise JobError(f"{name}: its limit_key raised {exc!r}; the job was not dispatched") from exc
    if key is None:
        return name
    if not isinstance(key, str) or not key:
        raise JobError(f"{name}: its limit_key must return a non-empty string (or None), got {key!r}; "
                       "the job was not dispatched")
    return f"{name}\t{key}"


def shown_lane(lane: str) -> str:
    """A lane as people read it: ``train`` or ``train[tenant-a]``."""
    name, _, key = lane.partition("\t")
    return f"{name}[{key}]" if key else name


class ClaimPlan:
    """Which limited jobs one claim may take, decided job by job in claim order.

    Built from what the store holds at the claim (held jobs per lane, recent starts per lane)
    and the free units of the claiming worker; each admitted job counts at once, so a batch
    never takes more than its lanes allow.
    """

    def __init__(self, now_ms: int, held: Mapping[str, int], starts: Callable[[str, int], Iterable[int]],
                 free: Mapping[str, int] | None) -> None:
        self.now_ms = now_ms
        self._held = dict(held)
        self._starts_of = starts
        self._starts: dict[str, deque[int]] = {}
        self._free = dict(free or {})
        #: ms from now at which a lane blocked by its rate may start again (``None``: none is)
        self.reopens_in_ms: int | None = None

    def _recent(self, lane: str, window_ms: int) -> deque[int]:
        recent = self._starts.get(lane)
        if recent is None:
            cutoff = self.now_ms - window_ms
            recent = deque(sorted(t for t in self._starts_of(lane, window_ms) if t > cutoff))
            self._starts[lane] = recent
        return recent

    def room(self, lane: str, rule: LaneRule) -> int:
        """How many more jobs of ``lane`` may start now."""
        room = rule.fits(self._free)
        if rule.concurrency is not None:
            room = min(room, rule.concurrency - self._held.get(lane, 0))
        if rule.rate is not None and room > 0:
            recent = self._recent(lane, rule.rate.window_ms)
            room = min(room, rule.rate.n - len(recent))
            if room <= 0 and recent:
                self._note_reopen(recent[len(recent) - rule.rate.n] + rule.rate.window_ms)
        return max(0, room)

    def _note_reopen(self, at_ms: int) -> None:
        wait = max(1, at_ms - self.now_ms)
        self.reopens_in_ms = wait if self.reopens_in_ms is None else min(self.reopens_in_ms, wait)

    def admit(self, lane: str, rule: LaneRule) -> bool:
        """Whether one job of ``lane`` may start now; if so, it counts from here on."""
        if self.room(lane, rule) <= 0:
            return False
        self._held[lane] = self._held.get(lane, 0) + 1
        if rule.rate is not None:
            self._recent(lane, rule.rate.window_ms).append(self.now_ms)
        for name, units in rule.needs:
            self._free[name] -= units
        return True


@dataclass(frozen=True, slots=True)
class LaneUse:
    """What one lane holds now: jobs held, and starts within its rate's window."""

    held: int = 0
    recent: int = 0


def recent_starts(starts: Iterable[int], rule: LaneRule, now_ms: int) -> int:
    """How many of ``starts`` fall within the window of ``rule``'s rate (0 without one)."""
    if rule.rate is None:
        return 0
    since = now_ms - rule.rate.window_ms
    return sum(1 for t in starts if t > since)
