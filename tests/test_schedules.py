"""Schedules on every queued driver: a slot fires once however many workers offer it, overlap and
catch-up, storing, listing and removing; cron in a time zone; bad settings; the notebook's
decorators; and 3 worker processes on Redis and SQLite firing a schedule every second while one
of them is killed."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import driver_config, make_manager, need_redis, purge_url
from jobs import Beat, Echo, SlowBeat
from procs import finish, kill, start_worker

from khadem_nb import ConfigError, JobStatus, QueueManager
from khadem_nb.draft import Draft
from khadem_nb.features.schedules import Schedule, make_schedule


@pytest.fixture
def queue(queued_manager: QueueManager) -> QueueManager:
    return queued_manager


async def stored(queue: QueueManager, schedule_id: str) -> Schedule:
    [state] = [s for s in await queue.driver.schedule_states() if s.schedule.id == schedule_id]
    return state.schedule


async def test_a_slot_fires_once_however_many_workers_offer_it(queue: QueueManager) -> None:
    await queue.schedule(Echo("tick"), every=60, id="minutely", overlap="allow")
    schedule = await stored(queue, "minutely")
    slot = schedule.latest_slot(queue.driver.clock()) or 0
    offers = [queue.driver.fire(schedule, slot, schedule.tick(slot, slot)) for _ in range(6)]
    assert sorted(await asyncio.gather(*offers)) == [False] * 5 + [True]
    assert not await queue.driver.fire(schedule, slot - 60_000, schedule.tick(slot - 60_000, slot))  # older
    [record] = await queue.jobs()
    assert record.key == f"schedule:minutely@{slot}" and record.meta["schedule"] == "minutely"
    assert record.payload == {"value": "tick"}
    assert await queue.driver.fire(schedule, slot + 60_000, schedule.tick(slot + 60_000, slot))
    [state] = await queue.driver.schedule_states()
    assert state.last_slot == slot + 60_000 and state.last_job is not None


async def test_a_slot_lock_outlives_its_job_and_a_lost_record_of_the_slot(queue: QueueManager) -> None:
    """The slot's lock, taken with its job, holds whatever the job's status, even once the job
    is gone: a worker that lost the record of the last fired slot (it died between storing
    the job and writing the slot) offers the slot again and stores nothing."""
    await queue.schedule(Echo("tick"), every=60, id="minutely", overlap="allow")
    schedule = await stored(queue, "minutely")
    slot = schedule.latest_slot(queue.driver.clock()) or 0
    assert await queue.driver.fire(schedule, slot, schedule.tick(slot, slot))
    [held] = await queue.driver.reserve(["default"], 1, 0)
    assert await queue.driver.complete(held, None)
    assert await queue.driver.forget([held.id]) == 1
    assert await queue.driver.kv_delete("fired/minutely")
    assert not await queue.driver.fire(schedule, slot, schedule.tick(slot, slot))
    assert await queue.jobs() == []
    assert await queue.driver.fire(schedule, slot + 60_000, schedule.tick(slot + 60_000, slot))


async def test_overlap_skip_passes_a_slot_while_the_last_run_is_not_done(queue: QueueManager) -> None:
    await queue.schedule(Echo("slow"), every=1, id="skipper")
    schedule = await stored(queue, "skipper")
    assert await queue.driver.fire(schedule, 1_000, schedule.tick(1_000, 1_000))
    assert not await queue.driver.fire(schedule, 2_000, schedule.tick(2_000, 2_000))  # still queued
    [held] = await queue.driver.reserve(["default"], 5, 0)
    assert not await queue.driver.fire(schedule, 3_000, schedule.tick(3_000, 3_000))  # still running
    assert (await queue.driver.schedule_states())[0].last_slot == 3_000  # passed slots count as fired
    assert await queue.driver.complete(held, None)
    assert await queue.driver.fire(schedule, 4_000, schedule.tick(4_000, 4_000))
    assert len(await queue.jobs()) == 2


async def test_overlap_allow_and_queue(queue: QueueManager) -> None:
    await queue.schedule(Echo("a"), every=1, id="allow", overlap="allow")
    await queue.schedule(Echo("q"), every=1, id="queue", overlap="queue")
    for schedule_id in ("allow", "queue"):
        schedule = await stored(queue, schedule_id)
        for slot in (1_000, 2_000):
            assert await queue.driver.fire(schedule, slot, schedule.tick(slot, slot))
    held = await queue.driver.reserve(["default"], 10, 0)
    # both slots of "allow" run alongside; those of "queue" one after the other (a lane of one)
    assert sorted(r.payload["value"] for r in held) == ["a", "a", "q"]


async def test_schedules_are_upserted_listed_and_removed(queue: QueueManager) -> None:
    first = await queue.schedule(Echo("x"), cron="*/5 * * * *", tz="Europe/Paris", id="report")
    again = await queue.schedule(Echo("y"), cron="0 9 * * *", tz="Europe/Paris", id="report")
    default_id = await queue.schedule(Echo("z"), every=timedelta(hours=1))
    assert first == again == "report" and default_id.startswith("Echo:")
    infos = {i.id: i for i in await queue.schedules()}
    assert set(infos) == {"report", default_id}
    report = infos["report"]
    assert (report.job, report.spec, report.overlap, report.catchup) == \
        ("Echo", "0 9 * * * (Europe/Paris)", "skip", "latest")
    assert report.next_run is not None and report.next_run.astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Paris")).hour == 9
    assert report.last_run is None and report.last_status is None
    assert await queue.unschedule("report") and not await queue.unschedule("report")
    schedule = Schedule.from_text((await stored(queue, default_id)).text())
    assert [s.schedule.id for s in await queue.driver.schedule_states()] == [default_id]
    assert await queue.unschedule(default_id)
    assert not await queue.driver.fire(schedule, 3_600_000, schedule.tick(3_600_000, 0))  # removed
    assert await queue.jobs() == []


def test_slots_and_catchup() -> None:
    template = Draft("Echo", {"value": 1}, "default", 0, 1, 0, None, None, "code")
    made = {c: make_schedule(template, cron=None, every=60, schedule_id="s", tz="UTC", overlap="skip",
                             catchup=c, now_ms=0) for c in (None, True, False)}
    now = 10 * 60_000 + 30_000  # 10.5 minutes in: the slots are whole minutes
    assert made[None].due_slots(3 * 60_000, now) == [10 * 60_000]  # only the latest missed slot
    assert made[True].due_slots(3 * 60_000, now) == [m * 60_000 for m in range(4, 11)]
    assert made[False].due_slots(3 * 60_000, now) == []  # 30 s late: passed over
    assert made[False].due_slots(3 * 60_000, 10 * 60_000 + 500) == [10 * 60_000]
    assert made[None].due_slots(10 * 60_000, now) == []
    late = make_schedule(template, cron=None, every=60, schedule_id="s", tz="UTC", overlap="skip",
                         catchup=None, now_ms=now)
    assert late.due_slots(None, now) == []  # slots before the schedule was made never fire
    cron = make_schedule(template, cron="30 9 * * 1-5", every=None, schedule_id="c", tz="America/New_York",
                         overlap="skip", catchup=None, now_ms=0)
    friday = int(datetime(2026, 12, 4, 20, 0, tzinfo=UTC).timestamp() * 1000)
    monday_930 = datetime(2026, 12, 7, 14, 30, tzinfo=UTC)  # 9:30 in New York
    assert cron.next_slot(friday) == int(monday_930.timestamp() * 1000)
    assert cron.latest_slot(int(monday_930.timestamp() * 1000)) == int(monday_930.timestamp() * 1000)


async def test_bad_schedules_are_refused(tmp_path: Path) -> None:
    queue = await make_manager("memory", tmp_path)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cron": "61 * * * *"}, r"bad cron expression '61 \* \* \* \*' \(Bad minute\); five fields"),
        ({"cron": "every day"}, "bad cron expression 'every day'"),
        ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"every": 0}, "every must be between 0.1 s and a year, got 0"),
        ({"every": -5}, "got -5"),
        ({"every": timedelta(seconds=-1)}, "every must be between"),
        ({"every": "5m"}, "every must be seconds or a timedelta"),
        ({}, "one of cron=.* or every=.*neither"),
        ({"cron": "* * * * *", "every": 5}, "not both"),
        ({"every": 5, "overlap": "sometimes"}, "overlap must be one of skip, queue, allow"),
        ({"every": 5, "catchup": "maybe"}, "catchup must be one of latest, all, none"),
        ({"every": 5, "id": ""}, "a schedule id must be a non-empty string"),
    ]
    try:
        for options, message in cases:
            with pytest.raises(ConfigError, match=message):
                await queue.schedule(Echo(1), **options)
        assert await queue.schedules() == []
    finally:
        await queue.close()


async def test_workers_fire_due_slots(queue: QueueManager) -> None:
    await queue.schedule(Beat, every=0.5, id="beat")
    await queue.start_worker(concurrency=2, run_in_background=True)
    await asyncio.sleep(1.8)
    await queue.stop_worker()
    slots = sorted(r.meta["slot_ms"] for r in await queue.jobs(JobStatus.COMPLETED))
    assert len(slots) >= 3 and all(b - a == 500 for a, b in itertools.pairwise(slots)), slots
    [info] = await queue.schedules()
    assert info.last_status == "completed" and info.last_run is not None


def test_the_notebook_decorators(tmp_path: Path) -> None:
    import khadem_nb as kn

    q = kn.Queue(f"sqlite:///{tmp_path}/nb.db")
    try:
        @q.every(timedelta(seconds=0.5))
        def beat(label: str = "nb") -> str:
            return label

        @q.cron("0 3 * * *", tz="Asia/Tokyo", overlap="allow")
        def nightly() -> None:
            return None

        frame = q.schedules()
        assert list(frame["id"]) == sorted([beat.name, nightly.name])
        assert list(frame.columns[:6]) == ["id", "job", "spec", "next_run", "last_run", "last_status"]
        q.start(concurrency=1)
        deadline = time.monotonic() + 20
        while len(q.jobs("completed")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert set(q.jobs("completed")["result"]) == {"nb"}
        assert q.unschedule(nightly.name) and list(q.schedules()["id"]) == [beat.name]
    finally:
        q.close()


# -- three worker processes -------------------------------------------------------------------
@pytest.fixture(params=["redis", "sqlite"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/q.db"
        return
    url = f"{need_redis()}?prefix=khadem-sched-{tmp_path.name}"
    yield url
    asyncio.run(purge_url(url))


@pytest.mark.slow
async def test_three_workers_fire_each_second_once_and_go_on_when_one_is_killed(shared_url: str) -> None:
    manager = await QueueManager(shared_url).init()
    try:
        await manager.schedule(Beat, every=1, id="each-second", catchup=False)
        workers = [start_worker(shared_url, "--concurrency", "2") for _ in range(3)]
        started = time.time()
        await asyncio.sleep(5)
        kill(workers[0])
        await asyncio.sleep(started + 10 - time.time())
        records = await manager.jobs()
        for worker in workers[1:]:
            worker.send_signal(signal.SIGTERM)
        finish(workers[1:])
    finally:
        await manager.close()
    slots = sorted(r.meta["slot_ms"] for r in records)
    assert len(slots) == len(set(slots)), "a slot fired twice"
    assert 9 <= len(slots) <= 11, slots
    assert all(b - a == 1000 for a, b in itertools.pairwise(slots)), "a slot was missed"


@pytest.mark.slow
async def test_overlap_skip_never_runs_a_slow_job_twice_at_once(shared_url: str) -> None:
    manager = await QueueManager(shared_url).init()
    try:
        await manager.schedule(SlowBeat, every=1, id="slow")
        workers = [start_worker(shared_url, "--concurrency", "3") for _ in range(2)]
        await asyncio.sleep(8)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        finish(workers)
        done = [r.result for r in await manager.jobs(JobStatus.COMPLETED)]
    finally:
        await manager.close()
    spans = sorted((r["start"], r["end"]) for r in done)
    assert 2 <= len(spans) <= 4, spans
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))


@pytest.mark.parametrize("driver", ["sqlite", "file", "redis", "postgres"])
async def test_a_schedule_an_earlier_version_stored_fires_on(driver: str, tmp_path: Path) -> None:
    """Before the keyed store, schedules lived in a table, folder or hashes of their own: opened
    by this version, each moves into the keyed store with its last fired slot and fires on from
    there."""
    config = driver_config(driver, tmp_path, auto_migrate=True)
    async with QueueManager(config) as queue:
        await queue.driver.purge()
        await queue.schedule(Echo("tick"), every=60, id="minutely", overlap="allow")
        spec = (await stored(queue, "minutely")).text()
        await queue.driver.purge()
    await _store_schedule_the_old_way(driver, config["queue"], spec, "120000|job-before")
    queue = await QueueManager(config).init()
    try:
        [state] = await queue.driver.schedule_states()
        assert (state.schedule.text(), state.last_slot, state.last_job) == (spec, 120_000, "job-before")
        schedule = state.schedule
        assert not await queue.driver.fire(schedule, 120_000, schedule.tick(120_000, 120_000))  # fired then
        assert await queue.driver.fire(schedule, 180_000, schedule.tick(180_000, 180_000))
        [again] = await queue.driver.schedule_states()  # moved once: it is listed once
        assert (again.last_slot, again.last_job) == (180_000, (await queue.jobs())[0].id)
    finally:
        await queue.driver.purge()
        await queue.close()


async def _store_schedule_the_old_way(driver: str, section: dict[str, Any], spec: str, tick: str) -> None:
    slot, job = tick.split("|")
    if driver == "sqlite":
        import sqlite3

        with sqlite3.connect(str(section["path"])) as conn:
            conn.execute("CREATE TABLE khadem_schedules (id TEXT PRIMARY KEY, queue TEXT NOT NULL, "
                         "spec TEXT NOT NULL, last_slot BIGINT, last_job TEXT)")
            conn.execute("INSERT INTO khadem_schedules VALUES ('minutely', 'default', ?, ?, ?)",
                         (spec, int(slot), job))
            conn.execute("PRAGMA user_version = 0")  # a file written before layout versions
    elif driver == "file":
        import hashlib
        import json

        folder = Path(str(section["path"])) / "schedules"
        folder.mkdir()
        told = {"spec": spec, "last_slot": int(slot), "last_job": job}
        (folder / f"{hashlib.sha256(b'minutely').hexdigest()}.json").write_text(json.dumps(told))
        (Path(str(section["path"])) / "layout").unlink(missing_ok=True)  # written before layout versions
    elif driver == "redis":
        import redis

        prefix = section["prefix"]
        client = redis.Redis.from_url(str(section["url"]))
        client.sadd(f"{prefix}:queues", "default")
        client.hset(f"{{{prefix}:default}}:schedules", "minutely", spec)
        client.hset(f"{{{prefix}:default}}:ticks", "minutely", tick)
        client.close()
    else:  # a schema at version 9, the last with a schedules table
        import psycopg
        from conftest import postgres_schema_at

        from khadem_nb.config import parse_config

        schema = parse_config({"queue": section}).schema.lower()
        with psycopg.connect(str(section["url"]).split("?")[0], autocommit=True) as conn:
            postgres_schema_at(conn, schema, 9)
            conn.execute(f"INSERT INTO {schema}.schedules VALUES ('minutely', 'default', %s, %s, %s)",
                         (spec, int(slot), job))
