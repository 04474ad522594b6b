"""``khadem-nb launch`` and ``khadem-nb autoscale``: workers started from a shell.

``launch`` starts ``-n`` workers with a launcher and prints them; unless ``--detach`` it stays
in the foreground and stops them on SIGTERM or Ctrl-C (or returns once they have all ended).
``autoscale`` runs an autoscaler until stopped, then retires the workers it launched. Launcher
options (``partition=gpu``, ``connect_timeout=10``) come as ``--option KEY=VALUE``; a queue
that ships code is launched with ``--trust-code`` and the secret in ``KHADEM_SECRET``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import SECRET_ENV
from ..errors import ConfigError
from ..launchers import check_launcher, launch, spec_for
from ..launchers.autoscale import Autoscaler, check_limits
from ..launchers.handle import LaunchedWorker, stop_all
from ..manager import QueueManager

WATCH_EVERY_S = 1.0
INTEGER_OPTIONS = ("cpus",)
NUMBER_OPTIONS = ("connect_timeout",)
LIST_OPTIONS = ("sbatch",)


@dataclass(frozen=True)
class LaunchArgs:
    queue_url: str
    on: str
    concurrency: int = 1
    imports: Sequence[str] = ()
    resources: str | None = None
    python: str | None = None
    setup: str | None = None
    trust_code: bool = False
    options: Sequence[str] = ()


def launcher_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs as launcher options (``sbatch`` repeatable)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option takes KEY=VALUE, got {pair!r}")
        if key in LIST_OPTIONS:
            options.setdefault(key, []).append(value)
            continue
        try:
            options[key] = (int(value) if key in INTEGER_OPTIONS
                            else float(value) if key in NUMBER_OPTIONS else value)
        except ValueError:
            raise ConfigError(f"--option {key} takes a number, got {value!r}") from None
    return options


def _config(args: LaunchArgs) -> dict[str, Any]:
    section: dict[str, Any] = {"url": args.queue_url}
    if args.trust_code:
        secret = os.environ.get(SECRET_ENV)
        if not secret:
            raise ConfigError(f"--trust-code launches workers that run shipped code: set {SECRET_ENV}")
        section.update(ship_code=True, secret=secret)
    return {"queue": section}


async def run_launch(args: LaunchArgs, n: int, *, detach: bool, timeout: float) -> int:
    options = launcher_options(args.options)
    check_launcher(args.on, options)
    manager = await QueueManager(_config(args)).init()
    try:
        spec = spec_for(manager.settings, concurrency=args.concurrency, imports=args.imports,
                        resources=args.resources, env=args.setup, python=args.python, detach=detach)
        workers = await launch(manager.driver, spec, n, args.on, timeout=timeout, options=options)
        for worker in workers:
            print(f"{worker.name}\t{worker.host}\t{worker.launcher}\t{worker.state}", flush=True)
        if not detach:
            await _until_stopped(workers)
    finally:
        await manager.close()
    return 0


def _stop_signal() -> asyncio.Event:
    """An event SIGTERM or SIGINT sets."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _until_stopped(workers: list[LaunchedWorker]) -> None:
    """Wait for SIGTERM or SIGINT (then stop the workers) or for every worker to end."""
    stop = _stop_signal()
    while not stop.is_set() and any(w.alive for w in workers):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), WATCH_EVERY_S)
    await stop_all(workers)


async def run_autoscale(args: LaunchArgs, *, low: int, high: int, idle_timeout: float,
                        interval: float) -> int:
    options = launcher_options(args.options)
    check_launcher(args.on, options)
    scale = check_limits(args.on, low, high, idle_timeout)
    manager = await QueueManager(_config(args)).init()
    try:
        spec = spec_for(manager.settings, concurrency=args.concurrency, imports=args.imports,
                        resources=args.resources, env=args.setup, python=args.python)
        scaler = Autoscaler(manager, spec, scale, options=options, interval=interval)
        await scaler.check_leader()
        stop = _stop_signal()
        scaler.start()
        print(f"autoscaling {manager.settings.redacted_url()} on {args.on}: {low} to {high} workers",
              file=sys.stderr)
        await stop.wait()
        await scaler.stop(retire=False)
        await stop_all(scaler.handles())  # each finishes or gives back its jobs, then exits
    finally:
        await manager.close()
    return 0
