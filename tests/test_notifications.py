"""Notifications through apprise to a real HTTP endpoint the test serves (``json://``): a
group's first failure and its end, each once across two processes, a queue's backlog, a study's
end, an endpoint that is down, and bad URLs and options."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import make_manager

import khadem_nb as kn
from khadem_nb import ConfigError
from khadem_nb.runtime import notifying
from khadem_nb.runtime.notifying import Message, apprise_of, send_once


class Endpoint:
    """An HTTP server on a loopback port that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # and nothing more arrives
        return self.received

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    served = Endpoint()
    yield served
    served.close()


def test_a_group_tells_its_first_failure_and_its_end_once(endpoint: Endpoint, tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        @q.job
        def fit(lr: float) -> dict[str, float]:
            if lr > 1:
                raise ValueError("diverged")
            kn.report(0, val_loss=lr * 2)
            return {"accuracy": 1 - lr}

        group = fit.sweep(lr=[0.5, 0.1, 5.0])
        assert group.notify(endpoint.url, name="lr-grid", metric="val_loss") is group
        q.start(concurrency=1)
        group.wait(timeout=30)
        received = endpoint.wait_for(2)
    finally:
        q.close()
    assert [m["type"] for m in received] == ["failure", "warning"]
    failed, done = received
    assert failed["title"] == "lr-grid (fit, 3 points): a point failed" and "diverged" in failed["message"]
    assert done["title"] == "lr-grid (fit, 3 points) finished"
    assert "2 completed, 1 failed" in done["message"]
    assert "best val_loss 0.2 at lr=0.1" in done["message"]


async def test_an_event_is_sent_by_one_process_only(endpoint: Endpoint, tmp_path: Path) -> None:
    first = await make_manager("sqlite", tmp_path)
    second = kn.QueueManager(first.settings)  # another process's view of the same file
    await second.init()
    try:
        sender = apprise_of(endpoint.url)
        sent = await asyncio.gather(*(send_once(m.driver, sender, "group/abc/done", Message("t", "b"))
                                      for m in (first, second, first)))
        assert sorted(sent) == [False, False, True]
        assert len(await asyncio.to_thread(endpoint.wait_for, 1)) == 1
    finally:
        await second.close()
        await first.driver.purge()
        await first.close()


async def test_an_endpoint_that_is_down_is_tried_again_then_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(notifying, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))
    down = Endpoint()
    url = down.url
    down.close()  # nothing listens there now
    manager = await make_manager("memory", tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="khadem_nb.runtime.notifying"):
            assert not await send_once(manager.driver, apprise_of(url), "e", Message("t", "b"))
        assert [r.message for r in caplog.records if "could not be delivered after 4 tries" in r.message]
    finally:
        await manager.close()


def test_a_queue_tells_its_backlog_once_an_hour(endpoint: Endpoint, tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        @q.job
        def wait(i: int) -> int:
            return i

        wait.sweep(i=list(range(6)))
        q.notify(endpoint.url, backlog=5, every=0.1)
        received = endpoint.wait_for(1)
        time.sleep(0.5)  # more rounds, no more messages this hour
    finally:
        q.close()
    assert len(received) == 1 and received[0]["title"] == "queue default: 6 jobs waiting"


def test_bad_notification_urls_and_options_are_refused(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        @q.job
        def one(i: int) -> int:
            return i

        group = one.sweep(i=[1])
        with pytest.raises(ConfigError, match="unknown or malformed service 'nosuch'"):
            group.notify("nosuch://where")
        with pytest.raises(ConfigError, match="notify on= takes events of done, failed; got 'ended'"):
            group.notify("json://127.0.0.1:1", on="ended")
        with pytest.raises(ConfigError, match=r"needs backlog= .* or failure_rate="):
            q.notify("json://127.0.0.1:1")
        with pytest.raises(ConfigError, match="failure_rate must be a share above 0 and at most 1, got 2"):
            q.notify("json://127.0.0.1:1", failure_rate=2)
        with pytest.raises(ConfigError, match="notify needs one or more apprise URLs"):
            group.notify([])
    finally:
        q.close()


def test_a_study_tells_its_end_with_its_best_trial(endpoint: Endpoint, tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna", reason='optimize() needs Optuna: pip install "khadem_nb[tune]"')
    q = kn.Queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        @q.job
        def square(x: float) -> float:
            return (x - 0.5) ** 2

        q.start(concurrency=2)
        study = square.optimize({"x": kn.uniform(0, 1)}, metric="loss", n_trials=3, parallel=2, name="bowl",
                                sampler=optuna.samplers.RandomSampler(seed=3))
        assert study.notify(endpoint.url) is study
        study.wait(timeout=60)
        [told] = endpoint.wait_for(1)
        best = study.best
    finally:
        q.close()
    assert told["title"] == "study bowl finished" and told["type"] == "success"
    assert told["message"] == f"3 trials\nbest loss {best['value']:.6g} at x={best['x']!r}"


def test_the_best_point_is_read_from_the_first_metric_known() -> None:
    from khadem_nb.job import COMPLETED, FAILED, JobRecord
    from khadem_nb.notebook.notifications import best_point

    def record(status: Any, result: Any) -> JobRecord:
        return JobRecord("id", "fit", {}, "default", status=status, result=result)

    records = [record(COMPLETED, {"acc": 0.7}), record(COMPLETED, {"acc": 0.9}), record(FAILED, None), None]
    params = [{"lr": 1}, {"lr": 2}, {"lr": 3}, {"lr": 4}]
    assert best_point(params, records, None, "max") == "best acc 0.9 at lr=2"
    assert best_point(params, records, "loss", "min") is None  # nobody reported it
