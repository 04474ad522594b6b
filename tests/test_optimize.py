"""``fn.optimize``: real Optuna ask-and-tell driven by the queue. A bowl's optimum is found by
trials that run as jobs; the objective comes from a number, a dict or the last report; a named
study on SQLite goes on after a "kernel restart" (a new Queue on the same file) without running
a trial twice; pruning stops losing trials; and bad input is refused before anything runs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from procs import env, workers

import khadem_nb as kn
from khadem_nb import ConfigError

pytest.importorskip("optuna", reason='optimize() needs Optuna: pip install "khadem_nb[tune]"')


def bowl(x: float, y: float) -> float:
    return (x - 0.3) ** 2 + (y - 0.7) ** 2


def test_a_study_finds_the_bottom_of_a_bowl() -> None:
    import optuna

    q = kn.Queue()

    @q.job
    def trial(x: float, y: float, kind: str) -> object:
        value = bowl(x, y)
        if kind == "dict":
            return {"loss": value, "x": x}
        kn.report(0, loss=value)  # the "report" kind returns nothing: its last report counts
        return value if kind == "number" else None

    q.start(concurrency=4)
    try:
        space = {"x": kn.uniform(0, 1), "y": kn.uniform(0, 1), "kind": ["number", "dict", "report"]}
        study = trial.optimize(space, metric="loss", mode="min", n_trials=40, parallel=4,
                               sampler=optuna.samplers.TPESampler(seed=1))
        study.wait(timeout=120)
        results = study.results()
        best = study.best
        panel = q.panel()
        snap = q.run(panel.snapshot())
        panel.close()
    finally:
        q.stop()
    assert snap.studies == (("(unnamed)", 40, 40, best["value"]),)
    assert "study <code>(unnamed)</code>: 40 / 40 trials · best" in panel._summary_html(snap)
    assert len(results) == 40 and list(results["trial"]) == list(range(40))
    assert results["objective"].notna().all() and (results["status"] == "completed").all()
    assert best["value"] == pytest.approx(results["objective"].min())
    assert best["value"] < 0.02 and set(best) == {"x", "y", "kind", "value"}
    assert len(q.jobs()) == 40  # one job a trial, each run once


def test_a_named_study_goes_on_after_a_restart_without_running_a_trial_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    space = {"x": kn.uniform(0, 1), "y": kn.uniform(0, 1)}
    runs: list[tuple[float, float]] = []

    def define(q: kn.Queue) -> kn.JobFunction:
        @q.job(name="bowl_trial")
        def bowl_trial(x: float, y: float) -> float:
            runs.append((x, y))
            return bowl(x, y)

        return bowl_trial

    first = kn.Queue(url)
    first.start(concurrency=2)
    try:
        define(first).optimize(space, metric="loss", n_trials=6, parallel=2, name="bowl").wait(timeout=60)
    finally:
        first.stop()
        first.close()
    again = kn.Queue(url)  # the kernel restarted: the same cell, a larger budget
    again.start(concurrency=2)
    try:
        study = define(again).optimize(space, metric="loss", n_trials=10, parallel=2, name="bowl")
        study.wait(timeout=60)
        results = study.results()
        with pytest.raises(ConfigError, match="the study 'bowl' was made with the space"):
            define(again).optimize({"x": kn.uniform(0, 2)}, metric="loss", n_trials=10, name="bowl").wait(10)
    finally:
        again.stop()
        again.close()
    assert len(runs) == 10 and len(set(runs)) == 10  # 6 then 4 more, none twice
    assert len(results) == 10 and results["objective"].notna().all()
    assert study.best["value"] == pytest.approx(results["objective"].min())


def slow_trial(x: float) -> float:
    """1.5 s of reports (a watched trial stores them every 0.2 s): the losers can be pruned."""
    for step in range(30):
        kn.report(step, loss=x * 10 / (step + 1))
        time.sleep(0.05)
    return x


def test_pruned_trials_are_told_as_pruned() -> None:
    import optuna

    q = kn.Queue()

    slow = q.job(name="slow_trial")(slow_trial)

    q.start(concurrency=4)
    try:
        study = slow.optimize({"x": kn.uniform(0, 1)}, metric="loss", n_trials=8, parallel=4,
                              prune=kn.MedianPruner("loss", warmup_steps=3, min_points=2),
                              sampler=optuna.samplers.RandomSampler(seed=3))
        study.wait(timeout=60)
        results = study.results()
    finally:
        q.stop()
    states = [t.state for t in study.study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == int(results["pruned"].sum()) >= 1
    assert (results.loc[results["pruned"], "status"] == "cancelled").all()


def test_bad_studies_are_refused() -> None:
    q = kn.Queue()

    @q.job
    def f(x: float) -> float:
        return x

    bad = [({}, {}, "a search space is a non-empty dict"),
           ({"x": kn.uniform(0, 1)}, {"n_trials": 0}, "n_trials must be a whole number >= 1"),
           ({"x": kn.uniform(0, 1)}, {"parallel": 0}, "parallel must be a whole number >= 1"),
           ({"x": kn.uniform(0, 1)}, {"mode": "lowest"}, "mode must be 'min' or 'max'"),
           ({"x": kn.uniform(0, 1)}, {"metric": "val loss"}, "metric is a metric name"),
           ({"x": "abc"}, {}, "a dimension is"), ({"x": []}, {}, "a dimension is"),
           ({"bad name": [1]}, {}, "identifiers")]
    for space, options, message in bad:
        with pytest.raises(ConfigError, match=message):
            f.optimize(space, **{"metric": "loss", **options})
    for make, message in ((lambda: kn.loguniform(0, 1), "0 < low < high"),
                          (lambda: kn.intrange(5, 2), "low <= high"),
                          (lambda: kn.uniform(1, 1), "low < high"),
                          (lambda: kn.intrange(1.5, 2), "whole number"),  # type: ignore[arg-type]
                          (lambda: kn.uniform(0, float("inf")), "finite")):
        with pytest.raises(ConfigError, match=message):
            make()
    assert q.jobs().empty


def test_optunas_own_pruner_is_told_the_reports() -> None:
    import optuna

    q = kn.Queue()

    slow = q.job(name="slow_trial")(slow_trial)

    with pytest.raises(ConfigError, match=r"does not know which metric to read: pass kn.OptunaPruner"):
        slow.sweep(x=[0.1], prune=optuna.pruners.MedianPruner())
    q.start(concurrency=4)
    try:
        study = slow.optimize({"x": kn.uniform(0, 1)}, metric="loss", n_trials=8, parallel=4,
                              prune=optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=3,
                                                                n_min_trials=2),
                              sampler=optuna.samplers.RandomSampler(seed=3))
        study.wait(timeout=60)
        results = study.results()
    finally:
        q.stop()
    pruned = results[results["status"] == "cancelled"]
    states = [t.state for t in study.study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == len(pruned) >= 1
    assert all("(Optuna's MedianPruner)" in error for error in pruned["error"])


STUDY_CELL = """
import json

