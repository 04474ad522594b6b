"""Durable drivers across real OS processes: hand-off, races, SIGKILL, stale completions."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest
from jobs import Echo, Mark, Sleep, SleepFirst
from procs import finish, kill, run_script, start_worker

from khadem_nb import JobStatus, QueueManager

pytestmark = pytest.mark.slow


async def open_manager(url: str, **queue: object) -> QueueManager:
    return await QueueManager({"queue": {"url": url, **queue}}).init()


async def test_jobs_dispatched_here_are_drained_by_another_process(durable_url: str) -> None:
    manager = await open_manager(durable_url)
    ids = [await manager.dispatch(Echo(i)) for i in range(25)]
    await manager.close()
    finish([start_worker(durable_url, "--burst", "--concurrency", "3")])
    manager = await open_manager(durable_url)
    records = [await manager.get_job(i) for i in ids]
    await manager.close()
    assert [r.status for r in records] == [JobStatus.COMPLETED] * 25
    assert [r.result for r in records] == list(range(25))


async def test_four_workers_race_and_each_job_runs_exactly_once(durable_url: str, tmp_path: Path) -> None:
    n = 400 if durable_url.startswith("file") else 2000  # the file driver fsyncs every move
    log = tmp_path / "runs.log"
    manager = await open_manager(durable_url)
    await manager.dispatch_many([Mark(str(i), str(log)) for i in range(n)])
    await manager.close()
    workers = [start_worker(durable_url, "--burst", "--concurrency", "2") for _ in range(4)]
    finish(workers, timeout=240)
    lines = log.read_text().split()
    tags = Counter(lines[0::2])
    assert len(tags) == n and set(tags.values()) == {1}, "a job ran twice or never"
    assert len(set(lines[1::2])) > 1, "only one worker did all the work"
    manager = await open_manager(durable_url)
    counts = await manager.counts()
    completed = await manager.jobs("completed")
    await manager.close()
    assert counts["completed"] == n
    assert {r.attempt for r in completed} == {1}


async def test_sigkilled_worker_job_is_completed_by_another_after_its_lease(durable_url: str) -> None:
    manager = await open_manager(durable_url, lease=1.0)
    job_id = await manager.dispatch(SleepFirst(60))
    victim = start_worker(durable_url, "--lease", "1")
    await _wait_status(manager, job_id, JobStatus.ACTIVE)
    held = await manager.get_job(job_id)
    kill(victim)
    survivor = start_worker(durable_url, "--lease", "1", "--max-jobs", "1")
    finish([survivor])
    record = await manager.get_job(job_id)
    assert record.status is JobStatus.COMPLETED
    assert record.attempt == 2 and record.reclaims == 1
    assert record.result == {"pid": survivor.pid, "attempt": 2}
    # the killed worker's completion, had it come late, is refused: its token is stale
    assert held.token is not None
    assert await manager.driver.complete(held, {"late": True}) is False
    assert manager.driver.stale_acks == 1
    assert (await manager.get_job(job_id)).result == {"pid": survivor.pid, "attempt": 2}
    await manager.close()


async def test_job_that_keeps_killing_workers_ends_failed(durable_url: str) -> None:
    manager = await open_manager(durable_url, lease=1.0, max_reclaims=1)
    job_id = await manager.dispatch(Sleep(60))
    for attempt in (1, 2):
        victim = start_worker(durable_url, "--lease", "1")
        await _wait_status(manager, job_id, JobStatus.ACTIVE, attempt=attempt)
        kill(victim)
        await asyncio.sleep(1.2)
    claimed = await manager.driver.reserve(["default"], 1, 0)  # the sweep runs here
    assert claimed == []
    record = await manager.get_job(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None and "lease expired 2 time(s)" in record.error
    assert record.failure == "lost"
    await manager.close()


async def test_sigterm_lets_running_jobs_finish_and_releases_the_rest(durable_url: str) -> None:
    manager = await open_manager(durable_url)
    quick = await manager.dispatch(SleepFirst(0.5))
    worker = start_worker(durable_url, "--grace", "5")
    await _wait_status(manager, quick, JobStatus.ACTIVE)
    worker.send_signal(signal.SIGTERM)
    finish([worker])
    assert (await manager.get_job(quick)).status is JobStatus.COMPLETED

    stuck = await manager.dispatch(SleepFirst(60))
    worker = start_worker(durable_url, "--grace", "0.2")
    await _wait_status(manager, stuck, JobStatus.ACTIVE)
    worker.send_signal(signal.SIGTERM)
    finish([worker])
    record = await manager.get_job(stuck)
    assert record.status is JobStatus.QUEUED and record.attempt == 0
    await manager.close()


async def _wait_status(manager: QueueManager, job_id: str, status: JobStatus,
                       attempt: int | None = None) -> None:
    for _ in range(1500):
        record = await manager.get_job(job_id)
        if record.status is status and attempt in (None, record.attempt):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {status}")


CLAIM_STORM = """
import asyncio, sys
from jobs import Echo
from khadem_nb import QueueManager
async def main():
    m = await QueueManager(sys.argv[1]).init()
    for i in range(300):
        await m.dispatch(Echo(i))
        for record in await m.driver.reserve(["default"], 2, 0):
            await m.driver.complete(record, None)
    await m.close()
