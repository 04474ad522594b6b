"""The notebook layer in a plain process: handles, sweeps, DataFrames, capture, the panel."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import khadem_nb as kn
from khadem_nb import ConfigError, JobFailedError, ResultTimeoutError, SerializationError
from khadem_nb.notebook.panel import ACTIONS


@pytest.fixture
def q() -> Iterator[kn.Queue]:
    queue = kn.Queue()
    yield queue
    queue.close()


def test_dispatch_and_result_in_a_plain_script(q: kn.Queue) -> None:
    @q.job
    def add(a: int, b: int = 10) -> int:
        return a + b

    h = add.dispatch(1)
    q.start(concurrency=2)
    assert h.result(timeout=10) == 11
    assert h.params == {"a": 1, "b": 10}
    assert h.status == "completed"
    assert add(2, 3) == 5  # calling the function itself still works


def test_async_waits_from_another_loop(q: kn.Queue) -> None:
    @q.job
    async def double(x: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * x

    q.start()

    async def main() -> tuple[int, list[int]]:
        h = double.dispatch(21)
        g = double.map([{"x": i} for i in range(5)])
        value = await h
        await g
        await q.join(timeout=10)
        return value, [x.result() for x in g]

    assert asyncio.run(main()) == (42, [0, 2, 4, 6, 8])


def test_sweep_results_frame_has_parameters_results_and_failures(q: kn.Queue) -> None:
    @q.job(max_attempts=2, retry_delay=0.01)
    def fit(lr: float, epochs: int) -> dict[str, float]:
        if lr > 1:
            raise ValueError(f"lr {lr} diverges")
        return {"loss": lr / epochs, "accuracy": 1 - lr}

    g = fit.sweep(lr=[0.1, 0.5, 2.0], epochs=[1, 2])
    assert len(g) == 6
    q.start(concurrency=3)
    frame = g.wait(timeout=20).results()
    assert list(frame.columns) == ["lr", "epochs", "loss", "accuracy", "status", "failure",
                                   "duration_ms", "attempt", "error", "code"]
    assert frame["code"].nunique() == 1 and len(frame.loc[0, "code"]) == 32
    assert frame["status"].tolist() == ["completed"] * 4 + ["failed"] * 2
    assert frame["duration_ms"].dtype == np.float64
    assert frame.loc[0, "loss"] == pytest.approx(0.1)
    assert frame.loc[5, "error"] == "ValueError: lr 2.0 diverges"
    assert frame.loc[5, "attempt"] == 2 and frame.loc[5, "failure"] == "raised"
    with pytest.raises(JobFailedError, match=r"lr 2\.0 diverges") as info:
        g[5].result(timeout=1)
    assert info.value.record.traceback is not None


def test_jobs_and_metrics_frames_have_typed_columns(q: kn.Queue) -> None:
    @q.job
    def square(x: int) -> int:
        print(f"squaring {x}")
        kn.progress(0.5, note="halfway")
        return x * x

    @q.job
    def broken() -> None:
        raise RuntimeError("nope")

    square.map([{"x": i} for i in range(4)])
    broken.dispatch()
    q.start()
    q.wait(timeout=10)
    jobs = q.jobs()
    assert len(jobs) == 5
    assert str(jobs["created"].dtype) == "datetime64[ns, UTC]" or "datetime64" in str(jobs["created"].dtype)
    assert jobs["duration_ms"].dtype == np.float64
    assert jobs["priority"].dtype == np.int64
    squares = jobs[jobs["job"].str.endswith("square")]
    assert squares["progress"].tolist() == [0.5] * 4
    assert squares["note"].tolist() == ["halfway"] * 4
    assert squares["output"].tolist() == [f"squaring {i}\n" for i in range(4)]
    assert squares["result"].tolist() == [0, 1, 4, 9]
    assert squares["args"].tolist() == [{"x": i} for i in range(4)]
    failed = q.jobs(status="failed")
    assert failed["error"].tolist() == ["RuntimeError: nope"]
    assert len(q.jobs(limit=2)) == 2
    metrics = q.metrics()
    assert metrics.index.tolist() == [*sorted(jobs["job"].unique().tolist()), "(total)"]
    total = metrics.loc["(total)"]
    assert (total["completed"], total["failed"]) == (4, 1)
    assert total["success_rate"] == pytest.approx(0.8)
    assert metrics["duration_p95_ms"].dtype == np.float64


def test_numpy_arguments_and_results_round_trip(q: kn.Queue) -> None:
    @q.job
    def stats(data: Any, scale: Any) -> dict[str, Any]:
        return {"mean": np.mean(data) * scale, "data": data * scale}

    h = stats.dispatch(np.arange(6, dtype=np.int32).reshape(2, 3), np.float32(2.0))
    q.start()
    result = h.result(timeout=10)
    assert isinstance(result["mean"], np.floating)
    assert result["data"].dtype == np.float32 or result["data"].dtype == np.float64
    assert result["data"].shape == (2, 3)


def test_bad_input_is_clear(q: kn.Queue) -> None:
    @q.job
    def takes(x: int) -> int:
        return x

    with pytest.raises(SerializationError, match=r"argument 'x' of .*takes\(\) is of type builtins.object"):
        takes.dispatch(object())
    with pytest.raises(ConfigError, match=r"missing a required argument: 'x'"):
        takes.dispatch()
    with pytest.raises(ConfigError, match="unknown job status 'finished'; valid statuses"):
        q.jobs(status="finished")
    with pytest.raises(ConfigError, match="sweep parameter 'x' must be a list"):
        takes.sweep(x=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unknown @q\.job options"):
        q.job(retries=3)
    h = takes.dispatch(1)
    with pytest.raises(ResultTimeoutError, match=r"still unfinished after 0\.2s"):
        h.result(timeout=0.2)  # no worker started
    assert len(q.jobs()) == 1


def test_start_twice_does_not_duplicate_workers(q: kn.Queue) -> None:
    first = q.start(concurrency=2)
    second = q.start(concurrency=2)
    assert first is second
    assert len(q.manager.workers) == 1


def test_pause_resume_stop_and_retry_failed(q: kn.Queue, tmp_path: Path) -> None:
    flag = tmp_path / "allow"

    @q.job
    def gated(i: int) -> int:
        if not flag.exists():
            raise RuntimeError("gate closed")
        return i

    q.start()
    q.pause()
    time.sleep(0.1)
    g = gated.map([{"i": i} for i in range(3)])
    time.sleep(0.3)
    assert g.counts()["queued"] == 3  # paused: nothing claimed
    q.resume()
    g.wait(timeout=10)
    assert g.counts()["failed"] == 3
    flag.touch()
    assert q.retry_failed() == 3
    g.wait(timeout=10)
    assert [h.result() for h in g] == [0, 1, 2]
    q.stop()
    assert not q.running
    later = gated.dispatch(9)
    time.sleep(0.2)
    assert later.status == "queued"


def test_resumable_sweep_on_sqlite_reuses_finished_points(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    log = tmp_path / "ran.txt"

    def define(queue: kn.Queue) -> Any:
        @queue.job(name="tests.resumable.point")
        def point(x: int) -> int:
            with open(log, "a") as handle:
                handle.write(f"{x}\n")
            if x == 2 and not (tmp_path / "fixed").exists():
                raise ValueError("two is broken")
            return x * 10

        return point

    first = kn.Queue(url)
    point = define(first)
    g = point.sweep(x=[0, 1, 2])
    first.start()
    g.wait(timeout=10)
    first.close()
    assert sorted(log.read_text().split()) == ["0", "1", "2"]

    (tmp_path / "fixed").touch()
    second = kn.Queue(url)  # as after a kernel restart
    point = define(second)
    again = point.sweep(x=[0, 1, 2, 3])
    assert again.ids[:3] == g.ids  # same points, same records
    second.start()
    frame = again.wait(timeout=10).results()
    assert frame["result"].tolist() == [0, 10, 20, 30]
    assert sorted(log.read_text().split()) == ["0", "1", "2", "2", "3"]  # only 2 (failed) and 3 ran
    fresh = point.sweep(x=[0], fresh=True)
    assert fresh.ids[0] != g.ids[0]
    second.close()


class RecordingComm:
    """Stands in for the kernel's comm: records every message a widget would send."""

    messages: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        from comm.base_comm import BaseComm

        class _Comm(BaseComm):
            def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                            buffers: Any = None, **keys: Any) -> None:
                RecordingComm.messages.append((msg_type, data or {}))

        self.__class__ = type("Recording", (_Comm,), {})
        _Comm.__init__(self, **kwargs)  # type: ignore[misc]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    import comm

    RecordingComm.messages = []
    monkeypatch.setattr(comm, "create_comm", lambda **kw: RecordingComm(**kw))
    return RecordingComm.messages


