"""The driver contract: every driver behaves the same through the manager and worker."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import QUEUED_DRIVERS, SHARED_DRIVERS, driver_config, make_manager
from jobs import RUN_LOG, AlwaysSnoozes, AskRetry, Boom, Echo, Flaky, Noop, Sleepy, ThreadName, WaitsForInput

from khadem_nb import ConfigError, FixedBackoff, JobStatus, QueueJob, QueueManager
from khadem_nb.config import parse_config


async def drain(manager: QueueManager, **kwargs: Any) -> None:
    """Run a worker until the queue has no queued, scheduled or active job left."""
    worker = await manager.start_worker(run_in_background=True, delay=0.02, **kwargs)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        counts = await manager.counts()
        if counts["queued"] == counts["scheduled"] == counts["active"] == 0:
            break
        await asyncio.sleep(0.01)
    await worker.stop()
    counts = await manager.counts()
    assert counts["queued"] == counts["scheduled"] == counts["active"] == 0, counts


async def test_results_are_stored(manager: QueueManager) -> None:
    job_id = await manager.dispatch(Echo({"x": [1, 2.5, "three"]}))
    await drain(manager)
    record = await manager.get_job(job_id)
    assert record.status is JobStatus.COMPLETED
    assert record.result == {"x": [1, 2.5, "three"]}
    assert record.attempt == 1
    assert record.started_ms is not None and record.finished_ms is not None
    assert record.finished_ms >= record.started_ms >= record.created_ms


async def test_fifo_within_one_priority(queued_manager: QueueManager) -> None:
    for i in range(20):
        await queued_manager.dispatch(Echo(i))
    await drain(queued_manager)
    assert list(range(20)) == RUN_LOG


async def test_higher_priority_runs_first(queued_manager: QueueManager) -> None:
    await queued_manager.dispatch(Echo("low-1"), priority=-1)
    await queued_manager.dispatch(Echo("mid-1"))
    await queued_manager.dispatch(Echo("high"), priority=10)
    await queued_manager.dispatch(Echo("mid-2"))
    await queued_manager.dispatch(Echo("low-2"), priority=-1)
    await drain(queued_manager)
    assert RUN_LOG == ["high", "mid-1", "mid-2", "low-1", "low-2"]


async def test_delayed_job_waits_for_its_time(queued_manager: QueueManager) -> None:
    delayed = await queued_manager.dispatch(Echo("later"), delay=0.3)
    await queued_manager.dispatch(Echo("now"))
    assert (await queued_manager.get_job(delayed)).status is JobStatus.SCHEDULED
    started = time.monotonic()
    await drain(queued_manager)
    assert RUN_LOG == ["now", "later"]
    record = await queued_manager.get_job(delayed)
    assert record.started_ms is not None
    assert record.started_ms - record.created_ms >= 300
    assert time.monotonic() - started >= 0.25


async def test_due_delayed_jobs_join_queued_ones_by_priority_and_later_ones_are_passed_over(
        queued_manager: QueueManager) -> None:
    """Claims take queued jobs and delayed jobs whose time has come, by priority then age,
    and pass over jobs delayed further, however many and however urgent (the SQL drivers walk
    the two apart, so the jobs delayed for an hour are never walked over)."""
    await queued_manager.dispatch_many([Echo(f"tomorrow {i}") for i in range(300)], delay=3600)
    soon = [await queued_manager.dispatch(Echo(f"soon {i}"), delay=0.2, priority=5) for i in range(2)]
    now = [await queued_manager.dispatch(Echo(f"now {i}")) for i in range(3)]
    driver = queued_manager.driver
    first = await driver.reserve(["default"], 10, 0)
    assert [r.id for r in first] == now
    await asyncio.sleep(0.3)
    later = [await queued_manager.dispatch(Echo("late urgent"), priority=9)]
    second = await driver.reserve(["default"], 10, 0)
    assert [r.id for r in second] == later + soon
    assert await driver.reserve(["default"], 10, 0) == []
    counts = await queued_manager.counts()
    assert counts[JobStatus.SCHEDULED] == 300


async def test_failed_job_is_kept_with_error_and_traceback(manager: QueueManager) -> None:
    job_id = await manager.dispatch(Boom("disk on fire"))
    await drain(manager)
    record = await manager.get_job(job_id)
    assert record.status is JobStatus.FAILED
    assert record.attempt == 3
    assert record.error == "RuntimeError: disk on fire"
    assert record.traceback is not None and "disk on fire" in record.traceback
    assert "Traceback" in record.traceback
    assert [r.id for r in await manager.jobs("failed")] == [job_id]


async def test_retries_count_attempts_until_success(manager: QueueManager) -> None:
    job_id = await manager.dispatch(Flaky(succeed_on=3))
    await drain(manager)
    record = await manager.get_job(job_id)
    assert record.status is JobStatus.COMPLETED
    assert record.result == {"attempt": 3}
    metrics = manager.get_metrics()
    assert metrics["total_retried"] == 2
    assert metrics["total_started"] == 3
    assert metrics["total_completed"] == 1


async def test_retry_job_signal(manager: QueueManager) -> None:
    job_id = await manager.dispatch(AskRetry())
    await drain(manager)
    record = await manager.get_job(job_id)
    assert (record.status, record.result) == (JobStatus.COMPLETED, 2)


async def test_failed_jobs_can_be_retried_by_hand(manager: QueueManager) -> None:
    job_id = await manager.dispatch(Flaky(succeed_on=3), max_attempts=1)
    await drain(manager)
    assert (await manager.get_job(job_id)).status is JobStatus.FAILED
    assert await manager.retry_failed() == 1
    await drain(manager)
    # a fresh budget: attempts restart, the job still fails on its first new attempt ...
    assert (await manager.get_job(job_id)).status is JobStatus.FAILED
    assert await manager.retry_failed([job_id]) == 1
    await drain(manager)
    record = await manager.get_job(job_id)
    assert record.status is JobStatus.FAILED and record.attempt == 1


async def test_callbacks_see_every_event(manager: QueueManager) -> None:
    events: list[tuple[str, Any]] = []

    async def on_complete(job: QueueJob, result: Any) -> None:
        events.append(("complete", result))

    await manager.start_worker(
        run_in_background=True, delay=0.02,
        on_job_start=lambda job: events.append(("start", type(job).__name__)),
        on_job_complete=on_complete,
        on_job_error=lambda job, exc, tb: events.append(("error", str(exc))),
    )
    await manager.dispatch(Echo(7))
    await manager.dispatch(Boom("bad"), max_attempts=1)
    await drain(manager)
    await manager.stop_worker()
    assert ("start", "Echo") in events and ("start", "Boom") in events
    assert ("complete", 7) in events
    assert ("error", "bad") in events


async def test_failing_callback_does_not_stop_the_worker(manager: QueueManager) -> None:
    def explode(*args: Any) -> None:
        raise ValueError("callback bug")

    await manager.start_worker(run_in_background=True, delay=0.02, on_job_start=explode,
                               on_job_complete=explode)
    ids = [await manager.dispatch(Echo(i)) for i in range(3)]
    await drain(manager)
    await manager.stop_worker()
    assert [(await manager.get_job(i)).status for i in ids] == [JobStatus.COMPLETED] * 3


async def test_middleware_runs_in_order_around_the_job(manager: QueueManager) -> None:
    trail: list[str] = []

    async def outer(job: QueueJob, next: Any) -> None:
        trail.append("outer-before")
        await next()
        trail.append("outer-after")

    class Inner:
        async def handle(self, job: QueueJob, next: Any) -> None:
            trail.append(f"inner-before:{type(job).__name__}")
            await next()
            trail.append("inner-after")

    manager.use(outer).use(Inner())
    job_id = await manager.dispatch(Echo("mid"))
    await drain(manager)
    assert trail == ["outer-before", "inner-before:Echo", "inner-after", "outer-after"]
    assert (await manager.get_job(job_id)).result == "mid"


async def test_failing_middleware_fails_the_job_not_the_worker(manager: QueueManager) -> None:
    async def broken(job: QueueJob, next: Any) -> None:
        raise PermissionError("middleware says no")

    manager.use(broken)
    job_id = await manager.dispatch(Echo(1), max_attempts=1)
    await drain(manager)
    record = await manager.get_job(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error == "PermissionError: middleware says no"


async def test_a_running_job_counts_as_processing_until_it_settles(queued_manager: QueueManager) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def hold(job: QueueJob) -> None:
        started.set()
        await release.wait()

    await queued_manager.dispatch(Echo("held"))
    await queued_manager.start_worker(max_jobs=1, delay=0.01, run_in_background=True,
                                      on_job_start=hold)
    await asyncio.wait_for(started.wait(), 10)
    assert queued_manager.get_metrics()["currently_processing"] == 1
    release.set()
    await asyncio.wait_for(asyncio.gather(*(w.run() for w in queued_manager.workers)), 10)
    metrics = queued_manager.get_metrics()
    assert metrics["currently_processing"] == 0 and metrics["total_completed"] == 1


@pytest.mark.parametrize("verb", ["complete", "fail", "retry", "release"])
async def test_each_settle_does_what_its_verb_says_and_a_refused_one_changes_nothing(
        queued_manager: QueueManager, verb: str) -> None:
    """The driver acts on the settle's verb: a release gives the attempt back, a retry keeps
    the error and waits its delay, a failure keeps its error, a completion its result. A
    second settle of the same claim is refused and leaves the stored record as it was."""
    job_id = await queued_manager.dispatch(Echo("x"), max_attempts=3)
    driver = queued_manager.driver
    [held] = await driver.reserve(["default"], 1, 1.0)
    stale = held.copy()
    settle = {"complete": lambda r: driver.complete(r, "done"),
              "fail": lambda r: driver.fail(r, "ValueError: bad", "tb"),
              "retry": lambda r: driver.retry(r, 30.0, "ValueError: again", "tb"),
              "release": driver.release}[verb]
    assert await settle(held)
    assert held.token is None
    stored = await queued_manager.get_job(job_id)
    expected = {"complete": (JobStatus.COMPLETED, 1, "done", None),
                "fail": (JobStatus.FAILED, 1, None, "ValueError: bad"),
                "retry": (JobStatus.SCHEDULED, 1, None, "ValueError: again"),
                "release": (JobStatus.QUEUED, 0, None, None)}[verb]
    assert (stored.status, stored.attempt, stored.result, stored.error) == expected
    assert held.status is stored.status  # the caller's record shows the settle too
    if verb == "retry":
        assert stored.available_ms >= stored.created_ms + 29_000
    before = stored.to_dict()
    stale_acks = driver.stale_acks
    assert not await driver.complete(stale, "twice")  # that claim no longer holds the job
    assert driver.stale_acks == stale_acks + 1
    assert stale.status is JobStatus.ACTIVE and stale.result is None  # refused: untouched
    assert (await queued_manager.get_job(job_id)).to_dict() == before


async def test_settles_of_one_loop_turn_each_get_their_own_outcome(queued_manager: QueueManager) -> None:
    """Settles asked for together (drivers may send them as one batch) each do what their verb
    says; a stale one in the same batch is refused and one cancelled while held is stopped."""
    driver = queued_manager.driver
    ids = [await queued_manager.dispatch(Echo(i), max_attempts=3) for i in range(6)]
    held = await driver.reserve(["default"], 6, 1.0)
    assert sorted(r.id for r in held) == sorted(ids)
    by_id = {r.id: r for r in held}
    complete, fail, retry, release, stale, cancelled = (by_id[i] for i in ids)
    await driver.complete(stale.copy(), "first")  # the stale record's claim is settled already
    assert await driver.cancel([cancelled.id], "stop it") == [cancelled.id]
    outcomes = await asyncio.gather(
        driver.complete(complete, {"n": 1}), driver.fail(fail, "ValueError: bad", "tb"),
        driver.retry(retry, 0.0, "ValueError: again", None), driver.release(release),
        driver.complete(stale, "second"), driver.complete(cancelled, "late"))
    assert outcomes == [True, True, True, True, False, True]
    stored = {r.id: r for r in await queued_manager.get_jobs(ids)}
    assert (stored[complete.id].status, stored[complete.id].result) == (JobStatus.COMPLETED, {"n": 1})
    assert (stored[fail.id].status, stored[fail.id].error) == (JobStatus.FAILED, "ValueError: bad")
    assert (stored[retry.id].status, stored[retry.id].attempt) == (JobStatus.QUEUED, 1)
    assert (stored[release.id].status, stored[release.id].attempt) == (JobStatus.QUEUED, 0)
    assert (stored[stale.id].status, stored[stale.id].result) == (JobStatus.COMPLETED, "first")
    assert stored[cancelled.id].status is JobStatus.CANCELLED and stored[cancelled.id].result is None
    assert cancelled.status is JobStatus.CANCELLED  # the caller's record shows the stop
    assert {r.id for r in await driver.reserve(["default"], 6, 1.0)} == {retry.id, release.id}


async def test_forget_deletes_finished_records_only(queued_manager: QueueManager) -> None:
    """``forget`` deletes completed, failed and cancelled records and leaves pending and
    running jobs (and unknown ids) alone; ``purge_failed`` deletes the failed ones."""
    driver = queued_manager.driver
    ids = [await queued_manager.dispatch(Echo(i), max_attempts=1) for i in range(5)]
    done, failed, running, cancelled, queued = ids
    held = {r.id: r for r in await driver.reserve(["default"], 3, 1.0)}
    assert set(held) == {done, failed, running}
    assert await driver.complete(held[done], "ok")
    assert await driver.fail(held[failed], "ValueError: bad", None)
    assert await queued_manager.cancel(cancelled) == [cancelled]
    assert await queued_manager.forget([done, running, cancelled, queued, "no-such-id"]) == 2
    statuses = await queued_manager.statuses(ids)
    assert statuses == [None, JobStatus.FAILED, JobStatus.ACTIVE, None, JobStatus.QUEUED]
    assert await queued_manager.purge_failed() == 1
    assert await queued_manager.statuses(ids) == [None, None, JobStatus.ACTIVE, None, JobStatus.QUEUED]
    assert await queued_manager.purge_failed() == 0
    counts = await queued_manager.counts()
    assert (counts["completed"], counts["failed"], counts["cancelled"], counts["active"]) == (0, 0, 0, 1)


async def test_keep_result_ends_a_finished_records_life_on_its_own(queued_manager: QueueManager) -> None:
    """A record dispatched with ``keep_result`` is removed once that time has passed after it
    finished (completed or failed), at the next retention pass; the others stay."""
    driver = queued_manager.driver
    brief = await queued_manager.dispatch(Echo("brief"), keep_result=0.3)
    kept = await queued_manager.dispatch(Echo("kept"))
    brief_failure = await queued_manager.dispatch(Echo("fails"), keep_result=timedelta(seconds=0.3))
    waiting = await queued_manager.dispatch(Echo("waits"), keep_result=0.3)
    held = {r.id: r for r in await driver.reserve(["default"], 3, 1.0)}
    assert set(held) == {brief, kept, brief_failure}
    assert held[brief].keep_ms == 300 and held[kept].keep_ms is None
    assert await driver.complete(held[brief], "x") and await driver.complete(held[kept], "y")
    assert await driver.fail(held[brief_failure], "ValueError: no", None)
    await driver.trim()  # not yet: 0.3 s have not passed
    ids = [brief, kept, brief_failure, waiting]
    assert None not in await queued_manager.statuses(ids)
    await asyncio.sleep(0.45)
    await driver.trim()
    assert await queued_manager.statuses(ids) == [None, JobStatus.COMPLETED, None, JobStatus.QUEUED]
    with pytest.raises(ConfigError, match="keep_result must be between 0 and"):
        await queued_manager.dispatch(Echo("bad"), keep_result=-1)


async def test_finished_counts_count_by_window_of_finish_time(queued_manager: QueueManager) -> None:
    driver = queued_manager.driver
    for i in range(5):
        await queued_manager.dispatch(Echo(i), queue="default" if i % 2 else "other", max_attempts=1)
    held = await driver.reserve(["default", "other"], 5, 1.0)
    for index, record in enumerate(held):
        settled = driver.fail(record, "ValueError: x", None) if index < 2 else driver.complete(record, index)
        assert await settled
    finished = [r.finished_ms or 0 for r in await queued_manager.get_jobs([r.id for r in held])]
    since = min(finished) - 30_000
    counts = await driver.finished_counts(since, 60_000)
    assert (sum(c for c, _ in counts.values()), sum(f for _, f in counts.values())) == (3, 2)
    assert set(counts) <= {0, 1}  # every one within the first window or the next
    assert await driver.finished_counts(max(finished) + 1, 60_000) == {}


async def test_queue_names_lists_the_queues_that_hold_records(queued_manager: QueueManager) -> None:
    assert set(await queued_manager.driver.queue_names()) <= {"default"}  # Redis knows its own
    await queued_manager.dispatch(Echo(1), queue="emails")
    await queued_manager.dispatch(Echo(2))
    await queued_manager.dispatch(Echo(3), queue="emails")
    assert await queued_manager.driver.queue_names() == ["default", "emails"]


async def test_metrics_after_known_work(manager: QueueManager) -> None:
    for i in range(4):
        await manager.dispatch(Echo(i))
    await manager.dispatch(Boom(), max_attempts=2)
    await drain(manager)
    metrics = manager.get_metrics()
    assert list(metrics) == [
        "total_queued", "total_started", "total_completed", "total_failed", "total_retried",
        "currently_processing", "success_rate", "failure_rate", "average_processing_time_ms",
    ]
    assert metrics["total_queued"] == 5
    assert metrics["total_started"] == 6
    assert metrics["total_completed"] == 4
    assert metrics["total_failed"] == 1
    assert metrics["total_retried"] == 1
    assert metrics["currently_processing"] == 0
    assert metrics["success_rate"] == pytest.approx(0.8)
    assert metrics["failure_rate"] == pytest.approx(0.2)
    assert metrics["average_processing_time_ms"] > 0
    manager.reset_metrics()
    assert manager.get_metrics()["total_queued"] == 0


async def test_sync_handle_runs_in_a_thread_not_on_the_loop(manager: QueueManager) -> None:
    job_id = await manager.dispatch(ThreadName())
    await drain(manager)
    assert (await manager.get_job(job_id)).result.startswith("khadem-job")


async def test_job_timeout_cancels_the_job(manager: QueueManager) -> None:
    job_id = await manager.dispatch(Sleepy(5.0))
    await drain(manager)
    record = await manager.get_job(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None and "timeout of 0.05s" in record.error


async def test_an_unknown_job_name_fails_on_the_sync_driver(tmp_path: Path) -> None:
    """The sync driver runs a job at dispatch, in the dispatching process: no other worker can
    run a job it lacks, so it fails at once, saying why."""
    manager = await make_manager("sync", tmp_path)
    ghost = manager.build_record(Echo("boo"))
    ghost.name = "Ghost"
    await manager.push([ghost])
    record = await manager.get_job(ghost.id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None and "'Ghost'" in record.error and "UnknownJobError" in record.error
    await manager.close()


async def test_a_job_no_worker_runs_waits_with_its_reason(queued_manager: QueueManager) -> None:
    """A job whose kind no live worker runs waits, never failed, and why_waiting says so; the
    worker runs the jobs behind it."""
    manager = queued_manager
    ghost = manager.build_record(Echo("boo"))
    ghost.name = "Ghost"
    await manager.push([ghost])
    ok = await manager.dispatch(Echo("after"))
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    try:
        assert (await manager.wait([ok], timeout=30))[0].result == "after"
        await asyncio.sleep(0.3)
        record = await manager.get_job(ghost.id)
        assert record.status is JobStatus.QUEUED and record.attempt == 0
        reason = (await manager.why_waiting([record]))[ghost.id]
        assert reason.startswith("no live worker runs 'Ghost' (workers run: ")
        assert "Echo" in (await manager.list_workers())[0]["runs"]
    finally:
        await worker.stop()


async def test_a_job_of_a_kind_nobody_noted_is_given_back_without_spending_an_attempt(
        queued_manager: QueueManager) -> None:
    """A job stored by a process that notes no kinds (an earlier release) reaches a worker
    that lacks it: the worker gives it back, notes its kind and leaves it from then on."""
    manager = queued_manager
    ghost = manager.build_record(Echo("boo"))
    ghost.name = "Ghost"
    await manager.driver.push([ghost])  # past the kind notes, as an earlier release stores it
    worker = await manager.start_worker(run_in_background=True, delay=0.02)
    try:
        async def given_back() -> bool:
            return await manager.driver.kv_get(f"kinds/{ghost.queue}/plain/Ghost") is not None
        for _ in range(300):
            if await given_back():
                break
            await asyncio.sleep(0.02)
        assert await given_back()
        ok = await manager.dispatch(Echo("after"))
        assert (await manager.wait([ok], timeout=30))[0].result == "after"
        await asyncio.sleep(1.5)  # due again: the worker's claims now leave it
        record = await manager.get_job(ghost.id)
        assert record.status is JobStatus.QUEUED and record.attempt == 0 and record.error is None
    finally:
        await worker.stop()


async def test_named_queues_checked_in_order(queued_manager: QueueManager) -> None:
    await queued_manager.dispatch(Echo("default"))
    await queued_manager.dispatch(Echo("email"), queue="emails")
    await queued_manager.dispatch(Echo("report"), queue="reports")
    worker = await queued_manager.start_worker(queues=["reports", "emails"], delay=0.02,
                                               run_in_background=True)
    for _ in range(200):
        if len(RUN_LOG) == 2:
            break
        await asyncio.sleep(0.01)
    await worker.stop()
    assert RUN_LOG == ["report", "email"]
    assert (await queued_manager.counts())["queued"] == 1


async def test_jobs_of_another_queue_are_found_by_id(queued_manager: QueueManager,
                                                     tmp_path: Path) -> None:
    """A job dispatched to a queue other than the manager's own can be waited for, read,
    listed, counted and retried by hand; on shared storage, from another manager too."""
    manager = queued_manager
    ok = await manager.dispatch(Echo("mail"), queue="emails")
    bad = await manager.dispatch(Boom("bounced"), queue="emails", max_attempts=1)
    worker = await manager.start_worker(queues=["emails"], run_in_background=True, delay=0.02)
    try:
        done = await manager.wait([ok, bad], timeout=10)
        assert [(r.queue, r.status) for r in done] == [("emails", JobStatus.COMPLETED),
                                                       ("emails", JobStatus.FAILED)]
        assert await manager.dispatch_and_wait(Echo("again"), queue="emails", timeout=10) == "again"
        assert [r.id for r in await manager.jobs("failed")] == [bad]
        assert (await manager.counts())["failed"] == 1
        assert await manager.retry_failed() == 1
        assert (await manager.wait([bad], timeout=10))[0].attempt == 1
        assert RUN_LOG == ["mail", "again"]
    finally:
        await worker.stop()
    if manager.settings.driver in SHARED_DRIVERS:  # a process that never used the queue finds its jobs
        other = await QueueManager(driver_config(manager.settings.driver, tmp_path)).init()
        try:
            assert (await other.get_job(ok)).result == "mail"
            assert await other.retry_failed([bad]) == 1
            assert (await other.counts())["queued"] == 1
        finally:
            await other.close()


async def test_max_jobs_stops_the_worker(queued_manager: QueueManager) -> None:
    for i in range(5):
        await queued_manager.dispatch(Echo(i))
    worker = await queued_manager.start_worker(max_jobs=3, delay=0.02)
    assert worker.processed == 3
    assert RUN_LOG == [0, 1, 2]
    assert (await queued_manager.counts())["queued"] == 2


async def test_stop_is_idempotent_and_gives_running_jobs_back(queued_manager: QueueManager) -> None:
    from jobs import Sleep

    job_id = await queued_manager.dispatch(Sleep(30))
    worker = await queued_manager.start_worker(run_in_background=True, delay=0.02)
    for _ in range(200):
        if (await queued_manager.counts())["active"] == 1:
            break
        await asyncio.sleep(0.01)
    await asyncio.gather(worker.stop(grace=0.1), worker.stop(grace=0.1))
    await worker.stop()
    record = await queued_manager.get_job(job_id)
    assert record.status is JobStatus.QUEUED
    assert record.attempt == 0  # an interrupted attempt is not counted


async def test_many_noop_jobs_with_concurrency(manager: QueueManager) -> None:
    ids = await manager.dispatch_many([Noop() for _ in range(200)])
    await drain(manager, concurrency=4)
    counts = await manager.counts()
    assert counts["completed"] == 200
    assert len(set(ids)) == 200


async def test_a_big_bulk_dispatch_keeps_order_and_ids(queued_manager: QueueManager) -> None:
    """More jobs than one chunk: built and stored chunk by chunk, returned ids in order."""
    ids = await queued_manager.dispatch_many([Echo(i) for i in range(600)])
    records = await queued_manager.get_jobs(ids)
    assert [r.payload["value"] for r in records] == list(range(600))
    assert queued_manager.get_metrics()["total_queued"] == 600
    await drain(queued_manager)
    assert list(range(600)) == RUN_LOG


async def test_one_bad_job_in_a_bulk_dispatch_stores_none(manager: QueueManager) -> None:
    from khadem_nb import SerializationError

    jobs = [Echo(i) for i in range(600)]
    jobs[550] = Echo({"fine": 1, "bad": object()})
    named = r"Echo argument\['value'\]\['bad'\] is of type builtins.object"
    with pytest.raises(SerializationError, match=named):
        await manager.dispatch_many(jobs)
    assert sum((await manager.counts()).values()) == 0
    assert manager.get_metrics()["total_queued"] == 0


async def test_prefetch_claims_ahead_but_runs_at_most_concurrency(queued_manager: QueueManager) -> None:
    from jobs import CountRunning

    CountRunning.running = CountRunning.peak = 0
    ids = await queued_manager.dispatch_many([CountRunning() for _ in range(60)])
    await queued_manager.start_worker(max_jobs=60, concurrency=3, prefetch=5, delay=0.02)
    assert CountRunning.peak == 3
    records = [await queued_manager.get_job(i) for i in ids]
    assert all(r.status is JobStatus.COMPLETED and r.attempt == 1 for r in records)


async def test_stop_gives_prefetched_jobs_back_uncounted(queued_manager: QueueManager) -> None:
    from jobs import Sleep

    ids = await queued_manager.dispatch_many([Sleep(30) for _ in range(6)])
    worker = await queued_manager.start_worker(run_in_background=True, concurrency=2, prefetch=3,
                                               delay=0.02)
    for _ in range(300):  # two running and three claimed ahead
        if (await queued_manager.counts())["active"] == 5:
            break
        await asyncio.sleep(0.01)
    assert (await queued_manager.counts())["active"] == 5
    await worker.stop(grace=0.1)
    records = [await queued_manager.get_job(i) for i in ids]
    assert [r.status for r in records] == [JobStatus.QUEUED] * 6
    assert [r.attempt for r in records] == [0] * 6


async def test_bad_prefetch_is_a_config_error(manager: QueueManager) -> None:
    with pytest.raises(ConfigError, match="prefetch must be between 0 and 10000, got -1"):
        await manager.start_worker(prefetch=-1)


async def test_max_jobs_with_many_consumers_claims_exactly_that_many(queued_manager: QueueManager) -> None:
    ids = await queued_manager.dispatch_many([Echo(i) for i in range(30)])
    worker = await queued_manager.start_worker(max_jobs=10, concurrency=4, prefetch=4, delay=0.02)
    assert worker.processed == 10
    assert sorted(RUN_LOG) == list(range(10))  # the first ten, FIFO, none claimed twice
    counts = await queued_manager.counts()
    assert (counts["completed"], counts["queued"], counts["active"]) == (10, 20, 0)
    assert len(ids) == 30


async def test_burst_with_many_consumers_drains_then_stops(queued_manager: QueueManager) -> None:
    await queued_manager.dispatch_many([Echo(i) for i in range(25)])
    worker = await queued_manager.start_worker(burst=True, concurrency=3, prefetch=2, delay=0.02)
    assert worker.processed == 25 and not worker.running
    assert sorted(RUN_LOG) == list(range(25))


async def test_paused_consumers_claim_nothing_until_resumed(queued_manager: QueueManager) -> None:
    worker = await queued_manager.start_worker(run_in_background=True, concurrency=3, delay=0.02)
    await asyncio.sleep(0.05)  # every consumer is idle, waiting for work
    worker.pause()
    await queued_manager.dispatch_many([Echo(i) for i in range(6)])
    await asyncio.sleep(0.2)
    assert RUN_LOG == [] and (await queued_manager.counts())["queued"] == 6
    worker.resume()
    for _ in range(300):
        if (await queued_manager.counts())["completed"] == 6:
            break
        await asyncio.sleep(0.01)
    await worker.stop()
    assert sorted(RUN_LOG) == list(range(6))


@pytest.fixture(params=QUEUED_DRIVERS)
def queued_driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_retention_by_count_and_age(queued_driver: str, tmp_path: Path) -> None:
    """Retention runs when jobs settle (SQLite and the file driver's age limit: in passes at
    most half an age limit apart), so each check follows a settle after such a pause."""
    from jobs import Fail

    manager = await make_manager(queued_driver, tmp_path, retention=2, retention_age=1.0,
                                 failed_retention=1, failed_retention_age=60)
    try:
        first = await manager.dispatch_many([Echo(i) for i in range(4)])
        await manager.dispatch(Fail("old"))
        await drain(manager)
        newest_failure = await manager.dispatch(Fail("new"))
        await drain(manager)
        await asyncio.sleep(0.6)
        mid = await manager.dispatch(Echo("mid"))
        await drain(manager)
        kept = {r.id for r in await manager.jobs(JobStatus.COMPLETED)}
        assert mid in kept and kept <= {first[3], mid}  # the two newest (first[3] may have aged)
        assert [r.id for r in await manager.jobs(JobStatus.FAILED)] == [newest_failure]
        await asyncio.sleep(1.1)
        later = await manager.dispatch(Echo("later"))
        await drain(manager)
        assert [r.id for r in await manager.jobs(JobStatus.COMPLETED)] == [later]  # by age
        assert [r.id for r in await manager.jobs(JobStatus.FAILED)] == [newest_failure]  # 60 s
    finally:
        await manager.driver.purge()
        await manager.close()


def test_retention_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"queue\.retention_age must be between 1 and .* seconds, got -1"):
        parse_config({"queue": {"retention_age": -1}})
    with pytest.raises(ConfigError, match=r"queue\.failed_retention must be between 0 and \d+, got -2"):
        parse_config({"queue": {"failed_retention": -2}})
    settings = parse_config("redis://127.0.0.1/0?retention_age=3600&failed_retention=50")
    assert (settings.retention_age_s, settings.failed_retention) == (3600.0, 50)


async def test_a_worker_draining_jobs_that_never_wait_lets_other_tasks_run(
        queued_manager: QueueManager) -> None:
    """Jobs that never suspend must not hold the loop for a whole drain: in a notebook that is
    the kernel, its panel and every other cell's tasks."""
    manager = queued_manager
    n = 500 if manager.settings.driver == "file" else 2000  # a file queue's drain is slow enough
    await manager.dispatch_many([Noop() for _ in range(n)])
    turns = 0
    worker_done = False

    async def ticker() -> None:
        nonlocal turns
        while not worker_done:
            turns += 1
            await asyncio.sleep(0)

    ticking = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0)
    turns = 0
    await manager.start_worker(max_jobs=n, delay=0.01)
    worker_done = True
    await ticking
    assert manager.get_metrics()["total_completed"] == n
    assert turns >= 10  # the other task ran while the jobs were drained


