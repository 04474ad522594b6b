"""What the Redis scripts take and give back: the enqueue batch, settle and retention
arguments, and records rebuilt from script replies. Pure functions, no I/O."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ...config import QueueSettings
from ...job import EXTRA_FIELDS, JobRecord, JobStatus
from ...serializer import dumps
from .._records import due_view
from ..base import COMPLETE, Settlement
from ..quarantine import checked, quarantine

NOTIFY_CAP = 64  # wake-ups an enqueue leaves at most on a queue's notify list


def by_queue(records: Sequence[JobRecord]) -> dict[str, Sequence[JobRecord]]:
    """The records of each queue, in order (a chunk is usually all of one queue)."""
    if not records:
        return {}
    queue = records[0].queue
    if all(r.queue == queue for r in records):
        return {queue: records}
    grouped: dict[str, list[JobRecord]] = {}
    for record in records:
        grouped.setdefault(record.queue, []).append(record)
    return {**grouped}


def enqueue_args(records: Sequence[JobRecord], extra: Sequence[Any] = ()) -> list[Any]:
    """What enqueue.lua takes: the notify cap, the number of jobs, then the batch as one value:
    runs of jobs sharing priority, delay, sweep key and lane, each a header line
    ``priority<TAB>delay_ms<TAB>key_json<TAB>lane_json<TAB>n`` (key empty for none, lane
    ``[lane, rule]`` or empty) and n job lines
    ``id<TAB>data``. Compact JSON escapes every control character, so tabs and newlines only
    ever separate; a dispatch's jobs usually make one run. Then ``extra`` (a lock's key and
    value), and where jobs have parents, their parents as JSON in the sixth place."""
    prefixes: dict[tuple[Any, ...], str] = {}
    extras: dict[tuple[Any, ...], str | None] = {}
    parts: list[str] = []
    run: tuple[int, int, str | None, str | None, str | None] | None = None
    header_at = count = 0
    for record in records:
        shape = (record.priority, record.available_ms - record.created_ms, record.key, record.lane,
                 record.lane_rule)
        if shape != run:
            if run is not None:
                parts[header_at] = _run_header(run, count)
            run, header_at, count = shape, len(parts), 0
            parts.append("")
        parts.append(f"{record.id}\t{_job_data(record, prefixes, extras)}")
        count += 1
    if run is not None:
        parts[header_at] = _run_header(run, count)
    args = [NOTIFY_CAP, len(records), "\n".join(parts), *extra]
    children = {r.id: [r.on_upstream_failure, r.parents] for r in records if r.parents}
    if children:
        args += [""] * (5 - len(args)) + [dumps(children)]
    return args


def _run_header(shape: tuple[int, int, str | None, str | None, str | None], count: int) -> str:
    priority, delay, key, lane, rule = shape
    named = "" if lane is None else dumps([lane, rule])
    return f"{priority}\t{max(0, delay)}\t{'' if key is None else dumps(key)}\t{named}\t{count}"


def _job_data(record: JobRecord, prefixes: dict[tuple[Any, ...], str],
              extras: dict[tuple[Any, ...], str | None]) -> str:
    """The job's data JSON, as stored once at dispatch and handed to every claim.

    Jobs of one kind share it up to the payload, so that part is encoded once per batch in
    ``prefixes`` (with the fields no query reads, ``extra``, as ``JobRecord.extra_json`` makes
    them, once per batch for the jobs of one class in ``extras``), and only the payload,
    creation time and key are encoded per job.
    """
    extra = record.extra_json(extras)
    shape = (record.name, record.priority, record.max_attempts, record.keep_ms, record.lane, record.lane_rule,
             extra)
    prefix = prefixes.get(shape)
    if prefix is None:
        prefix = prefixes[shape] = _data_prefix(record, extra)
    key = "null" if record.key is None else dumps(record.key)
    meta = f',"meta":{dumps(record.meta)}' if record.meta else ""  # what dispatch hooks added
    if record.on_upstream_failure is not None:
        meta += f',"on_upstream_failure":{dumps(record.on_upstream_failure)}'
    return f'{prefix}{dumps(record.payload)},"created_ms":{record.created_ms},"key":{key}{meta}}}'


def _data_prefix(record: JobRecord, extra: str | None) -> str:
    """The job's data JSON up to its payload: ``{"job":..,"priority":..,..,"payload":``."""
    keep = "" if record.keep_ms is None else f'"keep_ms":{record.keep_ms},'
    lane = "" if record.lane is None else \
        f'"lane":{dumps(record.lane)},"lane_rule":{dumps(record.lane_rule)},'
    more = "" if extra is None else f'"extra":{extra},'
    return (f'{{"job":{dumps(record.name)},"priority":{record.priority},'
            f'"max_attempts":{record.max_attempts},{keep}{lane}{more}"payload":')


def retention_args(settings: QueueSettings) -> list[int]:
    """What settle.lua trims by: completed kept, their max age (ms), failed kept, their max age."""
    def ms(seconds: float | None) -> int:
        return -1 if seconds is None else int(seconds * 1000)

    failed_keep = -1 if settings.failed_retention is None else settings.failed_retention
    return [settings.retention, ms(settings.retention_age_s), failed_keep,
            ms(settings.failed_retention_age_s)]


def settle_args(record: JobRecord, settlement: Settlement) -> list[Any]:
    """What settle.lua takes for one job: a completion with no meta to store is
    ``id, token, result_json``; any other settle ``id, token, verb, result_json, error_json,
    delay_ms, meta_json``."""
    token = record.token or ""
    if settlement.verb is COMPLETE and not record.meta:
        return [record.id, token, dumps(settlement.result)]
    error = "" if settlement.error is None else dumps([settlement.error, settlement.traceback,
                                                        settlement.failure])
    return [record.id, token, settlement.verb.value,
            dumps(settlement.result) if settlement.verb is COMPLETE else "", error,
            settlement.delay_ms, dumps(record.meta) if record.meta else ""]


