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

import functools
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
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

    def text(self) -> str:
        """The rule as the stores keep it: compact JSON with sorted keys."""
        data: dict[str, Any] = {}
        if self.concurrency is not None:
            data["c"] = self.concurrency
        if self.rate is not None:
            data["r"] = [self.rate.n, self.rate.window_ms]
        if self.needs:
            data["u"] = dict(self.needs)
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
    try:
        data = json.loads(text)
        rate = data.get("r")
        return LaneRule(data.get("c"), None if rate is None else Rate(int(rate[0]), int(rate[1])),
                        tuple(sorted((str(k), int(v)) for k, v in data.get("u", {}).items())))
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return LaneRule(concurrency=1)


@functools.lru_cache(maxsize=256)
def lane_rule(concurrency: int | None, rate: str | None,
              resources: tuple[tuple[str, int], ...]) -> str | None:
    """The rule text of a job kind's settings, or ``None`` when they limit nothing."""
    if concurrency is None and rate is None and not resources:
        return None
    return LaneRule(concurrency, parse_rate(rate), resources).text()


def job_lane(job: Any, name: str, running_key: str | None = None) -> tuple[str | None, str | None]:
    """The lane and rule text of one job (``(None, None)`` when it has no limit).

    ``running_key`` is the unique key of a ``unique="running"`` dispatch: its lane holds one
    job at a time. The job's ``limit_key()`` is called here, so a key function that raises or
    answers anything but a non-empty string fails the dispatch with that reason."""
    concurrency, rate = job.concurrency, job.rate
    resources = tuple(check_resources(job.resources, f"{name}.resources").items()) if job.resources else ()
    if running_key is not None:
        if concurrency is not None or rate is not None:
            raise ConfigError(f'unique="running" runs one {name} at a time per key; it cannot be combined '
                              f"with the job's concurrency={concurrency!r} or rate={rate!r}")
        return f"unique\t{running_key}", LaneRule(1, None, resources).text()
    rule = lane_rule(check_concurrency(concurrency, f"{name}.concurrency"), rate, resources)
    if rule is None:
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
