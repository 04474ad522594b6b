"""Flow control on every queued driver: concurrency per job kind and per key, rates, resource
units, ``unique="running"``, what a job waits for, and bad settings; then 3 worker processes on
Redis and SQLite holding the limits across processes."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import QUEUED_DRIVERS, make_manager, need_redis, purge_url
from jobs import Echo, IsolatedGpu, Limited, NeedsGpu, OneLaneSleepFirst, PerTenant, Rated, ThreePerSecond
from procs import finish, kill, start_worker

from khadem_nb import ConfigError, JobError, JobStatus, QueueJob, QueueManager


@pytest.fixture(params=QUEUED_DRIVERS)
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueManager]:
    manager = await make_manager(request.param, tmp_path, lease=30.0)
    yield manager
    await manager.driver.purge()
    await manager.close()


async def claim(queue: QueueManager, n: int = 10, free: dict[str, int] | None = None) -> list[Any]:
    return await queue.driver.reserve(["default"], n, 0, free)


async def reasons(queue: QueueManager) -> list[str]:
    return sorted((await queue.why_waiting(await queue.jobs(JobStatus.QUEUED))).values())


async def test_a_lane_holds_at_most_its_concurrency(queue: QueueManager) -> None:
    ids = [await queue.dispatch(Limited(i)) for i in range(5)]
    plain = await queue.dispatch(Echo("no limits"))
    first = await claim(queue)
    assert sorted(r.id for r in first) == sorted([*ids[:2], plain])  # lanes first, then the rest
    assert await claim(queue) == []
    assert await reasons(queue) == ["limit Limited 2/2"] * 3
    assert len(await queue.jobs(JobStatus.QUEUED)) == 3 and (await queue.counts())["queued"] == 3
    held = [r for r in first if r.id in ids]
    assert await queue.driver.complete(held[0], None)
    [third] = await claim(queue)
    assert third.id == ids[2] and await claim(queue) == []
    assert await queue.cancel(held[1].id)  # a cancelled job's slot is free at once
    [fourth] = await claim(queue)
    assert fourth.id == ids[3]
    assert await queue.driver.release(fourth)  # given back: back in its lane, its slot free
    [fifth] = await claim(queue)
    assert fifth.id in (ids[3], ids[4]) and await claim(queue) == []


async def test_a_limit_key_gives_each_key_its_own_count(queue: QueueManager) -> None:
    a1, a2, b1 = [await queue.dispatch(PerTenant(t)) for t in ("a", "a", "b")]
    assert sorted(r.id for r in await claim(queue)) == sorted([a1, b1])
    assert await reasons(queue) == ["limit PerTenant[a] 1/1"]
    assert (await queue.get_job(a2)).lane == "PerTenant\ta"


async def test_a_rate_holds_starts_per_window(queue: QueueManager) -> None:
    ids = [await queue.dispatch(ThreePerSecond(i)) for i in range(5)]
    first = await claim(queue)
    assert [r.id for r in first] == ids[:3]
    for record in first:  # finishing does not give a start back
        assert await queue.driver.complete(record, None)
    assert await claim(queue) == []
    assert await reasons(queue) == ["rate 3/s"] * 2
    await asyncio.sleep(1.05)
    assert [r.id for r in await claim(queue)] == ids[3:]


async def test_resources_are_claimed_only_where_they_fit(queue: QueueManager) -> None:
    ids = [await queue.dispatch(NeedsGpu(i)) for i in range(3)]
    assert await claim(queue) == []  # a worker offering nothing never takes them
    assert await reasons(queue) == ["needs gpu=1; no live worker offers that many (most: gpu=0)"] * 3
    await queue.driver.offer("box-1", {"gpu": 2}, {"gpu": 0})
    assert await reasons(queue) == ["needs gpu=1, none free"] * 3
    assert [r.id for r in await claim(queue, free={"gpu": 2, "mem_gb": 8})] == ids[:2]
    await queue.driver.offer("box-1", {}, {})
    assert await queue.driver.offers() == []


async def test_unique_running_runs_one_job_of_its_key_at_a_time(queue: QueueManager) -> None:
    first = await queue.dispatch(Echo("r"), unique="running")
    second = await queue.dispatch(Echo("r"), unique="running")  # stored, unlike the other modes
    other = await queue.dispatch(Echo("s"), unique="running")
    assert len({first, second, other}) == 3
    held = await claim(queue)
    assert sorted(r.id for r in held) == sorted([first, other])
    assert await reasons(queue) == ["unique: same job running"]
    assert await queue.driver.complete(next(r for r in held if r.id == first), "r")
    assert [r.id for r in await claim(queue)] == [second]


async def test_a_delayed_or_retried_job_waits_in_its_lane(queue: QueueManager) -> None:
    later = await queue.dispatch(Limited(0), delay=0.2)
    now = [await queue.dispatch(Limited(i)) for i in (1, 2)]
    held = await claim(queue)
    assert sorted(r.id for r in held) == sorted(now)
    assert await queue.driver.retry(held[0], 0, "failed once", None)
    await asyncio.sleep(0.25)
    [again] = await claim(queue)  # one slot: the retried job or the due delayed one
    assert again.id in (held[0].id, later)
    assert await claim(queue) == []


@pytest.mark.parametrize("driver", ["sqlite", "file", "redis", "postgres"])
async def test_an_expired_lease_frees_its_slot(driver: str, tmp_path: Path) -> None:
    queue = await make_manager(driver, tmp_path, lease=0.3)
    try:
        ids = [await queue.dispatch(Limited(i)) for i in range(3)]
        assert len(await claim(queue)) == 2  # and never heartbeated: as if the holder died
        await asyncio.sleep(0.5)
        taken = [r.id for r in await claim(queue)]  # a slot of an expired lease counts no more
        taken += [r.id for r in await claim(queue)]  # (PostgreSQL puts them back in one claim,
        assert len(taken) == 2 and set(taken) <= set(ids)  # and claims them in the next)
    finally:
        await queue.driver.purge()
        await queue.close()


def test_the_notebook_job_options_make_lanes(tmp_path: Path) -> None:
    import khadem_nb as kn

    q = kn.Queue(f"sqlite:///{tmp_path}/nb.db")
    try:
        @q.job(concurrency=1, limit_key=lambda p: p["tenant"], rate="100/min", resources={"gpu": 1})
        def train(tenant: str, lr: float) -> float:
            return lr

        h = train.dispatch(tenant="acme", lr=0.1)
        record = q.run(q.manager.get_job(h.id))
        assert record.lane.endswith("train\tacme")
        assert '"c":1' in record.lane_rule and '"r":[100,60000]' in record.lane_rule
        frame = q.jobs()
        assert frame.loc[0, "waiting"].startswith("needs gpu=1")
        q.start(concurrency=2, resources={"gpu": 1})
        assert h.result(timeout=20) == 0.1
    finally:
        q.close()


# -- bad input --------------------------------------------------------------------------------
def test_bad_flow_settings_are_refused_when_the_job_is_defined() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rate": "30/fortnight"}, r"rate must be 'N/s', 'N/min' or 'N/h'.*got '30/fortnight'"),
        ({"rate": "0/s"}, "rate must be"),
        ({"concurrency": 0}, "concurrency must be a whole number from 1 to 10000.*got 0"),
        ({"concurrency": -2}, "got -2"),
        ({"concurrency": 1.5}, "got 1.5"),
        ({"resources": {"gpu": -1}}, r"units of 'gpu' must be a whole number from 1.*got -1"),
        ({"resources": {"": 1}}, "resource names"),
        ({"resources": ["gpu"]}, "resources must be a dict"),
    ]
    for attributes, message in cases:
        with pytest.raises(ConfigError, match=message):
            type("BadFlow", (QueueJob,), {**attributes, "handle": lambda self: None})


def test_bad_notebook_flow_options_are_refused(tmp_path: Path) -> None:
    import khadem_nb as kn

    q = kn.Queue(f"sqlite:///{tmp_path}/bad.db")
    try:
        with pytest.raises(ConfigError, match=r"limit_key must be a function of the job's arguments.*got 5"):
            q.job(limit_key=5)(lambda tenant: None)
        with pytest.raises(ConfigError, match="rate must be"):
            q.job(rate="30/fortnight")(lambda: None)
        with pytest.raises(ConfigError, match="concurrency must be"):
            q.job(concurrency=0)(lambda: None)
        with pytest.raises(ConfigError, match="resources must be name=units"):
            q.start(resources="gpu=x")
    finally:
        q.close()


class KeyRaises(QueueJob):
    concurrency = 1

    def limit_key(self) -> str:
        raise KeyError("tenant")

    async def handle(self) -> None:
        return None


class KeyIsNumber(QueueJob):
    concurrency = 1

    def limit_key(self) -> Any:
        return 7

    async def handle(self) -> None:
        return None


class LimitedAndUnique(QueueJob):
    concurrency: ClassVar[int] = 3

    async def handle(self) -> None:
        return None


async def test_a_bad_limit_key_fails_the_dispatch_and_stores_nothing(tmp_path: Path) -> None:
    queue = await make_manager("sqlite", tmp_path)
    try:
        with pytest.raises(JobError, match=r"KeyRaises: its limit_key raised KeyError\('tenant'\)"):
            await queue.dispatch(KeyRaises())
        with pytest.raises(JobError, match=r"limit_key must return a non-empty string.*got 7"):
            await queue.dispatch(KeyIsNumber())
        with pytest.raises(ConfigError, match=r'unique="running".*cannot be combined.*concurrency=3'):
            await queue.dispatch(LimitedAndUnique(), unique="running")
        with pytest.raises(ConfigError, match='unique="running" takes no unique_for'):
            await queue.dispatch(Echo(1), unique="running", unique_for=10)
        with pytest.raises(ConfigError, match="resources must be name=units pairs"):
            await queue.start_worker(resources="gpu", run_in_background=True)
        with pytest.raises(ConfigError, match="units of 'gpu' must be"):
            await queue.start_worker(resources={"gpu": 0}, run_in_background=True)
        assert await queue.jobs() == []
    finally:
        await queue.close()


# -- three worker processes -------------------------------------------------------------------
@pytest.fixture(params=["redis", "sqlite"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/q.db"
        return
    url = f"{need_redis()}?prefix=khadem-flow-{tmp_path.name}"
    yield url
    asyncio.run(purge_url(url))



async def results_of(url: str, ids: list[str]) -> list[Any]:
    manager = await QueueManager(url).init()
    try:
        records = await manager.wait(ids, timeout=60)
        assert {r.status for r in records} == {JobStatus.COMPLETED}, [r.error for r in records]
        return [r.result for r in records]
    finally:
        await manager.close()


async def dispatch_all(url: str, jobs: list[QueueJob]) -> list[str]:
    manager = await QueueManager(url).init()
    try:
        return [await manager.dispatch(job) for job in jobs]
    finally:
        await manager.close()


def stop(workers: list[Any]) -> None:
    """SIGTERM: each worker finishes what it runs and exits cleanly."""
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    finish(workers)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:  # an end sorts before a start at the same instant
        running += change
        peak = max(peak, running)
    return peak


@pytest.mark.slow
async def test_three_workers_never_run_more_than_the_concurrency(shared_url: str) -> None:
    ids = await dispatch_all(shared_url, [Limited(i, 0.15) for i in range(16)])
    # one job at a time per process: two at once means two processes ran them together
    workers = [start_worker(shared_url, "--concurrency", "1") for _ in range(3)]
    try:
        results = await results_of(shared_url, ids)
    finally:
        stop(workers)
    spans = [(r["start"], r["end"]) for r in results]
    assert most_at_once(spans) == 2  # never three, though three processes were free


@pytest.mark.slow
async def test_three_workers_start_a_rated_job_at_its_rate(shared_url: str) -> None:
    ids = await dispatch_all(shared_url, [Rated(i) for i in range(60)])
    workers = [start_worker(shared_url, "--concurrency", "4") for _ in range(3)]
    try:
        starts = sorted(await results_of(shared_url, ids[:45]))
    finally:
        stop(workers)
    in_three_seconds = sum(1 for t in starts if t < starts[0] + 3.0)
    assert 28 <= in_three_seconds <= 32, in_three_seconds


@pytest.mark.slow
async def test_two_workers_with_one_gpu_each_run_one_job_each_at_a_time(shared_url: str) -> None:
    ids = await dispatch_all(shared_url, [NeedsGpu(i, 0.1) for i in range(10)])
    workers = [start_worker(shared_url, "--concurrency", "3", "--resources", "gpu=1") for _ in range(2)]
    try:
        results = await results_of(shared_url, ids)
    finally:
        stop(workers)
    assert {tuple(r["gpu"]) for r in results} == {(0,)}  # each job saw the unit it held
    assert len({r["pid"] for r in results}) == 2
    for pid in {r["pid"] for r in results}:
        assert most_at_once([(r["start"], r["end"]) for r in results if r["pid"] == pid]) == 1


@pytest.mark.slow
async def test_a_killed_worker_frees_its_slot_after_its_lease(shared_url: str) -> None:
    [stuck] = await dispatch_all(shared_url, [OneLaneSleepFirst(0)])
    holder = start_worker(shared_url, "--lease", "1")
    manager = await QueueManager(shared_url).init()
    try:
        deadline = time.monotonic() + 30
        while (await manager.get_job(stuck)).status is not JobStatus.ACTIVE:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        behind = await manager.dispatch(OneLaneSleepFirst(1))
        kill(holder)  # SIGKILL while it holds the lane's one slot
        rescuer = start_worker(shared_url, "--lease", "1", "--burst")
        records = await manager.wait([stuck, behind], timeout=60)
        finish([rescuer])
    finally:
        await manager.close()
    assert [r.status for r in records] == [JobStatus.COMPLETED] * 2
    assert records[0].attempt == 2  # reclaimed after the lease, then run again



async def test_isolated_jobs_see_their_gpus_as_cuda_visible_devices(tmp_path: Path) -> None:
    queue = await make_manager("memory", tmp_path)
    try:
        ids = [await queue.dispatch(IsolatedGpu(i, 0.5)) for i in range(2)]
        await queue.start_worker(concurrency=2, resources={"gpu": 2}, run_in_background=True)
        results = [r.result for r in await queue.wait(ids, timeout=60)]
    finally:
        await queue.close()
    assert sorted(r["gpu"][0] for r in results) == [0, 1]  # both ran at once, on different units
    assert sorted(r["cuda"] for r in results) == ["0", "1"]
    assert all(r["cuda"] == str(r["gpu"][0]) for r in results)


@pytest.mark.parametrize("driver", ["memory", "sqlite"])
async def test_a_burst_worker_waits_for_slots_and_windows_not_for_units(driver: str, tmp_path: Path) -> None:
    queue = await make_manager(driver, tmp_path)
    try:
        ids = [await queue.dispatch(Limited(i, 0.05)) for i in range(6)]
        ids += [await queue.dispatch(ThreePerSecond(i)) for i in range(5)]
        gpu = await queue.dispatch(NeedsGpu(0))
        await queue.start_worker(concurrency=4, burst=True)  # returns once it stops
        assert {r.status for r in await queue.get_jobs(ids)} == {JobStatus.COMPLETED}
        assert (await queue.get_job(gpu)).status is JobStatus.QUEUED  # a unit it lacks: not waited for
    finally:
        await queue.close()
