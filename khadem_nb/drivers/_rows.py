"""What the SQL drivers (SQLite, PostgreSQL) share: a job's columns, a row read back as a
record, and the filters of listings by status and queue."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from ..features.search import JobQuery
from ..features.unique import ANY_STATUS, lock_is_live
from ..job import JobRecord, JobStatus
from ..serializer import dumps
from .quarantine import checked

logger = logging.getLogger(__name__)

#: a job's columns, in the order rows are written and read: those a claim, an index, a filter
#: or a statement reads or writes, then ``extra``, the JSON of the fields no query reads
#: (``job.EXTRA_FIELDS``)
COLUMNS = ("id", "queue", "name", "status", "priority", "attempt", "max_attempts", "reclaims",
           "created_ms", "available_ms", "started_ms", "finished_ms", "lease_ms", "token",
           "key", "payload", "result", "error", "traceback", "meta", "failure",
           "keep_ms", "lane", "lane_rule", "on_upstream_failure", "extra")
#: the columns of EXTRA_FIELDS in schemas before ``extra`` (SQLite files, PostgreSQL version 10)
EXTRA_COLUMNS = ("timeout_s", "code", "parents", "feed")
#: statuses a version writes; any other stored status reads as failed
WRITTEN = "('waiting', 'queued', 'scheduled', 'active', 'completed', 'cancelled')"


def unique_lock_sql(jobs: str, locks: str, mark: str) -> tuple[str, str]:
    """Read a unique lock with its job's status (by key), and write one (key, job id, statuses
    that hold it, expiry): the two statements both SQL drivers take a lock with."""
    read = (f"SELECT u.job_id, u.holds, u.expires_ms, j.status FROM {locks} u "
            f"LEFT JOIN {jobs} j ON j.id = u.job_id WHERE u.key = {mark}")
    write = (f"INSERT INTO {locks} (key, job_id, holds, expires_ms) VALUES ({mark}, {mark}, {mark}, {mark}) "
             "ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id, holds = excluded.holds, "
             "expires_ms = excluded.expires_ms")
    return read, write


def stale_locks_sql(jobs: str, locks: str, mark: str) -> str:
    """Delete up to 5,000 dead locks: expired by ``mark`` (now), or of a unique job that is gone
    (retention took it). Such a lock would otherwise stay until its key is taken again; a
    schedule slot's lock (it holds whatever its job's status) goes when it expires."""
    return (f"DELETE FROM {locks} WHERE key IN (SELECT u.key FROM {locks} u WHERE u.expires_ms <= {mark} OR "
            f"(u.holds <> '{ANY_STATUS}' AND NOT EXISTS (SELECT 1 FROM {jobs} j WHERE j.id = u.job_id)) "
            "LIMIT 5000)")


def live_holder(row: Sequence[Any] | None, now_ms: int) -> str | None:
    """The id of the job holding a lock read by ``unique_lock_sql``, or ``None`` if it is dead."""
    if row is None:
        return None
    job_id, holds, expires_ms, status = row
    found = None if status is None else readable_status(status)
    return str(job_id) if lock_is_live(holds, found, expires_ms, now_ms) else None


def expired_sql(table: str, mark: str) -> str:
    """Delete up to 5,000 finished records whose own ``keep_ms`` ran out by ``mark`` (now)."""
    return (f"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table} WHERE keep_ms IS NOT NULL AND "
            f"status IN ('completed', 'failed') AND finished_ms + keep_ms <= {mark} LIMIT 5000)")


def finished_counts_sql(table: str, mark: str) -> str:
    """Completed and failed jobs by window of finish time, from a start (``mark`` is the
    driver's placeholder; it takes the start, the window length, the start)."""
    return (f"SELECT (finished_ms - {mark}) / {mark}, status = 'failed', COUNT(*) FROM {table} "
            f"WHERE status IN ('completed', 'failed') AND finished_ms >= {mark} GROUP BY 1, 2")


def finish_buckets(rows: Iterable[Sequence[Any]]) -> dict[int, tuple[int, int]]:
    """``(window, failed, count)`` rows of a GROUP BY as ``finished_counts`` returns them."""
    buckets: dict[int, tuple[int, int]] = {}
    for index, failed, count in rows:
        completed, broke = buckets.get(int(index), (0, 0))
        buckets[int(index)] = (completed, broke + int(count)) if failed else (completed + int(count), broke)
    return buckets


def row_of(record: JobRecord, extras: dict[tuple[Any, ...], str | None] | None = None) -> tuple[Any, ...]:
    """``record`` as the values of ``COLUMNS`` (payload, result, meta and extra as JSON text);
    ``extras``: the extra texts of a batch's records made so far (``JobRecord.extra_json``)."""
    return (record.id, record.queue, record.name, record.status.value, record.priority,
            record.attempt, record.max_attempts, record.reclaims, record.created_ms,
            record.available_ms, record.started_ms, record.finished_ms, record.lease_ms,
            record.token, record.key, dumps(record.payload),
            None if record.result is None else dumps(record.result), record.error,
            record.traceback, dumps(record.meta), record.failure, record.keep_ms,
            record.lane, record.lane_rule, record.on_upstream_failure, record.extra_json(extras))


def readable_status(text: Any) -> JobStatus:
    """A stored status; one no version writes counts as failed (its row reads as failed)."""
    try:
        return JobStatus(text)
    except ValueError:
        return JobStatus.FAILED


def record_from_row(row: Sequence[Any]) -> JobRecord:
    """A row of ``COLUMNS`` as a record (payload, result and meta as JSON text); a damaged row
    is quarantined (see ``quarantine``), never an error."""
    values = dict(zip(COLUMNS, row, strict=True))
    extra = values.pop("extra")
    problems = []
    for column, empty in (("payload", None), ("result", None), ("meta", {})):
        text = values[column]
        if text is None and column != "payload":
            values[column] = empty
            continue
        try:
            values[column] = json.loads(text)
        except (TypeError, ValueError, RecursionError) as exc:
            problems.append(f"{column} is not JSON ({exc})")
            values[column] = empty
    with contextlib.suppress(ValueError):  # else left as the text it is: quarantine names it
        values["status"] = JobStatus(values["status"])
    record = JobRecord(**values)
    if extra is not None and (problem := record.read_extra(extra)) is not None:
        problems.append(problem)
    return checked(record, problems)


def status_filters(status: JobStatus | None, queue: str | None, mark: str) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause of a listing (``mark`` is the driver's placeholder) and its values."""
    clauses: list[str] = []
    params: list[Any] = []
    if status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
        clauses.append("status IN ('queued', 'scheduled')")
    elif status is JobStatus.FAILED:
        clauses.append(f"status NOT IN {WRITTEN}")
    elif status is not None:
        clauses.append(f"status = {mark}")
        params.append(status.value)
    if queue is not None:
        clauses.append(f"queue = {mark}")
        params.append(queue)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


SEARCH_BATCH = 500  # rows a SQL search reads at a time when it compares arguments in Python


def search_clauses(query: JobQuery, mark: str, contains: str, id_start: str) -> tuple[list[str], list[Any]]:
    """The WHERE conditions of a search (``features.search``) but its arguments, which are
    compared on the records read (a damaged payload never fails the query); ``contains`` is
    the driver's substring function (``instr``, ``strpos``), ``id_start`` its expression of
    the start of ``id`` as long as the text it is given (one placeholder)."""
    where, params = status_filters(query.status, query.queue, mark)
    clauses = [where.removeprefix("WHERE ")] if where else []
    values = list(params)
    if query.name:
        clauses.append(f"{contains}(lower(name), lower({mark})) > 0")
        values.append(query.name)
    if query.text:
        clauses.append(f"({id_start} = {mark} OR {contains}(lower(name), lower({mark})) > 0)")
        values += [len(query.text), query.text, query.text]
    if query.since_ms is not None:
        clauses.append(f"created_ms >= {mark}")
        values.append(query.since_ms)
    if query.until_ms is not None:
        clauses.append(f"created_ms < {mark}")
        values.append(query.until_ms)
    if query.error:
        clauses.append(f"{contains}(lower(coalesce(error, '')), lower({mark})) > 0")
        values.append(query.error)
    return clauses, values


def search_batch(query: JobQuery) -> int:
    """Rows a SQL search reads at a time: the page and one more, or SEARCH_BATCH when arguments
    are compared on the records read."""
    return SEARCH_BATCH if query.args else query.limit + 1