class FixedBackoffBoom(QueueJob):
    max_attempts = 3
    retry_backoff = FixedBackoff(30.0)

    async def handle(self) -> None:
        raise ValueError("again")


async def test_a_job_takes_its_backoff_policy(queued_manager: QueueManager) -> None:
    """``retry_backoff`` decides the wait before the next attempt (here 30 s, not the default
    exponential 1 s)."""
    job_id = await queued_manager.dispatch(FixedBackoffBoom())
    before_ms = time.time() * 1000
    await queued_manager.start_worker(max_jobs=1, delay=0.05)
    after_ms = time.time() * 1000
    record = await queued_manager.get_job(job_id)
    assert record.status is JobStatus.SCHEDULED and record.error == "ValueError: again"
    assert before_ms + 29_000 <= record.available_ms <= after_ms + 31_000


class SlowRetry(Flaky):
    """Fails its first attempt and is retried 0.3 s later."""

    retry_delay: ClassVar[float] = 0.3


async def test_a_burst_worker_waits_for_the_quick_retry_of_a_job_it_ran(queued_manager: QueueManager) -> None:
    job_id = await queued_manager.dispatch(SlowRetry(succeed_on=2), max_attempts=2)
    worker = await queued_manager.start_worker(burst=True, concurrency=3, delay=0.02)
    assert not worker.running and worker.processed == 2
    assert (await queued_manager.get_job(job_id)).status is JobStatus.COMPLETED