import optuna

import khadem_nb as kn

q = kn.Queue({url!r}, ship_code=True)


@q.job
def train(lr: float, width: int) -> dict:
    import time

    loss = 1.0
    for step in range(6):
        loss = (lr - 0.3) ** 2 + width * 0.01 + 1 / (step + 1)
        kn.report(step, loss=loss)
        time.sleep(0.05)
    return {{"loss": loss, "width": width}}


space = {{"lr": kn.uniform(0, 1), "width": kn.intrange(1, 4)}}
study = train.optimize(space, metric="loss", n_trials={n}, parallel=3, name="shipped",
                       prune=kn.MedianPruner("loss", warmup_steps=2, min_points=2),
                       sampler=optuna.samplers.TPESampler(seed=0))
study.wait(timeout=120)
frame = study.results()
objectives = [None if o != o else o for o in frame["objective"]]  # NaN: no objective
print(json.dumps({{"trials": frame["trial"].tolist(), "lrs": frame["lr"].tolist(),
                  "statuses": frame["status"].tolist(), "errors": frame["error"].fillna("").tolist(),
                  "objectives": objectives, "best": study.best["value"], "jobs": len(q.jobs())}}))
q.close()
"""


def test_a_named_study_runs_its_trials_on_trusting_worker_processes_and_goes_on_after_a_restart(
        durable_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell's function, shipped, optimized with a pruner: its trials run in two `khadem-nb
    worker --trust-code` processes on each durable driver, the settles (heard, or polled where
    the driver cannot hear them) tell Optuna, and the same cell run again in a new process with
    a larger budget runs only the trials that are missing."""
    monkeypatch.setenv("KHADEM_SECRET", "a shared secret of the notebook and its workers")
    script = tmp_path / "cell.py"

    def run_cell(n: int) -> dict[str, Any]:
        script.write_text(STUDY_CELL.format(url=durable_url, n=n))
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env(), capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    with workers(durable_url, 2, "--trust-code", "--concurrency", "3"):
        first = run_cell(6)
        again = run_cell(9)
    assert first["trials"] == list(range(6)) and again["trials"] == list(range(9))
    assert again["lrs"][:6] == first["lrs"] and again["jobs"] == 9  # no trial ran twice
    assert set(again["statuses"]) <= {"completed", "cancelled"}
    for status, error, objective in zip(again["statuses"], again["errors"], again["objectives"], strict=True):
        assert (status == "cancelled") == error.startswith("pruned: loss ")
        assert (objective is not None) == (status == "completed")
    assert again["best"] == min(o for o in again["objectives"] if o is not None)


