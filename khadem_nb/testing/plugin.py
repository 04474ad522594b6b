"""The pytest plugin that comes with khadem_nb (entry point ``pytest11``): queue fixtures for
an application's tests.

- ``khadem_queue``: a real, initialised ``QueueManager``, purged and closed after the test. Its
  driver is ``memory`` unless ``@pytest.mark.khadem_driver("sqlite")``, an indirect parameter
  (``@pytest.mark.parametrize("khadem_queue", ["memory", "sqlite"], indirect=True)``) or
  ``--khadem-driver`` says otherwise: ``memory``, ``sqlite`` (a file in the test's tmp_path) or
  ``redis`` (``KHADEM_REDIS_URL``, under a key prefix of the test's own).
- ``khadem_fake``: a ``QueueFake`` installed on ``khadem_queue`` for the test.

The fixtures are coroutines: they need pytest-asyncio (``asyncio_mode = "auto"``, or
``@pytest.mark.asyncio`` on the tests).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ..manager import QueueManager
from .fake import QueueFake

F = TypeVar("F", bound=Callable[..., Any])
DRIVERS = ("memory", "sqlite", "redis")
REDIS_URL_VARIABLE = "KHADEM_REDIS_URL"



def _async_fixture() -> Callable[[F], F]:
    """pytest-asyncio's fixture decorator (the fixtures are coroutines), or pytest's where it
    is missing (the fixtures then say so when used)."""
    decorator: Any
    try:
        from pytest_asyncio import fixture as decorator
    except ImportError:  # pragma: no cover - a suite without pytest-asyncio cannot use them
        decorator = pytest.fixture
    return decorator  # type: ignore[no-any-return]


async_fixture = _async_fixture()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("khadem_nb")
    group.addoption("--khadem-driver", choices=DRIVERS, default=None,
                    help="the driver of the khadem_queue fixture where a test does not name one "
                         f"(redis needs {REDIS_URL_VARIABLE}); default memory")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "khadem_driver(name): the driver of the khadem_queue fixture "
                                       f"({', '.join(DRIVERS)})")
    if config.getoption("--khadem-driver", None) == "redis" and not os.environ.get(REDIS_URL_VARIABLE):
        raise pytest.UsageError(f"--khadem-driver redis needs {REDIS_URL_VARIABLE} (a redis:// URL)")


def queue_config(driver: str, tmp_path: Path) -> dict[str, Any]:
    """The queue config of ``driver`` for one test: a file in ``tmp_path`` for SQLite, a key
    prefix of its own on Redis."""
    if driver not in DRIVERS:
        raise pytest.UsageError(f"khadem_queue driver {driver!r} is not one of {', '.join(DRIVERS)}")
    if driver == "memory":
        return {"queue": {"driver": "memory"}}
    if driver == "sqlite":
        return {"queue": {"driver": "sqlite", "path": str(tmp_path / "khadem-queue.db")}}
    url = os.environ.get(REDIS_URL_VARIABLE)
    if not url:
        pytest.skip(f"the redis khadem_queue needs {REDIS_URL_VARIABLE}")
    return {"queue": {"url": url, "prefix": f"khadem-test-{uuid.uuid4().hex[:12]}"}}


def _driver_for(request: pytest.FixtureRequest) -> str:
    marker = request.node.get_closest_marker("khadem_driver")
    chosen = getattr(request, "param", None) or (marker.args[0] if marker and marker.args else None)
    return str(chosen or request.config.getoption("--khadem-driver", None) or "memory")


@async_fixture
async def khadem_queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueManager]:
    """A real queue for the test, on the driver its marker, parameter or option names."""
    manager = await QueueManager(queue_config(_driver_for(request), tmp_path)).init()
    try:
        yield manager
    finally:
        await manager.driver.purge()
        await manager.close()


@async_fixture
async def khadem_fake(khadem_queue: QueueManager) -> AsyncIterator[QueueFake]:
    """A ``QueueFake`` installed on ``khadem_queue`` for the test."""
    with QueueFake(khadem_queue) as fake:
        yield fake
