"""The artifact store: large values and files of jobs kept by content beside the queue.

On a local folder and on a real S3 API (moto's server, through s3fs): objects are written
once per content and read back checked (a damaged or missing one is a ``CorruptQueueError``
naming its digest); on every queued driver a job's large arguments and results travel as
references (records stay small) and come back as values (arrays memory-mapped from a local
store); ``g.results()`` shows light handles; a ``khadem-nb worker`` process writes to S3; and
bad input (a store URL fsspec cannot open, a DataFrame without a store, a value over
``queue.max_artifact``) gets a clear error.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import QUEUED_DRIVERS, driver_config, need_redis, purge_url
from jobs import MakeArrays, SumsArray
from procs import env, finish
from s3_server import S3, moto_server, s3_server  # noqa: F401 - the session fixture

import khadem_nb as kn
from khadem_nb import (
    ArtifactRef,
    ArtifactStore,
    ConfigError,
    CorruptQueueError,
    JobStatus,
    QueueManager,
    SerializationError,
)
from khadem_nb.artifacts.store import stores
from khadem_nb.runtime.waiting import outcome

DURABLE_WITHOUT_DEFAULT = ("redis", "postgres")


def store_on(where: str, tmp_path: Path, s3: S3 | None) -> ArtifactStore:
    if where == "folder":
        return ArtifactStore(str(tmp_path / "store"), max_artifact=2**30)
    assert s3 is not None
    store = ArtifactStore(s3.url(tmp_path.name), s3.options, max_artifact=2**30)
    stores.register(store)
    return store


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    s3 = request.getfixturevalue("s3_server") if request.param == "s3" else None
    return store_on(request.param, tmp_path, s3)


def test_values_round_trip_once_per_content(store: ArtifactStore, tmp_path: Path) -> None:
    array = np.arange(12_000, dtype=np.float64).reshape(100, 120)
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    plot = tmp_path / "fig.png"
    plot.write_bytes(b"\x89PNG not really" * 100)
    refs = {"array": store.put(array, "array"), "again": store.put(array.copy(), "again"),
            "frame": store.put(frame, "frame"), "raw": store.put(b"\x00\x01" * 5000, "raw"),
            "file": store.put(kn.artifact(plot), "file")}
    assert refs["array"] == refs["again"]  # one object for one content
    assert len(store.objects()) == 4
    assert refs["array"].describe() == "ndarray (100, 120) float64, 96 kB"
    assert np.array_equal(refs["array"].load(), array)
    pd.testing.assert_frame_equal(refs["frame"].load(), frame)
    assert refs["raw"].load() == b"\x00\x01" * 5000
    local = refs["file"].load()
    assert local.name == "fig.png" and local.read_bytes() == plot.read_bytes()
    assert ArtifactRef.from_json(json.loads(json.dumps(refs["frame"].to_json()))) == refs["frame"]


def test_a_local_store_hands_arrays_back_memory_mapped(tmp_path: Path) -> None:
    store = store_on("folder", tmp_path, None)
    loaded = store.put(np.ones((64, 64)), "w").load()
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable


def test_a_damaged_or_missing_object_names_its_digest(tmp_path: Path) -> None:
    store = store_on("folder", tmp_path, None)
    ref = store.put(np.arange(5000), "xs")
    path = Path(store._object_path(ref.digest, ref.kind))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, another digest
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptQueueError, match=f"artifact {ref.digest} .* does not match its digest"):
        ref.load()
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(CorruptQueueError, match=f"artifact {ref.digest} .* is 100 bytes"):
        ref.load()
    path.unlink()
    with pytest.raises(CorruptQueueError, match=f"artifact {ref.digest} is missing"):
        ref.load()


def test_a_damaged_object_on_s3_is_refused(s3_server: S3, tmp_path: Path) -> None:  # noqa: F811
    store = store_on("s3", tmp_path, s3_server)
    ref = store.put(b"z" * 10_000, "raw")
    store.fs.pipe(store._object_path(ref.digest, ref.kind), b"y" * 10_000)
    with pytest.raises(CorruptQueueError, match=f"artifact {ref.digest} .* does not match its digest"):
        ref.load()


def test_bad_store_urls_and_values_get_clear_errors(tmp_path: Path, s3_server: S3) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="nope://x cannot be opened"):
        ArtifactStore("nope://x", max_artifact=2**30)
    with pytest.raises(ConfigError, match="s3://no-such-bucket/runs cannot be opened"):
        ArtifactStore("s3://no-such-bucket/runs", s3_server.options, max_artifact=2**30)
    store = ArtifactStore(str(tmp_path / "s"), max_artifact=4096)
    with pytest.raises(SerializationError, match=r"result\['w'\] is 80,000 bytes, over queue.max_artifact"):
        store.put(np.zeros(10_000), "result['w']")
    with pytest.raises(SerializationError, match="cannot be stored as npy"):
        ArtifactStore(str(tmp_path / "t"), max_artifact=2**30).put(np.array([object()] * 600), "xs")
    with pytest.raises(SerializationError, match="no such file"):
        kn.artifact(tmp_path / "missing.png")


async def test_a_store_url_that_cannot_be_opened_is_refused_at_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the artifact store nope://x cannot be opened"):
        await QueueManager({"queue": {"driver": "memory", "artifacts": "nope://x"}}).init()


def config_with_store(driver: str, tmp_path: Path) -> dict[str, Any]:
    extra = {"artifacts": str(tmp_path / "shared-store")} if driver in DURABLE_WITHOUT_DEFAULT else {}
    return driver_config(driver, tmp_path, **extra)


@pytest.mark.parametrize("driver", QUEUED_DRIVERS)
async def test_large_arguments_and_results_travel_as_references(driver: str, tmp_path: Path) -> None:
    manager = await QueueManager(config_with_store(driver, tmp_path)).init()
    try:
        await manager.driver.purge()
        made = await manager.dispatch(MakeArrays(200, str(tmp_path)))
        summed = await manager.dispatch(SumsArray(np.ones((300, 40))))
        worker = await manager.start_worker(run_in_background=True, concurrency=2)
        try:
            results = await manager.wait([made, summed], timeout=30)
        finally:
            await worker.stop()
        records = {r.id: r for r in results}
        assert all(r.status is JobStatus.COMPLETED for r in records.values()), [r.error for r in results]
        stored = json.dumps(records[made].result)
        assert len(stored) < 1500 and '"kind":"npy"' in stored.replace(" ", "")  # references, not data
        assert len(json.dumps((await manager.get_job(summed)).payload)) < 500
        value = outcome(records[made])
        assert value["w"].shape == (200, 200) and float(value["w"][199, 199]) == 200 * 200 - 1
        assert list(value["df"]["sq"])[-1] == 199 * 199 and list(value["small"]) == [0, 1, 2]
        assert value["plot"].read_text() == "a plot of 200\n"
        assert outcome(records[summed]) == {"sum": 12_000.0, "type": "memmap", "shape": [300, 40]}
    finally:
        await manager.driver.purge()
        await manager.close()


@pytest.mark.parametrize("driver", DURABLE_WITHOUT_DEFAULT)
async def test_without_a_store_a_dataframe_says_how_to_give_one(driver: str, tmp_path: Path) -> None:
    manager = await QueueManager(driver_config(driver, tmp_path)).init()
    try:
        await manager.driver.purge()
        assert manager.artifacts is None
        with pytest.raises(SerializationError, match=r"needs an artifact store.*queue\.artifacts"):
            await manager.dispatch(SumsArray(pd.DataFrame({"a": [1]})))
        job = await manager.dispatch(SumsArray(np.ones(2000)))  # an array stays in the record as JSON
        made = await manager.dispatch(MakeArrays(3))
        worker = await manager.start_worker(run_in_background=True)
        try:
            done, failed = await manager.wait([job, made], timeout=30)
        finally:
            await worker.stop()
        assert done.status is JobStatus.COMPLETED and done.result["sum"] == 2000.0
        assert failed.status is JobStatus.FAILED and "needs an artifact store" in (failed.error or "")
    finally:
        await manager.driver.purge()
        await manager.close()


async def test_json_over_the_inline_limit_moves_to_the_store(tmp_path: Path) -> None:
    config = driver_config("sqlite", tmp_path, inline_limit="1KiB")
    async with QueueManager(config) as manager:
        big = {"rows": [{"i": i, "name": f"row {i}"} for i in range(500)], "tag": "kept"}
        job = await manager.dispatch(SumsArray(np.arange(4)))
        record = await manager.get_job(job)
        assert record is not None and len(json.dumps(record.payload)) < 1024
        encoded = manager.serializer.encode_large(big, "result")
        assert encoded["rows"]["__kn__"] == "artifact" and encoded["tag"] == "kept"
        assert kn.load(manager.serializer.decode_loaded(encoded)) == big


def test_a_sweep_frame_holds_handles_until_loaded(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")

    @q.job(name="artifact_sweep_point")
    def point(n: int) -> dict[str, Any]:
        return {"w": np.full((n, 50), float(n)), "loss": 1.0 / n}

    try:
        q.start(concurrency=2)
        group = point.sweep(n=[100, 200, 300])
        group.wait(timeout=60)
        frame = group.results()
        assert [repr(h) for h in frame["w"]] == [f"<ndarray ({n}, 50) float64, {n * 400 // 1000} kB>"
                                                 for n in (100, 200, 300)]
        assert (tmp_path / "runs.db.artifacts" / "objects").is_dir()
        loaded = kn.load(frame["w"])
        assert [float(w[0, 0]) for w in loaded] == [100.0, 200.0, 300.0]
        assert point.dispatch(7).result(timeout=30)["w"].shape == (7, 50)
    finally:
        q.stop()
        q.close()


def test_a_worker_process_writes_results_to_s3(s3_server: S3, tmp_path: Path) -> None:  # noqa: F811
    url = f"{need_redis()}?prefix=khadem-test-s3-{tmp_path.name}-{os.getpid()}"
    store_url = s3_server.url(f"runs-{tmp_path.name}")
    config = {"queue": {"url": url, "artifacts": store_url, "artifacts_options": s3_server.options}}

    async def dispatch() -> list[str]:
        manager = QueueManager(config)
        await manager.init()
        ids = [await manager.dispatch(MakeArrays(n)) for n in (64, 128)]
        ids.append(await manager.dispatch(SumsArray(np.ones((100, 100)))))
        await manager.close()
        return ids

    ids = asyncio.run(dispatch())
    worker = subprocess.Popen([sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING", "worker",
                               "--queue-url", url, "--import", "jobs", "--burst", "--artifacts", store_url],
                              env={**env(), **s3_server.env, "KHADEM_CACHE": str(tmp_path / "cache")},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finish([worker])

    async def read() -> list[Any]:
        manager = QueueManager(config)
        await manager.init()
        try:
            return [outcome(record) for record in await manager.wait(ids, timeout=30)]
        finally:
            await manager.driver.purge()
            await manager.close()

    small, large, summed = asyncio.run(read())
    assert small["w"].shape == (64, 64) and large["w"].shape == (128, 128)
    assert float(large["w"].sum()) == float(np.arange(128 * 128, dtype=np.float32).sum())
    assert summed == {"sum": 10_000.0, "type": "ndarray", "shape": [100, 100]}
    assert len(store_on("s3", tmp_path, s3_server).fs.find(f"{s3_server.bucket}/runs-{tmp_path.name}")) >= 5
    asyncio.run(purge_url(url))


async def test_a_store_gone_fails_the_job_not_the_worker(tmp_path: Path) -> None:
    """The S3 server stops after the store opened: the job returning an array fails with a
    DriverUnavailableError naming the store (and would be retried); the worker runs on."""
    with moto_server("khadem-gone") as (server, proc):
        quick = {"connect_timeout": 1, "retries": {"max_attempts": 1}}
        options = {**server.options, "config_kwargs": quick}
        store = {"artifacts": server.url("runs"), "artifacts_options": options}
        async with QueueManager({"queue": {"driver": "memory", **store}}) as manager:
            assert manager.artifacts is not None
            proc.terminate()
            proc.wait(timeout=10)
            big = await manager.dispatch(MakeArrays(64), max_attempts=1)
            small = await manager.dispatch(SumsArray(np.ones(3)), max_attempts=1)  # nothing to store
            worker = await manager.start_worker(run_in_background=True)
            try:
                failed, done = await manager.wait([big, small], timeout=60)
            finally:
                await worker.stop()
    assert failed.status is JobStatus.FAILED
    error = failed.error or ""
    assert "DriverUnavailableError" in error and "s3://khadem-gone/runs" in error
    assert done.status is JobStatus.COMPLETED


@pytest.mark.parametrize("driver", QUEUED_DRIVERS)
async def test_objects_no_record_refers_to_are_collected(driver: str, tmp_path: Path) -> None:
    """``manager.trim()`` collects what no record refers to (forgotten records' arrays), keeps
    what records do (through a JSON object too), and never touches objects younger than
    ``queue.artifact_grace``."""
    config = config_with_store(driver, tmp_path)
    config["queue"]["inline_limit"] = "1KiB"
    async with QueueManager({"queue": {**config["queue"], "artifact_grace": 0}}) as manager:
        await manager.driver.purge()
        kept = await manager.dispatch(SumsArray([np.full(1000, 1.0), list(range(400))]))
        dropped = await manager.dispatch(SumsArray(np.full(1000, 2.0)))
        store = manager.artifacts
        assert store is not None and len(store.objects()) == 3  # two arrays and a JSON object
        await manager.cancel(dropped)
        await manager.forget([dropped])
        assert await manager.trim() == 1
        assert len(store.objects()) == 2
        payload = manager.serializer.decode_loaded((await manager.get_job(kept)).payload)
        assert float(payload["xs"][0][0]) == 1.0 and payload["xs"][1] == list(range(400))
        await manager.driver.purge()
    if driver == "memory":  # its store went with it
        return
    async with QueueManager(config) as manager:  # the default grace, an hour: no record, none collected
        assert manager.artifacts is not None and await manager.trim() == 0
        assert len(manager.artifacts.objects()) == 2


def test_a_notebook_queue_takes_its_store_and_refuses_a_bad_one(tmp_path: Path) -> None:
    q = kn.Queue("memory://", artifacts=str(tmp_path / "store"))
    try:
        assert q.manager.artifacts is not None and q.manager.artifacts.url == str(tmp_path / "store")
    finally:
        q.close()
    with pytest.raises(ConfigError, match="artifacts= must be an fsspec URL or a folder, got int"):
        kn.Queue("memory://", artifacts=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="artifacts_options= must be a mapping"):
        kn.Queue("memory://", artifacts="/tmp/x", artifacts_options=["endpoint"])  # type: ignore[arg-type]
