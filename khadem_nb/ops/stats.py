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
