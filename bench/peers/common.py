"""Shared by the peer benches: the bench Redis URL, the stamp that marks a drain's end, and the
timing helpers every bench uses the same way."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
DONE_KEY = "bench:done"


def mark_done() -> None:
    redis.Redis.from_url(URL).set(DONE_KEY, time.time())


_ran = 0
_lock = threading.Lock()
_expected = int(os.environ.get("BENCH_N", "0"))


def tick() -> None:
    """Called by every no-op job: the worker process that runs the BENCH_N-th job stamps the end.

    Counting in the worker (not in Redis) costs every engine the same few hundred nanoseconds
    and does not depend on the order an engine runs its jobs in.
    """
    global _ran
    with _lock:
        _ran += 1
        last = _ran == _expected
    if last:
        mark_done()


def tool(name: str) -> str:
    """A console script installed beside this interpreter (the bench environment's bin/)."""
    return str(Path(sys.executable).parent / name)


def stop(worker: subprocess.Popen[bytes]) -> None:
    """Kill a worker and every process it forked (Dramatiq, Celery and taskiq fork children);
    it was started with ``start_new_session=True``, so it leads its own process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()


def time_to_stamp(command: list[str], env: dict[str, str], cwd: Path, n: int, what: str) -> float:
    """Seconds from starting ``command`` (a worker, on n queued no-ops) until the n-th job
    stamped ``DONE_KEY``; the worker is killed after."""
    client = redis.Redis.from_url(URL)
    client.delete(DONE_KEY)
    started = time.perf_counter()
    worker = subprocess.Popen(command, env={**env, "BENCH_N": str(n)}, cwd=cwd, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = started + 600
        while client.get(DONE_KEY) is None:
            if time.perf_counter() > deadline or worker.poll() is not None:
                raise RuntimeError(f"{what}: the worker never ran job {n}")
            time.sleep(0.001)
        return time.perf_counter() - started
    finally:
        stop(worker)


async def timed_calls(n: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    """Seconds each of ``n`` sequential awaits of ``call()`` took (a round trip each)."""
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    return latencies


def p50_p99_ms(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000