async def test_a_snoozed_job_runs_again_later_without_spending_an_attempt(
        queued_manager: QueueManager, tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    job_id = await queued_manager.dispatch(WaitsForInput(str(source)), max_attempts=1)
    worker = await queued_manager.start_worker(run_in_background=True, delay=0.02)
    try:
        for _ in range(200):
            if (await queued_manager.get_job(job_id)).meta.get("snoozes", 0) >= 2:
                break
            await asyncio.sleep(0.02)
        waiting = await queued_manager.get_job(job_id)
        assert waiting.status in (JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.ACTIVE)
        source.write_text("ready")
        done = (await queued_manager.wait([job_id], timeout=30))[0]
        assert done.status is JobStatus.COMPLETED and done.result == "ready"
        assert done.attempt == 1 and done.meta["snoozes"] >= 2  # no attempt spent by the snoozes
        stuck = await queued_manager.dispatch(AlwaysSnoozes())
        failed = (await queued_manager.wait([stuck], timeout=30))[0]
        assert failed.status is JobStatus.FAILED and failed.attempt == 1
        assert "snoozed 3 times, the job's max_snoozes: input not ready" in (failed.error or "")
    finally:
        await worker.stop()


async def test_the_sql_claims_reach_due_jobs_through_their_indexes(tmp_path: Path) -> None:
    """The plans of the SQL claims: queued jobs through their own index, scheduled ones
    through the index by due time with the due time as the scan's bound (so jobs delayed
    further are never read), on SQLite and PostgreSQL."""
    import sqlite3

    from conftest import need_postgres

    from khadem_nb.drivers.sqlite import CLAIM

    manager = await make_manager("sqlite", tmp_path)
    path = manager.driver.path  # type: ignore[attr-defined]
    await manager.close()
    with sqlite3.connect(path) as conn:
        values = {"queue": "default", "now": 0, "limit": 5, "lease": 0, "token": "t"}
        plan = " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + CLAIM, values))
    assert "INDEX khadem_jobs_queued (queue=?)" in plan, plan
    assert "INDEX khadem_jobs_due (queue=? AND available_ms<?)" in plan, plan

    need_postgres()
    manager = await make_manager("postgres", tmp_path)
    driver: Any = manager.driver
    params = {"queue": "default", "limit": 5, "lease_ms": 1000, "token": "t", "max_reclaims": 1, "lost": "",
              "lane": None, "reclaim": True}

    async def explain(conn: Any) -> str:
        rows = await (await conn.execute("EXPLAIN " + driver._claim, params)).fetchall()
        return " / ".join(row[0] for row in rows)

    try:
        plan = await driver._run(explain)
    finally:
        await driver.purge()
        await manager.close()
    assert "jobs_queued" in plan and "jobs_due" in plan, plan
    assert "Index Cond: ((queue = 'default'::text) AND (available_ms <= " in plan, plan


async def test_rough_counts_are_the_counts_below_the_exact_limit(queued_manager: QueueManager) -> None:
    await queued_manager.dispatch_many([Echo(i) for i in range(3)])
    await queued_manager.dispatch(Echo("later"), delay=3600)
    await queued_manager.dispatch(Echo("soon"), delay=0.05)
    await asyncio.sleep(0.1)
    assert await queued_manager.driver.rough_counts() == (await queued_manager.counts(), {})
    counts, _ = await queued_manager.driver.rough_counts("default")
    assert (counts[JobStatus.QUEUED], counts[JobStatus.SCHEDULED]) == (4, 1)
