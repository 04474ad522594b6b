"""Defects found by probing as an attacker and as a careless user: queue names that are paths,
a dashboard reachable through DNS rebinding, credentials in logs, world-readable files, schema
names that break notifications, Redis keys that collide, and ``sqlite:///:memory:``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import QUEUED_DRIVERS, make_manager, need_postgres, need_redis, postgres_url
from jobs import BlockingSleep, Echo
from procs import env as process_env
from procs import kill, start_worker, wait_until
from redis_servers import spare_port
from test_dashboard import TOKEN, dashboard_process

from khadem_nb import ConfigError, QueueJob, QueueManager, SerializationError, progress
from khadem_nb.config import parse_config, redact_url
from khadem_nb.dashboard.app import SECURITY_HEADERS, allowed_hosts, create_app
from khadem_nb.dashboard.overview import Overview
from khadem_nb.limits import TEXT_LIMIT

BAD_QUEUE_NAMES = ["../escape", "/srv/other", "..", ".", "a/b", "a\0b", "b:c", "", " spaced", "x" * 101]


# -- 1. queue names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BAD_QUEUE_NAMES)
async def test_a_queue_name_that_is_not_safe_everywhere_is_refused_at_dispatch(
        queued_manager: QueueManager, name: str) -> None:
    with pytest.raises(ConfigError, match="queue"):
        await queued_manager.dispatch(Echo(1), queue=name)
    assert sum((await queued_manager.counts()).values()) == 0


async def test_bad_queue_names_are_refused_by_the_worker_reads_and_config(tmp_path: Path) -> None:
    manager = await make_manager("file", tmp_path)
    try:
        for name in ("..", "../escape", "/abs"):
            with pytest.raises(ConfigError, match="not a valid queue name"):
                await manager.start_worker(queues=[name], burst=True)
            with pytest.raises(ConfigError, match="not a valid queue name"):
                await manager.counts(name)
            with pytest.raises(ConfigError, match="not a valid queue name"):
                await manager.driver.reserve([name], 1, 0)  # the driver itself never joins it into a path
        with pytest.raises(ConfigError, match="a list of queue names"):
            await manager.start_worker(queues="emails", burst=True)  # type: ignore[arg-type]
    finally:
        await manager.close()
    with pytest.raises(ConfigError, match=r"queue\.name '\.\./x' is not a valid queue name"):
        await QueueManager({"queue": {"driver": "memory", "name": "../x"}}).init()
    with pytest.raises(ConfigError, match=r"Bad\.queue"):
        class Bad(QueueJob):
            queue = "a/b"
    for good in ("default", "emails", "gpu-high", "v1.2_train", "0"):
        manager = await make_manager("file", tmp_path / good)
        await manager.dispatch(Echo(good), queue=good)
        await manager.start_worker(queues=[good], burst=True)
        assert (await manager.counts(good))["completed"] == 1
        await manager.close()


def test_a_worker_on_a_path_like_queue_touches_nothing_outside(tmp_path: Path) -> None:
    """The probe: ``--queue /srv/other`` moved another folder's files into ``corrupt/``, and
    ``--queue ..`` moved the queue's own folders."""
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "important.txt").write_text("keep me")
    root = tmp_path / "q"
    for name in (str(other), ".."):
        done = subprocess.run([sys.executable, "-m", "khadem_nb.cli", "worker", "--queue-url", f"file://{root}",
                               "--queue", name, "--burst"], env=process_env(), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1 and "is not a valid queue name" in done.stderr, done.stderr
    assert (other / "important.txt").read_text() == "keep me" and (other / "sub").is_dir()
    assert not (root / "corrupt").exists() or not any((root / "corrupt").iterdir())


async def test_redis_prefix_and_queue_cannot_spell_the_same_keys() -> None:
    url = need_redis()
    with pytest.raises(ConfigError, match="not a valid queue name"):
        await QueueManager({"queue": {"url": url, "prefix": "pa", "name": "b:c"}}).init()
    with pytest.raises(ConfigError, match=r"queue\.prefix"):
        await QueueManager({"queue": {"url": url, "prefix": "pa{b}"}}).init()


# -- 2. the dashboard's hosts and headers ------------------------------------------------------------
async def test_the_dashboard_refuses_a_foreign_host_and_a_rebound_origin(tmp_path: Path) -> None:
    manager = await QueueManager(f"sqlite:///{tmp_path / 'q.db'}").init()
    h = await manager.dispatch(Echo({"secret": "argument"}))
    app = create_app(manager, TOKEN, hosts=allowed_hosts("127.0.0.1", 18642))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://rebind.evil.example:18642") as evil:
            for path in ("/api/overview", f"/api/jobs/{h}", "/metrics", "/", f"/jobs/{h}"):
                answer = await evil.get(path)
                assert answer.status_code == 421, path
                assert "argument" not in answer.text
            acted = await evil.post("/api/failed/purge", headers={"X-Khadem-Token": TOKEN})
            assert acted.status_code == 421
        for host in ("127.0.0.1:18642", "localhost:18642", "[::1]:18642"):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url=f"http://{host}") as local:
                answer = await local.get("/api/overview")
                assert answer.status_code == 200, host
                for name, value in SECURITY_HEADERS.items():
                    assert answer.headers[name] == value
                # a page on another origin, even one that rebinds to this address, cannot act
                refused = await local.post("/api/failed/purge", headers={
                    "X-Khadem-Token": TOKEN, "Origin": "http://rebind.evil.example:18642"})
                assert refused.status_code == 403
                allowed = await local.post("/api/failed/purge", headers={
                    "X-Khadem-Token": TOKEN, "Origin": f"http://{host}"})
                assert allowed.status_code == 200
        assert (await (httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://127.0.0.1:18642")).get("/static/index.html")
                ).headers["x-frame-options"] == "DENY"
    finally:
        await manager.close()
    extra = allowed_hosts("127.0.0.1", 18642, ["board.lan"])
    assert extra is not None and "board.lan:18642" in extra
    assert allowed_hosts("0.0.0.0", 18642) is None  # every request needs the token there


def test_the_dashboard_process_answers_allowed_hosts_and_hides_a_given_token(tmp_path: Path) -> None:
    port = spare_port()
    process = dashboard_process(f"sqlite:///{tmp_path / 'q.db'}", "--port", str(port), "--token", TOKEN,
                                "--allowed-host", "board.lan")
    try:
        assert process.stdout is not None
        printed = process.stdout.readline() + process.stdout.readline()
        assert TOKEN not in printed and "the one given with --token" in printed
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/overview").status_code == 200
        assert httpx.get(f"{base}/api/overview", headers={"Host": f"board.lan:{port}"}).status_code == 200
        assert httpx.get(f"{base}/api/overview", headers={"Host": f"evil.example:{port}"}).status_code == 421
    finally:
        process.terminate()
        process.communicate(timeout=30)
    bad = dashboard_process(f"sqlite:///{tmp_path / 'q.db'}", "--allowed-host", "a b")
    _, err = bad.communicate(timeout=60)
    assert bad.returncode == 1 and "--allowed-host 'a b' is not a host name" in err


# -- 5. credentials in URLs ---------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://user:hunter2@h/0", "redis://user:***@h/0"),
    ("postgresql://u@h/db?sslmode=require&password=hunter2", "postgresql://u@h/db?sslmode=require&password=***"),
    ("postgresql://u:hunter2@h/db?sslpassword=hunter2&x=1", "postgresql://u:***@h/db?sslpassword=***&x=1"),
    ("postgresql://h/db?token=hunter2", "postgresql://h/db?token=***"),
    ("sqlite:///runs.db", "sqlite:///runs.db"),
])
def test_every_credential_form_is_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_password_in_the_query_never_reaches_the_worker_log(tmp_path: Path) -> None:
    url = f"{postgres_url(tmp_path)}?password=hunter2" if "?" not in postgres_url(tmp_path) \
        else f"{postgres_url(tmp_path)}&password=hunter2"
    need_postgres()
    done = subprocess.run([sys.executable, "-m", "khadem_nb.cli", "--log-level", "INFO", "worker",
                           "--queue-url", url, "--burst"], env=process_env(), capture_output=True,
                          text=True, timeout=120)
    assert "password=***" in done.stderr, done.stderr
    assert "hunter2" not in done.stderr + done.stdout


