"""The PostgreSQL layout: schema versions and their statements, the claim and settle
statements, and the notification channels of a schema."""


from __future__ import annotations

import hashlib
import logging
import re

from ...errors import ConfigError
from .._deps import edges_table_sql, postgres_trigger_sql
from .._lanes import (
    lane_index_sql,
    starts_table_sql,
    workers_table_sql,
)
from .._rows import (
    COLUMNS,
    EXTRA_COLUMNS,
)
from ..base import (
    COMPLETE,
    FAIL,
)

logger = logging.getLogger(__name__)


SCHEMA_VERSION = 12
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
MAX_IDENTIFIER = 63  # bytes of a PostgreSQL name (NAMEDATALEN - 1), channels included
NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
SELECT_COLUMNS = ", ".join("meta::text" if c == "meta" else c for c in COLUMNS)
RECLAIM_BATCH = 100  # expired leases one claim puts back at most
RECLAIM_EVERY_S = 1.0  # how often a process's claims of one queue look for expired leases


def schema_name(schema: str) -> str:
    """``schema`` as PostgreSQL names it: an unquoted identifier, which it folds to lower case
    (``SEC_PROBE`` and ``sec_probe`` are one schema, so both are ``sec_probe`` here, and its
    notification channels are the same for every spelling)."""
    if not IDENTIFIER.match(schema):
        raise ConfigError(f"queue schema {schema!r} is not a PostgreSQL identifier (letters, digits "
                          "and _, not starting with a digit, at most 63 characters)")
    return schema.lower()


def channels(schema: str) -> tuple[str, str, str]:
    """The NOTIFY channels of ``schema``: ready work, cancels, and settled jobs. Each is
    ``khadem_[kind_]<schema>`` where that fits PostgreSQL's 63-byte identifiers, else the
    schema's first characters and a digest of the whole name, so every channel always fits and
    two schemas never share one."""
    names = []
    for kind in ("khadem_", "khadem_abort_", "khadem_settled_"):
        name = kind + schema
        if len(name) > MAX_IDENTIFIER:
            digest = hashlib.sha256(schema.encode()).hexdigest()[:16]
            name = f"{kind}{schema[:MAX_IDENTIFIER - len(kind) - 17]}_{digest}"
        names.append(name)
    return names[0], names[1], names[2]


def schema_sql(schema: str) -> list[str]:
    """The statements of schema version 1, the first, each idempotent; later versions are
    reached through ``upgrade_sql`` from it, so every schema takes the same path."""
    s = schema
    return [
        f"""CREATE TABLE IF NOT EXISTS {s}.jobs (
            seq          bigserial PRIMARY KEY,
            id           text NOT NULL UNIQUE,
            queue        text NOT NULL,
            name         text NOT NULL,
            status       text NOT NULL,
            priority     bigint NOT NULL,
            attempt      integer NOT NULL,
            max_attempts integer NOT NULL,
            reclaims     integer NOT NULL DEFAULT 0,
            created_ms   bigint NOT NULL,
            available_ms bigint NOT NULL,
            started_ms   bigint,
            finished_ms  bigint,
            lease_ms     bigint,
            token        text,
            timeout_s    double precision,
            key          text,
            payload      text NOT NULL,
            result       text,
            error        text,
            traceback    text,
            meta         jsonb NOT NULL DEFAULT '{{}}',
            failure      text,
            code         text)""",
        f"CREATE INDEX IF NOT EXISTS jobs_pending ON {s}.jobs (queue, priority DESC, seq) "
        "WHERE status IN ('queued', 'scheduled')",
        f"CREATE INDEX IF NOT EXISTS jobs_leases ON {s}.jobs (queue, lease_ms) WHERE status = 'active'",
        f"CREATE INDEX IF NOT EXISTS jobs_status ON {s}.jobs (status, seq)",
        f"CREATE INDEX IF NOT EXISTS jobs_key ON {s}.jobs (key) WHERE key IS NOT NULL",
        f"""CREATE TABLE IF NOT EXISTS {s}.code (
            digest     text PRIMARY KEY,
            envelope   bytea NOT NULL,
            created_ms bigint NOT NULL)""",
    ]


SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%s))"  # two processes opening one schema at once


def layout_sql(schema: str, found: int | None) -> list[str]:
    """The statements that take ``schema`` from layout version ``found`` (``None``: nothing
    yet) to SCHEMA_VERSION, noting each version as it is reached; run in one transaction."""
    s = schema
    steps = {1: schema_sql(s), **upgrade_sql(s)}
    statements = [f"CREATE SCHEMA IF NOT EXISTS {s}",
                  f"CREATE TABLE IF NOT EXISTS {s}.version (version integer NOT NULL)"]
    for version in range((found or 0) + 1, SCHEMA_VERSION + 1):
        statements += [*steps[version], f"INSERT INTO {s}.version VALUES ({version})"]
    return statements


