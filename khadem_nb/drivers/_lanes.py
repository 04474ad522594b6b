"""The claim of limited jobs (``flow``) in the SQL drivers, SQLite and PostgreSQL.

A claim first reads the queue's lanes that have due jobs, the rules stored for their job kinds
(``QueueDriver.set_lane_rule``), how many jobs each holds now and the starts of each rated
lane's window; ``ClaimPlan`` says how many of each may start, and each lane gives that many,
best priority first, fair lanes a job a turn (``flow.claim_turns``) in the order of their last
turn, kept in the keyed store (``served/<queue>/<digest of the lane>``). The SQLite claim
runs inside its write transaction; the PostgreSQL one under a transaction-scoped advisory lock
per queue, so two claims never count the same free slot. A slot is held by a claimed job until
it settles, is cancelled, or its lease expires.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..features.flow import RULES_KEY, LaneRule, rule_for
from ..limits import RATE_UNITS
from ._kv import rules_of

RULES_FRESH_S = 1.0  # a claim reads the stored kind rules again after this: a change applies within it
SERVED_KEY = "served/"  # the keyed store's prefix of each fair lane's last turn (a counter)
SERVED_TTL_S = 86_400.0  # a fair lane's turn is forgotten a day after it had one


@dataclass(frozen=True, slots=True)
class LaneSql:
    """The statements of the lanes phase for one table layout and placeholder."""

    waiting: str  # (queue, now) -> lane, lane_rule of the lanes with due jobs, best first
    held: str  # (queue, now) -> lane, count of jobs held under a live lease
    starts: str  # (queue, lane, since) -> start times of the lane's window
    started: str  # (n, queue, lane, at) -> n starts recorded
    forget_starts: str  # (before) -> starts older than the longest window dropped


def lane_sql(jobs: str, starts: str, mark: str) -> LaneSql:
    """The lanes phase over the tables ``jobs`` and ``starts``, with the driver's placeholder."""
    m = mark
    return LaneSql(
        waiting=(f"SELECT lane, lane_rule, MAX(priority), MIN(seq) FROM {jobs} WHERE queue = {m} "
                 f"AND lane IS NOT NULL AND status IN ('queued', 'scheduled') AND available_ms <= {m} "
                 "GROUP BY lane, lane_rule ORDER BY 3 DESC, 4"),
        held=(f"SELECT lane, COUNT(*) FROM {jobs} WHERE queue = {m} AND lane IS NOT NULL "
              f"AND status = 'active' AND lease_ms >= {m} GROUP BY lane"),
        starts=f"SELECT at_ms FROM {starts} WHERE queue = {m} AND lane = {m} AND at_ms > {m}",
        started=(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {m}) "
                 f"INSERT INTO {starts} (queue, lane, at_ms) SELECT {m}, {m}, {m} FROM n"),
        forget_starts=f"DELETE FROM {starts} WHERE at_ms <= {m}",
    )


def starts_table_sql(starts: str, index: str) -> list[str]:
    """The table of recent starts of rated lanes, and its index."""
    return [f"CREATE TABLE IF NOT EXISTS {starts} (queue TEXT NOT NULL, lane TEXT NOT NULL, "
            "at_ms BIGINT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {index} ON {starts} (queue, lane, at_ms)"]


def workers_table_sql(workers: str) -> str:
    """The table of resource offers, one row per worker (see ``resources.Offer``)."""
    return (f"CREATE TABLE IF NOT EXISTS {workers} (worker TEXT PRIMARY KEY, offered TEXT NOT NULL, "
            "free TEXT NOT NULL, seen_ms BIGINT NOT NULL)")



def lane_index_sql(jobs: str, prefix: str) -> list[str]:
    """What the lanes phase reads through: due limited jobs by lane, and held ones by lane."""
    return [f"CREATE INDEX IF NOT EXISTS {prefix}_lanes ON {jobs} (queue, lane, priority DESC, seq) "
            "WHERE lane IS NOT NULL AND status IN ('queued', 'scheduled')",
            f"CREATE INDEX IF NOT EXISTS {prefix}_lanes_held ON {jobs} (queue, lane) "
            "WHERE lane IS NOT NULL AND status = 'active'"]


def oldest_start_kept(now_ms: int) -> int:
    """Starts at or before this are older than any rate's window."""
    return now_ms - RATE_UNITS["h"]


def held_by_lane(rows: Iterable[Sequence[Any]]) -> Mapping[str, int]:
    return {str(lane): int(count) for lane, count in rows}


def rules_prefix(queue: str) -> str:
    """Where ``queue``'s job kinds' rules are in the keyed store."""
    return f"{RULES_KEY}{queue}/"


def lane_order(waiting: Iterable[Sequence[Any]], stored: Mapping[str, str]) -> list[tuple[str, LaneRule]]:
    """The lanes of the ``waiting`` rows (lane, its records' rule, ...; best first) with the
    rule a claim applies to each: the kind's stored one (``stored``: name -> rule text, as
    ``StoredRules`` keeps them), else the records'. A lane listed twice (records of two rules)
    comes once, at its first place."""
    order: dict[str, LaneRule] = {}
    for lane, own, *_ in waiting:
        if lane not in order:
            order[lane] = rule_for(lane, own, stored)
    return list(order.items())


def served_keys(queue: str, order: Iterable[tuple[str, LaneRule]]) -> dict[str, str]:
    """The keyed-store key of each fair lane's last turn: key -> lane."""
    return {served_key(queue, lane): lane for lane, rule in order if rule.fair}


def served_key(queue: str, lane: str) -> str:
    return f"{SERVED_KEY}{queue}/{hashlib.blake2b(lane.encode(), digest_size=12).hexdigest()}"


def served_of(keys: Mapping[str, str], rows: Iterable[Sequence[Any]]) -> dict[str, int]:
    """Each fair lane's last turn from the keyed store's (key, value) rows; an unreadable
    value counts as never served."""
    served = {}
    for key, value in rows:
        try:
            served[keys[key]] = int(bytes(value))
        except (KeyError, ValueError, TypeError):
            continue
    return served


def new_turns(queue: str, turns: Sequence[str], served: Mapping[str, int]) -> list[tuple[str, bytes]]:
    """The keyed-store values that record ``turns`` (fair lanes, the one served last last):
    counters above every lane's earlier turn, so the next claim starts with the lanes served
    longest ago."""
    last = max(served.values(), default=0)
    return [(served_key(queue, lane), str(last + i).encode()) for i, lane in enumerate(turns, 1)]


class StoredRules:
    """Each queue's stored kind rules (name -> rule text) as a claim of this process last read
    them: read again after RULES_FRESH_S, or at once after this process stores one, so a lanes
    phase does not pay a read for rules that change once a deploy."""

    def __init__(self) -> None:
        self._read: dict[str, tuple[float, dict[str, str]]] = {}

    def fresh(self, queue: str) -> dict[str, str] | None:
        """The rules read for ``queue`` within RULES_FRESH_S, or ``None``: read them."""
        read = self._read.get(queue)
        return read[1] if read is not None and time.monotonic() - read[0] < RULES_FRESH_S else None

    def keep(self, queue: str, found: Mapping[str, bytes],
             also: Mapping[str, str] | None = None) -> dict[str, str]:
        """Keep the keyed-store values ``found`` under ``rules_prefix(queue)`` (with the rules
        ``also`` read before) as ``queue``'s rules, and return them."""
        rules = {**(also or {}), **rules_of(rules_prefix(queue), found)}
        self._read[queue] = (time.monotonic(), rules)
        return rules

    def forget(self) -> None:
        self._read.clear()
