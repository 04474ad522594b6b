"""A hypothesis state machine: the Redis driver's claims, leases and fences against a model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from conftest import need_redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule
from jobs import Echo

from khadem_nb import JobRecord, JobStatus, QueueManager
from khadem_nb.drivers.redis import KEY_NAMES

pytestmark = pytest.mark.redis
MAX_RECLAIMS = 1


@dataclass
class ModelJob:
    priority: int
    order: int
    status: JobStatus = JobStatus.QUEUED
    attempt: int = 0
    reclaims: int = 0
    token: str | None = None
    expired: bool = False


@dataclass
class Model:
    jobs: dict[str, ModelJob] = field(default_factory=dict)
    order: int = 0

    def next_claim(self) -> str | None:
        ready = [(-j.priority, j.order, i) for i, j in self.jobs.items() if j.status is JobStatus.QUEUED]
        return min(ready)[2] if ready else None

    def sweep(self) -> None:
        for job in self.jobs.values():
            if job.status is JobStatus.ACTIVE and job.expired:
                job.token, job.expired = None, False
                job.reclaims += 1
                job.status = JobStatus.FAILED if job.reclaims > MAX_RECLAIMS else JobStatus.QUEUED


class RedisQueueMachine(RuleBasedStateMachine):
    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        config = {"queue": {"url": need_redis(), "prefix": "khadem-test-state", "lease": 30,
                            "max_reclaims": MAX_RECLAIMS}}
        self.manager = self.run(QueueManager(config).init())
        self.run(self.manager.driver.purge())
        self.model = Model()

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.manager.driver.purge())
        self.run(self.manager.close())
        self.loop.close()

    @rule(priority=st.integers(-2, 2))
    def dispatch(self, priority: int) -> None:
        job_id = self.run(self.manager.dispatch(Echo(priority), priority=priority))
        self.model.order += 1
        self.model.jobs[job_id] = ModelJob(priority, self.model.order)

    @rule(target=held)
    def reserve(self) -> JobRecord | None:
        self.model.sweep()
        expected = self.model.next_claim()
        claimed = self.run(self.manager.driver.reserve(["default"], 1, 0))
        if expected is None:
            assert claimed == []
            return None
        assert [r.id for r in claimed] == [expected]
        job = self.model.jobs[expected]
        job.status, job.attempt, job.token = JobStatus.ACTIVE, job.attempt + 1, claimed[0].token
        assert claimed[0].attempt == job.attempt
        return claimed[0]

    @rule(record=held)
    def heartbeat(self, record: JobRecord | None) -> None:
        if record is None:
            return
        job = self.model.jobs[record.id]
        # a lease that ran out but was not reclaimed yet is still the holder's: a beat renews it
        current = job.status is JobStatus.ACTIVE and job.token == record.token
        alive = self.run(self.manager.driver.heartbeat([record]))
        assert alive == [current]
        if current:
            job.expired = False

    @rule(record=held, succeed=st.booleans())
    def settle(self, record: JobRecord | None, succeed: bool) -> None:
        if record is None:
            return
        job = self.model.jobs[record.id]
        current = job.status is JobStatus.ACTIVE and job.token == record.token
        copy = record.copy()
        driver = self.manager.driver
        done = self.run(driver.complete(copy, "ok") if succeed else driver.fail(copy, "no", None))
        assert done == current
        if current:
            job.status = JobStatus.COMPLETED if succeed else JobStatus.FAILED
            job.token = None

    @precondition(lambda self: any(j.status is JobStatus.ACTIVE for j in self.model.jobs.values()))
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        """Time passes for one held job: its lease runs out (score moved into the past)."""
        # in dispatch order: job ids are random, an order by id would differ between replays
        active = sorted((i for i, j in self.model.jobs.items() if j.status is JobStatus.ACTIVE),
                        key=lambda i: self.model.jobs[i].order)
        job_id = data.draw(st.sampled_from(active))
        keys = self.manager.driver.keys("default")  # type: ignore[attr-defined]
        client = self.manager.driver.client  # type: ignore[attr-defined]
        self.run(client.zadd(keys[KEY_NAMES.index("active")], {job_id: 0}, xx=True))
        self.run(client.delete(keys[KEY_NAMES.index("sweep")]))
        self.model.jobs[job_id].expired = True

    @invariant()
    def counts_match(self) -> None:
        counts = self.run(self.manager.counts())
        model = dict.fromkeys((s.value for s in JobStatus), 0)
        for job in self.model.jobs.values():
            model[job.status.value] += 1
        assert counts == model


TestRedisQueueMachine = RedisQueueMachine.TestCase
TestRedisQueueMachine.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
