"""The web dashboard and Prometheus metrics: the app over a real SQLite queue (through httpx's
ASGI transport), the ``khadem-nb dashboard`` and ``khadem-nb worker --metrics-port`` processes,
and their refusals."""

from __future__ import annotations

import asyncio
import io
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from jobs import Echo, Fail, MakeArrays
from procs import env as process_env
from procs import start_worker, wait_until
from prometheus_client.parser import text_string_to_metric_families
from redis_servers import spare_port

from khadem_nb import JobStatus, QueueManager
from khadem_nb.dashboard.app import allowed_hosts, create_app

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[QueueManager]:
    """A SQLite queue with 3 completed jobs, 2 failed ones and 1 queued, on two named queues."""
    manager = await QueueManager(f"sqlite:///{tmp_path / 'q.db'}").init()
    for i in range(3):
        await manager.dispatch(Echo(i))
    await manager.dispatch(Fail("one"), queue="mail")
    await manager.dispatch(Fail("two"))
    await manager.start_worker(burst=True, queues=["default", "mail"])
    await manager.dispatch(Echo("waiting"), queue="mail")
    yield manager
    await manager.close()


def client(manager: QueueManager, *, private: bool = False) -> httpx.AsyncClient:
    app = create_app(manager, TOKEN, private_reads=private, hosts=allowed_hosts("127.0.0.1", 8642))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8642")


async def test_the_overview_shows_counts_throughput_running_and_failures(queue: QueueManager) -> None:
    async with client(queue) as http:
        overview = (await http.get("/api/overview")).json()
    assert overview["counts"]["default"] == await queue.counts("default")
    assert overview["counts"]["mail"] == await queue.counts("mail")
    assert overview["totals"]["completed"] == 3 and overview["totals"]["failed"] == 2
    assert overview["totals"]["queued"] == 1
    throughput = overview["throughput"]
    assert (sum(throughput["completed"]), sum(throughput["failed"])) == (3, 2)
    assert len(throughput["completed"]) == 60 and throughput["bucket_s"] == 60
    failures = {f["error"]: f for f in overview["failures"]}
    assert set(failures) == {"RuntimeError: failed one", "RuntimeError: failed two"}
    assert "raise RuntimeError" in failures["RuntimeError: failed one"]["traceback"]
    assert overview["running"] == []


async def test_search_by_id_name_and_status(queue: QueueManager) -> None:
    failed = await queue.jobs("failed")
    async with client(queue) as http:
        by_name = (await http.get("/api/jobs", params={"q": "fail"})).json()["jobs"]
        by_id = (await http.get("/api/jobs", params={"q": failed[0].id})).json()["jobs"]
        by_prefix = (await http.get("/api/jobs", params={"q": failed[0].id[:-6]})).json()["jobs"]
        queued = (await http.get("/api/jobs", params={"status": "queued"})).json()["jobs"]
        bad = await http.get("/api/jobs", params={"status": "finished"})
    assert sorted(j["name"] for j in by_name) == ["Fail", "Fail"]
    assert [j["id"] for j in by_id] == [failed[0].id]
    assert failed[0].id in [j["id"] for j in by_prefix]
    assert [(j["name"], j["queue"]) for j in queued] == [("Echo", "mail")]
    assert bad.status_code == 400 and "status must be one of waiting, queued" in bad.json()["error"]


async def test_a_job_page_shows_the_job_and_an_unknown_id_is_a_404_page(queue: QueueManager) -> None:
    [failed] = [r for r in await queue.jobs("failed") if r.payload == {"tag": "one"}]
    [done, *_] = await queue.jobs("completed")
    async with client(queue) as http:
        page = await http.get(f"/jobs/{failed.id}")
        done_page = await http.get(f"/jobs/{done.id}")
        record = (await http.get(f"/api/jobs/{done.id}")).json()
        missing = await http.get("/jobs/no-such-job")
        missing_json = await http.get("/api/jobs/no-such-job")
        nowhere = await http.get("/api/nowhere")
    assert page.status_code == 200
    assert "RuntimeError: failed" in page.text and "Traceback" in page.text and ">Retry<" in page.text
    assert "<pre class='arguments'>{\n  &quot;tag&quot;: &quot;one&quot;\n}</pre>" in page.text
    assert f"<pre class='result'>{done.result}</pre>" in done_page.text and ">Retry<" not in done_page.text
    assert (record["status"], record["result"], record["attempt"]) == ("completed", done.result, 1)
    assert missing.status_code == 404 and "no job with id &#x27;no-such-job&#x27;" in missing.text
    assert "Traceback" not in missing.text
    assert missing_json.status_code == 404 and "no-such-job" in missing_json.json()["error"]
    assert nowhere.status_code == 404 and nowhere.json()["error"].startswith("no such address")


