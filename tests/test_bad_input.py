"""Bad input, as a hostile user would give it: every option checked at the door, extreme config
refused, damaged records quarantined while the rest of the queue goes on, storage faults as
clear errors, and a burst worker that gives up instead of looping."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_manager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobs import RUN_LOG, Echo
from procs import env as process_env

from khadem_nb import (
    ConfigError,
    CorruptQueueError,
    DriverError,
    JobStatus,
    KhademError,
    QueueManager,
    SerializationError,
    limits,
)
from khadem_nb.config import parse_config
from khadem_nb.drivers.quarantine import UNREADABLE
from khadem_nb.drivers.redis.keys import KEY_INDEX, KEY_NAMES, KEY_TYPES


async def nothing_stored(manager: QueueManager) -> None:
    assert sum((await manager.counts()).values()) == 0


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# -- options at dispatch -------------------------------------------------------------------------
BAD_OPTIONS = [
    ({"delay": float("inf")}, ConfigError, r"delay must be between 0 and 3\.15\d*e\+08 seconds, got inf"),
    ({"delay": float("nan")}, ConfigError, "delay must be between"),
    ({"delay": 1e300}, ConfigError, "delay must be between"),
    ({"delay": timedelta(days=365 * 5000)}, ConfigError, "delay must be between"),
    ({"delay": -1}, ConfigError, "delay must be between"),
    ({"delay": "soon"}, ConfigError, "delay must be a number of seconds, got 'soon'"),
    ({"priority": float("nan")}, ConfigError, "priority must be an integer, got nan"),
    ({"priority": "high"}, ConfigError, "priority must be an integer, got 'high'"),
    ({"priority": 2.5}, ConfigError, "priority must be an integer, got 2.5"),
    ({"priority": True}, ConfigError, "priority must be an integer, got True"),
    ({"priority": 2**70}, ConfigError, r"priority must be between -\d+ and \d+ on this driver"),
    ({"max_attempts": "3x"}, ConfigError, "max_attempts must be an integer, got '3x'"),
    ({"max_attempts": 2**70}, ConfigError, "max_attempts must be between 1 and 10000"),
    ({"max_attempts": 0}, ConfigError, "max_attempts must be between 1 and 10000, got 0"),
    ({"max_attempts": 1.5}, ConfigError, "max_attempts must be an integer, got 1.5"),
    ({"queue": 7}, ConfigError, "queue must be a queue name"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_OPTIONS,
                         ids=[f"{next(iter(o))}={next(iter(o.values()))!r}"[:40] for o, _, _ in BAD_OPTIONS])
async def test_a_bad_dispatch_option_is_refused_before_anything_is_stored(
        queued_manager: QueueManager, options: dict[str, Any], error: type[Exception], message: str) -> None:
    options = dict(options)
    delay = options.pop("delay", None)
    with pytest.raises(error, match=message):
        await queued_manager.dispatch(Echo("x"), delay, **options)
    await nothing_stored(queued_manager)


async def test_arguments_nested_too_deep_are_a_serialization_error(queued_manager: QueueManager) -> None:
    with pytest.raises(SerializationError, match=r"Echo argument\['value'\]\[0\].*more than 100 levels"):
        await queued_manager.dispatch(Echo(nested(10_000)))
    with pytest.raises(SerializationError, match="more than 100 levels"):
        await queued_manager.dispatch_many([Echo(1), Echo(nested(150))])
    await nothing_stored(queued_manager)
    job_id = await queued_manager.dispatch(Echo(nested(90)))  # within the limit: stored and run
    await queued_manager.start_worker(max_jobs=1, delay=0.05)
    assert (await queued_manager.get_job(job_id)).status is JobStatus.COMPLETED


async def test_a_job_whose_class_options_are_bad_is_refused(queued_manager: QueueManager) -> None:
    class Endless(Echo):
        timeout = float("inf")

    class Unordered(Echo):
        priority = "first"  # type: ignore[assignment]

    with pytest.raises(ConfigError, match=r"timeout must be between 0\.001 and"):
        await queued_manager.dispatch(Endless(1))
    with pytest.raises(ConfigError, match="priority must be an integer, got 'first'"):
        await queued_manager.dispatch(Unordered(1))
    await nothing_stored(queued_manager)


async def test_every_driver_orders_the_ends_of_its_priority_range(queued_manager: QueueManager) -> None:
    top = queued_manager.driver.max_priority
    for value, priority in (("zero", 0), ("bottom", -top), ("top", top), ("almost", top - 1)):
        await queued_manager.dispatch(Echo(value), priority=priority)
    await queued_manager.start_worker(max_jobs=4, delay=0.05)
    assert RUN_LOG == ["top", "almost", "zero", "bottom"]
    with pytest.raises(ConfigError, match=f"between {-top} and {top}"):
        await queued_manager.dispatch(Echo("beyond"), priority=top + 1)


async def test_file_priorities_beyond_a_billion_are_refused(tmp_path: Path) -> None:
    """File names sort ready jobs by priority in ten digits: 3e9 would run after 2e9."""
    manager = await make_manager("file", tmp_path)
    try:
        with pytest.raises(ConfigError, match="priority must be between -999999999 and 999999999"):
            await manager.dispatch(Echo("x"), priority=3 * 10**9)
    finally:
        await manager.close()


# -- config --------------------------------------------------------------------------------------
BAD_CONFIG = [
    ({"lease": 1e308}, r"queue.lease must be between 0.1 and 86400 seconds, got 1e\+308"),
    ({"lease": 1e12}, "queue.lease must be between 0.1 and 86400 seconds"),
    ({"lease": 1e-6}, "queue.lease must be between 0.1 and 86400 seconds, got 1e-06"),
    ({"lease": 0}, "queue.lease must be between"),
    ({"lease": float("nan")}, "queue.lease must be between"),
    ({"lease": "long"}, "queue.lease must be a number of seconds, got 'long'"),
    ({"lease": 10, "heartbeat": 20}, r"queue.heartbeat \(20s\) must be shorter than queue.lease"),
    ({"connect_timeout": 0}, "queue.connect_timeout must be between 0.1 and 300"),
    ({"retention": -1}, "queue.retention must be between 0 and 1000000000, got -1"),
    ({"max_reclaims": 10**6}, "queue.max_reclaims must be between 0 and 1000"),
    ({"port": 70_000}, "queue.port must be between 1 and 65535"),
    ({"retention_age": float("inf")}, "queue.retention_age must be between 1 and"),
    ({"workers": {"concurrency": 0}}, "concurrency must be between 1 and 10000, got 0"),
    ({"workers": {"concurrency": 10**6}}, "concurrency must be between 1 and 10000"),
    ({"workers": {"prefetch": -1}}, "prefetch must be between 0 and 10000"),
    ({"workers": {"max_jobs": 0}}, "max_jobs must be between 1 and"),
    ({"workers": {"delay": 0}}, "worker delay must be between 0.001 and 3600 seconds, got 0"),
    ({"workers": {"timeout": -5}}, "worker timeout must be between"),
]


@pytest.mark.parametrize(("section", "message"), BAD_CONFIG,
                         ids=[json.dumps(s, default=str)[:40] for s, _ in BAD_CONFIG])
def test_config_out_of_range_is_refused_naming_the_setting(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"queue": {"driver": "memory", **section}})


def test_config_in_a_url_query_is_checked_the_same_way() -> None:
    with pytest.raises(ConfigError, match=r"queue\.lease must be between 0\.1 and 86400"):
        parse_config("redis://127.0.0.1:6379/0?lease=1e308")


async def test_a_negative_grace_is_refused(tmp_path: Path) -> None:
    manager = await make_manager("memory", tmp_path)
    worker = await manager.start_worker(run_in_background=True)
    with pytest.raises(ConfigError, match="grace must be between 0 and 86400 seconds, got -1"):
        await worker.stop(grace=-1)
    await manager.close()
    run = subprocess.run([sys.executable, "-m", "khadem_nb.cli", "worker", "--queue-url", "memory://",
                          "--grace", "-1"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "--grace must be between 0 and 86400 seconds, got -1" in run.stderr


# -- damaged records: quarantined, and the queue goes on ------------------------------------------
async def dispatch_around(manager: QueueManager, good: int = 8) -> list[str]:
    return [await manager.dispatch(Echo(f"good {i}")) for i in range(good)]


async def assert_the_queue_goes_on(manager: QueueManager, good_ids: list[str], damaged: list[str]) -> None:
    """Every good job completes; each damaged one ends failed saying why; listings work."""
    await manager.start_worker(burst=True, delay=0.05)
    records = await manager.get_jobs(good_ids)
    assert [r.status for r in records] == [JobStatus.COMPLETED] * len(good_ids)
    for job_id in damaged:
        record = await manager.get_job(job_id)
        assert record.status is JobStatus.FAILED, record
        assert UNREADABLE in (record.error or ""), record.error
    listed = {r.id: r for r in await manager.jobs()}
    assert set(good_ids) | set(damaged) <= set(listed)
    assert {r.id for r in await manager.jobs("failed")} >= set(damaged)
    counts = await manager.counts()
    assert counts["completed"] == len(good_ids) and counts["failed"] == len(damaged)


def _sqlite_update(path: Path, sql: str, *params: Any) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql, params)
    conn.close()


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("payload", "{not json", "payload is not JSON"),
    ("meta", "[[[garbage", "meta is not JSON"),
    ("extra", '{"timeout_s": "soon"}', "timeout_s is 'soon', not a number"),
    ("extra", '{"parents": [1, 2]}', "parents is [1, 2], not a list of text"),
    ("extra", "{cut off", "its extra fields are not JSON"),
    ("status", "weird", "status 'weird' is not one of"),
])
async def test_sqlite_a_damaged_row_is_quarantined(tmp_path: Path, column: str, value: str,
                                                   reason: str) -> None:
    manager = await make_manager("sqlite", tmp_path)
    try:
        good = await dispatch_around(manager)
        bad = await manager.dispatch(Echo("bad"))
        good += await dispatch_around(manager, 3)
        _sqlite_update(tmp_path / "queue.db", f"UPDATE khadem_jobs SET {column} = ? WHERE id = ?", value, bad)
        record = await manager.get_job(bad)  # readable before any worker ran
        assert reason in (record.error or ""), record.error
        await assert_the_queue_goes_on(manager, good, [bad])
        assert await manager.retry_failed([bad]) == 1  # a damaged status shows failed: retryable
    finally:
        await manager.close()


async def test_file_stray_names_folders_and_bad_fields_never_stop_the_queue(tmp_path: Path) -> None:
    manager = await make_manager("file", tmp_path)
    root = tmp_path / "queue"
    try:
        good = await dispatch_around(manager)
        bad = await manager.dispatch(Echo("bad"))
        (root / "delayed" / "default").mkdir(parents=True, exist_ok=True)
        (root / "delayed" / "default" / "not-a-job.txt").write_text("stray")
        (root / "ready" / "default" / "a-folder").mkdir()
        (root / "active" / "another-folder").mkdir()
        (root / "ready" / "stray-file-among-queues").write_text("x")
        [path] = (root / "ready" / "default").glob(f"*{bad}.json")
        data = json.loads(path.read_text())
        data["attempt"] = "3"
        path.write_text(json.dumps(data))
        garbage = await manager.dispatch(Echo("garbage"))
        [gpath] = (root / "ready" / "default").glob(f"*{garbage}.json")
        gpath.write_text("{not json")
        assert (await manager.counts())["queued"] == len(good) + 1  # the garbage one set aside
        await assert_the_queue_goes_on(manager, good, [bad, garbage])
        corrupt = sorted(p.name for p in (root / "corrupt").iterdir())
        assert any("not-a-job" in n for n in corrupt) and any("a-folder" in n for n in corrupt)
        assert "set aside as corrupt/" in ((await manager.get_job(garbage)).error or "")
    finally:
        await manager.close()


async def _redis_client(manager: QueueManager) -> Any:
    return manager.driver.client  # type: ignore[attr-defined]


def _key(manager: QueueManager, name: str) -> str:
    keys: list[str] = manager.driver.keys("default")  # type: ignore[attr-defined]
    return keys[KEY_INDEX[name]]


@pytest.mark.redis
async def test_redis_a_job_with_a_damaged_field_fails_alone(tmp_path: Path) -> None:
    manager = await make_manager("redis", tmp_path)
    client = await _redis_client(manager)
    try:
        good = await dispatch_around(manager, 3)
        bad_meta = await manager.dispatch(Echo("bad meta"))
        bad_state = await manager.dispatch(Echo("bad state"))
        good += await dispatch_around(manager, 3)
        await client.hset(_key(manager, "meta"), bad_meta, "{garbage")
        state = await client.hget(_key(manager, "state"), bad_state)
        damaged = b"queued,x,0,1,-1,-1,-1\t" + state.split(b"\t")[1]  # an attempt that is not a number
        await client.hset(_key(manager, "state"), bad_state, damaged)
        assert "meta is not JSON" in ((await manager.get_job(bad_meta)).error or "")
        await assert_the_queue_goes_on(manager, good, [bad_meta, bad_state])
    finally:
        await manager.driver.purge()
        await manager.close()


@pytest.mark.redis
@pytest.mark.parametrize(("key", "damage", "action"), [
    ("ready", "set", "claim"),
    ("seq", "text", "dispatch"),
    ("line", "hash", "dispatch"),
])
async def test_redis_a_key_of_the_wrong_kind_is_named(tmp_path: Path, key: str, damage: str,
                                                      action: str) -> None:
    manager = await make_manager("redis", tmp_path)
    client = await _redis_client(manager)
    try:
        await manager.dispatch(Echo("x"), priority=1)
        name = _key(manager, key)
        await client.delete(name)
        if damage == "set":
            await client.sadd(name, "oops")
        elif damage == "hash":
            await client.hset(name, "oops", "1")
        else:
            await client.set(name, "not a number")
        with pytest.raises(CorruptQueueError, match=rf"{name.replace('{', '.').replace('}', '.')}"):
            if action == "dispatch":
                await manager.dispatch(Echo("y"))
            else:
                await manager.driver.reserve(["default"], 1, 0)
    finally:
        await manager.driver.purge()
        await manager.close()


@pytest.mark.redis
async def test_redis_a_damaged_queue_registry_leaves_listings_working(tmp_path: Path) -> None:
    manager = await make_manager("redis", tmp_path)
    client = await _redis_client(manager)
    try:
        job_id = await manager.dispatch(Echo("x"), queue="emails")
        registry = manager.driver.queues.key  # type: ignore[attr-defined]
        await client.delete(registry)
        await client.set(registry, "not a set")
        assert [r.id for r in await manager.jobs()] == [job_id]  # the queues this process used
        assert (await manager.counts())["queued"] == 1
    finally:
        await manager.driver.purge()
        await manager.close()


# -- storage faults --------------------------------------------------------------------------------
async def test_sqlite_damaged_pages_are_a_corrupt_queue_error_and_a_burst_worker_gives_up(
        tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    manager = await make_manager("sqlite", tmp_path)
    for i in range(200):
        await manager.dispatch(Echo("x" * 200 + str(i)))
    await manager.close()
    data = bytearray(db.read_bytes())
    for offset in range(4096, len(data) - 4096, 4096):  # every page but the header's
        data[offset : offset + 64] = b"\xde\xad" * 32
    db.write_bytes(bytes(data))
    run = subprocess.run([sys.executable, "-m", "khadem_nb.cli", "worker", "--queue-url", f"sqlite:///{db}",
                          "--import", "jobs", "--burst"], capture_output=True, text=True, timeout=90,
                         env=process_env())
    assert run.returncode == 1, run.stderr
    assert f"the SQLite queue {str(db)!r} is damaged" in run.stderr, run.stderr[-2000:]


async def test_a_read_only_sqlite_queue_says_so_at_dispatch(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    manager = await make_manager("sqlite", tmp_path)
    await manager.close()
    read_only = await QueueManager(f"sqlite:///{db}?lease=5").init()
    try:
        for store in (read_only.driver.store, read_only.driver.fast):  # type: ignore[attr-defined]
            store.conn.execute("PRAGMA query_only = ON")
        with pytest.raises(DriverError, match=rf"the SQLite queue '{db}' .*(readonly|read-only)"):
            await read_only.dispatch(Echo("x"))
    finally:
        await read_only.close()


# -- properties --------------------------------------------------------------------------------------
OPTION_VALUES = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                          st.text(max_size=5), st.booleans(), st.just(timedelta(days=1e6)))
ARGUMENTS = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                         lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=20)


@pytest.mark.parametrize("driver", ["memory", "sqlite", "file", "redis"])
def test_any_options_either_fail_clearly_before_storing_or_make_a_job_that_runs(
        driver: str, tmp_path: Path) -> None:
    """Whatever the option values and arguments: a KhademError before anything is stored, or a
    job that is listed and, when due, runs to completion."""
    loop = asyncio.new_event_loop()
    try:
        manager = loop.run_until_complete(make_manager(driver, tmp_path))
    except BaseException:  # a skip too (the driver's server is missing): the loop is closed
        loop.close()
        raise
    seen = {"refused": 0, "ran": 0, "waits": 0}

    async def check(delay: Any, priority: Any, attempts: Any, value: Any) -> None:
        await manager.driver.purge()
        try:
            job_id = await manager.dispatch(Echo(value), delay, priority=priority, max_attempts=attempts)
        except KhademError:
            assert sum((await manager.counts()).values()) == 0
            seen["refused"] += 1
            return
        record = await manager.get_job(job_id)
        assert [r.id for r in await manager.jobs()] == [job_id]
        if record.status is JobStatus.QUEUED:  # a delayed one waits its time
            await manager.start_worker(max_jobs=1, delay=0.01)
            assert (await manager.get_job(job_id)).status is JobStatus.COMPLETED
            seen["ran"] += 1
        else:
            seen["waits"] += 1

    @settings(max_examples=60 if driver != "memory" else 150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(delay=OPTION_VALUES, priority=OPTION_VALUES, attempts=OPTION_VALUES, value=ARGUMENTS)
    def run(delay: Any, priority: Any, attempts: Any, value: Any) -> None:
        loop.run_until_complete(check(delay, priority, attempts, value))

    try:
        run()
        assert seen["refused"] and seen["ran"], seen  # both sides of the rule were exercised
    finally:
        loop.run_until_complete(manager.driver.purge())
        loop.run_until_complete(manager.close())
        loop.close()


# -- the file driver: opening never removes another process's files ---------------------------------
RACE = """
import asyncio, sys
from khadem_nb import QueueManager
from jobs import Echo
async def main():
    manager = await QueueManager({"queue": {"driver": "file", "path": sys.argv[1]}}).init()
    ids = [await manager.dispatch(Echo(i)) for i in range(int(sys.argv[2]))]
    print(len(set(ids)))
    await manager.close()
