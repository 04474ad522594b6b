"""Bad paths and bad files for the durable drivers: clear errors naming the path."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from jobs import Echo

from khadem_nb import CorruptQueueError, DriverError, QueueManager
from khadem_nb.drivers import _fs


async def test_garbage_database_is_a_clear_error_naming_the_path(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    with pytest.raises(CorruptQueueError, match=r"notes\.db.*is damaged \(file is not a database\)"):
        await QueueManager(f"sqlite:///{db}").init()
    assert db.read_bytes().startswith(b"this is not a database")  # left untouched


async def test_sqlite_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match=r"is a directory; the sqlite driver needs a file"):
        await QueueManager(f"sqlite:///{tmp_path}").init()


async def test_file_queue_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "plain.txt"
    target.write_text("hello")
    with pytest.raises(DriverError, match=r"plain\.txt' is a file; the file driver needs a folder"):
        await QueueManager(f"file:///{target}").init()


@pytest.mark.parametrize("scheme", ["sqlite", "file"])
async def test_path_under_a_file_is_refused(tmp_path: Path, scheme: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(DriverError, match="a parent of it is a file"):
        await QueueManager(f"{scheme}:///{blocker}/sub/q").init()


@pytest.mark.parametrize("scheme", ["sqlite", "file"])
async def test_unwritable_location_is_refused(scheme: str) -> None:
    with pytest.raises(DriverError, match=r"cannot create .*'/proc/khadem-nb-test"):
        slashes = "////" if scheme == "sqlite" else "///"  # sqlite:////abs is absolute (SQLAlchemy)
        await QueueManager(f"{scheme}:{slashes}proc/khadem-nb-test/q").init()


async def test_wal_is_on_and_writes_use_begin_immediate(tmp_path: Path) -> None:
    manager = await QueueManager(f"sqlite:///{tmp_path}/q.db").init()
    assert manager.driver.journal_mode == "wal"  # type: ignore[attr-defined]
    await manager.dispatch(Echo(1))
    await manager.close()
    conn = sqlite3.connect(tmp_path / "q.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"khadem_jobs_ready", "khadem_jobs_lanes", "khadem_jobs_lease", "khadem_jobs_status"} <= indexes
    conn.close()


def test_network_filesystems_are_detected_from_mounts(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\n"
                      "server:/export /mnt/shared nfs4 rw 0 0\n"
                      "//nas/share /mnt/my\\040share cifs rw 0 0\n")
    assert _fs.is_network_filesystem("/mnt/shared/runs.db", str(mounts))
    assert _fs.is_network_filesystem("/mnt/my share/q.db", str(mounts))
    assert not _fs.is_network_filesystem("/home/me/runs.db", str(mounts))
    assert not _fs.is_network_filesystem("/mnt/sharedother/runs.db", str(mounts))


async def test_network_filesystem_falls_back_to_rollback_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from khadem_nb.drivers import sqlite as sqlite_driver

    monkeypatch.setattr(sqlite_driver, "is_network_filesystem", lambda path: True)
    with caplog.at_level(logging.WARNING):
        manager = await QueueManager(f"sqlite:///{tmp_path}/nfs.db").init()
    assert manager.driver.journal_mode == "delete"  # type: ignore[attr-defined]
    assert "network filesystem" in caplog.text and "nfs.db" in caplog.text
    job_id = await manager.dispatch(Echo("still works"))
    await manager.start_worker(max_jobs=1, delay=0.05)
    assert (await manager.get_job(job_id)).result == "still works"
    await manager.close()


async def test_a_held_write_lock_never_blocks_the_event_loop(tmp_path: Path) -> None:
    """Another process holding the write lock: the statement moves to the I/O thread."""
    import asyncio
    import threading

    manager = await QueueManager(f"sqlite:///{tmp_path}/q.db").init()
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        conn = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(10)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(5)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not release.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def let_go() -> None:
        await asyncio.sleep(0.5)
        release.set()

    job_id, _, _ = await asyncio.gather(manager.dispatch(Echo("waited")), ticker(), let_go())
    holder.join()
    assert ticks >= 10, "the loop was blocked while the database was locked"
    assert (await manager.get_job(job_id)).status.value == "queued"
    await manager.close()


async def test_a_bulk_dispatch_on_sqlite_is_one_transaction(tmp_path: Path) -> None:
    """dispatch_many hands its chunks to push_chunks; on SQLite they become one insert, so a
    write that fails late (here a duplicate id in the last chunk) stores none of them."""
    manager = await QueueManager(f"sqlite:///{tmp_path / 'q.db'}").init()
    records = [manager.build_record(Echo(i)) for i in range(450)]
    clash = manager.build_record(Echo("clash"))
    clash.id = records[0].id
    chunks = [records[:200], records[200:400], [*records[400:], clash]]
    with pytest.raises(DriverError, match="UNIQUE constraint failed"):
        await manager.driver.push_chunks(iter(chunks))
    assert sum((await manager.counts()).values()) == 0
    ids = await manager.dispatch_many([Echo(i) for i in range(450)])
    assert (await manager.counts())["queued"] == 450 and len(set(ids)) == 450
    await manager.close()


def _open_sqlite(path: str) -> str | None:
    from khadem_nb.config import QueueSettings
    from khadem_nb.drivers.sqlite import SqliteStore

    try:
        store = SqliteStore(path, QueueSettings())
        store.open()
        store.close()
    except Exception as exc:  # reported to the test, which names it
        return repr(exc)
    return None


def test_processes_opening_a_new_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL can answer "database is locked" at once (no busy timeout)
    while another process does the same: every opener waits its turn instead of failing."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(4) as pool:
        for round_ in range(20):
            path = str(tmp_path / f"{round_}.db")
            assert pool.map(_open_sqlite, [path] * 4) == [None] * 4, round_
