"""Run telemetry: the numbers a job reports per step while it runs (``kn.report``).

A running job's reports are kept in its context as one series per metric, points of
``[step, value, ms]`` (a NaN value stored as ``null``), and reach its record under
``meta["reports"]`` with its live output, about once a second, never a storage write per call.
A job whose reports a pruner reads (its record's meta holds ``WATCHED``, set when a pruned sweep
or study dispatches it) stores them every WATCHED_FLUSH_S instead, so a losing point is stopped
within a few steps of the report that condemns it.
A series keeps at most MAX_POINTS points: beyond that its older half is thinned to every second
point, so the latest steps stay whole and the curve's shape stays (a series of a million steps
keeps its last thousand at full resolution and ever sparser points before them).
"""

from __future__ import annotations

import math
import numbers
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ReportError

MAX_POINTS = 2_000  # points kept per metric of one job
MAX_METRICS = 100  # metrics one job reports, at most
METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
REPORTS = "reports"  # the key of a record's meta that holds its reports
WATCHED = "watched"  # the key of a record's meta that says a pruner reads its reports
WATCHED_FLUSH_S = 0.2  # how often a watched job's new reports reach its record


def check_metric(name: Any, value: Any) -> float | None:
    """A reported value as a float (``None`` for NaN, which JSON cannot hold); ``ReportError``
    naming the metric for a name that is not an identifier, a value that is not a real number,
    or an infinite one."""
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise ReportError(f"a metric name is an identifier of at most 64 characters (like val_loss), "
                          f"got {name!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ReportError(f"metric {name!r} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if math.isnan(number):
        return None
    if math.isinf(number):
        raise ReportError(f"metric {name!r} is {number}; report finite numbers (NaN is kept as NaN)")
    return number


def check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ReportError(f"step must be a whole number >= 0 (or left out to count up), got {step!r}")
    return int(step)


class Curves:
    """The reports of one running job, from any thread: per metric, its points."""

    __slots__ = ("_lock", "changed", "series", "step")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.series: dict[str, list[list[Any]]] = {}
        self.step = -1  # the last step reported
        self.changed = False  # reported since the record last got them

    def add(self, step: Any, metrics: Mapping[str, Any], now_ms: int) -> None:
        """Keep one report: ``metrics`` at ``step`` (``None``: the step after the last one)."""
        if not metrics:
            raise ReportError("report() needs at least one metric, like report(loss=0.5)")
        values: dict[str, float | None] = {}
        for name, value in metrics.items():  # a finite float of a metric seen before: no more checks
            if type(value) is float and name in self.series and -math.inf < value < math.inf:
                values[name] = value
            else:
                values[name] = check_metric(name, value)
        with self._lock:
            at = self.step + 1 if step is None else check_step(step)
            if len(self.series.keys() | values.keys()) > MAX_METRICS:
                raise ReportError(f"a job reports at most {MAX_METRICS} metrics")
            for name, value in values.items():
                points = self.series.setdefault(name, [])
                points.append([at, value, now_ms])
                if len(points) > MAX_POINTS:
                    half = len(points) // 2
                    points[:half] = points[:half:2]
            self.step = at
            self.changed = True

    def stored(self) -> dict[str, list[list[Any]]]:
        """What the record keeps (a copy), and the reports marked as stored."""
        with self._lock:
            self.changed = False
            return {name: [list(p) for p in points] for name, points in self.series.items()}


def points(meta: Mapping[str, Any]) -> Iterator[tuple[str, int, float, int | None]]:
    """A record's reports as ``(metric, step, value, ms)``, NaN where ``null`` was stored; a
    damaged point is left out."""
    reports = meta.get(REPORTS)
    if not isinstance(reports, dict):
        return
    for metric, series in reports.items():
        if not isinstance(series, list):
            continue
        for point in series:
            try:
                step, value, ms = point
                yield str(metric), int(step), math.nan if value is None else float(value), \
                    None if ms is None else int(ms)
            except (TypeError, ValueError):
                continue


def last_values(meta: Mapping[str, Any]) -> dict[str, float]:
    """Each metric's value at its last reported step."""
    last: dict[str, tuple[int, float]] = {}
    for metric, step, value, _ in points(meta):
        if metric not in last or step >= last[metric][0]:
            last[metric] = (step, value)
    return {metric: value for metric, (_, value) in last.items()}
