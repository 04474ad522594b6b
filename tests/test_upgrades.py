"""Explicit upgrades: every durable driver stores its layout version; ``khadem-nb migrate``
applies what an older layout needs (``--sql`` prints the PostgreSQL and SQLite statements,
and those run by ``psql`` or ``sqlite3`` by hand give what ``migrate`` gives); a process that
meets a layout it cannot work on raises ``SchemaVersionError`` naming both versions and
changes nothing; ``auto_migrate`` says whether opening may upgrade."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    missing,
    need_postgres,
    need_redis,
    postgres_schema_at,
    postgres_url,
    purge_url,
    schema_for,
)
from jobs import Echo
from procs import env

from khadem_nb import CorruptQueueError, JobStatus, QueueManager, SchemaVersionError
from khadem_nb.drivers.postgres import SCHEMA_VERSION, PostgresDriver
from khadem_nb.drivers.sqlite import LAYOUT as SQLITE


def migrate(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "khadem_nb.cli", "--log-level", "ERROR", "migrate", "--queue-url", url,
               *extra]
    return subprocess.run(command, env=env(), capture_output=True, text=True, timeout=120)


def pg_versions(schema: str) -> list[int]:
    import psycopg

    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        return [row[0] for row in conn.execute(f"SELECT version FROM {schema}.version ORDER BY 1")]


def pg_layout(schema: str) -> dict[str, Any]:
    """What a schema holds, with its name taken out: columns, indexes, functions, triggers."""
    import psycopg

    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            found = conn.execute(sql, (schema,))
            return sorted(tuple(str(v).replace(schema, "S") for v in row) for row in found)

        return {
            "columns": rows("SELECT table_name, column_name, data_type, column_default, is_nullable "
                            "FROM information_schema.columns WHERE table_schema = %s"),
            "indexes": rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s"),
            "functions": rows("SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n "
                              "ON n.oid = p.pronamespace WHERE n.nspname = %s"),
            "triggers": rows("SELECT t.tgname, c.relname FROM pg_trigger t "
                             "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n "
                             "ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT t.tgisinternal"),
        }


OLDEST_PG = PostgresDriver.layout.oldest  # the oldest schema this release works on as it is


def old_pg_schema(tmp_path: Path, tag: str, version: int = OLDEST_PG - 1) -> tuple[str, str]:
    """A schema as an earlier release left it (by default the newest this release upgrades
    before it works on it), with a queued job; its URL and name."""
    import psycopg

    schema = schema_for(tmp_path) + tag
    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        postgres_schema_at(conn, schema, version)
        conn.execute(f"INSERT INTO {schema}.jobs (id, queue, name, status, priority, attempt, "
                     "max_attempts, created_ms, available_ms, payload) VALUES ('old-job', 'default', "
                     """'Echo', 'queued', 0, 0, 1, 0, 0, '{"value": "kept"}')""")
    url = need_postgres()
    return f"{url}{'&' if '?' in url else '?'}schema={schema}", schema


async def test_postgres_upgrades_only_when_told(tmp_path: Path) -> None:
    """A PostgreSQL schema one version behind: opening it with auto_migrate off (the default)
    raises SchemaVersionError naming both versions and the command, and changes nothing;
    ``khadem-nb migrate`` upgrades it, once; its job runs on."""
    url, schema = old_pg_schema(tmp_path, "a")
    old = OLDEST_PG - 1
    try:
        refused = rf"layout version {old}, older than this release of khadem_nb works on \({SCHEMA_VERSION}\)"
        with pytest.raises(SchemaVersionError, match=rf"{refused}.*khadem-nb migrate --queue-url") as caught:
            await QueueManager(url).init()
        assert (caught.value.found, caught.value.known) == (old, SCHEMA_VERSION)
        assert pg_versions(schema) == list(range(1, old + 1))  # nothing changed
        done = migrate(url)
        assert f"layout version {old} -> {SCHEMA_VERSION}" in done.stdout, done.stderr
        assert pg_versions(schema) == list(range(1, SCHEMA_VERSION + 1))
        again = migrate(url)
        assert again.returncode == 0 and "nothing to do" in again.stdout
        assert migrate(url, "--sql").stdout.startswith("-- ")  # nothing left to run
        manager = await QueueManager(url).init()
        try:
            worker = await manager.start_worker(run_in_background=True, delay=0.02)
            [record] = await manager.wait(["old-job"], timeout=30)
            await worker.stop()
            assert (record.status, record.result) == (JobStatus.COMPLETED, "kept")
        finally:
            await manager.close()
    finally:
        await purge_url(url)


async def test_the_schema_before_the_claim_indexes_is_worked_on_as_it_is(tmp_path: Path) -> None:
    """Schema version 12 adds only the claim's indexes: a version-11 schema runs this
    release's claims (delayed and queued jobs alike) with no upgrade, and ``migrate`` then adds
    the two indexes."""
    import psycopg

    assert OLDEST_PG == 11 < SCHEMA_VERSION
    url, schema = old_pg_schema(tmp_path, "v", version=OLDEST_PG)
    try:
        manager = await QueueManager(url).init()
        try:
            later = await manager.dispatch(Echo("later"), delay=0.3)
            worker = await manager.start_worker(run_in_background=True, delay=0.02)
            records = await manager.wait(["old-job", later], timeout=30)
            await worker.stop()
            assert [r.result for r in records] == ["kept", "later"]
        finally:
            await manager.close()
        assert pg_versions(schema) == list(range(1, OLDEST_PG + 1))  # nothing changed
        assert migrate(url).returncode == 0
        with psycopg.connect(need_postgres()) as conn:
            indexes = {row[0] for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))}
        assert {"jobs_queued", "jobs_due"} <= indexes
    finally:
        await purge_url(url)


async def test_postgres_migrate_sql_run_by_psql_gives_what_migrate_gives(tmp_path: Path) -> None:
    if shutil.which("psql") is None:
        missing("psql is not installed (Debian's postgresql-client)", "KHADEM_REQUIRE_SQL_SHELLS")
    first_url, first = old_pg_schema(tmp_path, "a")
    second_url, second = old_pg_schema(tmp_path, "b")
    try:
        assert migrate(first_url).returncode == 0
        printed = migrate(second_url, "--sql")
        assert printed.returncode == 0 and printed.stdout.startswith("BEGIN;"), printed.stderr
        by_hand = subprocess.run(["psql", need_postgres(), "-v", "ON_ERROR_STOP=1", "-q"],
                                 input=printed.stdout, capture_output=True, text=True, timeout=120)
        assert by_hand.returncode == 0, by_hand.stderr
        assert pg_versions(second) == pg_versions(first) == list(range(1, SCHEMA_VERSION + 1))
        assert pg_layout(second) == pg_layout(first)
    finally:
        await purge_url(first_url)
        await purge_url(second_url)


async def test_a_layout_two_versions_ahead_is_refused_one_ahead_is_worked_on(tmp_path: Path) -> None:
    """Layouts only add: this release works on the next one (the release after it may migrate
    while this one runs) and refuses the one after that, unaltered, from migrate as well."""
    import psycopg

    url = postgres_url(tmp_path)
    schema = schema_for(tmp_path)
    try:
        await (await QueueManager(url).init()).close()
        with psycopg.connect(need_postgres(), autocommit=True) as conn:
            conn.execute(f"INSERT INTO {schema}.version VALUES ({SCHEMA_VERSION + 1})")
        manager = await QueueManager(url).init()  # one ahead: works
        job_id = await manager.dispatch(Echo("next"))
        await manager.close()
        with psycopg.connect(need_postgres(), autocommit=True) as conn:
            conn.execute(f"INSERT INTO {schema}.version VALUES ({SCHEMA_VERSION + 2})")
        with pytest.raises(SchemaVersionError, match=rf"version {SCHEMA_VERSION + 2}, newer than"):
            await QueueManager(url).init()
        refused = migrate(url)
        assert refused.returncode == 1 and "upgrade khadem_nb" in refused.stderr
        assert pg_versions(schema) == [*range(1, SCHEMA_VERSION + 3)]  # nothing changed
        assert job_id
    finally:
        with psycopg.connect(need_postgres(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def old_sqlite_file(path: Path) -> None:
    """A queue file as a release before layout versions wrote it: no ``extra`` column yet, no
    keyed store, schedules in a table of their own, user_version 0, and a queued job."""
    with sqlite3.connect(path) as conn:
        conn.execute("""CREATE TABLE khadem_jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, queue TEXT NOT NULL,
            name TEXT NOT NULL, status TEXT NOT NULL, priority INTEGER NOT NULL, attempt INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL, reclaims INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,
            available_ms INTEGER NOT NULL, started_ms INTEGER, finished_ms INTEGER, lease_ms INTEGER,
            token TEXT, timeout_s REAL, key TEXT, payload TEXT NOT NULL, result TEXT, error TEXT,
            traceback TEXT, meta TEXT NOT NULL DEFAULT '{}', failure TEXT, code TEXT)""")
        conn.execute("CREATE TABLE khadem_schedules (id TEXT PRIMARY KEY, queue TEXT NOT NULL, "
                     "spec TEXT NOT NULL, last_slot BIGINT, last_job TEXT)")
        conn.execute("INSERT INTO khadem_jobs (id, queue, name, status, priority, attempt, max_attempts, "
                     "created_ms, available_ms, timeout_s, payload) VALUES ('old-job', 'default', 'Echo', "
                     """'queued', 0, 0, 1, 0, 0, 5.0, '{"value": "kept"}')""")


def sqlite_layout(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        objects = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        return [*objects, ("user_version", conn.execute("PRAGMA user_version").fetchone()[0])]


async def test_sqlite_migrate_and_migrate_sql_by_hand_give_one_layout(tmp_path: Path) -> None:
    """A file from before layout versions: with auto_migrate off it is refused, unaltered;
    ``migrate`` and ``migrate --sql`` run by ``sqlite3`` give the same file; the job runs on.
    With auto_migrate on (SQLite's default) opening upgrades it."""
    first, second, third = tmp_path / "first.db", tmp_path / "second.db", tmp_path / "third.db"
    for path in (first, second, third):
        old_sqlite_file(path)
    before = sqlite_layout(first)
    with pytest.raises(SchemaVersionError, match=r"layout version 0, older than this release"):
        await QueueManager(f"sqlite:///{first}?auto_migrate=false").init()
    assert sqlite_layout(first) == before
    done = migrate(f"sqlite:///{first}")
    assert done.returncode == 0 and f"layout version 0 -> {SQLITE.current}" in done.stdout, done.stderr
    printed = migrate(f"sqlite:///{second}", "--sql")
    assert printed.returncode == 0 and printed.stdout.startswith("BEGIN IMMEDIATE;"), printed.stderr
    if shutil.which("sqlite3") is None:
        missing("the sqlite3 shell is not installed (Debian's sqlite3)", "KHADEM_REQUIRE_SQL_SHELLS")
    by_hand = subprocess.run(["sqlite3", "-bail", str(second)], input=printed.stdout, capture_output=True,
                             text=True, timeout=60)
    assert by_hand.returncode == 0, by_hand.stderr
    assert sqlite_layout(second) == sqlite_layout(first)
    for path in (second, third):  # by hand, and by opening with SQLite's default auto_migrate
        manager = await QueueManager(f"sqlite:///{path}").init()
        try:
            assert manager.driver.layout_change in (None, (0, SQLITE.current))
            worker = await manager.start_worker(run_in_background=True, delay=0.02)
            [record] = await manager.wait(["old-job"], timeout=30)
            await worker.stop()
            assert (record.status, record.result, record.timeout_s) == (JobStatus.COMPLETED, "kept", 5.0)
        finally:
            await manager.close()
    assert sqlite_layout(third) == sqlite_layout(first)


async def test_a_sqlite_file_before_the_claim_indexes_is_worked_on_as_it_is(tmp_path: Path) -> None:
    """SQLite layout 2 adds only the claim's indexes: with auto_migrate off, a layout-1 file
    runs this release's claims of queued and delayed jobs, unaltered."""
    path = tmp_path / "one.db"
    manager = await QueueManager(f"sqlite:///{path}").init()
    await manager.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX khadem_jobs_queued")
        conn.execute("DROP INDEX khadem_jobs_due")
        conn.execute("PRAGMA user_version = 1")
    assert SQLITE.oldest == 1 < SQLITE.current
    before = sqlite_layout(path)
    manager = await QueueManager(f"sqlite:///{path}?auto_migrate=false").init()
    try:
        ids = [await manager.dispatch(Echo("now")), await manager.dispatch(Echo("later"), delay=0.3)]
        worker = await manager.start_worker(run_in_background=True, delay=0.02)
        records = await manager.wait(ids, timeout=30)
        await worker.stop()
        assert [r.result for r in records] == ["now", "later"]
    finally:
        await manager.close()
    assert sqlite_layout(path) == before


async def test_redis_and_file_store_their_layout_version(tmp_path: Path) -> None:
    """Redis writes ``{prefix}:layout`` with its first queue, and works on a prefix written
    before (version 0) as it is until ``migrate`` notes the version; the file driver keeps a
    ``layout`` file; a damaged version is a clear error; ``--sql`` names what it cannot do."""
    import redis

    url = f"{need_redis()}?prefix=khadem-layout-{tmp_path.name}"
    client = redis.Redis.from_url(need_redis())
    key = f"khadem-layout-{tmp_path.name}:layout"
    try:
        manager = await QueueManager(url).init()
        assert client.get(key) is None  # nothing stored yet, nothing written
        await manager.dispatch(Echo(1))
        assert client.get(key) == b"1"
        client.delete(key)  # as a release before layout versions left it
        await manager.close()
        manager = await QueueManager(url).init()  # auto_migrate off: worked on as it is
        assert manager.driver.layout_change is None and client.get(key) is None
        await manager.close()
        done = migrate(url)
        assert done.returncode == 0 and "layout version 0 -> 1" in done.stdout, done.stderr
        assert client.get(key) == b"1"
        assert migrate(url, "--sql").returncode == 1
        client.set(key, b"soon")
        with pytest.raises(CorruptQueueError, match="holds 'soon', not a version number"):
            await QueueManager(url).init()
    finally:
        client.delete(key)
        await purge_url(url)
        client.close()
    folder = tmp_path / "q"
    file_url = f"file://{folder}"
    await (await QueueManager(file_url).init()).close()
    assert (folder / "layout").read_text() == "1\n"
    (folder / "layout").write_text("3\n")
    with pytest.raises(SchemaVersionError, match="layout version 3, newer than"):
        await QueueManager(file_url).init()
    assert (folder / "layout").read_text() == "3\n"
    refused = migrate(file_url, "--sql")
    assert refused.returncode == 1 and "not SQL" in refused.stderr


def test_migrate_against_an_unreachable_server_is_a_clear_error() -> None:
    refused = migrate("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1")
    assert refused.returncode == 1 and "cannot be reached" in refused.stderr
    bad = migrate("sqlite:///tmp/x.db?auto_migrate=perhaps")
    assert bad.returncode == 1 and "auto_migrate in a URL query must be true or false" in bad.stderr


def test_a_release_and_the_one_before_share_a_queue_on_its_layout(tmp_path: Path) -> None:
    """The release before this one wrote PostgreSQL schema version SCHEMA_VERSION and no
    version on Redis: this release's worker runs jobs of such a queue beside its dispatches,
    with no upgrade run (auto_migrate off)."""
    async def round_trip(url: str) -> str:
        manager = await QueueManager(url).init()
        try:
            worker = await manager.start_worker(run_in_background=True, delay=0.02)
            result = await manager.dispatch_and_wait(Echo("side by side"), timeout=30)
            await worker.stop()
            return str(result)
        finally:
            await manager.driver.purge()
            await manager.close()

    import psycopg
    import redis

    schema = schema_for(tmp_path)
    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        postgres_schema_at(conn, schema, SCHEMA_VERSION)
    assert asyncio.run(round_trip(postgres_url(tmp_path))) == "side by side"
    assert pg_versions(schema) == list(range(1, SCHEMA_VERSION + 1))
    prefix = f"khadem-before-{tmp_path.name}"
    client = redis.Redis.from_url(need_redis())
    client.sadd(f"{prefix}:queues", "default")  # a queue registered, no layout key
    try:
        assert asyncio.run(round_trip(f"{need_redis()}?prefix={prefix}")) == "side by side"
    finally:
        client.delete(f"{prefix}:queues", f"{prefix}:layout")
        client.close()
