"""Fair turns between the keys of a job kind, and lane rules that follow the code: on every
queued driver, through the driver's claim and through a worker, and from a notebook cell run
again with a new limit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

import khadem_nb as kn
from khadem_nb import ConfigError, JobStatus, QueueJob, QueueManager
from khadem_nb.features.flow import LaneRule, kind_rule

B_SHARE = 10  # jobs of the small key
A_SHARE = 10_000  # jobs of the big key, dispatched first
FIRST_CLAIMS = 40  # the bound: every job of the small key starts within these


class FairTenant(QueueJob):
    """A tenant's job, claimed in turns with the other tenants' jobs; records its start order."""

    fair = True
    started: ClassVar[list[str]] = []

    def __init__(self, tenant: str, n: int = 0) -> None:
        self.tenant = tenant
        self.n = n

    def limit_key(self) -> str:
        return self.tenant

    async def handle(self) -> None:
        FairTenant.started.append(self.tenant)


class Throttled(QueueJob):
    """One at a time, until the rule stored for the kind says otherwise."""

    concurrency = 1

    def __init__(self, n: int) -> None:
        self.n = n

    async def handle(self) -> int:
        return self.n


@pytest.fixture
def queue(queued_manager: QueueManager) -> QueueManager:
    return queued_manager


async def claim(queue: QueueManager, n: int) -> list[Any]:
    return await queue.driver.reserve(["default"], n, 0)


async def settle(queue: QueueManager, records: list[Any]) -> None:
    for record in records:
        assert await queue.driver.complete(record, None)


def tenant_of(record: Any) -> str:
    return str(record.lane).partition("\t")[2]


async def test_a_small_key_starts_within_the_first_claims_behind_a_big_one(queue: QueueManager) -> None:
    await queue.dispatch_many([FairTenant("a", i) for i in range(A_SHARE)])
    await queue.dispatch_many([FairTenant("b", i) for i in range(B_SHARE)])
    order: list[str] = []
    while order.count("b") < B_SHARE and len(order) < FIRST_CLAIMS:
        records = await claim(queue, 1)
        order += [tenant_of(r) for r in records]
        await settle(queue, records)
    assert order.count("b") == B_SHARE, order
    assert order[:2 * B_SHARE] == ["a", "b"] * B_SHARE  # one of each per turn
    [next_a] = await claim(queue, 1)  # with the small key done, the big one goes on alone
    assert tenant_of(next_a) == "a"


async def test_a_claim_of_many_takes_one_job_of_each_key_per_turn(queue: QueueManager) -> None:
    await queue.dispatch_many([FairTenant("a", i) for i in range(30)])
    await queue.dispatch_many([FairTenant(t) for t in ("b", "b", "c")])
    first = [tenant_of(r) for r in await claim(queue, 7)]
    assert sorted(first) == ["a", "a", "a", "a", "b", "b", "c"]  # a b c, a b, then a alone
    second = [tenant_of(r) for r in await claim(queue, 5)]
    assert second == ["a"] * 5


async def test_a_worker_starts_the_small_keys_jobs_early(queue: QueueManager) -> None:
    FairTenant.started = []
    await queue.dispatch_many([FairTenant("a", i) for i in range(A_SHARE)])
    await queue.dispatch_many([FairTenant("b", i) for i in range(B_SHARE)])
    worker = await queue.start_worker(concurrency=1, run_in_background=True)
    try:
        async with asyncio.timeout(60):
            while FairTenant.started.count("b") < B_SHARE:
                await asyncio.sleep(0.01)
    finally:
        await worker.stop()
    positions = [i for i, tenant in enumerate(FairTenant.started) if tenant == "b"]
    assert positions[-1] < FIRST_CLAIMS, positions


async def test_queued_jobs_follow_the_rule_stored_for_their_kind(queue: QueueManager) -> None:
    ids = [await queue.dispatch(Throttled(i)) for i in range(6)]
    held = await claim(queue, 10)
    assert len(held) == 1  # the rule the records carry: one at a time
    await queue.driver.set_lane_rule("default", "Throttled", LaneRule(concurrency=3).text())
    assert await queue.driver.lane_rules("default") == {"Throttled": '{"c":3}'}
    held += await claim(queue, 10)
    assert len(held) == 3 and await claim(queue, 10) == []
    reasons = await queue.why_waiting(await queue.jobs(JobStatus.QUEUED))
    assert sorted(reasons.values()) == ["limit Throttled 3/3"] * 3
    await queue.driver.set_lane_rule("default", "Throttled", LaneRule().text())  # no limit now
    held += await claim(queue, 10)
    assert sorted(r.id for r in held) == sorted(ids)


async def test_a_damaged_stored_rule_leaves_the_records_own(queue: QueueManager) -> None:
    [await queue.dispatch(Throttled(i)) for i in range(3)]
    await queue.driver.set_lane_rule("default", "Throttled", '{"c": "many"')
    assert len(await claim(queue, 10)) == 1
    for damaged in ('{"c": "many"}', '{"r": "3/s"}', '{"r": [3]}', "[1]"):
        await queue.driver.set_lane_rule("default", "Throttled", damaged)
        assert await claim(queue, 10) == []


async def test_a_dispatch_stores_its_kinds_rule_once_and_again_when_it_changes(queue: QueueManager) -> None:
    await queue.dispatch(Throttled(0))
    await queue.dispatch(Throttled(1))
    assert await queue.driver.lane_rules("default") == {"Throttled": '{"c":1}'}
    await queue.dispatch(FairTenant("a"))
    assert (await queue.driver.lane_rules("default"))["FairTenant"] == '{"f":1}'
    await queue.driver.set_lane_rule("default", "Throttled", '{"c":5}')  # another process's
    await queue.dispatch(Throttled(2))  # this process wrote its rule already: it leaves it
    assert (await queue.driver.lane_rules("default"))["Throttled"] == '{"c":5}'
    assert not await queue.follow_kind_rule("default", "Throttled", '{"c":1}')  # unchanged here
    assert await queue.follow_kind_rule("default", "Throttled", '{"c":2}')  # defined again
    assert (await queue.driver.lane_rules("default"))["Throttled"] == '{"c":2}'


def test_a_cell_run_again_with_a_new_concurrency_applies_to_queued_points(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        @q.job(concurrency=1)
        def step(i: int) -> float:
            time.sleep(0.4)
            return time.time()

        group = step.sweep(i=list(range(9)))
        q.start(concurrency=8)
        time.sleep(0.2)  # the first point runs, eight wait for the one slot

        @q.job(concurrency=4)  # the cell run again: the queued points follow the new limit
        def step(i: int) -> float:
            time.sleep(0.4)
            return time.time()

        group.wait(timeout=30)
        records = [q.run(q.manager.get_job(h.id)) for h in group]
        spans = [(r.started_ms, r.finished_ms) for r in records]
        most = max(sum(1 for s, f in spans if s <= t < f) for t, _ in spans)
        assert most == 4
    finally:
        q.close()


def test_fair_needs_a_limit_key_and_a_bool(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        with pytest.raises(ConfigError, match="fair=True takes turns between the keys of limit_key"):
            q.job(fair=True)(lambda i: i)
        with pytest.raises(ConfigError, match="fair must be True or False, got 'yes'"):
            q.job(fair="yes", limit_key=lambda p: "k")(lambda i: i)
    finally:
        q.close()
    with pytest.raises(ConfigError, match=r"Unfair\.fair must be True or False, got 1"):
        type("Unfair", (QueueJob,), {"fair": 1, "handle": lambda self: None})
    assert kind_rule(FairTenant("a"), "FairTenant") == '{"f":1}'
