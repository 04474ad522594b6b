"""A launched worker as its launcher sees it: ``LaunchedWorker``, one class per launcher.

A handle knows its worker's name among the queue's workers (``presence``), the host and the
launcher, whether the worker still runs, its last output lines, and how to stop it. Workers
not ``detach``-ed are stopped when the process that launched them exits (``stop_owned``).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import weakref
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

LAST_LINES = 20  # of a worker's output, kept for its LaunchError and its entry
Runner = Callable[[Coroutine[Any, Any, Any]], Any]

_owned: weakref.WeakSet[LaunchedWorker] = weakref.WeakSet()


class LaunchedWorker:
    """A worker some launcher started: ``name``, ``host``, ``launcher``, ``state``
    (``running``, ``queued`` for a batch job not started yet, ``gone``, ``failed``) and
    ``stop()``."""

    launcher = ""

    def __init__(self, name: str, host: str, detach: bool) -> None:
        self.name = name
        self.host = host
        self.detach = detach
        self.failure: str | None = None  # its last output lines, where it failed at start
        self.runner: Runner = asyncio.run  # how ``stop()`` runs ``terminate`` (the notebook's loop)
        self.output: collections.deque[str] = collections.deque(maxlen=LAST_LINES)
        if not detach:
            _owned.add(self)

    def __repr__(self) -> str:
        return f"<worker {self.name} on {self.host} ({self.launcher}): {self.state}>"

    @property
    def state(self) -> str:
        if self.failure is not None:
            return "failed"
        return self.current_state()

    def current_state(self) -> str:
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        """Whether it runs, or waits in a batch system's line to."""
        return self.state in ("running", "queued")

    def exited(self) -> bool:
        """Whether the worker has ended (it may have failed at start)."""
        return self.current_state() == "gone"

    def exit_status(self) -> int | None:
        """The status the worker exited with, where the launcher can tell."""
        return None

    def waits_in_line(self) -> bool:
        """Whether it waits for a batch system to start it (it is not late to register)."""
        return False

    def last_lines(self) -> str:
        return "\n".join(self.output)

    async def registered(self) -> None:
        """Called once the worker has written its entry among the queue's workers."""

    async def terminate(self, grace: float = 30.0) -> None:
        """Stop the worker gracefully: its running jobs get ``grace`` seconds, then go back."""
        raise NotImplementedError

    def stop(self, grace: float = 30.0) -> None:
        """Stop the worker (its running jobs get ``grace`` seconds) and wait until it has."""
        self.runner(self.terminate(grace))

    def stop_at_exit(self) -> None:
        """What stops the worker when the launching process exits (no loop runs by then)."""


class ProcessWorker(LaunchedWorker):
    """A worker whose output goes to a file this machine reads, stopped by a blocking call."""

    def __init__(self, name: str, host: str, detach: bool, log: Path) -> None:
        super().__init__(name, host, detach)
        self.log = log

    def last_lines(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-LAST_LINES:])
        except OSError:
            return ""

    async def terminate(self, grace: float = 30.0) -> None:
        await asyncio.to_thread(self.stop, grace)

    def stop(self, grace: float = 30.0) -> None:
        raise NotImplementedError


async def stop_all(workers: Iterable[LaunchedWorker], grace: float = 30.0) -> None:
    """Stop every worker of ``workers`` that is alive and not detached, gracefully."""
    for worker in workers:
        if not worker.detach and worker.alive:
            await worker.terminate(grace)


@atexit.register
def stop_owned() -> None:
    """The workers this process launched and did not detach stop with it."""
    for worker in list(_owned):
        with contextlib.suppress(Exception):  # one worker's trouble must not keep the others
            worker.stop_at_exit()