def text(values: Iterable[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def claimed_records(queue: str, rows: list[Any], lease_s: float) -> list[JobRecord]:
    """reserve.lua's reply: now, ms to the next due job, then 7 values per claimed job. A job
    whose stored fields cannot be read is still handed out, quarantined (see ``quarantine``)."""
    now = int(rows[0])
    records = []
    for i in range(2, len(rows), 7):
        job_id, data, attempt, token, reclaims, meta, available = rows[i : i + 7]
        record = _claimed(_from_data(queue, job_id.decode(), data), int(attempt), token.decode(),
                          int(available), now, lease_s)
        record.reclaims = int(reclaims)
        try:
            if meta != b"{}":  # what the job stored while it ran, over what its dispatch stored
                record.meta.update(json.loads(meta.decode()))
        except (ValueError, UnicodeDecodeError, RecursionError, TypeError) as exc:
            record = quarantine(record, [f"meta is not JSON ({exc})"])
        records.append(checked(record))
    return records


def _claimed(record: JobRecord, attempt: int, token: str, available_ms: int, now: int,
             lease_s: float) -> JobRecord:
    """Mark a record read back from a script as held under ``token`` since ``now``."""
    record.status = JobStatus.ACTIVE
    record.attempt = attempt
    record.token = token
    record.available_ms = available_ms
    record.started_ms = now
    record.lease_ms = now + int(lease_s * 1000)
    return record


def handed_off_record(queue: str, row: bytes, lease_s: float) -> JobRecord:
    """A job enqueue.lua claimed for a waiting worker: ``now<TAB>id<TAB>token<TAB>data``."""
    at, job_id, token, data = row.split(b"\t", 3)
    now = int(at)
    return _claimed(_from_data(queue, job_id.decode(), data), 1, token.decode(), now, now, lease_s)


def _from_data(queue: str, job_id: str, data: bytes) -> JobRecord:
    try:
        if not data:
            raise ValueError("its data is missing")
        fields = json.loads(data.decode())  # decoded here: json.loads(bytes) sniffs the encoding
        if not isinstance(fields, dict):
            raise ValueError(f"expected an object, got {type(fields).__name__}")
        fields["job"], fields["payload"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # fails its job, not the worker
        unread = JobRecord(id=job_id, name="(unreadable)", payload=None, queue=queue)
        return quarantine(unread, [f"its data is not a job's JSON ({exc!r})"])
    meta = fields.get("meta")
    record = JobRecord(id=job_id, name=fields["job"], payload=fields["payload"], queue=queue,
                       priority=fields.get("priority", 0), max_attempts=fields.get("max_attempts", 1),
                       created_ms=fields.get("created_ms", 0), key=fields.get("key"),
                       meta=dict(meta) if isinstance(meta, dict) else {},
                       keep_ms=keep if isinstance(keep := fields.get("keep_ms"), int) else None,
                       lane=lane if isinstance(lane := fields.get("lane"), str) else None,
                       lane_rule=rule if isinstance(rule := fields.get("lane_rule"), str) else None,
                       on_upstream_failure=_text_or_none(fields.get("on_upstream_failure")))
    extra = fields.get("extra")
    if extra is None:  # records written before ``extra`` keep those fields at the top level
        extra = {name: fields[name] for name in EXTRA_FIELDS if name in fields}
    problem = record.apply_extra(extra)
    return record if problem is None else quarantine(record, [problem])


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def record_from_columns(queue: str, job_id: str, values: list[Any]) -> JobRecord | None:
    """A record from fetch.lua's columns; one whose fields cannot be read is quarantined."""
    state, token, result, error, reclaims, meta = values
    if state is None:
        return None
    head, _, data = state.partition(b"\t")
    record = _from_data(queue, job_id, data)
    problems: list[str] = []
    try:
        status, attempt, _priority, available, started, finished, lease = head.decode().split(",")
        record.status = JobStatus(status)
        record.attempt = int(attempt)
        record.available_ms = int(available)
        record.started_ms = None if started == "-1" else int(started)
        record.finished_ms = None if finished == "-1" else int(finished)
        record.lease_ms = None if lease == "-1" else int(lease)
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append(f"its state {head[:80]!r} cannot be read ({exc})")
        record.status = JobStatus.FAILED
    record.token = token.decode() if token else None
    for name, raw in (("result", result), ("error", error), ("meta", meta)):
        if raw:
            try:
                _set_column(record, name, json.loads(raw))
            except (ValueError, UnicodeDecodeError, TypeError, RecursionError) as exc:
                problems.append(f"{name} is not JSON ({exc})")
    try:
        record.reclaims = int(reclaims or 0)
    except ValueError:
        problems.append(f"reclaims is {reclaims!r}, not an integer")
    return due_view(checked(record, problems))


def _set_column(record: JobRecord, name: str, value: Any) -> None:
    if name == "result":
        record.result = value
    elif name == "error":  # [error, traceback, failure]; no traceback (false) for a lost lease
        record.error, traceback, *kind = value
        record.traceback = traceback if isinstance(traceback, str) else None
        record.failure = kind[0] if kind and isinstance(kind[0], str) else None
    elif isinstance(value, dict):  # what the job stored while it ran, over what its dispatch stored
        record.meta = {**record.meta, **value}
    else:
        record.meta = value
