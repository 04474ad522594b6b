"""Embedded durable queues: khadem_nb's sqlite and file drivers against huey's storages.

Each engine, in a fresh folder: enqueue N no-op jobs (timed), then drain them in one process
with one worker (timed). khadem_nb drains with ``start_worker(burst=True)`` (claim with lease,
run, fenced settle: at-least-once); huey drains with its consumer's own inner loop,
``huey.dequeue()`` + ``huey.execute()``, without the consumer's polling sleeps (huey deletes a
job when it dequeues it: at-most-once). Engines are interleaved round by round; the table shows
medians of ROUNDS rounds.

    pip install -e ".[bench]"
    python bench/embedded_drivers.py [--n 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable

from khadem_nb import QueueJob, QueueManager


class NoopJob(QueueJob):
    async def handle(self) -> None:
        return None


Engine = Callable[[int], tuple[float, float]]


def khadem(url_of: Callable[[str], str], options: dict[str, object] | None = None) -> Engine:
    def run(n: int) -> tuple[float, float]:
        async def main() -> tuple[float, float]:
            with tempfile.TemporaryDirectory() as folder:
                queue: dict[str, object] = {"url": url_of(folder), "retention": n}
                if options:
                    queue["options"] = options
                manager = await QueueManager({"queue": queue}).init()
                jobs = [NoopJob() for _ in range(n)]
                started = time.perf_counter()
                for start in range(0, n, 500):
                    await manager.dispatch_many(jobs[start : start + 500])
                enqueued = time.perf_counter()
                await manager.start_worker(burst=True, delay=0.01)
                drained = time.perf_counter()
                assert (await manager.counts())["completed"] == n
                await manager.close()
                return enqueued - started, drained - enqueued

        return asyncio.run(main())

    return run


def huey(kind: str) -> Callable[[int], tuple[float, float]]:
    def run(n: int) -> tuple[float, float]:
        from huey import FileHuey, SqliteHuey

        with tempfile.TemporaryDirectory() as folder:
            if kind == "sqlite":
                h = SqliteHuey("bench", filename=f"{folder}/huey.db")
            else:
                h = FileHuey("bench", path=f"{folder}/huey")

            @h.task()
            def noop() -> None:
                return None

            started = time.perf_counter()
            for _ in range(n):
                noop()
            enqueued = time.perf_counter()
            done = 0
            while (task := h.dequeue()) is not None:
                h.execute(task)
                done += 1
            drained = time.perf_counter()
            assert done == n, done
            return enqueued - started, drained - enqueued

    return run


ENGINES: dict[str, Callable[[int], tuple[float, float]]] = {
    "khadem_nb sqlite (io=auto, default)": khadem(lambda d: f"sqlite:///{d}/q.db"),
    "khadem_nb sqlite (io=thread)": khadem(lambda d: f"sqlite:///{d}/q.db", {"io": "thread"}),
    "khadem_nb sqlite (io=inline)": khadem(lambda d: f"sqlite:///{d}/q.db", {"io": "inline"}),
    "huey SqliteStorage": huey("sqlite"),
    "khadem_nb file": khadem(lambda d: f"file:///{d}/q"),
    "huey FileStorage": huey("file"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--file-n", type=int, default=None, help="N for the file engines (default n)")
    args = parser.parse_args()
    enqueue: dict[str, list[float]] = {name: [] for name in ENGINES}
    drain: dict[str, list[float]] = {name: [] for name in ENGINES}
    for _ in range(args.rounds):
        for name, engine in ENGINES.items():
            n = args.file_n if args.file_n and "file" in name.lower() else args.n
            e, d = engine(n)
            enqueue[name].append(n / e)
            drain[name].append(n / d)
    print(f"N={args.n} no-op jobs (file engines: {args.file_n or args.n}), medians of {args.rounds} rounds\n")
    print("| engine | enqueue jobs/s | drain jobs/s (1 worker) |")
    print("|---|---:|---:|")
    for name in ENGINES:
        print(f"| {name} | {statistics.median(enqueue[name]):,.0f} | {statistics.median(drain[name]):,.0f} |")
    print()
    for ours, theirs in (("khadem_nb sqlite (io=auto, default)", "huey SqliteStorage"),
                         ("khadem_nb sqlite (io=thread)", "huey SqliteStorage"),
                         ("khadem_nb sqlite (io=inline)", "huey SqliteStorage"),
                         ("khadem_nb file", "huey FileStorage")):
        ratio = statistics.median(drain[ours]) / statistics.median(drain[theirs])
        print(f"drain ratio {ours} / {theirs}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
