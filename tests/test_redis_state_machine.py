"""A hypothesis state machine: the Redis driver's claims, leases, fences and hand-offs against a
model, with jobs in lanes (concurrency 1 and 2, and ``unique="running"``) and unique locks. One
driver plays a worker that may register as waiting (a claim that came back empty), pop a
hand-off row (what its blocking wait does), or leave the line (pause or stop)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from conftest import need_redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule
from jobs import Echo, LaneOne, LaneTwo

from khadem_nb import JobRecord, JobStatus, QueueManager
from khadem_nb.drivers.redis.driver import _Claim
from khadem_nb.drivers.redis.keys import KEY_NAMES

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
    expired: int = 0  # when its lease ran out (the order of expire calls); 0: it has not
    lane: str | None = None  # its lane, whose jobs are claimed first while it has room
    limit: int = 0  # how many jobs of its lane may be held at once


@dataclass
class Model:
    jobs: dict[str, ModelJob] = field(default_factory=dict)
    order: int = 0
    waiting: bool = False  # the worker is registered for hand-off
    handoff: list[tuple[str, str]] = field(default_factory=list)  # rows: (job id, token)
    locks: dict[str, str] = field(default_factory=dict)  # unique key -> the job that took it

    def plain_ready(self) -> list[str]:
        return [i for i, j in self.jobs.items() if j.status is JobStatus.QUEUED and j.lane is None]

    def held_in(self, lane: str) -> int:
        return sum(1 for j in self.jobs.values() if j.lane == lane and j.status is JobStatus.ACTIVE)

    def next_ready(self) -> str | None:
        """Lanes first: the best head among lanes with room; then the jobs without limits."""
        lanes = [(-j.priority, j.order, i) for i, j in self.jobs.items() if j.status is JobStatus.QUEUED
                 and j.lane is not None and self.held_in(j.lane) < j.limit]
        if lanes:
            return min(lanes)[2]
        ready = [(-self.jobs[i].priority, self.jobs[i].order, i) for i in self.plain_ready()]
        return min(ready)[2] if ready else None

    def row_is_whole(self, job_id: str, token: str) -> bool:
        job = self.jobs[job_id]
        return job.status is JobStatus.ACTIVE and job.token == token

    def claim(self) -> tuple[str, bool] | None:
        """What a reserve of one job returns: (id, from a hand-off row) or None. It looks at
        one row at most (LPOP of `limit`), dropping it if the sweep reclaimed its job."""
        if self.handoff:
            job_id, token = self.handoff.pop(0)
            if self.row_is_whole(job_id, token):
                return job_id, True
        ready = self.next_ready()
        return None if ready is None else (ready, False)

    def requeue(self, job: ModelJob) -> None:
        """Queued again: at the back of its priority."""
        self.order += 1
        job.status, job.order = JobStatus.QUEUED, self.order

    def sweep(self) -> None:
        # Redis takes expired leases in score order: the order of the expire calls
        for job in sorted(self.jobs.values(), key=lambda j: j.expired):
            if job.status is JobStatus.ACTIVE and job.expired:
                job.token, job.expired = None, 0
                job.reclaims += 1
                if job.reclaims > MAX_RECLAIMS:
                    job.status = JobStatus.FAILED
                else:
                    self.requeue(job)


class RedisQueueMachine(RuleBasedStateMachine):
    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        url = need_redis()  # skips before a loop exists when no Redis answers
        self.loop = asyncio.new_event_loop()
        config = {"queue": {"url": url, "prefix": "khadem-test-state", "lease": 30,
                            "max_reclaims": MAX_RECLAIMS}}
        self.manager = self.run(QueueManager(config).init())
        self.run(self.manager.driver.purge())
        self.model = Model()
        self.expiries = 0

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.manager.driver.purge())
        self.run(self.manager.close())
        self.loop.close()

    def key(self, name: str) -> str:
        return self.manager.driver.keys("default")[KEY_NAMES.index(name)]  # type: ignore[attr-defined]

    @rule(priority=st.integers(-2, 2))
    def dispatch(self, priority: int) -> None:
        job_id = self.run(self.manager.dispatch(Echo(priority), priority=priority))
        self.model.order += 1
        job = self.model.jobs[job_id] = ModelJob(priority, self.model.order)
        if self.model.waiting and self.model.plain_ready() == [job_id]:  # nothing else was ready
            token = self.run(self.manager.driver.client.hget(self.key("token"), job_id))  # type: ignore[attr-defined]
            assert token is not None, "a waiting worker and nothing ready: the job is handed off"
            job.status, job.attempt, job.token = JobStatus.ACTIVE, 1, token.decode()
            self.model.handoff.append((job_id, job.token))
            self.model.waiting = False

    @rule(priority=st.integers(-1, 1), two=st.booleans())
    def dispatch_limited(self, priority: int, two: bool) -> None:
        """A job of a lane: never handed off, claimed only while its lane has room."""
        job = LaneTwo(priority) if two else LaneOne(priority)
        job_id = self.run(self.manager.dispatch(job, priority=priority))
        self.model.order += 1
        self.model.jobs[job_id] = ModelJob(priority, self.model.order, lane=type(job).__name__,
                                           limit=2 if two else 1)

    @rule(key=st.sampled_from(["k1", "k2"]), running=st.booleans())
    def dispatch_unique(self, key: str, running: bool) -> None:
        """``unique="running"``: always stored, one of its key held at a time; ``unique=True``:
        stored only while no live job holds the key (else the holder's id)."""
        mode: bool | str = "running" if running else True
        job_id = self.run(self.manager.dispatch(Echo(key), unique=mode, unique_key=key))
        if not running:
            holder = self.model.locks.get(key)
            if holder is not None and self.model.jobs[holder].status in (JobStatus.QUEUED, JobStatus.ACTIVE):
                assert job_id == holder
                return
            self.model.locks[key] = job_id
        self.model.order += 1
        job = self.model.jobs[job_id] = ModelJob(0, self.model.order)
        if running:
            job.lane, job.limit = f"unique\t{key}", 1
        elif self.model.waiting and self.model.plain_ready() == [job_id]:
            token = self.run(self.manager.driver.client.hget(self.key("token"), job_id))  # type: ignore[attr-defined]
            job.status, job.attempt, job.token = JobStatus.ACTIVE, 1, token.decode()
            self.model.handoff.append((job_id, job.token))
            self.model.waiting = False

    def _claimed(self, claimed: list[JobRecord]) -> JobRecord | None:
        expected = self.model.claim()
        if expected is None:
            assert claimed == []
            return None
        job_id, handed = expected
        assert [r.id for r in claimed] == [job_id]
        job = self.model.jobs[job_id]
        if handed:
            assert claimed[0].token == job.token  # the hand-off claim stands, lease renewed
            job.expired = 0
        else:
            job.status, job.attempt, job.token = JobStatus.ACTIVE, job.attempt + 1, claimed[0].token
        assert claimed[0].attempt == job.attempt
        return claimed[0]

    @rule(target=held)
    def reserve(self) -> JobRecord | None:
        """A claim that will not wait: it also leaves the hand-off line."""
        self.model.sweep()
        record = self._claimed(self.run(self.manager.driver.reserve(["default"], 1, 0)))
        self.model.waiting = False
        return record

    @rule(target=held)
    def claim_then_wait(self) -> JobRecord | None:
        """A claim about to wait: if it gets nothing, the worker registers for hand-off."""
        self.model.sweep()
        driver = self.manager.driver
        claim = _Claim("", "")
        record = self._claimed(self.run(driver._claim(["default"], 1, 1.0, claim)))  # type: ignore[attr-defined]
        self.model.waiting = record is None
        if record is None:  # keep the registration alive however long the example runs
            self.run(driver.client.zadd(self.key("waiting"), {driver._waiter: 2**50}, xx=True))  # type: ignore[attr-defined]
        return record

    @rule(target=held)
    def blocked_wait(self) -> JobRecord | None:
        """What the worker's blocking wait gets: the first hand-off row, as it is."""
        driver = self.manager.driver
        popped = self.run(driver._wait_for_work(["default"], 0.01, _Claim("", "")))  # type: ignore[attr-defined]
        if not self.model.handoff:
            assert popped == []
            return None
        job_id, token = self.model.handoff.pop(0)
        assert [(r.id, r.token, r.attempt) for r in popped] == [(job_id, token, 1)]
        return popped[0]  # may be stale (its job reclaimed): its settle is then refused

    @rule()
    def leave(self) -> None:
        """The worker pauses or stops: rows nobody will pop go back to the ready set."""
        driver = self.manager.driver
        back = self.run(driver._run("leave", "default", [driver._waiter]))  # type: ignore[attr-defined]
        whole = [(i, t) for i, t in self.model.handoff if self.model.row_is_whole(i, t)]
        assert back == len(whole)
        for job_id, _ in whole:
            job = self.model.jobs[job_id]
            job.attempt, job.token, job.expired = job.attempt - 1, None, 0
            self.model.requeue(job)
        self.model.handoff.clear()
        self.model.waiting = False

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
            job.expired = 0

    @rule(record=held, succeed=st.booleans())
    def settle(self, record: JobRecord | None, succeed: bool) -> None:
        if record is None:
            return
        job = self.model.jobs[record.id]
        current = job.status is JobStatus.ACTIVE and job.token == record.token
        copy = record.copy()
        driver = self.manager.driver
        done = self.run(driver.complete(copy, "ok") if succeed else driver.fail(copy, "no", None))
        stopped = job.status is JobStatus.CANCELLED and job.token == record.token  # cancelled while held
        assert done == (current or stopped)
        if current:
            job.status = JobStatus.COMPLETED if succeed else JobStatus.FAILED
        if current or stopped:
            job.token = None
            assert copy.status is job.status

    @precondition(lambda self: bool(self.model.jobs))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """Cancel one job: a pending one (or one handed off and not popped) never starts; a
        running one is cancelled and keeps its token until its holder settles."""
        job_id = data.draw(st.sampled_from(sorted(self.model.jobs, key=lambda i: self.model.jobs[i].order)))
        job = self.model.jobs[job_id]
        cancelled = self.run(self.manager.cancel(job_id))
        if job.status not in (JobStatus.QUEUED, JobStatus.ACTIVE):
            assert cancelled == []
            return
        assert cancelled == [job_id]
        row = (job_id, job.token)
        if job.status is JobStatus.ACTIVE and row in self.model.handoff:  # taken back unpopped
            self.model.handoff.remove(row)
            job.token, job.attempt = None, job.attempt - 1
        job.status, job.expired = JobStatus.CANCELLED, 0

    @precondition(lambda self: any(j.status is JobStatus.ACTIVE for j in self.model.jobs.values()))
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        """Time passes for one held job: its lease runs out (score moved into the past)."""
        # in dispatch order: job ids are random, an order by id would differ between replays
        active = sorted((i for i, j in self.model.jobs.items() if j.status is JobStatus.ACTIVE),
                        key=lambda i: self.model.jobs[i].order)
        job_id = data.draw(st.sampled_from(active))
        client = self.manager.driver.client  # type: ignore[attr-defined]
        self.expiries += 1  # a score in the past, distinct per call: a deterministic sweep order
        self.run(client.zadd(self.key("active"), {job_id: self.expiries}, xx=True))
        self.run(client.delete(self.key("sweep")))
        self.model.jobs[job_id].expired = self.expiries

    @invariant()
    def lanes_hold_what_their_jobs_hold(self) -> None:
        held = self.run(self.manager.driver.client.hgetall(self.key("lane_held")))  # type: ignore[attr-defined]
        lanes = {j.lane for j in self.model.jobs.values() if j.lane is not None}
        model = {lane: n for lane in lanes if (n := self.model.held_in(lane))}
        assert {k.decode(): int(v) for k, v in held.items()} == model

    @invariant()
    def counts_match(self) -> None:
        counts = self.run(self.manager.counts())
        model = dict.fromkeys((s.value for s in JobStatus), 0)
        for job in self.model.jobs.values():
            model[job.status.value] += 1
        assert counts == model


TestRedisQueueMachine = RedisQueueMachine.TestCase
TestRedisQueueMachine.settings = settings(max_examples=100, stateful_step_count=30, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
