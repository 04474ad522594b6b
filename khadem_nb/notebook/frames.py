"""Job records as pandas DataFrames, with proper dtypes (datetimes, float ms durations)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..features.dependencies import outcome
from ..features.pruning import PRUNED
from ..features.schedules import ScheduleInfo
from ..features.telemetry import last_values, points
from ..job import Failure, JobRecord, JobStatus
from ..metrics import metrics_from_records
from ..serializer import decode_value

if TYPE_CHECKING:
    import pandas as pd

    from .handles import JobHandle

JOB_COLUMNS = ["id", "job", "status", "waiting", "failure", "priority", "attempt", "created", "started",
               "finished",
               "duration_ms", "progress", "note", "args", "result", "error", "output", "code"]
SCHEDULE_COLUMNS = ["id", "job", "spec", "next_run", "last_run", "last_status", "overlap", "catchup", "queue"]
FAILURE_KINDS = [k.value for k in Failure]
ENDED_BADLY = (JobStatus.FAILED, JobStatus.CANCELLED)  # records whose error column says why
GROUP_COLUMNS = ["result", "status", "failure", "duration_ms", "attempt", "error", "code"]
DURATION_STATS = ("mean", "p50", "p95", "max")


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is a dependency
        raise ImportError("khadem_nb's DataFrames need pandas: pip install pandas") from exc
    return pd


def _times(pd: Any, values: list[int | None]) -> Any:
    return pd.to_datetime(pd.Series(values, dtype="Float64"), unit="ms", utc=True)


def jobs_frame(records: Sequence[JobRecord], waits: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per job record; ``waits``: why queued jobs wait (``QueueManager.why_waiting``)."""
    waits = waits or {}
    pd = _pandas()
    rows = {
        "id": [r.id for r in records],
        "job": [r.name for r in records],
        "status": pd.Categorical([r.status.value for r in records], categories=[s.value for s in JobStatus]),
        "waiting": [waits.get(r.id) for r in records],
        "failure": _failures(pd, records),
        "priority": pd.Series([r.priority for r in records], dtype="int64"),
        "attempt": pd.Series([r.attempt for r in records], dtype="int64"),
        "created": _times(pd, [r.created_ms for r in records]),
        "started": _times(pd, [r.started_ms for r in records]),
        "finished": _times(pd, [r.finished_ms for r in records]),
        "duration_ms": pd.Series([r.duration_ms for r in records], dtype="float64"),
        "progress": pd.Series([r.meta.get("progress") for r in records], dtype="float64"),
        "note": [r.meta.get("note") for r in records],
        "args": [_args(r) for r in records],
        "result": [decode_value(r.result) for r in records],
        "error": [r.error if r.status in ENDED_BADLY else None for r in records],
        "output": [r.meta.get("output") for r in records],
        "code": [r.fingerprint for r in records],
    }
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def schedules_frame(infos: Sequence[ScheduleInfo]) -> pd.DataFrame:
    """One row per schedule."""
    pd = _pandas()
    rows = {
        "id": [s.id for s in infos],
        "job": [s.job for s in infos],
        "spec": [s.spec for s in infos],
        "next_run": pd.to_datetime(pd.Series([s.next_run for s in infos], dtype="object"), utc=True),
        "last_run": pd.to_datetime(pd.Series([s.last_run for s in infos], dtype="object"), utc=True),
        "last_status": [s.last_status for s in infos],
        "overlap": [s.overlap for s in infos],
        "catchup": [s.catchup for s in infos],
        "queue": [s.queue for s in infos],
    }
    return pd.DataFrame(rows, columns=SCHEDULE_COLUMNS)


def _failures(pd: Any, records: Sequence[JobRecord]) -> Any:
    """Why each failed record failed (``raised``, ``timed_out``, ``crashed``, ``lost``)."""
    kinds = [r.failure if r.status is JobStatus.FAILED else None for r in records]
    return pd.Categorical(kinds, categories=FAILURE_KINDS)


def _args(record: JobRecord) -> Any:
    payload = decode_value(record.payload)
    if isinstance(payload, dict) and set(payload) == {"kwargs"}:
        return payload["kwargs"]
    return payload


def group_frame(handles: Sequence[JobHandle], records: Sequence[JobRecord],
                pruned: bool = False) -> pd.DataFrame:
    """One row per point: its parameters, its result (dicts flattened), status, duration, error,
    whether a pruner stopped it (``pruned``: with ``pruned``, a group a pruner watches, or once
    one point was pruned), and the last reported value of each metric
    (``telemetry``): a column named after the metric, ``last_<metric>`` where a parameter or a
    result field has that name."""
    # artifacts stay references (light handles): a sweep's frame opens without reading them
    frame = outcomes_frame([outcome(r, h.params, loaded=False)
                            for h, r in zip(handles, records, strict=True)])
    stopped = [r.status is JobStatus.CANCELLED and (r.error or "").startswith(PRUNED) for r in records]
    if records and (pruned or any(stopped)):  # stopped by a pruner: cancelled, never a failure
        frame["pruned"] = stopped
    lasts = [last_values(r.meta) for r in records]
    taken = set(frame.columns)
    for metric in sorted({m for last in lasts for m in last}):
        column = metric if metric not in taken else f"last_{metric}"
        frame[column] = _pandas().Series([last.get(metric) for last in lasts], dtype="float64")
    return frame