def test_panel_values_after_known_work(q: kn.Queue, recorded: list[Any]) -> None:
    @q.job
    def maybe(i: int) -> int:
        if i % 4 == 0:
            raise ValueError(f"bad {i}")
        return i

    panel = q.panel(refresh=0.1)
    maybe.map([{"i": i} for i in range(8)])
    q.start(concurrency=2)
    q.wait(timeout=10)
    time.sleep(0.4)
    assert "completed 6" in panel.summary and "failed 2" in panel.summary
    assert "75% succeeded" in panel.summary  # metrics.summarize, as q.metrics() says
    assert q.metrics().loc["(total)", "success_rate"] == 0.75
    assert panel.progress == 1.0
    assert panel.progress_label == "8 / 8 (100%)"
    assert panel.bar_style == "warning"
    assert "ValueError: bad 4" in panel.summary
    assert "no job running" in panel.summary
    assert any(msg == "comm_open" for msg, _ in recorded)
    panel.close()


def test_panel_says_what_holds_jobs_back_and_what_runs_next(q: kn.Queue, recorded: list[Any]) -> None:
    @q.job(concurrency=1)
    def one_at_a_time(i: int) -> int:
        time.sleep(0.3)
        return i

    @q.every(3600)
    def hourly() -> None:
        return None

    panel = q.panel(refresh=0.1)
    one_at_a_time.map([{"i": i} for i in range(4)])
    q.start(concurrency=3)
    deadline = time.monotonic() + 10
    while "waiting: limit" not in panel.summary:
        assert time.monotonic() < deadline, panel.summary
        time.sleep(0.05)
    assert "one_at_a_time 1/1 (" in panel.summary
    assert f"next: <code>{html.escape(hourly.name)}</code> in" in panel.summary
    q.wait(timeout=10)
    panel.close()


