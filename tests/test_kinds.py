"""Mixed fleets: workers claim only the job kinds they run. Worker processes importing
different job modules share a queue, a kind no live worker runs waits (with its reason) until
one starts, a rolling upgrade that adds a kind under load loses and fails nothing, and a
notebook's in-kernel workers and an application's worker share a queue without failing each
other's jobs. Real processes on every durable driver (the in-process cases, memory included,
are in test_contract)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from kinds_prep import Preprocess
from kinds_train import Train
from procs import spawn_script, start_worker

from khadem_nb import JobStatus, QueueManager

pytestmark = pytest.mark.slow

TRAINS = ("--import", "kinds_train")
PREPS = ("--import", "kinds_prep")


async def open_manager(url: str) -> QueueManager:
    return await QueueManager({"queue": {"url": url}}).init()


def stop(worker: subprocess.Popen[str]) -> None:
    """Stop a worker process as a deploy does: SIGTERM, its jobs in hand finish first."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=60)


def runs_in(log: Path) -> Counter[tuple[str, int]]:
    """How often each (kind, n) ran, from the log's lines."""
    lines = log.read_text().split("\n") if log.exists() else []
    return Counter((word, int(n)) for word, n, _ in (line.split() for line in lines if line))


def pids_in(log: Path, word: str) -> set[int]:
    return {int(line.split()[2]) for line in log.read_text().split("\n") if line.startswith(word + " ")}


async def test_workers_with_different_job_modules_share_a_queue(durable_url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    manager = await open_manager(durable_url)
    trainer = start_worker(durable_url, *TRAINS, "--concurrency", "2")
    prepper: subprocess.Popen[str] | None = None
    try:
        trains = [await manager.dispatch(Train(n, str(log))) for n in range(10)]
        preps = [await manager.dispatch(Preprocess(n, str(log))) for n in range(10)]
        assert {r.status for r in await manager.wait(trains, timeout=60)} == {JobStatus.COMPLETED}
        waiting = await manager.get_jobs(preps)
        assert {(r.status, r.attempt) for r in waiting} == {(JobStatus.QUEUED, 0)}  # none taken, none failed
        reason = (await manager.why_waiting(waiting))[preps[0]]
        assert reason.startswith("no live worker runs 'Preprocess' (workers run: AlwaysSnoozes, ")
        prepper = start_worker(durable_url, *PREPS)
        assert {r.status for r in await manager.wait(preps, timeout=60)} == {JobStatus.COMPLETED}
    finally:
        stop(trainer)
        if prepper is not None:
            stop(prepper)
        await manager.close()
    assert set(runs_in(log).values()) == {1} and len(runs_in(log)) == 20  # each ran once
    assert pids_in(log, "train") == {trainer.pid}
    assert prepper is not None and pids_in(log, "prep") == {prepper.pid}


@pytest.mark.parametrize("durable_url", ["redis", "postgres"], indirect=True)
def test_a_rolling_upgrade_that_adds_a_kind_under_load_loses_and_fails_nothing(
        durable_url: str, tmp_path: Path) -> None:
    """Four workers of the old version (Train only) are replaced one by one by the new one
    (Train and Preprocess) while a producer dispatches both kinds."""
    log = tmp_path / "runs.log"
    dispatched: list[str] = []
    producing = threading.Event()
    producing.set()

    def produce() -> None:
        async def run() -> None:
            manager = await open_manager(durable_url)
            n = 0
            while producing.is_set():
                dispatched.append(await manager.dispatch(Train(n, str(log))))
                dispatched.append(await manager.dispatch(Preprocess(n, str(log))))
                n += 1
                await asyncio.sleep(0.005)
            await manager.close()
        asyncio.run(run())

    workers = [start_worker(durable_url, *TRAINS, "--concurrency", "2") for _ in range(4)]
    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for i in range(len(workers)):
            time.sleep(0.7)
            stop(workers[i])
            workers[i] = start_worker(durable_url, *TRAINS, *PREPS, "--concurrency", "2")
        time.sleep(0.5)
    finally:
        producing.clear()
        producer.join(timeout=60)

    async def outcome() -> list[JobStatus]:
        manager = await open_manager(durable_url)
        try:
            return [r.status for r in await manager.wait(dispatched, timeout=120)]
        finally:
            await manager.close()

    try:
        statuses = asyncio.run(outcome())
    finally:
        for worker in workers:
            stop(worker)
    assert len(dispatched) > 100 and set(statuses) == {JobStatus.COMPLETED}  # none lost, none failed
    runs = runs_in(log)
    assert len(runs) == len(dispatched) and set(runs.values()) == {1}  # every job ran once


NOTEBOOK = """
import sys
import time
import khadem_nb as kn

q = kn.Queue(sys.argv[1])

@q.job
def doubled(x: int) -> int:
    return x * 2

q.start(concurrency=2)
print("ready", flush=True)
handles = [doubled.dispatch(i) for i in range(20)]
print(sorted(h.result(timeout=60) for h in handles), flush=True)
time.sleep(60)  # its workers claim on until the test, done with the application's jobs, ends it
"""


async def test_a_notebook_and_an_application_worker_share_a_queue(tmp_path: Path) -> None:
    """The kernel's workers do not take the application's jobs, nor the application's worker
    the notebook's cells: nothing fails."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    log = tmp_path / "runs.log"
    application = start_worker(url, *TRAINS)
    notebook = spawn_script(NOTEBOOK, url)
    manager = await open_manager(url)
    try:
        assert notebook.stdout is not None and notebook.stdout.readline().strip() == "ready"
        trains = [await manager.dispatch(Train(n, str(log))) for n in range(20)]
        assert {r.status for r in await manager.wait(trains, timeout=60)} == {JobStatus.COMPLETED}
        assert notebook.stdout.readline().strip() == str([2 * i for i in range(20)])
        assert pids_in(log, "train") == {application.pid}
        assert (await manager.counts())["failed"] == 0
    finally:
        notebook.kill()
        notebook.communicate(timeout=30)
        stop(application)
        await manager.close()


async def test_a_damaged_worker_entry_or_kind_is_passed_over_and_rewritten(tmp_path: Path) -> None:
    """A worker's entry (what it runs) damaged in storage, and keys among the kinds that do not
    read as kinds: jobs keep running, the reasons read what is sound, the entry is rewritten."""
    from jobs import Echo

    from khadem_nb.runtime.presence import PRESENCE_EVERY_S, PRESENCE_PREFIX

    manager = await open_manager(f"sqlite:///{tmp_path / 'q.db'}")
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    try:
        key = f"{PRESENCE_PREFIX}{worker.presence_name}"
        for damage in (b"{not json", b'{"name": "x", "state": "idle", "last_seen": "soon", "runs": 7}'):
            await manager.driver.kv_put(key, damage)
            await manager.driver.kv_put("kinds/default/neither/Echo", b"\xff")
            await manager.driver.kv_put("kinds/default/plain", b"")
            job_id = await manager.dispatch(Echo("still"))
            assert (await manager.wait([job_id], timeout=30))[0].result == "still"
            assert await manager.why_waiting(await manager.get_jobs([job_id])) == {}
        deadline = time.monotonic() + PRESENCE_EVERY_S + 5
        while (await manager.list_workers())[0].get("runs") == 7:
            assert time.monotonic() < deadline, "the entry was not rewritten"
            await asyncio.sleep(0.1)
        assert "Echo" in (await manager.list_workers())[0]["runs"]
    finally:
        await worker.stop()
        await manager.close()