# -- 6. permissions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("driver", ["file", "sqlite"])
async def test_queue_files_are_the_owners_alone(tmp_path: Path, driver: str) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "new" / ("q" if driver == "file" else "q.db")
        manager = await QueueManager({"queue": {"driver": driver, "path": str(path)}}).init()
        await manager.dispatch(Echo(1))
        await manager.start_worker(burst=True)
        await manager.close()
    finally:
        os.umask(old)
    found = [path, *path.rglob("*")] if driver == "file" else \
        [p for p in path.parent.iterdir() if p.name.startswith("q.db")]
    assert len(found) > 3 if driver == "file" else found
    for item in found:
        mode = stat.S_IMODE(item.stat().st_mode)
        assert mode & 0o077 == 0, f"{item} is {oct(mode)}"


# -- 10. PostgreSQL schema names ----------------------------------------------------------------------
async def test_postgres_schema_names_are_folded_and_channels_always_fit(tmp_path: Path) -> None:
    base = need_postgres()
    sep = "&" if "?" in base else "?"
    upper = tmp_path.name.upper()[:20] + "_UP"
    for schema in (upper, ("s" + tmp_path.name)[:20] + "_" + "x" * 40):
        manager = await QueueManager(f"{base}{sep}schema={schema}").init()
        try:
            assert manager.driver.schema == schema.lower()  # type: ignore[attr-defined]
            assert all(len(c) <= 63 for c in (manager.driver.channel,  # type: ignore[attr-defined]
                                              manager.driver.settled_channel))  # type: ignore[attr-defined]
            listener = await manager.driver.listener()  # type: ignore[attr-defined]
            assert listener.working, "the self-test's notice should reach this process on a direct connection"
            h = await manager.dispatch(Echo(schema))
            await manager.start_worker(burst=True)
            assert (await manager.get_job(h)).result == schema
        finally:
            await manager.driver.purge()
            await manager.driver._fetch(f"DROP SCHEMA {schema.lower()} CASCADE")  # type: ignore[attr-defined]
            await manager.close()


