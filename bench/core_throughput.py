"""Memory-driver end-to-end throughput against raw ``asyncio.Queue``, in one run.

For each round: dispatch N no-op async jobs one ``await dispatch()`` at a time (JSON encoding
and the record included), then drain them with one worker (``max_jobs=N``); separately,
N puts + N gets on an ``asyncio.Queue`` (both ``put_nowait`` and the coroutine ``put``, which
is what an awaited dispatch compares with), and the bare steps of a job with nothing around
them (encode, record, JSON text, store; pop, token, parse, rebuild, run, store) to show
what the framework itself costs. Prints medians of ROUNDS rounds and the ratios.

This machine's CPU runs at two speeds that alternate over seconds (a 100,000-item
``asyncio.Queue`` round measured 1.15 M or 1.88 M items/s, back to back), so a single round of
a baseline (a tenth of a second) lands in one speed or the other and decides the ratio. Each
round therefore runs the khadem_nb dispatch + drain between two spells of each baseline, half
as long as that round before it and half after, repeating the baseline's N items and counting
them over the whole spell: both sides see the same mix of speeds. The ratios are the median of
the rounds' own ratios.

    python bench/core_throughput.py [--n 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable

from khadem_nb import QueueJob, QueueManager
from khadem_nb._ids import new_job_id, new_token
from khadem_nb.drivers.memory import PriorityLanes
from khadem_nb.job import JobRecord, JobStatus
from khadem_nb.serializer import decode_value, dumps


class NoopJob(QueueJob):
    async def handle(self) -> None:
        return None


async def khadem_round(n: int) -> tuple[float, float]:
    manager = await QueueManager({"queue": {"driver": "memory"}}).init()  # default retention
    job = NoopJob()
    started = time.perf_counter()
    for _ in range(n):
        await manager.dispatch(job)
    dispatched = time.perf_counter()
    await manager.start_worker(max_jobs=n, delay=0.01)
    drained = time.perf_counter()
    assert manager.get_metrics()["total_completed"] == n
    await manager.close()
    return dispatched - started, drained - dispatched


async def stripped_drain_round(n: int) -> float:
    """The real dispatch and driver, drained by a bare loop (no worker, monitor, context or
    hooks): how much a leaner executor could gain at most."""
    manager = await QueueManager({"queue": {"driver": "memory"}}).init()
    job = NoopJob()
    started = time.perf_counter()
    for _ in range(n):
        await manager.dispatch(job)
    driver, serializer = manager.driver, manager.serializer
    while claimed := await driver.reserve(["default"], 1, 0):
        record = claimed[0]
        await driver.complete(record, await serializer.decode_job(record.name, record.payload).handle())
    elapsed = time.perf_counter() - started
    await manager.close()
    return elapsed


async def bare_steps_round(n: int) -> float:
    """The steps every job needs, inlined: no worker, executor, monitor, context or index."""
    manager = await QueueManager({"queue": {"driver": "memory"}}).init()
    encode, factory = manager.serializer.encode_job, manager.serializer.factories.get("NoopJob")
    assert factory is not None
    parse = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
    rows: dict[str, JobRecord] = {}
    lanes = PriorityLanes()
    job = NoopJob()
    started = time.perf_counter()
    for _ in range(n):
        name, payload = encode(job)
        record = JobRecord(new_job_id(), name, dumps(payload), "default", 0, 0, 1, JobStatus.QUEUED)
        rows[record.id] = record
        lanes.append(0, record.id)
    texts: dict[str, str] = {}
    for _ in range(n):
        claimed = rows[lanes.popleft() or ""]
        claimed.status, claimed.token, claimed.attempt = JobStatus.ACTIVE, new_token(), claimed.attempt + 1
        text = texts[claimed.id] = claimed.payload
        claimed.payload = parse(text, 0)[0]
        await factory(decode_value(claimed.payload)).handle()
        claimed.status, claimed.result, claimed.payload = JobStatus.COMPLETED, None, texts.pop(claimed.id)
    elapsed = time.perf_counter() - started
    await manager.close()
    return elapsed


async def asyncio_round(n: int, awaited_put: bool = False) -> float:
    """N puts then N gets: ``put_nowait``, or ``await put()`` (a coroutine per put, as a
    dispatch is)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    started = time.perf_counter()
    if awaited_put:
        for i in range(n):
            await queue.put(i)
    else:
        for i in range(n):
            queue.put_nowait(i)
    for _ in range(n):
        await queue.get()
    return time.perf_counter() - started


