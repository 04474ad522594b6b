"""Helpers to run worker processes and scripted producers/consumers in real OS processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

TESTS = Path(__file__).parent


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def start_worker(url: str, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING", "worker",
           "--queue-url", url, "--import", "jobs", *extra]
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def workers(url: str, count: int, *extra: str) -> Iterator[list[subprocess.Popen[str]]]:
    """``count`` worker processes of ``url``, SIGKILLed on the way out (those still in the
    list: a test that kills one itself pops it)."""
    running = [start_worker(url, *extra) for _ in range(count)]
    try:
        yield running
    finally:
        for proc in running:
            kill(proc)


def run_script(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], env=env(), capture_output=True,
                          text=True, timeout=timeout)


def spawn_script(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def finish(procs: Sequence[subprocess.Popen[str]], timeout: float = 60) -> list[str]:
    """Wait for processes; return their stderr; fail if any exited non-zero."""
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"process exited {proc.returncode}: {err}"
        errors.append(err)
    return errors


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc`` and close its pipes."""
    proc.kill()
    proc.communicate(timeout=10)
