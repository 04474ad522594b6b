"""Fixtures: one manager per driver, so the contract suite runs against every driver."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import jobs as test_jobs

from khadem_nb import QueueManager

ALL_DRIVERS = ["sync", "memory", "sqlite", "file", "redis"]
QUEUED_DRIVERS = [d for d in ALL_DRIVERS if d != "sync"]


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


def need_redis() -> str:
    """The Redis URL for tests; a missing server fails the test when KHADEM_REQUIRE_REDIS=1."""
    if not redis_available():
        message = f"no Redis server answers at {REDIS_URL} (set KHADEM_REDIS_URL)"
        if require_env_flag("KHADEM_REQUIRE_REDIS"):
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


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
    return {"queue": section}


@pytest.fixture(autouse=True)
def _clear_run_log() -> Iterator[None]:
    test_jobs.RUN_LOG.clear()
    yield
    test_jobs.RUN_LOG.clear()


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
