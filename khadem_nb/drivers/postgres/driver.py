"""PostgreSQL driver: many processes on many machines, on the database the application has.

- psycopg 3 and its async pool. The schema (``?schema=``, default ``khadem``) is created at
  open, with a version table; a schema written by a newer version is refused, never altered.
- Times are the server's (``clock_timestamp()``), so client clocks never matter.
- A claim is one statement: it puts back expired leases (or fails them after
  ``queue.max_reclaims``) and takes a batch of due jobs with ``FOR UPDATE SKIP LOCKED``,
  highest priority first, FIFO within one, through a partial index of pending rows, so it
  stays fast with millions of finished rows kept. A claim grants a lease and a fresh token;
  every later write is fenced by the token.
- Wake-ups: a dispatch, retry or requeue sends ``NOTIFY``; idle workers ``LISTEN``; a settle
  or a cancel notifies waiters in other processes (``watch``). At open
  the driver notifies itself; if that notice never arrives (a transaction-pooling proxy), it
  polls with backoff and logs why (``queue.options.listen_url`` can point the listener at the
  server directly). The listening connection reconnects after a server restart.
- ``dispatch(job, connection=conn)`` writes the job inside the application's own transaction
  (psycopg ``AsyncConnection`` or ``Connection``): it exists exactly when that commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..._ids import new_token
from ..._time import now_ms
from ...config import URL_QUERY_KEYS, QueueSettings
from ...errors import ConfigError, DriverError, DriverUnavailableError
from ...features.capabilities import Runs
from ...features.dependencies import place_child
from ...features.flow import ClaimPlan, LaneRule, LaneUse, claim_turns
from ...features.search import JobPage, JobQuery, sql_pages
from ...features.unique import Lock
from ...job import JobRecord, JobStatus
from ...serializer import dumps
from .._batches import TurnBatch, through_outage
from .._deps import edge_rows
from .._kv import check_key, check_prefix, scan_end
from .._lanes import (
    SERVED_TTL_S,
    StoredRules,
    held_by_lane,
    lane_order,
    lane_sql,
    new_turns,
    oldest_start_kept,
    rules_prefix,
    served_keys,
    served_of,
)
from .._layout import USE, Layout, plan
from .._polling import PollingWaits
from .._records import due_view
from .._rows import (
    COLUMNS,
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
from ..base import (
    LEASE_LOST_ERROR,
    RELEASE,
    RETRY,
    AbortNotice,
    QueueDriver,
    RoughCounts,
    Settlement,
    SettleNotice,
    Unsubscribe,
    empty_counts,
    retention_cutoffs,
    retention_pass_interval,
)
from .listener import POLL_FALLBACK_S, Listener
from .schema import (
    FINISHING_VERBS,
    NOW,
    RECLAIM_EVERY_S,
    RUNS_SQL,
    SCHEMA_LOCK,
    SCHEMA_VERSION,
    SELECT_COLUMNS,
    SETTLE_ARRAYS,
    SETTLED_NOW,
    STOPPED,
    UNTOUCHED,
    channels,
    claim_sql,
    layout_sql,
    schema_name,
    settle_sql,
)

logger = logging.getLogger(__name__)

TRIM_EVERY = 500  # finished jobs between retention passes (or retention_pass_interval seconds)
TRIM_BATCH = 5000  # rows one retention statement deletes at most
INSERT_ROWS = 16  # a push of up to this many jobs is one INSERT statement; more go by COPY
KV_LIVE = f"(expires_ms IS NULL OR expires_ms > {NOW})"  # a keyed-store value not expired
LANES_RECHECK_S = 0.5  # a queue whose lanes phase found nothing due is looked at again after this
ESTIMATED_ABOVE = 10_000  # a status with more records (by the planner's estimate) is estimated
DEADLOCK_RETRIES = 5  # times a work is run again after the server broke a deadlock
NO_FILTER: Mapping[str, Any] = {"names": None, "shipped": False}  # a claim's parameters for any job


@dataclass(frozen=True)
class _Claim:
    """The statements of one claim (without limits, one lane's) and their ``Runs`` parameters."""

    plain: str
    laned: str
    params: Mapping[str, Any]


class PostgresDriver(QueueDriver):
    """Durable, many-process, many-machine, at-least-once queue in PostgreSQL."""

    uses_leases: ClassVar[bool] = True
    layout: ClassVar[Layout] = Layout(SCHEMA_VERSION, 11)  # 12 adds only indexes
    auto_migrates: ClassVar[bool] = False  # a schema upgrade is a deploy step (docs/upgrades.md)

    def __init__(self, settings: QueueSettings | str | Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        settings = self.settings
        schema = schema_name(settings.schema)
        self.schema = schema
        self.table = f"{schema}.jobs"
        self.channel, self.abort_channel, self.settled_channel = channels(schema)
        # the settled channel carries "id<TAB>status" lines, for waiters
        #: where the listener connects, when LISTEN cannot go where the pool goes (a
        #: transaction-pooling proxy): ``queue.options.listen_url``, a direct URL
        self.listen_url = str(settings.options.get("listen_url") or "") or None
        #: psycopg prepares a statement run 5 times on a connection; a transaction-pooling proxy
        #: (PgBouncer before 1.21) hands the next transaction another server, where it does not
        #: exist: ``queue.options.prepared_statements: false``, or the first such error, turns
        #: them off
        self._prepared = settings.options.get("prepared_statements", True) is not False
        self._claim = claim_sql(schema)
        self._claim_lane = claim_sql(schema, "lane = %(lane)s")
        self._claim_runs = claim_sql(schema, runs=RUNS_SQL)
        self._any_claim = _Claim(self._claim, self._claim_lane, NO_FILTER)
        self._claim_lane_runs = claim_sql(schema, "lane = %(lane)s", RUNS_SQL)
        self._lanes_sql = lane_sql(self.table, f"{schema}.starts", "%s")
        #: monotonic time until which a queue is taken to hold no due limited job (a lanes
        #: phase found none): its claims skip the lanes phase until then, or until this
        #: process dispatches a limited job to it
        self._no_lanes_until: dict[str, float] = {}
        self._rules = StoredRules()  # the kinds' stored rules, as claims last read them
        self._reclaim_at: dict[str, float] = {}  # monotonic time of each queue's next look for lost leases
        self._settle_sql = settle_sql(self.table, self.channel, self.settled_channel)
        self._unique_lock = unique_lock_sql(self.table, f"{schema}.uniques", "%s")
        self._unique_insert = self._insert_if_locked_sql()
        self._settles: TurnBatch[tuple[JobRecord, Settlement], int] = TurnBatch(self._send_settles)
        self._select = f"SELECT {SELECT_COLUMNS} FROM {self.table}"
        self._lease_ms = int(settings.lease_s * 1000)
        self._pool: Any = None
        self._listener: Listener | None = None
        self._listener_started: asyncio.Task[None] | None = None  # its start and self-test
        self._waits = PollingWaits(POLL_FALLBACK_S)
        self._settles_since_trim = 0
        self._next_trim_at = 0.0

    def default_prefetch(self, concurrency: int) -> int:
        return concurrency // 2

    # -- connections ---------------------------------------------------------------------------
    def conninfo(self) -> str:
        """The URL psycopg connects with: the queue URL without the queue's own settings."""
        from urllib.parse import parse_qsl, urlencode, urlsplit

        parts = urlsplit(self.settings.url or "postgresql://127.0.0.1:5432/")
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in URL_QUERY_KEYS]
        return parts._replace(scheme="postgresql", query=urlencode(query)).geturl()

    def _where(self) -> str:
        """The server and database, for messages (never the password)."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.conninfo())
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}/{parts.path.lstrip('/') or '(default)'}"

    async def open(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        timeout = self.settings.connect_timeout_s
        self._pool = AsyncConnectionPool(self.conninfo(), min_size=1, max_size=8, open=False,
                                         timeout=timeout, kwargs={"autocommit": True},
                                         reconnect_timeout=max(60.0, 2 * self.settings.lease_s))
        try:
            await asyncio.wait_for(self._pool.open(wait=True, timeout=timeout), timeout + 1)
        except Exception as exc:
            await self._pool.close()
            self._pool = None
            raise await self._connect_error(exc) from None
        try:
            await self._run(self._create_schema)
        except BaseException:  # a layout it cannot work on: nothing stays open
            await self._pool.close()
            self._pool = None
            raise

    async def listener(self) -> Listener:
        """The listening connection, started (and self-tested) the first time a worker, a
        waiter or an abort subscription needs it: a process that only dispatches never opens it."""
        listener = self._starting_listener()
        assert self._listener_started is not None
        await asyncio.shield(self._listener_started)
        return listener

    def _starting_listener(self) -> Listener:
        """The listener, its start (and self-test) begun if it was not yet."""
        if self._listener is None:
            self._listener = Listener(self, self._waits)
            self._listener_started = asyncio.get_running_loop().create_task(self._listener.start())
        return self._listener

    async def _connect_error(self, exc: Exception) -> DriverError:
        """Why the pool could not connect: a direct attempt says (auth, no such database)."""
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo(),
                                                         connect_timeout=int(self.settings.connect_timeout_s))
            await conn.close()
        except psycopg.OperationalError as direct:
            text = str(direct).strip().splitlines()[-1] if str(direct).strip() else repr(direct)
            if "password" in text or "authentication" in text or "does not exist" in text:
                return DriverError(f"PostgreSQL at {self._where()} refused the connection: {text}")
            return DriverUnavailableError(f"PostgreSQL at {self._where()} cannot be reached within "
                                          f"{self.settings.connect_timeout_s:g}s: {text}")
        return DriverUnavailableError(f"PostgreSQL at {self._where()} cannot be reached within "
                                      f"{self.settings.connect_timeout_s:g}s ({exc!r})")

    async def _create_schema(self, conn: Any) -> None:
        """Create the schema if it is new, or upgrade it one version at a time where
        ``auto_migrate`` allows (``_layout.plan``), all in one transaction under a lock, so two
        processes opening it at once do it once; a layout it cannot work on is left as it is."""
        async with conn.transaction():
            await conn.execute(SCHEMA_LOCK, (f"khadem schema {self.schema}",))
            found = await self._stored_version(conn)
            if plan(found, self.layout, self.auto_migrate, self._where()) == USE:
                return
            for statement in layout_sql(self.schema, found):
                await conn.execute(statement)
            self.layout_change = (found, SCHEMA_VERSION)

    async def _stored_version(self, conn: Any) -> int | None:
        """The schema's layout version; ``None`` where it holds none yet (a new schema)."""
        table = await (await conn.execute("SELECT to_regclass(%s)", (f"{self.schema}.version",))).fetchone()
        if table is None or table[0] is None:
            return None
        row = await (await conn.execute(f"SELECT max(version) FROM {self.schema}.version")).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    async def layout_statements(self) -> list[str]:
        """What ``khadem-nb migrate`` would run on this schema now, as one transaction; nothing
        where it is at this release's version or newer (``SchemaVersionError`` where newer
        than this release knows)."""
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo(),
                                                         connect_timeout=int(self.settings.connect_timeout_s))
        except psycopg.OperationalError as exc:
            raise await self._connect_error(exc) from exc
        async with conn:
            found = await self._stored_version(conn)
        if plan(found, self.layout, True, self._where()) == USE:
            return []
        lock = SCHEMA_LOCK.replace("%s", "'" + f"khadem schema {self.schema}".replace("'", "''") + "'")
        return ["BEGIN", lock, *layout_sql(self.schema, found), "COMMIT"]

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = self._listener_started = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _run(self, work: Any, *args: Any) -> Any:
        """Run ``work(conn, *args)`` on a pooled connection; faults become errors of the tree.
        Some failures leave nothing done and are worth running the work again: a deadlock
        (two batches of writes over the same rows, in different orders) that the server broke,
        and the first lost prepared statement (see ``_prepared``)."""
        import psycopg

        if self._pool is None:
            raise DriverError(f"the PostgreSQL queue at {self._where()} is closed")
        for attempt in range(DEADLOCK_RETRIES + 1):
            prepared = self._prepared  # another work may turn them off while this one runs
            try:
                async with self._pool.connection() as conn:
                    if not prepared:
                        conn.prepare_threshold = None
                    return await work(conn, *args)
            except psycopg.Error as exc:
                if attempt < DEADLOCK_RETRIES and self._worth_again(exc, prepared):
                    continue
                raise self._error_of(exc) from exc
            except Exception as exc:  # the pool timed out waiting for a connection
                if type(exc).__name__ == "PoolTimeout":
                    raise DriverUnavailableError(f"PostgreSQL at {self._where()} gave no connection within "
                                                 f"{self.settings.connect_timeout_s:g}s") from exc
                raise
        raise AssertionError("unreachable")

    def _worth_again(self, exc: Exception, prepared: bool) -> bool:
        """Whether a work that failed with ``exc`` (run with prepared statements on or off) is
        run again; the first lost prepared statement turns them off for every later work."""
        from psycopg import errors

        if isinstance(exc, errors.DeadlockDetected):
            return True
        lost_statement = isinstance(exc, errors.InvalidSqlStatementName | errors.DuplicatePreparedStatement)
        if not (lost_statement and prepared):
            return False
        if self._prepared:
            self._prepared = False
            logger.warning("PostgreSQL at %s lost a prepared statement (%s): a transaction-pooling proxy? "
                           "Prepared statements are off from now on", self._where(), exc)
        return True

    def _error_of(self, exc: Exception) -> DriverError:
        from psycopg import OperationalError, errors

        if isinstance(exc, OperationalError) and not isinstance(exc, errors.DeadlockDetected):
            return DriverUnavailableError(f"PostgreSQL at {self._where()} failed: {exc}")
        return DriverError(f"PostgreSQL at {self._where()} failed: {exc}")

    async def _fetch(self, sql: str, params: Any = None) -> list[Any]:
        async def work(conn: Any) -> list[Any]:
            cursor = await conn.execute(sql, params)
            return list(await cursor.fetchall()) if cursor.description else []

        return await self._run(work)  # type: ignore[no-any-return]

    async def notify(self, channel: str, payload: str) -> None:
        await self._fetch("SELECT pg_notify(%s, %s)", (channel, payload))

    # -- producing -----------------------------------------------------------------------------
    def _insert_sql(self, rows: int) -> str:
        """One statement: ``rows`` new jobs and a notice to idle workers of their queues."""
        one = f"({', '.join('%s::jsonb' if c == 'meta' else '%s' for c in COLUMNS)})"
        return (f"WITH new AS (INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES "
                f"{', '.join([one] * rows)} RETURNING queue) "
                f"SELECT pg_notify('{self.channel}', queue) FROM (SELECT DISTINCT queue FROM new) AS q")

    def _insert_if_locked_sql(self) -> str:
        """One statement: a unique lock inserted unless its key has one, and the job with it;
        answers whether the lock was inserted (and the job with it)."""
        one = ", ".join("%s::jsonb" if c == "meta" else "%s" for c in COLUMNS)
        return (f"WITH lock AS (INSERT INTO {self.schema}.uniques VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (key) DO NOTHING RETURNING key), "
                f"new AS (INSERT INTO {self.table} ({', '.join(COLUMNS)}) SELECT {one} "
                "WHERE EXISTS (SELECT 1 FROM lock) RETURNING queue), "
                f"told AS (SELECT pg_notify('{self.channel}', queue) FROM new) "
                "SELECT (SELECT count(*) FROM lock), (SELECT count(*) FROM told)")

    async def push(self, records: Sequence[JobRecord]) -> None:
        if any(r.parents for r in records):
            await self._run(lambda conn: self._insert_children(conn, records))
            self._waits.wake()
            return
        rows, queues = self._rows(records)

        async def work(conn: Any) -> None:
            if len(rows) <= INSERT_ROWS:  # one statement: atomic on its own
                await conn.execute(self._insert_sql(len(rows)), [v for row in rows for v in row])
                return
            async with conn.transaction():
                await self._copy(conn, rows, queues)

        await self._run(work)
        self._heard_of_lanes(records)
        self._waits.wake()

    async def _insert_children(self, conn: Any, records: Sequence[JobRecord],
                               lock: tuple[Any, ...] | None = None) -> str | None:
        """Insert jobs some of which have parents, in one transaction that first locks the
        parents' rows (FOR SHARE, so a parent's end waits for this commit or is seen by it) and
        judges each child against them. With ``lock`` (a unique rule's key, job, statuses,
        expiry): first take that lock, or return the id of the live job holding it."""
        self._check_priorities(records)
        parents = sorted({p for r in records for p in r.parents or ()})
        async with conn.transaction():
            if lock is not None:
                holder = await self._take_lock(conn, lock)
                if holder is not None:
                    return holder
            locked = await conn.execute(f"SELECT id, status, in_graph FROM {self.table} "
                                        "WHERE id = ANY(%s) ORDER BY id FOR SHARE", (parents,))
            rows = await locked.fetchall()
            found = {job_id: readable_status(status) for job_id, status, _ in rows}
            marked = {job_id for job_id, _, in_graph in rows if in_graph}
            now = (await (await conn.execute(f"SELECT {NOW}")).fetchone())[0]
            edges = []
            for record in records:
                if record.parents:
                    edges += edge_rows(record, place_child(record, found, now))
            extras: dict[tuple[Any, ...], str | None] = {}
            rows = [v for r in records for v in row_of(r, extras)]
            await conn.execute(self._insert_sql(len(records)), rows)
            if edges:
                await conn.cursor().executemany(f"INSERT INTO {self.schema}.edges (parent, child) "
                                                "VALUES (%s, %s) ON CONFLICT DO NOTHING", edges)
                # the end of each now runs the trigger (a parent once: its later children
                # find it marked and leave its row alone)
                in_graph = sorted({c for _, c in edges} | ({p for p, _ in edges} - marked))
                await conn.execute(f"UPDATE {self.table} SET in_graph = true WHERE id = ANY(%s)",
                                   (in_graph,))
        return None

    async def _take_lock(self, conn: Any, lock: tuple[Any, ...]) -> str | None:
        """Inside a transaction: take a unique lock (key, job, statuses, expiry) unless a live
        job holds it (its id then); concurrent takers of one key wait for each other."""
        read, write = self._unique_lock
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"khadem unique {lock[0]}",))
        found = await (await conn.execute(read + " FOR UPDATE OF u", (lock[0],))).fetchone()
        now = (await (await conn.execute(f"SELECT {NOW}")).fetchone())[0]
        holder = live_holder(found, now)
        if holder is None:
            await conn.execute(write, lock)
        return holder

    def _heard_of_lanes(self, records: Sequence[JobRecord]) -> None:
        """Limited jobs dispatched here: the next claim of their queue looks at its lanes."""
        for record in records:
            if record.lane is not None:
                self._no_lanes_until.pop(record.queue, None)

    async def _copy(self, conn: Any, rows: list[tuple[Any, ...]], queues: Sequence[str]) -> None:
        """Many jobs: COPY, then one notice per queue (delivered at commit)."""
        copying = f"COPY {self.table} ({', '.join(COLUMNS)}) FROM STDIN"
        async with conn.cursor() as cursor, cursor.copy(copying) as copy:
            for row in rows:
                await copy.write_row(row)
        for queue in queues:
            await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, queue))

    def _rows(self, records: Sequence[JobRecord]) -> tuple[list[tuple[Any, ...]], list[str]]:
        self._check_priorities(records)
        extras: dict[tuple[Any, ...], str | None] = {}
        return [row_of(r, extras) for r in records], sorted({r.queue for r in records})

    def _check_priorities(self, records: Sequence[JobRecord]) -> None:
        for record in records:  # built before the manager had this driver: checked here, all first
            self.check_priority(record.priority)

    async def push_keyed(self, record: JobRecord, lock: Lock) -> str | None:
        """A key nobody holds yet: one statement inserts the lock and the job (a concurrent
        dispatch of the same key waits on the lock's index entry, then finds it taken). A key
        with a lock: one transaction locks its row (FOR UPDATE) and takes it over only if dead."""
        row_lock = (lock.key, record.id, lock.holds_text, lock.expires_ms)
        row = row_of(record)

        async def first(conn: Any) -> bool:
            return bool((await (await conn.execute(self._unique_insert, (*row_lock, *row))).fetchone())[0])

        async def take_over(conn: Any) -> str | None:
            async with conn.transaction():
                holder = await self._take_lock(conn, row_lock)
                if holder is None:
                    await conn.execute(self._insert_sql(1), row)
                return holder

        async def with_parents(conn: Any) -> str | None:
            return await self._insert_children(conn, [record], row_lock)

        holder: str | None
        if record.parents:  # the parents are locked and judged in the same transaction
            holder = await self._run(with_parents)
        else:
            holder = None if await self._run(first) else await self._run(take_over)
        if holder is None:
            self._waits.wake()
        return holder

    async def push_in(self, connection: Any, records: Sequence[JobRecord]) -> None:
        """Insert inside the application's own transaction (committed or rolled back by it);
        the notice to idle workers goes out when it commits."""
        import psycopg

        check_open_connection(connection)
        rows, queues = self._rows(records)
        try:
            if isinstance(connection, psycopg.AsyncConnection):
                await self._copy(connection, rows, queues)
                return
            with connection.cursor() as cursor:
                with cursor.copy(f"COPY {self.table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                for queue in queues:
                    cursor.execute("SELECT pg_notify(%s, %s)", (self.channel, queue))
        except psycopg.Error as exc:
            raise DriverError(f"dispatch on the given connection failed: {exc}") from exc

    # -- consuming -----------------------------------------------------------------------------
    def rules_changed(self) -> None:
        self._rules.forget()

    def wake_claims(self) -> None:
        self._waits.wake()

    def interrupt_waits(self) -> None:
        self._waits.interrupt()

    async def reserve(self, queues: Sequence[str], limit: int, wait_s: float,
                      free: Mapping[str, int] | None = None, runs: Runs | None = None) -> list[JobRecord]:
        if self._listener is None and wait_s > 0:
            await self.listener()
        claim = self._any_claim if runs is None else _Claim(
            self._claim_runs, self._claim_lane_runs, {"names": sorted(runs.names), "shipped": runs.shipped})
        return await self._waits.reserve(lambda: self._claim_from(queues, limit, free, claim), wait_s)

    async def _claim_from(self, queues: Sequence[str], limit: int, free: Mapping[str, int] | None,
                          claim: _Claim) -> list[JobRecord]:
        """In each queue, the jobs of its lanes that may start (when it may hold some), then
        the jobs without limits."""
        claimed: list[JobRecord] = []
        for queue in queues:
            if time.monotonic() >= self._no_lanes_until.get(queue, 0.0):
                claimed += await self._run(self._claim_lanes, queue, limit - len(claimed), free, claim)
            if len(claimed) < limit:
                claimed += await self._run(self._claim_where, claim.plain, queue, limit - len(claimed), None,
                                           claim.params)
            if len(claimed) >= limit:
                break
        return claimed

    async def _claim_where(self, conn: Any, statement: str, queue: str, limit: int,
                           lane: str | None = None, runs: Mapping[str, Any] = NO_FILTER) -> list[JobRecord]:
        params = {"queue": queue, "limit": limit, "lease_ms": self._lease_ms, "token": new_token(),
                  "max_reclaims": self.settings.max_reclaims, "lost": LEASE_LOST_ERROR, "lane": lane,
                  "reclaim": self._reclaim_now(queue), **runs}
        rows = await (await conn.execute(statement, params)).fetchall()
        return [record_from_row(row[1:]) for row in sorted(rows, key=lambda r: (-r[5], r[0]))]

    def _reclaim_now(self, queue: str) -> bool:
        """Whether this claim of ``queue`` looks for expired leases: once every RECLAIM_EVERY_S,
        or four times a lease where leases are shorter."""
        now = time.monotonic()
        if now < self._reclaim_at.get(queue, 0.0):
            return False
        self._reclaim_at[queue] = now + min(RECLAIM_EVERY_S, self.settings.lease_s / 4)
        return True

    async def _claim_lanes(self, conn: Any, queue: str, want: int,
                           free: Mapping[str, int] | None, claim: _Claim) -> list[JobRecord]:
        """The limited jobs of ``queue`` its lanes allow now, in one transaction under the
        queue's advisory lock, so no two claims count the same free slot."""
        now = (await (await conn.execute(f"SELECT {NOW}")).fetchone())[0]
        if not await (await conn.execute(self._lanes_sql.waiting, (queue, now))).fetchall():
            self._no_lanes_until[queue] = time.monotonic() + LANES_RECHECK_S
            return []
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                               (f"{self.table} {queue}",))
            return await self._claim_lanes_locked(conn, queue, want, free, claim)

    async def _claim_lanes_locked(self, conn: Any, queue: str, want: int,
                                  free: Mapping[str, int] | None, claim: _Claim) -> list[JobRecord]:
        sql, kv = self._lanes_sql, f"{self.schema}.kv"
        now = (await (await conn.execute(f"SELECT {NOW}")).fetchone())[0]
        waiting = await (await conn.execute(sql.waiting, (queue, now))).fetchall()
        found = self._rules.fresh(queue)
        if found is None:
            prefix = rules_prefix(queue)
            found = self._rules.keep(queue, dict(await (await conn.execute(
                f"SELECT key, value FROM {kv} WHERE key >= %s AND key < %s AND {KV_LIVE}",
                (prefix, scan_end(prefix)))).fetchall()))
        order = lane_order(waiting, found)
        keys = served_keys(queue, order)
        served = served_of(keys, await (await conn.execute(
            f"SELECT key, value FROM {kv} WHERE key = ANY(%s) AND {KV_LIVE}", (list(keys),))).fetchall()) \
            if keys else {}
        held = held_by_lane(await (await conn.execute(sql.held, (queue, now))).fetchall())
        starts: dict[str, list[int]] = {}
        for lane, rule in order:
            if rule.rate is not None:
                since = now - rule.rate.window_ms
                starts[lane] = [row[0] for row in await (await conn.execute(sql.starts, (queue, lane, since)))
                                .fetchall()]
        plan = ClaimPlan(now, held, lambda lane, _: starts.get(lane, []), free)
        claimed: list[JobRecord] = []
        turns = claim_turns(order, want, served)
        try:
            lane, rule, n = next(turns)
            while True:
                room = min(plan.room(lane, rule), n)
                taken = await self._claim_where(conn, claim.laned, queue, room, lane, claim.params) \
                    if room > 0 else []
                for record in taken:
                    plan.admit(lane, rule)
                    claimed.append(record)
                if rule.rate is not None and taken:
                    await conn.execute(sql.started, (len(taken), queue, lane, now))
                lane, rule, n = turns.send(len(taken))
        except StopIteration as done:
            served_now = new_turns(queue, done.value, served)
        if served_now:
            async with conn.cursor() as cursor:
                await cursor.executemany(self._kv_upsert(SERVED_TTL_S, False), served_now)
        return claimed

    async def lane_use(self, queue: str, lanes: Mapping[str, LaneRule]) -> dict[str, LaneUse]:
        sql = self._lanes_sql

        async def work(conn: Any) -> dict[str, LaneUse]:
            now = (await (await conn.execute(f"SELECT {NOW}")).fetchone())[0]
            held = held_by_lane(await (await conn.execute(sql.held, (queue, now))).fetchall())
            use = {}
            for lane, rule in lanes.items():
                starts = [] if rule.rate is None else await (await conn.execute(
                    sql.starts, (queue, lane, now - rule.rate.window_ms))).fetchall()
                use[lane] = LaneUse(held.get(lane, 0), len(starts))
            return use

        return await self._run(work)  # type: ignore[no-any-return]

    async def heartbeat(self, records: Sequence[JobRecord]) -> list[bool]:
        sql = (f"UPDATE {self.table} j SET lease_ms = {NOW} + %s FROM unnest(%s::text[], %s::text[]) "
               "AS h(id, token) WHERE j.id = h.id AND j.token = h.token AND j.status = 'active' "
               "RETURNING j.id")
        rows = await self._fetch(sql, (self._lease_ms, [r.id for r in records],
                                       [r.token or "" for r in records]))
        alive = {row[0] for row in rows}
        return [r.id in alive for r in records]

    async def _settle(self, record: JobRecord, settlement: Settlement) -> bool:
        outcome = await through_outage(self.settings.lease_s, lambda: self._settles.add((record, settlement)))
        if outcome == SETTLED_NOW:
            settlement.apply(record)
            if settlement.verb is RETRY or settlement.verb is RELEASE:
                self._waits.wake()
        elif outcome == STOPPED:
            settlement.stop(record)
        return outcome != UNTOUCHED

    async def _send_settles(self, batch: list[tuple[JobRecord, Settlement]]) -> list[int]:
        """One statement for the settles of one loop turn (see ``settle_sql``)."""
        columns: list[list[Any]] = [[] for _ in SETTLE_ARRAYS]
        for record, settlement in batch:
            done = record.copy()
            settlement.apply(done)
            values = (record.id, record.token, done.status.value, done.attempt, done.available_ms,
                      done.started_ms, done.finished_ms, None if done.result is None else dumps(done.result),
                      done.error, done.traceback, dumps(record.meta) if record.meta else "{}", done.failure,
                      settlement.at_ms)
            for column, value in zip(columns, values, strict=True):
                column.append(value)

        async def work(conn: Any) -> list[Any]:
            return list(await (await conn.execute(self._settle_sql, columns)).fetchall())

        outcomes = dict(await self._run(work))
        finished = sum(1 for record, settlement in batch
                       if outcomes.get(record.id) == SETTLED_NOW and settlement.verb in FINISHING_VERBS)
        if finished:
            try:
                await self._count_finished(finished)
            except DriverError as exc:  # the settles stand; retention runs again later
                logger.warning("PostgreSQL retention pass at %s failed: %s", self._where(), exc)
        return [outcomes.get(record.id, UNTOUCHED) for record, _ in batch]

    async def _count_finished(self, count: int) -> None:
        self._settles_since_trim += count
        if self._settles_since_trim >= TRIM_EVERY or time.monotonic() >= self._next_trim_at:
            await self.trim()

    async def trim(self) -> None:
        """Apply retention in bounded batches: completed (failed) records beyond the counts
        kept, then those older than the age limits."""
        self._settles_since_trim = 0
        self._next_trim_at = time.monotonic() + retention_pass_interval(self.settings)
        s = self.settings
        completed_before, failed_before = retention_cutoffs(s)
        statements: list[tuple[str, tuple[Any, ...]]] = []
        by_count = (f"DELETE FROM {self.table} WHERE seq IN (SELECT seq FROM {self.table} WHERE status = %s "
                    f"ORDER BY seq DESC OFFSET %s LIMIT {TRIM_BATCH})")
        statements.append((by_count, ("completed", s.retention)))
        if s.failed_retention is not None:
            statements.append((by_count, ("failed", s.failed_retention)))
        by_age = (f"DELETE FROM {self.table} WHERE seq IN (SELECT seq FROM {self.table} WHERE status = %s "
                  f"AND finished_ms < %s LIMIT {TRIM_BATCH})")
        statements += [(by_age, (status, cutoff)) for status, cutoff in
                       (("completed", completed_before), ("failed", failed_before)) if cutoff is not None]

        statements.append((expired_sql(self.table, NOW), ()))
        statements.append((stale_locks_sql(self.table, f"{self.schema}.uniques", NOW), ()))
        statements.append((f"DELETE FROM {self.schema}.kv WHERE expires_ms <= {NOW}", ()))
        statements.append((self._lanes_sql.forget_starts, (oldest_start_kept(now_ms()),)))

        async def work(conn: Any) -> None:
            for sql, params in statements:
                await conn.execute(sql, params)

        await self._run(work)

    async def update_meta(self, record: JobRecord, meta: dict[str, Any]) -> bool:
        rows = await self._fetch(f"UPDATE {self.table} SET meta = meta || %s::jsonb WHERE id = %s "
                                 "AND token = %s AND status = 'active' RETURNING id",
                                 (dumps(meta), record.id, record.token))
        return bool(rows)

    # -- cancelling ----------------------------------------------------------------------------
    async def cancel(self, job_ids: Sequence[str], reason: str) -> list[str]:
        sql = f"""
UPDATE {self.table}
   SET status = 'cancelled', finished_ms = {NOW}, lease_ms = NULL, traceback = NULL,
       error = %(reason)s || ' (was ' || (CASE WHEN status = 'scheduled' AND available_ms <= {NOW}
                                             THEN 'queued' ELSE status END) || ')',
       token = CASE WHEN status = 'active' THEN token END
 WHERE id = ANY(%(ids)s) AND status IN ('waiting', 'queued', 'scheduled', 'active')
RETURNING id, token IS NOT NULL
"""

        async def work(conn: Any) -> list[Any]:
            async with conn.transaction():
                rows = await (await conn.execute(sql, {"reason": reason, "ids": list(job_ids)})).fetchall()
                running = [row[0] for row in rows if row[1]]
                for payload in _payloads(running):
                    await conn.execute("SELECT pg_notify(%s, %s)", (self.abort_channel, payload))
                for payload in _payloads([f"{row[0]}\tcancelled" for row in rows]):
                    await conn.execute("SELECT pg_notify(%s, %s)", (self.settled_channel, payload))
                return list(rows)

        cancelled = {row[0] for row in await self._run(work)}
        return [job_id for job_id in dict.fromkeys(job_ids) if job_id in cancelled]

    async def watch(self, job_ids: Sequence[str], notice: SettleNotice) -> Callable[[], None]:
        listener = await self.listener()
        if not listener.working:
            return lambda: None  # waiters poll
        return listener.on_settle(job_ids, notice)

    async def listen_aborts(self, queues: Sequence[str], notice: AbortNotice) -> Unsubscribe | None:
        # registered before the self-test is awaited: no cancel is missed meanwhile
        unsubscribe = self._starting_listener().on_abort(notice)
        listener = await self.listener()
        if listener.working:
            return unsubscribe
        await unsubscribe()
        return None

    # -- shipped code --------------------------------------------------------------------------
    # -- the keyed store (times are the server's) ------------------------------------------------
    def _kv_upsert(self, ttl_s: float | None, only_over_expired: bool) -> str:
        """Store a value with an expiry ``ttl_s`` from now on the server's clock; with
        ``only_over_expired``, replace only an expired one (``RETURNING`` says if it stored)."""
        expires = "NULL" if ttl_s is None else f"{NOW} + {max(1, int(ttl_s * 1000))}"
        where = f" WHERE kv.expires_ms <= {NOW}" if only_over_expired else ""
        return (f"INSERT INTO {self.schema}.kv AS kv (key, value, expires_ms) VALUES (%s, %s, {expires}) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_ms = EXCLUDED.expires_ms"
                f"{where} RETURNING 1")

    async def _kv_write(self, key: str, value: bytes, ttl_s: float | None, *, only_new: bool) -> bool:
        return bool(await self._fetch(self._kv_upsert(ttl_s, only_new), (key, value)))

    async def kv_get(self, key: str) -> bytes | None:
        rows = await self._fetch(f"SELECT value FROM {self.schema}.kv WHERE key = %s AND "
                                 f"{KV_LIVE}", (check_key(key),))
        return bytes(rows[0][0]) if rows else None

    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        rows = await self._fetch(f"SELECT key, value FROM {self.schema}.kv WHERE key >= %s AND key < %s "
                                 f"AND {KV_LIVE}",
                                 (check_prefix(prefix), scan_end(prefix)))
        return {key: bytes(value) for key, value in rows}

    async def kv_delete(self, key: str) -> bool:
        rows = await self._fetch(f"DELETE FROM {self.schema}.kv WHERE key = %s "
                                 f"RETURNING expires_ms IS NULL OR expires_ms > {NOW}", (check_key(key),))
        return bool(rows and rows[0][0])

    # -- inspecting ----------------------------------------------------------------------------
    async def get(self, job_id: str) -> JobRecord | None:
        return (await self.get_many([job_id]))[0]

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        rows = await self._fetch(f"{self._select} WHERE id = ANY(%s)", (list(job_ids),))
        found = {r.id: r for r in (due_view(record_from_row(row)) for row in rows)}
        return [found.get(job_id) for job_id in job_ids]

    async def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        rows = await self._fetch(f"SELECT id, status FROM {self.table} WHERE id = ANY(%s)", (list(job_ids),))
        found = dict(rows)
        return [None if (s := found.get(i)) is None else readable_status(s) for i in job_ids]

    async def jobs(self, status: JobStatus | None = None, queue: str | None = None,
                   limit: int | None = None) -> list[JobRecord]:
        where, params = status_filters(status, queue, "%s")
        order = "ORDER BY seq DESC LIMIT %s" if limit else "ORDER BY seq"
        rows = await self._fetch(f"{self._select} {where} {order}",
                                 (*params, limit) if limit else params)
        records = [due_view(record_from_row(row)) for row in (reversed(rows) if limit else rows)]
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            records = [r for r in records if r.status is status]
        return records

    async def search(self, query: JobQuery) -> JobPage:
        """A page of ``query`` in SQL, newest first, paged by sequence number."""
        clauses, values = search_clauses(query, "%s", "strpos", "left(id, %s)")
        pages = sql_pages(query, search_batch(query))
        try:
            after, n = next(pages)
            while True:
                where = " AND ".join([*clauses, *(["seq < %s"] if after is not None else [])]) or "true"
                rows = await self._fetch(f"SELECT seq, {SELECT_COLUMNS} FROM {self.table} WHERE {where} "
                                         "ORDER BY seq DESC LIMIT %s",
                                         (*values, *([after] if after is not None else []), n))
                after, n = pages.send([(row[0], due_view(record_from_row(row[1:]))) for row in rows])
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def finished_counts(self, since_ms: int, bucket_ms: int) -> dict[int, tuple[int, int]]:
        sql = finished_counts_sql(self.table, "%s")
        return finish_buckets(await self._fetch(sql, (since_ms, bucket_ms, since_ms)))

    async def queue_names(self) -> list[str]:
        return [row[0] for row in await self._fetch(f"SELECT DISTINCT queue FROM {self.table} ORDER BY 1")]

    async def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        return await self._count(queue)

    async def _count(self, queue: str | None, statuses: Sequence[str] | None = None) -> dict[JobStatus, int]:
        """Exact counts by status, of ``statuses`` only where given (through the status index)."""
        where, params = status_filters(None, queue, "%s")
        if statuses is not None:
            where = f"{where} AND status = ANY(%s)" if where else "WHERE status = ANY(%s)"
            params = (*params, list(statuses))
        sql = (f"SELECT CASE WHEN status IN ('queued', 'scheduled') THEN "
               f"(CASE WHEN available_ms > {NOW} THEN 'scheduled' ELSE 'queued' END) ELSE status END, "
               f"count(*) FROM {self.table} {where} GROUP BY 1")
        counts = empty_counts()
        for status, n in await self._fetch(sql, params):
            counts[readable_status(status)] += n
        return counts

    async def rough_counts(self, queue: str | None = None) -> RoughCounts:
        """The planner's estimate of each status (from the table's statistics, one EXPLAIN a
        status); the statuses estimated above ESTIMATED_ABOVE keep that estimate, marked
        ``"≈"``, and the rest are counted exactly through the status index. The limit is lower
        than EXACT_COUNT_LIMIT because an exact count here reads each row's table page (for the
        queue and the row's visibility): 40,000 rows spread over a million-row table took 170 ms."""
        mine, params = (" AND queue = %s", (queue,)) if queue is not None else ("", ())

        async def estimate(conn: Any) -> dict[str, int]:
            estimates = {}
            for status in JobStatus:
                cursor = await conn.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {self.table} "
                                            f"WHERE status = %s{mine}", (status.value, *params))
                estimates[status.value] = int((await cursor.fetchone())[0][0]["Plan"]["Plan Rows"])
            return estimates

        estimates: dict[str, int] = await self._run(estimate)
        big = {status for status, n in estimates.items() if n > ESTIMATED_ABOVE}
        if not big:
            return await self._count(queue), {}
        counts = await self._count(queue, [status for status in estimates if status not in big])
        for status in big:
            counts[JobStatus(status)] += estimates[status]
        return counts, {JobStatus(status): "≈" for status in big}

    async def requeue(self, job_ids: Iterable[str]) -> int:
        sql = (f"UPDATE {self.table} SET status = 'queued', attempt = 0, reclaims = 0, available_ms = {NOW}, "
               "started_ms = NULL, finished_ms = NULL, error = NULL, failure = NULL WHERE id = ANY(%s) AND "
               f"status NOT IN {WRITTEN} RETURNING queue")

        async def work(conn: Any) -> int:
            async with conn.transaction():
                rows = await (await conn.execute(sql, (list(job_ids),))).fetchall()
                for queue in {row[0] for row in rows}:
                    await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, queue))
                return len(rows)

        count: int = await self._run(work)
        if count:
            self._waits.wake()
        return count

    async def forget(self, job_ids: Sequence[str]) -> int:
        rows = await self._fetch(f"DELETE FROM {self.table} WHERE id = ANY(%s) AND status IN "
                                 "('completed', 'failed', 'cancelled') RETURNING id", (list(job_ids),))
        return len(rows)

    async def find_by_keys(self, keys: Sequence[str]) -> dict[str, JobRecord]:
        rows = await self._fetch(f"{self._select} WHERE key = ANY(%s) ORDER BY seq", (list(keys),))
        return {r.key or "": r for r in (due_view(record_from_row(row)) for row in rows)}

    async def purge(self) -> None:
        s = self.schema
        tables = ", ".join(f"{s}.{name}" for name in ("code", "uniques", "starts", "workers", "edges",
                                                      "kv"))
        await self._fetch(f"TRUNCATE {self.table}, {tables}")


NOTIFY_PAYLOAD_MAX = 7900  # bytes of one NOTIFY payload (the server takes fewer than 8000)


def _payloads(lines: Sequence[str]) -> list[str]:
    """``lines`` joined by newlines into as few payloads as fit one NOTIFY each."""
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > NOTIFY_PAYLOAD_MAX:
            payloads.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        payloads.append("\n".join(current))
    return payloads


def check_open_connection(connection: Any) -> None:
    """``ConfigError`` unless ``connection`` is a psycopg connection that can take a write now."""
    import psycopg
    from psycopg.pq import TransactionStatus

    if not isinstance(connection, psycopg.AsyncConnection | psycopg.Connection):
        raise ConfigError(f"connection= takes a psycopg Connection or AsyncConnection, got "
                          f"{type(connection).__name__}")
    if connection.closed:
        raise ConfigError("the connection given to dispatch(connection=...) is closed")
    if connection.info.transaction_status == TransactionStatus.INERROR:
        raise ConfigError("the connection given to dispatch(connection=...) is in a failed transaction; "
                          "roll it back first (nothing was stored)")

