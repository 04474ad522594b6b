"""The record fields no query reads (``job.EXTRA_FIELDS``) travel in one JSON field on every
driver: they come back from every read and claim as they were dispatched, the SQL drivers keep
them in one ``extra`` column, and SQLite files, PostgreSQL schemas and Redis records written
before that column read on after the upgrade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import QUEUED_DRIVERS, driver_config, postgres_schema_at

from khadem_nb import JobStatus, QueueManager
from khadem_nb.config import parse_config
from khadem_nb.drivers.redis.wire import record_from_columns
from khadem_nb.job import EXTRA_FIELDS, JobRecord


def test_a_records_extra_fields_make_one_json_object_without_the_unset_ones() -> None:
    record = JobRecord(id="a" * 32, name="Echo", payload={}, timeout_s=2.5, code="f" * 32)
    cache: dict[tuple[Any, ...], str | None] = {}
    text = record.extra_json(cache)
    assert text == '{"timeout_s":2.5,"code":"' + "f" * 32 + '"}'
    assert record.extra_json(cache) is text and len(cache) == 1  # a batch's records share it
    record.parents = ["b" * 32]  # a list: not kept in the cache, still encoded
    assert '"parents":["' in (record.extra_json(cache) or "") and len(cache) == 1
    assert JobRecord(id="c", name="Echo", payload={}).extra_json() is None
    back = JobRecord(id="a" * 32, name="Echo", payload={})
    assert back.read_extra(record.extra_json()) is None
    assert (back.timeout_s, back.code, back.parents) == (2.5, "f" * 32, ["b" * 32])
    assert back.read_extra("[1, 2]") == "its extra fields are list, not an object"
    assert "not JSON" in (back.read_extra("{nope") or "")
    assert set(EXTRA_FIELDS) == {"timeout_s", "code", "parents", "feed"}


@pytest.mark.parametrize("driver", QUEUED_DRIVERS)
async def test_extra_fields_come_back_from_reads_and_claims(driver: str, tmp_path: Path) -> None:
    manager = await QueueManager(driver_config(driver, tmp_path)).init()
    try:
        await manager.driver.purge()
        record = JobRecord(id="e" * 32, name="Echo", payload={"value": 1}, timeout_s=7.0,
                           code="d" * 32, feed="result", created_ms=1, available_ms=1)
        plain = JobRecord(id="f" * 32, name="Echo", payload={"value": 2}, created_ms=2, available_ms=2)
        await manager.driver.push([record, plain])
        stored = await manager.driver.get(record.id)
        assert stored is not None
        assert (stored.timeout_s, stored.code, stored.feed) == (7.0, "d" * 32, "result")
        claimed = {r.id: r for r in await manager.driver.reserve(["default"], 2, 1.0)}
        assert (claimed[record.id].timeout_s, claimed[record.id].code) == (7.0, "d" * 32)
        bare = claimed[plain.id]
        assert (bare.timeout_s, bare.code, bare.feed) == (None, None, None)
        assert await manager.driver.complete(claimed[record.id], "done")
        [done] = await manager.driver.jobs(JobStatus.COMPLETED)
        assert (done.timeout_s, done.code, done.feed, done.result) == (7.0, "d" * 32, "result", "done")
    finally:
        await manager.driver.purge()
        await manager.close()


OLD_SQLITE_JOBS = """CREATE TABLE khadem_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, queue TEXT NOT NULL,
    name TEXT NOT NULL, status TEXT NOT NULL, priority INTEGER NOT NULL, attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL, reclaims INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,
    available_ms INTEGER NOT NULL, started_ms INTEGER, finished_ms INTEGER, lease_ms INTEGER,
    token TEXT, timeout_s REAL, key TEXT, payload TEXT NOT NULL, result TEXT, error TEXT,
    traceback TEXT, meta TEXT NOT NULL DEFAULT '{}', failure TEXT, code TEXT, keep_ms INTEGER,
    lane TEXT, lane_rule TEXT, parents TEXT, on_upstream_failure TEXT, feed TEXT)"""
OLD_ROW = ("insert into khadem_jobs (id, queue, name, status, priority, attempt, max_attempts, created_ms, "
           "available_ms, timeout_s, payload, code, parents, on_upstream_failure, feed) VALUES "
           """(?, 'default', 'Echo', ?, 0, 0, 1, 0, 0, ?, '{"value": 1}', ?, ?, ?, ?)""")


async def test_an_sqlite_file_with_a_column_a_field_upgrades(tmp_path: Path) -> None:
    """A queue file whose jobs table has a column for each extra field (versions before
    ``extra``): its fields move into ``extra`` and those columns go, once, when it opens."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_SQLITE_JOBS)
        conn.execute(OLD_ROW, ("a" * 32, "queued", 3.5, "c" * 32, None, None, None))
        conn.execute(OLD_ROW, ("b" * 32, "waiting", None, "c" * 32, '["' + "a" * 32 + '"]', "run", "result"))
        conn.execute(OLD_ROW, ("d" * 32, "queued", None, None, None, None, None))
    manager = await QueueManager(f"sqlite:///{path}").init()
    try:
        first, child, bare = await manager.driver.get_many(["a" * 32, "b" * 32, "d" * 32])
        assert first is not None and (first.timeout_s, first.code, first.parents) == (3.5, "c" * 32, None)
        assert child is not None and (child.parents, child.on_upstream_failure, child.feed) == \
            (["a" * 32], "run", "result")
        assert bare is not None and (bare.timeout_s, bare.code) == (None, None)
        with sqlite3.connect(path) as conn:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(khadem_jobs)")}
            extras = dict(conn.execute("SELECT id, extra FROM khadem_jobs").fetchall())
        assert "extra" in columns and not columns & {"timeout_s", "code", "parents", "feed"}
        assert extras["d" * 32] is None  # nothing set: no object
        [held] = await manager.driver.reserve(["default"], 1, 1.0)
        assert (held.id, held.timeout_s) == ("a" * 32, 3.5)
    finally:
        await manager.close()
    again = await QueueManager(f"sqlite:///{path}").init()  # opening again changes nothing
    assert (await again.driver.get("a" * 32)).code == "c" * 32  # type: ignore[union-attr]
    await again.close()


