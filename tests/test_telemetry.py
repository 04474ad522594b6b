"""Run telemetry: ``kn.report`` inside jobs (async, sync, isolated, in worker processes) reaches
the record while the job runs and when it ends, bounded per metric; curves and last values as
DataFrames; the best point; and every bad report refused with a clear error in the job."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import QUEUED_DRIVERS, driver_config
from jobs import Trains
from procs import finish, start_worker

import khadem_nb as kn
from khadem_nb import JobCancelledError, JobStatus, QueueManager, ReportError
from khadem_nb.features.telemetry import MAX_POINTS, WATCHED, Curves, check_metric, last_values, points
from khadem_nb.runtime import context


def test_a_series_keeps_its_latest_steps_whole_and_thins_the_older_ones() -> None:
    curves = Curves()
    for step in range(10 * MAX_POINTS):
        curves.add(None, {"loss": 1 / (step + 1)}, step)
    kept = curves.stored()["loss"]
    assert len(kept) <= MAX_POINTS and kept[-1][0] == 10 * MAX_POINTS - 1
    steps = [point[0] for point in kept]
    assert steps == sorted(steps) and steps[0] == 0  # the start of the curve stays
    assert steps[-MAX_POINTS // 4:] == list(range(steps[-1] - MAX_POINTS // 4 + 1, steps[-1] + 1))
    curves.add(5, {"loss": 0.5}, 0)
    curves.add(None, {"acc": float("nan")}, 0)  # counts up from the last step
    assert curves.stored()["acc"] == [[6, None, 0]]
    assert math.isnan(last_values({"reports": curves.stored()})["acc"])


def test_bad_reports_name_the_problem() -> None:
    assert check_metric("val_loss", 3) == 3.0 and check_metric("x", float("nan")) is None
    for name, value, message in (("loss", "low", "metric 'loss' must be a number, got str"),
                                 ("loss", True, "metric 'loss' must be a number"),
                                 ("loss", float("inf"), "report finite numbers"),
                                 ("val loss", 1.0, "identifier"), ("", 1.0, "identifier"),
                                 ("x" * 65, 1.0, "identifier")):
        with pytest.raises(ReportError, match=message):
            check_metric(name, value)
    curves = Curves()
    for step in (-1, 1.5, "3", True):
        with pytest.raises(ReportError, match="step must be a whole number"):
            curves.add(step, {"loss": 1.0}, 0)
    with pytest.raises(ReportError, match="at least one metric"):
        curves.add(None, {}, 0)
    with pytest.raises(kn.KhademError, match="outside a running job"):
        kn.report(loss=1.0)


@pytest.mark.parametrize("driver", QUEUED_DRIVERS)
async def test_reports_reach_the_record_while_the_job_runs(driver: str, tmp_path: Path) -> None:
    async with QueueManager(driver_config(driver, tmp_path)) as manager:
        await manager.driver.purge()
        job_id = await manager.dispatch(Trains(epochs=30, pause=0.1))
        worker = await manager.start_worker(run_in_background=True, concurrency=1)
        try:
            deadline, seen = time.monotonic() + 10, []
            while time.monotonic() < deadline and not seen:
                record = await manager.get_job(job_id)
                if record.status is JobStatus.ACTIVE:
                    seen = list(points(record.meta))
                await asyncio.sleep(0.1)
            assert seen and {metric for metric, *_ in seen} == {"loss", "acc"}  # while it ran
            record = (await manager.wait([job_id], timeout=20))[0]
        finally:
            await worker.stop()
            await manager.driver.purge()
    loss = [(step, value) for metric, step, value, _ in points(record.meta) if metric == "loss"]
    assert loss == [(epoch, 1 / (epoch + 1)) for epoch in range(30)]
    assert math.isnan(next(v for m, s, v, _ in points(record.meta) if m == "acc" and s == 2))


@pytest.mark.parametrize("driver", QUEUED_DRIVERS)
async def test_a_job_a_pruner_watches_stores_its_reports_more_often(
        driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With live output held back for a minute, a job whose record says a pruner watches it
    (``telemetry.WATCHED``) still has its reports stored while it runs, and an unwatched one
    beside it has none stored yet."""
    monkeypatch.setattr(context, "OUTPUT_FLUSH_S", 60.0)
    async with QueueManager(driver_config(driver, tmp_path)) as manager:
        await manager.driver.purge()
        plain = await manager.dispatch(Trains(epochs=80, pause=0.1))
        watched = manager.prepare(Trains(epochs=80, pause=0.1))
        watched.record.meta[WATCHED] = True
        watched_id = await manager.store(watched)
        worker = await manager.start_worker(run_in_background=True, concurrency=2)
        try:
            deadline, seen = time.monotonic() + 6, None
            while time.monotonic() < deadline and seen is None:
                records = await manager.get_jobs([watched_id, plain])
                if records[0].status is JobStatus.ACTIVE and any(points(records[0].meta)):
                    seen = records
                await asyncio.sleep(0.05)
            assert seen is not None, "the watched job's reports were not stored while it ran"
            assert seen[1].status is JobStatus.ACTIVE and not any(points(seen[1].meta))
            await manager.cancel([plain, watched_id])
        finally:
            await worker.stop()
            await manager.driver.purge()


