"""Workers on demand: an autoscaled sweep against workers started by hand beforehand.

A sweep of ``--points`` jobs, each sleeping ``--seconds`` (a training step's stand-in), is
dispatched to a SQLite queue in three set-ups, one run each a round, alternating:

* ``by hand``: ``q.launch(4)`` before the dispatch, the workers registered and idle;
* ``autoscale``: ``q.autoscale(on="local", min=0, max=4)`` running, no worker up;
* ``slurm`` (with ``--slurm``): ``q.autoscale(on="slurm", min=0, max=4)`` on a one-node Slurm
  cluster this bench starts as the tests do (``tests/slurm_cluster.py``).

It reports the time from the dispatch to the first point running (the earliest ``started_ms``)
and to the sweep drained (the last ``finished_ms``), and for the autoscaled runs the time from
the drain to no launched worker left (``idle_timeout=2``). Then the autoscaler's cost on a busy
queue: ``--noops`` no-op jobs drained by one worker started with ``q.launch(1,
concurrency=100)`` against one started by ``q.autoscale(min=1, max=1)``, whose rounds (one a
second: the counts, the workers' entries, the lease) run beside it. Medians of ``--rounds``.

    python bench/autoscale.py [--points 80] [--seconds 0.5] [--rounds 3] [--noops 20000] [--slurm]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent / "tests")]

import khadem_nb as kn  # noqa: E402
from khadem_nb.job import JobStatus  # noqa: E402

JOBS = '''
import asyncio
from khadem_nb import QueueJob


class Step(QueueJob):
    def __init__(self, seconds):
        self.seconds = seconds

    async def handle(self):
        await asyncio.sleep(self.seconds)


class Noop(QueueJob):
    async def handle(self):
        return None
'''


def live(q: kn.Queue) -> int:
    frame = q.workers()
    return int(frame["state"].isin(["starting", "idle", "busy"]).sum()) if len(frame) else 0


def sweep(q: kn.Queue, points: int, seconds: float) -> tuple[float, float]:
    """Dispatch the sweep; seconds to its first point running and to its last point ended."""
    from benchjobs import Step  # type: ignore[import-not-found]

    start_ms = time.time() * 1000
    ids = q.run(q.manager.dispatch_many([Step(seconds) for _ in range(points)]))
    records = q.run(q.manager.wait(ids, timeout=600))
    assert all(r.status is JobStatus.COMPLETED for r in records)
    first = min(r.started_ms or 0 for r in records)
    last = max(r.finished_ms or 0 for r in records)
    return (first - start_ms) / 1000, (last - start_ms) / 1000


def scale_down(q: kn.Queue) -> float:
    began = time.monotonic()
    while live(q) > 0:
        time.sleep(0.1)
    return time.monotonic() - began


def one_round(folder: Path, setup: str, args: argparse.Namespace,
              options: dict[str, Any]) -> dict[str, float]:
    q = kn.Queue(f"sqlite:///{folder / f'{setup}-{time.monotonic_ns()}.db'}")
    env = {"PYTHONPATH": str(folder)}
    try:
        if setup == "by hand":
            q.launch(4, imports=["benchjobs"], env=env)
        else:
            q.autoscale(on="slurm" if setup == "slurm" else "local", min=0, max=4, idle_timeout=2,
                        imports=["benchjobs"], env=env, interval=0.5, **options)
        first, drained = sweep(q, args.points, args.seconds)
        row = {"first": first, "drained": drained}
        if setup != "by hand":
            row["to zero"] = scale_down(q)
        return row
    finally:
        q.close()


def overhead_round(folder: Path, autoscaled: bool, n: int) -> float:
    """No-ops per second drained by one worker, launched by hand or by an autoscaler."""
    from benchjobs import Noop

    q = kn.Queue(f"sqlite:///{folder / f'noops-{time.monotonic_ns()}.db'}?retention={n}")
    env = {"PYTHONPATH": str(folder)}
    try:
        if autoscaled:
            q.autoscale(min=1, max=1, concurrency=100, imports=["benchjobs"], env=env)
            while live(q) < 1:
                time.sleep(0.1)
        else:
            q.launch(1, concurrency=100, imports=["benchjobs"], env=env)
        q.stop()
        ids = q.run(q.manager.dispatch_many([Noop() for _ in range(n)]))
        records = q.run(q.manager.wait(ids, timeout=600))
        first = min(r.started_ms or 0 for r in records)
        last = max(r.finished_ms or 0 for r in records)
        return n / ((last - first) / 1000)
    finally:
        q.close()


@contextlib.contextmanager
def slurm_cluster(folder: Path) -> Iterator[dict[str, Any]]:
    """A one-node Slurm cluster, as the tests start it (``tests/slurm_cluster.py``)."""
    import socket

    from slurm_cluster import _config, _start, _stop  # type: ignore[import-not-found]

    for sub in ("state", "spool", "logs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, socket.gethostname()))
    os.environ["SLURM_CONF"] = str(conf)
    started: list[Path] = []
    try:
        _start(folder, conf, key, started)
        time.sleep(3)
        yield {"logs": str(folder / "logs")}
    finally:
        _stop(started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=80)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noops", type=int, default=20_000)
    parser.add_argument("--slurm", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="khadem-bench-autoscale-") as tmp:
        folder = Path(tmp)
        (folder / "benchjobs.py").write_text(JOBS)
        sys.path.insert(0, str(folder))
        setups = ["by hand", "autoscale"] + (["slurm"] if args.slurm else [])
        with contextlib.ExitStack() as stack:
            options = stack.enter_context(slurm_cluster(folder / "slurm")) if args.slurm else {}
            rows: dict[str, list[dict[str, float]]] = {s: [] for s in setups}
            for _ in range(args.rounds):
                for setup in setups:
                    rows[setup].append(one_round(folder, setup, args, options if setup == "slurm" else {}))
        ideal = args.points * args.seconds / 4
        print(f"sweep: {args.points} points of {args.seconds:g} s, 4 workers (ideal drain {ideal:g} s); "
              f"medians of {args.rounds} rounds")
        hand = statistics.median(r["drained"] for r in rows["by hand"])
        for setup, found in rows.items():
            first = statistics.median(r["first"] for r in found)
            drained = statistics.median(r["drained"] for r in found)
            zero = (f", to zero {statistics.median(r['to zero'] for r in found):.2f} s"
                    if "to zero" in found[0] else "")
            print(f"  {setup:9} first point {first:5.2f} s, drained {drained:6.2f} s "
                  f"({drained / hand:.2f}x by hand){zero}")
        plain, scaled = [], []
        for _ in range(args.rounds):
            plain.append(overhead_round(folder, False, args.noops))
            scaled.append(overhead_round(folder, True, args.noops))
        a, b = statistics.median(plain), statistics.median(scaled)
        print(f"busy queue, {args.noops} no-ops, one worker of concurrency 100: by hand {a:,.0f}/s, "
              f"autoscaled {b:,.0f}/s ({b / a:.3f}x)")


if __name__ == "__main__":
    main()