async def test_a_postgres_schema_at_version_10_upgrades(tmp_path: Path) -> None:
    import psycopg

    config = driver_config("postgres", tmp_path, auto_migrate=True)
    schema = parse_config(config).schema.lower()
    url = str(config["queue"]["url"]).split("?")[0]
    with psycopg.connect(url, autocommit=True) as conn:
        postgres_schema_at(conn, schema, 10)
        insert = OLD_ROW.replace("khadem_jobs", f"{schema}.jobs").replace("?", "%s")
        conn.execute(insert, ("a" * 32, "queued", 3.5, "c" * 32, None, None, None))
        conn.execute(insert, ("b" * 32, "waiting", None, "c" * 32, '["' + "a" * 32 + '"]', "run", "result"))
    manager = await QueueManager(config).init()
    try:
        first, child = await manager.driver.get_many(["a" * 32, "b" * 32])
        assert first is not None and (first.timeout_s, first.code, first.parents) == (3.5, "c" * 32, None)
        assert child is not None and (child.parents, child.on_upstream_failure, child.feed) == \
            (["a" * 32], "run", "result")
        with psycopg.connect(url, autocommit=True) as conn:
            columns = {row[0] for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND "
                "table_name = 'jobs'", (schema,))}
        assert "extra" in columns and not columns & {"timeout_s", "code", "parents", "feed"}
        [held] = await manager.driver.reserve(["default"], 1, 1.0)
        assert (held.id, held.timeout_s, held.code) == ("a" * 32, 3.5, "c" * 32)
    finally:
        await manager.driver.purge()
        await manager.close()


def test_a_redis_record_written_before_extra_reads_on() -> None:
    """Redis records keep their data JSON as written: one from before ``extra`` has the fields
    at its top level, and reads as it did."""
    old = (b'{"job":"Echo","priority":0,"max_attempts":1,"timeout_s":2.0,"code":"' + b"c" * 32
           + b'","payload":{"value":1},"created_ms":5,"key":null,"meta":{},"parents":["' + b"a" * 32
           + b'"],"on_upstream_failure":"run","feed":"results"}')
    state = b"waiting,0,0,5,-1,-1,-1\t" + old
    record = record_from_columns("default", "b" * 32, [state, None, None, None, None, None])
    assert record is not None and record.status is JobStatus.WAITING
    assert (record.timeout_s, record.code, record.parents, record.on_upstream_failure, record.feed) == \
        (2.0, "c" * 32, ["a" * 32], "run", "results")
    broken = state.replace(b'"timeout_s":2.0', b'"extra":[1]')
    damaged = record_from_columns("default", "b" * 32, [broken, None, None, None, None, None])
    assert damaged is not None
    assert "stored record unreadable: its extra fields are list" in (damaged.error or "")
    wrong = state.replace(b'"timeout_s":2.0', b'"timeout_s":"soon"')
    quarantined = record_from_columns("default", "b" * 32, [wrong, None, None, None, None, None])
    assert quarantined is not None and "timeout_s is 'soon', not a number" in (quarantined.error or "")