def upgrade_sql(schema: str) -> dict[int, list[str]]:
    """The statements that take a schema from version ``n - 1`` to ``n``, by ``n``."""
    s = schema
    return {
        # retention by age finds old finished rows without walking every finished row
        2: [f"CREATE INDEX IF NOT EXISTS jobs_finished ON {s}.jobs (status, finished_ms) "
            "WHERE status IN ('completed', 'failed', 'cancelled')"],
        # unique-job locks (see ``unique``): key -> the job holding it
        3: [f"CREATE TABLE IF NOT EXISTS {s}.uniques (key text PRIMARY KEY, job_id text NOT NULL, "
            "holds text NOT NULL, expires_ms bigint)"],
        # a record's own lifetime once finished (``keep_result``), and what finds expired ones
        4: [f"ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS keep_ms bigint",
            f"CREATE INDEX IF NOT EXISTS jobs_expiring ON {s}.jobs ((finished_ms + keep_ms)) "
            "WHERE keep_ms IS NOT NULL AND status IN ('completed', 'failed')"],
        # flow control (``flow``, ``_lanes``): each job's lane and rule, the claim of jobs
        # without limits over their own index, and the recent starts of rated lanes
        5: [f"ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS lane text",
            f"ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS lane_rule text",
            f"CREATE INDEX IF NOT EXISTS jobs_ready ON {s}.jobs (queue, priority DESC, seq) "
            "WHERE status IN ('queued', 'scheduled') AND lane IS NULL",
            f"DROP INDEX IF EXISTS {s}.jobs_pending",
            *lane_index_sql(f"{s}.jobs", "jobs"),
            *starts_table_sql(f"{s}.starts", "starts_lane"),
            workers_table_sql(f"{s}.workers")],
        # schedules (``schedules``): each one's spec, last fired slot and that slot's job
        6: [f"CREATE TABLE IF NOT EXISTS {s}.schedules (id TEXT PRIMARY KEY, queue TEXT NOT NULL, "
            "spec TEXT NOT NULL, last_slot BIGINT, last_job TEXT)"],
        # jobs that wait for others (``dependencies``, ``_deps``): their parents, what a failed
        # parent does, what they are given; the edges they still wait on; the trigger that
        # releases them as each parent ends
        7: [f"ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS parents text",
            f"ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS on_upstream_failure text",
            f"ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS feed text",
            *edges_table_sql(f"{s}.edges", "edges_child"),
            *postgres_trigger_sql(s, channels(s)[0], channels(s)[2], marked_only=False)],
        # the trigger runs only for jobs in a workflow (``in_graph``: marked when an edge names
        # them), so a job outside every workflow pays nothing for dependencies at its end
        8: [f"ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS in_graph boolean NOT NULL DEFAULT false",
            f"UPDATE {s}.jobs SET in_graph = true WHERE id IN (SELECT parent FROM {s}.edges) "
            f"OR id IN (SELECT child FROM {s}.edges)",
            *postgres_trigger_sql(s, channels(s)[0], channels(s)[2])],
        # the keyed store (``QueueDriver.kv_put``): bytes under a key, with an optional expiry
        # shipped code, kept in its own table until version 8, moves into it
        9: [f"CREATE TABLE IF NOT EXISTS {s}.kv (key text PRIMARY KEY, value bytea NOT NULL, "
            "expires_ms bigint)",
            f"INSERT INTO {s}.kv (key, value, expires_ms) SELECT 'code/' || digest, envelope, NULL "
            f"FROM {s}.code ON CONFLICT DO NOTHING"],
        # schedules, kept in their own table until version 9, move into the keyed store: the
        # definition under ``schedules/<id>``, the last fired slot and its job under ``fired/<id>``
        10: [f"INSERT INTO {s}.kv (key, value, expires_ms) SELECT 'schedules/' || id, "
             f"convert_to(spec, 'UTF8'), NULL FROM {s}.schedules ON CONFLICT DO NOTHING",
             f"INSERT INTO {s}.kv (key, value, expires_ms) SELECT 'fired/' || id, "
             "convert_to(json_build_object('slot', last_slot, 'job', last_job)::text, 'UTF8'), NULL "
             f"FROM {s}.schedules WHERE last_slot IS NOT NULL ON CONFLICT DO NOTHING",
             f"DROP TABLE {s}.schedules"],
        # the fields no query reads (``job.EXTRA_FIELDS``) move into one JSON column, without
        # their null fields, and their own columns go
        11: [f"ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS extra text",
             f"UPDATE {s}.jobs SET extra = NULLIF(json_strip_nulls(json_build_object("
             "'timeout_s', timeout_s, 'code', code, 'parents', parents::json, 'feed', feed))::text, '{}') "
             "WHERE timeout_s IS NOT NULL OR code IS NOT NULL OR parents IS NOT NULL OR feed IS NOT NULL",
             f"ALTER TABLE {s}.jobs " + ", ".join(f"DROP COLUMN {c}" for c in EXTRA_COLUMNS)],
        # a claim walks queued jobs and due scheduled ones apart (``claim_sql``), so delayed
        # jobs not yet due are never walked over; ``jobs_ready`` stays for the release before
        12: [f"CREATE INDEX IF NOT EXISTS jobs_queued ON {s}.jobs (queue, priority DESC, seq) "
             "WHERE status = 'queued' AND lane IS NULL",
             f"CREATE INDEX IF NOT EXISTS jobs_due ON {s}.jobs (queue, available_ms) "
             "WHERE status = 'scheduled' AND lane IS NULL"],
    }