# -- 12. sqlite:///:memory: ---------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["sqlite:///:memory:", {"queue": {"driver": "sqlite", "path": ":memory:"}}])
async def test_sqlite_in_memory_is_refused_with_the_memory_driver_named(
        url: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="use the memory driver"):
        await QueueManager(url).init()
    assert not (tmp_path / ":memory:").exists()


assert QUEUED_DRIVERS  # the parametrised tests above run on every queued driver


# -- 8. a stopped worker ends within its grace -----------------------------------------------------
def test_a_worker_whose_sync_job_outlives_the_grace_exits_and_names_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"

    async def dispatch() -> str:
        async with QueueManager(url) as manager:
            return await manager.dispatch(BlockingSleep(120))

    job_id = asyncio.run(dispatch())
    worker = start_worker(url, "--grace", "1")
    try:
        wait_until(lambda: asyncio.run(_status(url, job_id)) == "active", timeout=60, interval=0.2)
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        assert time.monotonic() - started < 15, "the worker outlived its grace"
    finally:
        kill(worker)
    assert f"BlockingSleep ({job_id})" in err and "abandoned" in err, err
    assert asyncio.run(_status(url, job_id)) == "queued"  # back in the queue, for another worker


async def _status(url: str, job_id: str) -> str:
    async with QueueManager(url) as manager:
        return (await manager.get_job(job_id)).status.value


# -- 14. stopping a worker stops every task it started -------------------------------------------------
async def test_a_worker_with_max_jobs_and_a_timeout_returns_and_closes_on_redis(tmp_path: Path) -> None:
    for _ in range(3):  # it hung in 3 runs of 3 when the schedule ticker swallowed its stop
        manager = await make_manager("redis", tmp_path)
        try:
            await manager.dispatch(Echo(1), queue="emails")
            async with asyncio.timeout(20):
                await manager.start_worker(run_in_background=False, max_jobs=1, timeout=4, queues=["emails"])
            assert (await manager.counts("emails"))["completed"] == 1  # it ran its job, then returned
        finally:
            await manager.driver.purge()
            async with asyncio.timeout(20):
                await manager.close()


# -- 7. unique locks do not outlive their jobs ---------------------------------------------------------
def _lock_count(manager: QueueManager, driver: str, tmp_path: Path) -> int:
    if driver == "file":
        return len(list((tmp_path / "queue" / "unique").glob("*.json")))
    import redis

    client = redis.Redis.from_url(need_redis())
    try:
        return int(client.hlen(f"{{{manager.settings.prefix}:default}}:unique"))
    finally:
        client.close()


@pytest.mark.parametrize("driver", ["redis", "file"])
async def test_unique_locks_of_ended_jobs_are_dropped(tmp_path: Path, driver: str) -> None:
    manager = await make_manager(driver, tmp_path, retention=50)
    try:
        for i in range(300):
            await manager.dispatch(Echo(i), unique=True)
        await manager.start_worker(burst=True, concurrency=8)
        await manager.dispatch(Echo("still queued"), unique=True)
        assert _lock_count(manager, driver, tmp_path) > 250  # a pass may have run during the drain
        await manager.driver.trim()
        assert _lock_count(manager, driver, tmp_path) == 1  # only the live one
        assert len(await manager.jobs("completed")) == 50
        again = await manager.dispatch(Echo("still queued"), unique=True)  # still held: the same job
        assert (await manager.get_job(again)).payload == (await manager.jobs("queued"))[0].payload
        assert len(await manager.jobs("queued")) == 1
        assert await manager.dispatch(Echo(0), unique=True)  # its lock was dead: a new job
        assert len(await manager.jobs("queued")) == 2
    finally:
        await manager.driver.purge()
        await manager.close()


