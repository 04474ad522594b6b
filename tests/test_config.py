"""Configuration parsing, driver resolution and custom drivers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from jobs import Echo

from khadem_nb import ConfigError, JobStatus, QueueFactory, QueueManager, SerializationError
from khadem_nb.config import parse_config
from khadem_nb.drivers.memory import MemoryDriver
from khadem_nb.testing import QueueFake


async def test_unknown_driver_names_the_valid_ones() -> None:
    manager = QueueManager({"queue": {"driver": "rabbit"}})
    with pytest.raises(ConfigError, match=r"'rabbit'.*memory.*redis.*sqlite.*sync"):
        await manager.init()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"drivr": "memory"}, r"unknown queue config keys \['drivr'\]"),
        ({"workers": {"concurrency": -1}}, r"concurrency must be between 1 and 10000, got -1"),
        ({"workers": {"delay": "soon"}}, r"delay must be a number of seconds, got 'soon'"),
        ({"workers": {"max_jobs": 1.5}}, r"max_jobs must be an integer"),
        ({"workers": {"speed": 1}}, r"unknown queue.workers keys \['speed'\]"),
        ({"lease": 5, "heartbeat": 6}, r"heartbeat .* must be shorter than queue.lease"),
        ({"driver": "sqlite"}, r"sqlite driver needs queue.path"),
        ({"url": "ftp://host/x"}, r"unknown queue URL scheme 'ftp'"),
        ({"url": "redis://u:secret@host:6379/x"}, r"redis db .* must be a number"),
        ({"port": "abc"}, r"queue.port must be an integer"),
    ],
)
async def test_bad_values_are_clear_errors_at_init(section: dict[str, Any], message: str) -> None:
    manager = QueueManager({"queue": section})
    with pytest.raises(ConfigError, match=message):
        await manager.init()


def test_password_never_appears_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("redis://user:hunter2@host:6379/notanumber")
    assert "hunter2" not in str(info.value)


def test_urls_and_dotted_config_objects() -> None:
    settings = parse_config("redis://alice:pw@example:6380/2")
    assert (settings.driver, settings.host, settings.port, settings.db) == ("redis", "example", 6380, 2)
    assert (settings.username, settings.password) == ("alice", "pw")
    assert settings.redacted_url() == "redis://alice:***@example:6380/2"
    assert parse_config("file:///tmp/q").path == "/tmp/q"


def test_sqlite_urls_follow_sqlalchemy_relative_with_three_slashes_absolute_with_four() -> None:
    assert parse_config("sqlite:///runs.db").path == "runs.db"
    assert parse_config("sqlite:///sub/runs.db").path == "sub/runs.db"
    assert parse_config("sqlite:////abs/runs.db").path == "/abs/runs.db"
    assert parse_config({"queue": {"driver": "sqlite", "path": "runs.db"}}).redacted_url() == "sqlite:///runs.db"
    with pytest.raises(ConfigError, match=r"sqlite:///runs.db \(relative\) or sqlite:////abs/runs.db"):
        parse_config("sqlite:///")


async def test_a_relative_sqlite_url_is_stored_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manager = await QueueManager("sqlite:///runs.db").init()
    try:
        await manager.dispatch(Echo("here"))
    finally:
        await manager.close()
    assert (tmp_path / "runs.db").exists()
    absolute = tmp_path / "elsewhere" / "abs.db"
    absolute.parent.mkdir()
    manager = await QueueManager(f"sqlite:///{absolute}").init()  # four slashes: absolute
    await manager.close()
    assert absolute.exists()

    class AppConfig:
        values = {"queue.driver": "memory", "queue.workers.concurrency": 3, "queue.name": "jobs"}

        def get(self, key: str, default: Any = None) -> Any:
            return self.values.get(key, default)

    settings = parse_config(AppConfig())
    assert (settings.driver, settings.name, settings.workers.concurrency) == ("memory", "jobs", 3)
    assert parse_config({"queue": {"lease": 9}}).heartbeat_s == pytest.approx(3.0)


async def test_start_worker_rejects_bad_arguments() -> None:
    manager = await QueueManager().init()
    with pytest.raises(ConfigError, match="concurrency must be between 1 and 10000"):
        await manager.start_worker(concurrency=0)
    with pytest.raises(ConfigError, match=r"worker delay must be between 0\.001 and 3600 seconds, got -1"):
        await manager.start_worker(delay=-1)
    with pytest.raises(ConfigError, match="on_job_start must be callable"):
        await manager.start_worker(on_job_start="print")  # type: ignore[arg-type]


async def test_dispatch_accepts_timedelta_and_rejects_bad_delay(khadem_queue: QueueManager,
                                                                 khadem_fake: QueueFake) -> None:
    job_id = await khadem_queue.dispatch(Echo(1), delay=timedelta(minutes=5))
    khadem_fake.assert_dispatched(Echo, times=1, delay=300)
    record = await khadem_queue.get_job(job_id)
    assert record.status is JobStatus.SCHEDULED
    assert record.available_ms - record.created_ms == 300_000
    assert await khadem_fake.run_all() == []
    khadem_fake.advance(timedelta(minutes=5))
    assert [(r.id, r.result) for r in await khadem_fake.run_all()] == [(job_id, 1)]
    with pytest.raises(ConfigError, match="delay must be a number of seconds"):
        await khadem_queue.dispatch(Echo(1), delay="5 minutes")  # type: ignore[arg-type]


async def test_unserializable_argument_names_the_field(khadem_queue: QueueManager,
                                                       khadem_fake: QueueFake) -> None:
    with pytest.raises(SerializationError, match=r"Echo argument\['value'\]\[1\] is of type builtins.object"):
        await khadem_queue.dispatch(Echo([1, object()]))
    khadem_fake.assert_nothing_dispatched()
    assert await khadem_queue.counts() == dict.fromkeys([s.value for s in JobStatus], 0)


async def test_custom_driver_registration() -> None:
    created: list[Any] = []

    class CountingDriver(MemoryDriver):
        def __init__(self, settings: Any) -> None:
            super().__init__(settings)
            created.append(self)

    QueueFactory.register_driver("counting", CountingDriver)
    try:
        manager = await QueueManager({"queue": {"driver": "counting"}}).init()
        job_id = await manager.dispatch(Echo("custom"))
        await manager.start_worker(max_jobs=1)
        assert (await manager.get_job(job_id)).result == "custom"
        assert len(created) == 1 and manager.driver is created[0]
        assert "counting" in QueueFactory.driver_names()
    finally:
        from khadem_nb.drivers.registry import driver_registry

        driver_registry.unregister("counting")


@pytest.mark.parametrize("settings", [{"queue": {"driver": "memory"}}, "memory://", None])
async def test_a_driver_built_by_hand_takes_what_the_manager_takes(settings: Any) -> None:
    from khadem_nb.drivers.registry import driver_registry

    driver = MemoryDriver(settings)
    QueueFactory.register_driver("by-hand", driver)
    try:
        manager = await QueueManager({"queue": {"driver": "by-hand"}}).init()
        assert manager.driver is driver
        job_id = await manager.dispatch(Echo("by hand"))
        await manager.start_worker(max_jobs=1)
        assert (await manager.get_job(job_id)).result == "by hand"
    finally:
        driver_registry.unregister("by-hand")


def test_a_driver_built_by_hand_with_a_wrong_argument_says_what_it_takes() -> None:
    with pytest.raises(ConfigError, match="pass a URL, a dict with a 'queue' section"):
        MemoryDriver(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown queue URL scheme 'nope'"):
        MemoryDriver("nope://x")


async def test_driver_factory_must_return_a_driver() -> None:
    QueueFactory.register_driver("broken", lambda settings: object())  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(ConfigError, match="not a QueueDriver"):
            await QueueManager({"queue": {"driver": "broken"}}).init()
    finally:
        from khadem_nb.drivers.registry import driver_registry

        driver_registry.unregister("broken")


def test_bad_middleware_is_refused() -> None:
    with pytest.raises(ConfigError, match="middleware must be an async function"):
        QueueManager().use(42)  # type: ignore[arg-type]


async def test_unknown_status_lists_valid_ones() -> None:
    manager = await QueueManager().init()
    with pytest.raises(ConfigError, match="unknown job status 'done'; valid statuses: waiting, queued"):
        await manager.jobs("done")
