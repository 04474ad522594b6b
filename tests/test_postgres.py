"""What only the PostgreSQL driver does: transactional dispatch, its schema, its index, its
errors, notices (the driver contract runs on it in test_contract.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import need_postgres, postgres_url, schema_for
from jobs import Echo

from khadem_nb import (
    ConfigError,
    DriverError,
    DriverUnavailableError,
    JobStatus,
    QueueManager,
    SchemaVersionError,
)
from khadem_nb.drivers.postgres import SCHEMA_VERSION

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[QueueManager]:
    manager = await QueueManager(postgres_url(tmp_path)).init()
    yield manager
    await manager.purge()
    await manager.close()


async def test_dispatch_inside_the_application_transaction(pg: QueueManager) -> None:
    import psycopg

    url = need_postgres()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction():
            await conn.execute("SELECT 1")  # the application's own work
            kept = await pg.dispatch(Echo("committed"), connection=conn)
            assert (await pg.statuses([kept])) == [None]  # not visible before the commit
        dropped = ""
        async with conn.transaction():
            dropped = await pg.dispatch(Echo("rolled back"), connection=conn)
            raise psycopg.Rollback()  # the application changes its mind
    with psycopg.connect(url) as sync_conn, sync_conn.transaction():
        many = await pg.dispatch_many([Echo("sync 1"), Echo("sync 2")], connection=sync_conn)
    assert await pg.statuses([kept, dropped, *many]) == [JobStatus.QUEUED, None, JobStatus.QUEUED,
                                                         JobStatus.QUEUED]
    worker = await pg.start_worker(run_in_background=True, delay=0.05)
    records = await pg.wait([kept, *many], timeout=20)
    await worker.stop()
    assert [r.result for r in records] == ["committed", "sync 1", "sync 2"]


async def test_a_worker_never_sees_an_uncommitted_job(pg: QueueManager) -> None:
    import psycopg

    worker = await pg.start_worker(run_in_background=True, delay=0.05)
    async with await psycopg.AsyncConnection.connect(need_postgres()) as conn:
        async with conn.transaction():
            job_id = await pg.dispatch(Echo("later"), connection=conn)
            await asyncio.sleep(0.5)  # an idle worker claims all the while
            assert await pg.statuses([job_id]) == [None]
        record = (await pg.wait([job_id], timeout=20))[0]  # woken by the notice at commit
    await worker.stop()
    assert record.status is JobStatus.COMPLETED


async def test_bad_connections_store_nothing(pg: QueueManager) -> None:
    import psycopg

    conn = await psycopg.AsyncConnection.connect(need_postgres())
    async with conn.transaction():
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1 / 0")
        with pytest.raises(ConfigError, match="failed transaction"):
            await pg.dispatch(Echo(1), connection=conn)
    await conn.close()
    with pytest.raises(ConfigError, match="closed"):
        await pg.dispatch(Echo(2), connection=conn)
    with pytest.raises(ConfigError, match="psycopg Connection"):
        await pg.dispatch(Echo(3), connection="not a connection")
    assert (await pg.counts())["queued"] == 0
    memory = await QueueManager().init()
    with pytest.raises(ConfigError, match="needs the postgres driver"):
        await memory.dispatch(Echo(4), connection=conn)
    await memory.close()


async def test_claims_use_the_ready_and_lane_indexes_on_a_million_rows(pg: QueueManager) -> None:
    import psycopg

    schema = pg.driver.schema  # type: ignore[attr-defined]
    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        conn.execute(f"""
            INSERT INTO {schema}.jobs (id, queue, name, status, priority, attempt, max_attempts,
                                       created_ms, available_ms, finished_ms, payload)
            SELECT md5(g::text), 'default', 'Echo', 'completed', 0, 1, 1, g, g, g, '{{}}'
              FROM generate_series(1, 1000000) AS g""")
        conn.execute(f"ANALYZE {schema}.jobs")
    await pg.dispatch(Echo("the one pending job"))
    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        plan = "\n".join(row[0] for row in conn.execute(
            f"EXPLAIN SELECT seq FROM {schema}.jobs WHERE queue = 'default' AND status IN "
            "('queued', 'scheduled') AND available_ms <= 9e15 AND lane IS NULL ORDER BY priority DESC, seq "
            "LIMIT 10 FOR UPDATE SKIP LOCKED"))
        lanes = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN " + pg.driver._lanes_sql.waiting.replace("%s", "'default'", 1).replace("%s", "9e15")))  # type: ignore[attr-defined]
    assert "jobs_ready" in plan, plan
    assert "jobs_lanes" in lanes, lanes
    claimed = await pg.driver.reserve(["default"], 10, 0)
    assert [r.payload for r in claimed] == [{"value": "the one pending job"}]


async def test_a_row_edited_into_nonsense_fails_its_job_and_the_worker_lives(pg: QueueManager) -> None:
    import psycopg

    bad = await pg.dispatch(Echo("to be damaged"))
    good = await pg.dispatch(Echo("fine"))
    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        conn.execute(f"UPDATE {pg.driver.schema}.jobs SET payload = '{{not json' WHERE id = %s",  # type: ignore[attr-defined]
                     (bad,))
    worker = await pg.start_worker(run_in_background=True, delay=0.05)
    records = await pg.wait([bad, good], timeout=20)
    await worker.stop()
    assert records[0].status is JobStatus.FAILED and "payload is not JSON" in (records[0].error or "")
    assert records[1].status is JobStatus.COMPLETED


async def test_a_schema_from_a_newer_version_is_refused_unaltered(tmp_path: Path) -> None:
    import psycopg

    url = postgres_url(tmp_path)
    manager = await QueueManager(url).init()
    await manager.close()
    schema = schema_for(tmp_path)
    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.version VALUES (99)")
    with pytest.raises(SchemaVersionError, match=r"layout version 99, newer than this release of khadem_nb "
                       rf"knows \(it writes {SCHEMA_VERSION} and works on {SCHEMA_VERSION + 1}\)"):
        await QueueManager(url).init()
    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        versions = sorted(row[0] for row in conn.execute(f"SELECT version FROM {schema}.version"))
    assert versions == [*range(1, SCHEMA_VERSION + 1), 99]  # nothing added, nothing taken


async def test_a_first_version_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    """A schema as version 1 wrote it, with a job in it, is taken to the current version when
    opened: every step runs once, in order, and the job is still there to claim."""
    import psycopg

    from khadem_nb.drivers.postgres import schema_sql

    schema = schema_for(tmp_path)
    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.version (version integer NOT NULL)")
        for statement in schema_sql(schema):
            conn.execute(statement)
        conn.execute(f"INSERT INTO {schema}.version VALUES (1)")
        conn.execute(f"INSERT INTO {schema}.jobs (id, queue, name, status, priority, attempt, "
                     "max_attempts, created_ms, available_ms, payload) VALUES ('old-job', 'default', 'Echo', "
                     """'queued', 0, 0, 1, 0, 0, '{"value": "from version 1"}')""")
    manager = await QueueManager(postgres_url(tmp_path) + "&auto_migrate=true").init()
    try:
        with psycopg.connect(need_postgres(), autocommit=True) as conn:
            versions = [row[0] for row in conn.execute(f"SELECT version FROM {schema}.version ORDER BY 1")]
            indexes = {row[0] for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))}
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        assert "jobs_finished" in indexes
        [held] = await manager.driver.reserve(["default"], 1, 1.0)
        assert (held.id, held.payload) == ("old-job", {"value": "from version 1"})
        assert await manager.driver.complete(held, "upgraded")
        await manager.close()
        manager = await QueueManager(postgres_url(tmp_path)).init()  # opening again changes nothing
        with psycopg.connect(need_postgres(), autocommit=True) as conn:
            again = [row[0] for row in conn.execute(f"SELECT version FROM {schema}.version ORDER BY 1")]
        assert again == versions
        assert (await manager.get_job("old-job")).result == "upgraded"
    finally:
        await manager.purge()
        await manager.close()


async def test_bad_urls_and_servers(tmp_path: Path) -> None:
    need_postgres()
    with pytest.raises(ConfigError, match="not a PostgreSQL identifier"):
        await QueueManager("postgresql://postgres@127.0.0.1:5432/test?schema=no-dashes").init()
    started = time.monotonic()
    with pytest.raises(DriverUnavailableError, match=r"127\.0\.0\.1:1/test"):
        await QueueManager("postgresql://postgres:hunter22@127.0.0.1:1/test?connect_timeout=2").init()
    assert time.monotonic() - started < 6
    with pytest.raises(DriverError, match="nosuchdb") as caught:
        await QueueManager("postgresql://postgres:hunter22@127.0.0.1:5432/nosuchdb?connect_timeout=1").init()
    assert "hunter22" not in str(caught.value)
    with pytest.raises(DriverError, match="nosuchrole"):
        await QueueManager("postgresql://nosuchrole:hunter22@127.0.0.1:5432/test?connect_timeout=1").init()


async def test_settings_in_the_url_and_libpq_options_pass(tmp_path: Path) -> None:
    url = postgres_url(tmp_path) + "&lease=7&application_name=khadem-test"
    manager = await QueueManager(url).init()
    assert manager.settings.lease_s == 7 and manager.settings.schema == schema_for(tmp_path)
    assert "lease" not in manager.driver.conninfo() and "application_name" in manager.driver.conninfo()  # type: ignore[attr-defined]
    await manager.close()


async def test_the_notice_self_test_falls_back_to_polling(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A listener that cannot hear the queue's notices (here: ``options.listen_url`` names
    another database, and notices stay in their database, as behind a proxy that sends LISTEN
    elsewhere) fails the self-test: the driver logs it and polls, and work still gets done."""
    url = postgres_url(tmp_path)
    caplog.set_level(logging.WARNING, logger="khadem_nb.drivers.postgres")
    heard = await QueueManager(url).init()
    assert (await heard.driver.listener()).working  # type: ignore[attr-defined]
    deaf = await QueueManager({"queue": {"url": url, "options": {
        "listen_url": need_postgres().rsplit("/", 1)[0] + "/postgres"}}}).init()
    try:
        assert not (await deaf.driver.listener()).working  # type: ignore[attr-defined]
        assert "poll with backoff instead" in caplog.text
        assert await deaf.driver.listen_aborts(["default"], lambda job_id: None) is None
        job_id = await heard.dispatch(Echo("polled"))
        claimed = await deaf.driver.reserve(["default"], 1, 5.0)
        assert [r.id for r in claimed] == [job_id]
    finally:
        await deaf.purge()
        await deaf.close()
        await heard.close()


