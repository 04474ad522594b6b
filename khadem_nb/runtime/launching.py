"""Starting ``khadem-nb worker`` processes from the notebook: the local launcher.

``launch_local`` starts workers of a queue on this machine, each named by the launcher (so its
entry among the queue's workers, ``presence``, is found) and logging to a file of its own. It
returns once every worker has written its entry, or raises ``LaunchError`` with the last lines
a worker printed when it exited at start, or when it did not register within the start timeout.
A worker launched from a queue that ships code trusts shipped code and gets the secret through
its environment, never its command line. Workers not ``detach``-ed are stopped with the queue
that launched them (``LaunchedWorker.stop``, and at the interpreter's exit).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config import SECRET_ENV, QueueSettings
from ..drivers.base import QueueDriver
from ..errors import ConfigError, LaunchError
from .presence import LAUNCHER_ENV, NAME_ENV, PRESENCE_PREFIX, announce

LAUNCHERS = ("local",)  # the launchers built so far (ssh and slurm are issue 35's next steps)
START_TIMEOUT_S = 60.0  # a launched worker that has not registered by then is stopped and reported
LAST_LINES = 20  # of a failed worker's output, in its LaunchError and its entry

_owned: weakref.WeakSet[LaunchedWorker] = weakref.WeakSet()  # stopped at exit unless detached


class LaunchedWorker:
    """A worker process this kernel started: its name among the queue's workers, and ``stop()``."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log: Path, detach: bool) -> None:
        self.name = name
        self.host = socket.gethostname()
        self.launcher = "local"
        self.process = process
        self.log = log
        self.detach = detach
        self.failure: str | None = None  # its last output lines, where it exited at start

    def __repr__(self) -> str:
        return f"<worker {self.name} on {self.host} ({self.launcher}): {self.state}>"

    @property
    def state(self) -> str:
        if self.failure is not None:
            return "failed"
        return "running" if self.process.poll() is None else "gone"

    def last_lines(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-LAST_LINES:])
        except OSError:
            return ""

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM: the worker finishes (or gives back) its jobs within ``grace``, then exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def check_launcher(on: str) -> None:
    if on not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {on!r}; valid: {', '.join(LAUNCHERS)}")


def queue_url_of(settings: QueueSettings) -> str:
    """The URL a worker process opens the queue with (a memory queue has none: it lives here)."""
    if settings.driver in ("memory", "sync"):
        raise LaunchError(f"a {settings.driver} queue lives in this process only: launch workers of a queue "
                          "other processes reach (sqlite:///runs.db, file://..., redis://..., postgresql://...)")
    if settings.url:
        return settings.url
    if settings.driver in ("sqlite", "file") and settings.path:
        return f"{settings.driver}:///{os.path.abspath(settings.path)}"
    raise LaunchError("launching workers needs the queue given by URL (kn.Queue('redis://...'))")


def worker_command(url: str, *, concurrency: int, imports: Sequence[str], resources: Mapping[str, int] | None,
                   trust_code: bool, artifacts: str | None) -> list[str]:
    command = [sys.executable, "-m", "khadem_nb.cli", "--log-level", "INFO", "worker", "--queue-url", url,
               "--concurrency", str(concurrency)]
    for module in imports:
        command += ["--import", module]
    if resources:
        command += ["--resources", ",".join(f"{k}={v}" for k, v in resources.items())]
    if trust_code:
        command.append("--trust-code")
    if artifacts:
        command += ["--artifacts", artifacts]
    return command


def start_local(settings: QueueSettings, n: int, *, concurrency: int = 1, imports: Sequence[str] = (),
                resources: Mapping[str, int] | None = None, detach: bool = False,
                env: Mapping[str, str] | None = None) -> list[LaunchedWorker]:
    """Start ``n`` worker processes of the queue of ``settings`` on this machine (not waiting
    for them: see :func:`wait_registered`)."""
    url = queue_url_of(settings)
    folder = Path(tempfile.mkdtemp(prefix="khadem-launch-"))
    environment = {**os.environ, **(env or {}), LAUNCHER_ENV: "local"}
    trust = settings.ship_code
    if trust and settings.secret is not None:
        environment[SECRET_ENV] = settings.secret.decode()
    command = worker_command(url, concurrency=concurrency, imports=imports, resources=resources,
                             trust_code=trust, artifacts=settings.artifacts)
    launched = []
    for _ in range(n):
        name = f"{socket.gethostname()}-local-{uuid.uuid4().hex[:8]}"
        log = folder / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(command, env={**environment, NAME_ENV: name}, stdout=out,
                                       stderr=subprocess.STDOUT, cwd=os.getcwd(), start_new_session=detach)
        worker = LaunchedWorker(name, process, log, detach)
        if not detach:
            _owned.add(worker)
        launched.append(worker)
    return launched


async def wait_registered(driver: QueueDriver, workers: Sequence[LaunchedWorker],
                          timeout: float = START_TIMEOUT_S) -> None:
    """Return once every worker of ``workers`` wrote its entry; ``LaunchError`` naming the
    first that exited at start (with its last lines) or did not register within ``timeout``
    (it is stopped). A failed worker's entry says so, for ``workers()``."""
    deadline = time.monotonic() + timeout
    waiting = {w.name: w for w in workers}
    while waiting:
        registered = await driver.kv_scan(PRESENCE_PREFIX)
        for name in [n for n in waiting if f"{PRESENCE_PREFIX}{n}" in registered]:
            del waiting[name]
        for worker in list(waiting.values()):
            if worker.process.poll() is not None:
                await _failed(driver, worker, f"exited with status {worker.process.returncode} at start")
        if waiting and time.monotonic() > deadline:
            worker = next(iter(waiting.values()))
            worker.stop(grace=0)
            await _failed(driver, worker, f"did not register within {timeout:g}s")
        if waiting:
            await asyncio.sleep(0.1)


async def _failed(driver: QueueDriver, worker: LaunchedWorker, why: str) -> None:
    worker.failure = worker.last_lines()
    await announce(driver, {"name": worker.name, "host": worker.host, "launcher": worker.launcher,
                            "state": "failed", "started": None, "last_seen": None, "output": worker.failure})
    raise LaunchError(f"worker {worker.name} ({worker.launcher}) {why}; its last output:\n{worker.failure}")


@atexit.register
def _stop_owned() -> None:
    """The workers this process launched and did not detach stop with it."""
    for worker in list(_owned):
        worker.stop(grace=10.0)
