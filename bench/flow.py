"""What flow control costs on Redis, each against the same run without limits (medians of
rounds that alternate the two):

1. a drain of N no-op jobs whose kind has ``concurrency=10000``, a limit 50 consumers never
   reach, against plain no-ops (the lane path's own cost);
2. a drain of N/4 20 ms jobs with ``concurrency=50`` on a worker of 100 consumers, against
   the same jobs without the limit: it should run at 50 at once (50 / 20 ms = 2,500 jobs/s at
   most; the mean held at once is jobs/s x 20 ms), and its claims should not spin (script
   calls per job, from INFO commandstats);
3. how close ``rate="1000/s"`` holds over 10 s: starts counted in the 10 s after the first.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 python bench/flow.py [--n 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import redis

from khadem_nb import QueueJob, QueueManager

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
NAP_S = 0.02


class Tick(QueueJob):
    async def handle(self) -> None:
        return None


class RoomyTick(Tick):
    concurrency = 10_000


class Nap(QueueJob):
    async def handle(self) -> None:
        await asyncio.sleep(NAP_S)


class FiftyNaps(Nap):
    concurrency = 50


class Paced(Tick):
    rate = "1000/s"


def script_calls() -> int:
    stats = redis.Redis.from_url(URL).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def drain(job: type[QueueJob], n: int, consumers: int) -> tuple[float, float]:
    """Jobs per second draining ``n`` queued jobs, and script calls per job meanwhile."""
    manager = await QueueManager({"queue": {"url": URL, "prefix": "bench-flow"}}).init()
    await manager.purge()
    await manager.dispatch_many([job() for _ in range(n)])
    calls = script_calls()
    started = time.perf_counter()
    await manager.start_worker(max_jobs=n, concurrency=consumers)
    elapsed = time.perf_counter() - started
    calls = script_calls() - calls
    await manager.purge()
    await manager.close()
    return n / elapsed, calls / n


async def rate_held(seconds: float) -> tuple[int, int]:
    """Starts of a 1000/s job in the ``seconds`` after the first, and the most in any second."""
    manager = await QueueManager({"queue": {"url": URL, "prefix": "bench-flow", "retention": 100_000}}).init()
    await manager.purge()
    await manager.dispatch_many([Paced() for _ in range(int(1500 * seconds))])
    await manager.start_worker(timeout=seconds + 1.5, concurrency=50)
    starts = sorted(r.started_ms or 0 for r in await manager.jobs("completed"))
    await manager.purge()
    await manager.close()
    first = starts[0]
    within = [t for t in starts if t < first + seconds * 1000]
    busiest = max(sum(1 for u in within if t <= u < t + 1000) for t in within[:: max(1, len(within) // 200)])
    return len(within), busiest


def median_pair(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


async def main(n: int, rounds: int) -> None:
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in ("plain", "roomy", "naps", "fifty")}
    for _ in range(rounds):
        results["plain"].append(await drain(Tick, n, 50))
        results["roomy"].append(await drain(RoomyTick, n, 50))
        results["naps"].append(await drain(Nap, n // 4, 100))
        results["fifty"].append(await drain(FiftyNaps, n // 4, 100))
    plain, roomy = median_pair(results["plain"]), median_pair(results["roomy"])
    naps, fifty = median_pair(results["naps"]), median_pair(results["fifty"])
    print(f"| drain, no-ops, 50 consumers | {plain[0]:,.0f} jobs/s | {roomy[0]:,.0f} jobs/s | "
          f"{roomy[0] / plain[0]:.2f} | {plain[1]:.2f} / {roomy[1]:.2f} |")
    print(f"| drain, 20 ms jobs, 100 consumers | {naps[0]:,.0f} jobs/s | {fifty[0]:,.0f} jobs/s | "
          f"{fifty[0] / naps[0]:.2f} | {naps[1]:.2f} / {fifty[1]:.2f} |")
    print(f"held at once with concurrency=50: {fifty[0] * NAP_S:.1f} on average "
          f"(without: {naps[0] * NAP_S:.1f})")
    held = [await rate_held(10.0) for _ in range(rounds)]
    print(f"rate 1000/s over 10 s: starts {statistics.median(h[0] for h in held):,.0f} "
          f"(runs {[h[0] for h in held]}), most in any 1 s window {max(h[1] for h in held)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds))
