"""A live panel for a queue, as one anywidget widget.

anywidget is the widget standard JupyterLab, Notebook 7, VS Code, Colab and marimo all render,
so the one panel shows in each; it is an ipywidgets ``DOMWidget`` too, so it goes inside
ipywidgets layouts. The browser side (``panel.js``) draws the values this side syncs: the
summary and the charts as HTML fragments escaped here, the progress bar's value, label and
style, and the buttons; a click comes back as the ``action`` value and runs ``act``.

One refresher task per panel runs on the queue's loop: at most every ``refresh_s`` seconds it
takes a snapshot (counts, running jobs, latest failures), compares it with the last one, and
only when something changed pushes the new values inside one ``hold_sync()`` block, so a burst
of 1,000 job events costs a handful of comm messages, not 1,000. ``close()`` cancels the task
and closes the widget. Colours use JupyterLab's theme variables with light fallbacks, so the
panel reads in light and dark themes; the layout wraps at narrow widths. Where no widget can
be drawn (a terminal, a static page) the panel shows as one line of text (``__repr__``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import html
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._ids import short_id
from ..errors import ConfigError
from ..features.telemetry import METRIC_NAME
from ..job import JobRecord, JobStatus
from ..metrics import metrics_from_counts
from .charts import CURVES_SHOWN, Charts, charts_html, panel_charts
from .handles import STATUS_COLOURS

if TYPE_CHECKING:
    from .queue import Queue

logger = logging.getLogger(__name__)

THROUGHPUT_WINDOW_S = 5.0
STUDIES_SHOWN = 3  # the latest studies of this kernel the panel shows
SAMPLES_KEPT = 3000  # refreshes the charts' samples cover: five minutes at the fastest refresh
SCHEDULES_EVERY_S = 5.0  # how often the panel reads the schedules again
#: the panel's buttons: name (``act``), label, tooltip
BUTTONS = (("pause", "Pause here", "this kernel's workers stop claiming; workers elsewhere go on"),
           ("resume", "Resume here", "this kernel's workers claim again"),
           ("stop", "Stop", "stop this kernel's workers"),
           ("retry_failed", "Retry Failed", "queue the failed jobs again"),
           ("cancel", "Cancel", "cancel everything queued and running in this queue"),
           ("pause_queue", "Pause queue", "every worker of the queue, on any machine, "
            "stops claiming (running jobs finish)"),
           ("resume_queue", "Resume queue", "every worker of the queue claims again"))
ACTIONS = tuple(name for name, _, _ in BUTTONS)
QUEUE_PAUSED = " <span class='khadem-held'>queue paused everywhere</span>"
WORKERS_EVERY_S = 2.0  # how often the panel reads the queue's workers' entries
WORKERS_SHOWN = 8
WAITING_LOOKED = 100  # queued jobs, oldest first, whose reasons to wait the panel counts
STYLE = """
.khadem-panel { font-family: var(--jp-ui-font-family, sans-serif);
  color: var(--jp-ui-font-color1, #222);
  background: var(--jp-layout-color1, #fff); border: 1px solid var(--jp-border-color2, #ddd);
  border-radius: 4px; padding: 6px 8px; max-width: 100%; box-sizing: border-box; }
.khadem-panel table { border-collapse: collapse; font-size: var(--jp-ui-font-size1, 13px); width: 100%; }
.khadem-panel td, .khadem-panel th { padding: 1px 6px; text-align: left; overflow-wrap: anywhere; }
.khadem-panel th { color: var(--jp-ui-font-color2, #555); font-weight: 600; white-space: nowrap; }
.khadem-panel td.khadem-nowrap { white-space: nowrap; overflow-wrap: normal; }
.khadem-badge { display: inline-block; color: #fff; border-radius: 3px; padding: 0 6px;
  margin: 2px 6px 2px 0; }
.khadem-error { color: var(--jp-error-color1, #c0392b); }
.khadem-muted { color: var(--jp-ui-font-color2, #666); }
.khadem-held { color: var(--jp-warn-color0, #b26a00); margin: 2px 0; }
.khadem-bar { background: var(--jp-layout-color3, #ddd); height: 6px; width: 80px; display: inline-block; }
.khadem-bar > span { background: var(--jp-brand-color1, #2980b9); height: 6px; display: block; }
.khadem-charts { display: flex; flex-flow: row wrap; gap: 8px; }
.khadem-chart { margin: 0; max-width: 100%; }
.khadem-chart figcaption { font-size: 11px; color: var(--jp-ui-font-color2, #666); }
.khadem-chart svg { max-width: 100%; height: auto; color: var(--jp-ui-font-color2, #666); }
.khadem-panel .khadem-progress-row { display: flex; flex-flow: row wrap; align-items: center; gap: 8px;
  margin: 4px 0; }
.khadem-panel .khadem-progress { flex: 1 1 200px; max-width: 600px; height: 10px; border-radius: 5px;
  background: var(--jp-layout-color3, #ddd); overflow: hidden; }
.khadem-panel .khadem-progress .progress-bar { height: 100%; background: var(--jp-brand-color1, #2980b9);
  transition: width 0.2s; }
.khadem-panel .progress-bar[data-style=success] { background: var(--jp-success-color1, #2e7d32); }
.khadem-panel .progress-bar[data-style=warning] { background: var(--jp-warn-color1, #e68a00); }
.khadem-panel .khadem-progress-label { font-size: var(--jp-ui-font-size1, 13px); white-space: nowrap; }
.khadem-panel .khadem-buttons { display: flex; flex-flow: row wrap; gap: 4px; margin: 4px 0; }
.khadem-panel .khadem-button { font: inherit; font-size: var(--jp-ui-font-size1, 13px); padding: 2px 10px;
  color: var(--jp-ui-font-color1, #222); background: var(--jp-layout-color2, #eee);
  border: 1px solid var(--jp-border-color1, #bbb); border-radius: 3px; cursor: pointer; }
.khadem-panel .khadem-button:hover:enabled { background: var(--jp-layout-color3, #ddd); }
.khadem-panel .khadem-button:disabled { opacity: 0.5; cursor: default; }
"""


try:
    import anywidget
    import traitlets
except ImportError as exc:  # pragma: no cover - anywidget is a dependency
    raise ImportError("q.panel() needs anywidget: pip install anywidget") from exc


@dataclass(frozen=True)
class Snapshot:
    """Everything the panel shows, as plain values: equal snapshots mean nothing to redraw."""

    counts: tuple[tuple[str, int], ...]
    running: tuple[tuple[str, str, float | None, str | None, float], ...]
    failures: tuple[tuple[str, str, str, str], ...]  # name, id, failure kind, error
    held_back: tuple[tuple[str, int], ...]  # why queued jobs wait (their limits), and how many
    #: the studies of this kernel (``optimize``): name, trials ended, of how many, best value
    studies: tuple[tuple[str, int, int, float | None], ...]
    next_runs: tuple[tuple[str, float], ...]  # the schedules due soonest: id, seconds until then
    #: the queue's workers wherever they run: name, host, launcher, state, jobs done
    workers: tuple[tuple[str, str, str, str, int], ...]
    queue_paused: bool  # the queue itself is paused, for every worker (``pause_queue``)
    state: str
    finished: int
    total: int
    throughput: float
    success_rate: float | None  # of finished jobs; None while none has finished
    charts: Charts


@dataclass
class ProgressBatch:
    """The current batch: the jobs that arrived since the queue was last idle."""

    baseline: int = 0  # finished jobs that belong to earlier batches
    idle_finished: int | None = None  # finished count when the queue last went idle
    history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=256))
    #: (time, finished count) over the charts' five minutes, one sample per refresh
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))

    def update(self, counts: dict[str, int]) -> tuple[int, int, float]:
        """Return (finished in batch, batch size, jobs/s over the last few seconds)."""
        finished = counts["completed"] + counts["failed"] + counts["cancelled"]
        total = sum(counts.values())
        if total - finished > 0 and self.idle_finished is not None:  # new work after idle
            self.baseline, self.idle_finished = self.idle_finished, None
        elif total == finished:
            self.idle_finished = finished
        self.baseline = min(self.baseline, finished)  # retention may have trimmed old records
        now = time.monotonic()
        self.history.append((now, finished))
        self.samples.append((now, finished))
        while self.history and now - self.history[0][0] > THROUGHPUT_WINDOW_S:
            self.history.popleft()
        then, done_then = self.history[0]
        rate = (finished - done_then) / (now - then) if now > then else 0.0
        return finished - self.baseline, total - self.baseline, rate

    def forget_rate(self) -> None:
        """Start the throughput window afresh (the workers here stopped: what they did is past)."""
        self.history.clear()
        self.samples.clear()


class QueuePanel(anywidget.AnyWidget):
    """The panel: an anywidget widget (an ipywidgets ``DOMWidget``, so it goes inside other
    layouts) and its refresher. Display it by leaving it last in a cell; in marimo, wrap it:
    ``mo.ui.anywidget(q.panel())``."""

    _esm = Path(__file__).with_name("panel.js")
    _css = STYLE
    #: the text above the bar: state, counts, running jobs, workers, failures (escaped HTML)
    summary = traitlets.Unicode("").tag(sync=True)
    charts = traitlets.Unicode("").tag(sync=True)  #: the charts (SVG in HTML)
    progress = traitlets.Float(0.0).tag(sync=True)  #: the batch's finished fraction, 0 to 1
    progress_label = traitlets.Unicode("").tag(sync=True)  #: "finished / total (percent)"
    bar_style = traitlets.Unicode("info").tag(sync=True)  #: info, success or warning
    #: the buttons, in order: name, label, tip and whether each is disabled
    buttons = traitlets.List(traitlets.Dict()).tag(sync=True)
    #: the last click the page sent: the button's name and a count of clicks
    action = traitlets.Dict().tag(sync=True)

    def __init__(self, queue: Queue, refresh_s: float = 0.5, metric: str | None = None) -> None:
        if refresh_s < 0.1:
            raise ConfigError(f"panel refresh must be at least 0.1 s, got {refresh_s}")
        if metric is not None and (not isinstance(metric, str) or not METRIC_NAME.match(metric)):
            raise ConfigError(f"panel(metric=...) is a metric name (an identifier, like 'val_loss'), "
                              f"got {metric!r}")
        super().__init__(buttons=[{"name": name, "label": label, "tip": tip, "disabled": False}
                                  for name, label, tip in BUTTONS])
        #: the metric whose curves it draws (``None``: the first one a job reported)
        self.metric = metric
        self.queue = queue
        self.refresh_s = refresh_s
        self.batch = ProgressBatch()
        self._schedules: list[tuple[float, str]] = []  # (next run, id) of the queue's schedules
        self._schedules_read_at = float("-inf")
        self._workers: tuple[tuple[str, str, str, str, int], ...] = ()
        self._workers_read_at = float("-inf")
        self._paused_everywhere = False  # the queue itself is paused (read with the workers)
        self.updates = 0  # how many times widget values were pushed (for tests and the bench)
        self._last: Snapshot | None = None
        self._clicks = itertools.count(1)
        self.observe(self._clicked, names="action")
        self._refresher: concurrent.futures.Future[None] | asyncio.Task[None] | None = \
            queue.run_soon(self._refresh_forever())

    # -- display ---------------------------------------------------------------------------------
    def __repr__(self) -> str:
        snap = self._last
        if snap is None:
            return "<khadem_nb panel (no data yet)>"
        counts = ", ".join(f"{k} {v}" for k, v in snap.counts)
        return f"<khadem_nb panel: {snap.state}; {counts}; {snap.finished}/{snap.total} done>"

    # -- actions ---------------------------------------------------------------------------------
    def click(self, name: str) -> None:
        """Click the button ``name`` as the page does (one of ``ACTIONS``)."""
        if name not in ACTIONS:
            raise ConfigError(f"the panel has no button {name!r}; its buttons are {', '.join(ACTIONS)}")
        self.action = {"name": name, "n": next(self._clicks)}

    def disabled(self, name: str) -> bool:
        """Whether the button ``name`` is disabled now."""
        return any(b["name"] == name and b["disabled"] for b in self.buttons)

    def _clicked(self, change: dict[str, Any]) -> None:
        name = (change["new"] or {}).get("name")
        if name in ACTIONS:
            self.act(name)
        elif name is not None:
            logger.warning("the panel was sent an unknown action %r (its buttons are %s)", name,
                           ", ".join(ACTIONS))

    def act(self, action: str) -> None:
        """What the buttons do: ``pause``, ``resume`` (this kernel's workers), ``stop``,
        ``retry_failed``, ``cancel`` (everything queued and running in this queue),
        ``pause_queue`` and ``resume_queue`` (every worker of the queue, wherever it runs)."""
        queue = self.queue
        if action == "pause":
            queue.pause()
        elif action == "resume":
            queue.resume()
        elif action == "stop":
            queue.stop_soon()
        elif action == "retry_failed":
            queue.run_soon(self._once_open(queue.manager.retry_failed()))
        elif action == "cancel":
            queue.run_soon(self._once_open(queue.manager.cancel_all("all", queue=queue.settings.name)))
        elif action in ("pause_queue", "resume_queue"):
            verb = queue.manager.pause_queue if action == "pause_queue" else queue.manager.resume_queue
            queue.run_soon(self._once_open(verb(queue.settings.name), reread=True))
        self._last = None  # redraw at the next tick

    async def _once_open(self, coro: Coroutine[Any, Any, object], *, reread: bool = False) -> None:
        """Run a button's call once the queue is open (a click may come before the panel's
        first refresh has opened it); a failure is logged, never lost. ``reread``: the next
        refresh reads the queue's flags again rather than the last ones it read."""
        try:
            await self.queue.opened()
            await coro
        except Exception:
            logger.exception("panel action failed")
        if reread:
            self._workers_read_at = float("-inf")
            self._last = None

    # -- refreshing ------------------------------------------------------------------------------
    async def _refresh_forever(self) -> None:
        await self.queue.opened()
        while True:
            try:
                self.apply(await self.snapshot())
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken refresh must never take the kernel down
                logger.exception("panel refresh failed")
            await asyncio.sleep(self.refresh_s)

    async def snapshot(self) -> Snapshot:
        manager = self.queue.manager
        counts = await manager.counts(self.queue.settings.name)
        active = await manager.jobs(JobStatus.ACTIVE, queue=self.queue.settings.name, limit=8)
        failed = await manager.jobs(JobStatus.FAILED, queue=self.queue.settings.name, limit=5)
        queued = await manager.jobs(JobStatus.QUEUED, queue=self.queue.settings.name, limit=WAITING_LOOKED)
        held_back = Counter((await manager.why_waiting(queued)).values())
        next_runs = await self._next_runs()
        workers = await self._workers_now()
        finished, total, rate = self.batch.update(counts)
        now_ms = time.time() * 1000
        worker = self.queue.worker
        ended = await manager.jobs(JobStatus.COMPLETED, queue=self.queue.settings.name, limit=CURVES_SHOWN)
        reported = [*reversed(active), *reversed(ended)]  # running first, then the last finished
        charts = panel_charts(self.batch.samples, worker.recent if worker is not None else (),
                              time.monotonic(), int(now_ms), reported, self.metric)
        state = ("paused" if worker.paused else f"running ({worker.options.concurrency} workers)") \
            if worker is not None and worker.running else "not running here"
        return Snapshot(
            counts=tuple(counts.items()),
            running=tuple((r.name, r.id, r.meta.get("progress"), r.meta.get("note") or _last_line(r),
                           (now_ms - (r.started_ms or now_ms)) / 1000) for r in reversed(active)),
            failures=tuple((r.name, r.id, r.failure or "", r.error or "") for r in reversed(failed)),
            held_back=tuple(sorted(held_back.items())),
            studies=tuple(study.progress() for study in self.queue.studies[-STUDIES_SHOWN:]),
            next_runs=next_runs, workers=workers, queue_paused=self._paused_everywhere,
            state=state, finished=finished, total=total, throughput=round(rate, 1),
            success_rate=_success_rate(counts), charts=charts,
        )

    async def _next_runs(self) -> tuple[tuple[str, float], ...]:
        """The schedules of this queue due soonest, read again every SCHEDULES_EVERY_S."""
        now = time.monotonic()
        if now >= self._schedules_read_at + SCHEDULES_EVERY_S:
            self._schedules_read_at = now
            infos = await self.queue.manager.schedules()
            self._schedules = sorted((i.next_run.timestamp(), i.id) for i in infos
                                     if i.next_run is not None and i.queue == self.queue.settings.name)
        wall = time.time()
        return tuple((schedule_id, round(max(0.0, at - wall))) for at, schedule_id in self._schedules[:3])

    async def _workers_now(self) -> tuple[tuple[str, str, str, str, int], ...]:
        """The queue's workers (their entries, ``presence``), read again every WORKERS_EVERY_S;
        those gone for good are left out."""
        now = time.monotonic()
        if now >= self._workers_read_at + WORKERS_EVERY_S:
            self._workers_read_at = now
            entries = await self.queue.manager.list_workers()
            self._paused_everywhere = self.queue.settings.name in await self.queue.manager.paused_queues()
            self._workers = tuple((str(e["name"]), str(e.get("host") or ""), str(e.get("launcher") or ""),
                                   str(e.get("state") or ""), int(e.get("jobs_done") or 0))
                                  for e in entries if e.get("state") != "gone")
        return self._workers

    def apply(self, snap: Snapshot) -> None:
        """Push ``snap`` into the widgets, in one batch, unless nothing changed."""
        if snap == self._last:
            return
        last, self._last = self._last, snap
        with self.hold_sync():
            _set(self, "summary", self._summary_html(snap))
            fraction = snap.finished / snap.total if snap.total else 1.0
            _set(self, "progress", fraction)
            failed = dict(snap.counts).get("failed", 0)
            _set(self, "bar_style", "warning" if failed else ("success" if fraction >= 1 else "info"))
            _set(self, "progress_label", f"{snap.finished} / {snap.total} ({fraction:.0%})")
            paused = snap.state == "paused"
            off = {"pause": paused or snap.state.startswith("not"), "resume": not paused,
                   "pause_queue": snap.queue_paused, "resume_queue": not snap.queue_paused}
            _set(self, "buttons", [{**b, "disabled": off.get(b["name"], False)} for b in self.buttons])
            if last is None or last.charts != snap.charts:
                _set(self, "charts", charts_html(snap.charts))
        self.updates += 1
        if last is not None and last.state != snap.state:
            logger.debug("panel: %s -> %s", last.state, snap.state)

    def _summary_html(self, snap: Snapshot) -> str:
        header = (f"<div><b>khadem_nb</b> <code>{html.escape(self.queue.settings.redacted_url())}</code>"
                  f"{QUEUE_PAUSED if snap.queue_paused else ''}"
                  f" <span class='khadem-muted'>{snap.state} · {snap.throughput:g} jobs/s"
                  f"{_success_text(snap.success_rate)}</span></div>")
        counts = " ".join(f"<span class='khadem-badge' style='background:{STATUS_COLOURS[JobStatus(k)]}'"
                          f"{_badge_title(k)}>{k} {v}</span>" for k, v in snap.counts)
        return (f"{header}<div>{counts}</div>{_studies(snap)}{_next_runs(snap)}{_held_back(snap)}"
                f"{_running_table(snap)}"
                f"{_workers_table(snap)}"
                f"{_failures_table(snap)}")

    def workers_stopped(self) -> None:
        """The queue's workers here stopped: the throughput starts again from nothing."""
        self.batch.forget_rate()
        self._last = None

    def close(self) -> None:
        """Stop refreshing and close the widget."""
        task = getattr(self, "_refresher", None)
        if task is None:  # closed already (ipywidgets closes every widget at exit)
            return
        self._refresher = None
        with contextlib.suppress(Exception):
            if isinstance(task, asyncio.Task):
                task.cancel()
            else:
                self.queue.call_soon(task.cancel)
        super().close()
        self.queue.forget_panel(self)


def _success_rate(counts: dict[str, int]) -> float | None:
    if not counts.get("completed", 0) + counts.get("failed", 0):
        return None
    return round(float(metrics_from_counts(counts)["success_rate"]), 3)


def _badge_title(status: str) -> str:
    """A status badge's tooltip, where the word alone may mislead."""
    return " title='waiting for other jobs to end'" if status == JobStatus.WAITING.value else ""


def _success_text(rate: float | None) -> str:
    return "" if rate is None else f" · {rate:.0%} succeeded"


def _set(widget: Any, name: str, value: Any) -> None:
    if getattr(widget, name) != value:  # unchanged traits send nothing
        setattr(widget, name, value)


def _last_line(record: JobRecord) -> str | None:
    """The last line a running job printed (its output reaches the record while it runs, from
    any machine), cut to fit a table cell."""
    lines = str(record.meta.get("output") or "").rstrip("\n").rsplit("\n", 1)
    return lines[-1][-120:] or None


def _studies(snap: Snapshot) -> str:
    """Each study of this kernel: its trials ended and its best value so far, one line."""
    lines = []
    for name, ended, total, best in snap.studies:
        value = "no trial completed yet" if best is None else f"best {best:.6g}"
        lines.append(f"<div class='khadem-study'>study <code>{html.escape(name)}</code>: {ended} / {total} "
                     f"trials · {value}</div>")
    return "".join(lines)


def _next_runs(snap: Snapshot) -> str:
    """The schedules due soonest: one line."""
    if not snap.next_runs:
        return ""
    parts = " · ".join(f"<code>{html.escape(schedule_id)}</code> in {seconds:g}s"
                       for schedule_id, seconds in snap.next_runs)
    return f"<div class='khadem-muted'>next: {parts}</div>"


def _held_back(snap: Snapshot) -> str:
    """Why queued jobs wait, where their limits hold them back: one line."""
    if not snap.held_back:
        return ""
    parts = " · ".join(f"{html.escape(reason)} ({n} job{'s' if n != 1 else ''})"
                       for reason, n in snap.held_back)
    return f"<div class='khadem-held'>waiting: {parts}</div>"


def _running_table(snap: Snapshot) -> str:
    if not snap.running:
        return "<div class='khadem-muted'>no job running</div>"
    rows = "".join(
        f"<tr>{_job_cells(name, job_id)}"
        f"<td class='khadem-nowrap'>{_bar(progress)}</td><td>{html.escape(note or '')}</td>"
        f"<td class='khadem-nowrap'>{elapsed:.1f}s</td></tr>"
        for name, job_id, progress, note, elapsed in snap.running)
    head = "<tr><th>running</th><th>id</th><th>progress</th><th>note</th><th>for</th></tr>"
    return f"<table>{head}{rows}</table>"


def _workers_table(snap: Snapshot) -> str:
    """The queue's workers elsewhere (this kernel's own are the header's state): one row each."""
    others = [w for w in snap.workers if w[2] != "kernel"]
    if not others:
        return ""
    rows = "".join(f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(host)}</td>"
                   f"<td>{html.escape(launcher)}</td><td class='{_state_class(state)}'>"
                   f"{html.escape(state)}</td><td class='khadem-nowrap'>{done}</td></tr>"
                   for name, host, launcher, state, done in others[:WORKERS_SHOWN])
    more = len(others) - WORKERS_SHOWN
    tail = f"<tr><td class='khadem-muted' colspan='5'>and {more} more</td></tr>" if more > 0 else ""
    head = "<tr><th>worker</th><th>host</th><th>launcher</th><th>state</th><th>jobs</th></tr>"
    return f"<table>{head}{rows}{tail}</table>"


def _state_class(state: str) -> str:
    return "khadem-error" if state == "failed" else ""


def _job_cells(name: str, job_id: str) -> str:
    """A job's name and short id, the first two cells of the panel's tables."""
    return (f"<td><code>{html.escape(name)}</code></td>"
            f"<td class='khadem-muted khadem-nowrap'>{short_id(job_id)}</td>")


def _bar(progress: float | None) -> str:
    if progress is None:
        return "<span class='khadem-muted'>-</span>"
    return f"<span class='khadem-bar'><span style='width:{progress:.0%}'></span></span> {progress:.0%}"


def _failures_table(snap: Snapshot) -> str:
    if not snap.failures:
        return ""
    rows = "".join(f"<tr>{_job_cells(name, job_id)}<td>{html.escape(kind)}</td>"
                   f"<td class='khadem-error'>{html.escape(error)}</td></tr>"
                   for name, job_id, kind, error in snap.failures)
    return f"<table><tr><th>latest failures</th><th>id</th><th>kind</th><th>error</th></tr>{rows}</table>"


