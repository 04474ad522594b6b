"""Finding jobs in a big queue: a query by status, name, queue, time of creation, error text and
argument values, answered a page at a time, newest first, in a stable order.

SQLite and PostgreSQL answer a query in SQL (JSON functions for the arguments) and page by the
row's sequence number, so every record can be reached however many there are. The other
drivers look through the newest SCAN_LIMIT records of the status asked (a bounded scan), and
say so in the page (``JobPage.looked_through``), so a search never reads a whole big store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import ConfigError
from ..job import JobRecord, JobStatus

SCAN_LIMIT = 10_000  # newest records a driver without SQL looks through for one query
PAGE_LIMIT = 500  # records one page holds at most
ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}\Z")  # an argument a query compares


@dataclass(frozen=True)
class JobQuery:
    """What a search asks for; every given condition must hold."""

    status: JobStatus | None = None
    name: str | None = None  # part of the job name, any case
    text: str | None = None  # the start of an id, or part of the job name (the search box)
    queue: str | None = None
    since_ms: int | None = None  # created at or after
    until_ms: int | None = None  # created before
    error: str | None = None  # part of the error text, any case
    #: top-level arguments (or a job function's keyword arguments) equal to these JSON values
    args: tuple[tuple[str, Any], ...] = ()
    before: str | None = None  # the page after this cursor (``JobPage.next``)
    limit: int = 50

    def matches(self, record: JobRecord) -> bool:
        """Whether ``record`` meets every condition but the paging (for a bounded scan)."""
        if self.status is not None and record.status is not self.status:
            return False
        if self.queue is not None and record.queue != self.queue:
            return False
        if self.name is not None and self.name.lower() not in record.name.lower():
            return False
        if self.text is not None and not record.id.startswith(self.text) \
                and self.text.lower() not in record.name.lower():
            return False
        if self.since_ms is not None and record.created_ms < self.since_ms:
            return False
        if self.until_ms is not None and record.created_ms >= self.until_ms:
            return False
        if self.error is not None and self.error.lower() not in (record.error or "").lower():
            return False
        return all(_argument(record.payload, name) == (True, value) for name, value in self.args)


@dataclass
class JobPage:
    """One page of a search, newest first."""

    records: list[JobRecord]
    next: str | None = None  # the cursor of the next page; ``None`` at the end
    #: how many of the newest records a bounded scan looked through (``None``: all of them)
    looked_through: int | None = None


def _argument(payload: Any, name: str) -> tuple[bool, Any]:
    """(found, value) of argument ``name``: a top-level key, or a job function's keyword."""
    if isinstance(payload, Mapping):
        if name in payload:
            return True, payload[name]
        kwargs = payload.get("kwargs")
        if isinstance(kwargs, Mapping) and name in kwargs:
            return True, kwargs[name]
    return False, None


def fill_page(found: list[tuple[int, JobRecord]], rows: Sequence[tuple[int, JobRecord]],
              query: JobQuery) -> str | None:
    """Add the ``rows`` (sequence number, record; newest first, read by SQL that tested every
    condition but the arguments and the due time) that ``query`` matches to ``found``, up to
    ``query.limit``; the cursor of the next page (the last one found) once the page is full and
    another row matches, else ``None``."""
    for seq, record in rows:
        if query.matches(record):
            if len(found) == query.limit:
                return str(found[-1][0])
            found.append((seq, record))
    return None


#: what ``sql_pages`` asks its driver: the rows (sequence number, record) with a sequence number
#: below ``after`` (``None``: from the newest), newest first, ``n`` at most
Batch = tuple[int | None, int]


def sql_pages(query: JobQuery, batch: int) -> Generator[Batch, Sequence[tuple[int, JobRecord]], JobPage]:
    """The reads of one page of a SQL search: yields ``(after, n)`` and is sent the rows read;
    stops at a full page, at the last row, or after SCAN_LIMIT rows read in one request (the
    page then says how many it looked through, and its cursor goes on from there)."""
    after, looked = sql_cursor(query.before), 0
    found: list[tuple[int, JobRecord]] = []
    while True:
        rows = yield after, batch
        cursor = fill_page(found, rows, query)
        looked += len(rows)
        records = [record for _, record in found]
        if cursor is not None:
            return JobPage(records, cursor)
        if len(rows) < batch:
            return JobPage(records)
        after = rows[-1][0]
        if looked >= SCAN_LIMIT:
            return JobPage(records, str(after), looked_through=looked)


def sql_cursor(before: str | None) -> int | None:
    """A SQL driver's cursor: the sequence number of the last record of the page before."""
    if before is None:
        return None
    if not before.isdigit():
        raise ConfigError(f"before must be the 'next' cursor of an earlier page, got {before!r}")
    return int(before)


def scan_page(records: Sequence[JobRecord], query: JobQuery, scanned_all: bool) -> JobPage:
    """A page of ``records`` (the newest ones, oldest first, as ``jobs`` lists them) by
    ``query``; the cursor is the id of the page's last record."""
    newest_first = list(reversed(records))
    start = 0
    if query.before is not None:
        ids = [r.id for r in newest_first]
        start = ids.index(query.before) + 1 if query.before in ids else len(ids)
    found: list[JobRecord] = []
    more = False
    for record in newest_first[start:]:
        if query.matches(record):
            if len(found) == query.limit:
                more = True
                break
            found.append(record)
    return JobPage(found, found[-1].id if more and found else None, None if scanned_all else len(records))


def parse_query(params: Mapping[str, str], args: Sequence[str]) -> JobQuery:
    """A query from a request's parameters (``q``: the start of an id or part of a name,
    ``status``, ``name``, ``queue``, ``since``,
    ``until``: ISO 8601 or milliseconds since the epoch, ``error``, ``before``, ``limit``) and
    its ``arg`` values (``lr=0.1``, ``tenant="acme"``: a name, ``=``, and a JSON value or plain
    text); a ``ConfigError`` naming what does not read."""
    status = None
    if params.get("status"):
        try:
            status = JobStatus(params["status"])
        except ValueError:
            choices = ", ".join(s.value for s in JobStatus)
            raise ConfigError(f"status must be one of {choices}, got {params['status']!r}") from None
    since, until = _moment(params.get("since"), "since"), _moment(params.get("until"), "until")
    if since is not None and until is not None and since >= until:
        raise ConfigError(f"since must come before until, got since={params['since']!r}, "
                          f"until={params['until']!r}")
    limit = params.get("limit") or "50"
    if not limit.isdigit() or not 1 <= int(limit) <= PAGE_LIMIT:
        raise ConfigError(f"limit must be a whole number from 1 to {PAGE_LIMIT}, got {limit!r}")
    return JobQuery(status, params.get("name") or None, params.get("q", "").strip() or None,
                    params.get("queue") or None, since, until, params.get("error") or None,
                    tuple(_arg(text) for text in args), params.get("before") or None, int(limit))


def _moment(text: str | None, what: str) -> int | None:
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{what} must be an ISO 8601 time (2026-12-07T06:00:00+00:00) or milliseconds "
                          f"since the epoch, got {text!r}") from None
    if moment.tzinfo is None:
        raise ConfigError(f"{what} must name its time zone (like +00:00 or Z), got {text!r}")
    return int(moment.timestamp() * 1000)


def _arg(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not ARG_NAME.match(name):
        raise ConfigError(f"arg must be name=value with an identifier for a name, like lr=0.1 or "
                          f"tenant=acme, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value  # plain text
