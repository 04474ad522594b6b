"""Unique jobs on every driver: one atomic check with the store, the modes, expiry, the three
conflict answers, bad input, and 100 concurrent dispatches from 4 processes storing one job."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import QUEUED_DRIVERS, SHARED_DRIVERS, driver_config, make_manager
from jobs import Echo
from procs import spawn_script

from khadem_nb import ConfigError, DuplicateJobError, JobStatus, QueueManager


@pytest.fixture(params=QUEUED_DRIVERS)
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> QueueManager:
    manager = await make_manager(request.param, tmp_path)
    yield manager
    await manager.driver.purge()
    await manager.close()


async def stored(manager: QueueManager) -> list[str]:
    return [r.id for r in await manager.jobs()]


async def test_a_live_job_holds_its_key_until_it_is_done(queue: QueueManager) -> None:
    first = await queue.dispatch(Echo("x"), unique=True)
    assert await queue.dispatch(Echo("x"), unique=True) == first  # skip: the holder's id
    other = await queue.dispatch(Echo("y"), unique=True)  # other arguments: another key
    elsewhere = await queue.dispatch(Echo("x"), unique=True, queue="other")  # keys are per queue
    assert len({first, other, elsewhere}) == 3
    assert sorted(await stored(queue)) == sorted([first, other, elsewhere])
    held = {r.id: r for r in await queue.driver.reserve(["default"], 2, 1.0)}[first]
    assert await queue.dispatch(Echo("x"), unique="until_done") == first  # running still holds
    assert await queue.driver.complete(held, "x")
    again = await queue.dispatch(Echo("x"), unique=True)  # done: the key is free
    assert again not in (first, other, elsewhere)


async def test_queued_mode_frees_the_key_when_the_job_starts(queue: QueueManager) -> None:
    first = await queue.dispatch(Echo("q"), unique="queued")
    assert await queue.dispatch(Echo("q"), unique="queued") == first
    [held] = await queue.driver.reserve(["default"], 1, 1.0)
    assert held.id == first
    second = await queue.dispatch(Echo("q"), unique="queued")
    assert second != first
    assert await queue.dispatch(Echo("q"), unique="queued") == second


async def test_conflicts_skip_replace_or_raise(queue: QueueManager) -> None:
    first = await queue.dispatch(Echo("c"), unique=True, unique_key="report:2026-12")
    with pytest.raises(DuplicateJobError, match="report:2026-12") as raised:
        await queue.dispatch(Echo("other arguments, same key"), unique=True, unique_key="report:2026-12",
                             on_conflict="error")
    assert raised.value.job_id == first
    replacing = await queue.dispatch(Echo("c2"), unique=True, unique_key="report:2026-12",
                                     on_conflict="replace")
    assert replacing != first
    statuses = await queue.statuses([first, replacing])
    assert statuses == [JobStatus.CANCELLED, JobStatus.QUEUED]
    assert await queue.dispatch(Echo("c3"), unique=True, unique_key="report:2026-12") == replacing


async def test_unique_for_ends_the_hold(queue: QueueManager) -> None:
    first = await queue.dispatch(Echo("t"), unique=True, unique_for=0.3)
    assert await queue.dispatch(Echo("t"), unique=True, unique_for=0.3) == first
    await asyncio.sleep(0.45)
    second = await queue.dispatch(Echo("t"), unique=True)
    assert second != first
    assert len(await stored(queue)) == 2


async def test_a_unique_dispatch_runs_like_any_other(queue: QueueManager) -> None:
    job_id = await queue.dispatch(Echo({"n": 1}), unique=True, delay=0.05)
    worker = await queue.start_worker(run_in_background=True, delay=0.02)
    [record] = await queue.wait([job_id], timeout=20)
    await worker.stop()
    assert (record.status, record.result) == (JobStatus.COMPLETED, {"n": 1})


async def test_bad_unique_options_are_refused_before_anything_is_stored(tmp_path: Path) -> None:
    manager = await make_manager("memory", tmp_path)
    try:
        cases = [({"unique": "always"}, "unique must be True, 'queued', 'running' or 'until_done'"),
                 ({"unique": False}, "unique must be True"),
                 ({"unique": 1}, "unique must be True"),
                 ({"unique": True, "on_conflict": "ignore"}, "on_conflict must be one of skip, replace"),
                 ({"unique": True, "unique_key": ""}, "unique_key must be a non-empty string"),
                 ({"unique": True, "unique_key": 7}, "unique_key must be a non-empty string"),
                 ({"unique": True, "unique_for": -1}, "unique_for"),
                 ({"unique": True, "unique_for": "1h"}, "unique_for"),
                 ({"unique": True, "connection": object()}, "unique dispatch does not take connection")]
        for options, message in cases:
            with pytest.raises(ConfigError, match=message):
                await manager.dispatch(Echo("bad"), **options)  # type: ignore[arg-type]
        assert await stored(manager) == []
    finally:
        await manager.close()


RACE = """
import asyncio, sys
from khadem_nb import QueueManager
from jobs import Echo

async def main():
    manager = await QueueManager({config!r}).init()
    ids = await asyncio.gather(*(manager.dispatch(Echo("only once"), unique=True) for _ in range(25)))
    print(",".join(sorted(set(ids))))
    await manager.close()

asyncio.run(main())
"""


@pytest.mark.parametrize("driver", SHARED_DRIVERS)
async def test_100_concurrent_dispatches_from_4_processes_store_one_job(driver: str, tmp_path: Path) -> None:
    config = driver_config(driver, tmp_path)
    manager = await QueueManager(config).init()
    await manager.driver.purge()
    try:
        processes = [spawn_script(RACE.format(config=config)) for _ in range(4)]
        outputs = []
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            outputs.append(out.strip())
        records = await manager.jobs()
        assert len(records) == 1, [(r.id, r.status) for r in records]
        assert set(outputs) == {records[0].id}  # every dispatch answered with the one job's id
    finally:
        await manager.driver.purge()
        await manager.close()


@pytest.mark.parametrize("driver", ["sqlite", "postgres"])
async def test_retention_drops_the_locks_of_jobs_it_removed(driver: str, tmp_path: Path) -> None:
    manager = await make_manager(driver, tmp_path)
    try:
        done = await manager.dispatch(Echo("kept a while"), unique=True)
        waiting = await manager.dispatch(Echo("still queued"), unique=True)
        [held] = [r for r in await manager.driver.reserve(["default"], 2, 1.0) if r.id == done]
        assert await manager.driver.complete(held, "ok")
        assert await manager.forget([done]) == 1  # as retention would
        await manager.driver.trim()  # type: ignore[attr-defined]
        assert await lock_holders(manager, driver) == [waiting]
    finally:
        await manager.driver.purge()
        await manager.close()


async def lock_holders(manager: QueueManager, driver: str) -> list[str]:
    if driver == "sqlite":
        import sqlite3

        with sqlite3.connect(manager.settings.path) as conn:
            return [row[0] for row in conn.execute("SELECT job_id FROM khadem_unique")]
    import psycopg
    from conftest import need_postgres

    schema = manager.driver.schema  # type: ignore[attr-defined]
    with psycopg.connect(need_postgres(), autocommit=True) as conn:
        return [row[0] for row in conn.execute(f"SELECT job_id FROM {schema}.uniques")]
