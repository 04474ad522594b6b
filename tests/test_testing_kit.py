"""The testing kit: QueueFake's records, assertions, runs and virtual clock, and the pytest
plugin's fixtures in a sample project run by pytester."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import make_manager
from jobs import RUN_LOG, Boom, Echo

from khadem_nb import JobFailedError, JobStatus, QueueJob, QueueManager, SerializationError
from khadem_nb.notebook import Queue
from khadem_nb.testing import QueueFake

pytest_plugins = ["pytester"]


class SendEmail(QueueJob):
    def __init__(self, to: str, subject: str = "hello") -> None:
        self.to = to
        self.subject = subject

    async def handle(self) -> str:
        RUN_LOG.append(("email", self.to))
        return f"sent to {self.to}"


class Backoff(QueueJob):
    """Fails on its first attempt and is retried 30 s later."""

    max_attempts: ClassVar[int] = 2
    retry_delay: ClassVar[float] = 30.0

    async def handle(self) -> int:
        RUN_LOG.append(("backoff", self.attempt))
        if self.attempt == 1:
            raise ConnectionError("try again later")
        return self.attempt


CHAIN: dict[str, QueueManager] = {}  # the manager Step dispatches its next step to


class Step(QueueJob):
    """Step n dispatches step n + 1 until ``last``."""

    def __init__(self, n: int, last: int) -> None:
        self.n = n
        self.last = last

    async def handle(self) -> int:
        RUN_LOG.append(("step", self.n))
        if self.n < self.last:
            await CHAIN["manager"].dispatch(Step(self.n + 1, self.last))
        return self.n


@pytest.fixture
async def memory(tmp_path: Path) -> Any:
    manager = await make_manager("memory", tmp_path)
    yield manager
    await manager.close()


async def test_dispatches_are_recorded_not_stored(memory: QueueManager) -> None:
    with QueueFake(memory) as fake:
        job_id = await memory.dispatch(SendEmail("ada@example.org"), queue="mail", delay=5)
        await memory.dispatch(Echo(1))
        [email] = fake.dispatched(SendEmail)
        assert (email.id, email.queue, email.delay_s) == (job_id, "mail", 5.0)
        assert isinstance(email.job, SendEmail) and email.job.to == "ada@example.org"
        assert email.params == {"to": "ada@example.org", "subject": "hello"}
        assert [d.name for d in fake.jobs] == ["SendEmail", "Echo"]
        assert (await memory.get_job(job_id)).status is JobStatus.SCHEDULED
    assert not isinstance(memory.driver, type(fake.driver))  # the real driver is back
    assert await memory.driver.get(job_id) is None  # nothing reached it
    assert RUN_LOG == []


async def test_assert_dispatched_passes_and_fails_with_a_listing(memory: QueueManager) -> None:
    with QueueFake(memory) as fake:
        await memory.dispatch(SendEmail("ada@example.org"), queue="mail")
        await memory.dispatch(SendEmail("bob@example.org"), delay=timedelta(minutes=1))
        fake.assert_dispatched(SendEmail)
        fake.assert_dispatched(SendEmail, times=2)
        fake.assert_dispatched(SendEmail, times=1, where=lambda job: job.to.startswith("ada"))
        fake.assert_dispatched(SendEmail, queue="mail", times=1)
        fake.assert_dispatched(SendEmail, delay=60, times=1)
        fake.assert_not_dispatched(Echo)
        fake.assert_not_dispatched(SendEmail, where=lambda job: job.to == "eve@example.org")
        with pytest.raises(AssertionError) as failed:
            fake.assert_dispatched(SendEmail, times=3)
        message = str(failed.value)
        assert "expected SendEmail dispatched 3 times, found 2 times" in message
        assert "Dispatched (2):" in message
        assert "SendEmail(to='ada@example.org', subject='hello') queue='mail'" in message
        assert "SendEmail(to='bob@example.org', subject='hello') queue='default' delay=60s" in message
        with pytest.raises(AssertionError, match=r"expected Echo dispatched at least once, found 0 times"):
            fake.assert_dispatched(Echo)
        with pytest.raises(AssertionError, match=r"\(queue='other'\), found 0 times"):
            fake.assert_dispatched(SendEmail, queue="other")
        with pytest.raises(AssertionError, match=r"expected SendEmail not dispatched .*found once"):
            fake.assert_not_dispatched(SendEmail, where=lambda job: job.to == "bob@example.org")
        with pytest.raises(AssertionError, match=r"expected nothing dispatched\. Dispatched \(2\)"):
            fake.assert_nothing_dispatched()


async def test_assert_nothing_dispatched_on_a_quiet_fake(memory: QueueManager) -> None:
    with QueueFake(memory) as fake:
        fake.assert_nothing_dispatched()
        with pytest.raises(AssertionError, match="Nothing was dispatched"):
            fake.assert_dispatched(SendEmail)


async def test_bad_use_of_the_kit_is_refused_clearly(memory: QueueManager) -> None:
    with QueueFake(memory) as fake:
        for target in ("SendEmail", SendEmail("x"), object, None):
            with pytest.raises(TypeError, match="takes a QueueJob subclass or a job function"):
                fake.assert_dispatched(target)
        with pytest.raises(ValueError, match="times must be a non-negative int"):
            fake.assert_dispatched(SendEmail, times=-1)
        with pytest.raises(ValueError, match="non-negative duration"):
            fake.advance(-1)
        with pytest.raises(ValueError, match="non-negative duration"):
            fake.advance(timedelta(seconds=-5))
        with pytest.raises(ValueError, match="faked already"):
            QueueFake(memory).__enter__()
    with pytest.raises(TypeError, match="QueueFake takes a QueueManager"):
        QueueFake("memory://")  # type: ignore[arg-type]


async def test_arguments_that_cannot_travel_fail_at_dispatch(memory: QueueManager) -> None:
    with QueueFake(memory) as fake:
        with pytest.raises(SerializationError, match="function"):
            await memory.dispatch(Echo({"callback": print}))
        fake.assert_nothing_dispatched()


async def test_run_all_goes_through_middleware_callbacks_retries_and_the_monitor(
        memory: QueueManager) -> None:
    seen: list[Any] = []

    async def around(job: QueueJob, call_next: Any) -> Any:
        seen.append(("before", job.job_name()))
        result = await call_next()
        seen.append(("after", job.job_name()))
        return result

    memory.use(around)
    memory.hooks.on_job_error = lambda job, error, tb: seen.append(("error", error.__class__.__name__))
    with QueueFake(memory) as fake:
        await memory.dispatch(SendEmail("ada@example.org"))
        await memory.dispatch(Boom("always"))  # 3 attempts, backed off by less than 1 s
        with pytest.raises(JobFailedError, match="always"):
            for _ in range(3):
                await fake.run_all()
                fake.advance(1)
        assert ("before", "SendEmail") in seen and ("after", "SendEmail") in seen
        assert seen.count(("error", "RuntimeError")) == 3
        boom = fake.dispatched(Boom)[0]
        record = await memory.get_job(boom.id)
        assert (record.status, record.attempt) == (JobStatus.FAILED, 3)
        metrics = memory.get_metrics()
        assert (metrics["total_completed"], metrics["total_failed"], metrics["total_retried"]) == (1, 1, 2)


async def test_advance_brings_a_retry_and_a_delayed_job_due_in_order(memory: QueueManager) -> None:
    with QueueFake(memory) as fake:
        started = fake.now
        await memory.dispatch(Echo("in a minute"), delay=60)
        job_id = await memory.dispatch(Backoff())
        assert [r.id for r in await fake.run_all()] == [job_id]
        assert (await memory.get_job(job_id)).status is JobStatus.SCHEDULED
        assert await fake.run_all() == []  # nothing due: the retry waits 30 s of queue time
        fake.advance(30)
        assert (await memory.get_job(job_id)).status is JobStatus.QUEUED
        await fake.run_all()
        assert RUN_LOG == [("backoff", 1), ("backoff", 2)]
        fake.advance(timedelta(seconds=30))
        await fake.run_all()
        assert RUN_LOG[-1] == "in a minute"
        assert (fake.now - started).total_seconds() == 60


async def test_jobs_a_job_dispatches_are_recorded_and_can_be_stepped(memory: QueueManager) -> None:
    CHAIN["manager"] = memory
    with QueueFake(memory) as fake:
        await memory.dispatch(Step(1, 3))
        first = await fake.run_next()
        assert first is not None and first.result == 1
        fake.assert_dispatched(Step, times=2)
        fake.assert_dispatched(Step, times=1, where=lambda job: job.n == 2)
        ran = await fake.run_all()
        assert [r.result for r in ran] == [2, 3]
        assert await fake.run_next() is None
        assert [entry for entry in RUN_LOG if entry[0] == "step"] == [("step", 1), ("step", 2), ("step", 3)]


async def test_a_cancelled_recorded_job_never_runs(memory: QueueManager) -> None:
    with QueueFake(memory) as fake:
        keep = await memory.dispatch(SendEmail("ada@example.org"))
        drop = await memory.dispatch(SendEmail("bob@example.org"), delay=60)
        assert await memory.cancel(drop) == [drop]
        fake.advance(60)
        assert [r.id for r in await fake.run_all()] == [keep]
        assert (await memory.get_job(drop)).status is JobStatus.CANCELLED
        fake.assert_dispatched(SendEmail, times=2)  # a cancelled dispatch was still dispatched


async def test_run_all_with_raise_errors_off_returns_the_failure(memory: QueueManager) -> None:
    with QueueFake(memory) as fake:
        await memory.dispatch(Boom("once"), max_attempts=1)
        [record] = await fake.run_all(raise_errors=False)
        assert record.status is JobStatus.FAILED and "once" in (record.error or "")


async def test_only_fakes_the_named_jobs_and_lets_the_rest_through(tmp_path: Path) -> None:
    manager = await make_manager("sqlite", tmp_path)
    try:
        with QueueFake(manager, only=[SendEmail]) as fake:
            faked = await manager.dispatch(SendEmail("ada@example.org"))
            passed = await manager.dispatch(Echo("real"))
            assert [d.name for d in fake.jobs] == ["SendEmail"]
            assert (await manager.get_job(passed)).status is JobStatus.QUEUED  # read from SQLite
        assert await manager.driver.get(faked) is None
        assert (await manager.driver.get(passed)) is not None
    finally:
        await manager.close()


def test_a_notebook_queue_and_its_job_functions() -> None:
    q = Queue()
    try:
        @q.job(max_attempts=1)
        def train(lr: float, epochs: int = 3) -> float:
            return lr * epochs

        with QueueFake(q) as fake:
            handles = [train.dispatch(lr) for lr in (0.1, 0.01)]
            fake.assert_dispatched(train, times=2)
            fake.assert_dispatched(train, times=1, where=lambda params: params["lr"] == 0.01)
            with pytest.raises(AssertionError, match=re.escape("train(lr=0.1, epochs=3)")):
                fake.assert_not_dispatched(train)
            q.run(fake.run_all())
            assert [h.result(timeout=5) for h in handles] == pytest.approx([0.3, 0.03])
    finally:
        q.close()


SAMPLE_TESTS = '''
import pytest
from khadem_nb import QueueJob, JobStatus


class Greet(QueueJob):
    def __init__(self, name):
        self.name = name

    async def handle(self):
        return "hello " + self.name


async def test_fake_records(khadem_fake, khadem_queue):
    await khadem_queue.dispatch(Greet("ada"))
    khadem_fake.assert_dispatched(Greet, where=lambda job: job.name == "ada")
    [record] = await khadem_fake.run_all()
    assert record.result == "hello ada"


async def test_default_queue_is_memory(khadem_queue):
    assert khadem_queue.settings.driver == "memory"


@pytest.mark.khadem_driver("sqlite")
async def test_marker_picks_sqlite(khadem_queue, tmp_path):
    assert khadem_queue.settings.driver == "sqlite"
    job_id = await khadem_queue.dispatch(Greet("bob"))
    assert (await khadem_queue.get_job(job_id)).status is JobStatus.QUEUED


@pytest.mark.parametrize("khadem_queue", ["memory", "sqlite"], indirect=True)
async def test_indirect_parameter(khadem_queue):
    await khadem_queue.dispatch(Greet("eve"))
    assert (await khadem_queue.counts())["queued"] == 1
'''


def test_the_plugin_fixtures_in_a_sample_project(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_sample=SAMPLE_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_the_plugin_runs_a_suite_on_redis_when_asked(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import need_redis

    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_sample='''
async def test_on_redis(khadem_queue):
    assert khadem_queue.settings.driver == "redis"
''')
    url = need_redis()
    monkeypatch.setenv("KHADEM_REDIS_URL", url)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--khadem-driver", "redis")
    result.assert_outcomes(passed=1)
    monkeypatch.delenv("KHADEM_REDIS_URL")
    refused = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--khadem-driver", "redis")
    assert "needs KHADEM_REDIS_URL" in refused.stderr.str()