# -- 9. sizes: errors, tracebacks and notes are cut; arguments and results are bounded -----------------
class LoudFailure(QueueJob):
    """Reports a 20 MB progress note, then raises a 30 MB message."""

    def __init__(self, chars: int) -> None:
        self.chars = chars

    async def handle(self) -> None:
        progress(0.5, note="n" * 20_000_000)
        raise RuntimeError("e" * self.chars)


class BigResult(QueueJob):
    def __init__(self, chars: int) -> None:
        self.chars = chars

    async def handle(self) -> str:
        return "r" * self.chars


@pytest.mark.parametrize("driver", ["memory", "sqlite", "redis"])
async def test_errors_tracebacks_and_notes_are_cut_where_they_are_made(tmp_path: Path, driver: str) -> None:
    manager = await make_manager(driver, tmp_path)
    try:
        job_id = await manager.dispatch(LoudFailure(30_000_000))
        await manager.start_worker(burst=True)
        record = await manager.get_job(job_id)
        assert record.status.value == "failed"
        for text in (record.error, record.traceback, record.meta["note"]):
            assert text is not None and len(text) <= TEXT_LIMIT + 100
            assert "characters cut ...]" in text
        assert record.error.startswith("RuntimeError: eee") and record.error.endswith("eee")
        overview = Overview(manager)
        assert len(json.dumps(await overview.read())) < 1_000_000  # was 62.9 MB per poll
    finally:
        await manager.driver.purge()
        await manager.close()


@pytest.mark.parametrize("driver", ["memory", "sqlite", "redis"])
async def test_arguments_and_results_over_max_payload_are_refused(tmp_path: Path, driver: str) -> None:
    """Without an artifact store (Redis here) a record holds at most queue.max_payload of JSON;
    with one (memory and SQLite have one by default) larger values go to the store, whose
    objects hold at most queue.max_artifact."""
    manager = await make_manager(driver, tmp_path, max_payload="1MiB", max_artifact="1MiB")
    setting = "queue.max_payload" if driver == "redis" else "queue.max_artifact"
    limit = re.escape(f"{setting} (1,048,576 bytes)")
    try:
        too_long = r"Echo.* is 2,000,0\d\d bytes(?: as JSON)?, over " + limit
        with pytest.raises(SerializationError, match=too_long):
            await manager.dispatch(Echo("x" * 2_000_000))
        with pytest.raises(SerializationError, match=limit):
            await manager.dispatch(Echo({"nested": ["é" * 600_000]}))  # 600 k characters, 1.2 MB as UTF-8
        assert sum((await manager.counts()).values()) == 0  # nothing was stored
        fits = await manager.dispatch(Echo("x" * 900_000))
        too_big = await manager.dispatch(BigResult(2_000_000))
        await manager.start_worker(burst=True)
        assert (await manager.get_job(fits)).status.value == "completed"
        failed = await manager.get_job(too_big)
        assert failed.status.value == "failed" and setting in (failed.error or "")
    finally:
        await manager.driver.purge()
        await manager.close()


@pytest.mark.parametrize(("value", "expected"), [
    ("16MiB", 16 * 2**20), ("512 kB", 512_000), (4096, 4096), ("2GiB", 2**31), ("1.5MiB", 1_572_864)])
def test_max_payload_takes_bytes_or_text(value: object, expected: int) -> None:
    assert parse_config({"queue": {"driver": "memory", "max_payload": value}}).max_payload == expected
    assert parse_config(None).max_payload == 16 * 2**20


@pytest.mark.parametrize("value", ["16 parsecs", "-1", 10, "3GiB", True, "MiB"])
def test_a_bad_max_payload_names_the_setting(value: object) -> None:
    with pytest.raises(ConfigError, match=r"queue\.max_payload"):
        parse_config({"queue": {"driver": "memory", "max_payload": value}})


async def test_the_memory_drivers_unique_locks_stay_near_the_live_ones(tmp_path: Path) -> None:
    manager = await make_manager("memory", tmp_path, retention=100)
    try:
        for start in range(0, 5000, 500):
            for i in range(start, start + 500):
                await manager.dispatch(Echo(i), unique=True)
            await manager.start_worker(burst=True, concurrency=8)
        held = await manager.dispatch(Echo("held"), unique=True)
        assert len(manager.driver._locks) <= 2048  # type: ignore[attr-defined]
        assert await manager.dispatch(Echo("held"), unique=True) == held  # a live lock is kept
    finally:
        await manager.close()
