"""Handles on dispatched work: ``JobHandle`` for one call, ``JobGroup`` for a batch or sweep."""

from __future__ import annotations

import html
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._ids import short_id
from ..errors import ConfigError
from ..job import TERMINAL_STATUSES, JobRecord, JobStatus
from ..runtime.waiting import outcome

if TYPE_CHECKING:
    import pandas as pd

    from ..features.pruning import Pruner
    from .queue import Queue


class JobHandle:
    """One dispatched call. ``await h`` or ``h.result(timeout)`` gives its return value."""

    def __init__(self, queue: Queue, job_id: str, name: str, params: dict[str, Any],
                 key: str | None = None) -> None:
        self.queue = queue
        self.id = job_id
        self.name = name
        self.params = params
        self.key = key

    def record(self) -> JobRecord:
        """The stored record, fetched now."""
        return self.queue.run(self.queue.manager.get_job(self.id))

    @property
    def status(self) -> str:
        return self.record().status.value

    def done(self) -> bool:
        """Whether the job has finished (completed, failed or cancelled)."""
        return self.record().status in TERMINAL_STATUSES

    def result(self, timeout: float | None = None) -> Any:
        """Block until the job ends; return its result, or raise ``JobFailedError`` or
        ``JobCancelledError`` (each carries the record)."""
        records = self.queue.run(self.queue.manager.wait([self.id], timeout))
        return outcome(records[0])

    async def aresult(self, timeout: float | None = None) -> Any:
        """Await the job's result (as ``result`` does, from a coroutine)."""
        records = await self.queue.run_async(self.queue.manager.wait([self.id], timeout))
        return outcome(records[0])

    def __await__(self) -> Generator[Any, None, Any]:
        return self.aresult().__await__()

    @property
    def output(self) -> str:
        """What the job printed and logged so far, read now (a job running on another machine
        included: its output reaches the record about once a second)."""
        return str(self.record().meta.get("output") or "")

    def curves(self) -> pd.DataFrame:
        """What the job reported so far (``kn.report``): one row a metric a step, as
        ``JobGroup.curves`` has them."""
        from .frames import curves_frame

        return curves_frame([self.params], [self.record()])

    def tail(self, lines: int = 10) -> str:
        """The last ``lines`` lines of :attr:`output`."""
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 0:
            raise ConfigError(f"tail() takes a number of lines (an integer >= 0), got {lines!r}")
        return "\n".join(self.output.splitlines()[-lines:]) if lines else ""

    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel this job: it never starts, or its worker stops it. Whether this call
        cancelled it (``False`` if it had finished or was cancelled already)."""
        return bool(self.queue.run(self.queue.manager.cancel(self.id, reason=reason)))

    def then(self, fn: Callable[..., Any], /, **kwargs: Any) -> JobHandle:
        """Dispatch ``fn(this job's result, **kwargs)`` to run when this job completes, and
        return its handle. It waits (status ``waiting``) until then; if this job fails or is
        cancelled, it is cancelled with a reason naming this job. ``fn`` is a job function, or
        a plain function made one here."""
        from .workflows import then

        return then(self.queue, self.id, fn, kwargs)

    def debug(self) -> Any:
        """Run this point again here, in the foreground, with its stored arguments and the
        job's current definition: an exception surfaces in the cell, and ``%debug`` opens where
        it was raised. The stored record is not touched; ``progress()`` calls are kept only in
        memory."""
        return self.queue.run_here(self.record())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"<JobHandle {self.name}({args}) id={short_id(self.id)}>"

    def _repr_html_(self) -> str:
        record = self.record()
        error = ""
        if record.error and record.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            error = f" <span style='color:#c0392b'>{html.escape(record.error)}</span>"
        return (f"<code>{html.escape(self.name)}</code> <small>{short_id(self.id)}</small> "
                f"{_badge(record.status)}{error}")


class JobGroup:
    """A batch of calls (``map``) or a grid (``sweep``). ``await g`` or ``g.wait()`` waits for all."""

    def __init__(self, queue: Queue, handles: Sequence[JobHandle]) -> None:
        self.queue = queue
        self.handles = list(handles)
        #: the pruner watching this group (``sweep(prune=...)``), if any
        self.pruner: Pruner | None = None
        #: what notifications call the group (``notify(name=...)``); else its function and size
        self.name: str | None = None

    def __len__(self) -> int:
        return len(self.handles)

    def __iter__(self) -> Iterator[JobHandle]:
        return iter(self.handles)

    def __getitem__(self, index: int) -> JobHandle:
        return self.handles[index]

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.handles]

    def records(self) -> list[JobRecord]:
        """The records of the group's jobs, in the group's order."""
        return self.queue.run(self.queue.manager.get_jobs(self.ids))

    def statuses(self) -> list[JobStatus | None]:
        """Each job's status, read in one call; ``None`` for a job that finished and was then
        dropped by retention (a sweep larger than ``queue.retention``)."""
        return self.queue.run(self.queue.manager.statuses(self.ids))

    def counts(self) -> dict[str, int]:
        """Jobs per status; a ``dropped`` entry counts those gone to retention, if any."""
        counts = dict.fromkeys((s.value for s in JobStatus), 0)
        for status in self.statuses():
            key = DROPPED if status is None else status.value
            counts[key] = counts.get(key, 0) + 1
        return counts

    def done(self) -> bool:
        """Whether every job of the group has finished (completed, failed or cancelled)."""
        return all(s is None or s in TERMINAL_STATUSES for s in self.statuses())

    def wait(self, timeout: float | None = None) -> JobGroup:
        """Block until every job has ended (completed, failed or cancelled); failures do not
        raise."""
        self.queue.run(self.queue.manager.wait_done(self.ids, timeout))
        return self

    async def await_all(self, timeout: float | None = None) -> JobGroup:
        """Wait until every job has finished (up to ``timeout`` seconds); the handles."""
        await self.queue.run_async(self.queue.manager.wait_done(self.ids, timeout))
        return self

    def __await__(self) -> Generator[Any, None, JobGroup]:
        return self.await_all().__await__()

    def results(self) -> pd.DataFrame:
        """One row per point: parameters, result fields, status, duration_ms, error, and the
        last reported value of each metric (``kn.report``)."""
        from .frames import group_frame

        return group_frame(self.handles, self.records(), pruned=self.pruner is not None)

    def curves(self) -> pd.DataFrame:
        """What every point reported (``kn.report``), one row a metric a step: ``id``, the
        point's parameters, ``step``, ``metric``, ``value``, ``time``; read while they run too.
        ``g.curves().pivot_table(index="step", columns="lr", values="value")`` is one metric's
        curves side by side."""
        from .frames import curves_frame

        return curves_frame([h.params for h in self.handles], self.records())

    def best(self, metric: str, mode: str = "min") -> pd.Series:
        """The row of ``results()`` with the best last value of ``metric`` (``mode``: ``"min"``
        or ``"max"``); ``ConfigError`` if no point reported it."""
        if mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
        frame = self.results()
        column = f"last_{metric}" if f"last_{metric}" in frame.columns else metric  # as group_frame names it
        if column not in frame.columns or frame[column].dtype != "float64" or frame[column].isna().all():
            raise ConfigError(f"no point of this group reported {metric!r}")
        best = frame[column].idxmin() if mode == "min" else frame[column].idxmax()
        return frame.loc[best]

    def label(self) -> str:
        """How messages name the group: ``lr-grid (train, 12 points)`` or ``train x 12``."""
        from .notifications import group_label

        return group_label(self.handles[0].name if self.handles else "group", len(self.handles), self.name)

    def notify(self, urls: str | Sequence[str], *, on: str | Sequence[str] = ("done", "failed"),
               name: str | None = None, metric: str | None = None, mode: str = "min") -> JobGroup:
        """Send a message through apprise (``"ntfy://my-topic"``, ``"mailto://..."``,
        ``"slack://..."``, ``"json://host:port"``: any service apprise knows) when a point of
        this group first fails (``"failed"``) and when every point has ended (``"done"``: the
        counts by status and the best point by ``metric``, or by the first metric known). Each
        event is sent once, by whichever kernel or process watching the group sees it first
        (``runtime.notifying``); this kernel watches the group until it ends. ``name`` names the
        group in the messages. A URL apprise does not know is a ``ConfigError`` here."""
        from ..runtime.notifying import GROUP_EVENTS, apprise_of, check_events
        from .notifications import check_name

        sender = apprise_of(urls)
        events = check_events(on, GROUP_EVENTS)
        if mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
        if name is not None:
            self.name = check_name(name)
        self.queue.watch_group(self, sender, events, metric, mode)
        return self

    def then(self, fn: Callable[..., Any], /, *, include_failed: bool = True, **kwargs: Any) -> JobHandle:
        """Dispatch ``fn(results, **kwargs)`` to run once after every job of this group has
        ended, and return its handle; ``results`` is the group's results DataFrame (as
        :meth:`results`), failed and cancelled points included with their status unless
        ``include_failed=False``. Running the cell again reuses the reduce already stored for
        these jobs (a failed one runs again)."""
        from .workflows import reduce

        return reduce(self.queue, self.ids, fn, include_failed, kwargs)

    def retry_failed(self, kind: str | None = None) -> int:
        """Requeue this group's failed jobs with a fresh attempt budget; with ``kind``, only
        those that failed that way (``raised``, ``timed_out``, ``crashed``, ``lost``)."""
        failed = [r.id for r in self.records() if r.status is JobStatus.FAILED]
        return self.queue.run(self.queue.manager.retry_failed(failed, kind=kind)) if failed else 0

    def cancel(self, where: Callable[[dict[str, Any]], Any] | None = None,
               reason: str = "cancelled") -> list[str]:
        """Cancel this group's jobs, or those whose parameters ``where(params)`` accepts;
        returns the ids cancelled (finished and already cancelled jobs are left as they are)."""
        if where is not None and not callable(where):
            raise ConfigError(f"cancel(where=...) takes a function of a point's parameters, got {where!r}")
        chosen = [h.id for h in self.handles if where is None or where(dict(h.params))]
        return self.queue.run(self.queue.manager.cancel(chosen, reason=reason)) if chosen else []

    def __repr__(self) -> str:
        counts = self.counts()
        shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        return f"<JobGroup {len(self)} jobs: {shown or 'empty'}>"

    def _repr_html_(self) -> str:
        counts = self.counts()
        finished = counts["completed"] + counts["failed"] + counts["cancelled"] + counts.get(DROPPED, 0)
        pct = 100 * finished / len(self) if self.handles else 100
        badges = " ".join(f"{_badge(k)} {v}" for k, v in counts.items() if v)
        return (f"<div><b>JobGroup</b> of {len(self)} jobs: {badges}"
                f"<div style='background:var(--jp-layout-color2,#eee);width:240px;height:8px'>"
                f"<div style='background:var(--jp-brand-color1,#2980b9);width:{pct:.0f}%;height:8px'>"
                f"</div></div></div>")


STATUS_COLOURS = {
    JobStatus.WAITING: "#16a085", JobStatus.QUEUED: "#7f8c8d", JobStatus.SCHEDULED: "#8e44ad",
    JobStatus.ACTIVE: "#2980b9",
    JobStatus.COMPLETED: "#27ae60", JobStatus.FAILED: "#c0392b", JobStatus.CANCELLED: "#d35400",
}
DROPPED = "dropped"  # finished, then removed by retention: no status left to read


def _badge(status: JobStatus | str) -> str:
    """A coloured label for a status (or its value, or ``dropped``)."""
    label = status.value if isinstance(status, JobStatus) else status
    colour = STATUS_COLOURS[JobStatus(label)] if label != DROPPED else "#bdc3c7"
    return (f"<span style='color:#fff;background:{colour};border-radius:3px;"
            f"padding:0 4px'>{label}</span>")