async def test_a_batch_of_settles_tells_waiters_elsewhere_of_every_job(pg: QueueManager,
                                                                       tmp_path: Path) -> None:
    """500 settles in one loop turn are one statement; their settle notices are split into
    payloads the server takes, and a waiter on another connection hears of each job."""
    ids = await pg.dispatch_many([Echo(i) for i in range(500)])
    elsewhere = await QueueManager(postgres_url(tmp_path)).init()
    try:
        heard: dict[str, JobStatus | None] = {}
        everyone = asyncio.Event()

        def notice(job_id: str, status: JobStatus | None, result: object) -> None:
            heard[job_id] = status
            if len(heard) == len(ids):
                everyone.set()

        unwatch = await elsewhere.driver.watch(ids, notice)
        held = await pg.driver.reserve(["default"], 500, 1.0)
        assert len(held) == 500
        assert all(await asyncio.gather(*(pg.driver.complete(r, r.id) for r in held)))
        async with asyncio.timeout(10):
            await everyone.wait()
        unwatch()
        assert set(heard) == set(ids) and set(heard.values()) == {JobStatus.COMPLETED}
    finally:
        await elsewhere.close()


async def test_behind_pgbouncer_in_transaction_pooling(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Behind PgBouncer's transaction pooling LISTEN reaches no one: the self-test notices, the
    driver says so and polls. A statement psycopg prepared on one server connection is missing
    on the next: the driver turns prepared statements off and runs the work again. Every job
    dispatched through the proxy, one at a time or in bulk, runs."""
    from pg_servers import Bouncer

    bouncer = Bouncer(need_postgres())
    caplog.set_level(logging.WARNING, logger="khadem_nb.drivers.postgres")
    manager = None
    try:
        url = f"{bouncer.url}?schema={schema_for(tmp_path)}"
        manager = await QueueManager(url).init()
        assert not (await manager.driver.listener()).working  # type: ignore[attr-defined]
        assert "poll with backoff instead" in caplog.text
        ids = await manager.dispatch_many([Echo(i) for i in range(40)])
        ids += [await manager.dispatch(Echo(f"one of {n}")) for n in range(20)]  # prepared after 5
        worker = await manager.start_worker(run_in_background=True, concurrency=4)
        records = await manager.wait(ids, timeout=30)
        await worker.stop()
        assert [r.status for r in records] == [JobStatus.COMPLETED] * 60
        assert [r.result for r in records] == [*range(40), *(f"one of {n}" for n in range(20))]
    finally:
        if manager is not None:
            await manager.purge()
            await manager.close()
        bouncer.stop()


async def test_a_server_restart_under_load_loses_nothing(tmp_path: Path) -> None:
    """Workers and a dispatcher on a server of the test's own; `pg_ctl restart` mid-drain.
    Every job completes; the listener comes back after the restart."""
    from pg_servers import OwnServer
    from procs import kill, start_worker

    need_postgres()
    server = OwnServer()
    server.start()
    try:
        url = server.url + "?schema=restart&lease=5"
        manager = await QueueManager(url).init()
        log = tmp_path / "runs.log"
        from jobs import Mark

        await manager.dispatch_many([Mark(str(i), str(log)) for i in range(400)])
        workers = [start_worker(url, "--concurrency", "4") for _ in range(3)]
        await asyncio.sleep(0.5)
        await asyncio.get_running_loop().run_in_executor(None, server.restart)
        server.wait_ready()
        listener = await manager.driver.listener()  # type: ignore[attr-defined]
        deadline = time.monotonic() + 15
        while not listener.connected and time.monotonic() < deadline:  # it listens again
            await asyncio.sleep(0.05)
        assert listener.connected
        for i in range(400, 450):  # dispatch goes on after the restart (the pool reconnects)
            for _ in range(50):
                try:
                    await manager.dispatch(Mark(str(i), str(log)))
                    break
                except DriverUnavailableError:
                    await asyncio.sleep(0.2)
        deadline = time.monotonic() + 60
        while (counts := await manager.counts())["completed"] < 450 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for worker in workers:  # their exit code is not the point: one may still be starting
            kill(worker)
        ids = [r.id for r in await manager.jobs()]
        await manager.purge()
        await manager.close()
    finally:
        server.stop()
    tags = log.read_text().split()[0::2]
    assert counts["completed"] == 450 and len(ids) == 450, counts
    assert set(tags) == {str(i) for i in range(450)}  # nothing lost (a job cut by the restart may run again)


async def test_a_version_7_workflow_upgrades_and_plain_jobs_skip_the_trigger(tmp_path: Path) -> None:
    """A schema at version 7 with a child waiting on its parent is taken to version 8: the rows
    of the workflow are marked, the child is still released by its parent's end, and jobs
    outside every workflow are never marked, so their ends do not run the trigger."""
    import psycopg

    from khadem_nb.drivers.postgres import schema_sql, upgrade_sql

    schema = schema_for(tmp_path)
    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.version (version integer NOT NULL)")
        steps = upgrade_sql(schema)
        for statement in [*schema_sql(schema), *(s for n in range(2, 8) for s in steps[n])]:
            conn.execute(statement)
        conn.execute(f"INSERT INTO {schema}.version SELECT generate_series(1, 7)")
        insert = (f"INSERT INTO {schema}.jobs (id, queue, name, status, priority, attempt, max_attempts, "
                  "created_ms, available_ms, payload, parents, on_upstream_failure) "
                  "VALUES (%s, 'default', 'Echo', %s, 0, 0, 1, 0, 0, %s, %s, %s)")
        conn.execute(insert, ("parent", "queued", '{"value": "first"}', None, None))
        conn.execute(insert, ("child", "waiting", '{"value": "second"}', '["parent"]', "cancel"))
        conn.execute(f"INSERT INTO {schema}.edges (parent, child) VALUES ('parent', 'child')")
    manager = await QueueManager(postgres_url(tmp_path) + "&auto_migrate=true").init()
    try:
        plain = await manager.dispatch(Echo("plain"))
        with psycopg.connect(need_postgres(), autocommit=True) as conn:
            marks = dict(conn.execute(f"SELECT id, in_graph FROM {schema}.jobs").fetchall())
            trigger = conn.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE "
                                   "tgname = 'jobs_ended' AND tgrelid = %s::regclass",
                                   (f"{schema}.jobs",)).fetchone()[0]
        assert marks == {"parent": True, "child": True, plain: False}
        assert "new.in_graph" in trigger.lower()
        await manager.start_worker(burst=True)
        assert (await manager.get_job("child")).result == "second"  # released by its parent's end
        later = await manager.dispatch(Echo("after"), after=[plain])
        with psycopg.connect(need_postgres(), autocommit=True) as conn:
            marks = dict(conn.execute(f"SELECT id, in_graph FROM {schema}.jobs").fetchall())
        assert marks[later] is False  # its parent had ended: it was stored queued, with no edge
        await manager.start_worker(burst=True)
        assert (await manager.get_job(later)).result == "after"
    finally:
        await manager.purge()
        await manager.close()