#: what a claim that takes only what the claiming worker can run adds (``Runs``): the names
#: in %(names)s, and with %(shipped)s the jobs whose code carries a seal after its fingerprint
RUNS_SQL = r"""
           AND (name = ANY(%(names)s::text[]) OR (%(shipped)s AND extra ~ '"code": *"[0-9a-f]+\.'))"""


def claim_sql(schema: str, lane: str = "lane IS NULL", runs: str = "") -> str:
    """One statement: expired leases of the queue put back (or failed), then a batch of due
    jobs claimed, those without limits, or with ``lane = %(lane)s`` one lane's (see
    ``_lanes``), and with ``runs`` (``RUNS_SQL``) only those the worker can run. Both take only
    rows no other claim holds (SKIP LOCKED).

    Jobs without limits are taken from two index walks that each stop at the batch's size:
    queued jobs by priority and age (``jobs_queued``), and scheduled jobs whose time has come,
    earliest due first (``jobs_due``). So delayed jobs not yet due are never walked over, however
    many wait; the batch is the best of both by priority and age.

    Expired leases are looked for only where ``%(reclaim)s`` is true (``RECLAIM_EVERY_S``): the
    look walks every held job of the queue (which also lets PostgreSQL mark the index entries
    of settled jobs dead as it passes them), and a lease of seconds needs no finer watch."""
    s = schema
    paused = (f"NOT EXISTS (SELECT 1 FROM {s}.kv WHERE key = 'paused/' || %(queue)s "
              "AND (expires_ms IS NULL OR expires_ms > (SELECT ms FROM now)))")
    return f"""
WITH now AS (SELECT {NOW} AS ms),
expired AS (
    SELECT seq FROM {s}.jobs, now
     WHERE %(reclaim)s AND queue = %(queue)s AND status = 'active' AND lease_ms < now.ms
     LIMIT {RECLAIM_BATCH} FOR UPDATE SKIP LOCKED
),
reclaimed AS (
    UPDATE {s}.jobs j
       SET status = CASE WHEN j.reclaims >= %(max_reclaims)s THEN 'failed' ELSE 'queued' END,
           reclaims = j.reclaims + CASE WHEN j.reclaims >= %(max_reclaims)s THEN 0 ELSE 1 END,
           finished_ms = CASE WHEN j.reclaims >= %(max_reclaims)s THEN now.ms END,
           error = CASE WHEN j.reclaims >= %(max_reclaims)s
                        THEN replace(%(lost)s, '{{n}}', (j.reclaims + 1)::text) ELSE j.error END,
           traceback = CASE WHEN j.reclaims >= %(max_reclaims)s THEN NULL ELSE j.traceback END,
           failure = CASE WHEN j.reclaims >= %(max_reclaims)s THEN 'lost' ELSE j.failure END,
           available_ms = now.ms, started_ms = NULL, token = NULL, lease_ms = NULL
      FROM expired, now
     WHERE j.seq = expired.seq
),
{_picked_sql(s, lane, runs, paused)}
UPDATE {s}.jobs j
   SET status = 'active', attempt = j.attempt + 1, started_ms = now.ms, finished_ms = NULL,
       lease_ms = now.ms + %(lease_ms)s, token = %(token)s || '-' || j.seq
  FROM picked, now
 WHERE j.seq = picked.seq
RETURNING j.seq, {", ".join("j.meta::text" if c == "meta" else "j." + c for c in COLUMNS)}
"""


