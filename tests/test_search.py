"""Finding jobs in a big queue (``features.search``) on every queued driver: each condition,
pages that reach every record once in a stable order, a bounded scan that says so, and the
dashboard's search with its refusals."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from khadem_nb import ConfigError, JobStatus, QueueJob, QueueManager
from khadem_nb.dashboard.app import allowed_hosts, create_app
from khadem_nb.features import search
from khadem_nb.features.search import JobQuery, parse_query


class Invoice(QueueJob):
    """A tenant's invoice; number 3 of each tenant fails."""

    def __init__(self, tenant: str, n: int) -> None:
        self.tenant = tenant
        self.n = n

    async def handle(self) -> int:
        if self.n == 3:
            raise ValueError(f"invoice {self.n} of {self.tenant} does not add up")
        return self.n


@pytest.fixture
async def queue(queued_manager: QueueManager) -> QueueManager:
    await queued_manager.dispatch_many([Invoice(t, n) for t in ("acme", "globex") for n in range(10)])
    await queued_manager.dispatch_many([Invoice("acme", n) for n in range(5)], queue="later")
    await queued_manager.start_worker(burst=True)
    return queued_manager


async def everything(queue: QueueManager, query: JobQuery) -> list[Any]:
    """Every record of ``query``, page after page."""
    found, page = [], await queue.driver.search(query)
    found += page.records
    while page.next is not None:
        page = await queue.driver.search(JobQuery(**{**query.__dict__, "before": page.next}))
        found += page.records
    return found


async def test_each_condition_finds_its_jobs(queue: QueueManager) -> None:
    async def ids(**conditions: Any) -> set[str]:
        return {r.id for r in await everything(queue, JobQuery(limit=7, **conditions))}

    records = await queue.jobs()
    by = {r.id: r for r in records}
    assert len(await ids()) == 25
    assert await ids(status=JobStatus.FAILED) == {i for i, r in by.items() if r.status is JobStatus.FAILED}
    assert len(await ids(status=JobStatus.FAILED)) == 2
    assert await ids(queue="later") == {i for i, r in by.items() if r.queue == "later"}
    assert len(await ids(name="VOIC")) == 25 and await ids(name="nothing") == set()  # part, any case
    assert await ids(error="DOES NOT ADD UP", args=(("tenant", "globex"),)) == {
        i for i, r in by.items() if r.error and "globex" in r.error}
    assert len(await ids(args=(("tenant", "acme"), ("n", 4)))) == 2  # one in each queue
    assert await ids(args=(("n", "4"),)) == set()  # the text "4" is not the number 4
    some = records[7].id
    assert some in await ids(text=some[:-3]) and len(await ids(text="INVOICE")) == 25  # the search box
    middle = sorted(r.created_ms for r in records)[10]
    assert await ids(since_ms=middle) == {i for i, r in by.items() if r.created_ms >= middle}
    assert await ids(until_ms=middle) == {i for i, r in by.items() if r.created_ms < middle}


async def test_pages_reach_every_record_once_newest_first(queue: QueueManager) -> None:
    pages, page = [], await queue.driver.search(JobQuery(limit=4))
    pages.append(page.records)
    while page.next is not None:
        page = await queue.driver.search(JobQuery(limit=4, before=page.next))
        pages.append(page.records)
    found = [r for records in pages for r in records]
    assert [len(records) for records in pages] == [4] * 6 + [1]
    assert sorted(r.id for r in found) == sorted(r.id for r in await queue.jobs())
    assert [r.created_ms for r in found] == sorted((r.created_ms for r in found), reverse=True)


async def test_a_scan_beyond_its_bound_says_how_far_it_looked(queue: QueueManager,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "SCAN_LIMIT", 10)
    page = await queue.driver.search(JobQuery(args=(("tenant", "nobody"),)))
    sql = type(queue.driver).__name__ in ("SqliteDriver", "PostgresDriver")
    # SQL reads every record (in batches, here all 25 in one); the others the newest 10 only
    assert page.records == [] and page.looked_through == (None if sql else 10)


def test_bad_search_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="since must be an ISO 8601 time"):
        parse_query({"since": "yesterday"}, [])
    with pytest.raises(ConfigError, match="until must name its time zone"):
        parse_query({"until": "2026-12-07T06:00:00"}, [])
    with pytest.raises(ConfigError, match="since must come before until"):
        parse_query({"since": "2000", "until": "1000"}, [])
    with pytest.raises(ConfigError, match="arg must be name=value"):
        parse_query({}, ["tenant"])
    with pytest.raises(ConfigError, match="limit must be a whole number from 1 to 500"):
        parse_query({"limit": "100000"}, [])
    with pytest.raises(ConfigError, match="status must be one of"):
        parse_query({"status": "done"}, [])
    query = parse_query({"since": "2026-12-07T06:00:00Z", "status": "failed"}, ["lr=0.1", "tenant=acme"])
    assert query.args == (("lr", 0.1), ("tenant", "acme")) and query.status is JobStatus.FAILED


async def test_the_dashboard_searches_by_every_condition_a_page_at_a_time(queue: QueueManager) -> None:
    app = create_app(queue, "s3cret-token-for-tests", hosts=allowed_hosts("127.0.0.1", 8642))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8642") as http:
        first = (await http.get("/api/jobs", params={"queue": "default", "limit": 15})).json()
        rest = (await http.get("/api/jobs", params={"queue": "default", "limit": 15,
                                                    "before": first["next"]})).json()
        failed = (await http.get("/api/jobs", params=[("status", "failed"), ("arg", "tenant=acme")])).json()
        since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600))
        none_yet = (await http.get("/api/jobs", params={"since": since})).json()
        bad = await http.get("/api/jobs", params={"until": "tomorrow"})
        cursor = await http.get("/api/jobs", params={"before": "not-a-cursor"})
    assert len(first["jobs"]) == 15 and len(rest["jobs"]) == 5 and rest["next"] is None
    assert not {j["id"] for j in first["jobs"]} & {j["id"] for j in rest["jobs"]}
    assert [(j["status"], j["error"].split(" of ")[1][:4]) for j in failed["jobs"]] == [("failed", "acme")]
    assert none_yet["jobs"] == []
    assert bad.status_code == 400 and "until must be an ISO 8601 time" in bad.json()["error"]
    sql = type(queue.driver).__name__ in ("SqliteDriver", "PostgresDriver")
    if sql:  # a cursor of SQL is a sequence number: other text is refused
        assert cursor.status_code == 400 and "before must be the 'next' cursor" in cursor.json()["error"]
    else:  # a scan's cursor is a job id: one it does not hold ends the listing
        assert cursor.status_code == 200 and cursor.json()["jobs"] == []
