"""The panel's charts: throughput over the last minutes, durations of finished jobs, a
timeline of recent jobs per worker, and the curves of one reported metric (``kn.report``) of
running and recently finished jobs, drawn as small inline SVGs.

``panel_charts`` computes all three once per panel refresh from what the panel already keeps
(its samples of the finished count) and the last jobs this kernel's workers ran, never once per
job event; equal ``Charts`` mean nothing to redraw. Each SVG carries its numbers as ``data-``
attributes, which is what the tests read.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..features.telemetry import points
from ..job import COMPLETED, FAILED, JobRecord
from ..metrics import duration_bins, rate_series, timeline_rows

BUCKET_S = 10.0  # one throughput bar per 10 s
BUCKETS = 30  # five minutes
TIMELINE_MS = 60_000  # the last minute of jobs
WIDTH, HEIGHT = 260, 60
COLOURS = {"completed": "#2f855a", "failed": "#c53030", "cancelled": "#718096"}
CURVES_SHOWN = 12  # jobs whose curves the panel draws, running ones first
CURVE_POINTS = 200  # points drawn of one curve, at most (evenly picked)

#: one job's curve of the panel's metric: its id, its status, its (step, value) points
Curve = tuple[str, str, tuple[tuple[int, float], ...]]


@dataclass(frozen=True)
class Charts:
    throughput: tuple[float, ...]  # jobs/s per bucket, oldest first
    durations: tuple[tuple[float, float, int], ...]  # (low s, high s, count)
    timeline: tuple[tuple[str, str, int, int, str], ...]  # (worker, job, start, end ms ago, status)
    metric: str | None = None  # the metric the curves are of (None: no job reported one)
    curves: tuple[Curve, ...] = ()


def panel_charts(samples: Sequence[tuple[float, int]], recent: Iterable[tuple[str, JobRecord]],
                 now: float, now_ms: int, reported: Sequence[JobRecord] = (),
                 metric: str | None = None) -> Charts:
    """The charts from the panel's ``(monotonic time, finished count)`` samples, the
    ``(worker, record)`` pairs of the jobs this kernel ran last, and the records whose curves
    may be drawn (``reported``, running ones first) of ``metric`` (``None``: the first metric
    one of them reported)."""
    ran = list(recent)
    durations = [d / 1000 for _, r in ran
                 if r.status in (COMPLETED, FAILED) and (d := r.duration_ms) is not None]
    chosen, curves = curves_of(reported, metric)
    return Charts(tuple(round(v, 2) for v in rate_series(samples, now, BUCKET_S, BUCKETS)),
                  tuple(duration_bins(durations)), tuple(timeline_rows(ran, now_ms, TIMELINE_MS)),
                  chosen, curves)


def curves_of(records: Sequence[JobRecord], metric: str | None) -> tuple[str | None, tuple[Curve, ...]]:
    """The metric to draw and the curves of it of the first CURVES_SHOWN records that report
    it, each thinned to CURVE_POINTS points (NaN left out)."""
    curves: list[Curve] = []
    for record in records:
        found: dict[str, list[tuple[int, float]]] = {}
        for name, step, value, _ in points(record.meta):
            if metric is None or name == metric:
                found.setdefault(name, []).append((step, value))
        if metric is None and found:
            metric = next(iter(found))
        line = [(step, value) for step, value in found.get(metric or "", []) if not math.isnan(value)]
        if line:
            kept = line[::max(1, -(-len(line) // CURVE_POINTS))]
            if kept[-1] != line[-1]:  # the latest point is always drawn
                kept.append(line[-1])
            curves.append((record.id, record.status.value, tuple(kept)))
        if len(curves) == CURVES_SHOWN:
            break
    return metric, tuple(curves)


def charts_html(charts: Charts) -> str:
    """The charts side by side (wrapping on narrow pages); the curves once a job reported."""
    curves = "" if charts.metric is None else _figure(charts.metric, _curves(charts.curves))
    return ("<div class='khadem-charts'>" + _figure("throughput, last 5 min", _throughput(charts.throughput))
            + _figure("durations", _durations(charts.durations))
            + _figure("jobs per worker, last minute", _timeline(charts.timeline)) + curves + "</div>")


def _figure(title: str, svg: str) -> str:
    return f"<figure class='khadem-chart'><figcaption>{html.escape(title)}</figcaption>{svg}</figure>"


def _svg(kind: str, data: str, body: str, height: int = HEIGHT) -> str:
    return (f"<svg class='khadem-{kind}' {data} viewBox='0 0 {WIDTH} {height}' width='{WIDTH}' "
            f"height='{height}' role='img'>{body}</svg>")


def _bars(values: Sequence[float], colour: str, label: str) -> str:
    top = max(values, default=0.0) or 1.0
    step = WIDTH / max(1, len(values))
    rects = []
    for i, value in enumerate(values):
        h = value / top * (HEIGHT - 12)
        rects.append(f"<rect x='{i * step:.1f}' y='{HEIGHT - h:.1f}' width='{max(1.0, step - 1):.1f}' "
                     f"height='{h:.1f}' fill='{colour}'><title>{html.escape(label.format(value))}"
                     "</title></rect>")
    return _text(2, 10, label.format(top)) + "".join(rects)


def _text(x: float, y: float, content: str, anchor: str = "start") -> str:
    return (f"<text x='{x}' y='{y}' font-size='9' text-anchor='{anchor}' fill='currentColor'>"
            f"{html.escape(content)}</text>")


def _throughput(series: tuple[float, ...]) -> str:
    data = f"data-values='{','.join(f'{v:g}' for v in series)}'"
    return _svg("throughput", data, _bars(series, "var(--jp-brand-color1, #2980b9)", "{:g} jobs/s"))


def _durations(bins: tuple[tuple[float, float, int], ...]) -> str:
    counts = [n for _, _, n in bins]
    data = f"data-counts='{','.join(map(str, counts))}' data-longest='{bins[-1][1] if bins else 0:g}'"
    if not bins:
        return _svg("durations", data, _text(2, 30, "no finished job yet"))
    body = _bars(counts, "#6b46c1", "{:g} jobs")
    return _svg("durations", data, body + _text(WIDTH - 2, HEIGHT - 1, f"{bins[-1][1]:.3g} s", "end"))


def _timeline(rows: tuple[tuple[str, str, int, int, str], ...]) -> str:
    workers = sorted({row[0] for row in rows})
    lane = 14
    height = max(HEIGHT, lane * len(workers) + 4)
    scale = WIDTH / TIMELINE_MS
    parts = []
    for index, worker in enumerate(workers):
        parts.append(_text(2, index * lane + 10, worker))
    for worker, job, started_ago, ended_ago, status in rows:
        y = workers.index(worker) * lane + 2
        x = max(0.0, WIDTH - started_ago * scale)
        width = max(1.0, (started_ago - ended_ago) * scale) if x > 0 else max(1.0, WIDTH - ended_ago * scale)
        parts.append(f"<rect data-worker='{html.escape(worker)}' data-job='{html.escape(job)}' "
                     f"data-status='{status}' x='{x:.1f}' y='{y}' width='{width:.1f}' height='{lane - 4}' "
                     f"fill='{COLOURS.get(status, '#2980b9')}' opacity='0.8'>"
                     f"<title>{html.escape(job)} ({status})</title></rect>")
    return _svg("timeline", f"data-jobs='{len(rows)}' data-workers='{len(workers)}'", "".join(parts), height)


def _curves(curves: tuple[Curve, ...]) -> str:
    """One polyline per job: steps across, values up, on shared scales; running ones blue."""
    values = [v for _, _, line in curves for _, v in line]
    steps = [s for _, _, line in curves for s, _ in line]
    data = f"data-jobs='{len(curves)}' data-points='{len(values)}'"
    if not values:
        return _svg("curves", data, _text(2, 30, "no points yet"))
    low, high = min(values), max(values)
    span, last = (high - low) or 1.0, max(steps) or 1
    lines = []
    for job_id, status, line in curves:
        xy = " ".join(f"{s / last * (WIDTH - 4) + 2:.1f},{HEIGHT - 4 - (v - low) / span * (HEIGHT - 16):.1f}"
                      for s, v in line)
        colour = COLOURS.get(status, "var(--jp-brand-color1, #2980b9)")
        lines.append(f"<polyline data-job='{html.escape(job_id)}' data-status='{status}' points='{xy}' "
                     f"fill='none' stroke='{colour}' stroke-width='1.2'><title>{html.escape(job_id)} "
                     f"({status}): {line[-1][1]:.4g} at step {line[-1][0]}</title></polyline>")
    labels = _text(2, 10, f"{high:.4g}") + _text(2, HEIGHT - 2, f"{low:.4g}") + \
        _text(WIDTH - 2, HEIGHT - 2, f"step {last}", "end")
    return _svg("curves", data, labels + "".join(lines))