def _picked_sql(s: str, lane: str, runs: str, paused: str) -> str:
    """The ``picked`` step of ``claim_sql``: the rows a claim takes, locked."""
    if lane != "lane IS NULL":  # one lane's jobs, through that lane's index
        return f"""picked AS (
    SELECT seq FROM {s}.jobs
     WHERE queue = %(queue)s AND status IN ('queued', 'scheduled') AND available_ms <= (SELECT ms FROM now)
           AND {lane}{runs} AND {paused}
     ORDER BY priority DESC, seq
     LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)"""
    return f"""queued AS (
    SELECT seq, priority FROM {s}.jobs
     WHERE queue = %(queue)s AND status = 'queued' AND available_ms <= (SELECT ms FROM now)
           AND lane IS NULL{runs} AND {paused}
     ORDER BY priority DESC, seq
     LIMIT %(limit)s FOR UPDATE SKIP LOCKED
),
due AS (
    SELECT seq, priority FROM {s}.jobs
     WHERE queue = %(queue)s AND status = 'scheduled' AND available_ms <= (SELECT ms FROM now)
           AND lane IS NULL{runs} AND {paused}
     ORDER BY available_ms
     LIMIT %(limit)s FOR UPDATE SKIP LOCKED
),
picked AS (
    SELECT seq FROM (SELECT seq, priority FROM queued UNION ALL SELECT seq, priority FROM due) AS ready
     ORDER BY priority DESC, seq
     LIMIT %(limit)s
)"""

#: the arrays ``settle_sql`` takes, one element per settle, in this order
SETTLE_ARRAYS = ("id text", "token text", "status text", "attempt integer", "available_ms bigint",
                 "started_ms bigint", "finished_ms bigint", "result text", "error text", "traceback text",
                 "meta jsonb", "failure text", "at_ms bigint")
#: what ``settle_sql`` says of each settle: applied, stopped (cancelled while held), or neither
UNTOUCHED, SETTLED_NOW, STOPPED = 0, 1, 2
FINISHING_VERBS = (COMPLETE, FAIL)
NOTICE_CHUNK = 3800  # bytes of settle lines per NOTIFY (one line at most more; the server takes < 8000)


def settle_sql(table: str, channel: str, settled_channel: str) -> str:
    """One statement for a batch of settles, each fenced by its token: the jobs still held are
    settled, those cancelled while held are stopped; then waiters hear of the settled ones
    (``settled_channel``, "id<TAB>status" lines) and idle workers of jobs put back, or of a
    lane's slot freed (``channel``)."""
    arrays = ", ".join(f"%s::{kind.split()[1]}[]" for kind in SETTLE_ARRAYS)
    names = ", ".join(kind.split()[0] for kind in SETTLE_ARRAYS)
    return f"""
WITH s AS (SELECT * FROM unnest({arrays}) AS s({names})),
done AS (
    UPDATE {table} j
       SET status = s.status, attempt = s.attempt, available_ms = s.available_ms,
           started_ms = s.started_ms, finished_ms = s.finished_ms, lease_ms = NULL, token = NULL,
           result = s.result, error = s.error, traceback = s.traceback, meta = j.meta || s.meta,
           failure = s.failure
      FROM s
     WHERE j.id = s.id AND j.token = s.token AND j.status = 'active'
    RETURNING j.id, j.status, j.queue, j.lane
),
stopped AS (
    UPDATE {table} j SET token = NULL, finished_ms = s.at_ms, meta = j.meta || s.meta
      FROM s
     WHERE j.id = s.id AND j.token = s.token AND j.status = 'cancelled'
    RETURNING j.id
),
lines AS (
    SELECT id || E'\t' || status AS line,
           sum(length(id) + 11) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) / {NOTICE_CHUNK} AS chunk
      FROM done
),
settled AS (
    SELECT pg_notify('{settled_channel}', string_agg(line, E'\n')) FROM lines GROUP BY chunk
),
woken AS (
    SELECT pg_notify('{channel}', queue)
      FROM (SELECT DISTINCT queue FROM done
             WHERE status IN ('queued', 'scheduled') OR lane IS NOT NULL) AS q
)
SELECT outcome.id, outcome.flag
  FROM (SELECT id, {SETTLED_NOW} AS flag FROM done UNION ALL SELECT id, {STOPPED} FROM stopped) AS outcome,
       (SELECT count(*) FROM settled) AS told, (SELECT count(*) FROM woken) AS woke
"""