def test_a_sweep_is_pruned_by_one_of_optunas_pruners() -> None:
    """Optuna's own MedianPruner over a sweep's points, as trials of the group's own study:
    it judges a running point against the completed ones, so losing points are pruned once
    two ended, and the best ones are kept."""
    import optuna

    q = kn.Queue()

    slow = q.job(name="slow_trial")(slow_trial)

    q.start(concurrency=4)
    try:
        pruner = kn.OptunaPruner(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3), "loss")
        group = slow.sweep(x=[0.1, 0.2, 0.9, 1.0, 0.3, 0.8, 0.95, 0.85], prune=pruner)
        group.wait(timeout=60)
        results = group.results()
    finally:
        q.stop()
    pruned = results[results["pruned"]]
    assert len(pruned) >= 1 and (pruned["status"] == "cancelled").all()
    assert all(e.startswith("pruned: loss ") and e.endswith("(Optuna's MedianPruner) (was active)")
               for e in pruned["error"])
    assert not {0.1, 0.2} & set(pruned["x"])  # the best two are never below the median of the others
    assert results.loc[results["x"] == 0.1, "status"].item() == "completed"


def test_optuna_pruners_and_optuna_missing_are_said_clearly(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import optuna

    q = kn.Queue()

    @q.job
    def f(x: float) -> float:
        kn.report(0, acc=x)
        return x

    with pytest.raises(ConfigError, match="takes one of Optuna's pruners"):
        kn.OptunaPruner(kn.MedianPruner("loss"), "loss")
    with pytest.raises(ConfigError, match="metric name"):
        kn.OptunaPruner(optuna.pruners.MedianPruner(), "val loss")
    with pytest.raises(ConfigError, match=r"direction \(min\), but kn.OptunaPruner was given mode='max'"):
        f.optimize({"x": kn.uniform(0, 1)}, metric="loss",
                   prune=kn.OptunaPruner(optuna.pruners.MedianPruner(), "loss", mode="max"))
    q.start(concurrency=2)
    try:
        with caplog.at_level(logging.WARNING, logger="khadem_nb.notebook.optimize"):
            f.optimize({"x": kn.uniform(0, 1)}, metric="x", n_trials=6, parallel=2,
                       prune=kn.MedianPruner("loss", min_points=1)).wait(timeout=30)
    finally:
        q.stop()
    told = [r.message for r in caplog.records if "no trial reports 'loss'" in r.message]
    assert told == ["pruning: no trial reports 'loss' (they report acc); nothing is pruned"]
    monkeypatch.setitem(sys.modules, "optuna", None)  # as where the tune extra is not installed
    for missing in (lambda: f.optimize({"x": kn.uniform(0, 1)}, metric="x"),
                    lambda: kn.OptunaPruner(object(), "loss")):
        with pytest.raises(ImportError, match=r'pip install "khadem_nb\[tune\]"'):
            missing()
