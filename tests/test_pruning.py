"""Pruning: the rules on known curves; a sweep with ``prune=`` stops its losing points through
the cancel path (sync points at their next report), keeps the best one, shows them as pruned
(never failed), and a run of the cell again on a durable queue does not rerun them; bad
pruners are refused, and a metric no point reports prunes nothing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import env, workers

import khadem_nb as kn
from khadem_nb import ConfigError
from khadem_nb.features.pruning import (
    LOOK_SLOWEST_S,
    MedianPruner,
    RuleWatch,
    SuccessiveHalving,
    watch_interval,
)
from khadem_nb.features.telemetry import WATCHED_FLUSH_S
from khadem_nb.job import JobRecord, JobStatus


def test_the_median_rule() -> None:
    rule = MedianPruner("loss", mode="min", warmup_steps=2, min_points=3)
    others = [{0: 1.0, 1: 0.8, 2: 0.6, 3: 0.5}, {0: 1.0, 1: 0.7, 2: 0.5}, {0: 1.2, 1: 0.9, 2: 0.7}]
    assert rule.verdict({0: 5.0, 1: 5.0}, others) is None  # still warming up
    why = rule.verdict({0: 5.0, 1: 5.0, 2: 0.9}, others)
    assert why == "loss 0.9 at step 2, worse than the median 0.6 of 3 other points (MedianPruner)"
    assert rule.verdict({0: 0.1, 1: 5.0, 2: 5.0}, others) is None  # its best so far beats the median
    # too few others at step 3: a point ahead of them is judged at step 2, its best up to there
    assert rule.verdict({0: 1, 1: 1, 2: 1, 3: 9.0}, others) == \
        "loss 1 at step 2, worse than the median 0.6 of 3 other points (MedianPruner)"
    assert rule.verdict({0: 1, 1: 0.1, 2: 0.1, 3: 9.0}, others) is None  # its best up to step 2 wins
    assert rule.verdict({0: 5.0, 1: 5.0, 2: 5.0}, others[:2]) is None  # never three others at a step
    assert MedianPruner("acc", mode="max", min_points=1).verdict({0: 0.2}, [{0: 0.5}]) is not None


def test_successive_halving() -> None:
    rule = SuccessiveHalving("loss", min_steps=1, reduction_factor=2)
    assert rule.rungs(9) == [1, 2, 4, 8]
    assert rule.verdict({1: 0.5}, []) is None  # the first at a rung goes on
    others = [{1: 0.1}, {1: 0.2}, {1: 0.3}]
    assert rule.verdict({1: 0.15}, others) is None  # among the best 2 of 4
    assert "not among the best 2 of 4 points" in (rule.verdict({1: 0.9}, others) or "")


def record(job_id: str, status: JobStatus, losses: list[float]) -> JobRecord:
    reports = {"loss": [[step, value, 0] for step, value in enumerate(losses)]}
    return JobRecord(id=job_id, name="train", payload={}, status=status, meta={"reports": reports})


def test_a_look_names_only_running_points() -> None:
    records = [record("a", JobStatus.COMPLETED, [1, 0.5, 0.2]), record("b", JobStatus.ACTIVE, [1, 0.6, 0.3]),
               record("c", JobStatus.ACTIVE, [3, 2.5, 2.0]), record("d", JobStatus.CANCELLED, [1, 0.7, 0.4])]
    stops = RuleWatch(MedianPruner("loss", min_points=2)).look(records)
    assert list(stops) == ["c"] and stops["c"].startswith("pruned: loss 2 at step 2")


def test_a_group_watch_reads_an_ended_point_once_and_keeps_it_as_evidence() -> None:
    watch = RuleWatch(MedianPruner("loss", min_points=1))
    assert watch.seen.reported() is None  # nothing reported yet
    ended, losing = record("a", JobStatus.COMPLETED, [1, 0.5, 0.2]), record("b", JobStatus.ACTIVE, [1, 2, 3])
    assert list(watch.look([ended, losing])) == ["b"]
    assert watch.live(["a", "b"]) == ["b"]  # the ended point is not read again
    assert list(watch.look([losing])) == ["b"]  # and still counts against the running one
    assert watch.seen.reported() is True
    assert RuleWatch(MedianPruner("val_loss")).look([ended]) == {}
    assert watch_interval(10) == WATCHED_FLUSH_S and watch_interval(10**6) == LOOK_SLOWEST_S
    assert WATCHED_FLUSH_S < watch_interval(1_000) < LOOK_SLOWEST_S  # a big group is read less often


def test_bad_pruners_are_refused() -> None:
    for make, message in ((lambda: MedianPruner("val loss"), "metric name"),
                          (lambda: MedianPruner("loss", mode="lowest"), "mode must be 'min' or 'max'"),
                          (lambda: MedianPruner("loss", warmup_steps=-1), "warmup_steps must be"),
                          (lambda: MedianPruner("loss", min_points=0), "min_points must be"),
                          (lambda: SuccessiveHalving("loss", reduction_factor=1), "reduction_factor must be"),
                          (lambda: SuccessiveHalving("loss", min_steps=0), "min_steps must be")):
        with pytest.raises(ConfigError, match=message):
            make()
    q = kn.Queue()

    @q.job
    def train(lr: float) -> float:
        return lr

    with pytest.raises(ConfigError, match=r"prune= takes kn\.MedianPruner"):
        train.sweep(lr=[0.1], prune="median")
    assert q.jobs().empty  # nothing was dispatched


def test_a_sweep_prunes_its_losing_points_and_keeps_the_best(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")

    @q.job
    def train(badness: float, steps: int = 40) -> float:
        loss = 0.0
        for step in range(steps):
            loss = badness / (step + 1)
            kn.report(step, loss=loss)
            time.sleep(0.03)
        return loss

    badness = [1.0, 2.0, 3.0, 5.0, 8.0, 13.0]
    q.start(concurrency=6)
    try:
        group = train.sweep(badness=badness, prune=kn.MedianPruner("loss", warmup_steps=3, min_points=3))
        group.wait(timeout=60)
        results = group.results().set_index("badness")
        counts = group.counts()
        again = train.sweep(badness=badness, prune=kn.MedianPruner("loss", warmup_steps=3, min_points=3))
        again.wait(timeout=60)
        rerun = again.results().set_index("badness")
    finally:
        q.stop()
        q.close()
    assert results.loc[1.0, "status"] == "completed" and not results.loc[1.0, "pruned"]
    pruned = results[results["pruned"]]
    assert len(pruned) >= 2 and set(pruned.index) <= {3.0, 5.0, 8.0, 13.0}
    assert all(pruned["status"] == "cancelled") and counts["failed"] == 0
    assert all(error.startswith("pruned: loss ") and "(MedianPruner)" in error for error in pruned["error"])
    assert list(rerun["pruned"]) == list(results["pruned"])  # the cell run again reran nothing
    assert (rerun["duration_ms"] == results["duration_ms"]).all()


def test_a_metric_no_point_reports_prunes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    q = kn.Queue()

    @q.job
    def train(x: int) -> int:
        for step in range(5):
            kn.report(step, loss=float(x))
            time.sleep(0.05)
        return x

    q.start(concurrency=4)
    try:
        with caplog.at_level(logging.WARNING, logger="khadem_nb.notebook.queue"):
            group = train.sweep(x=[1, 2, 3, 4], prune=kn.MedianPruner("val_loss", min_points=1))
            group.wait(timeout=30)
            time.sleep(0.6)  # the watcher looks every 0.2 s: it said it by now
    finally:
        q.stop()
    assert group.counts()["completed"] == 4
    told = [r.message for r in caplog.records if "no point reports 'val_loss'" in r.message]
    assert len(told) == 1 and "they report loss" in told[0]


SWEEP_CELL = """
import json
import time

