"""The claim of limited jobs (``flow``) in the SQL drivers, SQLite and PostgreSQL.

A claim first reads the queue's lanes that have due jobs, how many jobs each holds now and the
starts of each rated lane's window; ``ClaimPlan`` says how many of each may start, and each lane
gives that many, best priority first. The SQLite claim runs inside its write transaction; the
PostgreSQL one under a transaction-scoped advisory lock per queue, so two claims never count
the same free slot. A slot is held by a claimed job until it settles, is cancelled, or its lease
expires.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..limits import RATE_UNITS


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