def test_panel_counts_jobs_waiting_on_others(q: kn.Queue, recorded: list[Any]) -> None:
    @q.job
    def step(x: int) -> int:
        return x + 1

    first = step.dispatch(1)
    later = first.then(step).then(step)
    panel = q.panel(refresh=0.1)
    deadline = time.monotonic() + 10
    while "waiting 2</span>" not in panel.summary:
        assert time.monotonic() < deadline, panel.summary
        time.sleep(0.05)
    assert "title='waiting for other jobs to end'" in panel.summary
    q.start()
    assert later.result(timeout=10) == 4
    panel.close()


def test_panel_buttons_act(q: kn.Queue, recorded: list[Any], tmp_path: Path) -> None:
    @q.job
    def fails_until_fixed() -> str:
        if not (tmp_path / "fixed").exists():
            raise RuntimeError("not yet")
        return "ok"

    panel = q.panel(refresh=0.1)
    h = fails_until_fixed.dispatch()
    q.start()
    with pytest.raises(JobFailedError):
        h.result(timeout=10)
    panel.click("pause")
    time.sleep(0.3)
    assert q.paused and "paused" in panel.summary
    assert panel.disabled("resume") is False
    (tmp_path / "fixed").touch()
    panel.click("retry_failed")
    time.sleep(0.3)
    assert h.status == "queued"  # paused: requeued but not claimed
    panel.click("resume")
    assert h.result(timeout=10) == "ok"
    panel.click("stop")
    time.sleep(0.3)
    assert not q.running
    assert "not running here" in panel.summary
    panel.close()