async def test_actions_need_the_token_and_this_dashboards_own_page(queue: QueueManager) -> None:
    [failed, other] = await queue.jobs("failed")
    retry = f"/api/jobs/{failed.id}/retry"
    async with client(queue) as http:
        refused = [await http.post(retry), await http.post(retry, headers={"X-Khadem-Token": "wrong"}),
                   await http.post(retry, headers={"X-Khadem-Token": TOKEN, "Origin": "http://evil.example"}),
                   await http.post(retry, headers={"X-Khadem-Token": TOKEN, "Sec-Fetch-Site": "cross-site"}),
                   await http.get(retry)]
        assert [r.status_code for r in refused] == [403, 403, 403, 403, 405]
        assert "X-Khadem-Token" in refused[0].json()["error"]
        assert (await queue.get_job(failed.id)).status is JobStatus.FAILED  # nothing was done
        allowed = await http.post(retry, headers={"X-Khadem-Token": TOKEN, "Origin": "http://127.0.0.1:8642"})
        assert allowed.status_code == 200 and allowed.json() == {"requeued": 1}
        assert (await queue.get_job(failed.id)).status is JobStatus.QUEUED
        unknown = await http.post("/api/jobs/nope/retry", headers={"X-Khadem-Token": TOKEN})
        assert unknown.status_code == 404
        cancel = await http.post(f"/api/jobs/{failed.id}/cancel", headers={"X-Khadem-Token": TOKEN})
        assert cancel.json() == {"cancelled": [failed.id]}
        assert (await queue.get_job(failed.id)).status is JobStatus.CANCELLED
        purge = await http.post("/api/failed/purge", headers={"X-Khadem-Token": TOKEN})
        assert purge.json() == {"deleted": 1}
        assert await queue.statuses([other.id]) == [None]
        again = await http.post("/api/failed/retry", headers={"X-Khadem-Token": TOKEN})
        assert again.json() == {"requeued": 0}


