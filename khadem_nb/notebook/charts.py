"""The panel's charts: throughput over the last minutes, durations of finished jobs, and a
timeline of recent jobs per worker, drawn as small inline SVGs.

``panel_charts`` computes all three once per panel refresh from what the panel already keeps
(its samples of the finished count) and the last jobs this kernel's workers ran, never once per
job event; equal ``Charts`` mean nothing to redraw. Each SVG carries its numbers as ``data-``
attributes, which is what the tests read.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..job import COMPLETED, FAILED, JobRecord
from ..metrics import duration_bins, rate_series, timeline_rows

BUCKET_S = 10.0  # one throughput bar per 10 s
BUCKETS = 30  # five minutes
TIMELINE_MS = 60_000  # the last minute of jobs
WIDTH, HEIGHT = 260, 60
COLOURS = {"completed": "#2f855a", "failed": "#c53030", "cancelled": "#718096"}


@dataclass(frozen=True)
class Charts:
    throughput: tuple[float, ...]  # jobs/s per bucket, oldest first
    durations: tuple[tuple[float, float, int], ...]  # (low s, high s, count)
    timeline: tuple[tuple[str, str, int, int, str], ...]  # (worker, job, start, end ms ago, status)


def panel_charts(samples: Sequence[tuple[float, int]], recent: Iterable[tuple[str, JobRecord]],
                 now: float, now_ms: int) -> Charts:
    """The three charts from the panel's ``(monotonic time, finished count)`` samples and the
    ``(worker, record)`` pairs of the jobs this kernel ran last."""
    ran = list(recent)
    durations = [d / 1000 for _, r in ran
                 if r.status in (COMPLETED, FAILED) and (d := r.duration_ms) is not None]
    return Charts(tuple(round(v, 2) for v in rate_series(samples, now, BUCKET_S, BUCKETS)),
                  tuple(duration_bins(durations)), tuple(timeline_rows(ran, now_ms, TIMELINE_MS)))


def charts_html(charts: Charts) -> str:
    """The three charts side by side (wrapping on narrow pages)."""
    return ("<div class='khadem-charts'>" + _figure("throughput, last 5 min", _throughput(charts.throughput))
            + _figure("durations", _durations(charts.durations))
            + _figure("jobs per worker, last minute", _timeline(charts.timeline)) + "</div>")


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
