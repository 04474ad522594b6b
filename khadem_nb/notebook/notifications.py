"""What a notebook's notifications say and when: a group's end and first failure, a study's
end, a queue's backlog or failure rate over a threshold (``runtime.notifying`` sends them,
each once)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..features.telemetry import last_values
from ..job import COMPLETED, FAILED, TERMINAL_STATUSES, JobRecord, JobStatus
from ..runtime.notifying import Message, group_key, send_once

if TYPE_CHECKING:
    from .handles import JobGroup
    from .queue import Queue

WATCH_EVERY_S = 1.0  # how often a watched group's statuses are read
RATE_WINDOW_S = 600.0  # the failure rate is over the jobs finished within this
RATE_MIN_JOBS = 10  # and needs at least this many of them
REPEAT_S = 3600  # a queue's threshold is told at most once in this long


def check_name(name: Any) -> str | None:
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 200):
        raise ConfigError(f"a group's name is text of 1 to 200 characters, got {name!r}")
    return name


def group_label(fn_name: str, size: int, name: str | None) -> str:
    """How a message names a group: its name, else its job function and size."""
    short = fn_name.rsplit(".", 1)[-1]
    return f"{name} ({short}, {size} points)" if name else f"{short} x {size}"


def best_point(params: Sequence[Mapping[str, Any]], records: Sequence[JobRecord | None],
               metric: str | None, mode: str) -> str | None:
    """``best val_loss 0.0412 at lr=0.01, epochs=3``: the completed point with the best last
    reported value of ``metric`` (or of a numeric field of its result; the first metric
    reported when ``metric`` is None); ``None`` where none is known."""
    found: list[tuple[Mapping[str, Any], dict[str, float]]] = []
    for point, record in zip(params, records, strict=True):
        if record is None or record.status is not COMPLETED:
            continue
        values = {k: float(v) for k, v in (record.result.items() if isinstance(record.result, dict) else ())
                  if isinstance(v, int | float) and not isinstance(v, bool)}
        values.update(last_values(record.meta or {}))
        found.append((point, values))
    names = [metric] if metric else [n for _, values in found for n in values]
    if not names:
        return None
    name = names[0]
    scored = [(values[name], point) for point, values in found
              if name in values and math.isfinite(values[name])]
    if not scored:
        return None
    value, point = (min if mode == "min" else max)(scored, key=lambda pair: pair[0])
    shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
    return f"best {name} {value:.6g} at {shown}"


def counts_line(statuses: Sequence[JobStatus | None]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        key = "dropped" if status is None else status.value
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: -kv[1]))


async def watch_group(queue: Queue, group: JobGroup, sender: Any, events: Sequence[str], metric: str | None,
                      mode: str) -> None:
    """Until every point of ``group`` has ended: tell its first failure (``"failed"``), then
    its end (``"done"``), each once across every process watching it."""
    await queue.opened()
    manager, ids = queue.manager, group.ids
    key, label = group_key(ids), group.label()
    failure_told = "failed" not in events
    while True:
        statuses = await manager.statuses(ids)
        if not failure_told and FAILED in statuses:
            failed = next(r for r in await manager.get_jobs([i for i, s in zip(ids, statuses, strict=True)
                                                            if s is FAILED][:1]))
            body = f"{failed.error or 'failed'}\n{counts_line(statuses)}"
            await send_once(manager.driver, sender, f"group/{key}/failed",
                            Message(f"{label}: a point failed", body, "failure"))
            failure_told = True
        if all(s is None or s in TERMINAL_STATUSES for s in statuses):
            break
        await asyncio.sleep(WATCH_EVERY_S)
    if "done" in events:
        records = await manager.driver.get_many(ids)
        best = best_point([h.params for h in group.handles], records, metric, mode)
        body = "\n".join(filter(None, [counts_line(statuses), best]))
        kind = "warning" if FAILED in statuses else "success"
        await send_once(manager.driver, sender, f"group/{key}/done", Message(f"{label} finished", body, kind))


async def watch_queue(queue: Queue, sender: Any, backlog: int | None, failure_rate: float | None,
                      every_s: float) -> None:
    """Tell when ``queue``'s due jobs reach ``backlog`` or the share of failures among the jobs
    finished in the last RATE_WINDOW_S reaches ``failure_rate``, at most once an hour each."""
    await queue.opened()
    manager, name = queue.manager, queue.settings.name
    while True:
        hour = int(time.time() // REPEAT_S)
        if backlog is not None:
            waiting = (await manager.counts(name)).get("queued", 0)
            if waiting >= backlog:
                await send_once(manager.driver, sender, f"queue/{name}/backlog/{hour}", Message(
                    f"queue {name}: {waiting} jobs waiting",
                    f"the backlog reached {waiting} (threshold {backlog})", "warning"))
        if failure_rate is not None:
            now_ms = int(time.time() * 1000)
            window_ms = int(RATE_WINDOW_S * 1000)
            buckets = await manager.driver.finished_counts(now_ms - window_ms, window_ms)
            completed = sum(c for c, _ in buckets.values())
            failed = sum(f for _, f in buckets.values())
            if completed + failed >= RATE_MIN_JOBS and failed / (completed + failed) >= failure_rate:
                await send_once(manager.driver, sender, f"queue/{name}/failures/{hour}", Message(
                    f"queue {name}: {failed} of {completed + failed} jobs failed",
                    f"{failed / (completed + failed):.0%} of the jobs finished in the last "
                    f"{RATE_WINDOW_S / 60:.0f} minutes failed (threshold {failure_rate:.0%})", "failure"))
        await asyncio.sleep(every_s)


def check_thresholds(backlog: Any, failure_rate: Any, every: Any) -> tuple[int | None, float | None, float]:
    if backlog is None and failure_rate is None:
        raise ConfigError("q.notify needs backlog= (due jobs) or failure_rate= (a share, 0 to 1), or both")
    if backlog is not None and (isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1):
        raise ConfigError(f"backlog must be a whole number >= 1, got {backlog!r}")
    share = isinstance(failure_rate, int | float) and not isinstance(failure_rate, bool)
    if failure_rate is not None and (not share or not 0 < failure_rate <= 1):
        raise ConfigError(f"failure_rate must be a share above 0 and at most 1, got {failure_rate!r}")
    if isinstance(every, bool) or not isinstance(every, int | float) or not 0.05 <= every <= 3600:
        raise ConfigError(f"every must be 0.05 to 3600 seconds, got {every!r}")
    return backlog, None if failure_rate is None else float(failure_rate), float(every)
