"""Pipelines in the notebook layer: ``h.then``, ``g.then`` (sweep then reduce), ``kn.chain``;
resumable reduces, bad input, and one reduce when two kernels dispatch the same sweep."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kernels import Kernel

import khadem_nb as kn
from khadem_nb import ConfigError


@pytest.fixture
def q() -> Iterator[kn.Queue]:
    queue = kn.Queue()
    yield queue
    queue.close()


def define(q: kn.Queue) -> tuple[Any, Any]:
    @q.job
    def square(x: int) -> dict[str, int]:
        if x < 0:
            raise ValueError("negative")
        return {"y": x * x}

    @q.job
    def add(previous: dict[str, int] | int, n: int = 1) -> int:
        return int(previous["y"] if isinstance(previous, dict) else previous) + n

    return square, add


def test_then_runs_on_the_parents_result(q: kn.Queue) -> None:
    square, add = define(q)
    h = square.dispatch(3)
    nxt = h.then(add, n=10)
    assert nxt.status == "waiting" and nxt.params == {"n": 10}
    q.start()
    assert nxt.result(timeout=10) == 19
    failed = square.dispatch(-1).then(add)
    with pytest.raises(kn.JobCancelledError, match=r"upstream job \w+ failed"):
        failed.result(timeout=10)


def test_a_sweep_then_a_reduce_on_its_results_frame(q: kn.Queue) -> None:
    square, _ = define(q)
    seen: list[pd.DataFrame] = []

    def summarise(results: pd.DataFrame, scale: int = 1) -> dict[str, Any]:
        seen.append(results)
        return {"total": int(results["y"].sum()) * scale, "statuses": sorted(results["status"].astype(str))}

    g = square.sweep(x=[1, 2, -3])
    everything = g.then(summarise, scale=2)
    completed = g.then(summarise, include_failed=False)
    assert everything.status == "waiting"
    q.start(concurrency=2)
    assert everything.result(timeout=10) == {"total": 10, "statuses": ["completed", "completed", "failed"]}
    assert completed.result(timeout=10) == {"total": 5, "statuses": ["completed", "completed"]}
    frame = next(f for f in seen if len(f) == 3)  # the two reduces may run in either order
    assert list(frame.columns) == ["x", "y", "status", "failure", "duration_ms", "attempt", "error", "code"]
    assert frame["x"].tolist() == [1, 2, -3] and frame["failure"].tolist()[2] == "raised"
    again = g.then(summarise, scale=2)  # the cell run again: the finished reduce is reused
    assert again.id == everything.id and len(seen) == 2


def test_dispatch_after_handles_and_groups(q: kn.Queue) -> None:
    square, add = define(q)
    g = square.map([{"x": 1}, {"x": 2}])
    h = square.dispatch(3)
    last = add.dispatch(5, after=[g, h], on_upstream_failure="run")
    assert last.status == "waiting"
    q.start()
    assert last.result(timeout=10) == 6
    assert all(x.status == "completed" for x in [*g, h])


def test_cancelling_queued_work_cancels_what_waits_first(q: kn.Queue) -> None:
    square, _ = define(q)
    g = square.sweep(x=[1, 2, 3])
    summary = g.then(lambda results: len(results))
    cancelled = q.cancel(status="queued")
    assert summary.id in cancelled and summary.status == "cancelled"
    assert summary.record().error == "cancelled (was waiting)"  # not released by its points' cancel


def test_chain_runs_its_steps_in_order(q: kn.Queue) -> None:
    square, add = define(q)
    last = kn.chain(square.s(4), add.s(n=1), add.s(n=100))
    q.start()
    assert last.result(timeout=10) == 117
    with pytest.raises(kn.JobCancelledError, match="was cancelled"):
        kn.chain(square.s(-1), add.s(), add.s()).result(timeout=10)


def test_bad_workflows_are_refused(q: kn.Queue) -> None:
    square, add = define(q)
    h = square.dispatch(2)
    with pytest.raises(ConfigError, match=r"kn\.chain\(\) needs at least one step"):
        kn.chain()
    with pytest.raises(ConfigError, match=r"takes steps made with fn\.s"):
        kn.chain(square)
    with pytest.raises(ConfigError, match="takes keyword arguments only"):
        kn.chain(square.s(1), add.s(5))
    with pytest.raises(ConfigError, match="'previous' is given the output of the jobs it runs after"):
        h.then(add, previous=3)
    with pytest.raises(ConfigError, match="unexpected keyword argument 'm'"):
        h.then(add, m=3)

    def nothing() -> None:
        return None

    with pytest.raises(ConfigError, match="cannot run after another job"):
        h.then(nothing)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_two_kernels_dispatching_one_sweep_store_one_reduce(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    cell = f"""
import khadem_nb as kn
q = kn.Queue({url!r})

@q.job(name="tests.point")
def point(i: int) -> dict:
    return {{"v": i}}

def summarise(results):
    with open({str(tmp_path / 'reduced.txt')!r}, "a") as f:
        f.write("once\\n")
    return int(results["v"].sum())

g = point.sweep(i=range(100))
r = g.then(summarise)
print(r.id)
"""
    kernels = [Kernel(), Kernel()]
    try:
        first = kernels[0].run(cell).strip()
        second = kernels[1].run(cell).strip()
        assert first == second  # the second kernel found the first one's reduce
        kernels[1].run("q.start(concurrency=4)")
        kernels[0].run("q.start(concurrency=4)")
        assert kernels[0].run("print(r.result(timeout=60))").strip() == str(sum(range(100)))
        assert kernels[1].run("print(r.result(timeout=60))").strip() == str(sum(range(100)))
        assert (tmp_path / "reduced.txt").read_text() == "once\n"
        third = kernels[1].run("print(g.then(summarise).id)").strip()  # run again: reused
        assert third == first and (tmp_path / "reduced.txt").read_text() == "once\n"
    finally:
        for kernel in kernels:
            kernel.close()
