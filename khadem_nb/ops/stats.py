"""``khadem-nb stats``: a queue's counts by status and the metrics of its stored records."""

from __future__ import annotations

import sys
from typing import TextIO

from ..manager import QueueManager
from ..metrics import metrics_from_records
from ._terminal import format_table, metrics_table


async def print_stats(url: str, queue: str | None = None, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    manager = await QueueManager(url).init()
    try:
        counts = await manager.counts(queue)
        records = await manager.jobs(queue=queue)
    finally:
        await manager.close()
    out.write(f"queue {manager.settings.redacted_url()}\n\n")
    out.write(format_table([{"status": s, "jobs": n} for s, n in counts.items()]) + "\n\n")
    out.write(metrics_table(metrics_from_records(records)) + "\n")


async def print_workers(url: str, stream: TextIO | None = None) -> None:
    """``khadem-nb workers``: the queue's workers, wherever they run (``presence``)."""
    from .._time import ms_to_datetime

    out = stream or sys.stdout
    manager = await QueueManager(url).init()
    try:
        entries = await manager.list_workers()
    finally:
        await manager.close()
    rows = [{"name": e.get("name"), "host": e.get("host"), "launcher": e.get("launcher"),
             "state": e.get("state"), "concurrency": e.get("concurrency"), "jobs done": e.get("jobs_done"),
             "last seen": str(ms_to_datetime(e.get("last_seen")) or "-")[:19]} for e in entries]
    out.write(f"queue {manager.settings.redacted_url()}: {len(rows)} worker(s)\n\n")
    if rows:
        out.write(format_table(rows) + "\n")