def test_a_click_from_the_page_runs_its_action_and_bad_names_are_refused(
        q: kn.Queue, recorded: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    """The page sends a click as a change of ``action`` over the widget's comm (what
    ``panel.js`` does): the kernel runs that button's action. An unknown name from the page is
    logged and ignored; from Python it is a ConfigError naming the buttons."""
    panel = q.panel(refresh=0.1)
    q.start()

    def page_clicks(name: str, n: int) -> None:
        panel.comm.handle_msg({"content": {"comm_id": panel.comm.comm_id, "data": {
            "method": "update", "state": {"action": {"name": name, "n": n}}, "buffer_paths": []}},
            "buffers": []})

    def soon(check: Callable[[], bool]) -> bool:  # pause and resume act on the queue's loop
        deadline = time.monotonic() + 10
        while not check():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    assert soon(lambda: q.running)
    page_clicks("pause", 1)
    assert soon(lambda: q.paused)
    with caplog.at_level("WARNING"):
        page_clicks("format_disk", 2)
    assert "unknown action 'format_disk'" in caplog.text and q.paused
    with pytest.raises(ConfigError, match=r"no button 'delete'.*pause, resume, stop"):
        panel.click("delete")
    panel.click("resume")
    assert soon(lambda: not q.paused)
    assert [b["name"] for b in panel.buttons] == list(ACTIONS)
    panel.close()


def test_panel_batches_updates_under_a_burst_of_events(q: kn.Queue, recorded: list[Any]) -> None:
    @q.job
    async def noop(i: int) -> None:
        return None

    panel = q.panel(refresh=0.25)
    time.sleep(0.3)
    before, updates_before = len(recorded), panel.updates
    started = time.monotonic()
    noop.map([{"i": i} for i in range(1000)])
    q.start(concurrency=4)
    q.wait(timeout=30)
    time.sleep(0.3)
    elapsed = time.monotonic() - started
    updates = [m for m, data in recorded[before:] if m == "comm_msg" and data.get("method") == "update"]
    refreshes = elapsed / 0.25 + 2
    assert panel.updates - updates_before <= refreshes  # refreshes during the burst only
    # the panel is one widget and a refresh pushes what changed in one message (hold_sync),
    # not one message per job
    assert len(updates) <= refreshes
    assert len(updates) / elapsed <= 1 / 0.25 + 2, "more than a few messages a second"
    panel.close()
    closes = [m for m, _ in recorded if m == "comm_close"]
    assert closes, "closing the panel closes its widget"


def test_the_panel_is_a_widget_that_goes_inside_layouts(q: kn.Queue, recorded: list[Any]) -> None:
    import ipywidgets as widgets

    panel = q.panel(refresh=0.1)
    assert isinstance(panel, widgets.Widget)
    box = widgets.HBox([panel, widgets.Label("beside it")])
    assert box.children[0] is panel
    panel.close()
    box.close()


def test_the_panel_forgets_the_throughput_of_workers_that_stopped(q: kn.Queue, recorded: list[Any]) -> None:
    @q.job
    async def quick(i: int) -> int:
        return i

    panel = q.panel(refresh=0.1)
    q.start(concurrency=2)
    quick.map([{"i": i} for i in range(200)])
    q.wait(timeout=10)
    time.sleep(0.3)
    q.stop()
    time.sleep(0.3)  # two refreshes, well inside the throughput window
    assert " · 0 jobs/s" in panel.summary, panel.summary
    panel.close()


def test_short_ids_tell_the_jobs_of_one_process_apart(q: kn.Queue) -> None:
    @q.job
    def one() -> int:
        return 1

    handles = list(one.map([{} for _ in range(50)]))
    shown = {repr(h).rsplit("id=", 1)[1] for h in handles}
    assert len(shown) == 50


def test_start_shows_what_started(q: kn.Queue) -> None:
    worker = q.start(concurrency=2)
    assert repr(worker) == "2 workers on memory:// (running)"
    q.pause()
    time.sleep(0.05)
    assert repr(worker) == "2 workers on memory:// (paused)"
    q.stop()
    assert repr(worker) == "2 workers on memory:// (stopped)"


def test_reprs_have_text_and_html(q: kn.Queue) -> None:
    @q.job
    def one() -> int:
        return 1

    h = one.dispatch()
    g = one.map([{}, {}])
    assert "JobHandle" in repr(h) and "queued" in h._repr_html_()
    assert "JobGroup 2 jobs: queued 2" in repr(g) and "JobGroup" in g._repr_html_()
    assert "memory://" in repr(q) and "<table>" in q._repr_html_()
    assert isinstance(g.results(), pd.DataFrame)


def test_log_lines_of_a_job_are_kept_with_it(q: kn.Queue) -> None:
    import logging

    @q.job
    def chatty(x: int) -> int:
        logging.getLogger("experiment").warning("loss diverged at %d", x)
        return x

    h = chatty.dispatch(3)
    q.start()
    h.result(timeout=10)
    output = q.jobs()["output"].tolist()[0]
    assert "WARNING experiment: loss diverged at 3" in output


def test_in_kernel_workers_do_not_prefetch_unless_asked(q: kn.Queue) -> None:
    worker = q.start(concurrency=2)
    assert worker.prefetch == 0
    q.stop()
    assert q.start(concurrency=2, prefetch=3).prefetch == 3


def test_a_sweep_larger_than_retention_can_still_be_awaited() -> None:
    """The group's first records are dropped by retention while it runs; waiting on the
    group still ends, and reading the dropped results says why they are gone."""
    q = kn.Queue({"queue": {"driver": "memory", "retention": 10}})
    try:
        @q.job
        def square(x: int) -> int:
            return x * x

        g = square.map([{"x": x} for x in range(40)])
        q.start(concurrency=2)
        assert g.wait(timeout=30) is g
        assert g[-1].result(timeout=5) == 39 * 39
        assert g.done() and g.counts()["completed"] == 10 and g.counts()["dropped"] == 30
        assert "dropped 30" in repr(g) and "dropped</span> 30" in g._repr_html_()
        with pytest.raises(kn.JobNotFoundError, match="dropped by retention"):
            g.results()
    finally:
        q.close()


def test_cancel_from_the_notebook(q: kn.Queue, tmp_path: Path) -> None:
    @q.job
    async def train(lr: float, steps: int = 200) -> float:
        for step in range(steps):
            kn.progress(step / steps)
            await asyncio.sleep(0.01)
        return lr

    one = train.dispatch(0.5)
    assert one.cancel() is True and one.cancel() is False
    with pytest.raises(kn.JobCancelledError) as caught:
        one.result(timeout=5)
    assert caught.value.record is not None and caught.value.record.status is kn.JobStatus.CANCELLED
    grid = train.map([{"lr": lr} for lr in (0.01, 0.1, 0.2, 0.3)])
    cancelled = grid.cancel(where=lambda params: params["lr"] > 0.1)
    assert sorted(cancelled) == sorted(h.id for h in grid if h.params["lr"] > 0.1)
    q.start(concurrency=2)
    grid.wait(timeout=30)
    frame = grid.results()
    assert list(frame.sort_values("lr")["status"]) == ["completed", "completed", "cancelled", "cancelled"]
    assert frame["error"].dropna().str.contains("was queued").all()
    running = train.dispatch(0.9, steps=10_000)
    deadline = time.monotonic() + 10
    while running.status != "active" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert q.cancel(status="active") == [running.id]
    with pytest.raises(kn.JobCancelledError):
        running.result(timeout=10)
    assert q.counts()["cancelled"] == 4
    with pytest.raises(ConfigError, match="queued, active, all"):
        q.cancel(status="everything")
    with pytest.raises(ConfigError, match="function"):
        grid.cancel(where="lr > 0.1")  # type: ignore[arg-type]


def test_a_sweep_run_again_keeps_cancelled_points_unless_asked(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path}/sweep.db")
    try:
        @q.job(name="tests.square")
        def square(x: int) -> int:
            return x * x

        first = square.sweep(x=[1, 2, 3])
        first.cancel(where=lambda p: p["x"] == 2)
        q.start()
        first.wait(timeout=30)
        again = square.sweep(x=[1, 2, 3])
        assert again.ids == first.ids  # the cancelled point is reused, not rerun
        rerun = square.sweep(x=[1, 2, 3], rerun_cancelled=True)
        assert rerun.ids[0] == first.ids[0] and rerun.ids[1] != first.ids[1]
        rerun.wait(timeout=30)
        assert list(rerun.results()["status"]) == ["completed"] * 3
    finally:
        q.close()


def test_failure_kinds_in_frames_and_retry_by_kind(q: kn.Queue) -> None:
    @q.job(timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(1)

    @q.job
    def broken() -> None:
        raise ValueError("broken")

    handles = [slow.dispatch(), broken.dispatch()]
    q.start()
    for h in handles:
        with pytest.raises(JobFailedError):
            h.result(timeout=10)
    frame = q.jobs().set_index("id")
    assert frame.loc[handles[0].id, "failure"] == "timed_out"
    assert frame.loc[handles[1].id, "failure"] == "raised"
    metrics = q.metrics()
    assert metrics.loc["(total)", "failed_timed_out"] == 1 and metrics.loc["(total)", "failed_raised"] == 1
    q.stop()
    assert q.retry_failed(kind="timed_out") == 1
    assert handles[0].status == "queued" and handles[1].status == "failed"
    with pytest.raises(ConfigError, match="raised, timed_out, crashed, lost"):
        q.retry_failed(kind="exploded")


def test_debug_runs_a_failed_point_in_the_foreground(q: kn.Queue) -> None:
    calls: list[int] = []

    @q.job
    def divide(a: int, b: int) -> float:
        calls.append(b)
        kn.progress(0.5)
        return a / b

    h = divide.dispatch(1, 0)
    q.start()
    with pytest.raises(JobFailedError):
        h.result(timeout=10)
    before = h.record()
    with pytest.raises(ZeroDivisionError):  # the exception itself, where %debug can open it
        h.debug()
    assert calls == [0, 0] and h.record() == before  # ran here again; the record is untouched


def test_panel_cancel_button(q: kn.Queue, recorded: list[Any]) -> None:
    @q.job
    async def wait_long() -> None:
        await asyncio.sleep(30)

    panel = q.panel(refresh=0.1)
    handles = [wait_long.dispatch() for _ in range(3)]
    q.start(concurrency=1)
    deadline = time.monotonic() + 10
    while handles[0].status != "active" and time.monotonic() < deadline:
        time.sleep(0.01)
    panel.click("cancel")
    for h in handles:
        with pytest.raises(kn.JobCancelledError):
            h.result(timeout=10)
    time.sleep(0.3)
    assert "cancelled 3" in panel.summary
    panel.close()


def test_panel_shows_what_running_jobs_print(q: kn.Queue, recorded: list[Any]) -> None:
    import threading

    release = threading.Event()

    @q.job
    def talks() -> None:
        print("first line")
        print("halfway there")
        release.wait(10)

    panel = q.panel(refresh=0.1)
    h = talks.dispatch()
    q.start()
    deadline = time.monotonic() + 10
    while "halfway there" not in panel.summary and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "halfway there" in panel.summary and h.status == "active"
    assert h.tail(1) == "halfway there" and h.output == "first line\nhalfway there\n"
    release.set()
    h.result(timeout=10)
    panel.close()


def test_a_unique_dispatch_from_a_cell_returns_the_job_already_queued(q: kn.Queue) -> None:
    @q.job
    def refresh(account: int) -> int:
        return account

    first = refresh.dispatch(7, unique=True)
    again = refresh.dispatch(7, unique=True)
    other = refresh.dispatch(8, unique=True)
    assert again.id == first.id and other.id != first.id
    with pytest.raises(kn.DuplicateJobError, match=first.id):
        refresh.dispatch(account=7, unique=True, on_conflict="error")
    q.start(concurrency=1)
    assert first.result(timeout=20) == 7 and other.result(timeout=20) == 8
    assert refresh.dispatch(7, unique="queued").id != first.id  # done: the key is free again


def test_a_job_functions_keep_result_limits_how_long_its_records_stay(q: kn.Queue) -> None:
    @q.job(keep_result=0.2)
    def brief(x: int) -> int:
        return x

    handle = brief.dispatch(3)
    q.start(concurrency=1)
    assert handle.result(timeout=20) == 3
    assert handle.record().keep_ms == 200
    time.sleep(0.3)
    q.run(q.manager.driver.trim())
    assert q.run(q.manager.statuses([handle.id])) == [None]
    with pytest.raises(ConfigError, match="keep_result must be between 0 and"):
        q.job(keep_result=-1)(lambda: None)