def curves_frame(params: Sequence[Mapping[str, Any]], records: Sequence[JobRecord]) -> pd.DataFrame:
    """Every reported point of ``records`` (each with its parameters), one row a metric a step:
    ``id``, the parameters, ``step``, ``metric``, ``value`` (NaN kept), ``time``; ready for
    ``pivot`` and plotting."""
    pd = _pandas()
    names = list(dict.fromkeys(name for point in params for name in point))
    rows: dict[str, list[Any]] = {"id": [], **{name: [] for name in names}, "step": [], "metric": [],
                                  "value": [], "time": []}
    for point, record in zip(params, records, strict=True):
        for metric, step, value, ms in points(record.meta):
            rows["id"].append(record.id)
            for name in names:
                rows[name].append(point.get(name))
            rows["step"].append(step)
            rows["metric"].append(metric)
            rows["value"].append(value)
            rows["time"].append(ms)
    frame = pd.DataFrame({key: values for key, values in rows.items() if key != "time"})
    frame["step"] = frame["step"].astype("int64")
    frame["value"] = frame["value"].astype("float64")
    frame["time"] = _times(pd, rows["time"])
    return frame.sort_values(["id", "metric", "step"], kind="stable").reset_index(drop=True)


def outcomes_frame(outcomes: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per point from ``dependencies.outcome`` dicts (what a reduce is given): its
    parameters, its result (dicts flattened when every completed point's result is one),
    status, failure kind, duration, attempt, error and code fingerprint."""
    pd = _pandas()
    if not outcomes:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    results = [o["result"] for o in outcomes]
    flatten = any(isinstance(x, dict) for x in results) and all(
        isinstance(x, dict) for x, o in zip(results, outcomes, strict=True) if o["status"] == "completed")
    rows: list[dict[str, Any]] = []
    for point, result in zip(outcomes, results, strict=True):
        params = point["params"]
        row: dict[str, Any] = dict(params)
        if flatten:
            row.update({k if k not in params else f"result.{k}": v for k, v in (result or {}).items()})
        else:
            row["result"] = result
        row.update({column: point[column] for column in GROUP_COLUMNS[1:]})
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["duration_ms"] = frame["duration_ms"].astype("float64")
    frame["status"] = pd.Categorical(frame["status"], categories=[s.value for s in JobStatus])
    frame["failure"] = pd.Categorical(frame["failure"], categories=FAILURE_KINDS)
    return frame


def metrics_frame(records: Sequence[JobRecord]) -> pd.DataFrame:
    """One row per job name plus ``(total)``: counts by status, failed ones by kind
    (``failed_raised`` ...), retries, rates, durations."""
    pd = _pandas()
    by_name: dict[str, list[JobRecord]] = {}
    for record in records:
        by_name.setdefault(record.name, []).append(record)
    rows = [_metrics_row(name, group) for name, group in sorted(by_name.items())]
    rows.append(_metrics_row("(total)", list(records)))
    frame = pd.DataFrame(rows).set_index("job")
    for column in ("success_rate", "failure_rate", *(f"duration_{s}_ms" for s in DURATION_STATS)):
        frame[column] = frame[column].astype("float64")
    return frame


def _metrics_row(name: str, records: Sequence[JobRecord]) -> dict[str, Any]:
    import numpy as np

    counts = dict.fromkeys((s.value for s in JobStatus), 0)
    kinds = dict.fromkeys(FAILURE_KINDS, 0)
    for record in records:
        counts[record.status.value] += 1
        if record.status is JobStatus.FAILED and record.failure in kinds:
            kinds[record.failure] += 1
    metrics = metrics_from_records(records)
    durations = np.array([d for r in records if r.status is JobStatus.COMPLETED
                          and (d := r.duration_ms) is not None], dtype="float64")
    stats = {"mean": durations.mean(), "p50": np.percentile(durations, 50),
             "p95": np.percentile(durations, 95), "max": durations.max()} if durations.size else {}
    return {
        "job": name, **counts,
        **{f"failed_{kind}": n for kind, n in kinds.items()},
        "retried": metrics["total_retried"],
        "success_rate": metrics["success_rate"],
        "failure_rate": metrics["failure_rate"],
        **{f"duration_{s}_ms": stats.get(s, float("nan")) for s in DURATION_STATS},
    }