asyncio.run(main())
"""


def test_two_processes_claiming_at_once_never_see_database_is_locked(tmp_path: Path) -> None:
    from procs import spawn_script

    url = f"sqlite:///{tmp_path}/storm.db"
    run_script("import asyncio,sys; from khadem_nb import QueueManager; "
               "asyncio.run(QueueManager(sys.argv[1]).init())", url)
    procs = [spawn_script(CLAIM_STORM, url) for _ in range(2)]
    errors = finish(procs, timeout=120)
    assert all("locked" not in err for err in errors), errors


WRITER = """
import asyncio, sys
from jobs import Echo
from khadem_nb import QueueManager
async def main():
    m = await QueueManager(sys.argv[1]).init()
    print("ready", flush=True)
    while True:
        await m.dispatch(Echo("x" * 200_000))
asyncio.run(main())
"""


@pytest.mark.parametrize("kill_after", [0.15, 0.4, 0.8])
def test_sigkill_during_writes_leaves_no_partial_json(tmp_path: Path, kill_after: float) -> None:
    import json
    import time

    from procs import spawn_script

    root = tmp_path / "q"
    writer = spawn_script(WRITER, f"file:///{root}?inline_limit=1MiB")  # the payload stays in the record
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    time.sleep(kill_after)
    kill(writer)
    visible = [p for folder in ("ready", "delayed", "active", "done", "failed")
               for p in (root / folder).rglob("*.json")]
    assert visible, "the writer wrote nothing before it was killed"
    for path in visible:
        assert json.loads(path.read_bytes())["payload"]["value"] == "x" * 200_000
    assert (root / "tmp").exists()

    async def reopen() -> int:
        manager = await open_manager(f"file:///{root}")
        count = (await manager.counts())["queued"]
        await manager.close()
        return count

    assert asyncio.run(reopen()) == len(visible)
    assert list((root / "tmp").iterdir()) == []  # leftovers of the killed write were cleaned


async def test_garbage_and_truncated_job_files_are_set_aside(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"file:///{tmp_path}/q"
    manager = await open_manager(url)
    good = await manager.dispatch(Echo("fine"))
    ready = tmp_path / "q" / "ready" / "default"
    (ready / f"0000000000-000000000000001-000000000001-{'a' * 32}.json").write_bytes(b"\x00garbage")
    truncated = next(ready.glob(f"*{good}.json")).read_bytes()[:40]
    (ready / f"0000000000-000000000000002-000000000002-{'b' * 32}.json").write_bytes(truncated)
    await manager.start_worker(burst=True, delay=0.05)
    assert (await manager.get_job(good)).result == "fine"
    corrupt = sorted(p.name for p in (tmp_path / "q" / "corrupt").iterdir())
    assert len(corrupt) == 2 and corrupt[0].endswith(f"{'a' * 32}.json")
    assert "is unreadable" in caplog.text and "moved to" in caplog.text
    await manager.close()


async def test_file_stays_the_truth_for_a_fresh_process(durable_url: str) -> None:
    """A second manager (as after a kernel restart) sees every record the first stored."""
    first = await open_manager(durable_url)
    done = await first.dispatch(Echo("a"))
    await first.start_worker(max_jobs=1, delay=0.05)
    waiting = await first.dispatch(Echo("b"), delay=60)
    await first.close()
    second = await open_manager(durable_url)
    assert (await second.get_job(done)).result == "a"
    assert (await second.get_job(waiting)).status is JobStatus.SCHEDULED
    await second.close()




CELL_DEFINED = """
import sys
import khadem_nb as kn
q = kn.Queue(sys.argv[1])

@q.job
def defined_in_a_cell(x: int) -> int:
    return x

print(defined_in_a_cell.dispatch(1).id)
q.close()
"""


async def test_a_job_defined_in_a_cell_waits_with_its_reason_in_a_worker_process(tmp_path: Path) -> None:
    """A worker process cannot import ``__main__``: it leaves the cell's job (never failed)
    and why_waiting says what would run it."""
    url = f"sqlite:///{tmp_path}/q.db"
    dispatched = run_script(CELL_DEFINED, url)
    assert dispatched.returncode == 0, dispatched.stderr
    job_id = dispatched.stdout.split()[-1]
    worker = start_worker(url)
    manager = await open_manager(url)
    try:
        for _ in range(300):
            if any(e["state"] == "idle" for e in await manager.list_workers()):
                break
            await asyncio.sleep(0.05)
        record = await manager.get_job(job_id)
        reason = (await manager.why_waiting([record])).get(job_id, "")
    finally:
        kill(worker)
        await manager.close()
    assert (record.status, record.attempt) == (JobStatus.QUEUED, 0)
    assert reason.startswith("no live worker runs '__main__.defined_in_a_cell' (workers run: ")
    assert reason.endswith("defined in a notebook cell: ship its code or run the kernel's workers")