async def test_reads_need_the_token_when_other_machines_are_served(queue: QueueManager) -> None:
    async with client(queue, private=True) as http:
        assert (await http.get("/api/overview")).status_code == 401
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/")).status_code == 401
        assert (await http.get("/", params={"token": "wrong"})).status_code == 403
        assert (await http.get("/api/overview", headers={"X-Khadem-Token": TOKEN})).status_code == 200
        assert (await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        login = await http.get("/", params={"token": TOKEN})
        assert login.status_code == 303 and login.headers["location"] == "/"
        assert "httponly" in login.headers["set-cookie"].lower()
        assert (await http.get("/api/overview")).status_code == 200  # the cookie now
        assert (await http.get("/")).status_code == 200


async def test_metrics_parse_and_match_the_queue(queue: QueueManager) -> None:
    async with client(queue) as http:
        response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    [family] = [f for f in text_string_to_metric_families(response.text) if f.name == "khadem_queue_jobs"]
    assert family.type == "gauge"
    seen = {(s.labels["queue"], s.labels["status"]): s.value for s in family.samples}
    for name in ("default", "mail"):
        for status, count in (await queue.counts(name)).items():
            assert seen[(name, status)] == count, (name, status)


def dashboard_process(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "khadem_nb.cli", "dashboard", "--queue-url", url, *args],
                            env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_dashboard_refuses_to_start_on_bad_input(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"

    def refused(*args: str, queue_url: str = url) -> str:
        process = dashboard_process(queue_url, *args)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 1, (out, err)
        assert "khadem_nb dashboard for" not in out  # nothing was served
        return err

    assert "unknown queue URL scheme 'rabbitmq'" in refused(queue_url="rabbitmq://127.0.0.1/")
    assert "--host 0.0.0.0 is reachable from other machines: give --token" in refused("--host", "0.0.0.0")
    assert "--token must be at least 8 characters" in refused("--token", "short")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert f"port {port} on 127.0.0.1 is in use" in refused("--port", str(port))
    assert "--port must be between 1 and 65535" in refused("--port", "70000")


def test_the_dashboard_process_serves_with_a_printed_token(tmp_path: Path) -> None:
    port = spare_port()
    process = dashboard_process(f"sqlite:///{tmp_path / 'q.db'}", "--port", str(port))
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        token = process.stdout.readline().split(": ", 1)[1].strip()
        assert f"at http://127.0.0.1:{port}/" in first and len(token) >= 16
        assert httpx.get(f"http://127.0.0.1:{port}/api/overview").json()["totals"]["queued"] == 0
        refused = httpx.post(f"http://127.0.0.1:{port}/api/failed/retry")
        assert refused.status_code == 403
        allowed = httpx.post(f"http://127.0.0.1:{port}/api/failed/retry", headers={"X-Khadem-Token": token})
        assert allowed.json() == {"requeued": 0}
    finally:
        process.terminate()
        process.communicate(timeout=30)


def scrape(port: int) -> dict[str, Any]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_a_worker_serves_its_own_prometheus_metrics(tmp_path: Path) -> None:
    import asyncio

    url = f"sqlite:///{tmp_path / 'q.db'}"

    async def dispatch() -> None:
        async with QueueManager(url) as manager:
            for i in range(5):
                await manager.dispatch(Echo(i))
            await manager.dispatch(Fail("x"))

    asyncio.run(dispatch())
    port = spare_port()
    worker = start_worker(url, "--metrics-port", str(port))
    try:
        def all_ran() -> bool:
            try:
                families = scrape(port)
            except httpx.HTTPError:
                return False
            return sum(s.value for s in families["khadem_jobs"].samples if s.name == "khadem_jobs_total") == 6

        wait_until(all_ran, timeout=60, interval=0.2)
        families = scrape(port)
        totals = {(s.labels["job"], s.labels["status"]): s.value
                  for s in families["khadem_jobs"].samples if s.name == "khadem_jobs_total"}
        assert totals == {("Echo", "completed"): 5.0, ("Fail", "failed"): 1.0}
        counts = {s.labels["job"]: s.value for s in families["khadem_job_duration_seconds"].samples
                  if s.name == "khadem_job_duration_seconds_count"}
        assert counts == {"Echo": 5.0, "Fail": 1.0}
        gauges = {s.labels["status"]: s.value for s in families["khadem_queue_jobs"].samples}
        assert (gauges["completed"], gauges["failed"], gauges["queued"]) == (5.0, 1.0, 0.0)
    finally:
        worker.terminate()
        worker.communicate(timeout=30)
    busy = start_worker(url, "--metrics-port", "0")
    _, err = busy.communicate(timeout=60)
    assert busy.returncode == 1 and "--metrics-port must be between 1 and 65535, got 0" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        blocked = start_worker(url, "--metrics-port", str(taken.getsockname()[1]))
        _, err = blocked.communicate(timeout=60)
    assert blocked.returncode == 1 and "cannot listen on 127.0.0.1" in err


def test_the_dashboard_in_a_real_browser(tmp_path: Path) -> None:
    """Debian's Chromium against a ``khadem-nb dashboard`` process while a ``khadem-nb worker``
    process drains: the counts move, a failure shows its traceback, a retry without the token is
    refused on screen, and with it the job is queued again."""
    import asyncio

    from test_browser import ARTIFACTS, _browser, need_chromium

    need_chromium()
    from playwright.sync_api import expect, sync_playwright

    url = f"sqlite:///{tmp_path / 'q.db'}"

    async def dispatch() -> None:
        async with QueueManager(url) as manager:
            await manager.dispatch(Fail("on purpose"))
            await manager.dispatch_many([Echo(i) for i in range(5)])

    asyncio.run(dispatch())
    port = spare_port()
    board = dashboard_process(url, "--port", str(port), "--token", TOKEN)
    worker = start_worker(url, "--concurrency", "1")
    try:
        with sync_playwright() as p:
            context = _browser(tmp_path, p, viewport={"width": 1200, "height": 1000})
            page = context.new_page()
            wait_until(lambda: _answers(port), timeout=60)
            page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
            failed_cell = "#counts tr[data-queue='*'] [data-status='failed']"
            # expect() rather than wait_for_function: the page's CSP forbids evaluating strings
            expect(page.locator(failed_cell)).to_have_text("1", timeout=60_000)
            completed_cell = "#counts tr[data-queue='*'] [data-status='completed']"
            expect(page.locator(completed_cell)).to_have_text("5", timeout=60_000)
            _off_loop(_dispatch_more(url))  # the page shows new work arriving and finishing
            expect(page.locator(completed_cell)).to_have_text("15", timeout=60_000)
            failure = page.locator("#failures details").first
            failure.locator("summary").click()
            assert "RuntimeError: failed on purpose" in failure.inner_text()
            assert "raise RuntimeError" in failure.locator("pre.traceback").inner_text()
            failure.get_by_role("button", name="Retry").click()
            page.wait_for_selector("#action-result.refused")
            assert "refused (403)" in page.inner_text("#action-result")
            assert int(page.inner_text(failed_cell)) == 1
            page.fill("#token", TOKEN)
            page.dispatch_event("#token", "change")
            failure = page.locator("#failures details").first
            failure.locator("summary").click()
            failure.get_by_role("button", name="Retry").click()
            page.wait_for_selector("#action-result.done")
            assert page.inner_text("#action-result") == "1 job queued again"
            # the worker runs it again: it fails again, as it always does, on its second attempt
            wait_until(lambda: _attempts_of_failed(url) == 1, timeout=60)
            assert int(page.inner_text(completed_cell)) == 15
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            context.close()
    finally:
        for process in (worker, board):
            process.terminate()
            process.communicate(timeout=30)


async def _dispatch_more(url: str) -> None:
    async with QueueManager(url) as manager:
        await manager.dispatch_many([Echo(i) for i in range(10)])


def _attempts_of_failed(url: str) -> int:
    async def read() -> int:
        async with QueueManager(url) as manager:
            failed = await manager.jobs("failed")
            return len(failed) if failed and failed[0].attempt == 1 else -1

    return int(_off_loop(read()))


def _off_loop(coro: Any) -> Any:
    """Run ``coro`` on a loop of its own in another thread (Playwright's sync API holds a loop
    in this one)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_cli_help_lists_the_dashboard() -> None:
    out = subprocess.run([sys.executable, "-m", "khadem_nb.cli", "dashboard", "--help"], env=process_env(),
                         capture_output=True, text=True, timeout=60).stdout
    assert "--token" in out and "8642" in out


async def test_a_job_page_links_its_artifacts_and_serves_them_to_readers(tmp_path: Path) -> None:
    """The job page lists the values the job keeps in the artifact store, each a link that
    serves the object's bytes (checked against its digest) under its own name; a digest the
    job does not refer to is not served, and with private reads the token is asked for."""
    manager = await QueueManager(f"sqlite:///{tmp_path / 'q.db'}").init()
    try:
        job_id = await manager.dispatch(MakeArrays(64, str(tmp_path)))
        await manager.start_worker(burst=True)
        record = await manager.get_job(job_id)
        async with client(manager) as http:
            page = (await http.get(f"/jobs/{job_id}")).text
            links = re.findall(r"href='(/api/jobs/[^']+/artifacts/[0-9a-f]{64})'>([^<]+)</a>", page)
            served = {text: await http.get(link) for link, text in links}
            other = await http.get(f"/api/jobs/{job_id}/artifacts/{'0' * 64}")
        async with client(manager, private=True) as http:
            refused = await http.get(links[0][0])
    finally:
        await manager.close()
    assert sorted(text.split(" ")[0] for text in served) == ["DataFrame", "file", "ndarray"]
    plot = next(response for text, response in served.items() if text.startswith("file"))
    assert plot.status_code == 200 and plot.content == b"a plot of 64\n"
    assert 'filename="plot-64.txt"' in plot.headers["content-disposition"]
    array = next(response for text, response in served.items() if text.startswith("ndarray"))
    assert np.load(io.BytesIO(array.content), allow_pickle=False).shape == (64, 64)
    assert record.result["small"]["__kn__"] == "np.array"  # small: kept in the record, no link
    assert other.status_code == 404 and "refers to no artifact" in other.json()["error"]
    assert refused.status_code == 401


async def test_pause_and_resume_a_queue_from_the_dashboard(queue: QueueManager) -> None:
    async with client(queue) as http:
        refused = await http.post("/api/queues/mail/pause")
        assert refused.status_code == 403 and await queue.paused_queues() == []
        paused = await http.post("/api/queues/mail/pause", headers={"X-Khadem-Token": TOKEN})
        assert paused.json() == {"paused": "mail"} and await queue.paused_queues() == ["mail"]
        overview = (await http.get("/api/overview")).json()
        assert overview["paused"] == ["mail"] and "mail" in overview["counts"]
        worker = await queue.start_worker(burst=True, queues=["mail"])
        assert worker.processed == 0 and (await queue.counts("mail"))["queued"] == 1  # nobody claims it
        resumed = await http.post("/api/queues/mail/resume", headers={"X-Khadem-Token": TOKEN})
        assert resumed.json() == {"resumed": True}
        assert (await http.post("/api/queues/mail/resume", headers={"X-Khadem-Token": TOKEN})).json() == \
            {"resumed": False}
        assert (await http.get("/api/overview")).json()["paused"] == []


READ_TOKEN = "read-only-token-for-tests"


async def test_a_read_only_token_reads_and_never_acts_and_the_audit_log_says_who_did_what(
        queue: QueueManager) -> None:
    [failed, _] = await queue.jobs("failed")
    retry = f"/api/jobs/{failed.id}/retry"
    app = create_app(queue, TOKEN, private_reads=True, hosts=allowed_hosts("127.0.0.1", 8642),
                     read_token=READ_TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8642") as http:
        reader = {"X-Khadem-Token": READ_TOKEN}
        assert (await http.get("/api/overview", headers=reader)).status_code == 200
        refused = await http.post(retry, headers=reader)
        assert refused.status_code == 403
        assert refused.json()["error"].startswith("this token may read the queue, not act on it")
        assert (await queue.get_job(failed.id)).status is JobStatus.FAILED
        await http.post(retry, headers={"X-Khadem-Token": "not-the-token"})
        assert (await http.post(retry, headers={"X-Khadem-Token": TOKEN})).json() == {"requeued": 1}
        entries = (await http.get("/api/audit", headers=reader)).json()["entries"]
        page = await http.get("/audit", headers=reader)
        assert (await http.get("/api/audit")).status_code == 401  # a read like the others
    who = [(e["who"].split()[0], e["outcome"].split(":")[0]) for e in entries]
    assert who == [("admin", "200"), ("wrong", "refused"), ("read-only", "refused")]  # newest first
    assert {e["action"] for e in entries} == {f"POST {retry}"}
    assert {e["target"] for e in entries} == {failed.id}
    assert READ_TOKEN not in str(entries) and TOKEN not in str(entries)  # a fingerprint, never the token
    assert page.status_code == 200 and "Audit log" in page.text and "this token may read" in page.text


def test_a_read_token_must_be_long_and_not_the_admin_token(tmp_path: Path) -> None:
    from khadem_nb import ConfigError
    from khadem_nb.dashboard.serve import check_read_token

    with pytest.raises(ConfigError, match="--read-token must be at least 8 characters"):
        check_read_token("short", TOKEN)
    with pytest.raises(ConfigError, match="--read-token must differ from --token"):
        check_read_token(TOKEN, TOKEN)
    check_read_token(None, TOKEN)


async def test_the_audit_log_keeps_its_newest_entries_only(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from khadem_nb.dashboard import audit

    monkeypatch.setattr(audit, "AUDIT_KEPT", 3)
    manager = await QueueManager(f"sqlite:///{tmp_path / 'q.db'}").init()
    try:
        log = audit.AuditLog(manager.driver)
        for n in range(5):
            await log.record(audit.AuditEntry(n, "admin 00000000", f"POST /{n}", "", "200: {}", "127.0.0.1"))
        assert await log.trim() == 2
        assert [e["action"] for e in await log.newest()] == ["POST /4", "POST /3", "POST /2"]
        await manager.driver.kv_put("audit/99999999999999999999-damaged", b"{not json")
        assert len(await log.newest()) == 3  # a damaged entry is passed over
    finally:
        await manager.close()


async def test_counts_above_the_exact_limit_are_marked_at_least_on_sqlite(
        queue: QueueManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite counts each status no further than the limit (100,000; 2 here): a status with
    more shows the limit marked "≥", in the overview and its totals; the rest stay exact."""
    import khadem_nb.drivers.sqlite as sqlite_driver

    monkeypatch.setattr(sqlite_driver, "EXACT_COUNT_LIMIT", 2)
    counts, marks = await queue.driver.rough_counts("default")
    assert (counts[JobStatus.COMPLETED], counts[JobStatus.FAILED], counts[JobStatus.QUEUED]) == (2, 1, 0)
    assert marks == {JobStatus.COMPLETED: "≥"}
    async with client(queue) as http:
        overview = (await http.get("/api/overview")).json()
    assert overview["marks"]["default"] == {"completed": "≥"} and overview["marks"]["mail"] == {}
    assert overview["marks"]["*"] == {"completed": "≥"} and overview["totals"]["completed"] == 2
    await queue.dispatch(Echo("now"))
    await queue.dispatch_many([Echo("soon"), Echo("soon")], delay=0.05)
    await asyncio.sleep(0.1)
    counts, marks = await queue.driver.rough_counts("default")  # 1 queued and 2 due: 3, exact
    assert (counts[JobStatus.QUEUED], counts[JobStatus.SCHEDULED]) == (3, 0)
    assert marks == {JobStatus.COMPLETED: "≥"}


async def test_counts_above_the_exact_limit_are_the_planners_estimates_on_postgresql(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL estimates a status above its limit (10,000; 50 here) from its statistics,
    marked "≈"; smaller statuses are counted exactly."""
    from conftest import postgres_url

    import khadem_nb.drivers.postgres.driver as postgres_driver

    monkeypatch.setattr(postgres_driver, "ESTIMATED_ABOVE", 50)
    manager = await QueueManager(postgres_url(tmp_path)).init()
    try:
        await manager.dispatch_many([Echo(i) for i in range(300)])
        await manager.start_worker(burst=True)
        await manager.dispatch_many([Echo(i) for i in range(7)])
        driver: Any = manager.driver

        async def analyse(conn: Any) -> None:
            await conn.execute(f"ANALYZE {driver.table}")

        await driver._run(analyse)
        counts, marks = await driver.rough_counts("default")
        assert marks == {JobStatus.COMPLETED: "≈"}
        assert 200 <= counts[JobStatus.COMPLETED] <= 400, counts  # the planner's figure
        assert counts[JobStatus.QUEUED] == 7 and counts[JobStatus.FAILED] == 0
        assert await driver.rough_counts("elsewhere") == (await driver.counts("elsewhere"), {})
    finally:
        await manager.driver.purge()
        await manager.close()


async def test_the_dashboard_reads_its_overview_before_it_answers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``warm``, as ``khadem-nb dashboard`` runs it before serving: the queue names and counts
    are read once (so the first page does not wait for a scan); a storage that cannot be read
    yet is logged, and the server starts anyway."""
    from khadem_nb.dashboard.serve import warm

    manager = await QueueManager(f"sqlite:///{tmp_path / 'q.db'}").init()
    await manager.dispatch(Echo(1), queue="mail")
    board = create_app(manager, TOKEN).state.dashboard
    await warm(board.overview)
    assert board.overview._queues == ["mail"]
    await manager.close()
    board.overview.forget()
    with caplog.at_level("WARNING"):
        await warm(board.overview)
    assert "could not read its queue yet" in caplog.text