def test_a_sweeps_curves_results_and_best_point() -> None:
    q = kn.Queue()

    @q.job
    def train(lr: float, epochs: int = 4) -> dict[str, float]:
        for epoch in range(epochs):
            kn.report(epoch, val_loss=lr * 10 / (epoch + 1), lr_seen=lr)
        return {"val_loss": -1.0, "epochs": epochs}  # a result field named like a metric

    q.start(concurrency=2)
    try:
        group = train.sweep(lr=[0.1, 0.01, 0.3])
        group.wait(timeout=20)
        curves = group.curves()
        results = group.results()
        best = group.best("val_loss")
    finally:
        q.stop()
    assert list(curves.columns) == ["id", "lr", "epochs", "step", "metric", "value", "time"]
    assert len(curves) == 3 * 4 * 2
    wide = curves[curves.metric == "val_loss"].pivot_table(index="step", columns="lr", values="value")
    assert wide.loc[3, 0.1] == pytest.approx(0.25)
    assert list(results["last_val_loss"]) == pytest.approx([0.25, 0.025, 0.75])  # result kept its name
    assert list(results["val_loss"]) == [-1.0] * 3 and list(results["lr_seen"]) == [0.1, 0.01, 0.3]
    assert best["lr"] == 0.01 and best["last_val_loss"] == pytest.approx(0.025)
    assert "reports" not in q.jobs().columns  # the job listing stays light
    with pytest.raises(kn.ConfigError, match="no point of this group reported 'nothing'"):
        group.best("nothing")
    with pytest.raises(kn.ConfigError, match="mode must be 'min' or 'max'"):
        group.best("val_loss", mode="lowest")


def test_sync_and_isolated_jobs_report_and_a_bad_report_fails_the_job() -> None:
    q = kn.Queue()

    @q.job
    def sync_train(n: int) -> int:
        for step in range(n):
            kn.report(loss=float(n - step))
        return n

    @q.job(isolation="process")
    def isolated_train(n: int) -> int:
        for step in range(n):
            kn.report(step * 2, loss=float(n - step), bad=float("nan"))
        return n

    @q.job
    def bad_report() -> None:
        kn.report(loss="low")

    q.start(concurrency=2)
    try:
        handles = [sync_train.dispatch(3), isolated_train.dispatch(3), bad_report.dispatch()]
        for handle in handles[:2]:
            assert handle.result(timeout=60) == 3
        with pytest.raises(kn.JobFailedError):
            handles[2].result(timeout=20)
        sync_curves, isolated_curves = handles[0].curves(), handles[1].curves()
        failed = handles[2].record()
    finally:
        q.stop()
    assert sync_curves[sync_curves.metric == "loss"][["step", "value"]].values.tolist() == \
        [[0, 3.0], [1, 2.0], [2, 1.0]]
    loss = isolated_curves[isolated_curves.metric == "loss"]
    assert loss["step"].tolist() == [0, 2, 4] and loss["value"].tolist() == [3.0, 2.0, 1.0]
    assert isolated_curves[isolated_curves.metric == "bad"]["value"].isna().all()
    assert "ReportError: metric 'loss' must be a number, got str 'low'" in (failed.error or "")


async def test_report_raises_once_the_job_is_cancelled() -> None:
    outcome: list[Any] = []

    class Reporter(kn.QueueJob):
        async def handle(self) -> None:
            kn.context().cancelled = True  # as a cancel of a job on a thread marks it
            try:
                kn.report(loss=1.0)
            except JobCancelledError as exc:
                outcome.append(exc)

    async with QueueManager("memory://") as manager:
        await manager.dispatch(Reporter())
        await manager.start_worker(max_jobs=1)
    assert outcome and isinstance(outcome[0], JobCancelledError)


async def test_a_worker_process_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with QueueManager(url) as manager:
        job_id = await manager.dispatch(Trains(epochs=5, scale=2.0))
        finish([start_worker(url, "--burst")])
        record = await manager.get_job(job_id)
    assert record.result == pytest.approx(0.4)
    assert [(s, v) for m, s, v, _ in points(record.meta) if m == "loss"] == \
        [(epoch, 2.0 / (epoch + 1)) for epoch in range(5)]


def test_the_panel_draws_a_metrics_curves_of_running_and_finished_jobs() -> None:
    from khadem_nb.notebook.charts import CURVE_POINTS, charts_html

    q = kn.Queue()

    @q.job
    def train(scale: float, steps: int) -> float:
        for step in range(steps):
            kn.report(step, loss=scale / (step + 1), acc=step / steps)
            time.sleep(0.002)
        return scale

    q.start(concurrency=3)
    try:
        train.map([{"scale": 1.0, "steps": 1000}, {"scale": 2.0, "steps": 20}, {"scale": 3.0, "steps": 20}]
                  ).wait(timeout=30)
        first = q.panel(refresh=0.1, metric=None)
        chosen = q.panel(refresh=0.1, metric="acc")
        charts = [q.run(panel.snapshot()).charts for panel in (first, chosen)]
        with pytest.raises(kn.ConfigError, match="identifier"):
            q.panel(metric="val loss")
        for panel in (first, chosen):
            panel.close()
    finally:
        q.stop()
    assert charts[0].metric == "loss" and charts[1].metric == "acc"
    lines = {len(line) for _, status, line in charts[0].curves if status == "completed"}
    assert len(charts[0].curves) == 3 and max(lines) <= CURVE_POINTS + 1  # a long curve is thinned
    svg = charts_html(charts[0])
    assert "data-jobs='3'" in svg and svg.count("<polyline") == 3 and ">loss<" in svg
