"""Autoscaling from the notebook: launched workers follow the backlog up to ``max``, go back to
``min`` once idle for ``idle_timeout``, two autoscalers of one queue never fight, a launch that
fails is retried ever less often, and bad limits are clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from jobs import Sleep
from procs import env, wait_until

import khadem_nb as kn
from khadem_nb import ConfigError

PYTHONPATH = {"PYTHONPATH": env()["PYTHONPATH"]}


def live_launched(q: kn.Queue) -> int:
    frame = q.workers()
    return int(((frame["launcher"] == "local") & frame["state"].isin(["idle", "busy"])).sum())


def test_autoscaling_follows_the_backlog_and_goes_back_to_zero(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        scaler = q.autoscale(on="local", min=0, max=3, idle_timeout=2, imports=["jobs"], env=PYTHONPATH,
                             interval=0.2)
        assert scaler is not None
        time.sleep(1.0)
        assert live_launched(q) == 0 and scaler.status()["leading"]  # nothing to do: nothing launched
        ids = [q.run(q.manager.dispatch(Sleep(1.5, tag=str(i)))) for i in range(6)]
        wait_until(lambda: live_launched(q) == 3, timeout=60)  # never more than max
        records = q.run(q.manager.wait(ids, timeout=90))
        assert len({r.result["pid"] for r in records}) >= 2  # spread over the launched workers
        wait_until(lambda: live_launched(q) == 0, timeout=60)  # idle for 2 s: retired
        assert scaler.status()["workers"] == []
    finally:
        q.close()


def test_two_autoscalers_of_one_queue_do_not_fight(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first, second = kn.Queue(url), kn.Queue(url)
    try:
        leader = first.autoscale(on="local", min=0, max=2, imports=["jobs"], env=PYTHONPATH, interval=0.2)
        assert leader is not None
        wait_until(lambda: leader.status()["leading"])
        refused = r"autoscaler .* leads queue 'default' with .*'max': 2.*same limits"
        with pytest.raises(ConfigError, match=refused):
            second.autoscale(on="local", min=0, max=5, imports=["jobs"], env=PYTHONPATH)
        standby = second.autoscale(on="local", min=0, max=2, imports=["jobs"], env=PYTHONPATH, interval=0.2)
        assert standby is not None
        time.sleep(1.0)
        assert not standby.status()["leading"]
        first.autoscale(None)  # stops it and lets the lease go: the one standing by takes over
        wait_until(lambda: standby.status()["leading"], timeout=30)
    finally:
        first.close()
        second.close()


def test_a_failing_launch_is_retried_ever_less_often(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        q.run(q.manager.dispatch(Sleep(0.1)))
        scaler = q.autoscale(on="local", max=2, imports=["no_such_module_here"], interval=0.1)
        assert scaler is not None
        wait_until(lambda: scaler.status()["last_error"] is not None, timeout=60)
        assert "no_such_module_here" in scaler.status()["last_error"]
        time.sleep(2.0)
        assert scaler.state.failures == 1  # the next try waits 5 s, then 10 s...
    finally:
        q.close()


def test_bad_autoscale_input_is_a_config_error(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        with pytest.raises(ConfigError, match=r"autoscale min \(5\) must not exceed max \(2\)"):
            q.autoscale(min=5, max=2)
        with pytest.raises(ConfigError, match="min must be between 0"):
            q.autoscale(min=-1)
        with pytest.raises(ConfigError, match="max must be between 1"):
            q.autoscale(max=0)
        with pytest.raises(ConfigError, match="idle_timeout must be between 1"):
            q.autoscale(idle_timeout=0)
        with pytest.raises(ConfigError, match="unknown launcher 'k8s'"):
            q.autoscale(on="k8s")
        assert q.autoscale(None) is None
    finally:
        q.close()


def test_khadem_nb_launch_and_autoscale_from_a_shell(tmp_path: Path) -> None:
    """``khadem-nb launch`` prints its workers and stops them on SIGTERM; ``khadem-nb
    autoscale`` launches for a backlog and retires its workers when stopped."""
    import signal
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    cli = [sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING"]
    launcher = subprocess.Popen([*cli, "launch", "--queue-url", url, "-n", "2", "--import", "jobs"],
                                env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    q = kn.Queue(url)
    try:
        assert launcher.stdout is not None
        lines = [launcher.stdout.readline().split("\t") for _ in range(2)]
        assert [line[2] for line in lines] == ["local", "local"]
        assert q.run(q.manager.wait([q.run(q.manager.dispatch(Sleep(0.1)))], timeout=60))[0].result
        launcher.send_signal(signal.SIGTERM)
        launcher.communicate(timeout=60)
        assert launcher.returncode == 0
        assert not {line[0] for line in lines} & set(q.workers()["name"])  # both stopped gracefully

        scaler = subprocess.Popen([*cli, "autoscale", "--queue-url", url, "--max", "2", "--import", "jobs",
                                   "--interval", "0.2"], env=env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        ids = [q.run(q.manager.dispatch(Sleep(0.5))) for _ in range(4)]
        assert len(q.run(q.manager.wait(ids, timeout=90))) == 4
        assert live_launched(q) >= 1
        scaler.send_signal(signal.SIGTERM)
        assert scaler.wait(timeout=90) == 0
        wait_until(lambda: live_launched(q) == 0, timeout=30)
        bad = subprocess.run([*cli, "autoscale", "--queue-url", url, "--min", "3", "--max", "1"], env=env(),
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "min (3) must not exceed max (1)" in bad.stderr
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
        q.close()


def test_jobs_needing_units_the_launched_workers_lack_do_not_call_for_workers(tmp_path: Path) -> None:
    from jobs import NeedsGpu

    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        gpu_jobs = [q.run(q.manager.dispatch(NeedsGpu(i))) for i in range(4)]
        scaler = q.autoscale(on="local", max=2, imports=["jobs"], env=PYTHONPATH, interval=0.2)
        assert scaler is not None
        time.sleep(1.5)
        assert live_launched(q) == 0  # they need gpu=1: workers offering none would not run them
        scaler = q.autoscale(on="local", max=2, resources={"gpu": 1}, imports=["jobs"], env=PYTHONPATH,
                             interval=0.2)
        done = q.run(q.manager.wait(gpu_jobs, timeout=60))
        assert all(r.status is kn.JobStatus.COMPLETED and r.result["gpu"] is not None for r in done)
    finally:
        q.close()
