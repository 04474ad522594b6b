"""Starting workers of a queue from the notebook or a shell: ``launch(..., on=...)``.

Three launchers, one module each: ``local`` (processes on this machine), ``ssh`` (another
machine, over SSH) and ``slurm`` (batch jobs of a Slurm cluster). Each starts ``khadem-nb
worker`` with the command line and environment of a ``LaunchSpec`` and returns handles
(``LaunchedWorker``); ``launch`` then waits until each worker has registered among the queue's
workers (``registering``). ``autoscale`` keeps a number of launched workers that follows the
backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..drivers.base import QueueDriver
from ..errors import ConfigError, LaunchError
from .handle import LaunchedWorker
from .local import start_local
from .registering import wait_registered
from .slurm import SlurmOptions, slurm_options, start_slurm
from .spec import START_TIMEOUT_S, LaunchSpec, spec_for
from .ssh import CONNECT_TIMEOUT_S, parse_target, start_ssh

LAUNCHERS = ("local", "ssh://[user@]host[:port]", "slurm")
SSH_OPTIONS = ("ssh_options", "connect_timeout")

__all__ = ["LAUNCHERS", "START_TIMEOUT_S", "LaunchSpec", "LaunchedWorker", "SlurmOptions", "check_launcher",
           "launch", "spec_for"]


def check_launcher(on: Any, options: Mapping[str, Any] | None = None) -> str:
    """The kind of launcher ``on`` names (``local``, ``ssh``, ``slurm``), its options checked;
    ``ConfigError`` listing the launchers, or the options a launcher takes."""
    if not isinstance(on, str):
        raise ConfigError(f"on names a launcher ({', '.join(LAUNCHERS)}), got {on!r}")
    options = dict(options or {})
    valid: tuple[str, ...]
    if on == "local":
        kind, valid = "local", ()
    elif on.startswith("ssh://"):
        parse_target(on)
        kind, valid = "ssh", SSH_OPTIONS
    elif on == "slurm":
        slurm_options(options)
        return "slurm"
    else:
        raise ConfigError(f"unknown launcher {on!r}; valid: {', '.join(LAUNCHERS)}")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"the {kind} launcher takes no option {', '.join(unknown)}"
                          + (f"; valid: {', '.join(valid)}" if valid else ""))
    return kind


async def launch(driver: QueueDriver, spec: LaunchSpec, n: int, on: str, *, timeout: float = START_TIMEOUT_S,
                 options: Mapping[str, Any] | None = None) -> list[LaunchedWorker]:
    """Start ``n`` workers with ``on``'s launcher and return their handles once each has
    registered (a Slurm job still waiting in the cluster's queue counts as launched).
    ``LaunchError``, with the launcher's or the worker's own message, when one fails to start;
    the others of this launch are stopped then."""
    options = dict(options or {})
    kind = check_launcher(on, options)
    starting = asyncio.ensure_future(_start(kind, spec, n, on, options))
    try:
        workers = await asyncio.shield(starting)
    except asyncio.CancelledError:  # the start goes on in its thread: what it started is stopped
        with contextlib.suppress(Exception):
            await _abandon(await starting)
        raise
    try:
        await wait_registered(driver, workers, timeout)
    except (LaunchError, asyncio.CancelledError):  # a failed or abandoned launch leaves nothing running
        await asyncio.shield(_abandon(workers))
        raise
    return workers


async def _start(kind: str, spec: LaunchSpec, n: int, on: str,
                 options: Mapping[str, Any]) -> list[LaunchedWorker]:
    """Start ``n`` workers with the launcher of ``kind`` (not waiting for them to register)."""
    if kind == "local":
        return list(await asyncio.to_thread(start_local, spec, n))
    if kind == "ssh":
        return list(await start_ssh(spec, n, on, options.get("ssh_options"),
                                    float(options.get("connect_timeout", CONNECT_TIMEOUT_S))))
    return list(await asyncio.to_thread(start_slurm, spec, n, slurm_options(options)))


async def _abandon(workers: Sequence[LaunchedWorker]) -> None:
    """Stop the workers of a launch that failed or was cancelled (those not detached, and not
    already failed), at once."""
    for worker in workers:
        if worker.failure is None and not worker.detach:
            with contextlib.suppress(Exception):
                await worker.terminate(grace=0)
