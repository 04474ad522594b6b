"""Shipped code: fingerprints, envelopes checked before a byte is unpickled, and workers that
run code defined elsewhere (real worker processes in another working directory)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import need_redis, purge_url
from procs import env, kill

from khadem_nb import ConfigError, JobStatus, QueueManager, SerializationError
from khadem_nb.config import parse_config
from khadem_nb.runtime.shipping import PYTHON, Envelope, fingerprint, job_seal, seal, store_identity

SECRET = "a shared secret of the notebook and its workers"


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/q.db"
        return
    queue_url = f"{need_redis()}?prefix=khadem-ship-{tmp_path.name}"
    yield queue_url
    asyncio.run(purge_url(queue_url))


def worker(url: str, folder: Path, *flags: str, secret: str | None = SECRET) -> subprocess.Popen[str]:
    """A `khadem-nb worker` process in ``folder``, which holds none of the dispatcher's files."""
    folder.mkdir(exist_ok=True)
    environment = {k: v for k, v in env().items() if k != "KHADEM_SECRET"}
    if secret is not None:
        environment["KHADEM_SECRET"] = secret
    return subprocess.Popen([sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING", "worker",
                             "--queue-url", url, *flags], cwd=folder, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def dispatcher(folder: Path, body: str, *, secret: str = SECRET, timeout: float = 120) -> str:
    """Run ``body`` as a script's ``__main__`` in ``folder`` (its own modules beside it); its
    printed output."""
    folder.mkdir(exist_ok=True)
    script = folder / "main.py"
    script.write_text(textwrap.dedent(body))
    run = subprocess.run([sys.executable, str(script)], cwd=folder, capture_output=True, text=True,
                         timeout=timeout, env={**env(), "KHADEM_SECRET": secret})
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


CELL_JOB = """
    import khadem_nb as kn
    import shiphelpers

    q = kn.Queue({url!r}, ship_code=True, ship_modules=["shiphelpers"])
    offset = 7

    @q.job
    def compute(x: int) -> int:
        return shiphelpers.scale(x) + offset

    g = compute.map([{{"x": i}} for i in range(4)])
    print(g.wait(timeout=90).results()["result"].tolist())
    print(g.results()["code"].nunique())
    q.close()
"""


def test_a_main_job_and_a_helper_module_run_on_a_worker_elsewhere(url: str, tmp_path: Path) -> None:
    (tmp_path / "notebook").mkdir()
    (tmp_path / "notebook" / "shiphelpers.py").write_text("def scale(x):\n    return 10 * x\n")
    process = worker(url, tmp_path / "worker", "--trust-code")
    try:
        out = dispatcher(tmp_path / "notebook", CELL_JOB.format(url=url))
        assert out.split("\n")[:2] == ["[7, 17, 27, 37]", "1"]
        assert process.poll() is None
    finally:
        kill(process)


ARRAY_JOB = """
    import numpy as np

    import khadem_nb as kn

    q = kn.Queue({url!r}, ship_code=True, artifacts={store!r})

    @q.job
    def normalise(xs):
        return {{"unit": xs / np.linalg.norm(xs), "norm": float(np.linalg.norm(xs))}}

    out = normalise.dispatch(np.full(10_000, 2.0)).result(timeout=90)
    unit = out["unit"]
    print(type(unit).__name__, unit.shape, round(float(unit @ unit), 6), out["norm"])
    print(normalise.dispatch(np.full(10_000, 2.0)).record().payload["kwargs"]["xs"]["kind"])
    q.close()
"""


def test_shipped_code_passes_arrays_through_the_artifact_store(url: str, tmp_path: Path) -> None:
    """A cell's function, shipped, given a 80 kB array and returning one: both travel through the
    artifact store (the records keep references) between the notebook and a trusting worker."""
    store = str(tmp_path / "store")
    process = worker(url, tmp_path / "worker", "--trust-code", "--artifacts", store)
    try:
        out = dispatcher(tmp_path / "notebook", ARRAY_JOB.format(url=url, store=store))
        assert out.split("\n")[:2] == ["memmap (10000,) 1.0 200.0", "npy"]
        assert process.poll() is None
    finally:
        kill(process)


FAILING_CASES = {
    "untrusting worker": ((), SECRET, "trust check"),
    "wrong secret": (("--trust-code",), "another secret, sixteen bytes+", "seal check"),
}


@pytest.mark.parametrize("case", FAILING_CASES)
def test_refused_code_fails_the_job_and_the_worker_goes_on(url: str, tmp_path: Path, case: str) -> None:
    flags, secret, check = FAILING_CASES[case]
    process = worker(url, tmp_path / "worker", *flags, "--import", "jobs", secret=secret)
    try:
        out = dispatcher(tmp_path / "notebook", f"""
            import khadem_nb as kn
            from jobs import Echo

            q = kn.Queue({url!r}, ship_code=True)

            @q.job
            def shipped() -> str:
                return "ran"

            h = shipped.dispatch()
            try:
                h.result(timeout=60)
            except kn.JobFailedError as exc:
                print("FAILED", exc.record.error)
            print(q.run(q.manager.dispatch_and_wait(Echo("still here"), timeout=60)))
            q.close()
        """)
        assert f"FAILED ShippedCodeError: shipped code refused ({check})" in out, out
        assert "still here" in out
        assert process.poll() is None
    finally:
        kill(process)


class Boobytrap:
    """Unpickling this writes a file: proof that a refused envelope was never unpickled."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path(self.target).touch, ())


def sealed_record(manager: QueueManager, digest: str, secret: bytes, *, name: str = "__main__.trap",
                  payload: Any = None, queue: str = "default") -> Any:
    """A record of ``digest``'s shipped code as a dispatcher holding ``secret`` seals it."""
    from khadem_nb.job import JobRecord

    payload = {"kwargs": {}} if payload is None else payload
    code = f"{digest}.{job_seal(secret, manager.settings, queue, name, digest, payload)}"
    return JobRecord(id="f" * 32, name=name, payload=payload, code=code, queue=queue, created_ms=1,
                     available_ms=1)


async def _run_shipped(manager: QueueManager, envelope: bytes, digest: str, secret: bytes,
                       name: str = "__main__.trap") -> Any:
    """Store ``envelope`` under ``digest``, dispatch a job that names it, run one worker job."""
    await manager.driver.store_code(digest, envelope)
    record = sealed_record(manager, digest, secret, name=name)
    await manager.push([record])
    await manager.start_worker(max_jobs=1, delay=0.05)
    return await manager.get_job(record.id)


@pytest.mark.parametrize("driver", ["memory", "sqlite", "file"])
@pytest.mark.parametrize("how", ["wrong secret", "payload swapped", "python", "garbage", "missing"])
async def test_nothing_is_unpickled_before_the_checks(tmp_path: Path, driver: str, how: str) -> None:
    target = tmp_path / "unpickled"
    secret = b"the worker's own secret, 16+ bytes"
    path = tmp_path / "q.db" if driver == "sqlite" else tmp_path / "q"
    config = {"driver": driver, "trust_code": True, "secret": secret.decode()}
    if driver != "memory":
        config["path"] = str(path)
    manager = await QueueManager({"queue": config}).init()
    store = {"store": store_identity(manager.settings)}
    signed_by = b"somebody else's secret, 16+ bytes" if how == "wrong secret" else secret
    trap = seal(Boobytrap(str(target)), kind="function", name="__main__.trap", code="c" * 32,
                secret=signed_by, limit=2**20, python="3.10" if how == "python" else PYTHON, extra=store)
    if how == "payload swapped":  # a good envelope's bytes replaced by the trap's
        good = seal(len, kind="function", name="__main__.trap", code="c" * 32, secret=secret, limit=2**20,
                    extra=store)
        parts = Envelope.parse(good)
        trap = good[: len(good) - len(parts.payload)] + Envelope.parse(trap).payload
    if how == "garbage":
        trap = b"\x80\x04 not an envelope"
    digest = "c" * 32
    if how == "missing":
        await manager.push([sealed_record(manager, digest, secret)])
        await manager.start_worker(max_jobs=1, delay=0.05)
        record = await manager.get_job("f" * 32)
    else:
        record = await _run_shipped(manager, trap, digest, secret)
    await manager.close()
    assert record.status is JobStatus.FAILED, record
    expected = {"wrong secret": "signature check", "payload swapped": "signature check",
                "python": "python check", "garbage": "format check",
                "missing": "no code was shipped under its digest"}[how]
    assert expected in (record.error or ""), record.error
    assert not target.exists()


async def test_package_versions_warn_or_fail(tmp_path: Path) -> None:
    secret = b"sixteen bytes or more, surely"

    def uses_pytest() -> str:
        return pytest.__name__

    uses_pytest.__module__ = "__main__"
    envelope = seal(uses_pytest, kind="function", name="__main__.uses_pytest", code="d" * 32,
                    secret=secret, limit=2**22)
    header = Envelope.parse(envelope).verified(secret).header
    assert header["packages"].get("pytest") == pytest.__version__
    forged = seal(uses_pytest, kind="function", name="__main__.uses_pytest", code="d" * 32,
                  secret=secret, limit=2**22, extra={"store": "memory"})
    forged = forged.replace(f'"pytest":"{pytest.__version__}"'.encode(), b'"pytest":"0.0.1"')
    assert b'"pytest":"0.0.1"' in forged  # the forgery breaks the signature: sign it anew
    parts = Envelope.parse(forged)
    import hashlib
    import hmac

    from khadem_nb.runtime.shipping import MAGIC
    mac = hmac.new(secret, MAGIC + parts.head + b"\n" + parts.payload, hashlib.sha256).hexdigest().encode()
    forged = MAGIC + mac + b"\n" + parts.head + b"\n" + parts.payload
    for strict in (False, True):
        manager = await QueueManager({"queue": {"driver": "memory", "trust_code": True,
                                                "secret": secret.decode(), "strict_versions": strict}}).init()
        record = await _run_shipped(manager, forged, "d" * 32, secret, "__main__.uses_pytest")
        await manager.close()
        if strict:
            assert record.status is JobStatus.FAILED and "versions check" in (record.error or "")
        else:
            assert record.status is JobStatus.COMPLETED and record.result == "pytest"
            assert record.meta["warnings"] == [f"pytest is {pytest.__version__} on this worker, 0.0.1 "
                                               "where the code was shipped"]


def test_fingerprints_see_code_not_place() -> None:
    def define(source: str, filename: str) -> Any:
        namespace: dict[str, Any] = {"__name__": "__main__"}
        exec(compile(source, filename, "exec"), namespace)
        return namespace["f"]

    body = "SCALE = 2\ndef helper(x):\n    return x * SCALE\ndef f(x, y=1):\n    return helper(x) + y\n"
    same = fingerprint(define(body, "<cell 1>"))
    assert fingerprint(define("\n\n" + body, "<cell 2>")) == same  # run again in another cell
    assert fingerprint(define(body.replace("x * SCALE", "x * SCALE + 0"), "<c>")) != same  # helper
    assert fingerprint(define(body.replace("SCALE = 2", "SCALE = 3"), "<c>")) != same  # a constant
    assert fingerprint(define(body.replace("y=1", "y=2"), "<c>")) != same  # a default
    closures = [define(f"def outer():\n    n = {n}\n    def f():\n        return n\n    return f\n"
                       "f = outer()\n", "<c>") for n in (1, 1, 2)]
    assert fingerprint(closures[0]) == fingerprint(closures[1]) != fingerprint(closures[2])


async def test_bad_shipping_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        parse_config({"queue": {"driver": "memory", "secret": "short"}})
    saved = os.environ.pop("KHADEM_SECRET", None)
    try:
        with pytest.raises(ConfigError, match="KHADEM_SECRET"):
            parse_config({"queue": {"driver": "memory", "ship_code": True}})
        import khadem_nb as kn

        with pytest.raises(ConfigError, match="KHADEM_SECRET"):
            kn.Queue(ship_code=True)
    finally:
        if saved is not None:
            os.environ["KHADEM_SECRET"] = saved
    settings = parse_config({"queue": {"driver": "memory", "ship_code": True, "secret": SECRET}})
    assert SECRET not in repr(settings)
    with pytest.raises(ConfigError, match="ship_modules"):
        parse_config({"queue": {"driver": "memory", "ship_modules": 3}})

    import khadem_nb as kn

    q = kn.Queue(ship_code=True, secret=SECRET)
    try:
        lock = threading.Lock()

        def holds_a_lock() -> bool:
            return lock.locked()

        holds_a_lock.__module__ = "__main__"
        job = q.job(holds_a_lock)
        with pytest.raises(SerializationError, match=r"cannot be shipped.*lock"):
            job.dispatch()
        big = bytes(3 * 2**20)

        def closes_over_data() -> int:
            return len(big)

        closes_over_data.__module__ = "__main__"
        small = kn.Queue({"queue": {"driver": "memory", "ship_code": True, "secret": SECRET,
                                    "code_limit": 2**20}})
        with pytest.raises(SerializationError, match=r"over queue\.code_limit"):
            small.job(closes_over_data).dispatch()
        async def stored() -> bytes | None:
            return await small.manager.driver.load_code(fingerprint(closes_over_data))

        assert small.run(stored()) is None  # refused, not stored
        small.close()
    finally:
        q.close()


REPLAYS = ["no seal", "other arguments", "other job name", "other queue", "other store"]


@pytest.mark.parametrize("how", REPLAYS)
async def test_a_copied_envelope_or_a_forged_record_never_runs(tmp_path: Path, how: str) -> None:
    """Someone who can write to the storage but has no secret copies a signed envelope into
    another queue's code store, and writes records with their own name, arguments or queue:
    a trusting worker refuses every one before anything is unpickled. A record without a seal
    is not shipped code at all: no worker that lacks its name takes it, and it waits."""
    url = need_redis()
    secret = b"the shared secret, 16+ bytes long"
    target = tmp_path / "unpickled"
    made_for = QueueManager({"queue": {"url": url, "prefix": f"secA-{tmp_path.name}"}})
    victim = QueueManager({"queue": {"url": url, "prefix": f"secB-{tmp_path.name}", "trust_code": True,
                                     "secret": secret.decode()}})
    await made_for.init()
    await victim.init()
    try:
        store = "store-of-A" if how == "other store" else store_identity(victim.settings)
        envelope = seal(Boobytrap(str(target)), kind="function", name="__main__.trap", code="e" * 32,
                        secret=secret, limit=2**20, extra={"store": store})
        await victim.driver.store_code("e" * 32, envelope)
        record = sealed_record(victim, "e" * 32, secret, payload={"kwargs": {"x": 1}})
        if how == "no seal":
            record.code = "e" * 32
        elif how == "other arguments":
            record.payload = {"kwargs": {"x": 2}}
        elif how == "other job name":
            record = sealed_record(victim, "e" * 32, secret, name="__main__.other", payload={"kwargs": {}})
            record.code = sealed_record(victim, "e" * 32, secret).code  # a seal copied from a real job
            record.name = "__main__.other"
        elif how == "other queue":  # a whole record copied from queue default into queue other
            record.queue = "other"
        await victim.push([record])
        if how == "no seal":
            worker = await victim.start_worker(delay=0.05, queues=[record.queue], run_in_background=True)
            await asyncio.sleep(0.5)
            await worker.stop()
        else:
            await victim.start_worker(max_jobs=1, delay=0.05, queues=[record.queue])
        ran = await victim.get_job(record.id)
    finally:
        await victim.driver.purge()
        await made_for.driver.purge()
        await victim.close()
        await made_for.close()
    if how == "no seal":
        assert (ran.status, ran.attempt) == (JobStatus.QUEUED, 0), ran
    else:
        assert ran.status is JobStatus.FAILED, ran
        assert "seal check" in (ran.error or ""), ran.error
    assert not target.exists()


def test_a_trusting_worker_hides_its_secret_from_the_jobs_it_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    process = worker(url, tmp_path / "worker", "--trust-code")
    try:
        out = dispatcher(tmp_path / "notebook", f"""
            import khadem_nb as kn

            q = kn.Queue({url!r}, ship_code=True)

            @q.job
            def peek() -> str:
                import os
                return repr(os.environ.get("KHADEM_SECRET"))

            @q.job(isolation="process")
            def peek_isolated() -> str:
                import os
                return repr(os.environ.get("KHADEM_SECRET"))

            print(peek.dispatch().result(timeout=60), peek_isolated.dispatch().result(timeout=60))
            q.close()
        """)
        assert out.split() == ["None", "None"], out
        assert process.poll() is None
    finally:
        kill(process)
