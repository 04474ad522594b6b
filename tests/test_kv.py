"""The keyed store every driver has (``QueueDriver.kv_put`` and the rest): bytes under short
keys with an optional lifetime, ``kv_put_new`` atomic across managers, prefix scans, and the
refusals of bad keys, values and lifetimes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import QUEUED_DRIVERS, driver_config

from khadem_nb import ConfigError, QueueManager


async def test_put_get_scan_and_delete(manager: QueueManager) -> None:
    kv = manager.driver
    assert await kv.kv_get("workers/a") is None
    await kv.kv_put("workers/a", b'{"runs": ["train"]}')
    await kv.kv_put("workers/b", b"\x00\xffraw")
    await kv.kv_put("pause/default", b"1")
    assert await kv.kv_get("workers/a") == b'{"runs": ["train"]}'
    await kv.kv_put("workers/a", b"replaced")
    assert await kv.kv_scan("workers/") == {"workers/a": b"replaced", "workers/b": b"\x00\xffraw"}
    assert set(await kv.kv_scan("")) == {"workers/a", "workers/b", "pause/default"}
    assert await kv.kv_scan("nothing/") == {}
    assert await kv.kv_delete("workers/a") is True
    assert await kv.kv_delete("workers/a") is False
    assert await kv.kv_get("workers/a") is None
    await kv.purge()
    assert await kv.kv_scan("") == {}


async def test_put_new_stores_once_while_the_value_lives(manager: QueueManager) -> None:
    kv = manager.driver
    assert await kv.kv_put_new("event/lr-grid/done", b"first") is True
    assert await kv.kv_put_new("event/lr-grid/done", b"second") is False
    assert await kv.kv_get("event/lr-grid/done") == b"first"
    assert await kv.kv_put_new("short", b"one", ttl_s=0.2) is True
    assert await kv.kv_get("short") == b"one"
    await asyncio.sleep(0.35)
    assert await kv.kv_get("short") is None  # expired: absent at once
    assert "short" not in await kv.kv_scan("")
    assert await kv.kv_delete("short") is False
    assert await kv.kv_put_new("short", b"two", ttl_s=30) is True  # over the expired value
    assert await kv.kv_get("short") == b"two"


@pytest.mark.parametrize("driver", QUEUED_DRIVERS)
async def test_put_new_has_one_winner_among_managers(driver: str, tmp_path: Path) -> None:
    """Four managers of one queue (one on memory, which lives in its manager) race for each key."""
    first = await QueueManager(driver_config(driver, tmp_path)).init()
    others = [await QueueManager(driver_config(driver, tmp_path)).init() for _ in range(3)] \
        if driver != "memory" else [first] * 3
    managers = [first, *others]
    try:
        await managers[0].driver.purge()
        tries = [m.driver.kv_put_new(f"lead/{round_}", f"{i}".encode(), ttl_s=60)
                 for round_ in range(10) for i, m in enumerate(managers)]
        won = await asyncio.gather(*tries)
        assert [sum(won[r * 4:(r + 1) * 4]) for r in range(10)] == [1] * 10
        assert len(await managers[1].driver.kv_scan("lead/")) == 10
    finally:
        await managers[0].driver.purge()
        for m in dict.fromkeys(managers):
            await m.close()


async def test_bad_keys_values_and_lifetimes_are_refused(manager: QueueManager) -> None:
    kv = manager.driver
    for key in ("", "x" * 257, "a\nb", "nul\x00", 7):
        with pytest.raises(ConfigError, match="keyed-store key"):
            await kv.kv_put(key, b"v")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be bytes"):
        await kv.kv_put("k", "text")  # type: ignore[arg-type]
    for ttl in (0, -1, float("nan"), "soon"):
        with pytest.raises(ConfigError, match="ttl"):
            await kv.kv_put("k", b"v", ttl_s=ttl)  # type: ignore[arg-type]
    assert await kv.kv_get("k") is None  # nothing was stored


ENVELOPE = b"khadem-code-1\nan envelope an earlier version stored"


@pytest.mark.parametrize("driver", ["sqlite", "file", "redis", "postgres"])
async def test_code_an_earlier_version_stored_is_found_in_the_keyed_store(driver: str,
                                                                         tmp_path: Path) -> None:
    """Shipped code lives in the keyed store (``code/<digest>``); what a version before it kept
    in its own table, hash or folder is moved there when the queue opens or its schema upgrades."""
    digest = "a" * 32
    config = driver_config(driver, tmp_path, auto_migrate=True)
    manager = await QueueManager(config).init()
    await manager.driver.purge()
    await manager.close()
    await _store_the_old_way(driver, config["queue"], digest)
    manager = QueueManager(config)
    try:
        await manager.init()
        assert await manager.driver.load_code(digest) == ENVELOPE
        assert await manager.driver.kv_get(f"code/{digest}") == ENVELOPE
        await manager.driver.store_code("b" * 32, b"new")
        assert await manager.driver.load_code("b" * 32) == b"new"
        await manager.driver.store_code("b" * 32, b"stored again changes nothing")
        assert await manager.driver.load_code("b" * 32) == b"new"
        assert await manager.driver.load_code("../not-a-digest") is None
    finally:
        async with QueueManager(config) as cleaner:  # the old-style keys too, whatever failed
            await cleaner.driver.purge()
        await manager.close()


async def _store_the_old_way(driver: str, section: dict[str, object], digest: str) -> None:
    if driver == "sqlite":
        import sqlite3

        with sqlite3.connect(str(section["path"])) as conn:
            conn.execute("DELETE FROM khadem_kv")
            conn.execute("INSERT INTO khadem_code (digest, envelope, created_ms) VALUES (?, ?, 1)",
                         (digest, ENVELOPE))
            conn.execute("PRAGMA user_version = 0")  # a file written before layout versions
    elif driver == "file":
        (Path(str(section["path"])) / "code" / f"{digest}.env").write_bytes(ENVELOPE)
        (Path(str(section["path"])) / "layout").unlink()  # a folder written before layout versions
    elif driver == "redis":
        import redis

        client = redis.Redis.from_url(str(section["url"]))
        client.hset(f"{section['prefix']}:code", digest, ENVELOPE)
        client.close()
    else:  # a schema at version 8 with the code table filled, upgraded on open
        import psycopg
        from conftest import postgres_schema_at

        from khadem_nb.config import parse_config

        schema = parse_config({"queue": section}).schema.lower()
        with psycopg.connect(str(section["url"]).split("?")[0], autocommit=True) as conn:
            postgres_schema_at(conn, schema, 8)
            conn.execute(f"INSERT INTO {schema}.code (digest, envelope, created_ms) VALUES (%s, %s, 1)",
                         (digest, ENVELOPE))