asyncio.run(main())
"""
OPENER = """
import asyncio, sys
from khadem_nb import QueueManager
async def main():
    for _ in range(int(sys.argv[2])):
        manager = await QueueManager({"queue": {"driver": "file", "path": sys.argv[1]}}).init()
        await manager.close()
asyncio.run(main())
"""


@pytest.mark.slow
def test_opening_a_file_queue_never_breaks_another_process_dispatching(tmp_path: Path) -> None:
    path = str(tmp_path / "q")
    from procs import spawn_script

    producer = spawn_script(RACE, path, "300")
    openers = [spawn_script(OPENER, path, "40") for _ in range(2)]
    out, err = producer.communicate(timeout=120)
    for opener in openers:
        _, opener_err = opener.communicate(timeout=120)
        assert opener.returncode == 0, opener_err
    assert producer.returncode == 0, err
    assert out.strip() == "300"


@pytest.mark.redis
async def test_a_worker_on_a_damaged_queue_says_so_once_and_backs_off(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = await make_manager("redis", tmp_path)
    client = await _redis_client(manager)
    errors: list[Exception] = []
    try:
        await manager.dispatch(Echo("x"), priority=1)
        await client.delete(_key(manager, "ready"))
        await client.sadd(_key(manager, "ready"), "oops")
        worker = await manager.start_worker(run_in_background=True, delay=0.05,
                                            on_error=lambda exc, text: errors.append(exc))
        await asyncio.sleep(2.0)
        await worker.stop()
        assert errors and all(isinstance(e, CorruptQueueError) for e in errors)
        assert "ready is a set, not a zset" in str(errors[0])
        assert len(errors) <= 5  # backed off 0.2, 0.4, 0.8 s...: no spinning
        logged = [r for r in caplog.records if "worker error" in r.getMessage()]
        assert len(logged) == 1  # said once for the whole streak
    finally:
        await manager.driver.purge()
        await manager.close()


@pytest.mark.redis
@pytest.mark.parametrize("key", KEY_NAMES)
async def test_redis_any_key_of_the_wrong_kind_is_named_never_a_raw_error(tmp_path: Path, key: str) -> None:
    """Each of a queue's keys in turn holds the wrong kind of value: every operation either
    works or raises CorruptQueueError naming that key; nothing else reaches the user."""
    manager = await make_manager("redis", tmp_path)
    client = await _redis_client(manager)
    name = _key(manager, key)
    try:
        await manager.dispatch(Echo("before"))
        await client.delete(name)
        if KEY_TYPES[key] == "string":
            await client.rpush(name, "oops")
        else:
            await client.set(name, "oops")

        async def claim_and_complete() -> None:
            for record in await manager.driver.reserve(["default"], 2, 0):
                await manager.driver.complete(record, "done")

        operations = [lambda: manager.dispatch(Echo("after")), claim_and_complete, manager.counts,
                      manager.jobs, lambda: manager.dispatch_many([Echo(i) for i in range(3)]),
                      lambda: manager.dispatch(Echo("once"), unique=True)]
        for operation in operations:
            try:
                await operation()
            except CorruptQueueError as exc:
                assert name in str(exc), exc
    finally:
        await client.delete(name)
        await manager.driver.purge()
        await manager.close()


@pytest.mark.parametrize("text", ["²", "3x", "1.5", ""])
def test_a_count_given_as_text_must_be_an_integer(text: str) -> None:
    """Found by the property above: ``"²".isdigit()`` is true, ``int("²")`` is not."""
    with pytest.raises(ConfigError, match=f"max_attempts must be an integer, got {text!r}"):
        limits.count(text, "max_attempts")
    assert limits.count(" 7 ", "max_attempts") == 7


def test_a_record_built_before_init_has_its_options_checked_too() -> None:
    manager = QueueManager({"queue": {"driver": "memory"}})
    with pytest.raises(ConfigError, match="priority must be an integer, got 'high'"):
        manager.build_record(Echo("x"), queue="default", priority="high")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_attempts must be between 1 and 10000, got 0"):
        manager.build_record(Echo("x"), queue="default", max_attempts=0)


def test_one_builder_checks_every_option_of_a_dispatch_before_any_io(tmp_path: Path) -> None:
    """``QueueManager.prepare`` is the one road of a dispatch (the manager's, the notebook's,
    with unique= and after= too): it checks every option and builds the record and lock
    without opening the queue, so a bad value raises before anything is read or stored."""
    path = tmp_path / "never-opened.db"
    manager = QueueManager(f"sqlite:///{path}")
    parent = "a" * 32
    prepared = manager.prepare(Echo("x"), unique="queued", unique_key="nightly", after=[parent],
                               on_upstream_failure="run", feed="result", priority=3)
    assert prepared.record.parents == [parent] and prepared.record.on_upstream_failure == "run"
    assert prepared.lock is not None and prepared.lock.shown_key == "nightly"
    assert prepared.record.priority == 3 and prepared.record.feed == "result"
    running = manager.prepare(Echo("x"), unique="running")
    assert running.lock is None and running.record.lane is not None
    bad: list[tuple[dict[str, Any], str]] = [
        ({"unique": True, "on_conflict": "maybe"}, "on_conflict must be one of"),
        ({"unique": "sometimes"}, "unique must be True"),
        ({"unique": "running", "unique_for": 5}, 'unique="running" takes no unique_for'),
        ({"after": [parent], "on_upstream_failure": "ignore"}, "on_upstream_failure must be one of"),
        ({"on_upstream_failure": "ignore"}, "on_upstream_failure must be one of"),
        ({"after": [parent], "feed": "everything"}, "feed"),
        ({"after": 42}, "after"),
        ({"priority": "high"}, "priority"),
    ]
    for options, message in bad:
        with pytest.raises(ConfigError, match=message):
            manager.prepare(Echo("x"), **options)
    assert not path.exists()  # nothing was opened, read or stored
