"""Redis-only behaviour: bad servers, outages, restarts under load, Cluster, corrupt records."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import driver_config, need_redis
from jobs import RUN_LOG, ClaimToken, Echo, Mark, Stage, Summarise
from procs import finish, start_worker
from redis_servers import RedisServer, spare_port

from khadem_nb import ConfigError, DriverError, DriverUnavailableError, JobStatus, QueueManager
from khadem_nb.drivers.redis.keys import KEY_NAMES, queue_keys

pytestmark = pytest.mark.redis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always").start()
    yield srv
    srv.stop()


async def test_unreachable_host_is_a_clear_bounded_error() -> None:
    port = spare_port()  # nothing listens here
    started = time.monotonic()
    with pytest.raises(DriverUnavailableError, match=rf"cannot reach Redis at redis://u:\*\*\*@127.0.0.1:{port}/0"):
        await QueueManager({"queue": {"url": f"redis://u:secret@127.0.0.1:{port}/0",
                                      "connect_timeout": 1}}).init()
    assert time.monotonic() - started < 5


async def test_a_server_that_never_answers_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(DriverUnavailableError, match="cannot reach Redis"):
            await QueueManager({"queue": {"url": f"redis://127.0.0.1:{port}/0", "connect_timeout": 1}}).init()
    finally:
        listener.close()
    assert time.monotonic() - started < 5


async def test_wrong_password_names_the_url_without_it(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path / "auth", "--requirepass", "right-password").start()
    try:
        with pytest.raises(DriverError, match=r"refused the credentials") as info:
            await QueueManager(f"redis://:wrong-password@127.0.0.1:{srv.port}/0").init()
        assert "wrong-password" not in str(info.value) and "***" in str(info.value)
        manager = await QueueManager(f"redis://:right-password@127.0.0.1:{srv.port}/0").init()
        await manager.close()
    finally:
        srv.stop()


async def test_wrong_db_index_is_a_clear_error() -> None:
    url = need_redis().rsplit("/", 1)[0] + "/999"
    with pytest.raises(DriverError, match=r"refused the connection: .*DB index is out of range"):
        await QueueManager(url).init()


def test_a_prefix_that_would_split_slots_is_refused() -> None:
    with pytest.raises(ConfigError, match="would give a queue's keys different hash tags"):
        asyncio.run(QueueManager({"queue": {"url": need_redis(), "prefix": "a{b}"}}).init())
    keys = queue_keys("khadem", "emails")
    assert all(key.startswith("{khadem:emails}:") for key in keys)


async def test_dispatch_while_redis_is_down_raises_quickly(server: RedisServer) -> None:
    manager = await QueueManager({"queue": {"url": server.url, "connect_timeout": 1}}).init()
    await manager.dispatch(Echo("before"))
    server.kill()
    started = time.monotonic()
    with pytest.raises(DriverUnavailableError, match=f"127.0.0.1:{server.port}"):
        await manager.dispatch(Echo("during"))
    assert time.monotonic() - started < 5
    server.start()
    await manager.dispatch(Echo("after"))  # the same manager reconnects by itself
    assert (await manager.counts())["queued"] == 2
    await manager.close()


async def test_a_restart_between_two_dispatches_goes_unnoticed(server: RedisServer) -> None:
    """No command ran while Redis was down: the next script call must neither fail on the
    connection the server closed (the driver keeps one out of the pool for its script calls)
    nor on the lost script cache."""
    manager = await QueueManager({"queue": {"url": server.url, "connect_timeout": 1}}).init()
    first = await manager.dispatch(Echo("before"))
    server.kill()
    server.start()  # appendonly: the job survives, the script cache does not
    await asyncio.sleep(0.1)  # the event loop sees the old connections end
    second = await manager.dispatch(Echo("after"))
    assert [r.status for r in await manager.get_jobs([first, second])] == [JobStatus.QUEUED] * 2
    await manager.close()


async def test_a_streamed_bulk_dispatch_while_redis_is_down_raises_quickly(server: RedisServer) -> None:
    """The streamed path holds one connection of its own: losing Redis is the same clear,
    bounded error, and the connection is not handed back with replies still owed."""
    manager = await QueueManager({"queue": {"url": server.url, "connect_timeout": 1}}).init()
    await manager.dispatch_many([Echo(i) for i in range(500)])  # streamed: more than one chunk
    server.kill()
    started = time.monotonic()
    with pytest.raises(DriverUnavailableError, match=f"127.0.0.1:{server.port}"):
        await manager.dispatch_many([Echo(i) for i in range(500)])
    assert time.monotonic() - started < 5
    server.start()
    ids = await manager.dispatch_many([Echo(i) for i in range(500, 1000)])
    assert (await manager.counts())["queued"] == 1000
    assert [r.payload["value"] for r in await manager.get_jobs(ids[:3])] == [500, 501, 502]
    await manager.close()


async def test_malformed_record_fails_its_job_and_the_worker_continues() -> None:
    manager = await QueueManager({"queue": {"url": need_redis(), "prefix": "khadem-test-corrupt"}}).init()
    await manager.driver.purge()
    bad = await manager.dispatch(Echo("will be corrupted"))
    good = await manager.dispatch(Echo("fine"))
    state_key = queue_keys("khadem-test-corrupt", "default")[KEY_NAMES.index("state")]
    client = manager.driver.client  # type: ignore[attr-defined]
    state = await client.hget(state_key, bad)
    await client.hset(state_key, bad, state.split(b"\t")[0] + b"\t{not json")  # its data, corrupt
    await manager.start_worker(burst=True, delay=0.05)
    record = await manager.get_job(bad)
    assert record.status is JobStatus.FAILED
    assert "could not be read: stored record unreadable: its data is not a job's JSON" in (record.error or "")
    assert (await manager.get_job(good)).result == "fine"
    await manager.driver.purge()
    await manager.close()


async def test_a_lost_job_field_fails_its_job_and_odd_keys_survive_the_batch_format() -> None:
    manager = await QueueManager({"queue": {"url": need_redis(), "prefix": "khadem-test-odd"}}).init()
    await manager.driver.purge()
    # the enqueue script splits a batch on newlines and a job's values on tabs
    odd_key = "tab\there and\tthere\t\nand a new line, \u00fc\\n"
    keyed = manager.build_record(Echo("tab\tin the payload"), key=odd_key)
    neighbour = manager.build_record(Echo("line\nin the payload"), key="plain")
    await manager.push([keyed, neighbour])
    assert (await manager.driver.find_by_keys(["plain"]))["plain"].id == neighbour.id
    lost = await manager.dispatch(Echo("its data field will be deleted"))
    state_key = queue_keys("khadem-test-odd", "default")[KEY_NAMES.index("state")]
    await manager.driver.client.hdel(state_key, lost)  # type: ignore[attr-defined]
    assert (await manager.driver.find_by_keys([odd_key]))[odd_key].id == keyed.id
    await manager.start_worker(burst=True, delay=0.05)
    assert (await manager.get_job(keyed.id)).result == "tab\tin the payload"
    assert (await manager.get_job(neighbour.id)).result == "line\nin the payload"
    assert await manager.driver.statuses([lost]) == [JobStatus.FAILED]  # the worker carried on
    await manager.driver.purge()
    await manager.close()


class FarTooUrgentEcho(Echo):
    priority = 4_001


async def test_a_priority_redis_cannot_order_is_refused_before_anything_is_stored() -> None:
    manager = QueueManager({"queue": {"url": need_redis(), "prefix": "khadem-test-range"}})
    early = manager.build_record(Echo("built before init"), queue="default", priority=9_000)
    await manager.init()
    await manager.driver.purge()
    try:
        await _refuses_what_it_cannot_order(manager, early)
    finally:
        await manager.driver.purge()
        await manager.close()


async def _refuses_what_it_cannot_order(manager: QueueManager, early: Any) -> None:
    with pytest.raises(ConfigError, match="priority must be between -4000 and 4000 on this driver, got 9000"):
        await manager.push([early])
    named = r"priority must be between -4000 and 4000 on this driver, got -5000 \(the 'redis' driver\)"
    with pytest.raises(ConfigError, match=named):
        await manager.dispatch(Echo("x"), priority=-5000)
    with pytest.raises(ConfigError, match="got 4001"):
        await manager.dispatch_many([Echo(i) for i in range(300)] + [FarTooUrgentEcho("late")])
    assert sum((await manager.counts()).values()) == 0
    await manager.dispatch(Echo("edge"), priority=4_000)  # the limit itself is fine


class UrgentEcho(Echo):
    priority = 5


async def test_a_big_bulk_dispatch_streams_in_order_even_after_the_script_cache_is_lost() -> None:
    """More jobs than one enqueue call takes go as chunks on one connection: every job is
    stored once, FIFO within a priority holds across chunks, and a server that forgot its
    scripts (restart, failover: SCRIPT FLUSH here) still takes them."""
    manager = await QueueManager({"queue": {"url": need_redis(), "prefix": "khadem-test-stream"}}).init()
    await manager.driver.purge()
    await manager.driver.client.script_flush()  # type: ignore[attr-defined]
    jobs = [UrgentEcho(i) if i % 3 == 0 else Echo(i) for i in range(1_100)]
    ids = await manager.dispatch_many(jobs)
    assert len(set(ids)) == 1_100
    assert (await manager.counts())["queued"] == 1_100
    RUN_LOG.clear()
    await manager.start_worker(burst=True, delay=0.05, concurrency=1)
    expected = [i for i in range(1_100) if i % 3 == 0] + [i for i in range(1_100) if i % 3]
    ran = list(RUN_LOG)
    assert ran == expected, "priority first, then FIFO within each"
    await manager.driver.purge()
    await manager.close()


def test_restart_under_load_loses_nothing(server: RedisServer, tmp_path: Path) -> None:
    """SIGKILL the server while two worker processes drain; restart it; every job completes."""
    url = f"{server.url}?lease=2"
    log = tmp_path / "runs.log"

    async def dispatch() -> None:
        manager = await QueueManager(url).init()
        await manager.dispatch_many([Mark(str(i), str(log)) for i in range(300)])
        await manager.close()

    asyncio.run(dispatch())
    workers = [start_worker(url, "--burst", "--concurrency", "2") for _ in range(2)]
    deadline = time.monotonic() + 30

    def both_working() -> bool:  # both workers are connected and have run jobs
        return log.exists() and len(set(log.read_text().split()[1::2])) == 2

    while not both_working() and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    time.sleep(1.0)
    server.start()  # same port, same AOF: the queue comes back as it was
    errors = finish(workers, timeout=120)
    assert any("lost Redis" in err for err in errors), "the workers never noticed the outage"

    async def check() -> tuple[dict[str, int], list[int]]:
        manager = await QueueManager(url).init()
        counts = await manager.counts()
        attempts = [r.attempt for r in await manager.jobs("completed")]
        await manager.close()
        return counts, attempts

    # a burst worker may exit before jobs reclaimed after the outage are due: finish them
    finish([start_worker(url, "--burst")], timeout=60)
    counts, _ = asyncio.run(check())
    assert counts["completed"] == 300, counts
    ran = set(log.read_text().split()[0::2])
    assert ran == {str(i) for i in range(300)}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    nodes = [RedisServer(tmp_path / f"node{i}", "--cluster-enabled", "yes", "--cluster-config-file",
                         "nodes.conf", "--cluster-node-timeout", "2000", "--appendonly", "no").start()
             for i in range(3)]
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
                    "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 30
    for node in nodes:  # every node must agree, not only the first (a slot's own node may lag)
        client = redis.Redis(port=node.port)
        while client.cluster("info")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "cluster never became ok"
            time.sleep(0.1)
    yield nodes
    for node in nodes:
        node.stop()


async def test_three_queues_on_three_slots_of_a_cluster(cluster: list[RedisServer]) -> None:
    seed = cluster[0].url
    probe = redis.RedisCluster(host="127.0.0.1", port=cluster[0].port)
    names = ["emails", "reports", "thumbnails"]
    owners = {probe.get_node_from_key(queue_keys("khadem", n)[0]).port for n in names}
    probe.close()
    assert len(owners) >= 2, "the three queues should not all land on one node"
    first_ids: dict[str, str] = {}
    for name in names:
        manager = await QueueManager({"queue": {"url": seed, "name": name}}).init()
        assert manager.driver.cluster  # type: ignore[attr-defined]
        ids = await manager.dispatch_many([Echo(f"{name}-{i}") for i in range(20)])
        first_ids[name] = ids[0]
        held = await manager.driver.reserve([name], 1, 0)
        assert await manager.driver.heartbeat(held) == [True]
        await manager.driver.release(held[0])
        after = await manager.then(ids[-1], Stage(f"{name}-after"))  # waits in the queue's slot
        summary = await manager.reduce(ids, Summarise())
        await manager.start_worker(burst=True, delay=0.05, concurrency=2)
        records = [await manager.get_job(i) for i in ids]
        assert [r.result for r in records] == [f"{name}-{i}" for i in range(20)]
        assert (await manager.get_job(after)).result["got"] == f"{name}-19"
        assert (await manager.get_job(summary)).result["count"] == 20
        assert (await manager.counts(name))["completed"] == 22
        await manager.close()
    # a fresh manager finds every queue through the registry (a key in a slot of its own)
    manager = await QueueManager({"queue": {"url": seed, "name": "elsewhere"}}).init()
    assert (await manager.counts())["completed"] == 66
    found = await manager.get_jobs(list(first_ids.values()))
    assert [(r.queue, r.result) for r in found] == [(n, f"{n}-0") for n in names]
    await manager.driver.purge()
    assert (await manager.counts())["completed"] == 0
    await manager.close()


async def test_settles_of_every_queue_are_heard_even_with_glob_characters_in_the_prefix(
        tmp_path: Path) -> None:
    config = driver_config("redis", tmp_path)
    config["queue"]["prefix"] += "-[a]*?\\"
    manager = await QueueManager(config).init()
    heard: list[tuple[str, JobStatus | None, Any]] = []
    try:
        job_id = await manager.dispatch(Echo(7), queue="emails")
        await manager.driver.watch([job_id], lambda *notice: heard.append(notice))
        await manager.start_worker(queues=["emails"], burst=True)
        for _ in range(200):
            if heard:
                break
            await asyncio.sleep(0.01)
        assert heard == [(job_id, JobStatus.COMPLETED, 7)]
    finally:
        await manager.driver.purge()
        await manager.close()


def test_idle_workers_wait_without_polling(server: RedisServer) -> None:
    """An idle worker blocks on the notify list: a dispatch wakes it within milliseconds."""

    async def main() -> float:
        manager = await QueueManager(server.url).init()
        worker = await manager.start_worker(run_in_background=True, delay=5.0)
        await asyncio.sleep(0.5)
        info_before = await manager.driver.client.info("commandstats")  # type: ignore[attr-defined]
        await asyncio.sleep(1.0)
        info_after = await manager.driver.client.info("commandstats")  # type: ignore[attr-defined]
        started = time.monotonic()
        job_id = await manager.dispatch(Echo("wake"))
        while (await manager.get_job(job_id)).status is not JobStatus.COMPLETED:
            await asyncio.sleep(0.002)
        latency = time.monotonic() - started
        await worker.stop()
        await manager.close()
        calls = [info_after.get(k, {}).get("calls", 0) - info_before.get(k, {}).get("calls", 0)
                 for k in ("cmdstat_evalsha", "cmdstat_blpop")]
        assert sum(calls) <= 4, f"an idle worker sent {calls} commands in one second"
        return latency

    assert asyncio.run(main()) < 1.0




# -- hand-off: a dispatch claims the job for a worker already waiting (enqueue.lua) ----------
def _key(prefix: str, name: str) -> str:
    return queue_keys(prefix, "default")[KEY_NAMES.index(name)]


async def _handoff_manager(prefix: str, **queue: Any) -> tuple[QueueManager, Any]:
    manager = await QueueManager({"queue": {"url": need_redis(), "prefix": prefix, **queue}}).init()
    await manager.driver.purge()
    return manager, manager.driver.client  # type: ignore[attr-defined]


async def test_an_idle_worker_gets_a_dispatched_job_without_claiming_it() -> None:
    manager, client = await _handoff_manager("khadem-test-handoff")
    worker = await manager.start_worker(run_in_background=True, delay=5.0)
    for _ in range(200):  # its first claim came back empty: it registers and blocks
        if await client.zcard(_key("khadem-test-handoff", "waiting")) == 1:
            break
        await asyncio.sleep(0.01)
    token = await manager.dispatch_and_wait(ClaimToken(), timeout=10)
    record = (await manager.jobs("completed"))[0]
    await worker.stop()
    await manager.driver.purge()
    await manager.close()
    assert token.startswith("h"), f"claimed by a reserve ({token!r}), not handed off"
    assert record.attempt == 1 and record.started_ms is not None and record.reclaims == 0


async def test_a_hand_off_nobody_popped_is_taken_by_the_next_claim() -> None:
    """The waiting worker went away before popping its job: the next reserve takes the row
    (lease renewed, attempt 1), and only the first ready job of a batch was handed off."""
    prefix = "khadem-test-stranded"
    manager, client = await _handoff_manager(prefix)
    await manager.dispatch(Echo("queued-before"))  # ready was not empty: nothing handed off
    await client.zadd(_key(prefix, "waiting"), {"30000|gone": time.time() * 1000 + 60_000})
    assert await manager.driver.statuses([await manager.dispatch(Echo("b"))]) == [JobStatus.QUEUED]
    await manager.start_worker(burst=True, delay=0.05)  # drain: ready is empty again
    RUN_LOG.clear()
    low = manager.build_record(Echo("low"), priority=0)
    high = manager.build_record(Echo("high"), priority=5)
    await manager.push([low, high])
    assert await manager.driver.statuses([low.id, high.id]) == [JobStatus.QUEUED, JobStatus.ACTIVE]
    assert await client.llen(_key(prefix, "handoff")) == 1  # one waiter (the stopped worker left)
    assert await client.zcard(_key(prefix, "waiting")) == 0
    await manager.start_worker(burst=True, delay=0.05)
    records = await manager.get_jobs([high.id, low.id])
    assert RUN_LOG == ["high", "low"] and await client.llen(_key(prefix, "handoff")) == 0
    assert [(r.status, r.attempt, r.reclaims) for r in records] == [(JobStatus.COMPLETED, 1, 0)] * 2
    await manager.driver.purge()
    await manager.close()


async def test_a_stale_hand_off_row_is_dropped_once_the_sweep_reclaimed_its_job() -> None:
    prefix = "khadem-test-stale-handoff"
    manager, client = await _handoff_manager(prefix, lease=0.5)
    await client.zadd(_key(prefix, "waiting"), {"500|died": time.time() * 1000 + 60_000})
    job_id = await manager.dispatch(Echo("once"))
    assert await manager.driver.statuses([job_id]) == [JobStatus.ACTIVE]
    await asyncio.sleep(0.7)  # its lease runs out while nobody holds it
    await manager.start_worker(burst=True, delay=0.05)
    record = await manager.get_job(job_id)
    assert RUN_LOG == ["once"]  # the row was dropped, the job ran once from the ready set
    assert (record.status, record.attempt, record.reclaims) == (JobStatus.COMPLETED, 2, 1)
    await manager.driver.purge()
    await manager.close()


async def test_leaving_the_line_gives_back_hand_offs_nobody_will_pop() -> None:
    """What a pausing or stopping worker runs (leave.lua): with no other worker waiting, a job
    handed off to it goes back to the ready set, its attempt not counted."""
    prefix = "khadem-test-leave"
    manager, client = await _handoff_manager(prefix)
    await client.zadd(_key(prefix, "waiting"), {"30000|pausing": time.time() * 1000 + 60_000})
    job_id = await manager.dispatch(Echo("x"))
    assert await manager.driver.statuses([job_id]) == [JobStatus.ACTIVE]
    assert await manager.driver._run("leave", "default", ["30000|pausing"]) == 1  # type: ignore[attr-defined]
    record = await manager.get_job(job_id)
    assert (record.status, record.attempt, record.token) == (JobStatus.QUEUED, 0, None)
    assert await client.llen(_key(prefix, "handoff")) == 0
    assert await client.zcard(_key(prefix, "waiting")) == 0
    await manager.start_worker(burst=True, delay=0.05)
    assert (await manager.get_job(job_id)).attempt == 1 and RUN_LOG == ["x"]
    await manager.driver.purge()
    await manager.close()


def test_servers_older_than_6_2_are_refused_by_version() -> None:
    from khadem_nb.drivers.redis.connection import server_is_recent_enough

    assert [server_is_recent_enough(v) for v in ("7.0.15", "6.2.0", "10.1", "6.0.20", "5.0.7")] == [
        True, True, True, False, False]
    assert server_is_recent_enough("")  # a compatible server that names no version is tried


async def test_jobs_handed_off_to_idle_worker_processes_run_exactly_once(tmp_path: Path) -> None:
    """Three idle worker processes, jobs dispatched one at a time: each is handed off or
    claimed, every one runs once, and stopping the workers strands nothing."""
    prefix = f"khadem-test-handoff-procs-{tmp_path.name}"
    url = f"{need_redis()}?prefix={prefix}"
    manager, client = await _handoff_manager(prefix)
    log = tmp_path / "runs.log"
    workers = [start_worker(url, "--concurrency", "2") for _ in range(3)]
    try:
        for _ in range(600):  # until every worker waits in the hand-off line
            if await client.zcard(_key(prefix, "waiting")) == 3:
                break
            await asyncio.sleep(0.05)
        before = (await client.info("commandstats")).get("cmdstat_rpush", {}).get("calls", 0)
        for i in range(300):
            await manager.dispatch(Mark(str(i), str(log)))
        for _ in range(1200):
            if (await manager.counts())["completed"] == 300:
                break
            await asyncio.sleep(0.05)
        after = (await client.info("commandstats")).get("cmdstat_rpush", {}).get("calls", 0)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        finish(workers, timeout=60)
    lines = log.read_text().split()
    tags = Counter(lines[0::2])
    assert len(tags) == 300 and set(tags.values()) == {1}, "a job ran twice or never"
    assert after > before, "no job was handed off"
    assert {r.attempt for r in await manager.jobs("completed")} == {1}
    assert await client.llen(_key(prefix, "handoff")) == 0
    assert await client.zcard(_key(prefix, "waiting")) == 0  # each stopped worker left the line
    await manager.driver.purge()
    await manager.close()
