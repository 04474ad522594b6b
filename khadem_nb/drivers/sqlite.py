"""SQLite driver: an embedded durable queue that several processes on one machine can share.

- WAL journal (checked after asking; on a network filesystem, where WAL is unsafe, the
  rollback journal is used and a warning says so), ``busy_timeout``, and every write inside
  ``BEGIN IMMEDIATE`` so that two writers never deadlock upgrading a read lock.
- A claim is one ``UPDATE ... RETURNING`` picking the highest priority, then the oldest, due
  job; rows are never deleted on claim. A claim sets a lease and a fresh token; every later
  write is fenced by that token (``WHERE token = ?``).
- Expired leases are reclaimed inside the claim transaction at most every ``lease/4``
  seconds; a job reclaimed more than ``queue.max_reclaims`` times ends failed.
- No transaction spans an ``await`` or a running job. Short writes and point reads run on the
  event loop through a connection with no busy timeout; if another process holds the write
  lock, the statement is handed to a dedicated thread whose connection waits for it, so the
  loop never blocks on a lock. Listings run on that thread too. ``options.io`` picks
  ``"auto"`` (that), ``"thread"`` (always the thread) or ``"inline"`` (always the loop); the
  bench in ``bench/embedded_drivers.py`` measures all three.
- A cancel is one ``UPDATE`` per id, all in one write transaction, so a claim comes wholly
  before or after it.
- Completed records beyond ``queue.retention`` are deleted, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar

from .._ids import new_token
from .._time import now_ms
from ..config import QueueSettings
from ..errors import ConfigError, CorruptQueueError, DriverError, DriverUnavailableError
from ..features.capabilities import Runs
from ..features.dependencies import place_child
from ..features.flow import ClaimPlan, LaneRule, LaneUse, take_in_turns
from ..features.search import JobPage, JobQuery, sql_pages
from ..features.unique import Lock
from ..job import TERMINAL_STATUSES, JobRecord, JobStatus
from ..serializer import dumps
from ._deps import edge_rows, edges_table_sql, sqlite_trigger_sql
from ._fs import FILE_MODE, check_parent_writable, is_network_filesystem, local_path
from ._kv import check_key, check_prefix, expiry, scan_end
from ._lanes import (
    SERVED_TTL_S,
    StoredRules,
    held_by_lane,
    lane_index_sql,
    lane_order,
    lane_sql,
    new_turns,
    oldest_start_kept,
    rules_prefix,
    served_keys,
    served_of,
    starts_table_sql,
    workers_table_sql,
)
from ._layout import USE, Layout, plan
from ._polling import PollingWaits
from ._records import due_view, reclaim
from ._rows import (
    COLUMNS,
    EXTRA_COLUMNS,
    WRITTEN,
    expired_sql,
    finish_buckets,
    finished_counts_sql,
    live_holder,
    readable_status,
    record_from_row,
    row_of,
    search_batch,
    search_clauses,
    stale_locks_sql,
    status_filters,
    unique_lock_sql,
)
from .base import (
    EXACT_COUNT_LIMIT,
    RELEASE,
    RETRY,
    QueueDriver,
    RoughCounts,
    Settlement,
    empty_counts,
    retention_cutoffs,
    retention_pass_interval,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

SCHEMA = """
CREATE TABLE IF NOT EXISTS khadem_jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    queue        TEXT NOT NULL,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    reclaims     INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL,
    available_ms INTEGER NOT NULL,
    started_ms   INTEGER,
    finished_ms  INTEGER,
    lease_ms     INTEGER,
    token        TEXT,
    key          TEXT,
    payload      TEXT NOT NULL,
    result       TEXT,
    error        TEXT,
    traceback    TEXT,
    meta         TEXT NOT NULL DEFAULT '{}',
    failure      TEXT,
    keep_ms      INTEGER,
    lane         TEXT,
    lane_rule    TEXT,
    on_upstream_failure TEXT,
    extra        TEXT
);
CREATE INDEX IF NOT EXISTS khadem_jobs_lease ON khadem_jobs (lease_ms) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS khadem_jobs_status ON khadem_jobs (status, seq);
CREATE INDEX IF NOT EXISTS khadem_jobs_key ON khadem_jobs (key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS khadem_unique (
    key        TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    holds      TEXT NOT NULL,
    expires_ms INTEGER
);
CREATE TABLE IF NOT EXISTS khadem_code (
    digest     TEXT PRIMARY KEY,
    envelope   BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
"""

# indexes over columns a queue file made by an earlier version gains in _add_missing_columns
LATER_SCHEMA = [
    "DROP INDEX IF EXISTS khadem_jobs_claim",  # the claim index before lanes: replaced by the next
    "CREATE INDEX IF NOT EXISTS khadem_jobs_ready ON khadem_jobs (queue, priority DESC, seq) "
    "WHERE status IN ('queued', 'scheduled') AND lane IS NULL",
    # layout 2: the claim walks queued jobs and due scheduled ones apart (CLAIM_READY)
    "CREATE INDEX IF NOT EXISTS khadem_jobs_queued ON khadem_jobs (queue, priority DESC, seq) "
    "WHERE status = 'queued' AND lane IS NULL",
    "CREATE INDEX IF NOT EXISTS khadem_jobs_due ON khadem_jobs (queue, available_ms) "
    "WHERE status = 'scheduled' AND lane IS NULL",
    *lane_index_sql("khadem_jobs", "khadem_jobs"),
    *starts_table_sql("khadem_starts", "khadem_starts_lane"),
    workers_table_sql("khadem_workers"),
    *edges_table_sql("khadem_edges", "khadem_edges_child"),
    sqlite_trigger_sql("khadem_jobs", "khadem_edges"),
    # the keyed store (``QueueDriver.kv_put``): bytes under a key, with an optional expiry
    "CREATE TABLE IF NOT EXISTS khadem_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_ms INTEGER)",
    # shipped code kept in its own table by earlier versions moves into the keyed store, once
    "INSERT OR IGNORE INTO khadem_kv (key, value, expires_ms) SELECT 'code/' || digest, envelope, NULL "
    "FROM khadem_code",
    "DELETE FROM khadem_code",
]
# columns added to khadem_jobs since the first file layout (and in SCHEMA): a file made before
# gains them, empty
LATER_COLUMNS = (("failure", "TEXT"), ("keep_ms", "INTEGER"), ("lane", "TEXT"), ("lane_rule", "TEXT"),
                 ("on_upstream_failure", "TEXT"), ("extra", "TEXT"))
# schedules that earlier versions kept in a table of their own move into the keyed store
# (``QueueDriver.save_schedule``), with their last fired slots; the table goes
SCHEDULES_MOVE = [
    "INSERT OR IGNORE INTO khadem_kv (key, value, expires_ms) "
    "SELECT 'schedules/' || id, CAST(spec AS BLOB), NULL FROM khadem_schedules",
    "INSERT OR IGNORE INTO khadem_kv (key, value, expires_ms) "
    "SELECT 'fired/' || id, CAST(json_object('slot', last_slot, 'job', last_job) AS BLOB), "
    "NULL FROM khadem_schedules WHERE last_slot IS NOT NULL",
    "DROP TABLE khadem_schedules",
]
#: the file's layout versions (``_layout``): 1 is the first that stores its version; a file
#: written before (0) gains what LATER_COLUMNS, LATER_SCHEMA and SCHEDULES_MOVE bring
LAYOUT = Layout(2, 1)  # 2 adds only the claim's indexes (LATER_SCHEMA)
KV_LIVE = "(expires_ms IS NULL OR expires_ms > ?)"
KV_SCAN = f"SELECT key, value FROM khadem_kv WHERE key >= ? AND key < ? AND {KV_LIVE}"
KV_IN = f"SELECT key, value FROM khadem_kv WHERE key IN (SELECT value FROM json_each(?)) AND {KV_LIVE}"
KV_PUT = ("INSERT INTO khadem_kv (key, value, expires_ms) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
          "SET value = excluded.value, expires_ms = excluded.expires_ms")
#: an upsert that replaces only an expired value: no row changes while a live one is there
KV_PUT_NEW = ("INSERT INTO khadem_kv (key, value, expires_ms) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
              "SET value = excluded.value, expires_ms = excluded.expires_ms "
              "WHERE khadem_kv.expires_ms IS NOT NULL AND khadem_kv.expires_ms <= ?")
LANES = lane_sql("khadem_jobs", "khadem_starts", "?")
UNIQUE_LOCK = unique_lock_sql("khadem_jobs", "khadem_unique", "?")
STALE_LOCKS = stale_locks_sql("khadem_jobs", "khadem_unique", "?")
EXPIRED = expired_sql("khadem_jobs", "?")
TRIM_EVERY = 500  # finished jobs between retention passes (or retention_pass_interval seconds)
TRIM_BY_COUNT = ("DELETE FROM khadem_jobs WHERE seq IN (SELECT seq FROM khadem_jobs WHERE status = ? "
                 "ORDER BY seq DESC LIMIT -1 OFFSET ?)")
TRIM_BY_AGE = "DELETE FROM khadem_jobs WHERE status = ? AND finished_ms < ?"

SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM khadem_jobs"
INSERT_EDGE = "INSERT OR IGNORE INTO khadem_edges (parent, child) VALUES (?, ?)"
INSERT = (f"INSERT INTO khadem_jobs ({', '.join(COLUMNS)}) "
          f"VALUES ({', '.join('?' for _ in COLUMNS)})")
PAUSED = ("EXISTS (SELECT 1 FROM khadem_kv WHERE key = 'paused/' || :queue "
          "AND (expires_ms IS NULL OR expires_ms > :now))")
CLAIM_WHERE = f"""
UPDATE khadem_jobs
   SET status = 'active', attempt = attempt + 1, started_ms = :now, finished_ms = NULL,
       lease_ms = :lease, token = :token || '-' || seq
 WHERE seq IN (SELECT seq FROM khadem_jobs
                WHERE queue = :queue AND status IN ('queued', 'scheduled') AND available_ms <= :now
                      AND {{lane}}{{runs}} AND NOT {PAUSED}
                ORDER BY priority DESC, seq LIMIT :limit)
RETURNING seq, {", ".join(COLUMNS)}
"""
# the claim of jobs without limits walks queued jobs by priority and age (khadem_jobs_queued)
# and due scheduled ones earliest first (khadem_jobs_due), each no further than the batch, so
# delayed jobs not yet due are never walked over; the batch is the best of both
CLAIM_READY = f"""
UPDATE khadem_jobs
   SET status = 'active', attempt = attempt + 1, started_ms = :now, finished_ms = NULL,
       lease_ms = :lease, token = :token || '-' || seq
 WHERE seq IN (SELECT seq FROM (
                 SELECT * FROM (SELECT seq, priority FROM khadem_jobs
                                 WHERE queue = :queue AND status = 'queued' AND lane IS NULL
                                       AND available_ms <= :now{{runs}}
                                 ORDER BY priority DESC, seq LIMIT :limit)
                 UNION ALL
                 SELECT * FROM (SELECT seq, priority FROM khadem_jobs
                                 WHERE queue = :queue AND status = 'scheduled' AND lane IS NULL
                                       AND available_ms <= :now{{runs}}
                                 ORDER BY available_ms LIMIT :limit))
                WHERE NOT {PAUSED}
                ORDER BY priority DESC, seq LIMIT :limit)
RETURNING seq, {", ".join(COLUMNS)}
"""
# a claim that takes only what the claiming worker can run (``features.capabilities.Runs``):
# the names in :names (a JSON array), and with :shipped the jobs whose code carries a seal
RUNS = """
                      AND (name IN (SELECT value FROM json_each(:names))
                           OR (:shipped AND CASE WHEN json_valid(extra)
                                                 THEN instr(json_extract(extra, '$.code'), '.') > 0 END))"""
CLAIM = CLAIM_READY.format(runs="")  # jobs without limits
CLAIM_LANE = CLAIM_WHERE.format(lane="lane = :lane", runs="")  # one lane's jobs (see _lanes)
CLAIM_RUNS = CLAIM_READY.format(runs=RUNS)
CLAIM_LANE_RUNS = CLAIM_WHERE.format(lane="lane = :lane", runs=RUNS)
# a row's meta, or an empty object where it is damaged (a patch of damaged JSON fails)
SOUND_META = "CASE WHEN json_valid(meta) THEN meta ELSE '{}' END"
SETTLE = f"""
UPDATE khadem_jobs
   SET status = ?, attempt = ?, available_ms = ?, started_ms = ?, finished_ms = ?,
       lease_ms = NULL, token = NULL, result = ?, error = ?, traceback = ?,
       meta = json_patch({SOUND_META}, ?), failure = ?
 WHERE id = ? AND token = ? AND status = 'active'
"""
# the holder's settle of a job cancelled while it ran: it records when the job stopped
STOP = f"""
UPDATE khadem_jobs SET token = NULL, finished_ms = ?, meta = json_patch({SOUND_META}, ?)
 WHERE id = ? AND token = ? AND status = 'cancelled'
"""
CANCEL = """
UPDATE khadem_jobs
   SET status = 'cancelled', finished_ms = :now, lease_ms = NULL, traceback = NULL,
       error = :reason || ' (was ' || (CASE WHEN status = 'scheduled' AND available_ms <= :now
                                            THEN 'queued' ELSE status END) || ')',
       token = CASE WHEN status = 'active' THEN token END
 WHERE id = :id AND status IN ('waiting', 'queued', 'scheduled', 'active')
RETURNING token IS NOT NULL
"""


def storage_error(path: str, exc: sqlite3.Error) -> DriverError:
    """The error of the tree for a fault of the SQLite file at ``path``."""
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and any(
            word in text for word in ("malformed", "not a database", "corrupt")):
        return CorruptQueueError(f"the SQLite queue {path!r} is damaged ({text}); restore it from a "
                                 "copy, or move it aside to start a new queue")
    if "readonly" in text or "read-only" in text:
        return DriverError(f"the SQLite queue {path!r} cannot be written ({text}); check the file's "
                           "and its folder's permissions")
    if "locked" in text or "busy" in text:
        return DriverUnavailableError(f"the SQLite queue {path!r} stayed locked by another process "
                                      f"({text})")
    return DriverError(f"the SQLite queue {path!r} failed: {text}")


class SqliteStore:
    """The synchronous half: one connection, used from one thread at a time."""

    def __init__(self, path: str, settings: QueueSettings, busy_timeout_ms: int = 30_000,
                 auto_migrate: bool = True) -> None:
        self.path = path
        self.settings = settings
        self.busy_timeout_ms = busy_timeout_ms
        self.auto_migrate = auto_migrate
        self.layout_change: tuple[int | None, int] | None = None  # what opening did (``_layout``)
        self.conn: sqlite3.Connection | None = None
        self.journal_mode = ""
        self._next_sweep_ms = 0
        self.rules = StoredRules()  # the kinds' stored rules, as claims last read them
        self._settles_since_trim = 0
        self._next_trim_at = 0.0  # monotonic time of the next retention pass

    def open(self, *, create: bool = True) -> None:
        check_parent_writable(self.path, kind="SQLite database")
        if os.path.isdir(self.path):
            raise DriverError(f"queue path {self.path!r} is a directory; the sqlite driver needs a file")
        if create and not os.path.exists(self.path):  # SQLite gives its WAL and journal the same mode
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout_ms / 1000)
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            conn.execute("PRAGMA recursive_triggers = ON")  # a cancelled child ends its children
            if create:
                self.journal_mode = self._set_journal(conn)
                self.layout_change = _bring_layout(conn, self.auto_migrate, self.path)
            else:
                self.journal_mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            conn.execute("PRAGMA synchronous = NORMAL" if self.journal_mode == "wal"
                         else "PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            raise storage_error(self.path, exc) from exc
        self.conn = conn

    def _set_journal(self, conn: sqlite3.Connection) -> str:
        if is_network_filesystem(self.path):
            logger.warning("%s is on a network filesystem, where SQLite's WAL is unsafe; using the "
                           "rollback journal (slower, still correct)", self.path)
            return self._pragma(conn, "PRAGMA journal_mode = DELETE")
        mode = self._pragma(conn, "PRAGMA journal_mode")  # WAL, once set, stays with the file
        if mode != "wal":
            mode = self._pragma(conn, "PRAGMA journal_mode = WAL")
        if mode != "wal":
            logger.warning("SQLite refused WAL for %s (journal_mode is %r); writers will block readers",
                           self.path, mode)
        return mode

    def _pragma(self, conn: sqlite3.Connection, statement: str) -> str:
        """``statement``'s answer, as lowercase text. Changing the journal mode can answer
        "database is locked" at once, without the busy timeout, while another process opens
        the same new file: tried again with backoff until the busy timeout has passed."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        delay = 0.01
        while True:
            try:
                return str(conn.execute(statement).fetchone()[0]).lower()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(0.5, delay * 2)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _db(self) -> sqlite3.Connection:
        if self.conn is None:
            raise DriverError(f"the SQLite queue {self.path!r} is closed")
        return self.conn

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error)."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            value = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return value

    def insert(self, records: Sequence[JobRecord]) -> None:
        if any(r.parents for r in records):
            self.write(lambda conn: _insert(conn, records))
            return
        extras: dict[tuple[Any, ...], str | None] = {}
        rows = [row_of(r, extras) for r in records]
        self.write(lambda conn: conn.executemany(INSERT, rows))

    def insert_keyed(self, record: JobRecord, lock: Lock) -> str | None:
        """Insert ``record`` with ``lock`` unless a live lock holds its key (its job's id then)."""
        read, write = UNIQUE_LOCK

        def run(conn: sqlite3.Connection) -> str | None:
            holder = live_holder(conn.execute(read, (lock.key,)).fetchone(), now_ms())
            if holder is not None:
                return holder
            conn.execute(write, (lock.key, record.id, lock.holds_text, lock.expires_ms))
            _insert(conn, [record])
            return None

        return self.write(run)

    def claim(self, queues: Sequence[str], limit: int, free: Mapping[str, int] | None = None,
              runs: Runs | None = None) -> list[JobRecord]:
        """Claim up to ``limit`` due jobs: in each queue, those of its lanes that may start
        now (``_lanes``), then those without limits. ``free``: the claiming worker's free units;
        ``runs``: the jobs it can run (``None``: any)."""
        plain, laned = (CLAIM, CLAIM_LANE) if runs is None else (CLAIM_RUNS, CLAIM_LANE_RUNS)
        names = None if runs is None else _names_json(runs.names)
        shipped = runs is not None and runs.shipped

        def run(conn: sqlite3.Connection) -> list[JobRecord]:
            now = now_ms()
            if now >= self._next_sweep_ms:
                self._reclaim_expired(conn, now)
                conn.execute(LANES.forget_starts, (oldest_start_kept(now),))
                self._next_sweep_ms = now + int(self.settings.lease_s * 250)
            claimed: list[JobRecord] = []
            for queue in queues:
                claimed += self._claim_lanes(conn, laned, queue, now, limit - len(claimed), free,
                                             names, shipped)
                if len(claimed) < limit:
                    claimed += self._claim_where(conn, plain, queue, now, limit - len(claimed),
                                                 None, names, shipped)
                if len(claimed) >= limit:
                    break
            return claimed

        return self.write(run)

    def _claim_where(self, conn: sqlite3.Connection, statement: str, queue: str, now: int, limit: int,
                     lane: str | None = None, names: str | None = None,
                     shipped: bool = False) -> list[JobRecord]:
        params = {"now": now, "lease": now + int(self.settings.lease_s * 1000), "token": new_token(),
                  "queue": queue, "limit": limit, "lane": lane, "names": names, "shipped": shipped}
        rows = conn.execute(statement, params).fetchall()
        return [record_from_row(row[1:]) for row in sorted(rows, key=lambda row: (-row[5], row[0]))]

    def _claim_lanes(self, conn: sqlite3.Connection, statement: str, queue: str, now: int, want: int,
                     free: Mapping[str, int] | None, names: str | None, shipped: bool) -> list[JobRecord]:
        waiting = conn.execute(LANES.waiting, (queue, now)).fetchall()
        if not waiting:
            return []
        prefix = rules_prefix(queue)
        found = self.rules.fresh(queue)
        if found is None:
            found = self.rules.keep(queue, dict(conn.execute(KV_SCAN, (prefix, scan_end(prefix), now))))
        order = lane_order(waiting, found)
        keys = served_keys(queue, order)
        served = served_of(keys, conn.execute(KV_IN, (json.dumps(list(keys)), now))) if keys else {}
        held = held_by_lane(conn.execute(LANES.held, (queue, now)))
        plan = ClaimPlan(now, held, lambda lane, window_ms: [
            row[0] for row in conn.execute(LANES.starts, (queue, lane, now - window_ms))], free)
        claimed: list[JobRecord] = []

        def take(lane: str, rule: LaneRule, n: int) -> int:
            room = min(plan.room(lane, rule), n)
            if room <= 0:
                return 0
            taken = self._claim_where(conn, statement, queue, now, room, lane, names, shipped)
            for record in taken:
                plan.admit(lane, rule)
                claimed.append(record)
            if rule.rate is not None and taken:
                conn.execute(LANES.started, (len(taken), queue, lane, now))
            return len(taken)

        turns = take_in_turns(order, want, take, served)
        expires = expiry(now, SERVED_TTL_S)
        conn.executemany(KV_PUT, [(key, value, expires) for key, value in new_turns(queue, turns, served)])
        return claimed

    def lane_use(self, queue: str, lanes: Mapping[str, LaneRule]) -> dict[str, LaneUse]:
        conn, now = self._db(), now_ms()
        held = held_by_lane(conn.execute(LANES.held, (queue, now)))
        use = {}
        for lane, rule in lanes.items():
            since = now - (rule.rate.window_ms if rule.rate else 0)
            starts = [row[0] for row in conn.execute(LANES.starts, (queue, lane, since))] if rule.rate else []
            use[lane] = LaneUse(held.get(lane, 0), len(starts))
        return use

    def _reclaim_expired(self, conn: sqlite3.Connection, now: int) -> None:
        rows = conn.execute(f"{SELECT} WHERE status = 'active' AND lease_ms < ?", (now,)).fetchall()
        for row in rows:
            record = reclaim(record_from_row(row), now, self.settings.max_reclaims)
            conn.execute(
                "UPDATE khadem_jobs SET status = ?, reclaims = ?, available_ms = ?, started_ms = ?,"
                " finished_ms = ?, error = ?, traceback = ?, failure = ?, token = NULL, lease_ms = NULL"
                " WHERE id = ? AND status = 'active' AND lease_ms < ?",
                (record.status.value, record.reclaims, record.available_ms, record.started_ms,
                 record.finished_ms, record.error, record.traceback, record.failure, record.id, now))
            logger.warning("job %s (%s): lease expired, %s", record.name, record.id,
                           "failed" if record.status is JobStatus.FAILED else "requeued")

    def settle(self, held: JobRecord, settlement: Settlement) -> str | None:
        """Write ``settlement`` if the row is still active under ``held``'s token (``"settled"``),
        or stop it if it was cancelled while held under that token (``"stopped"``); ``None``
        where the job is no longer held under that token."""
        record = held.copy()
        settlement.apply(record)
        token = held.token
        params = (record.status.value, record.attempt, record.available_ms, record.started_ms,
                  record.finished_ms, None if record.result is None else dumps(record.result),
                  record.error, record.traceback, dumps(record.meta), record.failure, record.id, token)

        def run(conn: sqlite3.Connection) -> str | None:
            if conn.execute(SETTLE, params).rowcount:
                return "settled"
            stop = (settlement.at_ms, dumps(held.meta), held.id, token)
            return "stopped" if conn.execute(STOP, stop).rowcount else None

        outcome = self.write(run)
        if outcome is not None and record.status in TERMINAL_STATUSES:
            self._settles_since_trim += 1
            if self._settles_since_trim >= TRIM_EVERY or time.monotonic() >= self._next_trim_at:
                self.trim()
        return outcome

    def cancel(self, job_ids: Sequence[str], reason: str) -> tuple[list[str], list[str]]:
        """Cancel what is pending or running among ``job_ids`` in one transaction (claims take
        the same write lock); returns the ids cancelled and, of them, those that were running."""
        now = now_ms()

        def run(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
            cancelled, running = [], []
            for job_id in job_ids:
                row = conn.execute(CANCEL, {"now": now, "reason": reason, "id": job_id}).fetchone()
                if row is not None:
                    cancelled.append(job_id)
                    if row[0]:
                        running.append(job_id)
            return cancelled, running

        return self.write(run)

    def trim(self) -> None:
        """Apply retention: the newest completed (failed) records by count, then by age."""
        self._settles_since_trim = 0
        self._next_trim_at = time.monotonic() + retention_pass_interval(self.settings)
        s = self.settings
        completed_before, failed_before = retention_cutoffs(s)
        passes: list[tuple[str, tuple[str, int]]] = [(TRIM_BY_COUNT, ("completed", s.retention))]
        if s.failed_retention is not None:
            passes.append((TRIM_BY_COUNT, ("failed", s.failed_retention)))
        passes += [(TRIM_BY_AGE, (status, cutoff)) for status, cutoff in
                   (("completed", completed_before), ("failed", failed_before)) if cutoff is not None]

        def run(conn: sqlite3.Connection) -> None:
            for sql, params in passes:
                conn.execute(sql, params)
            conn.execute(EXPIRED, (now_ms(),))
            conn.execute(STALE_LOCKS, (now_ms(),))
            conn.execute("DELETE FROM khadem_kv WHERE expires_ms <= ?", (now_ms(),))

        self.write(run)

    def heartbeat(self, leases: Sequence[tuple[str, str | None]]) -> list[bool]:
        lease = now_ms() + int(self.settings.lease_s * 1000)

        def run(conn: sqlite3.Connection) -> list[bool]:
            sql = "UPDATE khadem_jobs SET lease_ms = ? WHERE id = ? AND token = ? AND status = 'active'"
            return [conn.execute(sql, (lease, job_id, token)).rowcount == 1 for job_id, token in leases]

        return self.write(run)

    def update_meta(self, job_id: str, token: str | None, meta: dict[str, Any]) -> bool:
        sql = (f"UPDATE khadem_jobs SET meta = json_patch({SOUND_META}, ?) "
               "WHERE id = ? AND token = ? AND status = 'active'")
        return bool(self.write(lambda conn: conn.execute(sql, (dumps(meta), job_id, token)).rowcount))

    def get(self, job_id: str) -> JobRecord | None:
        row = self._db().execute(f"{SELECT} WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else due_view(record_from_row(row))

    def _rows_where_in(self, select: str, column: str, values: Sequence[str]) -> Iterator[Any]:
        """Rows of ``select WHERE column IN values``, in chunks under SQLite's variable limit."""
        for start in range(0, len(values), IN_CHUNK):
            chunk = values[start : start + IN_CHUNK]
            sql = f"{select} WHERE {column} IN ({', '.join('?' for _ in chunk)}) ORDER BY seq"
            yield from self._db().execute(sql, chunk).fetchall()

    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        records = (due_view(record_from_row(row)) for row in self._rows_where_in(SELECT, "id", job_ids))
        found = {r.id: r for r in records}
        return [found.get(job_id) for job_id in job_ids]

    def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        found = dict(self._rows_where_in("SELECT id, status FROM khadem_jobs", "id", job_ids))
        return [None if (s := found.get(i)) is None else JobStatus(s) for i in job_ids]

    def jobs(self, status: JobStatus | None, queue: str | None, limit: int | None) -> list[JobRecord]:
        where, params = status_filters(status, queue, "?")
        order = "ORDER BY seq DESC LIMIT ?" if limit else "ORDER BY seq"
        sql = f"{SELECT} {where} {order}"
        rows = self._db().execute(sql, (*params, limit) if limit else params).fetchall()
        records = [due_view(record_from_row(row)) for row in (reversed(rows) if limit else rows)]
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            records = [r for r in records if r.status is status]
        return records

    def search(self, query: JobQuery) -> JobPage:
        """A page of ``query`` in SQL, newest first, paged by sequence number."""
        clauses, values = search_clauses(query, "?", "instr", "substr(id, 1, ?)")
        pages = sql_pages(query, search_batch(query))
        conn = self._db()
        try:
            after, n = next(pages)
            while True:
                where = " AND ".join([*clauses, *(["seq < ?"] if after is not None else [])]) or "1"
                rows = conn.execute(f"SELECT seq, {', '.join(COLUMNS)} FROM khadem_jobs WHERE {where} "
                                    "ORDER BY seq DESC LIMIT ?",
                                    (*values, *([after] if after is not None else []), n)).fetchall()
                after, n = pages.send([(row[0], due_view(record_from_row(row[1:]))) for row in rows])
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def finished_counts(self, since_ms: int, bucket_ms: int) -> dict[int, tuple[int, int]]:
        sql = finished_counts_sql("khadem_jobs", "?")
        return finish_buckets(self._db().execute(sql, (since_ms, bucket_ms, since_ms)).fetchall())

    def queue_names(self) -> list[str]:
        return [row[0] for row in self._db().execute("SELECT DISTINCT queue FROM khadem_jobs ORDER BY 1")]

    def counts(self, queue: str | None) -> dict[JobStatus, int]:
        where, params = status_filters(None, queue, "?")
        now = now_ms()
        sql = (f"SELECT CASE WHEN status IN ('queued', 'scheduled') THEN "
               f"(CASE WHEN available_ms > ? THEN 'scheduled' ELSE 'queued' END) ELSE status END, "
               f"COUNT(*) FROM khadem_jobs {where} GROUP BY 1")
        counts = empty_counts()
        for status, n in self._db().execute(sql, (now, *params)).fetchall():
            counts[readable_status(status)] += n
        return counts

    def rough_counts(self, queue: str | None) -> RoughCounts:
        """Each status counted through the status index no further than EXACT_COUNT_LIMIT
        records: a status with more reads as that many, marked ``"≥"`` (queued too where the
        due scheduled jobs reach the limit). Rows of a status no version writes are left out
        (``counts`` counts them as failed)."""
        mine = " AND queue = ?" if queue is not None else ""
        limit = EXACT_COUNT_LIMIT + 1
        due_now = "status = 'scheduled' AND available_ms <= ?"
        wheres = [*(f"status = '{status.value}'" for status in JobStatus), due_now]
        sql = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM (SELECT 1 FROM khadem_jobs WHERE {where}{mine} "
                                   f"LIMIT {limit}))" for where in wheres)
        params = [*([queue] * len(JobStatus) if queue is not None else []), now_ms(),
                  *([queue] if queue is not None else [])]
        *found, due = self._db().execute(sql, params).fetchone()
        found_by_status = dict(zip(JobStatus, found, strict=True))
        marks = {status: "≥" for status, n in found_by_status.items() if n >= limit}
        if due >= limit:
            marks[JobStatus.QUEUED] = "≥"
        counts = {status: min(n, EXACT_COUNT_LIMIT) for status, n in found_by_status.items()}
        counts[JobStatus.QUEUED] += min(due, EXACT_COUNT_LIMIT)  # due scheduled jobs read as queued
        counts[JobStatus.SCHEDULED] -= min(due, EXACT_COUNT_LIMIT)
        return counts, marks

    def requeue(self, job_ids: Sequence[str]) -> int:
        now = now_ms()
        # failed, or a status no version writes (it reads as failed)
        sql = ("UPDATE khadem_jobs SET status = 'queued', attempt = 0, reclaims = 0, available_ms = ?,"
               " started_ms = NULL, finished_ms = NULL, error = NULL, failure = NULL WHERE id = ? AND"
               f" status NOT IN {WRITTEN}")

        def run(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(sql, (now, job_id)).rowcount for job_id in job_ids)

        return self.write(run)

    def forget(self, job_ids: Sequence[str]) -> int:
        sql = "DELETE FROM khadem_jobs WHERE id = ? AND status IN ('completed', 'failed', 'cancelled')"

        def run(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(sql, (job_id,)).rowcount for job_id in dict.fromkeys(job_ids))

        return self.write(run)

    def find_by_keys(self, keys: Sequence[str]) -> dict[str, JobRecord]:
        records = (due_view(record_from_row(row)) for row in self._rows_where_in(SELECT, "key", keys))
        return {r.key or "": r for r in records}  # rows come in seq order: the newest per key wins

    # -- the keyed store -----------------------------------------------------------------------
    def kv_write(self, key: str, value: bytes, expires_ms: int | None, only_new: bool) -> bool:
        if only_new:
            values = (key, value, expires_ms, now_ms())
            return bool(self.write(lambda conn: conn.execute(KV_PUT_NEW, values).rowcount))
        self.write(lambda conn: conn.execute(KV_PUT, (key, value, expires_ms)))
        return True

    def kv_get(self, key: str) -> bytes | None:
        row = self._db().execute(f"SELECT value FROM khadem_kv WHERE key = ? AND {KV_LIVE}",
                                 (key, now_ms())).fetchone()
        return None if row is None else bytes(row[0])

    def kv_scan(self, prefix: str) -> dict[str, bytes]:
        rows = self._db().execute(KV_SCAN, (prefix, scan_end(prefix), now_ms())).fetchall()
        return {key: bytes(value) for key, value in rows}

    def kv_delete(self, key: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            sql = f"SELECT 1 FROM khadem_kv WHERE key = ? AND {KV_LIVE}"
            found = conn.execute(sql, (key, now_ms())).fetchone()
            conn.execute("DELETE FROM khadem_kv WHERE key = ?", (key,))
            return found is not None

        return self.write(run)

    def purge(self) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM khadem_jobs")
            conn.execute("DELETE FROM khadem_code")
            conn.execute("DELETE FROM khadem_kv")
            conn.execute("DELETE FROM khadem_unique")
            conn.execute("DELETE FROM khadem_edges")
            for table in ("khadem_starts", "khadem_workers"):
                conn.execute(f"DELETE FROM {table}")

        self.write(run)


@functools.lru_cache(maxsize=16)
def _names_json(names: frozenset[str]) -> str:
    """The names of a ``Runs`` filter as the claim statement reads them: made once per filter."""
    return json.dumps(sorted(names))


def _stored_layout(conn: sqlite3.Connection) -> int | None:
    """The file's layout version (``PRAGMA user_version``: 0 for a file written before versions
    were stored); ``None`` for a file with no queue in it yet."""
    jobs = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'khadem_jobs'"
    if conn.execute(jobs).fetchone() is None:
        return None
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _bring_layout(conn: sqlite3.Connection, auto_migrate: bool, path: str) -> tuple[int | None, int] | None:
    """Create the queue in a new file, or bring an older layout to LAYOUT where ``auto_migrate``
    allows (``_layout.plan``), in one transaction that holds the file's write lock, so two
    processes opening it at once do it once; what it did, or ``None``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _stored_layout(conn)
        if plan(found, LAYOUT, auto_migrate, path) == USE:
            conn.execute("COMMIT")
            return None
        for statement in _layout_statements(conn):
            conn.execute(statement)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found, LAYOUT.current


def _layout_statements(conn: sqlite3.Connection) -> list[str]:
    """The statements that bring the file, as it is now, to LAYOUT: the tables and indexes
    (each idempotent), the columns added since earlier versions (empty), the fields they kept
    in columns of their own moved into ``extra``, and schedules kept in a table of their own
    moved into the keyed store."""
    statements = [statement.strip() for statement in SCHEMA.split(";") if statement.strip()]
    present = {row[1] for row in conn.execute("PRAGMA table_info(khadem_jobs)")}
    if present:
        statements += [f"ALTER TABLE khadem_jobs ADD COLUMN {column} {kind}" for column, kind in LATER_COLUMNS
                       if column not in present]
        statements += _extra_moves([column for column in EXTRA_COLUMNS if column in present])
    statements += LATER_SCHEMA
    found = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'khadem_schedules'"
    if conn.execute(found).fetchone() is not None:
        statements += SCHEDULES_MOVE
    return [*statements, f"PRAGMA user_version = {LAYOUT.current}"]


def _extra_moves(columns: list[str]) -> list[str]:
    """Move the fields that earlier versions kept in columns of their own (``columns``, among
    EXTRA_COLUMNS) into ``extra``, one JSON object a row without its null fields
    (``json_patch`` drops them), and drop those columns."""
    if not columns:
        return []
    pairs = ", ".join(f"'{c}', json({c})" if c == "parents" else f"'{c}', {c}" for c in columns)
    some = " OR ".join(f"{c} IS NOT NULL" for c in columns)
    return [f"UPDATE khadem_jobs SET extra = NULLIF(json_patch(coalesce(extra, '{{}}'), "
            f"json_object({pairs})), '{{}}') WHERE {some}",
            *(f"ALTER TABLE khadem_jobs DROP COLUMN {column}" for column in columns)]


def _insert(conn: sqlite3.Connection, records: Sequence[JobRecord]) -> None:
    """Insert ``records`` inside the open transaction; a job with parents is judged against
    them here, and waits with one edge per parent that has not ended."""
    now = now_ms()
    for record in records:
        if record.parents:
            found = dict(conn.execute(f"SELECT id, status FROM khadem_jobs WHERE id IN "
                                      f"({', '.join('?' for _ in record.parents)})", record.parents))
            left = place_child(record, {p: readable_status(found[p]) if p in found else None
                                         for p in record.parents}, now)
            conn.executemany(INSERT_EDGE, edge_rows(record, left))
        conn.execute(INSERT, row_of(record))


IN_CHUNK = 500  # ids per "IN (...)" query, well under SQLite's bound-variable limit
IO_MODES = ("auto", "thread", "inline")
THREAD_ONLY = frozenset({"jobs", "counts", "find_by_keys", "purge", "requeue", "get_many", "statuses",
                         "cancel", "store_code", "load_code"})


class SqliteDriver(QueueDriver):
    """Durable, multi-process, at-least-once queue in one SQLite file."""

    uses_leases: ClassVar[bool] = True
    layout: ClassVar[Layout] = LAYOUT

    def __init__(self, settings: QueueSettings | str | Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        settings = self.settings
        self.path = local_path(settings)
        # waits for locks; used on the I/O thread
        self.store = SqliteStore(self.path, settings, auto_migrate=self.auto_migrate)
        self.fast = SqliteStore(self.path, settings, busy_timeout_ms=0)  # never waits; on the loop
        self.fast.rules = self.store.rules  # one view of the stored rules for both
        self.io = str(settings.options.get("io", "auto"))
        if self.io not in IO_MODES:
            raise ConfigError(f"queue.options.io must be one of {', '.join(IO_MODES)}, got {self.io!r}")
        self._thread: ThreadPoolExecutor | None = None
        self._waits = PollingWaits()

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="khadem-sqlite")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _call(self, method: Callable[Concatenate[SqliteStore, P], T], *args: P.args,
                    **kwargs: P.kwargs) -> T:
        """Run a ``SqliteStore`` method per ``options.io`` (see the module docstring); a
        storage fault becomes an error of the tree that names the file."""
        try:
            return await self._run(method, *args, **kwargs)
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc

    async def _run(self, method: Callable[Concatenate[SqliteStore, P], T], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        if self.io == "inline":
            return method(self.store, *args, **kwargs)
        if self.io == "auto" and method.__name__ not in THREAD_ONLY:
            try:
                return method(self.fast, *args, **kwargs)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
        return await self._in_thread(functools.partial(method, self.store, *args, **kwargs))

    async def open(self) -> None:
        await self._in_thread(self.store.open)
        await self._in_thread(functools.partial(self.fast.open, create=False))
        self.layout_change = self.store.layout_change

    async def layout_statements(self) -> list[str]:
        """What ``khadem-nb migrate`` would run on this file now, as one transaction; nothing
        where it is at this release's layout or newer."""
        def read() -> list[str]:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                found = _stored_layout(conn)
                if plan(found, LAYOUT, True, self.path) == USE:
                    return []
                return ["BEGIN IMMEDIATE", *_layout_statements(conn), "COMMIT"]
            finally:
                conn.close()

        if not os.path.exists(self.path):
            raise DriverError(f"no SQLite queue at {self.path!r}")
        try:
            return await self._in_thread(read)
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc

    async def close(self) -> None:
        self.fast.close()
        await self._in_thread(self.store.close)
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    @property
    def journal_mode(self) -> str:
        return self.store.journal_mode

    async def push(self, records: Sequence[JobRecord]) -> None:
        await self._call(SqliteStore.insert, records)
        self._waits.wake()

    async def push_keyed(self, record: JobRecord, lock: Lock) -> str | None:
        holder = await self._call(SqliteStore.insert_keyed, record, lock)
        if holder is None:
            self._waits.wake()
        return holder

    def rules_changed(self) -> None:
        self.store.rules.forget()

    def wake_claims(self) -> None:
        self._waits.wake()

    def interrupt_waits(self) -> None:
        self._waits.interrupt()

    async def reserve(self, queues: Sequence[str], limit: int, wait_s: float,
                      free: Mapping[str, int] | None = None, runs: Runs | None = None) -> list[JobRecord]:
        claim = functools.partial(self._call, SqliteStore.claim, queues, limit, free, runs)
        return await self._waits.reserve(claim, wait_s)

    async def heartbeat(self, records: Sequence[JobRecord]) -> list[bool]:
        return await self._call(SqliteStore.heartbeat, [(r.id, r.token) for r in records])

    async def _settle(self, record: JobRecord, settlement: Settlement) -> bool:
        outcome = await self._call(SqliteStore.settle, record, settlement)
        if outcome == "settled":
            settlement.apply(record)
            if settlement.verb is RETRY or settlement.verb is RELEASE or record.lane is not None:
                self._waits.wake()  # a job to claim, or a slot of its lane free again
        elif outcome == "stopped":
            settlement.stop(record)
        return outcome is not None

    async def cancel(self, job_ids: Sequence[str], reason: str) -> list[str]:
        cancelled, _ = await self._call(SqliteStore.cancel, list(job_ids), reason)
        return cancelled

    async def update_meta(self, record: JobRecord, meta: dict[str, Any]) -> bool:
        return await self._call(SqliteStore.update_meta, record.id, record.token, meta)

    async def get(self, job_id: str) -> JobRecord | None:
        return await self._call(SqliteStore.get, job_id)

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        return await self._call(SqliteStore.get_many, list(job_ids))

    async def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        return await self._call(SqliteStore.statuses, list(job_ids))

    async def jobs(self, status: JobStatus | None = None, queue: str | None = None,
                   limit: int | None = None) -> list[JobRecord]:
        return await self._call(SqliteStore.jobs, status, queue, limit)

    async def search(self, query: JobQuery) -> JobPage:
        return await self._call(SqliteStore.search, query)

    async def finished_counts(self, since_ms: int, bucket_ms: int) -> dict[int, tuple[int, int]]:
        return await self._call(SqliteStore.finished_counts, since_ms, bucket_ms)

    async def queue_names(self) -> list[str]:
        return await self._call(SqliteStore.queue_names)

    async def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        return await self._call(SqliteStore.counts, queue)

    async def rough_counts(self, queue: str | None = None) -> RoughCounts:
        return await self._call(SqliteStore.rough_counts, queue)

    async def requeue(self, job_ids: Iterable[str]) -> int:
        count = await self._call(SqliteStore.requeue, list(job_ids))
        if count:
            self._waits.wake()
        return count

    async def forget(self, job_ids: Sequence[str]) -> int:
        return await self._call(SqliteStore.forget, list(job_ids))

    async def trim(self) -> None:
        """Apply retention now (settles also run it every few hundred jobs)."""
        await self._call(SqliteStore.trim)

    async def find_by_keys(self, keys: Sequence[str]) -> dict[str, JobRecord]:
        return await self._call(SqliteStore.find_by_keys, list(keys))

    async def lane_use(self, queue: str, lanes: Mapping[str, LaneRule]) -> dict[str, LaneUse]:
        return await self._call(SqliteStore.lane_use, queue, lanes)

    async def _kv_write(self, key: str, value: bytes, ttl_s: float | None, *, only_new: bool) -> bool:
        return await self._call(SqliteStore.kv_write, key, value, expiry(now_ms(), ttl_s), only_new)

    async def kv_get(self, key: str) -> bytes | None:
        return await self._call(SqliteStore.kv_get, check_key(key))

    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        return await self._call(SqliteStore.kv_scan, check_prefix(prefix))

    async def kv_delete(self, key: str) -> bool:
        return await self._call(SqliteStore.kv_delete, check_key(key))

    async def purge(self) -> None:
        await self._call(SqliteStore.purge)
