"""Fixtures: one manager per driver, so the contract suite runs against every driver."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import jobs as test_jobs

from khadem_nb import QueueManager

ALL_DRIVERS = ["sync", "memory", "sqlite", "file", "redis", "postgres"]
QUEUED_DRIVERS = [d for d in ALL_DRIVERS if d != "sync"]
SHARED_DRIVERS = ("sqlite", "file", "redis", "postgres")  # several processes work one queue


REDIS_URL = os.environ.get("KHADEM_REDIS_URL", "redis://127.0.0.1:6379/0")
_redis_state: dict[str, bool] = {}


def redis_available() -> bool:
    if "up" not in _redis_state:
        import redis

        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
            _redis_state["up"] = True
        except redis.RedisError:
            _redis_state["up"] = False
    return _redis_state["up"]


POSTGRES_URL = os.environ.get("KHADEM_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA_PREFIX = f"khadem_t{os.getpid()}_"  # every schema this test run creates starts so
_postgres_state: dict[str, bool] = {}


def postgres_available() -> bool:
    if "up" not in _postgres_state:
        try:
            import psycopg

            with psycopg.connect(POSTGRES_URL, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            _postgres_state["up"] = True
        except Exception:
            _postgres_state["up"] = False
    return _postgres_state["up"]


def need_postgres() -> str:
    """The PostgreSQL URL for tests; a missing server fails the test when
    KHADEM_REQUIRE_POSTGRES=1."""
    if not postgres_available():
        missing(f"no PostgreSQL server answers at {POSTGRES_URL} (set KHADEM_POSTGRES_URL)",
                "KHADEM_REQUIRE_POSTGRES")
    return POSTGRES_URL


def schema_for(tmp_path: Path) -> str:
    """A schema of its own for one test (dropped at the end of the run)."""
    name = "".join(c if c.isalnum() else "_" for c in tmp_path.name.lower())
    return (SCHEMA_PREFIX + name)[:63]


def postgres_url(tmp_path: Path) -> str:
    url = need_postgres()
    return f"{url}{'&' if '?' in url else '?'}schema={schema_for(tmp_path)}"


@pytest.fixture(scope="session", autouse=True)
def _postgres_left_clean() -> Iterator[None]:
    """Drop every schema this run created."""
    yield
    if not postgres_available():
        return
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        names = [row[0] for row in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (SCHEMA_PREFIX,))]
        for name in names:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def postgres_schema_at(conn: Any, schema: str, version: int) -> None:
    """Make ``schema`` anew as version ``version`` left it, from that version's own statements
    (``conn``: an autocommit psycopg connection), to test the upgrades after it."""
    from khadem_nb.drivers.postgres import schema_sql, upgrade_sql

    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"CREATE TABLE {schema}.version (version integer NOT NULL)")
    steps = upgrade_sql(schema)
    for statement in [*schema_sql(schema), *(s for n in range(2, version + 1) for s in steps[n])]:
        conn.execute(statement)
    conn.execute(f"INSERT INTO {schema}.version SELECT generate_series(1, %s)", (version,))


def missing(reason: str, flag: str) -> None:
    """Something a test needs is not on this machine: skip with ``reason``, or fail when the
    environment flag ``flag`` (``KHADEM_REQUIRE_REDIS``, ``KHADEM_REQUIRE_BROWSER``) is set, as
    ``.ci/run`` sets them after installing what they need."""
    if require_env_flag(flag):
        pytest.fail(f"{reason} ({flag} is set)")
    pytest.skip(reason)


def need_redis() -> str:
    """The Redis URL for tests; a missing server fails the test when KHADEM_REQUIRE_REDIS=1."""
    if not redis_available():
        missing(f"no Redis server answers at {REDIS_URL} (set KHADEM_REDIS_URL)", "KHADEM_REQUIRE_REDIS")
    return REDIS_URL


def need_redis_server_binary() -> None:
    """Outage and Cluster tests start their own servers: they need the ``redis-server`` binary."""
    import shutil

    if shutil.which("redis-server") is None:
        missing("the redis-server binary is not installed (apt-get install redis-server)",
                "KHADEM_REQUIRE_REDIS")


@pytest.fixture(scope="session", autouse=True)
def _redis_left_clean() -> Iterator[None]:
    """The suite removes every key it writes to the Redis it was given (KHADEM_REDIS_URL)."""
    before = _redis_keys()
    yield
    left = sorted(_redis_keys() - before)
    if left:
        raise AssertionError(f"the tests left {len(left)} key(s) in {REDIS_URL}: {left[:10]}")


def _redis_keys() -> set[bytes]:
    if not redis_available():
        return set()
    import redis

    return set(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).keys("*"))


def driver_config(driver: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"driver": driver, **extra}
    if driver == "redis":
        section.pop("driver")
        section["url"] = need_redis()
        section["prefix"] = f"khadem-test-{tmp_path.name}-{os.getpid()}"
    elif driver == "sqlite":
        section["path"] = str(tmp_path / "queue.db")
    elif driver == "file":
        section["path"] = str(tmp_path / "queue")
    elif driver == "postgres":
        section.pop("driver")
        section["url"] = postgres_url(tmp_path)
    return {"queue": section}


@pytest.fixture(autouse=True)
def _no_stray_event_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """Close an event loop that a library (jupyter_client's blocking client, Playwright's sync
    API) left set on this thread during a sync test: left there, the garbage collector finds it
    unclosed, with its sockets, during some later test, which then fails on the warning."""
    yield
    if inspect.iscoroutinefunction(request.function):
        return  # pytest-asyncio owns the loop of an async test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:  # none is set
            return
    if not loop.is_running() and not loop.is_closed():
        loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture(autouse=True)
def _clear_run_log() -> Iterator[None]:
    test_jobs.RUN_LOG.clear()
    yield
    test_jobs.RUN_LOG.clear()


async def purge_url(url: str) -> None:
    """Remove everything the queue at ``url`` holds (what a test wrote to a shared server)."""
    manager = await QueueManager(url).init()
    await manager.driver.purge()
    await manager.close()


async def make_manager(driver: str, tmp_path: Path, **extra: Any) -> QueueManager:
    manager = QueueManager(driver_config(driver, tmp_path, **extra))
    await manager.init()
    await manager.driver.purge()
    return manager


@pytest.fixture(params=ALL_DRIVERS)
async def manager(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueManager]:
    m = await make_manager(request.param, tmp_path)
    yield m
    await m.driver.purge()
    await m.close()


@pytest.fixture(params=QUEUED_DRIVERS)
async def queued_manager(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueManager]:
    m = await make_manager(request.param, tmp_path)
    yield m
    await m.driver.purge()
    await m.close()


def require_env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "no")


@pytest.fixture(params=["sqlite", "file", "redis", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a queue that several processes share, on each durable driver."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/q.db"
    elif request.param == "file":
        yield f"file:///{tmp_path}/q"
    elif request.param == "postgres":
        url = postgres_url(tmp_path)
        yield url
        asyncio.run(purge_url(url))
    else:
        url = f"{need_redis()}?prefix=khadem-proc-{tmp_path.name}"
        yield url
        asyncio.run(purge_url(url))