import khadem_nb as kn

q = kn.Queue({url!r}, ship_code=True)


@q.job
def train(badness: float) -> float:
    loss = 0.0
    for step in range(30):
        loss = badness / (step + 1)
        kn.report(step, loss=loss)
        time.sleep(0.05)
    return loss


group = train.sweep(badness=[1.0, 2.0, 3.0, 5.0, 8.0, 13.0],
                    prune=kn.MedianPruner("loss", warmup_steps=3, min_points=3))
group.wait(timeout=90)
frame = group.results()
print(json.dumps({{"badness": frame["badness"].tolist(), "status": frame["status"].tolist(),
                  "pruned": frame["pruned"].tolist(), "error": frame["error"].fillna("").tolist()}}))
q.close()
"""


def test_a_sweep_on_worker_processes_is_pruned_from_the_kernel(
        durable_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The points of a shipped cell function run in two `khadem-nb worker --trust-code`
    processes on each durable driver; their reports reach the storage while they run, and
    the dispatching process stops the losers through the cancel the workers hear."""
    monkeypatch.setenv("KHADEM_SECRET", "a shared secret of the notebook and its workers")
    script = tmp_path / "cell.py"
    script.write_text(SWEEP_CELL.format(url=durable_url))
    with workers(durable_url, 2, "--trust-code", "--concurrency", "3"):
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env(), capture_output=True,
                              text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    outcome = {b: (s, p, e) for b, s, p, e in zip(found["badness"], found["status"], found["pruned"],
                                                    found["error"], strict=True)}
    assert outcome[1.0][:2] == ("completed", False)
    pruned = {b for b, (_, p, _) in outcome.items() if p}
    assert pruned and pruned <= {3.0, 5.0, 8.0, 13.0}
    assert all(outcome[b][0] == "cancelled" and outcome[b][2].startswith("pruned: loss ") for b in pruned)
    assert {s for s, _, _ in outcome.values()} <= {"completed", "cancelled"}  # never failed