async def repeated(round_fn: Callable[[int], Awaitable[float]], n: int,
                   at_least_s: float) -> tuple[int, float]:
    """``round_fn(n)`` repeated until ``at_least_s`` seconds have passed: (items, seconds)."""
    rounds, elapsed = 0, 0.0
    while elapsed < at_least_s or not rounds:
        gc.collect()
        elapsed += await round_fn(n)
        rounds += 1
    return n * rounds, elapsed


def sandwiched(n: int, previous_s: float) -> tuple[float, float, float, float, float]:
    """One khadem_nb round between two spells of each baseline, half its time before and half
    after: (khadem_nb items/s, dispatch s, drain s, put_nowait items/s, await put items/s)."""
    before = [asyncio.run(repeated(fn, n, previous_s / 2)) for fn in (asyncio_round, awaited_asyncio_round)]
    gc.collect()
    dispatch_s, drain_s = asyncio.run(khadem_round(n))
    ours_s = dispatch_s + drain_s
    after = [asyncio.run(repeated(fn, n, ours_s / 2)) for fn in (asyncio_round, awaited_asyncio_round)]
    rates = [(b[0] + a[0]) / (b[1] + a[1]) for b, a in zip(before, after, strict=True)]
    return n / ours_s, dispatch_s, drain_s, rates[0], rates[1]


async def awaited_asyncio_round(n: int) -> float:
    return await asyncio_round(n, awaited_put=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ours, raw, raw_awaited, bare, stripped, dispatch_s, drain_s = [], [], [], [], [], [], []
    previous_s = 1.0
    for _ in range(args.rounds):
        rate, d, w, nowait, awaited = sandwiched(args.n, previous_s)
        previous_s = d + w
        ours.append(rate)
        dispatch_s.append(d)
        drain_s.append(w)
        raw.append(nowait)
        raw_awaited.append(awaited)
        gc.collect()
        stripped.append(args.n / asyncio.run(stripped_drain_round(args.n)))
        gc.collect()
        bare.append(args.n / asyncio.run(bare_steps_round(args.n)))
    ours_med, raw_med = statistics.median(ours), statistics.median(raw)
    awaited_med = statistics.median(raw_awaited)
    nowait_ratio = statistics.median(o / r for o, r in zip(ours, raw, strict=True))
    awaited_ratio = statistics.median(o / r for o, r in zip(ours, raw_awaited, strict=True))
    print(f"N={args.n}, medians of {args.rounds} rounds; ratios are medians of each round's ratio")
    print("| what | jobs/s (median) |")
    print("|---|---:|")
    print(f"| khadem_nb memory: dispatch + drain, 1 worker | {ours_med:,.0f} |")
    print(f"|   dispatch only | {args.n / statistics.median(dispatch_s):,.0f} |")
    print(f"|   drain only | {args.n / statistics.median(drain_s):,.0f} |")
    print(f"| asyncio.Queue put_nowait + get | {raw_med:,.0f} |")
    print(f"| ratio khadem_nb / asyncio.Queue (put_nowait) | {nowait_ratio:.1%} |")
    print(f"| asyncio.Queue await put + get | {awaited_med:,.0f} |")
    print(f"| ratio khadem_nb / asyncio.Queue (await put) | {awaited_ratio:.1%} |")
    stripped_med, bare_med = statistics.median(stripped), statistics.median(bare)
    print(f"| real dispatch + driver, drained by a bare loop | {stripped_med:,.0f} |")
    print(f"| ratio bare loop / asyncio.Queue | {stripped_med / raw_med:.1%} |")
    print(f"| the bare steps of a job, inlined (no framework) | {bare_med:,.0f} |")
    print(f"| ratio bare steps / asyncio.Queue | {bare_med / raw_med:.1%} |")


if __name__ == "__main__":
    main()
